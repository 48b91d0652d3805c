//! The receiver thread: owns the input socket and hands whole messages, unparsed, to the decode
//! workers through a bounded channel, within the in-flight byte budget. Messages that are already
//! waiting go in batches, so a stream of small messages costs one channel hand-off per batch. On
//! shutdown it takes what is already waiting in the socket (for at most a second), then stops.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::Sender;

use super::budget::Budget;
use super::stats::Stats;
use super::Shutdown;
use crate::transport;

/// A message as read from the socket.
pub(crate) struct Incoming {
    pub frames: Vec<zmq::Message>,
    pub bytes: u64,
    pub received_at: SystemTime,
}

/// How long one poll waits before the shutdown flag is checked again.
const POLL_MS: i64 = 50;

/// Most messages handed over at once.
const BATCH_MESSAGES: usize = 64;

/// Most bytes handed over at once (a batch is sent early when it reaches this).
const BATCH_BYTES: u64 = 4 << 20;

/// After shutdown, how long the receiver keeps taking messages that are already waiting in the
/// socket (they were delivered to the collector; dropping them would lose them silently).
const DRAIN: Duration = Duration::from_secs(1);

pub(crate) fn receive_loop(
    socket: zmq::Socket,
    tx: Sender<Vec<Incoming>>,
    budget: Arc<Budget>,
    stats: Arc<Stats>,
    shutdown: Shutdown,
    max_frames: usize,
) {
    let mut drain_until: Option<Instant> = None;
    loop {
        if shutdown.is_triggered() && drain_until.is_none() {
            drain_until = Some(Instant::now() + DRAIN);
        }
        let draining = drain_until.is_some();
        if !draining {
            match socket.poll(zmq::POLLIN, POLL_MS) {
                Ok(0) => continue,
                Ok(_) => {}
                Err(zmq::Error::EINTR) => continue,
                Err(e) => {
                    tracing::error!("receiver: poll failed: {e}");
                    return;
                }
            }
        }
        // Read everything that is waiting before polling again, in batches.
        let mut batch: Vec<Incoming> = Vec::new();
        let mut batch_bytes = 0u64;
        let mut emptied = false;
        loop {
            if drain_until.is_some_and(|until| Instant::now() >= until) {
                break;
            }
            let frames = match transport::recv_message_capped(&socket, zmq::DONTWAIT, max_frames) {
                Ok(Some(frames)) => frames,
                Ok(None) => {
                    emptied = true;
                    break;
                }
                Err(zmq::Error::EINTR) => break,
                Err(e) => {
                    tracing::error!("receiver: receive failed: {e}");
                    let _ = tx.send(batch);
                    return;
                }
            };
            let bytes = frames.iter().map(|f| f.len() as u64).sum();
            let in_use = match budget.try_acquire(bytes) {
                Some(in_use) => in_use,
                None => {
                    // Full: hand over what we hold so the workers can free the budget.
                    if !batch.is_empty() {
                        if tx.send(std::mem::take(&mut batch)).is_err() {
                            return;
                        }
                        batch_bytes = 0;
                    }
                    // While draining the workers are still running, so waiting is bounded.
                    let give_up = || drain_until.is_some_and(|until| Instant::now() >= until);
                    match budget.acquire(bytes, give_up) {
                        Some(in_use) => in_use,
                        None => break,
                    }
                }
            };
            stats.set_inflight(in_use);
            stats.on_received();
            batch.push(Incoming {
                frames,
                bytes,
                received_at: SystemTime::now(),
            });
            batch_bytes += bytes;
            if batch.len() >= BATCH_MESSAGES || batch_bytes >= BATCH_BYTES {
                if tx.send(std::mem::take(&mut batch)).is_err() {
                    return;
                }
                batch_bytes = 0;
            }
            if !draining && shutdown.is_triggered() {
                break;
            }
        }
        if !batch.is_empty() && tx.send(batch).is_err() {
            return;
        }
        if draining && (emptied || drain_until.is_some_and(|until| Instant::now() >= until)) {
            return;
        }
    }
}

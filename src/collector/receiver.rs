//! The receiver thread: owns the input socket and hands whole messages, unparsed, to the decode
//! workers through a bounded channel, within the in-flight byte budget.

use std::sync::Arc;
use std::time::SystemTime;

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

pub(crate) fn receive_loop(
    socket: zmq::Socket,
    tx: Sender<Incoming>,
    budget: Arc<Budget>,
    stats: Arc<Stats>,
    shutdown: Shutdown,
) {
    while !shutdown.is_triggered() {
        match socket.poll(zmq::POLLIN, POLL_MS) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(zmq::Error::EINTR) => continue,
            Err(e) => {
                tracing::error!("receiver: poll failed: {e}");
                return;
            }
        }
        // Read everything that is waiting before polling again.
        while !shutdown.is_triggered() {
            let frames = match transport::recv_message(&socket, zmq::DONTWAIT) {
                Ok(Some(frames)) => frames,
                Ok(None) => break,
                Err(zmq::Error::EINTR) => break,
                Err(e) => {
                    tracing::error!("receiver: receive failed: {e}");
                    return;
                }
            };
            let bytes = frames.iter().map(|f| f.len() as u64).sum();
            let in_use = budget.acquire(bytes);
            stats.set_inflight(in_use);
            stats.on_received();
            let incoming = Incoming {
                frames,
                bytes,
                received_at: SystemTime::now(),
            };
            if tx.send(incoming).is_err() {
                return;
            }
        }
    }
}

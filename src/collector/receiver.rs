//! The receiver thread: owns the input socket and hands whole messages, unparsed, to the decode
//! workers through a bounded channel, within the in-flight byte budget. Messages that are already
//! waiting go in batches, so a stream of small messages costs one channel hand-off per batch.
//!
//! A batch that is cheap to handle (small, and at the recent cost per message quick to decode
//! and store) is handled by the receiver itself when no other batch waits for the workers:
//! waking a worker costs more than the work. On a machine with spare cores a backlog (a batch
//! cut short because more messages wait) still goes to the workers, to be handled in parallel.
//!
//! On shutdown it takes what is already waiting in the socket (for at most a second), then stops.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::Sender;

use super::budget::Budget;
use super::pool::Pool;
use super::stats::Stats;
use super::Shutdown;
use crate::transport;
use crate::wire::Decoder;

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

/// The receiver handles a batch itself only up to this many bytes...
const INLINE_BYTES: u64 = 256 << 10;

/// ...only when records have recently cost at most this much each, by default (costlier work,
/// such as files or decompression, is better spread over the workers)...
pub(crate) const INLINE_COST: Duration = Duration::from_micros(10);

/// ...and only if, at that cost, the batch takes at most this long: meanwhile the socket is not
/// read (ZeroMQ keeps queueing).
const INLINE_TIME: Duration = Duration::from_micros(200);

/// After shutdown, how long the receiver keeps taking messages that are already waiting in the
/// socket (they were delivered to the collector; dropping them would lose them silently).
const DRAIN: Duration = Duration::from_secs(1);

/// What the receiver thread shares with the rest of the collector.
pub(crate) struct Receiver<'a> {
    pub pool: &'a Pool,
    pub budget: Arc<Budget>,
    pub stats: Arc<Stats>,
    pub shutdown: Shutdown,
    pub max_frames: usize,
    /// More than two cores: a backlog is worth handing to the workers.
    pub spare_cores: bool,
    /// The most a record may cost for its batch to be handled here.
    pub inline_cost: Duration,
    /// Decodes the batches handled here.
    pub decoder: Decoder,
}

/// The state a hand-over decision looks at.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Load {
    /// Messages and bytes in the batch.
    pub messages: usize,
    pub bytes: u64,
    /// The socket had nothing more waiting (no backlog).
    pub emptied: bool,
    /// No batch is queued for the workers.
    pub workers_idle: bool,
    /// Recent cost per record, and the most it may be (see [`INLINE_COST`]).
    pub cost: Duration,
    pub cost_limit: Duration,
    /// More than two cores.
    pub spare_cores: bool,
}

/// Whether a batch is handled on the receiver thread rather than by a decode worker: only when
/// the workers have nothing queued, records are cheap (recent cost within the limit), the batch
/// is small and quick at that cost, and either the socket was emptied (no backlog) or there are
/// no spare cores to share a backlog.
pub(crate) fn handle_here(load: Load) -> bool {
    let Load {
        messages,
        bytes,
        emptied,
        workers_idle,
        cost,
        cost_limit,
        spare_cores,
    } = load;
    workers_idle
        && bytes <= INLINE_BYTES
        && cost <= cost_limit
        && cost.saturating_mul(messages as u32) <= INLINE_TIME
        && (emptied || !spare_cores)
}

impl Receiver<'_> {
    /// Receives until shutdown (then drains), handing batches over as described above.
    pub(crate) fn run(mut self, socket: zmq::Socket, tx: Sender<Vec<Incoming>>) {
        let mut drain_until: Option<Instant> = None;
        loop {
            if self.shutdown.is_triggered() && drain_until.is_none() {
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
                let frames =
                    match transport::recv_message_capped(&socket, zmq::DONTWAIT, self.max_frames) {
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
                let in_use = match self.budget.try_acquire(bytes) {
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
                        // A shutdown that comes during the wait starts the drain time.
                        let shutdown = &self.shutdown;
                        let give_up = || {
                            if drain_until.is_none() && shutdown.is_triggered() {
                                drain_until = Some(Instant::now() + DRAIN);
                            }
                            drain_until.is_some_and(|until| Instant::now() >= until)
                        };
                        match self.budget.acquire(bytes, give_up) {
                            Some(in_use) => in_use,
                            None => {
                                // The drain time is up with the budget still full: this
                                // message was taken from the socket, so it is counted,
                                // rejected as not stored.
                                self.stats.on_received();
                                self.stats.on_rejected(None, "shutdown");
                                break;
                            }
                        }
                    }
                };
                self.stats.set_inflight(in_use);
                self.stats.on_received();
                batch.push(Incoming {
                    frames,
                    bytes,
                    received_at: SystemTime::now(),
                });
                batch_bytes += bytes;
                if batch.len() >= BATCH_MESSAGES || batch_bytes >= BATCH_BYTES {
                    if !self.hand_over(std::mem::take(&mut batch), batch_bytes, false, &tx) {
                        return;
                    }
                    batch_bytes = 0;
                }
                if !draining && self.shutdown.is_triggered() {
                    break;
                }
            }
            if !batch.is_empty() && !self.hand_over(batch, batch_bytes, emptied, &tx) {
                return;
            }
            if draining && (emptied || drain_until.is_some_and(|until| Instant::now() >= until)) {
                return;
            }
        }
    }

    /// Handles `batch` here or sends it to the workers; `false` when the workers are gone.
    fn hand_over(
        &mut self,
        batch: Vec<Incoming>,
        bytes: u64,
        emptied: bool,
        tx: &Sender<Vec<Incoming>>,
    ) -> bool {
        let here = handle_here(Load {
            messages: batch.len(),
            bytes,
            emptied,
            workers_idle: tx.is_empty(),
            cost: self.pool.cost_per_message(),
            cost_limit: self.inline_cost,
            spare_cores: self.spare_cores,
        });
        if here {
            self.pool.handle_batch(batch, &mut self.decoder);
            true
        } else {
            tx.send(batch).is_ok()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 64 small records at 2 µs each, the socket emptied, the workers idle, 2 cores.
    fn cheap() -> Load {
        Load {
            messages: 64,
            bytes: 64 * 1000,
            emptied: true,
            workers_idle: true,
            cost: Duration::from_micros(2),
            cost_limit: INLINE_COST,
            spare_cores: false,
        }
    }

    #[test]
    fn small_cheap_batches_stay_on_the_receiver() {
        assert!(handle_here(cheap()));
        // A backlog stays here only without spare cores.
        let backlog = Load {
            emptied: false,
            ..cheap()
        };
        assert!(handle_here(backlog));
        assert!(!handle_here(Load {
            spare_cores: true,
            ..backlog
        }));
    }

    #[test]
    fn large_costly_or_queued_batches_go_to_the_workers() {
        let load = cheap();
        assert!(!handle_here(Load {
            messages: 1,
            bytes: 8 << 20,
            ..load
        }));
        assert!(!handle_here(Load {
            workers_idle: false,
            ..load
        }));
        // A costly record (a file written, a frame decompressed) goes to a worker even alone.
        assert!(!handle_here(Load {
            messages: 1,
            cost: Duration::from_micros(80),
            ..load
        }));
        // Cheap records, but too many of them to keep the socket waiting.
        assert!(!handle_here(Load {
            cost: Duration::from_micros(8),
            ..load
        }));
        // Until a cost is measured, batches go to the workers; a zero limit turns this off.
        let unmeasured = Duration::from_nanos(crate::collector::pool::UNMEASURED_COST_NS);
        assert!(!handle_here(Load {
            messages: 1,
            cost: unmeasured,
            ..load
        }));
        assert!(!handle_here(Load {
            cost_limit: Duration::ZERO,
            ..load
        }));
    }
}

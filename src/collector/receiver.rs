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

use super::pool::{Batch, Incoming, Pool};
use super::shutdown::Shutdown;
use super::stats::Stats;
use crate::budget::ByteBudget;
use crate::transport;
use crate::wire::Decoder;

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
    pub budget: Arc<ByteBudget>,
    pub stats: Arc<Stats>,
    pub shutdown: Shutdown,
    pub max_frames: usize,
    /// More than two cores: a backlog is worth handing to the workers.
    pub spare_cores: bool,
    /// The most a record may cost for its batch to be handled here.
    pub inline_cost: Duration,
    /// Decodes the batches handled here.
    pub decoder: Decoder,
    /// Acked delivery: brings the acknowledgements to send on the input socket.
    pub acks: Option<zmq::Socket>,
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
    pub(crate) fn run(mut self, socket: zmq::Socket, tx: Sender<Batch>) {
        self.receive(&socket, tx);
        self.relay_until_committed(&socket);
    }

    /// Receives until shutdown (then drains); the workers' channel closes when this returns.
    fn receive(&mut self, socket: &zmq::Socket, tx: Sender<Batch>) {
        let mut drain = Drain::default();
        loop {
            self.relay_acks(socket);
            if self.shutdown.is_triggered() {
                drain.begin();
            }
            let draining = drain.begun();
            if !draining {
                match wait_readable(socket, self.acks.as_ref()) {
                    Readable::Yes => {}
                    Readable::NotYet => continue,
                    Readable::Failed => return,
                }
            }
            let Some((batch, emptied)) = self.read_waiting(socket, &tx, &mut drain, draining)
            else {
                return;
            };
            if !batch.is_empty() && !self.hand_over(batch, emptied, &tx) {
                return;
            }
            if draining && (emptied || drain.is_over()) {
                return;
            }
        }
    }

    /// Reads everything that is waiting before polling again, handing over each batch that
    /// fills up. Returns the batch not yet handed over and whether the socket was emptied;
    /// `None` when the receiver is to stop (the socket failed or the workers are gone).
    fn read_waiting(
        &mut self,
        socket: &zmq::Socket,
        tx: &Sender<Batch>,
        drain: &mut Drain,
        draining: bool,
    ) -> Option<(Batch, bool)> {
        let mut batch = Batch::new(&self.budget);
        loop {
            if drain.is_over() {
                return Some((batch, false));
            }
            let frames =
                match transport::recv_message_capped(socket, zmq::DONTWAIT, self.max_frames) {
                    Ok(Some(frames)) => frames,
                    Ok(None) => return Some((batch, true)),
                    Err(zmq::Error::EINTR) => return Some((batch, false)),
                    Err(e) => {
                        tracing::error!("receiver: receive failed: {e}");
                        let _ = tx.send(batch);
                        return None;
                    }
                };
            let bytes = frames.iter().map(|f| f.len() as u64).sum();
            match self.admit(&mut batch, bytes, tx, drain) {
                Admit::Taken(in_use) => self.stats.set_inflight(in_use),
                Admit::GaveUp => return Some((batch, false)),
                Admit::Stop => return None,
            }
            self.stats.on_received();
            batch.messages.push(Incoming {
                frames,
                received_at: SystemTime::now(),
            });
            if batch.messages.len() >= BATCH_MESSAGES || batch.bytes() >= BATCH_BYTES {
                let full = std::mem::replace(&mut batch, Batch::new(&self.budget));
                if !self.hand_over(full, false, tx) {
                    return None;
                }
                self.relay_acks(socket);
            }
            if !draining && self.shutdown.is_triggered() {
                return Some((batch, false));
            }
        }
    }

    /// Takes a message's `bytes` from the in-flight budget into `batch`. When the budget is
    /// full, hands `batch` over first (so that the workers can give bytes back) and waits; while
    /// draining, only until the drain time is up.
    fn admit(&self, batch: &mut Batch, bytes: u64, tx: &Sender<Batch>, drain: &mut Drain) -> Admit {
        if let Some(in_use) = batch.permit.try_grow(bytes) {
            return Admit::Taken(in_use);
        }
        if !batch.is_empty() {
            let full = std::mem::replace(batch, Batch::new(&self.budget));
            if tx.send(full).is_err() {
                return Admit::Stop;
            }
        }
        // While draining the workers are still running, so waiting is bounded. A shutdown that
        // comes during the wait starts the drain time.
        let shutdown = &self.shutdown;
        let give_up = || {
            if shutdown.is_triggered() {
                drain.begin();
            }
            drain.is_over()
        };
        match batch.permit.grow_or_give_up(bytes, give_up) {
            Some(in_use) => Admit::Taken(in_use),
            None => {
                // The drain time is up with the budget still full: this message was taken from
                // the socket, so it is counted, rejected as not stored.
                self.stats.on_received();
                self.stats.on_rejected(None, "shutdown");
                Admit::GaveUp
            }
        }
    }

    /// Handles `batch` here or sends it to the workers; `false` when the workers are gone.
    fn hand_over(&mut self, batch: Batch, emptied: bool, tx: &Sender<Batch>) -> bool {
        let here = handle_here(Load {
            messages: batch.messages.len(),
            bytes: batch.bytes(),
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

/// Whether the socket has a message to read.
enum Readable {
    Yes,
    /// Nothing within [`POLL_MS`], or a signal came: look at the shutdown flag and poll again.
    NotYet,
    /// The socket failed (logged): the receiver stops.
    Failed,
}

/// Polls `socket` for [`POLL_MS`] at most; [`Readable::NotYet`] also when `acks` has
/// acknowledgements to relay.
fn wait_readable(socket: &zmq::Socket, acks: Option<&zmq::Socket>) -> Readable {
    let mut items = [socket.as_poll_item(zmq::POLLIN)];
    let mut both;
    let polled = match acks {
        None => zmq::poll(&mut items, POLL_MS).map(|_| items[0].is_readable()),
        Some(acks) => {
            both = [
                socket.as_poll_item(zmq::POLLIN),
                acks.as_poll_item(zmq::POLLIN),
            ];
            zmq::poll(&mut both, POLL_MS).map(|_| both[0].is_readable())
        }
    };
    match polled {
        Ok(false) | Err(zmq::Error::EINTR) => Readable::NotYet,
        Ok(true) => Readable::Yes,
        Err(e) => {
            tracing::error!("receiver: poll failed: {e}");
            Readable::Failed
        }
    }
}

impl Receiver<'_> {
    /// Acked delivery: once reading has stopped, goes on sending acknowledgements until the
    /// last commit (after the workers have drained) is done, so that the records stored at
    /// the stop are acknowledged too.
    fn relay_until_committed(&self, socket: &zmq::Socket) {
        let (Some(acks), Some(committer)) = (&self.acks, &self.pool.acks) else {
            return;
        };
        loop {
            let done = committer.is_done();
            self.relay_acks(socket);
            if done {
                return;
            }
            let _ = acks.poll(zmq::POLLIN, 20);
        }
    }

    /// Sends every acknowledgement waiting (`[routing id, ack]` from the commit thread) on the
    /// input socket, without waiting: ZeroMQ drops one for a publisher that is gone or not
    /// reading, and the next, cumulative, says the same and more.
    fn relay_acks(&self, socket: &zmq::Socket) {
        let Some(acks) = &self.acks else {
            return;
        };
        while let Ok(parts) = acks.recv_multipart(zmq::DONTWAIT) {
            if let [to, ack] = &parts[..] {
                let sent = socket
                    .send(&to[..], zmq::SNDMORE | zmq::DONTWAIT)
                    .and_then(|()| socket.send(&ack[..], zmq::DONTWAIT));
                if let Err(e) = sent {
                    tracing::debug!("an acknowledgement was not sent: {e}");
                }
            }
        }
    }
}

/// What [`Receiver::admit`] did with a message.
enum Admit {
    /// Its bytes were taken; the bytes now in flight.
    Taken(u64),
    /// The drain time ran out before there was room: the message is dropped (and counted).
    GaveUp,
    /// The workers are gone.
    Stop,
}

/// The drain after shutdown: when it ends, once begun.
#[derive(Debug, Default)]
struct Drain(Option<Instant>);

impl Drain {
    /// Starts the drain time, unless it has started already.
    fn begin(&mut self) {
        self.0.get_or_insert_with(|| Instant::now() + DRAIN);
    }

    fn begun(&self) -> bool {
        self.0.is_some()
    }

    /// True once the drain time is up.
    fn is_over(&self) -> bool {
        self.0.is_some_and(|until| Instant::now() >= until)
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

//! The decode workers: turn received frames into records with the wire core (no copy of raw
//! buffers), pass each record to every sink, and count what happened. The receiver runs the
//! same code for batches it handles itself, and reads the measured cost per message here.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::Receiver;

use super::budget::Budget;
use super::receiver::Incoming;
use super::sink::{Received, Sink};
use super::stats::Stats;
use crate::transport;
use crate::wire::{decode_allocation, DecodeAllocation, Decoder, Limits};

/// Everything a decode worker needs, shared by all of them.
pub(crate) struct Pool {
    pub limits: Limits,
    pub has_topic: bool,
    pub sinks: Vec<Arc<dyn Sink>>,
    pub stats: Arc<Stats>,
    pub budget: Arc<Budget>,
    /// Bytes that decoding allocates ([`decode_allocation`]), taken from the header before the
    /// buffers are decoded and given back after the sinks. Its cap is the in-flight cap: what
    /// compressed frames decode to is bounded as what arrives is, whatever sizes they declare.
    pub decode_budget: Budget,
    pub log: RateLimitedLog,
    /// Recent handling time per message, in nanoseconds (a moving average over batches); start
    /// with [`UNMEASURED_COST_NS`].
    pub cost_ns: AtomicU64,
}

impl Pool {
    pub(crate) fn decode_loop(&self, rx: Receiver<Vec<Incoming>>) {
        let mut decoder = Decoder::new(self.limits);
        for batch in rx.iter() {
            self.handle_batch(batch, &mut decoder);
        }
    }

    /// Decodes a batch and hands its records to the sinks, then gives its bytes back to the
    /// in-flight budget (also if a sink panics on the way), and updates the cost per message.
    /// `decoder` belongs to the calling thread: it remembers the headers that thread has seen.
    pub(crate) fn handle_batch(&self, batch: Vec<Incoming>, decoder: &mut Decoder) {
        let _release = Release {
            budget: &self.budget,
            stats: &self.stats,
            bytes: batch.iter().map(|m| m.bytes).sum(),
        };
        let (started, messages) = (Instant::now(), batch.len().max(1) as u64);
        for incoming in batch {
            self.handle(incoming, decoder);
        }
        let per_message = (started.elapsed().as_nanos() as u64) / messages;
        // An average over about eight batches; concurrent updates may lose one, which is fine.
        let old = self.cost_ns.load(Ordering::Relaxed);
        self.cost_ns
            .store(old - old / 8 + per_message / 8, Ordering::Relaxed);
    }

    /// Recent handling time per message.
    pub(crate) fn cost_per_message(&self) -> Duration {
        Duration::from_nanos(self.cost_ns.load(Ordering::Relaxed))
    }

    fn handle(&self, incoming: Incoming, decoder: &mut Decoder) {
        let mut frames: Vec<Bytes> = incoming
            .frames
            .into_iter()
            .map(transport::frame_bytes)
            .collect();
        if self.has_topic && !frames.is_empty() {
            frames.remove(0);
        }
        // Decoding is pure code over the bytes and must not panic; if it ever does, the message
        // is counted as rejected and the thread (possibly the receiver) goes on.
        let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let header = decoder.header(&frames)?;
            let allocation = header
                .arrays
                .iter()
                .map(decode_allocation)
                .fold(DecodeAllocation::default(), |sum, a| sum + a);
            if allocation.total() > 0 {
                // A message that cannot be decoded is refused before it waits for budget.
                decoder.check_buffers(&header, &frames)?;
            }
            let mut permit = Permit::take(&self.decode_budget, allocation.total());
            let record = decoder.buffers(header, &frames)?;
            // The scratch is free again; the decoded arrays are held until the sinks are done
            // with the record (the end of this function).
            permit.shrink_to(allocation.output);
            Ok::<_, crate::wire::DecodeError>((record, permit))
        }));
        let (record, _permit) = match decoded {
            Ok(Ok(decoded)) => decoded,
            failed => {
                let source = peek_source(&frames, &self.limits);
                let kind = match &failed {
                    Ok(Err(e)) => e.kind(),
                    _ => "internal",
                };
                self.stats.on_rejected(source.as_deref(), kind);
                self.log.warn(|| {
                    let from = source.as_deref().unwrap_or("an unknown source");
                    match &failed {
                        Ok(Err(e)) => format!("rejected a message from {from}: {e}"),
                        _ => format!("decoding a message from {from} panicked; it was dropped"),
                    }
                });
                return;
            }
        };
        let received = Received {
            record,
            frames,
            received_at: incoming.received_at,
        };
        let mut all_ok = true;
        for sink in &self.sinks {
            // A sink that panics is counted like one that fails; the worker goes on.
            let result =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sink.write(&received)));
            let failure = match result {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e.to_string()),
                Err(_) => Some("the sink panicked".to_owned()),
            };
            if let Some(reason) = failure {
                all_ok = false;
                self.stats.on_sink_error(sink.name());
                self.log
                    .warn(|| format!("sink {}: cannot take a record: {reason}", sink.name()));
            }
        }
        let header = &received.record.header;
        self.stats.on_decoded(
            &header.source,
            &header.session,
            header.seq,
            received.record.wire_bytes(),
            received.record.raw_bytes(),
            all_ok,
        );
    }
}

/// The cost per message assumed before any was measured: high enough that the workers handle
/// the first batches, until the sinks have shown they are quick.
pub(crate) const UNMEASURED_COST_NS: u64 = 50_000;

/// Gives a batch's bytes back to the in-flight budget when dropped.
struct Release<'a> {
    budget: &'a Budget,
    stats: &'a Stats,
    bytes: u64,
}

impl Drop for Release<'_> {
    fn drop(&mut self) {
        let in_use = self.budget.release(self.bytes);
        self.stats.set_inflight(in_use);
    }
}

/// Bytes taken from a budget, given back when dropped.
struct Permit<'a> {
    budget: &'a Budget,
    bytes: u64,
}

impl<'a> Permit<'a> {
    /// Takes `bytes` from `budget`, waiting for room (none are taken for zero bytes). Only
    /// threads that are decoding hold this budget, and they give it back without waiting for
    /// anything else, so the wait ends.
    fn take(budget: &'a Budget, bytes: u64) -> Permit<'a> {
        if bytes > 0 {
            budget.acquire(bytes, || false);
        }
        Permit { budget, bytes }
    }

    /// Gives back all but `bytes`.
    fn shrink_to(&mut self, bytes: u64) {
        if bytes < self.bytes {
            self.budget.release(self.bytes - bytes);
            self.bytes = bytes;
        }
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.budget.release(self.bytes);
        }
    }
}

/// The `source` of a header that failed to decode, when the header is JSON enough to say.
fn peek_source(frames: &[Bytes], limits: &Limits) -> Option<String> {
    let header = frames.first()?;
    if header.len() > limits.max_header_bytes {
        return None;
    }
    let value: serde_json::Value = serde_json::from_slice(header).ok()?;
    let source = value.get("source")?.as_str()?;
    Some(source.chars().take(256).collect())
}

/// Logs at most a burst of warnings per second and counts the rest, so a flood of bad input
/// cannot flood the log.
pub(crate) struct RateLimitedLog {
    window: Mutex<(Instant, u32)>,
    suppressed: AtomicU64,
}

const BURST: u32 = 10;

impl RateLimitedLog {
    pub(crate) fn new() -> Self {
        RateLimitedLog {
            window: Mutex::new((Instant::now(), 0)),
            suppressed: AtomicU64::new(0),
        }
    }

    pub(crate) fn warn(&self, message: impl FnOnce() -> String) {
        let mut window = self.window.lock().expect("log lock");
        if window.0.elapsed() >= Duration::from_secs(1) {
            let suppressed = self.suppressed.swap(0, Ordering::Relaxed);
            if suppressed > 0 {
                tracing::warn!("{suppressed} similar warnings suppressed");
            }
            *window = (Instant::now(), 0);
        }
        if window.1 < BURST {
            window.1 += 1;
            drop(window);
            tracing::warn!("{}", message());
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

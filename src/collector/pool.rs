//! The decode workers: turn received frames into records with the wire core (no copy of raw
//! buffers), pass each record to every sink, and count what happened. The receiver runs the
//! same code for batches it handles itself, and reads the measured cost per message here.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use crossbeam_channel::Receiver;

use super::acks::{Claim, Committer, Outcome, SessionId};
use super::ratelimit::RateLimitedLog;
use super::shutdown::Shutdown;
use super::sink::{Received, Sink};
use super::stats::Stats;
use crate::budget::{ByteBudget, Permit};
use crate::transport;
use crate::wire::{decode_allocation, DecodeAllocation, DecodeError, Decoder, Limits, Record};

/// A message as read from the socket.
pub(crate) struct Incoming {
    pub frames: Vec<zmq::Message>,
    pub received_at: SystemTime,
}

/// Messages handed over together, and the in-flight bytes they hold (given back when the
/// batch is dropped, once the sinks are done with it).
pub(crate) struct Batch {
    pub(crate) messages: Vec<Incoming>,
    pub(crate) permit: Permit<Arc<ByteBudget>>,
}

impl Batch {
    /// An empty batch holding nothing of `budget`.
    pub(crate) fn new(budget: &Arc<ByteBudget>) -> Batch {
        Batch {
            messages: Vec::new(),
            permit: Permit::empty(Arc::clone(budget)),
        }
    }

    /// True when the batch holds no message.
    pub(crate) fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// The bytes of the messages' frames.
    pub(crate) fn bytes(&self) -> u64 {
        self.permit.bytes()
    }
}

/// Everything a decode worker needs, shared by all of them.
pub(crate) struct Pool {
    pub limits: Limits,
    pub has_topic: bool,
    /// Peers are CURVE keys: each message carries its key's name (ZeroMQ's `User-Id`), and
    /// its record is counted and stored under that name.
    pub authenticated: bool,
    pub sinks: Vec<Arc<dyn Sink>>,
    pub stats: Arc<Stats>,
    /// Bytes that decoding allocates ([`decode_allocation`]), taken from the header before the
    /// buffers are decoded and given back after the sinks. Its cap is the in-flight cap: what
    /// compressed frames decode to is bounded as what arrives is, whatever sizes they declare.
    pub decode_budget: ByteBudget,
    pub log: RateLimitedLog,
    /// How long retries go on once the collector is stopping.
    pub drain: Arc<Drain>,
    /// Acked delivery: the ledger and the group commit (`None`: fire-and-forget).
    pub acks: Option<Arc<Committer>>,
    /// Recent handling time per message, in nanoseconds (a moving average over batches); start
    /// with [`UNMEASURED_COST_NS`].
    pub cost_ns: AtomicU64,
}

impl Pool {
    pub(crate) fn decode_loop(&self, rx: Receiver<Batch>) {
        let mut decoder = Decoder::new(self.limits);
        for batch in rx.iter() {
            self.handle_batch(batch, &mut decoder);
        }
    }

    /// Decodes a batch and hands its records to the sinks, then gives its bytes back to the
    /// in-flight budget (also if a sink panics on the way), and updates the cost per message.
    /// `decoder` belongs to the calling thread: it remembers the headers that thread has seen.
    pub(crate) fn handle_batch(&self, batch: Batch, decoder: &mut Decoder) {
        let Batch { messages, permit } = batch;
        let _release = Release {
            permit,
            stats: &self.stats,
        };
        let (started, count) = (Instant::now(), messages.len().max(1) as u64);
        for incoming in messages {
            self.handle(incoming, decoder);
        }
        let per_message = (started.elapsed().as_nanos() as u64) / count;
        // An average over about eight batches; concurrent updates may lose one, which is fine.
        let old = self.cost_ns.load(Ordering::Relaxed);
        self.cost_ns
            .store(old - old / 8 + per_message / 8, Ordering::Relaxed);
    }

    /// Recent handling time per message.
    pub(crate) fn cost_per_message(&self) -> Duration {
        Duration::from_nanos(self.cost_ns.load(Ordering::Relaxed))
    }

    /// Decodes one message, passes the record to every sink and counts it.
    fn handle(&self, mut incoming: Incoming, decoder: &mut Decoder) {
        let reply_to = self.reply_to(&mut incoming.frames);
        let peer = self.peer_name(&mut incoming.frames);
        if self.authenticated && peer.is_none() {
            // Every admitted key has a name: a message without one did not pass the allowlist.
            self.stats.on_rejected(None, "unauthenticated");
            self.log
                .warn(|| "rejected a message that carries no CURVE key's name".to_owned());
            return;
        }
        let frames = self.wire_frames(incoming.frames);
        // Decoding is pure code over the bytes and must not panic; if it ever does, the message
        // is counted as rejected and the thread (possibly the receiver) goes on.
        let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.decode(&frames, decoder)
        }));
        let (record, _permit) = match decoded {
            Ok(Ok(decoded)) => decoded,
            Ok(Err(e)) => return self.reject(&frames, Some(&e), peer, reply_to),
            Err(_) => return self.reject(&frames, None, peer, reply_to),
        };
        let mut received = Received {
            record,
            frames,
            received_at: incoming.received_at,
            claimed_source: None,
        };
        if let Some(name) = peer {
            self.bind_source(&mut received, name);
        }
        let claimed = match &reply_to {
            Some(reply_to) => match self.claim(&received, reply_to) {
                Some(id) => Some(id),
                None => return,
            },
            None => None,
        };
        let all_ok = self.store(&received);
        let header = &received.record.header;
        if let (Some(committer), Some(id)) = (&self.acks, claimed) {
            // A record the sinks could not take for good is settled as refused; one cut short
            // by the stop stays unsettled, for the publisher to send to the next run.
            if all_ok || !self.drain.expired() {
                let outcome = if all_ok {
                    Outcome::Stored
                } else {
                    self.note_refused(&header.source, &header.session, header.seq, "not_stored");
                    Outcome::Refused
                };
                let bytes = received.record.wire_bytes();
                committer.written((id, header.seq, header.end), outcome, bytes);
            }
        }
        let conflict = if header.end {
            self.stats
                .on_ended(&header.source, &header.session, header.seq)
        } else {
            self.stats.on_decoded(
                &header.source,
                &header.session,
                header.seq,
                received.record.wire_bytes(),
                received.record.raw_bytes(),
                all_ok,
            )
        };
        if conflict {
            self.log.warn(|| {
                format!(
                    "source {:?}: a record of session {:?} while a later session holds the \
                     source (two publishers under one source name?)",
                    header.source, header.session
                )
            });
        }
    }

    /// In acked delivery, takes the first frame off: the routing id of the publisher's
    /// connection, where its acknowledgements go.
    fn reply_to(&self, frames: &mut Vec<zmq::Message>) -> Option<Bytes> {
        if self.acks.is_none() || frames.is_empty() {
            return None;
        }
        Some(transport::frame_bytes(frames.remove(0)))
    }

    /// Claims a received message in the ledger of acked delivery: its session's id, or `None`
    /// when it is not to be stored: claimed before (a publisher's resend, counted as
    /// `redelivered` and acknowledged again), or beyond what the ledger follows (rejected, and
    /// not acknowledged).
    fn claim(&self, received: &Received, reply_to: &Bytes) -> Option<SessionId> {
        let committer = self.acks.as_ref()?;
        let header = &received.record.header;
        match committer
            .ledger
            .claim(&header.source, &header.session, header.seq, reply_to)
        {
            Claim::New(id) => Some(id),
            Claim::Again(id) => {
                self.stats.on_redelivered();
                committer.written((id, header.seq, header.end), Outcome::Again, 0);
                None
            }
            Claim::Full => {
                self.stats.on_rejected(Some(&header.source), "ledger_full");
                self.log.warn(|| {
                    format!(
                        "rejected seq {} of session {:?} of {:?}: the acknowledgement ledger \
                         follows no more sessions, or no more messages ahead of a gap",
                        header.seq, header.session, header.source
                    )
                });
                None
            }
        }
    }

    /// The name of the CURVE key that sent a message (`None` without CURVE).
    fn peer_name(&self, frames: &mut [zmq::Message]) -> Option<String> {
        if !self.authenticated {
            return None;
        }
        let name = frames.first_mut()?.gets("User-Id")?;
        (!name.is_empty()).then(|| name.to_owned())
    }

    /// Makes `name`, the key that sent the record, its source: a header that named another is
    /// rewritten (so that every sink and subscriber sees the same source), counted and logged,
    /// and what it named is kept as the record's `claimed_source`.
    fn bind_source(&self, received: &mut Received, name: String) {
        let header = &mut received.record.header;
        if header.source == name {
            return;
        }
        let claimed = std::mem::replace(&mut header.source, name);
        if let Some(first) = received.frames.first_mut() {
            *first = Bytes::from(header.to_json());
        }
        received.claimed_source = Some(claimed);
        if header.end {
            // A session's end is no record: rewritten, but not counted.
            return;
        }
        self.stats.on_reattributed(&header.source);
        let claimed = received.claimed_source.as_deref().unwrap_or_default();
        self.log.warn(|| {
            format!(
                "key {:?} sent a record claiming source {claimed:?}: stored under the key's name",
                header.source
            )
        });
    }

    /// The frames of a message as the wire core reads them: the topic frame taken off.
    fn wire_frames(&self, frames: Vec<zmq::Message>) -> Vec<Bytes> {
        let mut frames: Vec<Bytes> = frames.into_iter().map(transport::frame_bytes).collect();
        if self.has_topic && !frames.is_empty() {
            frames.remove(0);
        }
        frames
    }

    /// Decodes a message, holding what decoding allocates against the decode budget; the
    /// permit returned holds the decoded arrays' bytes until the sinks are done.
    fn decode<'p>(
        &'p self,
        frames: &[Bytes],
        decoder: &mut Decoder,
    ) -> Result<(Record, Permit<&'p ByteBudget>), DecodeError> {
        let header = decoder.header(frames)?;
        let allocation = header
            .arrays
            .iter()
            .map(decode_allocation)
            .fold(DecodeAllocation::default(), |sum, a| sum + a);
        let mut permit = if allocation.total() > 0 {
            // A message that cannot be decoded is refused before it waits for budget.
            decoder.check_buffers(&header, frames)?;
            // Only threads that are decoding hold this budget, and they give it back without
            // waiting for anything else, so the wait ends.
            Permit::acquire(&self.decode_budget, allocation.total())
        } else {
            Permit::empty(&self.decode_budget)
        };
        let record = decoder.buffers(header, frames)?;
        // The scratch is free again; the decoded arrays are held until the sinks are done with
        // the record.
        permit.shrink_to(allocation.output);
        Ok((record, permit))
    }

    /// Acked delivery: tells every sink that a message is refused for good, before the refusal
    /// is settled (the commit then makes it durable with the rest), so that a restarted
    /// collector knows it ([`Sink::refused`]).
    fn note_refused(&self, source: &str, session: &str, seq: u64, reason: &str) {
        for sink in &self.sinks {
            if let Err(e) = sink.refused(source, session, seq, reason) {
                self.log.warn(|| {
                    format!("sink {}: the refusal of seq {seq} of session {session:?} of {source:?} is not kept: {e}", sink.name())
                });
            }
        }
    }

    /// Counts and logs a message that failed to decode (`None`: decoding panicked). In acked
    /// delivery, a message whose header names its session and seq is settled as refused, so
    /// that its publisher does not resend it forever.
    fn reject(
        &self,
        frames: &[Bytes],
        error: Option<&DecodeError>,
        peer: Option<String>,
        reply_to: Option<Bytes>,
    ) {
        let ids = peek_ids(frames, &self.limits);
        let source = peer.or_else(|| ids.as_ref().map(|(source, ..)| source.clone()));
        self.stats
            .on_rejected(source.as_deref(), error.map_or("internal", |e| e.kind()));
        if let (Some(committer), Some(reply_to), Some(source), Some((_, session, seq))) =
            (&self.acks, &reply_to, &source, &ids)
        {
            if let Claim::New(id) = committer.ledger.claim(source, session, *seq, reply_to) {
                let reason = error.map_or("internal", |e| e.kind());
                self.note_refused(source, session, *seq, reason);
                committer.written((id, *seq, false), Outcome::Refused, 0);
            }
        }
        self.log.warn(|| {
            let from = source.as_deref().unwrap_or("an unknown source");
            match error {
                Some(e) => {
                    let hint = DecodeError::raised_by(e.kind())
                        .map(|option| format!(" (raise the limit with {option})"))
                        .unwrap_or_default();
                    format!("rejected a message from {from}: {e}{hint}")
                }
                None => format!("decoding a message from {from} panicked; it was dropped"),
            }
        });
    }

    /// Passes a record (or a session's end) to every sink; true when all of them took it. A
    /// sink that fails or panics is counted and logged, and the others still get the record.
    fn store(&self, received: &Received) -> bool {
        let mut all_ok = true;
        for sink in &self.sinks {
            if let Err(reason) = self.store_in(sink.as_ref(), received) {
                all_ok = false;
                let what = if received.record.header.end {
                    // Not a record: a sink that lost it reports the session as not ended.
                    "the end of a session"
                } else {
                    self.stats.on_sink_error(sink.name());
                    "a record"
                };
                self.log
                    .warn(|| format!("sink {}: cannot take {what}: {reason}", sink.name()));
            }
        }
        all_ok
    }

    /// Writes a record to one sink. An error that may pass (a full disk: see
    /// [`SinkError::may_pass`]) is retried with backoff, holding this thread and with it the
    /// collector's reading (publishers then wait), until the sink takes the record or the
    /// collector has been stopping for longer than its drain timeout.
    fn store_in(&self, sink: &dyn Sink, received: &Received) -> Result<(), String> {
        let mut pause = RETRY_FIRST;
        loop {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                if received.record.header.end {
                    sink.end(received)
                } else {
                    sink.write(received)
                }
            }));
            let error = match result {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(e)) => e,
                Err(_) => return Err("the sink panicked".to_owned()),
            };
            if !error.may_pass() || self.drain.expired() {
                return Err(error.to_string());
            }
            self.stats.on_sink_retry(sink.name());
            self.log.warn(|| {
                format!(
                    "sink {}: {error}; reading stops, retrying in {pause:?}",
                    sink.name()
                )
            });
            std::thread::sleep(pause);
            pause = (pause * 2).min(RETRY_MAX);
        }
    }
}

/// The first wait before a sink error that may pass is retried, and the longest.
const RETRY_FIRST: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(2);

/// How long a stopping collector keeps retrying sink errors that may pass: from when a retry
/// first sees the shutdown flag (so stopping takes at most the time to drain what was read,
/// plus the timeout, plus one pause between retries).
pub(crate) struct Drain {
    shutdown: Shutdown,
    timeout: Duration,
    since: std::sync::OnceLock<Instant>,
}

impl Drain {
    /// Retries go on for `timeout` once a retry has seen `shutdown` triggered.
    pub(crate) fn new(shutdown: Shutdown, timeout: Duration) -> Drain {
        Drain {
            shutdown,
            timeout,
            since: std::sync::OnceLock::new(),
        }
    }

    /// True once the shutdown has been triggered for longer than the timeout.
    pub(crate) fn expired(&self) -> bool {
        self.shutdown.is_triggered()
            && self.since.get_or_init(Instant::now).elapsed() >= self.timeout
    }
}

/// The cost per message assumed before any was measured: high enough that the workers handle
/// the first batches, until the sinks have shown they are quick.
pub(crate) const UNMEASURED_COST_NS: u64 = 50_000;

/// Gives a batch's bytes back to the in-flight budget when dropped, and records what is then
/// in flight.
struct Release<'a> {
    permit: Permit<Arc<ByteBudget>>,
    stats: &'a Stats,
}

impl Drop for Release<'_> {
    fn drop(&mut self) {
        let in_use = self.permit.release();
        self.stats.set_inflight(in_use);
    }
}

/// The `source`, `session` and `seq` of a header that failed to decode, when the header is JSON
/// enough to say (a missing session or seq reads as empty and 0).
fn peek_ids(frames: &[Bytes], limits: &Limits) -> Option<(String, String, u64)> {
    let header = frames.first()?;
    if header.len() > limits.max_header_bytes {
        return None;
    }
    let value: serde_json::Value = serde_json::from_slice(header).ok()?;
    let text = |field: &str| -> Option<String> {
        Some(value.get(field)?.as_str()?.chars().take(256).collect())
    };
    let source = text("source")?;
    let session = text("session").unwrap_or_default();
    let seq = value
        .get("seq")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0);
    Some((source, session, seq))
}

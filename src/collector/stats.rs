//! Collector statistics: per-source counters, decode errors by kind, and sequence tracking that
//! tells lost messages (gaps) from late and duplicate ones, even when decode workers finish out
//! of order.

use std::collections::{BTreeMap, HashMap};

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::plural::plural;

/// Counts of the input socket's accepted connections.
#[derive(Debug, Default)]
pub(crate) struct PeerCounts {
    /// Connections open now.
    pub(crate) connected: AtomicU64,
    /// Connections closed at once because `connected` was at the limit.
    pub(crate) refused: AtomicU64,
    /// Handshakes refused because the peer's CURVE key is not on the allowlist.
    pub(crate) refused_keys: AtomicU64,
    /// Handshakes that failed (a peer without CURVE at a CURVE socket, a wrong server key).
    pub(crate) failed_handshakes: AtomicU64,
}

/// The hasher of the maps looked up once per message. foldhash, seeded per map: the keys come
/// from the network, and the maps are bounded ([`MAX_SOURCES`], [`MAX_TRACKED_SESSIONS`]).
type FastHash = foldhash::fast::RandomState;

/// Most runs of missing sequence numbers remembered per session; past this the oldest run is
/// forgotten (still counted as gaps, but a late arrival can no longer cancel it).
const MAX_MISSING_RUNS: usize = 1024;

/// Most sessions followed per source; past this the least recently started one is forgotten.
const MAX_SESSIONS_PER_SOURCE: usize = 256;

/// Most sessions followed at once over all sources. A new session of a source that has reached
/// this makes the source forget its oldest one; a new session of a source that has none is
/// counted but not followed (`untracked_messages`). With [`MAX_MISSING_RUNS`] and
/// [`MAX_KEY`], this bounds what sequence tracking holds, whatever peers send, to some
/// hundreds of MiB in the worst case: each session at most about 40 KiB of missing runs and
/// two keys of at most 256 bytes.
const MAX_TRACKED_SESSIONS: usize = 16_384;

/// Most sources counted separately; further ones are counted together under `"(other)"`.
const MAX_SOURCES: usize = 4096;

/// Longest source or session id kept as a key; longer ones are cut.
const MAX_KEY: usize = 256;

/// `id` cut to at most [`MAX_KEY`] bytes, at a character boundary.
fn key_of(id: &str) -> &str {
    let mut end = id.len().min(MAX_KEY);
    while !id.is_char_boundary(end) {
        end -= 1;
    }
    &id[..end]
}

/// Follows one publisher session's `seq` numbers, remembering missing ones as runs, so memory
/// and time stay small whatever numbers a peer sends.
#[derive(Debug, Default, Clone)]
pub(super) struct SeqTracker {
    first: Option<u64>,
    last: u64,
    /// Missing runs: start -> end (exclusive).
    missing: BTreeMap<u64, u64>,
    missing_count: u64,
    forgotten: u64,
    duplicates: u64,
    /// The session started while this collector ran (not continued from an earlier run's
    /// output), and it is counted in [`SourceStats::sessions`].
    this_run: bool,
    /// The session's end came.
    ended: bool,
}

impl SeqTracker {
    /// Records the arrival of `seq`.
    pub(super) fn observe(&mut self, seq: u64) {
        let Some(first) = self.first else {
            self.first = Some(seq);
            self.last = seq;
            return;
        };
        if seq > self.last {
            self.add_missing(self.last + 1, seq);
            self.last = seq;
        } else if seq < first {
            // An earlier message than the first one seen arrived late: the session started
            // before it, so everything between is missing until it comes.
            self.add_missing(seq + 1, first);
            self.first = Some(seq);
        } else if !self.remove_missing(seq) {
            self.duplicates = self.duplicates.saturating_add(1);
        }
    }

    /// Records the message that ends the session after `seq` records (0 to `seq - 1`): the
    /// records after the last one seen, and before the first one, are missing.
    fn end(&mut self, seq: u64) {
        self.observe(seq);
        if let Some(first) = self.first.filter(|&first| first > 0) {
            self.add_missing(0, first);
            self.first = Some(0);
        }
        self.ended = true;
    }

    fn add_missing(&mut self, from: u64, to: u64) {
        if from >= to {
            return;
        }
        self.missing.insert(from, to);
        self.missing_count = self.missing_count.saturating_add(to - from);
        self.forget_beyond_cap();
    }

    fn forget_beyond_cap(&mut self) {
        while self.missing.len() > MAX_MISSING_RUNS {
            if let Some((start, end)) = self.missing.pop_first() {
                self.missing_count -= end - start;
                self.forgotten = self.forgotten.saturating_add(end - start);
            }
        }
    }

    fn remove_missing(&mut self, seq: u64) -> bool {
        let Some((&start, &end)) = self.missing.range(..=seq).next_back() else {
            return false;
        };
        if seq >= end {
            return false;
        }
        self.missing.remove(&start);
        if start < seq {
            self.missing.insert(start, seq);
        }
        if seq + 1 < end {
            self.missing.insert(seq + 1, end);
        }
        self.missing_count -= 1;
        self.forget_beyond_cap();
        true
    }

    /// Messages not (yet) received between the first and the last seen.
    pub(super) fn gaps(&self) -> u64 {
        self.missing_count.saturating_add(self.forgotten)
    }

    /// Messages received more than once.
    pub(super) fn duplicates(&self) -> u64 {
        self.duplicates
    }
}

/// The sessions of one source being followed, oldest first.
#[derive(Debug, Default)]
struct Sessions {
    trackers: HashMap<String, SeqTracker, FastHash>,
    order: std::collections::VecDeque<String>,
    /// The session that holds the source: the one that started last, and when.
    holder: Option<(String, Instant)>,
}

/// How long after a session takes its source an earlier session's records still pass as the
/// tail of a publisher that was restarted (records in flight) rather than as a conflict.
const HANDOVER: Duration = Duration::from_secs(1);

impl Sessions {
    /// Whether a record of `session` conflicts with the session holding the source: another,
    /// which took it more than [`HANDOVER`] ago (two publishers sending under one source).
    fn conflicts(&self, session: &str) -> bool {
        self.holder
            .as_ref()
            .is_some_and(|(holder, since)| holder != session && since.elapsed() > HANDOVER)
    }
}

/// Counters of one source.
#[derive(Debug, Default, Clone, Serialize)]
pub struct SourceStats {
    /// Messages decoded and passed to the sinks.
    pub messages: u64,
    /// Bytes of those messages' frames as received.
    pub wire_bytes: u64,
    /// Decoded bytes of their arrays.
    pub raw_bytes: u64,
    /// Messages rejected, by error kind.
    pub errors: BTreeMap<String, u64>,
    /// Messages lost in transit, over all sessions.
    pub gaps: u64,
    /// Messages received twice.
    pub duplicates: u64,
    /// Sessions seen (publisher restarts start new ones).
    pub sessions: u64,
    /// Of those, the sessions whose end came: their publishers closed, and every record they
    /// sent was counted, as stored or as a gap.
    pub sessions_ended: u64,
    /// Messages of sessions that arrived while the collector already followed as many sessions
    /// as it does at once and this source had none to give up: counted in `messages`, but
    /// neither their sessions nor their gaps and duplicates are.
    pub untracked_messages: u64,
    /// Messages of a session while another session held the source: the one that started
    /// last, more than a second before. Two publishers sending under one source name (a
    /// misconfiguration, or a peer posing as another; with CURVE a source is a key).
    pub source_conflicts: u64,
    /// Messages from this CURVE key whose header named another source: counted and stored
    /// under the key's name, the header's source kept as `claimed_source`.
    pub reattributed: u64,
}

impl SourceStats {
    /// `wire_bytes / raw_bytes`.
    pub fn compression_ratio(&self) -> f64 {
        if self.raw_bytes == 0 {
            1.0
        } else {
            self.wire_bytes as f64 / self.raw_bytes as f64
        }
    }
}

/// A point-in-time copy of the collector's statistics.
#[derive(Debug, Default, Clone, Serialize)]
pub struct StatsSnapshot {
    /// Seconds since the collector started.
    pub elapsed_seconds: f64,
    /// Messages read from the input socket: records, and the messages that end sessions.
    pub received: u64,
    /// Messages that end a publisher session, received (counted in `received`; they are not
    /// records, and are not counted in `stored`).
    pub session_ends: u64,
    /// Messages decoded and written by every sink.
    pub stored: u64,
    /// Messages rejected as malformed.
    pub rejected: u64,
    /// Records a sink could not take, by sink name (never stored there), and sinks that could
    /// not finish (flush, sync) at the end.
    pub sink_errors: BTreeMap<String, u64>,
    /// Writes a sink failed with an error that may pass (a full disk) and that were retried,
    /// by sink name.
    pub sink_retries: BTreeMap<String, u64>,
    /// Bytes of received messages not yet through the sinks.
    pub inflight_bytes: u64,
    /// The in-flight cap.
    pub inflight_cap: u64,
    /// Totals over all sources.
    pub wire_bytes: u64,
    /// Decoded bytes over all sources.
    pub raw_bytes: u64,
    /// Gaps over all sources.
    pub gaps: u64,
    /// Duplicates over all sources.
    pub duplicates: u64,
    /// Acked delivery: messages received again after the collector had claimed them (a
    /// publisher resends what it has not seen acknowledged, after a reconnect): dropped, never
    /// stored twice, and not counted as `duplicates`.
    pub redelivered: u64,
    /// Sessions seen that have not ended over all sources: their publishers are still
    /// sending, were stopped without closing, or their end was lost. The records such a
    /// session sent last may be missing without a gap to show it.
    pub sessions_not_ended: u64,
    /// Decode errors by kind over all sources.
    pub errors: BTreeMap<String, u64>,
    /// Per source (`"?"` collects messages whose header named none).
    pub sources: BTreeMap<String, SourceStats>,
    /// Publishers connected to the input socket now (accepted connections).
    pub peers: u64,
    /// Connections refused because as many peers as allowed were connected (`--max-peers`).
    pub refused_peers: u64,
    /// Peers refused because their CURVE key is not on the allowlist (`--allow`).
    pub refused_keys: u64,
    /// Handshakes that failed on the input socket: a peer without CURVE at a collector with
    /// it (or the reverse), or one that does not know the collector's public key.
    pub failed_handshakes: u64,
}

/// The collector's live statistics, shared by its threads.
#[derive(Debug)]
pub(super) struct Stats {
    started: Instant,
    received: AtomicU64,
    inflight: AtomicU64,
    inflight_cap: u64,
    /// The input socket's accepted connections.
    pub(crate) peers: PeerCounts,
    inner: Mutex<Inner>,
}

/// Counts a message of `session` as a conflict when it is one ([`Sessions::conflicts`]).
fn count_conflict(s: &mut SourceStats, sessions: &Sessions, session: &str) -> bool {
    let conflict = sessions.conflicts(key_of(session));
    s.source_conflicts += u64::from(conflict);
    conflict
}

/// Counts one decoded message of a source and, when it is followed, of its session.
fn count_message(
    s: &mut SourceStats,
    tracker: Option<&mut SeqTracker>,
    seq: u64,
    wire: u64,
    raw: u64,
) {
    s.messages += 1;
    s.wire_bytes += wire;
    s.raw_bytes += raw;
    match tracker {
        Some(tracker) => track(s, tracker, |t| t.observe(seq)),
        None => s.untracked_messages += 1,
    }
}

/// Counts the end of a followed session after `seq` records.
fn count_end(s: &mut SourceStats, tracker: Option<&mut SeqTracker>, seq: u64) {
    let Some(tracker) = tracker else {
        return;
    };
    if tracker.this_run && !tracker.ended {
        s.sessions_ended += 1;
    }
    track(s, tracker, |t| t.end(seq));
}

/// Applies `change` to a session's tracker, and what it changes in its gaps and duplicates
/// to its source's counts.
fn track(s: &mut SourceStats, tracker: &mut SeqTracker, change: impl FnOnce(&mut SeqTracker)) {
    let (gaps, dups) = (tracker.gaps(), tracker.duplicates());
    change(tracker);
    let (gaps2, dups2) = (tracker.gaps(), tracker.duplicates());
    // A peer chooses its seq numbers: the counts saturate rather than overflow.
    s.gaps = if gaps2 >= gaps {
        s.gaps.saturating_add(gaps2 - gaps)
    } else {
        s.gaps.saturating_sub(gaps - gaps2)
    };
    s.duplicates = s.duplicates.saturating_add(dups2 - dups);
}

#[derive(Debug, Default)]
struct Inner {
    stored: u64,
    session_ends: u64,
    rejected: u64,
    redelivered: u64,
    sink_errors: BTreeMap<String, u64>,
    sink_retries: BTreeMap<String, u64>,
    sources: BTreeMap<String, SourceStats>,
    sessions: HashMap<String, Sessions, FastHash>,
    /// Sessions followed, over all sources.
    tracked: usize,
}

impl Inner {
    /// The key a source is counted under: cut to a sane length, and past the source limit,
    /// the shared `"(other)"`.
    fn source_key(&self, source: &str) -> String {
        let key = key_of(source);
        if self.sources.contains_key(key) || self.sources.len() < MAX_SOURCES {
            key.to_owned()
        } else {
            "(other)".to_owned()
        }
    }
}

impl Stats {
    pub(crate) fn new(inflight_cap: u64) -> Stats {
        Stats {
            started: Instant::now(),
            received: AtomicU64::new(0),
            inflight: AtomicU64::new(0),
            inflight_cap,
            peers: PeerCounts::default(),
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The counters; a panic elsewhere while holding the lock leaves them usable.
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn on_received(&self) {
        self.received.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn set_inflight(&self, bytes: u64) {
        self.inflight.store(bytes, Ordering::Relaxed);
    }

    /// Records a decoded message, and whether every sink took it (`stored`). Returns true when
    /// the message's session conflicts with the one holding its source (counted in
    /// `source_conflicts`).
    pub(crate) fn on_decoded(
        &self,
        source: &str,
        session: &str,
        seq: u64,
        wire: u64,
        raw: u64,
        stored: bool,
    ) -> bool {
        self.on_message(source, session, stored, |s, tracker| {
            count_message(s, tracker, seq, wire, raw)
        })
    }

    /// Records the message that ends `source`'s `session` after `seq` records: the records
    /// it did not see become gaps. Returns true on a conflict, as [`on_decoded`](Self::on_decoded).
    pub(crate) fn on_ended(&self, source: &str, session: &str, seq: u64) -> bool {
        self.lock().session_ends += 1;
        self.on_message(source, session, false, |s, tracker| {
            count_end(s, tracker, seq)
        })
    }

    /// Counts a message of `source`'s `session` with `count`, given its session's tracker
    /// (`None` when the session is not followed), starting to follow a new session.
    fn on_message(
        &self,
        source: &str,
        session: &str,
        stored: bool,
        count: impl FnOnce(&mut SourceStats, Option<&mut SeqTracker>),
    ) -> bool {
        let mut inner = self.lock();
        let inner = &mut *inner;
        inner.stored += u64::from(stored);
        // The common case, a source and session seen before: one lookup per map, no allocation.
        let source_key = key_of(source);
        if let (Some(s), Some(sessions)) = (
            inner.sources.get_mut(source_key),
            inner.sessions.get_mut(source_key),
        ) {
            if let Some(tracker) = sessions.trackers.get_mut(key_of(session)) {
                count(s, Some(tracker));
                return count_conflict(s, sessions, session);
            }
        }
        let key = inner.source_key(source);
        let session = key_of(session);
        let s = inner.sources.entry(key.clone()).or_default();
        let sessions = inner.sessions.entry(key).or_default();
        if !sessions.trackers.contains_key(session) {
            let all_followed = inner.tracked >= MAX_TRACKED_SESSIONS;
            if sessions.order.len() >= MAX_SESSIONS_PER_SOURCE || all_followed {
                if let Some(oldest) = sessions.order.pop_front() {
                    sessions.trackers.remove(&oldest);
                    inner.tracked -= 1;
                }
            }
            if inner.tracked >= MAX_TRACKED_SESSIONS {
                count(s, None);
                return false;
            }
            s.sessions += 1;
            sessions.order.push_back(session.to_owned());
            let tracker = SeqTracker {
                this_run: true,
                ..SeqTracker::default()
            };
            sessions.trackers.insert(session.to_owned(), tracker);
            inner.tracked += 1;
            sessions.holder = Some((session.to_owned(), Instant::now()));
        }
        let tracker = sessions.trackers.get_mut(session).expect("inserted above");
        count(s, Some(tracker));
        count_conflict(s, sessions, session)
    }

    /// Records that `seq` of `source`'s `session` was stored before this collector started (a
    /// restart on the same output): the session's sequence tracking goes on from there, so that
    /// records lost across the restart count as gaps when the session's next record comes. No
    /// counter moves now (the gaps and duplicates of earlier runs were theirs to report), and
    /// earlier sessions never take the place of sessions that send while this collector runs.
    pub(crate) fn on_stored_before(&self, source: &str, session: &str, seq: u64) {
        let mut inner = self.lock();
        let key = inner.source_key(source);
        let inner = &mut *inner;
        let sessions = inner.sessions.entry(key).or_default();
        if !sessions.trackers.contains_key(key_of(session)) {
            if inner.tracked >= MAX_TRACKED_SESSIONS / 2 {
                return;
            }
            sessions.order.push_back(session.to_owned());
            sessions
                .trackers
                .insert(session.to_owned(), SeqTracker::default());
            inner.tracked += 1;
        }
        if let Some(tracker) = sessions.trackers.get_mut(key_of(session)) {
            tracker.observe(seq);
        }
    }

    /// Counts a message of `source` (a CURVE key's name) whose header named another source.
    pub(crate) fn on_reattributed(&self, source: &str) {
        let mut inner = self.lock();
        let key = inner.source_key(source);
        inner.sources.entry(key).or_default().reattributed += 1;
    }

    pub(crate) fn on_rejected(&self, source: Option<&str>, kind: &str) {
        let mut inner = self.lock();
        inner.rejected += 1;
        let key = inner.source_key(source.unwrap_or("?"));
        let s = inner.sources.entry(key).or_default();
        *s.errors.entry(kind.to_owned()).or_default() += 1;
    }

    pub(crate) fn on_sink_error(&self, sink: &str) {
        let mut inner = self.lock();
        *inner.sink_errors.entry(sink.to_owned()).or_default() += 1;
    }

    /// Counts a write `sink` failed with an error that may pass, to be tried again.
    /// Counts a message of acked delivery that came again and was dropped.
    pub(crate) fn on_redelivered(&self) {
        self.lock().redelivered += 1;
    }

    pub(crate) fn on_sink_retry(&self, sink: &str) {
        let mut inner = self.lock();
        *inner.sink_retries.entry(sink.to_owned()).or_default() += 1;
    }

    /// A copy of every counter.
    pub(super) fn snapshot(&self) -> StatsSnapshot {
        let inner = self.lock();
        let mut snap = StatsSnapshot {
            elapsed_seconds: self.started.elapsed().as_secs_f64(),
            received: self.received.load(Ordering::Relaxed),
            stored: inner.stored,
            session_ends: inner.session_ends,
            rejected: inner.rejected,
            redelivered: inner.redelivered,
            sink_errors: inner.sink_errors.clone(),
            sink_retries: inner.sink_retries.clone(),
            inflight_bytes: self.inflight.load(Ordering::Relaxed),
            inflight_cap: self.inflight_cap,
            sources: inner.sources.clone(),
            peers: self.peers.connected.load(Ordering::Relaxed),
            refused_peers: self.peers.refused.load(Ordering::Relaxed),
            refused_keys: self.peers.refused_keys.load(Ordering::Relaxed),
            failed_handshakes: self.peers.failed_handshakes.load(Ordering::Relaxed),
            ..StatsSnapshot::default()
        };
        for s in snap.sources.values() {
            snap.wire_bytes += s.wire_bytes;
            snap.raw_bytes += s.raw_bytes;
            snap.gaps = snap.gaps.saturating_add(s.gaps);
            snap.duplicates = snap.duplicates.saturating_add(s.duplicates);
            snap.sessions_not_ended += s.sessions.saturating_sub(s.sessions_ended);
            for (kind, n) in &s.errors {
                *snap.errors.entry(kind.clone()).or_default() += n;
            }
        }
        snap
    }
}

impl StatsSnapshot {
    /// One human line: totals and rates since `previous` (or since the start).
    pub fn line(&self, previous: Option<&StatsSnapshot>) -> String {
        let (dt, dmsg, dbytes) = match previous {
            Some(p) => (
                self.elapsed_seconds - p.elapsed_seconds,
                self.stored - p.stored,
                self.raw_bytes - p.raw_bytes,
            ),
            None => (self.elapsed_seconds, self.stored, self.raw_bytes),
        };
        let dt = dt.max(1e-9);
        format!(
            "{} stored ({:.0} msg/s, {:.3} GB/s decoded), {:.3} GB total, ratio {:.2}, \
             {} rejected, {}, {}, in flight {:.1}/{:.0} MB",
            self.stored,
            dmsg as f64 / dt,
            dbytes as f64 / dt / 1e9,
            self.raw_bytes as f64 / 1e9,
            if self.raw_bytes == 0 {
                1.0
            } else {
                self.wire_bytes as f64 / self.raw_bytes as f64
            },
            self.rejected,
            plural(self.gaps, "gap"),
            plural(self.duplicates, "dup"),
            self.inflight_bytes as f64 / 1e6,
            self.inflight_cap as f64 / 1e6,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Makes `session` the holder of `source`, as if it had started `ago`.
    fn held_since(stats: &Stats, source: &str, session: &str, ago: Duration) {
        let mut inner = stats.lock();
        let sessions = inner.sessions.get_mut(source).unwrap();
        let since = Instant::now().checked_sub(ago).unwrap();
        sessions.holder = Some((session.to_owned(), since));
    }

    #[test]
    fn two_sessions_sending_under_one_source_are_conflicts_a_restart_is_not() {
        let stats = Stats::new(1);
        // A restart: the old session's last records in flight within the handover pass.
        assert!(!stats.on_decoded("w", "old", 0, 1, 1, true));
        assert!(!stats.on_decoded("w", "new", 0, 1, 1, true));
        assert!(!stats.on_decoded("w", "old", 1, 1, 1, true));
        // Past the handover, the earlier session still sending conflicts; the holder does not.
        held_since(&stats, "w", "new", Duration::from_secs(2));
        assert!(stats.on_decoded("w", "old", 2, 1, 1, true));
        assert!(!stats.on_decoded("w", "new", 1, 1, 1, true));
        // Another source is another matter.
        assert!(!stats.on_decoded("v", "old", 0, 1, 1, true));
        let snap = stats.snapshot();
        assert_eq!(snap.sources["w"].source_conflicts, 1);
        assert_eq!(snap.sources["v"].source_conflicts, 0);
        // A session that starts later takes the source: then the former holder conflicts.
        assert!(!stats.on_decoded("w", "third", 0, 1, 1, true));
        held_since(&stats, "w", "third", Duration::from_secs(2));
        assert!(stats.on_decoded("w", "new", 2, 1, 1, true));
    }

    #[test]
    fn the_stats_line_counts_gaps_and_dups_in_the_right_number() {
        let one = StatsSnapshot {
            gaps: 1,
            duplicates: 1,
            ..StatsSnapshot::default()
        };
        let line = one.line(None);
        assert!(line.contains(" 1 gap, 1 dup,"), "{line}");
        let line = StatsSnapshot {
            gaps: 2,
            ..StatsSnapshot::default()
        }
        .line(None);
        assert!(line.contains(" 2 gaps, 0 dups,"), "{line}");
    }

    #[test]
    fn in_order_stream_has_no_gaps() {
        let mut t = SeqTracker::default();
        (0..100).for_each(|s| t.observe(s));
        assert_eq!((t.gaps(), t.duplicates()), (0, 0));
    }

    #[test]
    fn reordered_stream_settles_to_no_gaps() {
        let mut t = SeqTracker::default();
        for s in [3, 1, 2, 0, 6, 5, 4, 7] {
            t.observe(s);
        }
        assert_eq!((t.gaps(), t.duplicates()), (0, 0));
    }

    #[test]
    fn lost_messages_are_gaps_and_repeats_are_duplicates() {
        let mut t = SeqTracker::default();
        for s in [10, 11, 14, 11, 15] {
            t.observe(s);
        }
        assert_eq!((t.gaps(), t.duplicates()), (2, 1));
    }

    #[test]
    fn extreme_seq_jumps_saturate_instead_of_overflowing() {
        let stats = Stats::new(100);
        for seq in [0, 10, u64::MAX, u64::MAX, 5] {
            stats.on_decoded("a", "s", seq, 1, 1, true);
        }
        stats.on_decoded("b", "s", u64::MAX, 1, 1, true);
        stats.on_decoded("b", "s", 0, 1, 1, true);
        let snap = stats.snapshot();
        assert_eq!(snap.sources["a"].duplicates, 1);
        assert!(snap.sources["a"].gaps > 1 << 60);
        assert_eq!(snap.gaps, u64::MAX);
        assert_eq!(snap.stored, 7);
    }

    #[test]
    fn huge_jumps_cost_one_run_each() {
        let mut t = SeqTracker::default();
        t.observe(0);
        t.observe(1 << 40);
        t.observe(5);
        assert_eq!(t.gaps(), (1 << 40) - 2);
        assert_eq!(t.missing.len(), 2);
        for seq in (6..10_000).step_by(2) {
            t.observe(seq);
        }
        assert!(t.missing.len() <= MAX_MISSING_RUNS);
    }

    #[test]
    fn sessions_and_sources_are_capped() {
        let stats = Stats::new(100);
        for i in 0..(MAX_SESSIONS_PER_SOURCE + 10) {
            stats.on_decoded("a", &format!("s{i}"), 0, 1, 1, true);
        }
        for i in 0..(MAX_SOURCES + 10) {
            stats.on_decoded(&format!("src{i}"), "s", 0, 1, 1, true);
        }
        let inner = stats.lock();
        assert_eq!(inner.sessions["a"].trackers.len(), MAX_SESSIONS_PER_SOURCE);
        assert_eq!(
            inner.sources["a"].sessions,
            (MAX_SESSIONS_PER_SOURCE + 10) as u64
        );
        assert!(inner.sources.len() <= MAX_SOURCES + 1);
        assert_eq!(inner.sources["(other)"].messages, 11);
    }

    #[test]
    fn stats_count_per_source_and_session() {
        let stats = Stats::new(100);
        stats.on_decoded("a", "s1", 0, 10, 20, true);
        stats.on_decoded("a", "s1", 2, 10, 20, true);
        stats.on_decoded("a", "s2", 0, 10, 20, false);
        stats.on_rejected(None, "not_json");
        let snap = stats.snapshot();
        let a = &snap.sources["a"];
        assert_eq!((a.messages, a.gaps, a.sessions), (3, 1, 2));
        assert_eq!(snap.errors["not_json"], 1);
        assert_eq!(snap.sources["?"].errors["not_json"], 1);
        assert_eq!((snap.wire_bytes, snap.raw_bytes, snap.gaps), (30, 60, 1));
        assert_eq!(snap.stored, 2);
    }

    #[test]
    fn long_session_ids_are_kept_cut_and_still_followed() {
        let stats = Stats::new(100);
        let session = "s".repeat(1 << 20);
        for seq in [0, 2] {
            stats.on_decoded("a", &session, seq, 1, 1, true);
        }
        let inner = stats.lock();
        let keys: Vec<usize> = inner.sessions["a"]
            .trackers
            .keys()
            .map(String::len)
            .collect();
        assert_eq!(keys, [MAX_KEY]);
        assert_eq!(inner.sessions["a"].order[0].len(), MAX_KEY);
        assert_eq!(
            (inner.sources["a"].sessions, inner.sources["a"].gaps),
            (1, 1)
        );
    }

    #[test]
    fn sessions_are_followed_up_to_a_total_over_all_sources() {
        let stats = Stats::new(100);
        let (sources, per_source) = (80, 210);
        assert!(
            sources * per_source > MAX_TRACKED_SESSIONS && per_source < MAX_SESSIONS_PER_SOURCE
        );
        for source in 0..sources {
            for session in 0..per_source {
                stats.on_decoded(
                    &format!("src{source}"),
                    &format!("s{session}"),
                    0,
                    1,
                    1,
                    true,
                );
            }
        }
        let followed =
            |inner: &Inner| -> usize { inner.sessions.values().map(|s| s.trackers.len()).sum() };
        {
            let inner = stats.lock();
            assert_eq!(inner.tracked, MAX_TRACKED_SESSIONS);
            assert_eq!(followed(&inner), MAX_TRACKED_SESSIONS);
        }
        // A new source: counted, not followed.
        stats.on_decoded("late", "s", 0, 5, 7, true);
        stats.on_decoded("late", "s", 9, 5, 7, true);
        // A new session of a source already followed: it gives up its oldest session.
        stats.on_decoded("src0", "new", 0, 1, 1, true);
        stats.on_decoded("src0", "new", 2, 1, 1, true);
        let inner = stats.lock();
        assert_eq!(followed(&inner), MAX_TRACKED_SESSIONS);
        let late = &inner.sources["late"];
        assert_eq!(
            (
                late.messages,
                late.untracked_messages,
                late.sessions,
                late.gaps,
                late.wire_bytes
            ),
            (2, 2, 0, 0, 10)
        );
        assert!(inner.sessions["src0"].trackers.contains_key("new"));
        assert_eq!(inner.sources["src0"].gaps, 1);
    }

    #[test]
    fn a_missing_seq_is_a_gap_and_a_repeat_a_duplicate() {
        let mut t = SeqTracker::default();
        for seq in [0, 1, 3, 5, 4, 4] {
            t.observe(seq);
        }
        assert_eq!((t.gaps(), t.duplicates()), (1, 1)); // 2 never came; the second 4 is a repeat
    }
}

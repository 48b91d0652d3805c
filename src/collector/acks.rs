//! Acked delivery, the collector's side: the ledger of each publisher session's messages
//! (claimed while being stored, settled once durable or refused for good), and the group
//! commit that makes written records durable in batches and then acknowledges them.
//!
//! A message is claimed before it goes to the sinks, so a copy that arrives again (a publisher
//! resends what it has not seen acknowledged) is dropped instead of stored twice. The ledger
//! starts from what the sinks held before ([`Sink::stored_before`]), so that holds across a
//! restart of the collector. Written records wait for the next commit: every
//! [`COMMIT_INTERVAL`] (or sooner when [`COMMIT_BYTES`] are waiting) each sink's
//! [`Sink::sync`] runs once for all of them, and then each session concerned is sent one
//! cumulative [`Ack`] through the receiver thread, which owns the socket.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use foldhash::HashMap as FastMap;

use super::pool::Drain;
use super::sink::Sink;
use super::stats::Stats;
use crate::error::Error;
use crate::wire::Ack;

/// How long written records wait for their commit at most, by default.
pub(crate) const COMMIT_INTERVAL: Duration = Duration::from_millis(5);

/// A commit starts sooner once this many bytes are waiting for it.
pub(crate) const COMMIT_BYTES: u64 = 64 << 20;

/// Most messages of one session above its first unclaimed `seq`. A publisher keeps at most
/// 65,536 messages unacknowledged (docs/wire-format.md), so it never comes near; a peer that
/// does is refused rather than allowed to grow the ledger.
const MAX_AHEAD: usize = 1 << 17;

/// Most sessions the ledger follows. To follow one more it forgets one with nothing in
/// progress, an ended one first; should every one have messages in progress, messages of new
/// sessions are refused. A session forgotten that sends again (it would have to be one of
/// 65,536 sessions left behind) may have a resent record stored twice.
const MAX_SESSIONS: usize = 1 << 16;

/// A set of `seq`s: every one below `through`, and those in `ahead`.
#[derive(Debug, Default, Clone)]
struct SeqSet {
    through: u64,
    ahead: BTreeSet<u64>,
}

impl SeqSet {
    fn contains(&self, seq: u64) -> bool {
        seq < self.through || self.ahead.contains(&seq)
    }

    /// Adds `seq`; false when it was there.
    fn insert(&mut self, seq: u64) -> bool {
        if self.contains(seq) {
            return false;
        }
        if seq == self.through {
            self.through += 1;
            while self.ahead.remove(&self.through) {
                self.through += 1;
            }
        } else {
            self.ahead.insert(seq);
        }
        true
    }
}

/// A session the ledger follows, as a claim names it to the commit: no strings to copy or hash
/// per message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct SessionId(u64);

/// One publisher session, as the ledger follows it.
#[derive(Debug, Default)]
struct Session {
    source: String,
    session: String,
    claimed: SeqSet,
    settled: SeqSet,
    refused: u64,
    /// Where its acknowledgements go: the routing id of the connection its latest message came
    /// from (a reconnected publisher has a new one).
    reply_to: Option<Bytes>,
    /// Its end is settled: its publisher has nothing left to send.
    ended: bool,
}

impl Session {
    /// Nothing claimed is waiting to be settled.
    fn idle(&self) -> bool {
        self.claimed.through == self.settled.through
            && self.claimed.ahead.len() == self.settled.ahead.len()
    }
}

/// What [`Ledger::claim`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Claim {
    /// First seen: store it, then report it with [`Committer::written`].
    New(SessionId),
    /// Claimed before (being stored, or settled): drop it; the session is acknowledged again
    /// (report it as [`Outcome::Again`]).
    Again(SessionId),
    /// The ledger is full (too many sessions, or this one too far ahead): refuse it.
    Full,
}

/// The sessions' claimed and settled messages.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    sessions: Mutex<Sessions>,
}

/// The sessions followed, by id, and their ids by source, then by session (looked up by
/// `&str`, without allocating).
#[derive(Debug, Default)]
struct Sessions {
    ids: HashMap<String, HashMap<String, SessionId>>,
    by_id: FastMap<SessionId, Session>,
    next: u64,
}

impl Sessions {
    /// The session's id, followed from now on if it was not; `None` when it was not and the
    /// ledger follows [`MAX_SESSIONS`] already.
    fn follow(&mut self, source: &str, session: &str) -> Option<(SessionId, &mut Session)> {
        let known = self.ids.get(source).and_then(|m| m.get(session)).copied();
        let id = match known {
            Some(id) => id,
            None => {
                if self.by_id.len() >= MAX_SESSIONS && !self.forget_one() {
                    return None;
                }
                let id = SessionId(self.next);
                self.next += 1;
                self.ids
                    .entry(source.to_owned())
                    .or_default()
                    .insert(session.to_owned(), id);
                let followed = Session {
                    source: source.to_owned(),
                    session: session.to_owned(),
                    ..Session::default()
                };
                self.by_id.insert(id, followed);
                id
            }
        };
        Some((id, self.by_id.get_mut(&id)?))
    }

    /// Forgets a session with nothing in progress, an ended one if there is one; false when
    /// every session has messages in progress.
    fn forget_one(&mut self) -> bool {
        let pick = |ended_only: bool| {
            self.by_id
                .iter()
                .find(|(_, s)| s.idle() && (s.ended || !ended_only))
                .map(|(id, _)| *id)
        };
        let Some(id) = pick(true).or_else(|| pick(false)) else {
            return false;
        };
        let Some(forgotten) = self.by_id.remove(&id) else {
            return false;
        };
        if let Some(sessions) = self.ids.get_mut(&forgotten.source) {
            sessions.remove(&forgotten.session);
            if sessions.is_empty() {
                self.ids.remove(&forgotten.source);
            }
        }
        true
    }
}

impl Ledger {
    fn lock(&self) -> std::sync::MutexGuard<'_, Sessions> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes a message a sink held before the collector started: claimed and settled.
    pub(crate) fn stored_before(&self, source: &str, session: &str, seq: u64) {
        if let Some((_, s)) = self.lock().follow(source, session) {
            s.claimed.insert(seq);
            s.settled.insert(seq);
        }
    }

    /// Claims `seq` of `source`'s `session`, which came from the connection `reply_to`.
    pub(crate) fn claim(&self, source: &str, session: &str, seq: u64, reply_to: &Bytes) -> Claim {
        let mut sessions = self.lock();
        let Some((id, s)) = sessions.follow(source, session) else {
            return Claim::Full;
        };
        if s.reply_to.as_ref() != Some(reply_to) {
            s.reply_to = Some(reply_to.clone());
        }
        if s.claimed.contains(seq) {
            return Claim::Again(id);
        }
        if seq.saturating_sub(s.claimed.through) >= MAX_AHEAD as u64
            || s.claimed.ahead.len() >= MAX_AHEAD
        {
            return Claim::Full;
        }
        s.claimed.insert(seq);
        Claim::New(id)
    }

    /// Settles what a commit made durable (or what was refused), and returns one
    /// acknowledgement per session concerned: where to send it and what.
    fn settle(&self, done: &[Written]) -> Vec<(Bytes, Ack)> {
        let mut sessions = self.lock();
        let mut touched: Vec<SessionId> = Vec::new();
        for w in done {
            let Some(s) = sessions.by_id.get_mut(&w.session) else {
                continue;
            };
            if w.outcome != Outcome::Again && s.settled.insert(w.seq) {
                s.refused += u64::from(w.outcome == Outcome::Refused);
            }
            s.ended |= w.end && w.outcome == Outcome::Stored;
            if touched.last() != Some(&w.session) {
                touched.push(w.session);
            }
        }
        touched.sort_unstable();
        touched.dedup();
        touched
            .into_iter()
            .filter_map(|id| {
                let s = sessions.by_id.get(&id)?;
                let ack = Ack {
                    session: s.session.clone(),
                    through: s.settled.through,
                    refused: s.refused.min(s.settled.through),
                };
                Some((s.reply_to.clone()?, ack))
            })
            .collect()
    }
}

/// What became of a claimed message, or a message claimed before that came again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Every sink took it: settled once the commit has made it durable.
    Stored,
    /// It cannot be decoded or stored, now or later: settled as refused.
    Refused,
    /// It was claimed before: its session is acknowledged again (its publisher resent it).
    Again,
}

/// A message waiting for the next commit.
#[derive(Debug)]
pub(crate) struct Written {
    session: SessionId,
    seq: u64,
    /// The message is the session's end.
    end: bool,
    outcome: Outcome,
}

/// Messages waiting for the next commit.
#[derive(Debug, Default)]
struct Pending {
    written: Vec<Written>,
    bytes: u64,
    since: Option<Instant>,
}

/// The group commit: collects written records, syncs the sinks for many at once, settles
/// them in the ledger and sends the acknowledgements.
pub(crate) struct Committer {
    pub(crate) ledger: Ledger,
    pending: Mutex<Pending>,
    wake: Condvar,
    interval: Duration,
    stop: AtomicBool,
    /// The last commit is done (or the thread is gone): no acknowledgement comes after.
    done: AtomicBool,
}

impl Committer {
    /// A committer that commits every `interval` at most.
    pub(crate) fn new(interval: Duration) -> Committer {
        Committer {
            ledger: Ledger::default(),
            pending: Mutex::new(Pending::default()),
            wake: Condvar::new(),
            interval,
            stop: AtomicBool::new(false),
            done: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// True once the last commit is done and its acknowledgements are on their way.
    pub(crate) fn is_done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    /// Reports a claimed message (`seq` of the session [`Ledger::claim`] named; `end`: the
    /// session's end; of `bytes` as received) to the next commit.
    pub(crate) fn written(
        &self,
        (session, seq, end): (SessionId, u64, bool),
        outcome: Outcome,
        bytes: u64,
    ) {
        let mut pending = self.lock();
        let was_empty = pending.written.is_empty();
        pending.written.push(Written {
            session,
            seq,
            end,
            outcome,
        });
        pending.bytes += bytes;
        pending.since.get_or_insert_with(Instant::now);
        if was_empty || pending.bytes >= COMMIT_BYTES {
            self.wake.notify_one();
        }
    }

    /// The next group to commit: waits until something is written, then until the interval
    /// since the first of it has passed (or enough bytes wait, or the committer is stopping).
    /// `None` once stopped with nothing left.
    fn next_group(&self) -> Option<Vec<Written>> {
        let mut pending = self.lock();
        loop {
            let stopping = self.stop.load(Ordering::Acquire);
            let due = match pending.since {
                None if stopping => return None,
                None => None,
                Some(_) if stopping || pending.bytes >= COMMIT_BYTES => Some(Duration::ZERO),
                Some(since) => Some(self.interval.saturating_sub(since.elapsed())),
            };
            match due {
                Some(Duration::ZERO) => {
                    let group = std::mem::take(&mut *pending);
                    return Some(group.written);
                }
                Some(wait) => {
                    pending = self
                        .wake
                        .wait_timeout(pending, wait)
                        .map(|(g, _)| g)
                        .unwrap_or_else(|p| p.into_inner().0)
                }
                None => {
                    pending = self
                        .wake
                        .wait_timeout(pending, Duration::from_millis(100))
                        .map(|(g, _)| g)
                        .unwrap_or_else(|p| p.into_inner().0)
                }
            }
        }
    }

    /// Makes every sink's writes so far durable, retrying failures with backoff until they pass
    /// or the collector has been stopping for its drain timeout; false then (nothing is
    /// acknowledged, and the publishers keep what they sent).
    fn sync(&self, sinks: &[Arc<dyn Sink>], stats: &Stats, drain: &Drain) -> bool {
        sinks.iter().all(|sink| {
            let mut pause = Duration::from_millis(50);
            loop {
                match sink.sync() {
                    Ok(()) => return true,
                    Err(e) if drain.expired() => {
                        tracing::error!("sink {}: cannot sync: {e}; not acknowledged", sink.name());
                        stats.on_sink_error(sink.name());
                        return false;
                    }
                    Err(e) => {
                        tracing::warn!(
                            "sink {}: cannot sync: {e}; retrying in {pause:?}",
                            sink.name()
                        );
                        stats.on_sink_retry(sink.name());
                        std::thread::sleep(pause);
                        pause = (pause * 2).min(Duration::from_secs(2));
                    }
                }
            }
        })
    }

    /// Commits until stopped: each group synced, settled and acknowledged through `acks` (a
    /// socket connected to the receiver's, which sends on the input socket).
    fn run(&self, sinks: &[Arc<dyn Sink>], stats: &Stats, drain: &Drain, acks: &zmq::Socket) {
        // What the sinks held before the start is acknowledged as stored: make it durable.
        self.sync(sinks, stats, drain);
        while let Some(group) = self.next_group() {
            if !self.sync(sinks, stats, drain) {
                continue;
            }
            for (reply_to, ack) in self.ledger.settle(&group) {
                let sent = acks
                    .send(&reply_to[..], zmq::SNDMORE | zmq::DONTWAIT)
                    .and_then(|()| acks.send(ack.to_json(), zmq::DONTWAIT));
                if let Err(e) = sent {
                    tracing::debug!("an acknowledgement was not sent: {e}");
                }
            }
        }
    }
}

/// The inproc pair the acknowledgements cross from the commit thread to the receiver thread:
/// `(pull, push)`, the receiver's and the committer's.
pub(crate) fn socket_pair(context: &zmq::Context) -> Result<(zmq::Socket, zmq::Socket), Error> {
    let address = crate::transport::inproc_address("acks");
    let fail = |action: &'static str| {
        let address = address.clone();
        move |source| {
            Error::Socket(crate::transport::SocketError {
                action,
                address,
                source,
            })
        }
    };
    let pull = context.socket(zmq::PULL).map_err(fail("open"))?;
    let push = context.socket(zmq::PUSH).map_err(fail("open"))?;
    for socket in [&pull, &push] {
        // Nothing waits at close: an acknowledgement not sent is sent again by a later one.
        socket.set_linger(0).map_err(fail("set an option on"))?;
        socket
            .set_sndhwm(100_000)
            .map_err(fail("set an option on"))?;
        socket
            .set_rcvhwm(100_000)
            .map_err(fail("set an option on"))?;
    }
    pull.bind(&address).map_err(fail("bind"))?;
    push.connect(&address).map_err(fail("connect"))?;
    Ok((pull, push))
}

/// The committer's thread; stop it after the decode workers, so that it commits their last
/// records.
pub(crate) struct CommitThread {
    committer: Arc<Committer>,
    thread: Option<JoinHandle<()>>,
}

impl CommitThread {
    /// Starts committing for `sinks`, sending acknowledgements through `acks`.
    pub(crate) fn start(
        committer: Arc<Committer>,
        sinks: Vec<Arc<dyn Sink>>,
        stats: Arc<Stats>,
        drain: Arc<Drain>,
        acks: zmq::Socket,
    ) -> Result<CommitThread, Error> {
        let c = Arc::clone(&committer);
        let thread = super::spawn("ndbridge-commit".into(), move || {
            c.run(&sinks, &stats, &drain, &acks)
        })?;
        Ok(CommitThread {
            committer,
            thread: Some(thread),
        })
    }

    /// Commits what is still waiting and stops.
    pub(crate) fn stop(&mut self) {
        self.committer.stop.store(true, Ordering::Release);
        self.committer.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the commit thread panicked");
            }
        }
        self.committer.done.store(true, Ordering::Release);
    }
}

impl Drop for CommitThread {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(id: u8) -> Bytes {
        Bytes::from(vec![0, id])
    }

    /// The id of a session the ledger follows.
    fn id(ledger: &Ledger, source: &str, session: &str) -> SessionId {
        ledger.lock().ids[source][session]
    }

    fn written(session: SessionId, seq: u64, outcome: Outcome) -> Written {
        Written {
            session,
            seq,
            end: false,
            outcome,
        }
    }

    #[test]
    fn a_seq_set_keeps_a_prefix_and_what_came_ahead_of_it() {
        let mut set = SeqSet::default();
        assert!(set.insert(1) && set.insert(3));
        assert_eq!((set.through, set.ahead.len()), (0, 2));
        assert!(set.insert(0));
        assert_eq!((set.through, set.ahead.len()), (2, 1));
        assert!(!set.insert(1) && !set.insert(3));
        assert!(set.insert(2));
        assert_eq!((set.through, set.ahead.len()), (4, 0));
        assert!(set.contains(0) && set.contains(3) && !set.contains(4));
    }

    #[test]
    fn a_message_claimed_twice_is_stored_once_and_acknowledged_again() {
        let ledger = Ledger::default();
        let Claim::New(s) = ledger.claim("a", "s", 0, &peer(1)) else {
            panic!("a first claim is new")
        };
        assert_eq!(ledger.claim("a", "s", 1, &peer(1)), Claim::New(s));
        assert_eq!(ledger.claim("a", "s", 1, &peer(1)), Claim::Again(s));
        // Not yet settled: an acknowledgement says nothing is.
        let acks = ledger.settle(&[written(s, 1, Outcome::Again)]);
        assert_eq!(acks.len(), 1);
        assert_eq!(acks[0].1.through, 0);
        // Seq 1 settles first: still nothing below 1 is acknowledged.
        let acks = ledger.settle(&[written(s, 1, Outcome::Stored)]);
        assert_eq!(acks[0].1.through, 0);
        let acks = ledger.settle(&[written(s, 0, Outcome::Refused)]);
        assert_eq!((acks[0].1.through, acks[0].1.refused), (2, 1));
        // Nothing changed: nothing to send.
        assert!(ledger.settle(&[]).is_empty());
    }

    #[test]
    fn acknowledgements_go_to_the_connection_a_session_last_used() {
        let ledger = Ledger::default();
        ledger.claim("a", "s", 0, &peer(1));
        let s = id(&ledger, "a", "s");
        // The publisher reconnected and resent seq 0.
        assert_eq!(ledger.claim("a", "s", 0, &peer(2)), Claim::Again(s));
        let acks = ledger.settle(&[written(s, 0, Outcome::Stored)]);
        assert_eq!(
            acks,
            vec![(
                peer(2),
                Ack {
                    session: "s".into(),
                    through: 1,
                    refused: 0
                }
            )]
        );
    }

    #[test]
    fn what_a_sink_held_before_is_settled_and_not_stored_again() {
        let ledger = Ledger::default();
        ledger.stored_before("a", "s", 0);
        ledger.stored_before("a", "s", 2);
        let s = id(&ledger, "a", "s");
        assert_eq!(ledger.claim("a", "s", 0, &peer(1)), Claim::Again(s));
        assert_eq!(ledger.claim("a", "s", 1, &peer(1)), Claim::New(s));
        assert_eq!(ledger.claim("a", "s", 2, &peer(1)), Claim::Again(s));
        let acks = ledger.settle(&[written(s, 1, Outcome::Stored)]);
        assert_eq!(acks[0].1.through, 3);
    }

    #[test]
    fn a_peer_cannot_grow_the_ledger_without_bound() {
        let ledger = Ledger::default();
        let new = |claim: Claim| matches!(claim, Claim::New(_));
        assert_eq!(
            ledger.claim("a", "s", MAX_AHEAD as u64, &peer(1)),
            Claim::Full
        );
        assert!(new(ledger.claim("a", "s", MAX_AHEAD as u64 - 1, &peer(1))));
        for i in 0..MAX_SESSIONS - 1 {
            assert!(new(ledger.claim("b", &i.to_string(), 0, &peer(1))));
        }
        // Every session has a message in progress: a new one is refused...
        assert_eq!(ledger.claim("c", "new", 0, &peer(1)), Claim::Full);
        // ... and sessions it follows go on.
        assert!(new(ledger.claim("a", "s", 0, &peer(1))));
        // Once one has settled (and ended), it is forgotten for the new one.
        let end = Written {
            end: true,
            ..written(id(&ledger, "b", "3"), 0, Outcome::Stored)
        };
        let b7 = written(id(&ledger, "b", "7"), 0, Outcome::Stored);
        ledger.settle(&[end, b7]);
        assert!(new(ledger.claim("c", "new", 0, &peer(1))));
        assert!(new(ledger.claim("c", "newer", 0, &peer(1))));
        // Both settled sessions were forgotten: claimed anew they would be new sessions, and no
        // session has nothing in progress now.
        assert_eq!(ledger.claim("b", "7", 0, &peer(1)), Claim::Full);
        assert_eq!(ledger.claim("b", "3", 0, &peer(1)), Claim::Full);
    }
}

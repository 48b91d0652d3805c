//! Acked delivery on the publisher thread: the acknowledgements read from the socket, the
//! window they settle ([`Window`]), resending what is not acknowledged after the connection to
//! the collector was made again (a collector restarted, a network cut that ZeroMQ's heartbeats
//! detected), and the spool ([`Spool`]), when there is one: every message is written there
//! before it is sent, waits there while the window is full or the collector away, and the
//! messages an earlier publisher left there are sent first, under their own sessions.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;

use super::spool::{Message, Place, Spool};
use super::{unix_now, Counters};
use crate::delivery::Window;
use crate::error::Error;
use crate::transport;
use crate::wire::{Ack, Header};

/// How often ZeroMQ checks that the collector still answers, and how long without an answer
/// makes it drop the connection and connect again (then what is unacknowledged is resent).
const HEARTBEAT_IVL_MS: i32 = 1000;
const HEARTBEAT_TIMEOUT_MS: i32 = 5000;

/// The publisher's own session's lane in the [`Window`].
const OWN: usize = 0;

/// The publisher thread's acked-delivery state.
pub(super) struct AckedLink {
    window: Window,
    /// ZeroMQ's events of the socket: a handshake that succeeds after the first means a new
    /// connection, and what the old one carried may be lost.
    monitor: zmq::Socket,
    handshakes: u64,
    /// Resending: the lane and `seq` from which the window's messages are sent again (`None`:
    /// not resending).
    resend_from: Option<(usize, u64)>,
    /// Raised by ZeroMQ as messages of earlier sessions, or resent ones, are passed on;
    /// counted nowhere else.
    others_passed_on: Arc<AtomicU64>,
    /// Calls of [`pump_now_and_then`](Self::pump_now_and_then).
    calls: u64,
    /// The spool, if the publisher has one.
    spool: Option<SpoolState>,
}

/// The spool and the messages in it not sent yet.
struct SpoolState {
    spool: Spool,
    /// Most bytes the spool holds before sending waits for acknowledgements.
    limit: u64,
    /// The messages spooled and not sent yet, oldest first: runs of them, each from a place
    /// in a segment to the segment's end (nothing per message is kept in memory).
    pending: VecDeque<Run>,
    /// The oldest of them, read back, that the window or ZeroMQ did not take yet.
    ready: Option<Message>,
    /// Per lane: the `seq` of the session's end, once spooled. The session leaves the spool
    /// when that is acknowledged.
    ends: Vec<Option<u64>>,
    /// The last message could not be written.
    failing: bool,
}

/// Spooled messages of a lane not sent yet: from a record to the end of its segment.
#[derive(Debug, Clone, Copy)]
struct Run {
    lane: usize,
    from: Place,
}

/// While messages keep coming, acknowledgements are read once per this many (and whenever the
/// window is full).
const PUMP_EVERY: u64 = 32;

/// What [`AckedLink::new`] sets up.
pub(super) struct Setup<'a> {
    pub(super) window_bytes: u64,
    pub(super) session: &'a str,
    /// The spool's directory and its limit in bytes.
    pub(super) spool: Option<(&'a Path, u64)>,
}

impl AckedLink {
    /// Sets `socket` (a DEALER, not yet connected: its first connection must be seen) up for
    /// acked delivery, and opens the spool: what earlier publishers left there goes first.
    pub(super) fn new(
        context: &zmq::Context,
        socket: &zmq::Socket,
        setup: Setup,
    ) -> Result<AckedLink, Error> {
        let option = |r: zmq::Result<()>| {
            r.map_err(|source| {
                Error::Socket(transport::SocketError {
                    action: "set an option on",
                    address: "socket".into(),
                    source,
                })
            })
        };
        option(socket.set_heartbeat_ivl(HEARTBEAT_IVL_MS))?;
        option(socket.set_heartbeat_timeout(HEARTBEAT_TIMEOUT_MS))?;
        let events = zmq::SocketEvent::HANDSHAKE_SUCCEEDED.to_raw();
        let monitor =
            transport::monitor(context, socket, "acked", events).map_err(Error::Socket)?;
        let mut window = Window::new(setup.window_bytes, setup.session);
        let spool = match setup.spool {
            Some((dir, limit)) => Some(SpoolState::open(dir, limit, &mut window)?),
            None => None,
        };
        Ok(AckedLink {
            window,
            monitor,
            handshakes: 0,
            resend_from: None,
            others_passed_on: Arc::new(AtomicU64::new(0)),
            calls: 0,
            spool,
        })
    }

    /// Whether a message of `frames` may be sent now (see [`Window::has_room`]); not while
    /// resending, nor while spooled messages wait.
    pub(super) fn has_room(&self, frames: &[Bytes]) -> bool {
        self.resend_from.is_none()
            && self.spool.as_ref().is_none_or(|s| s.pending.is_empty())
            && self.window.has_room(frames)
    }

    /// Keeps a message ZeroMQ took until it is acknowledged.
    pub(super) fn sent(&mut self, seq: u64, frames: Vec<Bytes>) {
        self.window.push(OWN, seq, frames);
    }

    /// The spool's directory, if there is a spool.
    pub(super) fn spool_dir(&self) -> Option<&Path> {
        self.spool.as_ref().map(|s| s.spool.dir())
    }

    /// Whether the spool holds its limit: new messages wait. Not while everything in it is
    /// acknowledged: a session's last segment stays until its end, and a message larger than
    /// the spool still goes, alone.
    pub(super) fn spool_full(&self) -> bool {
        self.spool
            .as_ref()
            .is_some_and(|s| s.spool.bytes() >= s.limit)
            && !self.all_settled()
    }

    /// Spools a message of the publisher's own session (`end`: its end), then sends it if
    /// nothing spooled waits before it and the window has room; else it waits in the spool.
    /// False when the spool cannot take it (logged once until it can again): the caller tries
    /// again later.
    pub(super) fn spool_and_send(
        &mut self,
        socket: &mut zmq::Socket,
        ids: (&str, &str),
        seq: u64,
        end: bool,
        frames: &[Bytes],
        passed_on: &Arc<AtomicU64>,
    ) -> bool {
        let state = self.spool.as_mut().expect("spooling");
        let place = match state.spool.append(ids.0, ids.1, seq, end, frames) {
            Ok(place) => place,
            Err(e) => {
                if !state.failing {
                    tracing::error!(
                        "the spool {} cannot take messages: {e}; sending waits and tries again",
                        state.spool.dir().display()
                    );
                }
                state.failing = true;
                // What is acknowledged can go now, to give the disk room back.
                if let Err(e) = state.spool.settle(ids.1, self.window.through(OWN)) {
                    tracing::debug!("settled segments not removed: {e}");
                }
                return false;
            }
        };
        state.failing = false;
        if end {
            state.ends[OWN] = Some(seq);
        }
        let go =
            state.pending.is_empty() && self.resend_from.is_none() && self.window.has_room(frames);
        if go && transport::send_tracked(socket, frames, zmq::DONTWAIT, passed_on).is_ok() {
            self.window.push(OWN, seq, frames.to_vec());
        } else {
            state.queue(OWN, place);
        }
        true
    }

    /// True when everything sent is acknowledged and nothing spooled waits.
    pub(super) fn all_settled(&self) -> bool {
        self.window.is_empty() && self.spool.as_ref().is_none_or(|s| s.pending.is_empty())
    }

    /// Messages of earlier publishers' sessions, found in the spool, not acknowledged yet (at
    /// most: those an earlier collector had are counted until it says so), their ends included.
    pub(super) fn recovered_unsettled(&self) -> u64 {
        let Some(state) = &self.spool else {
            return 0;
        };
        let lanes = state.ends.iter().enumerate().skip(1);
        lanes
            .filter_map(|(lane, end)| {
                Some((end.as_ref()? + 1).saturating_sub(self.window.through(lane)))
            })
            .sum()
    }

    /// [`pump`](Self::pump) without waiting, once every [`PUMP_EVERY`] calls: reading the
    /// sockets costs more than sending a small message.
    pub(super) fn pump_now_and_then(&mut self, socket: &mut zmq::Socket, counters: &Counters) {
        self.calls += 1;
        if self.calls.is_multiple_of(PUMP_EVERY) {
            self.pump(socket, counters, 0);
        }
    }

    /// Reads what is waiting (acknowledgements, new connections), goes on resending and sends
    /// what waits in the spool; then, if `wait_ms` is not 0, waits that long at most for the
    /// socket or the monitor to have something. Raises `counters`' acknowledged and refused
    /// counts.
    pub(super) fn pump(&mut self, socket: &mut zmq::Socket, counters: &Counters, wait_ms: i64) {
        self.read(socket, counters);
        self.resend(socket, counters);
        self.feed(socket, counters);
        if wait_ms > 0 {
            let mut items = [
                socket.as_poll_item(zmq::POLLIN),
                self.monitor.as_poll_item(zmq::POLLIN),
            ];
            let ready = zmq::poll(&mut items, wait_ms).is_ok_and(|n| n > 0);
            if ready {
                self.read(socket, counters);
                self.resend(socket, counters);
                self.feed(socket, counters);
            }
        }
    }

    /// Takes every acknowledgement and monitor event waiting.
    fn read(&mut self, socket: &zmq::Socket, counters: &Counters) {
        while let Some((event, ..)) = transport::read_event(&self.monitor) {
            if event == zmq::SocketEvent::HANDSHAKE_SUCCEEDED.to_raw() {
                self.handshakes += 1;
                counters.connected.store(true, Ordering::Relaxed);
                if self.handshakes > 1 && !self.window.is_empty() {
                    tracing::debug!(
                        "connected again: resending {} unacknowledged",
                        self.window.len()
                    );
                    self.resend_from = Some((OWN, 0));
                }
            }
        }
        while let Ok(frame) = socket.recv_bytes(zmq::DONTWAIT) {
            let ack = match Ack::parse(&frame) {
                Ok(ack) => ack,
                Err(e) => {
                    tracing::warn!("a malformed acknowledgement was ignored: {e}");
                    continue;
                }
            };
            // An out-of-date acknowledgement changes nothing.
            match self.window.acknowledge(&ack) {
                Some((lane, moved)) => {
                    if lane == OWN {
                        counters.refused.fetch_max(ack.refused, Ordering::Relaxed);
                        counters
                            .acknowledged
                            .fetch_max(ack.through, Ordering::Release);
                    }
                    if let (true, Some(state)) = (moved, &mut self.spool) {
                        state.settle(&self.window, lane);
                    }
                }
                None => tracing::debug!("an acknowledgement of session {:?}", ack.session),
            }
        }
    }

    /// Sends again what is unacknowledged from `resend_from` on, as far as ZeroMQ takes it
    /// without waiting; the rest on the next call.
    fn resend(&mut self, socket: &mut zmq::Socket, counters: &Counters) {
        let Some(mut at) = self.resend_from else {
            return;
        };
        let passed_on = &self.others_passed_on;
        while let Some((lane, seq, frames)) = self.window.unacked_from(at) {
            if transport::send_tracked(socket, frames, zmq::DONTWAIT, passed_on).is_err() {
                self.resend_from = Some((lane, seq));
                return;
            }
            counters.resent.fetch_add(1, Ordering::Relaxed);
            at = (lane, seq + 1);
        }
        self.resend_from = None;
    }

    /// Sends what waits in the spool, oldest first, while the window has room and ZeroMQ
    /// takes it without waiting. Messages acknowledged already (an earlier run of the
    /// collector stored them) are passed over.
    fn feed(&mut self, socket: &mut zmq::Socket, counters: &Counters) {
        let Some(state) = &mut self.spool else {
            return;
        };
        while self.resend_from.is_none() {
            let Some(run) = state.pending.front_mut() else {
                return;
            };
            let message = match state.ready.take() {
                Some(message) => message,
                None => match state.spool.read(run.from) {
                    Ok(Some(message)) => message,
                    // The segment's end, or a segment removed as acknowledged.
                    Ok(None) => {
                        state.pending.pop_front();
                        continue;
                    }
                    // The rest of the segment is passed over (counted as one failure).
                    Err(e) => {
                        tracing::error!(
                            "the spool {} cannot be read back, and what is left of a segment \
                             of session {} is lost: {e}",
                            state.spool.dir().display(),
                            self.window.session(run.lane)
                        );
                        counters.failed.fetch_add(1, Ordering::Relaxed);
                        state.pending.pop_front();
                        continue;
                    }
                },
            };
            let lane = run.lane;
            if message.seq < self.window.through(lane) {
                run.from = message.next;
                continue;
            }
            let passed_on = if lane == OWN {
                &counters.passed_on
            } else {
                &self.others_passed_on
            };
            if !self.window.has_room(&message.frames)
                || transport::send_tracked(socket, &message.frames, zmq::DONTWAIT, passed_on)
                    .is_err()
            {
                state.ready = Some(message);
                return;
            }
            if lane != OWN {
                counters.recovered.fetch_add(1, Ordering::Relaxed);
            }
            run.from = message.next;
            self.window.push(lane, message.seq, message.frames);
        }
    }
}

impl SpoolState {
    /// Opens the spool at `dir` and queues what earlier publishers left there, each session in
    /// a lane of its own in `window`, ended if it was not: its end's `seq` is one past its
    /// last record (every record it sent is in the spool, so none is missing).
    fn open(dir: &Path, limit: u64, window: &mut Window) -> Result<SpoolState, Error> {
        let spool_error = |source| Error::Spool {
            dir: dir.to_owned(),
            source,
        };
        let (mut spool, recovered) = Spool::open(dir).map_err(spool_error)?;
        spool.set_limit(limit);
        let mut state = SpoolState {
            spool,
            limit,
            pending: VecDeque::new(),
            ready: None,
            ends: vec![None],
            failing: false,
        };
        for session in recovered {
            let lane = window.add_lane(&session.session);
            for &first in &session.segments {
                state.queue(lane, first);
            }
            let end = match session.end {
                Some(end) => end,
                None => {
                    let end = session.last_seq + 1;
                    let header = Header::end_of(&session.source, &session.session, end, unix_now());
                    let frames = [Bytes::from(header.to_json())];
                    let place = state
                        .spool
                        .append(&session.source, &session.session, end, true, &frames)
                        .map_err(spool_error)?;
                    state.queue(lane, place);
                    end
                }
            };
            state.ends.push(Some(end));
            tracing::info!(
                "the spool {} holds {} records of session {} from {}: sending them first",
                dir.display(),
                session.count,
                session.session,
                session.source
            );
        }
        Ok(state)
    }

    /// Notes a message of `lane` spooled at `place` and not sent: a run from it, unless the
    /// last run is of the same segment (a run reads to its segment's end).
    fn queue(&mut self, lane: usize, place: Place) {
        let covered = self
            .pending
            .back()
            .is_some_and(|run| run.lane == lane && run.from.same_segment(&place));
        if !covered {
            self.pending.push_back(Run { lane, from: place });
        }
    }

    /// `lane` was acknowledged further: removes what is settled from the spool, all of the
    /// session once its end is.
    fn settle(&mut self, window: &Window, lane: usize) {
        let (session, through) = (window.session(lane), window.through(lane));
        let done = self.ends[lane].is_some_and(|end| through > end);
        let removed = if done {
            self.spool.forget(session)
        } else {
            self.spool.settle(session, through)
        };
        if let Err(e) = removed {
            tracing::warn!(
                "settled segments of the spool {} are not removed: {e}",
                self.spool.dir().display()
            );
        }
    }
}

//! Delivery modes, and acked delivery's publisher side: the window of messages sent and not
//! yet acknowledged, kept for resending until the collector's [`Ack`] settles them.
//!
//! The window is bounded in bytes and in messages; it is the publisher's credit: a full window
//! stops sending until acknowledgements give room back, so a slow collector slows its
//! publishers instead of piling records up in memory.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::wire::Ack;

/// How records travel from a publisher to a collector. Both ends must use the same mode: a
/// publisher in one cannot connect to a collector in the other (ZeroMQ refuses the handshake,
/// and the publisher's `close` reports that no collector took anything).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Delivery {
    /// ZeroMQ PUSH to PULL: the fastest. A record counts as delivered once ZeroMQ has written it
    /// to the operating system; what a collector killed, or a network cut, loses is reported
    /// (gaps, sessions not ended) but gone.
    #[default]
    FireAndForget,
    /// DEALER to ROUTER, and the collector acknowledges each record once its sinks have made it
    /// durable (a group commit). The publisher keeps what is not acknowledged, within its
    /// window, and sends it again after a reconnect; the collector drops what it already has,
    /// across its own restarts too, so each record is stored exactly once.
    Acked,
}

/// Most messages a publisher keeps unacknowledged, whatever their bytes (the collector's ledger
/// relies on it: docs/wire-format.md).
pub(crate) const MAX_UNACKED: usize = 65_536;

/// What a message counts for in the window besides its frames' bytes.
const PER_MESSAGE: u64 = 256;

/// One message sent and not acknowledged.
#[derive(Debug)]
struct Unacked {
    seq: u64,
    frames: Vec<Bytes>,
    bytes: u64,
}

/// A session whose messages the window holds: those not acknowledged, in `seq` order, and how
/// far it is acknowledged.
#[derive(Debug)]
struct Lane {
    session: String,
    /// Every `seq` below this is acknowledged.
    through: u64,
    unacked: VecDeque<Unacked>,
}

/// The messages sent and not yet acknowledged: the publisher's own session's, and those of
/// earlier publishers' sessions found in its spool, each session a lane (lane 0 the
/// publisher's own). Each lane is settled apart: a session acknowledged slowly, or never,
/// holds only its own messages.
#[derive(Debug)]
pub(crate) struct Window {
    lanes: Vec<Lane>,
    bytes: u64,
    count: usize,
    limit: u64,
}

impl Window {
    /// An empty window of at most `limit` bytes, for `session`'s messages (lane 0).
    pub(crate) fn new(limit: u64, session: &str) -> Window {
        let mut window = Window {
            lanes: Vec::new(),
            bytes: 0,
            count: 0,
            limit,
        };
        window.add_lane(session);
        window
    }

    /// Adds a lane for another session's messages; returns its index.
    pub(crate) fn add_lane(&mut self, session: &str) -> usize {
        self.lanes.push(Lane {
            session: session.to_owned(),
            through: 0,
            unacked: VecDeque::new(),
        });
        self.lanes.len() - 1
    }

    /// The session of `lane`.
    pub(crate) fn session(&self, lane: usize) -> &str {
        &self.lanes[lane].session
    }

    /// Whether a message of `frames` may be sent now: there is room for it, or the window is
    /// empty (a message larger than the window still goes, alone).
    pub(crate) fn has_room(&self, frames: &[Bytes]) -> bool {
        self.count == 0 || (self.count < MAX_UNACKED && self.bytes + weight(frames) <= self.limit)
    }

    /// Keeps a sent message of `lane` until it is acknowledged.
    pub(crate) fn push(&mut self, lane: usize, seq: u64, frames: Vec<Bytes>) {
        let bytes = weight(&frames);
        self.bytes += bytes;
        self.count += 1;
        self.lanes[lane]
            .unacked
            .push_back(Unacked { seq, frames, bytes });
    }

    /// Applies an acknowledgement: the messages of its session it settles leave the window.
    /// Returns the lane, and whether the acknowledgement moved it on (an older or repeated one
    /// does not); `None` for a session the window does not know.
    pub(crate) fn acknowledge(&mut self, ack: &Ack) -> Option<(usize, bool)> {
        let at = self.lanes.iter().position(|l| l.session == ack.session)?;
        let lane = &mut self.lanes[at];
        let moved = ack.through > lane.through;
        lane.through = lane.through.max(ack.through);
        while let Some(first) = lane.unacked.front() {
            if first.seq >= lane.through {
                break;
            }
            self.bytes -= first.bytes;
            self.count -= 1;
            lane.unacked.pop_front();
        }
        Some((at, moved))
    }

    /// Every `seq` of `lane` below this is acknowledged.
    pub(crate) fn through(&self, lane: usize) -> u64 {
        self.lanes[lane].through
    }

    /// Messages not acknowledged.
    pub(crate) fn len(&self) -> usize {
        self.count
    }

    /// True when every message sent is acknowledged.
    pub(crate) fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// For resending: the first message not acknowledged at or after `(lane, seq)`, lane by
    /// lane, oldest first; its lane, `seq` and frames.
    pub(crate) fn unacked_from(&self, (lane, seq): (usize, u64)) -> Option<(usize, u64, &[Bytes])> {
        self.lanes
            .iter()
            .enumerate()
            .skip(lane)
            .find_map(|(at, l)| {
                let from = if at == lane { seq } else { 0 };
                let found = l.unacked.iter().find(|u| u.seq >= from)?;
                Some((at, found.seq, &found.frames[..]))
            })
    }
}

/// A message's weight in the window: its frames and [`PER_MESSAGE`].
fn weight(frames: &[Bytes]) -> u64 {
    frames.iter().map(|f| f.len() as u64).sum::<u64>() + PER_MESSAGE
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(bytes: usize) -> Vec<Bytes> {
        vec![Bytes::from_static(b"{}"), Bytes::from(vec![0u8; bytes])]
    }

    fn ack(through: u64, refused: u64) -> Ack {
        Ack {
            session: "s".into(),
            through,
            refused,
        }
    }

    #[test]
    fn a_full_window_waits_for_acknowledgements() {
        let mut window = Window::new(3000, "s");
        assert!(
            window.has_room(&frames(10_000)),
            "an empty window takes any message"
        );
        window.push(0, 0, frames(1000));
        window.push(0, 1, frames(1000));
        assert!(!window.has_room(&frames(1000)));
        assert_eq!(window.acknowledge(&ack(1, 0)), Some((0, true)));
        assert!(window.has_room(&frames(1000)));
        assert_eq!(window.len(), 1);
        let (lane, seq, oldest) = window.unacked_from((0, 0)).unwrap();
        assert_eq!((lane, seq, oldest[1].len()), (0, 1, 1000));
    }

    #[test]
    fn old_or_repeated_acknowledgements_settle_nothing() {
        let mut window = Window::new(1 << 20, "s");
        for seq in 0..5 {
            window.push(0, seq, frames(10));
        }
        assert_eq!(window.acknowledge(&ack(3, 1)), Some((0, true)));
        assert_eq!(window.acknowledge(&ack(3, 1)), Some((0, false)));
        assert_eq!(window.acknowledge(&ack(2, 0)), Some((0, false)));
        assert_eq!(window.len(), 2);
        // The end of a session settles at its seq, one past the last record.
        window.push(0, 5, frames(0));
        assert_eq!(window.acknowledge(&ack(6, 1)), Some((0, true)));
        assert!(window.is_empty());
        assert_eq!((window.bytes, window.count), (0, 0));
    }

    #[test]
    fn the_window_holds_at_most_its_message_count() {
        let mut window = Window::new(u64::MAX, "s");
        for seq in 0..MAX_UNACKED as u64 {
            window.push(0, seq, Vec::new());
        }
        assert!(!window.has_room(&[]));
    }

    #[test]
    fn lanes_settle_apart_and_resend_lane_by_lane() {
        let mut window = Window::new(1 << 20, "s");
        let old = window.add_lane("old");
        window.push(old, 7, frames(10));
        window.push(old, 8, frames(10));
        window.push(0, 0, frames(10));
        window.push(0, 1, frames(10));
        let unknown = Ack {
            session: "other".into(),
            through: 9,
            refused: 0,
        };
        assert_eq!(window.acknowledge(&unknown), None);
        // The own lane's first message leaves, though the old lane's came before it.
        assert_eq!(window.acknowledge(&ack(1, 0)), Some((0, true)));
        assert_eq!(window.len(), 3);
        // Resending goes lane by lane, each oldest first.
        let resent = |from| window.unacked_from(from).map(|(lane, seq, _)| (lane, seq));
        assert_eq!(resent((0, 0)), Some((0, 1)));
        assert_eq!(resent((0, 2)), Some((old, 7)));
        assert_eq!(resent((old, 8)), Some((old, 8)));
        assert_eq!(resent((old, 9)), None);
        let old_ack = Ack {
            session: "old".into(),
            through: 9,
            refused: 0,
        };
        assert_eq!(window.acknowledge(&old_ack), Some((old, true)));
        assert_eq!(window.acknowledge(&old_ack), Some((old, false)));
        assert_eq!(window.len(), 1);
        assert_eq!(window.through(old), 9);
    }
}

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
    /// Its session: an index into [`Window::lanes`].
    lane: usize,
    seq: u64,
    frames: Vec<Bytes>,
    bytes: u64,
}

/// A session whose messages the window holds, and how far it is acknowledged.
#[derive(Debug)]
struct Lane {
    session: String,
    /// Every `seq` below this is acknowledged.
    through: u64,
}

/// The messages sent and not yet acknowledged, in the order sent: the publisher's own
/// session's, and those of earlier publishers' sessions found in its spool (each session a
/// lane, lane 0 the publisher's own).
#[derive(Debug)]
pub(crate) struct Window {
    lanes: Vec<Lane>,
    unacked: VecDeque<Unacked>,
    bytes: u64,
    limit: u64,
    /// Messages that left the window so far: the position of its oldest.
    left: u64,
}

impl Window {
    /// An empty window of at most `limit` bytes, for `session`'s messages (lane 0).
    pub(crate) fn new(limit: u64, session: &str) -> Window {
        Window {
            lanes: vec![Lane {
                session: session.to_owned(),
                through: 0,
            }],
            unacked: VecDeque::new(),
            bytes: 0,
            limit,
            left: 0,
        }
    }

    /// Adds a lane for another session's messages; returns its index.
    pub(crate) fn add_lane(&mut self, session: &str) -> usize {
        self.lanes.push(Lane {
            session: session.to_owned(),
            through: 0,
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
        self.has_room_for(weight(frames))
    }

    /// [`has_room`](Self::has_room) for a message weighing `bytes`.
    pub(crate) fn has_room_for(&self, bytes: u64) -> bool {
        self.unacked.is_empty()
            || (self.unacked.len() < MAX_UNACKED && self.bytes + bytes <= self.limit)
    }

    /// Keeps a sent message of `lane` until it is acknowledged.
    pub(crate) fn push(&mut self, lane: usize, seq: u64, frames: Vec<Bytes>) {
        let bytes = weight(&frames);
        self.bytes += bytes;
        self.unacked.push_back(Unacked {
            lane,
            seq,
            frames,
            bytes,
        });
    }

    /// Applies an acknowledgement: its lane, and whether it moved the lane on (an older or
    /// repeated one does not); `None` for a session the window does not know. The messages
    /// at the window's front that are settled leave it (also ones pushed after their lane's
    /// acknowledgement had passed them).
    pub(crate) fn acknowledge(&mut self, ack: &Ack) -> Option<(usize, bool)> {
        let lane = self.lanes.iter().position(|l| l.session == ack.session)?;
        let moved = ack.through > self.lanes[lane].through;
        if moved {
            self.lanes[lane].through = ack.through;
        }
        while let Some(first) = self.unacked.front() {
            if first.seq >= self.lanes[first.lane].through {
                break;
            }
            self.bytes -= first.bytes;
            self.unacked.pop_front();
            self.left += 1;
        }
        Some((lane, moved))
    }

    /// Every `seq` of `lane` below this is acknowledged.
    pub(crate) fn through(&self, lane: usize) -> u64 {
        self.lanes[lane].through
    }

    /// Messages not acknowledged.
    pub(crate) fn len(&self) -> usize {
        self.unacked.len()
    }

    /// True when every message sent is acknowledged.
    pub(crate) fn is_empty(&self) -> bool {
        self.unacked.is_empty()
    }

    /// The position of the oldest message in the window (positions count every message ever
    /// pushed, from 0).
    pub(crate) fn first_position(&self) -> u64 {
        self.left
    }

    /// The frames of the message at `position`, for resending: `None` past the newest;
    /// `Some(None)` when it is acknowledged already.
    pub(crate) fn frames_at(&self, position: u64) -> Option<Option<&[Bytes]>> {
        let index = position.checked_sub(self.left)?;
        let message = self.unacked.get(usize::try_from(index).ok()?)?;
        let settled = message.seq < self.lanes[message.lane].through;
        Some((!settled).then_some(&message.frames[..]))
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
        let oldest = window.frames_at(window.first_position()).unwrap().unwrap();
        assert_eq!(oldest[1].len(), 1000);
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
        assert_eq!(window.bytes, 0);
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
    fn lanes_settle_apart_and_the_front_leaves_when_settled() {
        let mut window = Window::new(1 << 20, "s");
        let old = window.add_lane("old");
        window.push(old, 7, frames(10));
        window.push(old, 8, frames(10));
        window.push(0, 0, frames(10));
        let unknown = Ack {
            session: "other".into(),
            through: 9,
            refused: 0,
        };
        assert_eq!(window.acknowledge(&unknown), None);
        // The own lane's message is settled but stays behind the old lane's.
        assert_eq!(window.acknowledge(&ack(1, 0)), Some((0, true)));
        assert_eq!(window.len(), 3);
        assert_eq!(window.frames_at(2), Some(None), "settled: not resent");
        assert!(matches!(window.frames_at(0), Some(Some(_))));
        let old_ack = Ack {
            session: "old".into(),
            through: 9,
            refused: 0,
        };
        assert_eq!(window.acknowledge(&old_ack), Some((old, true)));
        assert!(window.is_empty());
        assert_eq!(window.first_position(), 3);
        assert_eq!(window.frames_at(3), None);
        assert_eq!(window.through(old), 9);
    }
}

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

/// The messages of one session sent and not yet acknowledged, in `seq` order.
#[derive(Debug)]
pub(crate) struct Window {
    unacked: VecDeque<Unacked>,
    bytes: u64,
    limit: u64,
    /// Every `seq` below this is acknowledged.
    through: u64,
}

impl Window {
    /// An empty window of at most `limit` bytes.
    pub(crate) fn new(limit: u64) -> Window {
        Window {
            unacked: VecDeque::new(),
            bytes: 0,
            limit,
            through: 0,
        }
    }

    /// Whether a message of `frames` may be sent now: there is room for it, or the window is
    /// empty (a message larger than the window still goes, alone).
    pub(crate) fn has_room(&self, frames: &[Bytes]) -> bool {
        self.unacked.is_empty()
            || (self.unacked.len() < MAX_UNACKED && self.bytes + weight(frames) <= self.limit)
    }

    /// Keeps a sent message until it is acknowledged.
    pub(crate) fn push(&mut self, seq: u64, frames: Vec<Bytes>) {
        let bytes = weight(&frames);
        self.bytes += bytes;
        self.unacked.push_back(Unacked { seq, frames, bytes });
    }

    /// Applies an acknowledgement: the messages it settles leave the window. Returns how many
    /// left (an older or repeated acknowledgement settles nothing).
    pub(crate) fn acknowledge(&mut self, ack: &Ack) -> u64 {
        if ack.through <= self.through {
            return 0;
        }
        self.through = ack.through;
        let mut settled = 0;
        while let Some(first) = self.unacked.front() {
            if first.seq >= ack.through {
                break;
            }
            self.bytes -= first.bytes;
            self.unacked.pop_front();
            settled += 1;
        }
        settled
    }

    /// Messages not acknowledged.
    pub(crate) fn len(&self) -> usize {
        self.unacked.len()
    }

    /// True when every message sent is acknowledged.
    pub(crate) fn is_empty(&self) -> bool {
        self.unacked.is_empty()
    }

    /// The `seq` of the oldest unacknowledged message.
    pub(crate) fn first_seq(&self) -> Option<u64> {
        self.unacked.front().map(|u| u.seq)
    }

    /// The frames of the unacknowledged message at `index` (0: the oldest), for resending.
    pub(crate) fn frames(&self, index: usize) -> Option<&[Bytes]> {
        self.unacked.get(index).map(|u| &u.frames[..])
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
        let mut window = Window::new(3000);
        assert!(
            window.has_room(&frames(10_000)),
            "an empty window takes any message"
        );
        window.push(0, frames(1000));
        window.push(1, frames(1000));
        assert!(!window.has_room(&frames(1000)));
        assert_eq!(window.acknowledge(&ack(1, 0)), 1);
        assert!(window.has_room(&frames(1000)));
        assert_eq!(window.len(), 1);
        assert_eq!(window.frames(0).unwrap()[1].len(), 1000);
    }

    #[test]
    fn old_or_repeated_acknowledgements_settle_nothing() {
        let mut window = Window::new(1 << 20);
        for seq in 0..5 {
            window.push(seq, frames(10));
        }
        assert_eq!(window.acknowledge(&ack(3, 1)), 3);
        assert_eq!(window.acknowledge(&ack(3, 1)), 0);
        assert_eq!(window.acknowledge(&ack(2, 0)), 0);
        assert_eq!(window.len(), 2);
        // The end of a session settles at its seq, one past the last record.
        window.push(5, frames(0));
        assert_eq!(window.acknowledge(&ack(6, 1)), 3);
        assert!(window.is_empty());
        assert_eq!(window.bytes, 0);
    }

    #[test]
    fn the_window_holds_at_most_its_message_count() {
        let mut window = Window::new(u64::MAX);
        for seq in 0..MAX_UNACKED as u64 {
            window.push(seq, Vec::new());
        }
        assert!(!window.has_room(&[]));
    }
}

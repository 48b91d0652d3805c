//! Acked delivery on the publisher thread: the acknowledgements read from the socket, the
//! window they settle ([`Window`]), and resending what is not acknowledged after the
//! connection to the collector was made again (a collector restarted, a network cut that
//! ZeroMQ's heartbeats detected).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;

use super::Counters;
use crate::delivery::Window;
use crate::error::Error;
use crate::transport;
use crate::wire::Ack;

/// How often ZeroMQ checks that the collector still answers, and how long without an answer
/// makes it drop the connection and connect again (then what is unacknowledged is resent).
const HEARTBEAT_IVL_MS: i32 = 1000;
const HEARTBEAT_TIMEOUT_MS: i32 = 5000;

/// The publisher thread's acked-delivery state.
pub(super) struct AckedLink {
    window: Window,
    /// ZeroMQ's events of the socket: a handshake that succeeds after the first means a new
    /// connection, and what the old one carried may be lost.
    monitor: zmq::Socket,
    handshakes: u64,
    /// Resending: the next `seq` to send again (`None`: not resending).
    resend_from: Option<u64>,
    session: String,
    /// Raised by ZeroMQ as resent messages are passed on; counted nowhere else.
    resent_passed_on: Arc<AtomicU64>,
    /// Calls of [`pump_now_and_then`](Self::pump_now_and_then).
    calls: u64,
}

/// While messages keep coming, acknowledgements are read once per this many (and whenever the
/// window is full).
const PUMP_EVERY: u64 = 32;

impl AckedLink {
    /// Sets `socket` (a DEALER, not yet connected: its first connection must be seen) up for
    /// acked delivery of `session`, with a window of `window_bytes`.
    pub(super) fn new(
        context: &zmq::Context,
        socket: &zmq::Socket,
        window_bytes: u64,
        session: String,
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
        Ok(AckedLink {
            window: Window::new(window_bytes),
            monitor,
            handshakes: 0,
            resend_from: None,
            session,
            resent_passed_on: Arc::new(AtomicU64::new(0)),
            calls: 0,
        })
    }

    /// Whether a message of `frames` may be sent now (see [`Window::has_room`]); not while
    /// resending.
    pub(super) fn has_room(&self, frames: &[Bytes]) -> bool {
        self.resend_from.is_none() && self.window.has_room(frames)
    }

    /// Keeps a message ZeroMQ took until it is acknowledged.
    pub(super) fn sent(&mut self, seq: u64, frames: &[Bytes]) {
        self.window.push(seq, frames.to_vec());
    }

    /// True when everything sent is acknowledged.
    pub(super) fn all_settled(&self) -> bool {
        self.window.is_empty()
    }

    /// [`pump`](Self::pump) without waiting, once every [`PUMP_EVERY`] calls: reading the
    /// sockets costs more than sending a small message.
    pub(super) fn pump_now_and_then(&mut self, socket: &mut zmq::Socket, counters: &Counters) {
        self.calls += 1;
        if self.calls.is_multiple_of(PUMP_EVERY) {
            self.pump(socket, counters, 0);
        }
    }

    /// Reads what is waiting (acknowledgements, new connections) and goes on resending; then,
    /// if `wait_ms` is not 0, waits that long at most for the socket or the monitor to have
    /// something. Raises `counters`' acknowledged and refused counts.
    pub(super) fn pump(&mut self, socket: &mut zmq::Socket, counters: &Counters, wait_ms: i64) {
        self.read(socket, counters);
        self.resend(socket, counters);
        if wait_ms > 0 {
            let mut items = [
                socket.as_poll_item(zmq::POLLIN),
                self.monitor.as_poll_item(zmq::POLLIN),
            ];
            let ready = zmq::poll(&mut items, wait_ms).is_ok_and(|n| n > 0);
            if ready {
                self.read(socket, counters);
                self.resend(socket, counters);
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
                    self.resend_from = self.window.first_seq();
                }
            }
        }
        while let Ok(frame) = socket.recv_bytes(zmq::DONTWAIT) {
            match Ack::parse(&frame) {
                Ok(ack) if ack.session == self.session => {
                    // An out-of-date acknowledgement changes nothing.
                    self.window.acknowledge(&ack);
                    counters.refused.fetch_max(ack.refused, Ordering::Relaxed);
                    counters
                        .acknowledged
                        .fetch_max(ack.through, Ordering::Release);
                }
                Ok(ack) => tracing::debug!("an acknowledgement of session {:?}", ack.session),
                Err(e) => tracing::warn!("a malformed acknowledgement was ignored: {e}"),
            }
        }
    }

    /// Sends again what is unacknowledged from `resend_from` on, as far as ZeroMQ takes it
    /// without waiting; the rest on the next call.
    fn resend(&mut self, socket: &mut zmq::Socket, counters: &Counters) {
        let Some(mut seq) = self.resend_from else {
            return;
        };
        let first = self.window.first_seq().unwrap_or(seq);
        seq = seq.max(first);
        while let Some(frames) = self.window.frames((seq - first) as usize) {
            let frames = frames.to_vec();
            match transport::send_tracked(socket, &frames, zmq::DONTWAIT, &self.resent_passed_on) {
                Ok(()) => {
                    seq += 1;
                    counters.resent.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => {
                    self.resend_from = Some(seq);
                    return;
                }
            }
        }
        self.resend_from = None;
    }
}

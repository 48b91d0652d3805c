//! The input socket's connections: a thread that follows them through ZeroMQ's socket monitor,
//! counts them, and closes each connection accepted beyond the limit (`--max-peers`), so that
//! what libzmq queues per peer is bounded in total by the number of peers allowed.
//!
//! A refused connection is shut down at the system level; its publisher sees the connection
//! reset and, like any ZeroMQ peer, retries later. Publishers the collector connects to
//! (`connect`) are not counted.

use std::os::fd::{BorrowedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::stats::Stats;
use crate::error::Error;

/// Connections accepted at once by default.
pub(crate) const DEFAULT_MAX_PEERS: u64 = 64;

/// How long one wait for a monitor event lasts before the stop flag is looked at.
const POLL_MS: i64 = 100;

/// Counts of the input socket's accepted connections.
#[derive(Debug, Default)]
pub(crate) struct PeerCounts {
    /// Connections open now.
    pub(crate) connected: AtomicU64,
    /// Connections closed at once because `connected` was at the limit.
    pub(crate) refused: AtomicU64,
}

/// The monitor thread; stops when dropped.
pub(crate) struct PeerGuard {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl PeerGuard {
    /// Starts following `socket`'s accepted connections, allowing `max` at once.
    pub(crate) fn start(
        context: &zmq::Context,
        socket: &zmq::Socket,
        max: u64,
        stats: Arc<Stats>,
    ) -> Result<PeerGuard, Error> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let address = format!(
            "inproc://ndbridge-peers-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let events = zmq::SocketEvent::ACCEPTED.to_raw() | zmq::SocketEvent::DISCONNECTED.to_raw();
        let socket_error = |action: &'static str| {
            move |source| {
                Error::Socket(crate::transport::SocketError {
                    action,
                    address: "the input socket's monitor".into(),
                    source,
                })
            }
        };
        socket
            .monitor(&address, i32::from(events))
            .map_err(socket_error("monitor"))?;
        let monitor = context.socket(zmq::PAIR).map_err(socket_error("open"))?;
        monitor.connect(&address).map_err(socket_error("connect"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("ndbridge-peers".into())
                .spawn(move || follow(&monitor, &stop, &stats.peers, max))
                .map_err(|source| Error::Thread {
                    name: "ndbridge-peers".into(),
                    source,
                })?
        };
        Ok(PeerGuard {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for PeerGuard {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One monitor event: what happened, its value (the connection's descriptor for both events
/// followed here) and the listening endpoint it concerns.
fn read_event(monitor: &zmq::Socket) -> Option<(u16, u32, String)> {
    let frames = monitor.recv_multipart(0).ok()?;
    let first = frames.first()?;
    let event = u16::from_le_bytes(first.get(..2)?.try_into().ok()?);
    let value = u32::from_le_bytes(first.get(2..6)?.try_into().ok()?);
    let endpoint = String::from_utf8_lossy(frames.get(1)?).into_owned();
    Some((event, value, endpoint))
}

fn follow(monitor: &zmq::Socket, stop: &AtomicBool, counts: &PeerCounts, max: u64) {
    while !stop.load(Ordering::Relaxed) {
        match monitor.poll(zmq::POLLIN, POLL_MS) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(_) => return,
        }
        let Some((event, fd, endpoint)) = read_event(monitor) else {
            continue;
        };
        if event == zmq::SocketEvent::ACCEPTED.to_raw() {
            if counts.connected.load(Ordering::Relaxed) >= max {
                refuse(fd as RawFd, &endpoint);
                counts.refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("a connection beyond --max-peers ({max}) was refused");
            }
            // The refused connection still ends with a disconnect event of its own.
            counts.connected.fetch_add(1, Ordering::Relaxed);
        } else if event == zmq::SocketEvent::DISCONNECTED.to_raw() {
            let _ = counts
                .connected
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        }
    }
}

/// Ends a connection libzmq accepted on `endpoint`: both directions shut down, so libzmq sees
/// it closed and releases it (the descriptor stays libzmq's to close). Only a socket whose local
/// address is the listening endpoint's is touched: should the connection be gone already and
/// its number reused by another descriptor of the process, that one is left alone.
fn refuse(fd: RawFd, endpoint: &str) {
    // SAFETY: `fd` is the number of a descriptor libzmq reported just now, borrowed for the two
    // calls below only; neither closes it or frees anything. If libzmq has closed it meanwhile
    // and the number is reused, both calls act on that other descriptor: `getsockname` only
    // reads its address, and `shutdown` is made only when that address is the listener's.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    if rustix::net::getsockname(fd).is_ok_and(|local| is_listener(local, endpoint)) {
        let _ = rustix::net::shutdown(fd, rustix::net::Shutdown::Both);
    }
}

/// Whether a socket's local address is that of the listening `endpoint` (`tcp://HOST:PORT` by
/// port, `ipc://PATH` by path): accepted connections share it.
fn is_listener(local: rustix::net::SocketAddrAny, endpoint: &str) -> bool {
    if let Some(path) = endpoint.strip_prefix("ipc://") {
        return rustix::net::SocketAddrUnix::try_from(local)
            .ok()
            .and_then(|unix| unix.path().map(|p| p.to_bytes() == path.as_bytes()))
            .unwrap_or(false);
    }
    let port = endpoint
        .rsplit(':')
        .next()
        .and_then(|p| p.parse::<u16>().ok());
    let local_port = std::net::SocketAddr::try_from(local).ok().map(|a| a.port());
    port.is_some() && port == local_port
}

//! The input socket's connections: a thread that follows them through ZeroMQ's socket monitor,
//! counts them, and shuts down each connection accepted beyond the limit (`--max-peers`), so
//! that what libzmq queues per peer is bounded in total by the number of peers allowed.
//!
//! No message crosses a refused connection: the thread also answers every handshake (ZeroMQ's
//! ZAP, on the input socket's context), and a handshake cannot complete before its answer, which
//! comes only after every connection accepted so far has been weighed. The refused publisher
//! sees its connection reset, keeps its messages, and retries later like any ZeroMQ peer.
//! Connections are counted from the moment they are accepted, so one that left a moment ago may
//! still count. Publishers the collector connects to (`connect`) are not counted.
//!
//! With CURVE, the same answer admits only the keys of the allowlist, and names each admitted
//! peer by its key's name (ZeroMQ's `User-Id` of every message it sends); a key not listed is
//! refused and counted, and so is a handshake that fails (a peer without CURVE, or one that
//! does not know the collector's public key).

use std::collections::HashSet;
use std::os::fd::{BorrowedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::ratelimit::RateLimitedLog;
use super::stats::Stats;
use crate::error::Error;
use crate::keys::{Allowlist, PublicKey};
use crate::transport;

/// Connections accepted at once by default.
pub(crate) const DEFAULT_MAX_PEERS: u64 = 64;

/// How long one wait for a monitor event lasts before the stop flag is looked at.
const POLL_MS: i64 = 100;

/// The monitor thread; stops when dropped.
pub(crate) struct PeerGuard {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl PeerGuard {
    /// Starts following `socket`'s accepted connections and answering their handshakes,
    /// allowing `max` at once. `socket` must have been opened with
    /// [`SocketOptions::admission`](crate::transport::SocketOptions::admission), and `context`
    /// must have no other ZAP handler. With `allow`, only its keys are admitted (the socket is
    /// a CURVE server).
    pub(crate) fn start(
        context: &zmq::Context,
        socket: &zmq::Socket,
        zap: Option<zmq::Socket>,
        max: u64,
        allow: Option<Arc<Allowlist>>,
        stats: Arc<Stats>,
    ) -> Result<PeerGuard, Error> {
        let events = zmq::SocketEvent::ACCEPTED.to_raw()
            | zmq::SocketEvent::DISCONNECTED.to_raw()
            | zmq::SocketEvent::HANDSHAKE_FAILED_PROTOCOL.to_raw()
            | zmq::SocketEvent::HANDSHAKE_FAILED_NO_DETAIL.to_raw();
        let monitor = transport::monitor(context, socket, "peers", events)?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            let mut admission = Admission {
                monitor,
                zap,
                accepted: HashSet::new(),
                max,
                allow,
                stats,
                log: RateLimitedLog::new(),
            };
            std::thread::Builder::new()
                .name("ndbridge-peers".into())
                .spawn(move || admission.run(&stop))
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

/// Where ZeroMQ asks a context's ZAP handler about each handshake.
const ZAP_ENDPOINT: &str = "inproc://zeromq.zap.01";

/// The ZAP handler's socket, to be bound before the input socket opens. `None` when the
/// context has a ZAP handler already (a context shared with another collector): the input
/// socket then opens without admission, and publishers are counted but none is refused.
pub(crate) fn bind_zap(context: &zmq::Context) -> Option<zmq::Socket> {
    let zap = context.socket(zmq::REP).ok()?;
    match zap.bind(ZAP_ENDPOINT) {
        Ok(()) => Some(zap),
        Err(e) => {
            tracing::warn!(
                "--max-peers is not enforced: the ZeroMQ context has a ZAP handler already ({e})"
            );
            None
        }
    }
}

/// The thread's state: the two sockets it answers, and the accepted connections by descriptor.
struct Admission {
    monitor: zmq::Socket,
    /// The ZAP handler: without it, nothing is refused (see [`bind_zap`]).
    zap: Option<zmq::Socket>,
    accepted: HashSet<u32>,
    max: u64,
    /// The keys admitted, when the socket is a CURVE server.
    allow: Option<Arc<Allowlist>>,
    stats: Arc<Stats>,
    log: RateLimitedLog,
}

impl Admission {
    fn run(&mut self, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            let mut items = vec![self.monitor.as_poll_item(zmq::POLLIN)];
            if let Some(zap) = &self.zap {
                items.push(zap.as_poll_item(zmq::POLLIN));
            }
            if let Err(e) = zmq::poll(&mut items, POLL_MS) {
                if keep_answering(e) {
                    if e != zmq::Error::EINTR {
                        // Not a signal: wait before trying again rather than spin.
                        std::thread::sleep(std::time::Duration::from_millis(POLL_MS as u64));
                    }
                    continue;
                }
                return;
            }
            let requests = items.get(1).is_some_and(|item| item.is_readable());
            // Every event first, so that no handshake is answered before its connection has
            // been weighed (and shut down if beyond the limit).
            while let Some((event, fd, endpoint)) = transport::read_event(&self.monitor) {
                self.on_event(event, fd, &endpoint);
            }
            if requests {
                self.answer();
            }
        }
    }

    fn on_event(&mut self, event: u16, fd: u32, endpoint: &str) {
        if event == zmq::SocketEvent::ACCEPTED.to_raw() {
            if self.zap.is_some() && self.accepted.len() as u64 >= self.max {
                refuse(fd as RawFd, endpoint);
                self.stats.peers.refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    "a publisher was refused: {} connected, --max-peers {}",
                    self.accepted.len(),
                    self.max
                );
            }
            // A refused connection still ends with a disconnect event of its own.
            self.accepted.insert(fd);
        } else if event == zmq::SocketEvent::DISCONNECTED.to_raw() {
            self.accepted.remove(&fd);
        } else {
            // A handshake that failed: the peer speaks no CURVE, or not with this collector's
            // public key (a refused key is counted where it is refused).
            self.stats
                .peers
                .failed_handshakes
                .fetch_add(1, Ordering::Relaxed);
            self.log.warn(|| {
                format!(
                    "a peer failed its handshake on {endpoint} (ZeroMQ error {fd}): {}",
                    if self.allow.is_some() {
                        "a peer without CURVE, or without this collector's public key"
                    } else {
                        "a peer with CURVE on a collector without it"
                    }
                )
            });
        }
        self.stats
            .peers
            .connected
            .store(self.accepted.len() as u64, Ordering::Relaxed);
    }

    /// Answers one ZAP request (RFC 27): without an allowlist "200" (what is refused was shut
    /// down before), with one "200" and the key's name for a listed key, "400" otherwise.
    fn answer(&mut self) {
        let Some(Ok(request)) = self.zap.as_ref().map(|z| z.recv_multipart(zmq::DONTWAIT)) else {
            return;
        };
        let id = request.get(1).cloned().unwrap_or_default();
        let (status, text, user): (&[u8], &[u8], Vec<u8>) = match self.admit(&request) {
            Ok(name) => (b"200", b"OK", name.into_bytes()),
            Err(()) => (b"400", b"key not allowed", Vec::new()),
        };
        let reply: [&[u8]; 6] = [b"1.0", &id, status, text, &user, b""];
        if let Some(zap) = &self.zap {
            let _ = zap.send_multipart(reply, 0);
        }
    }

    /// The name a ZAP request's peer is admitted under (empty without an allowlist), or `Err`
    /// (counted and logged) for a key not on the allowlist. The request's frames: version,
    /// request id, domain, the peer's address, its routing id, the mechanism, credentials.
    fn admit(&self, request: &[Vec<u8>]) -> Result<String, ()> {
        let Some(allow) = &self.allow else {
            return Ok(String::new());
        };
        let key = (request.get(5).map(Vec::as_slice) == Some(b"CURVE"))
            .then(|| request.get(6))
            .flatten()
            .and_then(|k| <[u8; 32]>::try_from(k.as_slice()).ok())
            .map(PublicKey::from_bytes);
        if let Some(name) = key.as_ref().and_then(|k| allow.name_of(k)) {
            return Ok(name.to_owned());
        }
        self.stats
            .peers
            .refused_keys
            .fetch_add(1, Ordering::Relaxed);
        self.log.warn(|| {
            let address = String::from_utf8_lossy(request.get(3).map_or(&[][..], Vec::as_slice));
            match key {
                Some(key) => {
                    format!("refused a peer at {address}: key {key} is not allowed (--allow)")
                }
                None => format!("refused a peer at {address}: no CURVE key"),
            }
        });
        Err(())
    }
}

/// Whether the thread goes on after `zmq::poll` failed with `e`. It must not end while the
/// input socket lives: its monitor socket would close with it, and libzmq's next event on the
/// input socket blocks that socket's I/O thread for good (no publisher gets in or through);
/// and were the monitor gone first, the ZAP socket's close would let libzmq complete every
/// CURVE handshake without asking anyone (`curve_server.cpp`: no handler bound and
/// ZMQ_ZAP_ENFORCE_DOMAIN off, no allowlist and no `--max-peers`). A signal interrupting the
/// wait (EINTR: poll is never restarted, whatever the handler's flags) is no reason to end;
/// only a terminated context is, and then no handshake completes anyway.
fn keep_answering(e: zmq::Error) -> bool {
    e != zmq::Error::ETERM
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::KeyPair;
    use std::os::unix::thread::JoinHandleExt;
    use std::time::{Duration, Instant};

    /// A CURVE PUSH client of `server` with `own` keys, connected to `endpoint`.
    fn push(
        context: &zmq::Context,
        endpoint: &str,
        server: &KeyPair,
        own: &KeyPair,
    ) -> zmq::Socket {
        let push = context.socket(zmq::PUSH).unwrap();
        push.set_linger(0).unwrap();
        push.set_curve_serverkey(server.public().as_bytes())
            .unwrap();
        push.set_curve_publickey(own.public().as_bytes()).unwrap();
        push.set_curve_secretkey(own.secret()).unwrap();
        push.connect(endpoint).unwrap();
        push
    }

    /// What `pull` receives within `wait`.
    fn received(pull: &zmq::Socket, wait: Duration) -> Vec<Vec<u8>> {
        let start = Instant::now();
        let mut got = Vec::new();
        while start.elapsed() < wait {
            if let Ok(m) = pull.recv_bytes(0) {
                got.push(m);
            }
        }
        got
    }

    #[test]
    fn signals_do_not_end_the_zap_handler_and_unlisted_keys_stay_out() {
        extern "C" {
            fn pthread_kill(thread: std::os::unix::thread::RawPthread, signal: i32) -> i32;
        }
        use signal_hook::consts::SIGUSR1;
        let interrupted = Arc::new(AtomicBool::new(false));
        signal_hook::flag::register(SIGUSR1, Arc::clone(&interrupted)).unwrap();

        let context = zmq::Context::new();
        let zap = bind_zap(&context).expect("a context of our own has no ZAP handler");
        let (server, allowed, stranger) = (
            KeyPair::generate().unwrap(),
            KeyPair::generate().unwrap(),
            KeyPair::generate().unwrap(),
        );
        let mut allow = Allowlist::new();
        allow.insert("allowed", *allowed.public()).unwrap();
        let pull = context.socket(zmq::PULL).unwrap();
        pull.set_linger(0).unwrap();
        pull.set_rcvtimeo(50).unwrap();
        pull.set_zap_domain(crate::transport::ADMISSION_DOMAIN)
            .unwrap();
        pull.set_curve_server(true).unwrap();
        pull.set_curve_secretkey(server.secret()).unwrap();
        pull.bind("tcp://127.0.0.1:*").unwrap();
        let endpoint = pull.get_last_endpoint().unwrap().unwrap();
        let stats = Arc::new(Stats::new(1 << 20));
        let guard = PeerGuard::start(
            &context,
            &pull,
            Some(zap),
            64,
            Some(Arc::new(allow)),
            Arc::clone(&stats),
        )
        .unwrap();

        // Signals at the thread while it waits in zmq_poll: each interrupts the wait (EINTR).
        let thread = guard.thread.as_ref().unwrap();
        for _ in 0..20 {
            // SAFETY: the thread is alive until `guard` drops (joined there), and SIGUSR1 has a
            // handler (it sets `interrupted`), so the signal does not end the process.
            assert_eq!(unsafe { pthread_kill(thread.as_pthread_t(), SIGUSR1) }, 0);
            std::thread::sleep(Duration::from_millis(15));
        }
        assert!(interrupted.load(Ordering::Relaxed));
        assert!(
            !thread.is_finished(),
            "the ZAP handler ended on a signal: no handshake on the input socket is answered"
        );

        // The allowlist still holds: the stranger's messages never arrive, the allowed ones do.
        let outsider = push(&context, &endpoint, &server, &stranger);
        outsider.send("from the stranger", 0).unwrap();
        let insider = push(&context, &endpoint, &server, &allowed);
        insider.send("from the allowed", 0).unwrap();
        let got = received(&pull, Duration::from_millis(1500));
        assert_eq!(got, vec![b"from the allowed".to_vec()]);
        assert!(stats.peers.refused_keys.load(Ordering::Relaxed) > 0);
    }

    #[test]
    fn only_a_terminated_context_ends_the_zap_handler() {
        assert!(keep_answering(zmq::Error::EINTR));
        assert!(keep_answering(zmq::Error::EAGAIN));
        assert!(!keep_answering(zmq::Error::ETERM));
    }
}

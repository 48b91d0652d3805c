//! The forward sink ([`ForwardSink`]): a PUB socket of its own re-publishing every valid
//! message to live subscribers, each with its own queue bounded in bytes, optionally behind
//! CURVE (`curve`: authentication by an allowlist of keys, and encryption).

use std::io::{self, BufReader, IoSlice, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use serde::Serialize;
use serde_json::json;

use super::{Received, Sink, SinkError};
use crate::budget::{ByteBudget, Permit, Wake};
use crate::collector::ratelimit::RateLimitedLog;
use crate::keys::{Allowlist, KeyPair, PublicKey};
use crate::plural::plural;

mod curve;
mod sodium;
mod zmtp;

use curve::{CurveServer, Opener, Refusal, Sealer};
use zmtp::{GreetingError, Mechanism};

/// Messages queued for one subscriber at most, whatever their size.
const QUEUE_MESSAGES: usize = 1024;

/// Messages written to a connection in one system call at most.
const BATCH_MESSAGES: usize = 64;

/// Time a new connection has to complete its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Time [`Sink::finish`] gives subscribers to take what is queued for them before closing.
const LINGER: Duration = Duration::from_millis(500);

/// How often the accept thread looks at the stop flag.
const ACCEPT_POLL: Duration = Duration::from_millis(100);

/// Largest frame a subscriber may send (subscriptions, heartbeats, its READY command).
const MAX_PEER_FRAME: u64 = 64 << 10;

/// Bytes of sealed CURVE frames gathered before they are written.
const SEALED_BATCH_BYTES: usize = 256 << 10;

/// Distinct subscriptions one subscriber may hold.
const MAX_SUBSCRIPTIONS: usize = 1024;

/// Bytes of distinct subscriptions one subscriber may hold.
const MAX_SUBSCRIPTION_BYTES: usize = 1 << 20;

/// The forward sink could not start.
///
/// Each message includes its cause, so [`source`](std::error::Error::source) returns none
/// (see [`Error`](crate::Error)).
#[derive(Debug)]
#[non_exhaustive]
pub enum ForwardError {
    /// The address is not one the sink can listen on.
    Address {
        /// The address given.
        address: String,
    },
    /// Listening on the address failed.
    Listen {
        /// The address given.
        address: String,
        /// The operating system's error.
        source: io::Error,
    },
    /// The accept thread could not be started.
    Thread(io::Error),
    /// libsodium, which CURVE needs, could not start (no random source).
    Curve,
}

impl std::fmt::Display for ForwardError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ForwardError::Address { address } => {
                write!(
                    f,
                    "forward address {address:?}: expected tcp://HOST:PORT (HOST an IP address, \
                     a name, or *; PORT a number or *) or ipc://PATH"
                )?;
                if !address.contains("://") && address.contains(':') {
                    write!(f, ": did you mean tcp://{address}?")?;
                }
                Ok(())
            }
            ForwardError::Listen { address, source } => {
                write!(f, "cannot listen on {address}: {source}")
            }
            ForwardError::Thread(e) => write!(f, "cannot start the forward sink's thread: {e}"),
            ForwardError::Curve => write!(
                f,
                "cannot secure the forward socket with CURVE: libsodium could not start (no \
                 random source)"
            ),
        }
    }
}

impl std::error::Error for ForwardError {}

/// One subscriber's state and counters (see [`ForwardSink::subscribers`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SubscriberStats {
    /// The peer's address (`ip:port`), or `ipc#` and a connection number on a Unix socket.
    pub peer: String,
    /// With CURVE, the name its key is admitted under (once its handshake is done).
    pub key_name: Option<String>,
    /// True once its handshake is done: from then on messages are queued for it.
    pub ready: bool,
    /// Distinct topic prefixes it subscribes to.
    pub subscriptions: usize,
    /// Messages written to its connection.
    pub sent: u64,
    /// Messages it did not get: its queue was at its limit, or it left before they were written.
    pub dropped: u64,
    /// Messages queued for it or being written to it.
    pub queued: u64,
    /// Bytes of frames queued for it or being written to it.
    pub held_bytes: u64,
}

/// Subscriber counters since the sink started (see [`ForwardSink::totals`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SubscriberTotals {
    /// Connections open now, including those still in their handshake.
    pub connected: usize,
    /// Connections accepted.
    pub accepted: u64,
    /// Connections closed at once because `max_subscribers` were open.
    pub refused: u64,
    /// Connections closed for a failed handshake or a protocol error.
    pub failed: u64,
    /// With CURVE, connections refused because the client proved a key the allowlist does not
    /// hold.
    pub refused_keys: u64,
    /// Connections refused because the peer offered another security mechanism than the
    /// sink's (NULL on a CURVE sink, CURVE on a plain one).
    pub refused_mechanism: u64,
    /// Messages written, summed over subscribers.
    pub sent: u64,
    /// Messages dropped for one subscriber, summed over subscribers.
    pub dropped: u64,
}

/// Re-publishes every valid message to live subscribers (Python notebooks, `ndbridge tail`,
/// any ZeroMQ SUB socket) as `[topic, header, buffers...]`, with the frames as received (no
/// re-encode, no copy), each subscriber with a queue of its own.
///
/// The sink is a PUB socket of its own: it speaks ZMTP 3.1 over TCP or Unix sockets, with the
/// NULL mechanism (what ZeroMQ sockets speak without CURVE, [`ForwardSink::listen`]) or as a
/// CURVE server ([`ForwardSink::listen_curve`]), and keeps one queue per subscriber, bounded in
/// bytes. libzmq's PUB socket bounds each subscriber's queue in
/// messages only, and a bound changed on open connections can stop a subscriber that reads
/// for good (its queue stays marked full once the new bound is under what it has read since
/// its last acknowledgement), so it cannot give this isolation.
///
/// - **Isolation.** A message goes to every subscriber whose subscriptions match its topic (by
///   prefix, as in ZeroMQ). A subscriber whose queue is at its limit loses that message alone,
///   counted as its `dropped`; the others get it. A subscriber that stops reading costs nobody
///   else a record.
/// - **Memory per subscriber.** A queue takes a message when it holds nothing, or when the
///   message fits within the limit ([`ForwardSink::subscriber_bytes`], 64 MiB by default), and
///   takes at most 1024 messages. So the frames a subscriber holds (queued, or being written
///   to its connection) never exceed `max(limit, largest message)`. What has been written to
///   the kernel's socket buffer is a copy and no longer held. With CURVE, a subscriber's writer
///   also holds the encrypted copy of what it is writing: at most its largest frame plus
///   256 KiB.
/// - **Memory in all.** Subscribers share frames, so the sink holds at most
///   `max_subscribers × max(limit, largest message)`: 1 GiB with the defaults and messages up
///   to 64 MiB. An optional total cap ([`ForwardSink::max_bytes`]) drops a message for every
///   subscriber when the total is at it; set below that product, it lets stalled subscribers
///   cost the others records.
/// - **Number of subscribers.** At most [`ForwardSink::max_subscribers`] (16) connections at
///   once, counting those still in their handshake; a connection beyond is closed at once and
///   counted (`refused`).
/// - **Hostile peers.** A peer is disconnected and counted (`failed`) when it has not completed
///   its handshake within 5 s, or when it speaks something other than ZMTP 3 as a SUB or XSUB
///   socket, sends a frame over 64 KiB, or holds more than 1024 subscriptions or 1 MiB of them;
///   with CURVE, also for a command that is cut, forged, replayed or does not open. A peer
///   offering another mechanism than the sink's is refused (`refused_mechanism`), and with
///   CURVE a client whose key the allowlist does not hold (`refused_keys`, logged with the key).
///   Heartbeats (PING) are answered, with at most one PONG pending per subscriber.
/// - **CURVE.** Every frame both ways after the handshake, subscriptions and heartbeats
///   included, travels in a MESSAGE box (RFC 26), so nothing of a record crosses the network
///   in clear, and no subscriber gets a record before its key has been checked.
///
/// Each subscriber has two threads: one writes its queue to its connection (a slow connection
/// blocks that thread alone), one reads its subscriptions and heartbeats. A third thread
/// accepts connections.
pub struct ForwardSink {
    endpoint: String,
    shared: Arc<Shared>,
    accept: Mutex<Option<JoinHandle<()>>>,
    /// The socket file of an `ipc://` endpoint, removed when the sink finishes.
    socket_file: Option<PathBuf>,
    /// The subscribers connected when the sink finished, with their last counters.
    at_finish: Mutex<Vec<SubscriberStats>>,
}

/// How subscribers must connect: fixed before the accept thread starts.
enum Security {
    /// The NULL mechanism: anyone who can reach the socket.
    Null,
    /// CURVE: clients whose long-term key the allowlist holds.
    Curve(CurveServer),
}

impl Security {
    fn mechanism(&self) -> Mechanism {
        match self {
            Security::Null => Mechanism::Null,
            Security::Curve(_) => Mechanism::Curve,
        }
    }
}

/// What the sink, its accept thread and its connection threads share.
struct Shared {
    security: Security,
    closed: AtomicBool,
    subscriber_bytes: AtomicU64,
    max_subscribers: AtomicUsize,
    /// Bytes of frames of messages held by any subscriber queue or connection; its cap is the
    /// total cap (`u64::MAX` for none).
    held: Arc<ByteBudget>,
    connections: Mutex<Vec<Arc<Subscriber>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    next_id: AtomicU64,
    forwarded: AtomicU64,
    dropped: AtomicU64,
    accepted: AtomicU64,
    refused: AtomicU64,
    failed: AtomicU64,
    refused_keys: AtomicU64,
    refused_mechanism: AtomicU64,
    /// Counters of subscribers that have left.
    departed_sent: AtomicU64,
    departed_dropped: AtomicU64,
    log: RateLimitedLog,
}

/// A message on its way to subscribers: its frames, shared by every queue that takes it, and
/// their bytes of the total cap, held until the last queue lets go of it.
struct Outgoing {
    frames: Vec<Bytes>,
    held: Permit<Arc<ByteBudget>>,
}

/// A message in one subscriber's queue, holding its bytes of that subscriber's limit until it
/// has been written (or dropped).
struct Queued {
    message: Arc<Outgoing>,
    _held: Permit<Arc<ByteBudget>>,
}

/// One connection: its queue, subscriptions and counters.
struct Subscriber {
    peer: String,
    /// A handle on the connection, to close it from another thread.
    stream: Stream,
    /// With CURVE, the name its key is admitted under, once known.
    key_name: Mutex<Option<String>>,
    /// `None` before the handshake is done and after the connection ends.
    queue: Mutex<Option<Sender<Queued>>>,
    subscriptions: Mutex<Subscriptions>,
    /// Bytes of frames queued for it or being written to it; its cap is the subscriber limit.
    held: Arc<ByteBudget>,
    queued: AtomicU64,
    sent: AtomicU64,
    dropped: AtomicU64,
    warned: AtomicBool,
}

impl Subscriber {
    fn stats(&self) -> SubscriberStats {
        SubscriberStats {
            peer: self.peer.clone(),
            key_name: self.key_name.lock().expect("key name lock").clone(),
            ready: self.queue.lock().expect("subscriber queue lock").is_some(),
            subscriptions: self.subscriptions.lock().expect("subscriptions lock").len(),
            sent: self.sent.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            queued: self.queued.load(Ordering::Relaxed),
            held_bytes: self.held.used(),
        }
    }

    /// Queues `message` if its topic matches and it fits within the subscriber's limit; counts
    /// a drop if the topic matches and it does not fit.
    fn offer(&self, topic: &[u8], message: &Arc<Outgoing>, log: &RateLimitedLog) {
        let queue = self.queue.lock().expect("subscriber queue lock");
        let Some(tx) = queue.as_ref() else {
            return;
        };
        if !self
            .subscriptions
            .lock()
            .expect("subscriptions lock")
            .matches(topic)
        {
            return;
        }
        if let Some(held) = Permit::try_acquire(Arc::clone(&self.held), message.held.bytes()) {
            self.queued.fetch_add(1, Ordering::Relaxed);
            let queued = Queued {
                message: Arc::clone(message),
                _held: held,
            };
            match tx.try_send(queued) {
                Ok(()) => return,
                // The message comes back with the error and gives its bytes back as it drops.
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                    self.queued.fetch_sub(1, Ordering::Relaxed);
                }
            }
        }
        self.dropped.fetch_add(1, Ordering::Relaxed);
        if !self.warned.swap(true, Ordering::Relaxed) {
            let limit = self.held.cap();
            log.warn(|| {
                format!(
                    "forward: subscriber {} reads slower than records arrive; records over its \
                     {limit} bytes of queue are dropped for it alone",
                    self.peer
                )
            });
        }
    }
}

/// A subscriber's topic prefixes, each with how many times it was subscribed.
#[derive(Debug, Default)]
struct Subscriptions {
    topics: Vec<(Vec<u8>, u32)>,
    bytes: usize,
}

impl Subscriptions {
    fn len(&self) -> usize {
        self.topics.len()
    }

    fn subscribe(&mut self, topic: &[u8]) -> Result<(), String> {
        if let Some((_, count)) = self.topics.iter_mut().find(|(t, _)| t == topic) {
            *count = count.saturating_add(1);
            return Ok(());
        }
        if self.topics.len() >= MAX_SUBSCRIPTIONS
            || self.bytes + topic.len() > MAX_SUBSCRIPTION_BYTES
        {
            return Err(format!(
                "expected at most {MAX_SUBSCRIPTIONS} subscriptions of \
                 {MAX_SUBSCRIPTION_BYTES} bytes in all, got one more ({} bytes) on top of {} \
                 ({} bytes)",
                topic.len(),
                self.topics.len(),
                self.bytes
            ));
        }
        self.bytes += topic.len();
        self.topics.push((topic.to_vec(), 1));
        Ok(())
    }

    fn cancel(&mut self, topic: &[u8]) {
        if let Some(i) = self.topics.iter().position(|(t, _)| t == topic) {
            self.topics[i].1 -= 1;
            if self.topics[i].1 == 0 {
                self.bytes -= topic.len();
                self.topics.swap_remove(i);
            }
        }
    }

    fn matches(&self, topic: &[u8]) -> bool {
        self.topics.iter().any(|(t, _)| topic.starts_with(t))
    }
}

/// A listening socket: TCP or Unix.
enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Listener {
    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Listener::Tcp(l) => l.as_fd(),
            Listener::Unix(l) => l.as_fd(),
        }
    }

    /// The next connection and a name for its peer.
    fn accept(&self, id: u64) -> io::Result<(Stream, String)> {
        match self {
            Listener::Tcp(l) => {
                let (stream, peer) = l.accept()?;
                stream.set_nonblocking(false)?;
                stream.set_nodelay(true)?;
                Ok((Stream::Tcp(stream), peer.to_string()))
            }
            Listener::Unix(l) => {
                let (stream, _) = l.accept()?;
                stream.set_nonblocking(false)?;
                Ok((Stream::Unix(stream), format!("ipc#{id}")))
            }
        }
    }
}

/// A connection to a subscriber: TCP or Unix.
enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn try_clone(&self) -> io::Result<Stream> {
        Ok(match self {
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
        })
    }

    /// Ends the connection both ways: blocked reads and writes on it return.
    fn close(&self) {
        let _ = match self {
            Stream::Tcp(s) => s.shutdown(std::net::Shutdown::Both),
            Stream::Unix(s) => s.shutdown(std::net::Shutdown::Both),
        };
    }

    fn set_timeouts(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => {
                s.set_read_timeout(timeout)?;
                s.set_write_timeout(timeout)
            }
            Stream::Unix(s) => {
                s.set_read_timeout(timeout)?;
                s.set_write_timeout(timeout)
            }
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write_vectored(bufs),
            Stream::Unix(s) => s.write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Where the sink listens, parsed from a ZeroMQ-style address.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Address {
    Tcp(SocketAddr),
    Ipc(PathBuf),
}

fn parse_address(address: &str) -> Result<Address, ForwardError> {
    let invalid = || ForwardError::Address {
        address: address.to_owned(),
    };
    if let Some(path) = address.strip_prefix("ipc://") {
        if path.is_empty() || path == "*" {
            return Err(invalid());
        }
        return Ok(Address::Ipc(PathBuf::from(path)));
    }
    let rest = address.strip_prefix("tcp://").ok_or_else(invalid)?;
    let (host, port) = rest.rsplit_once(':').ok_or_else(invalid)?;
    let port: u16 = match port {
        "*" => 0,
        p => p.parse().map_err(|_| invalid())?,
    };
    let host = match host {
        "*" => "0.0.0.0",
        h => h
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(h),
    };
    if host.is_empty() {
        return Err(invalid());
    }
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(Address::Tcp(SocketAddr::new(ip, port)));
    }
    let resolved = (host, port)
        .to_socket_addrs()
        .map_err(|source| ForwardError::Listen {
            address: address.to_owned(),
            source,
        })?;
    let mut resolved: Vec<SocketAddr> = resolved.collect();
    // As ZeroMQ: an IPv4 address when the name has one.
    resolved.sort_by_key(|a| a.is_ipv6());
    resolved
        .first()
        .copied()
        .map(Address::Tcp)
        .ok_or_else(invalid)
}

impl ForwardSink {
    /// Bytes of frames queued for one subscriber by default (see [`ForwardSink::subscriber_bytes`]).
    pub const DEFAULT_SUBSCRIBER_BYTES: u64 = 64 << 20;

    /// Subscribers connected at once by default (see [`ForwardSink::max_subscribers`]).
    pub const DEFAULT_MAX_SUBSCRIBERS: usize = 16;

    /// Listens at `address` (`tcp://127.0.0.1:*` picks a port, see [`ForwardSink::endpoint`];
    /// `tcp://*:5556` listens on every interface; `ipc:///path` on a Unix socket, replacing a
    /// socket file left there).
    pub fn listen(address: &str) -> Result<ForwardSink, ForwardError> {
        ForwardSink::start(address, Security::Null)
    }

    /// Listens at `address` as [`ForwardSink::listen`] does, as a CURVE server with the key
    /// pair `own`: subscribers must know `own`'s public key, and only those whose own public
    /// key `allow` holds get in. Every frame both ways is encrypted. A peer without CURVE, or
    /// with a key not in `allow`, is refused, counted (`refused_mechanism`, `refused_keys` in
    /// [`ForwardSink::totals`] and the report) and logged.
    ///
    /// A subscriber connects with [`SubscriberBuilder::curve`](crate::SubscriberBuilder::curve)
    /// or any ZeroMQ SUB socket with the CURVE client options (pyzmq: `curve_serverkey`,
    /// `curve_publickey`, `curve_secretkey`).
    pub fn listen_curve(
        address: &str,
        own: KeyPair,
        allow: Arc<Allowlist>,
    ) -> Result<ForwardSink, ForwardError> {
        let server = CurveServer::new(&own, allow).map_err(|_| ForwardError::Curve)?;
        ForwardSink::start(address, Security::Curve(server))
    }

    /// Listens with `security`, fixed before the first connection is accepted.
    fn start(address: &str, security: Security) -> Result<ForwardSink, ForwardError> {
        let (listener, endpoint, socket_file) = open_listener(address)?;
        let shared = Arc::new(Shared {
            security,
            closed: AtomicBool::new(false),
            subscriber_bytes: AtomicU64::new(ForwardSink::DEFAULT_SUBSCRIBER_BYTES),
            max_subscribers: AtomicUsize::new(ForwardSink::DEFAULT_MAX_SUBSCRIBERS),
            held: Arc::new(ByteBudget::new(u64::MAX, Wake::EveryRelease)),
            connections: Mutex::new(Vec::new()),
            threads: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(0),
            forwarded: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            refused_keys: AtomicU64::new(0),
            refused_mechanism: AtomicU64::new(0),
            departed_sent: AtomicU64::new(0),
            departed_dropped: AtomicU64::new(0),
            log: RateLimitedLog::new(),
        });
        let accept_shared = Arc::clone(&shared);
        let accept = std::thread::Builder::new()
            .name("ndbridge-forward".into())
            .spawn(move || accept_loop(&listener, &accept_shared))
            .map_err(ForwardError::Thread)?;
        Ok(ForwardSink {
            endpoint,
            shared,
            accept: Mutex::new(Some(accept)),
            socket_file,
            at_finish: Mutex::new(Vec::new()),
        })
    }

    /// Sets the most bytes of frames queued for one subscriber (64 MiB by default). A message
    /// that would take a subscriber over it is dropped for that subscriber alone and counted
    /// there; a larger message is queued only when nothing else is.
    pub fn subscriber_bytes(self, bytes: u64) -> Self {
        let shared = &self.shared;
        let connections = shared.connections.lock().expect("connections lock");
        shared.subscriber_bytes.store(bytes, Ordering::Relaxed);
        for subscriber in connections.iter() {
            subscriber.held.set_cap(bytes);
        }
        drop(connections);
        self
    }

    /// Sets the most connections open at once (16 by default); a connection beyond is closed
    /// as soon as it is accepted, and counted as `refused`.
    pub fn max_subscribers(self, subscribers: usize) -> Self {
        self.shared
            .max_subscribers
            .store(subscribers, Ordering::Relaxed);
        self
    }

    /// Caps the bytes of frames held for all subscribers together (no cap by default: the
    /// per-subscriber limit and the number of subscribers bound them). A message that would go
    /// over it is dropped for every subscriber and counted as `dropped`; one larger than the
    /// cap goes out only when nothing else is held. A cap below `max_subscribers` times the
    /// per-subscriber limit lets stalled subscribers cost the others records.
    pub fn max_bytes(self, bytes: u64) -> Self {
        self.shared.held.set_cap(bytes);
        self
    }

    /// The address listened on, with the port resolved (`tcp://127.0.0.1:40123`).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Drives the CURVE server with arbitrary bytes, for the fuzz target `zmtp_curve`;
    /// panics when it accepts what it must refuse or refuses what it must accept.
    #[doc(hidden)]
    pub fn fuzz_curve(input: &[u8]) {
        curve::fuzz(input);
    }

    /// With CURVE, the sink's public key: what subscribers must know to connect.
    pub fn public_key(&self) -> Option<PublicKey> {
        match &self.shared.security {
            Security::Null => None,
            Security::Curve(server) => Some(server.public()),
        }
    }

    /// Bytes of frames held now for all subscribers (each frame once, however many
    /// subscribers it is queued for).
    pub fn held_bytes(&self) -> u64 {
        self.shared.held.used()
    }

    /// Messages dropped for every subscriber: the total cap ([`ForwardSink::max_bytes`]) was
    /// reached. Drops for one subscriber are in [`ForwardSink::subscribers`] and
    /// [`ForwardSink::totals`].
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// The connections open now, in the order they were accepted; once the sink has finished,
    /// those that were open then, with their last counters.
    pub fn subscribers(&self) -> Vec<SubscriberStats> {
        if self.shared.closed.load(Ordering::Relaxed) {
            let at_finish = self.at_finish.lock().expect("finish lock");
            if !at_finish.is_empty() {
                return at_finish.clone();
            }
        }
        self.shared
            .connections
            .lock()
            .expect("connections lock")
            .iter()
            .map(|s| s.stats())
            .collect()
    }

    /// Counters over every subscriber since the sink started, those gone included.
    pub fn totals(&self) -> SubscriberTotals {
        let connections = self.shared.connections.lock().expect("connections lock");
        let (mut sent, mut dropped) = (
            self.shared.departed_sent.load(Ordering::Relaxed),
            self.shared.departed_dropped.load(Ordering::Relaxed),
        );
        for s in connections.iter() {
            sent += s.sent.load(Ordering::Relaxed);
            dropped += s.dropped.load(Ordering::Relaxed);
        }
        SubscriberTotals {
            connected: connections.len(),
            accepted: self.shared.accepted.load(Ordering::Relaxed),
            refused: self.shared.refused.load(Ordering::Relaxed),
            failed: self.shared.failed.load(Ordering::Relaxed),
            refused_keys: self.shared.refused_keys.load(Ordering::Relaxed),
            refused_mechanism: self.shared.refused_mechanism.load(Ordering::Relaxed),
            sent,
            dropped,
        }
    }
}

impl Shared {
    /// Removes a connection that has ended, keeping its counters in the totals.
    fn remove(&self, subscriber: &Arc<Subscriber>) {
        let mut connections = self.connections.lock().expect("connections lock");
        connections.retain(|s| !Arc::ptr_eq(s, subscriber));
        self.departed_sent
            .fetch_add(subscriber.sent.load(Ordering::Relaxed), Ordering::Relaxed);
        self.departed_dropped.fetch_add(
            subscriber.dropped.load(Ordering::Relaxed),
            Ordering::Relaxed,
        );
    }

    /// Joins the connection threads that have ended.
    fn reap(&self) {
        let mut threads = self.threads.lock().expect("threads lock");
        let (done, running): (Vec<_>, Vec<_>) = threads.drain(..).partition(|t| t.is_finished());
        *threads = running;
        drop(threads);
        for thread in done {
            let _ = thread.join();
        }
    }
}

fn accept_loop(listener: &Listener, shared: &Arc<Shared>) {
    let poll = rustix::event::Timespec {
        tv_sec: 0,
        tv_nsec: ACCEPT_POLL.as_nanos() as _,
    };
    while !shared.closed.load(Ordering::Relaxed) {
        shared.reap();
        let mut fds = [rustix::event::PollFd::from_borrowed_fd(
            listener.fd(),
            rustix::event::PollFlags::IN,
        )];
        match rustix::event::poll(&mut fds, Some(&poll)) {
            Ok(0) | Err(rustix::io::Errno::INTR) => continue,
            Ok(_) => {}
            Err(e) => {
                shared
                    .log
                    .warn(|| format!("forward: cannot wait for subscribers: {e}"));
                std::thread::sleep(ACCEPT_POLL);
                continue;
            }
        }
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        match listener.accept(id) {
            Ok((stream, peer)) => admit(shared, stream, peer),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => {
                // Out of file descriptors, say: the connection waits in the backlog.
                shared
                    .log
                    .warn(|| format!("forward: cannot accept a subscriber: {e}"));
                std::thread::sleep(ACCEPT_POLL);
            }
        }
    }
}

impl Shared {
    /// Counts `subscriber` among the connections, with the current per-subscriber limit; false
    /// (counted as refused and logged) when `max_subscribers` are connected already.
    fn add_connection(&self, subscriber: &Arc<Subscriber>) -> bool {
        let mut connections = self.connections.lock().expect("connections lock");
        let max = self.max_subscribers.load(Ordering::Relaxed);
        if connections.len() >= max {
            drop(connections);
            self.refused.fetch_add(1, Ordering::Relaxed);
            self.log.warn(|| {
                format!(
                    "forward: subscriber {} refused: {} connected already",
                    subscriber.peer,
                    plural(max as u64, "subscriber")
                )
            });
            return false;
        }
        // Under the lock [`ForwardSink::subscriber_bytes`] changes the limit of every connection.
        let limit = self.subscriber_bytes.load(Ordering::Relaxed);
        subscriber.held.set_cap(limit);
        connections.push(Arc::clone(subscriber));
        true
    }
}

/// Binds `address` without blocking accepts: the listener, the endpoint it is reachable at,
/// and the socket file to remove at the end (ipc).
fn open_listener(address: &str) -> Result<(Listener, String, Option<PathBuf>), ForwardError> {
    let listen_error = |source| ForwardError::Listen {
        address: address.to_owned(),
        source,
    };
    let (listener, endpoint, socket_file) = match parse_address(address)? {
        Address::Tcp(addr) => {
            let listener = TcpListener::bind(addr).map_err(listen_error)?;
            let local = listener.local_addr().map_err(listen_error)?;
            (Listener::Tcp(listener), format!("tcp://{local}"), None)
        }
        Address::Ipc(path) => {
            if let Ok(meta) = std::fs::symlink_metadata(&path) {
                if !meta.file_type().is_socket() {
                    return Err(listen_error(io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        format!(
                            "expected no file or a socket at {}, found another kind of file",
                            path.display()
                        ),
                    )));
                }
                std::fs::remove_file(&path).map_err(listen_error)?;
            }
            let listener = UnixListener::bind(&path).map_err(listen_error)?;
            let endpoint = format!("ipc://{}", path.display());
            (Listener::Unix(listener), endpoint, Some(path))
        }
    };
    match &listener {
        Listener::Tcp(l) => l.set_nonblocking(true),
        Listener::Unix(l) => l.set_nonblocking(true),
    }
    .map_err(listen_error)?;
    Ok((listener, endpoint, socket_file))
}

/// Serves a new connection on threads of its own, or refuses it when `max_subscribers` are open.
fn admit(shared: &Arc<Shared>, stream: Stream, peer: String) {
    let handle = match stream.try_clone() {
        Ok(handle) => handle,
        Err(e) => {
            shared
                .log
                .warn(|| format!("forward: subscriber {peer}: cannot use the connection: {e}"));
            return;
        }
    };
    let subscriber = Arc::new(Subscriber {
        peer,
        stream: handle,
        key_name: Mutex::new(None),
        queue: Mutex::new(None),
        subscriptions: Mutex::new(Subscriptions::default()),
        held: Arc::new(ByteBudget::new(
            shared.subscriber_bytes.load(Ordering::Relaxed),
            Wake::EveryRelease,
        )),
        queued: AtomicU64::new(0),
        sent: AtomicU64::new(0),
        dropped: AtomicU64::new(0),
        warned: AtomicBool::new(false),
    });
    if !shared.add_connection(&subscriber) {
        subscriber.stream.close();
        return;
    }
    shared.accepted.fetch_add(1, Ordering::Relaxed);
    tracing::debug!("forward: subscriber {} connected", subscriber.peer);
    let thread_shared = Arc::clone(shared);
    let thread_subscriber = Arc::clone(&subscriber);
    let spawned = std::thread::Builder::new()
        .name("ndbridge-fwd-out".into())
        .spawn(move || serve(&thread_shared, &thread_subscriber, stream));
    match spawned {
        Ok(thread) => shared.threads.lock().expect("threads lock").push(thread),
        Err(e) => {
            shared.log.warn(|| {
                format!(
                    "forward: subscriber {}: cannot start its thread: {e}",
                    subscriber.peer
                )
            });
            subscriber.stream.close();
            shared.remove(&subscriber);
        }
    }
}

/// How a connection ended.
#[derive(Debug)]
enum End {
    /// The peer closed it, the sink finished, or the connection broke.
    Closed,
    /// The peer broke the protocol or did not complete its handshake.
    Failed(String),
    /// The peer offered another security mechanism than the sink's.
    Mechanism(String),
    /// The CURVE client proved a key the allowlist does not hold.
    Unlisted(PublicKey),
}

/// What a connection's frames go through once its handshake is done.
enum Link {
    /// As they are (NULL).
    Plain,
    /// In CURVE MESSAGE boxes, from a client admitted under `name`.
    Curve {
        name: String,
        sealer: Sealer,
        opener: Opener,
    },
}

/// Runs a connection to its end: handshake, then the writer here and the reader on a thread.
fn serve(shared: &Arc<Shared>, subscriber: &Arc<Subscriber>, stream: Stream) {
    let end = run(shared, subscriber, stream);
    subscriber.stream.close();
    match end {
        End::Closed => tracing::debug!(
            "forward: subscriber {} left: {} sent, {} dropped",
            subscriber.peer,
            plural(subscriber.sent.load(Ordering::Relaxed), "message"),
            subscriber.dropped.load(Ordering::Relaxed)
        ),
        End::Failed(why) => {
            shared.failed.fetch_add(1, Ordering::Relaxed);
            shared.log.warn(|| {
                format!(
                    "forward: subscriber {} disconnected: {why}",
                    subscriber.peer
                )
            });
        }
        End::Mechanism(why) => {
            shared.refused_mechanism.fetch_add(1, Ordering::Relaxed);
            shared
                .log
                .warn(|| format!("forward: subscriber {} refused: {why}", subscriber.peer));
        }
        End::Unlisted(key) => {
            shared.refused_keys.fetch_add(1, Ordering::Relaxed);
            shared.log.warn(|| {
                format!(
                    "forward: subscriber {} refused: its CURVE key {key} is not in the allowlist",
                    subscriber.peer
                )
            });
        }
    }
    shared.remove(subscriber);
}

fn run(shared: &Shared, subscriber: &Arc<Subscriber>, mut stream: Stream) -> End {
    let mut reader = match stream.try_clone() {
        Ok(s) => BufReader::new(s),
        Err(_) => return End::Closed,
    };
    let started = Instant::now();
    let link = match handshake(&shared.security, &mut stream, &mut reader) {
        Ok(link) => link,
        Err(End::Closed) if started.elapsed() >= HANDSHAKE_TIMEOUT => {
            return End::Failed(format!(
                "expected a ZMTP handshake within {HANDSHAKE_TIMEOUT:?}"
            ))
        }
        Err(end) => return end,
    };
    let (sealer, opener) = match link {
        Link::Plain => (None, None),
        Link::Curve {
            name,
            sealer,
            opener,
        } => {
            tracing::debug!("forward: subscriber {} is {name:?}", subscriber.peer);
            *subscriber.key_name.lock().expect("key name lock") = Some(name);
            (Some(sealer), Some(opener))
        }
    };
    if stream.set_timeouts(None).is_err() {
        return End::Closed;
    }
    let (tx, rx) = crossbeam_channel::bounded(QUEUE_MESSAGES);
    let (pong_tx, pong_rx) = crossbeam_channel::bounded(1);
    let reader_subscriber = Arc::clone(subscriber);
    let reader = std::thread::Builder::new()
        .name("ndbridge-fwd-in".into())
        .spawn(move || read_loop(&mut reader, opener, &reader_subscriber, &pong_tx));
    let Ok(reader) = reader else {
        return End::Closed;
    };
    *subscriber.queue.lock().expect("subscriber queue lock") = Some(tx);
    write_loop(&mut stream, sealer, subscriber, &rx, &pong_rx);
    subscriber
        .queue
        .lock()
        .expect("subscriber queue lock")
        .take();
    // What is still queued will not be written: dropped for this subscriber.
    for _queued in rx.try_iter() {
        subscriber.dropped.fetch_add(1, Ordering::Relaxed);
        subscriber.queued.fetch_sub(1, Ordering::Relaxed);
    }
    subscriber.stream.close();
    reader.join().unwrap_or(End::Closed)
}

/// Greetings both ways, then the mechanism's handshake; the peer must be a SUB or XSUB socket
/// with the sink's mechanism.
fn handshake(
    security: &Security,
    stream: &mut Stream,
    reader: &mut BufReader<Stream>,
) -> Result<Link, End> {
    let io = |_| End::Closed;
    stream.set_timeouts(Some(HANDSHAKE_TIMEOUT)).map_err(io)?;
    let reader = &mut Deadline {
        reader,
        until: Instant::now() + HANDSHAKE_TIMEOUT,
    };
    let mechanism = security.mechanism();
    // As libzmq does: the signature and major version first, the rest once the peer's whole
    // greeting is in. A ZeroMQ peer sends its mechanism on seeing our major version, and
    // closes without sending it when it sees a mechanism it does not speak first.
    let ours = zmtp::greeting(mechanism);
    let (first, rest) = ours.split_at(zmtp::GREETING_FIRST_LEN);
    stream.write_all(first).map_err(io)?;
    let mut greeting = [0u8; zmtp::GREETING_LEN];
    reader.read_exact(&mut greeting).map_err(io)?;
    zmtp::check_greeting(&greeting, mechanism).map_err(|e| match e {
        GreetingError::Malformed(why) => End::Failed(why),
        GreetingError::Mechanism(why) => End::Mechanism(why),
    })?;
    stream.write_all(rest).map_err(io)?;
    match security {
        Security::Null => {
            stream.write_all(&zmtp::ready_frame()).map_err(io)?;
            let ready = read_command(reader, "READY")?;
            zmtp::check_ready(&ready).map_err(End::Failed)?;
            Ok(Link::Plain)
        }
        Security::Curve(server) => curve_handshake(server, stream, reader),
    }
}

/// CURVE's HELLO, WELCOME, INITIATE and READY; a client with a key the allowlist does not hold
/// gets an ERROR.
fn curve_handshake(
    server: &CurveServer,
    stream: &mut Stream,
    reader: &mut Deadline<'_>,
) -> Result<Link, End> {
    let io = |_| End::Closed;
    let refused = |refusal| match refusal {
        Refusal::Failed(why) => End::Failed(why),
        Refusal::Unlisted(key) => End::Unlisted(key),
    };
    let mut handshake = curve::Handshake::new(server);
    let hello = read_command(reader, "HELLO")?;
    let welcome = handshake.hello(&hello).map_err(refused)?;
    stream
        .write_all(&zmtp::command_frame(&welcome))
        .map_err(io)?;
    let initiate = read_command(reader, "INITIATE")?;
    match handshake.initiate(&initiate) {
        Ok(admitted) => {
            stream
                .write_all(&zmtp::command_frame(&admitted.ready))
                .map_err(io)?;
            Ok(Link::Curve {
                name: admitted.name,
                sealer: admitted.sealer,
                opener: admitted.opener,
            })
        }
        Err(refusal) => {
            if matches!(refusal, Refusal::Unlisted(_)) {
                // As a ZeroMQ server whose authenticator refuses a key: status 400.
                let _ = stream.write_all(&zmtp::error_frame("400"));
            }
            Err(refused(refusal))
        }
    }
}

/// The handshake's reads, each waiting only for what is left of the time the whole handshake
/// has. A socket timeout alone bounds one read: a peer sending a byte every few seconds would
/// hold its connection, one of `max_subscribers`, for as long as it liked without ever proving
/// a key.
struct Deadline<'a> {
    reader: &'a mut BufReader<Stream>,
    until: Instant,
}

impl Read for Deadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        // The socket's timeouts are the connection's (the writer's too): what is written
        // during the handshake cannot outlast it either.
        self.reader.get_ref().set_timeouts(Some(left))?;
        self.reader.read(buf)
    }
}

/// Reads a command frame of the handshake (`what` names it in the error).
fn read_command(reader: &mut Deadline<'_>, what: &str) -> Result<Vec<u8>, End> {
    let frame = zmtp::read_frame(reader)?;
    if !frame.command {
        return Err(End::Failed(format!(
            "expected the {what} command, found a message"
        )));
    }
    Ok(frame.body)
}

/// The next frame from the peer; with CURVE, the frame its MESSAGE box carries.
fn next_frame(
    reader: &mut BufReader<Stream>,
    opener: &mut Option<Opener>,
) -> Result<zmtp::Frame, End> {
    let frame = zmtp::read_frame(reader)?;
    let Some(opener) = opener else {
        return Ok(frame);
    };
    let (flags, body) = opener.open(&frame.body).map_err(End::Failed)?;
    Ok(zmtp::Frame {
        command: flags & curve::MESSAGE_COMMAND != 0,
        more: flags & curve::MESSAGE_MORE != 0,
        body,
    })
}

/// Reads subscriptions and heartbeats until the connection ends.
fn read_loop(
    reader: &mut BufReader<Stream>,
    mut opener: Option<Opener>,
    subscriber: &Subscriber,
    pongs: &Sender<Vec<u8>>,
) -> End {
    let mut in_message = false;
    loop {
        let frame = match next_frame(reader, &mut opener) {
            Ok(frame) => frame,
            Err(end) => return end,
        };
        let change = if frame.command {
            match zmtp::command(&frame.body) {
                Some((b"SUBSCRIBE", topic)) => Some((true, topic)),
                Some((b"CANCEL", topic)) => Some((false, topic)),
                Some((b"PING", data)) => {
                    // A PONG already pending answers this PING as well.
                    let context = data.get(2..).unwrap_or_default();
                    let _ = pongs.try_send(context[..context.len().min(16)].to_vec());
                    None
                }
                Some((b"ERROR", reason)) => {
                    return End::Failed(format!(
                        "the subscriber reported an error: {}",
                        String::from_utf8_lossy(reason.get(1..).unwrap_or_default())
                    ))
                }
                Some(_) => None,
                None => return End::Failed("expected a command name, found none".into()),
            }
        } else {
            // ZMTP 3.0: the first frame of a message, 1 or 0 then the topic.
            let first = !in_message;
            in_message = frame.more;
            match frame.body.split_first() {
                Some((1, topic)) if first => Some((true, topic)),
                Some((0, topic)) if first => Some((false, topic)),
                _ => None,
            }
        };
        if let Some((subscribe, topic)) = change {
            let mut subscriptions = subscriber.subscriptions.lock().expect("subscriptions lock");
            if subscribe {
                if let Err(why) = subscriptions.subscribe(topic) {
                    return End::Failed(why);
                }
            } else {
                subscriptions.cancel(topic);
            }
        }
    }
}

/// Writes queued messages and PONGs (with CURVE, sealed by `sealer`) until the queue is closed
/// and empty, the reader has ended, or the connection breaks.
fn write_loop(
    stream: &mut Stream,
    mut sealer: Option<Sealer>,
    subscriber: &Subscriber,
    rx: &Receiver<Queued>,
    pongs: &Receiver<Vec<u8>>,
) {
    let mut batch: Vec<Queued> = Vec::with_capacity(BATCH_MESSAGES);
    let mut sealed = Vec::new();
    loop {
        crossbeam_channel::select! {
            recv(rx) -> message => {
                let Ok(message) = message else {
                    return;
                };
                batch.push(message);
                while batch.len() < BATCH_MESSAGES {
                    match rx.try_recv() {
                        Ok(message) => batch.push(message),
                        Err(_) => break,
                    }
                }
                let messages = batch.iter().map(|q| &q.message.frames[..]);
                let written = match sealer.as_mut() {
                    None => zmtp::write_messages(stream, messages),
                    Some(sealer) => write_sealed(stream, sealer, &mut sealed, messages),
                };
                // Each message gives its bytes back as it leaves the batch.
                for _written in batch.drain(..) {
                    let counter = if written.is_ok() {
                        &subscriber.sent
                    } else {
                        &subscriber.dropped
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    subscriber.queued.fetch_sub(1, Ordering::Relaxed);
                }
                if written.is_err() {
                    return;
                }
            }
            recv(pongs) -> context => {
                let Ok(context) = context else {
                    // The reader has ended: the peer is gone or broke the protocol.
                    return;
                };
                let pong = match sealer.as_mut() {
                    None => zmtp::pong_frame(&context),
                    Some(sealer) => {
                        let mut frame = Vec::new();
                        let body = zmtp::pong_body(&context);
                        if sealer.seal_frame(curve::MESSAGE_COMMAND, &body, &mut frame).is_err() {
                            return;
                        }
                        frame
                    }
                };
                if stream.write_all(&pong).is_err() {
                    return;
                }
            }
        }
    }
}

/// Writes whole messages, each frame sealed in a MESSAGE box, gathering up to
/// `SEALED_BATCH_BYTES` in `buf` per system call.
fn write_sealed<'a>(
    stream: &mut Stream,
    sealer: &mut Sealer,
    buf: &mut Vec<u8>,
    messages: impl Iterator<Item = &'a [Bytes]>,
) -> io::Result<()> {
    buf.clear();
    for frames in messages {
        for (i, frame) in frames.iter().enumerate() {
            let flags = if i + 1 < frames.len() {
                curve::MESSAGE_MORE
            } else {
                0
            };
            sealer
                .seal_frame(flags, frame, buf)
                .map_err(|_| io::Error::other("the connection's CURVE nonces are used up"))?;
            if buf.len() >= SEALED_BATCH_BYTES {
                stream.write_all(buf)?;
                buf.clear();
            }
        }
    }
    if !buf.is_empty() {
        stream.write_all(buf)?;
        buf.clear();
    }
    // A large frame leaves a large buffer: give it back rather than hold it while idle.
    if buf.capacity() > 4 * SEALED_BATCH_BYTES {
        *buf = Vec::new();
    }
    Ok(())
}

impl Sink for ForwardSink {
    fn name(&self) -> &str {
        "forward"
    }

    fn write(&self, message: &Received) -> Result<(), SinkError> {
        let shared = &self.shared;
        if shared.closed.load(Ordering::Relaxed) {
            return Err(SinkError::Dropped("forward sink is closed"));
        }
        let topic = Bytes::from(message.record.header.name.clone().into_bytes());
        let size = topic.len() as u64 + message.frames.iter().map(|f| f.len() as u64).sum::<u64>();
        let Some(held) = Permit::try_acquire(Arc::clone(&shared.held), size) else {
            shared.dropped.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        };
        let mut frames = Vec::with_capacity(message.frames.len() + 1);
        frames.push(topic);
        frames.extend(message.frames.iter().cloned());
        let outgoing = Arc::new(Outgoing { frames, held });
        let name = message.record.header.name.as_bytes();
        for subscriber in shared.connections.lock().expect("connections lock").iter() {
            subscriber.offer(name, &outgoing, &shared.log);
        }
        shared.forwarded.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn finish(&self) -> Result<(), SinkError> {
        let shared = &self.shared;
        if shared.closed.swap(true, Ordering::Relaxed) {
            return Ok(());
        }
        if let Some(accept) = self.accept.lock().expect("accept thread lock").take() {
            let _ = accept.join();
        }
        // No more messages; each writer writes what is queued, then ends.
        let connections = shared.connections.lock().expect("connections lock").clone();
        for subscriber in &connections {
            subscriber
                .queue
                .lock()
                .expect("subscriber queue lock")
                .take();
        }
        let deadline = Instant::now() + LINGER;
        while Instant::now() < deadline
            && shared
                .threads
                .lock()
                .expect("threads lock")
                .iter()
                .any(|t| !t.is_finished())
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        for subscriber in &connections {
            subscriber.stream.close();
        }
        let threads = std::mem::take(&mut *shared.threads.lock().expect("threads lock"));
        for thread in threads {
            let _ = thread.join();
        }
        *self.at_finish.lock().expect("finish lock") =
            connections.iter().map(|s| s.stats()).collect();
        if let Some(path) = &self.socket_file {
            if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
                let _ = std::fs::remove_file(path);
            }
        }
        let totals = self.totals();
        if totals.dropped > 0 || totals.refused > 0 || totals.failed > 0 {
            tracing::info!(
                "forward: {} dropped for slow subscribers, {} refused, {} disconnected for \
                 protocol errors",
                plural(totals.dropped, "message"),
                plural(totals.refused, "subscriber"),
                totals.failed
            );
        }
        if totals.refused_keys > 0 || totals.refused_mechanism > 0 {
            tracing::info!(
                "forward: {} refused for keys not in the allowlist, {} for another security \
                 mechanism",
                plural(totals.refused_keys, "subscriber"),
                totals.refused_mechanism
            );
        }
        Ok(())
    }

    fn report(&self) -> serde_json::Map<String, serde_json::Value> {
        let shared = &self.shared;
        let max_bytes = shared.held.cap();
        let mut m = serde_json::Map::new();
        m.insert("endpoint".into(), json!(self.endpoint));
        m.insert(
            "mechanism".into(),
            json!(shared.security.mechanism().name()),
        );
        m.insert(
            "public_key".into(),
            json!(self.public_key().map(|k| k.to_z85())),
        );
        m.insert(
            "forwarded".into(),
            json!(shared.forwarded.load(Ordering::Relaxed)),
        );
        m.insert("dropped".into(), json!(self.dropped()));
        m.insert("held_bytes".into(), json!(self.held_bytes()));
        m.insert(
            "max_bytes".into(),
            if max_bytes == u64::MAX {
                serde_json::Value::Null
            } else {
                json!(max_bytes)
            },
        );
        m.insert(
            "subscriber_max_bytes".into(),
            json!(shared.subscriber_bytes.load(Ordering::Relaxed)),
        );
        m.insert(
            "max_subscribers".into(),
            json!(shared.max_subscribers.load(Ordering::Relaxed)),
        );
        m.insert("subscribers".into(), json!(self.totals()));
        m.insert("per_subscriber".into(), json!(self.subscribers()));
        m
    }
}

impl Drop for ForwardSink {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_like_zeromq_endpoints() {
        let tcp = |s: &str| Address::Tcp(s.parse().unwrap());
        assert_eq!(
            parse_address("tcp://127.0.0.1:*").unwrap(),
            tcp("127.0.0.1:0")
        );
        assert_eq!(parse_address("tcp://*:5556").unwrap(), tcp("0.0.0.0:5556"));
        assert_eq!(parse_address("tcp://[::1]:7").unwrap(), tcp("[::1]:7"));
        assert_eq!(
            parse_address("tcp://localhost:9").unwrap(),
            tcp("127.0.0.1:9")
        );
        assert_eq!(
            parse_address("ipc:///tmp/x.sock").unwrap(),
            Address::Ipc("/tmp/x.sock".into())
        );
        for bad in [
            "inproc://x",
            "tcp://127.0.0.1",
            "tcp://:5",
            "tcp://h:port",
            "ipc://",
        ] {
            let err = parse_address(bad).unwrap_err();
            assert!(
                err.to_string().contains("expected tcp://HOST:PORT"),
                "{bad}: {err}"
            );
            assert!(!err.to_string().contains("did you mean"), "{bad}: {err}");
        }
        let err = parse_address("127.0.0.1:5556").unwrap_err().to_string();
        assert!(
            err.ends_with("or ipc://PATH: did you mean tcp://127.0.0.1:5556?"),
            "{err}"
        );
    }

    #[test]
    fn greetings_other_than_zmtp3_with_our_mechanism_are_refused_with_what_came() {
        let (null, curve) = (Mechanism::Null, Mechanism::Curve);
        assert!(zmtp::check_greeting(&zmtp::greeting(null), null).is_ok());
        assert!(zmtp::check_greeting(&zmtp::greeting(curve), curve).is_ok());
        let mut old = zmtp::greeting(null);
        old[10] = 2;
        assert!(matches!(
            zmtp::check_greeting(&old, null),
            Err(GreetingError::Malformed(why)) if why.contains("found version 2")
        ));
        assert_eq!(
            zmtp::check_greeting(&zmtp::greeting(curve), null),
            Err(GreetingError::Mechanism(
                "expected the NULL security mechanism, found \"CURVE\"".into()
            ))
        );
        assert_eq!(
            zmtp::check_greeting(&zmtp::greeting(null), curve),
            Err(GreetingError::Mechanism(
                "expected the CURVE security mechanism, found \"NULL\"".into()
            ))
        );
        let mut longer = zmtp::greeting(curve);
        longer[17] = b'X';
        assert!(matches!(
            zmtp::check_greeting(&longer, curve),
            Err(GreetingError::Mechanism(why)) if why.contains("found \"CURVEX\"")
        ));
        // As server with CURVE, as libzmq's CURVE server says (byte 32).
        assert_eq!(
            (zmtp::greeting(null)[32], zmtp::greeting(curve)[32]),
            (0, 1)
        );
        let http = *b"GET / HTTP/1.1\r\nHost: x\r\n\r\n.....................................";
        assert!(matches!(
            zmtp::check_greeting(&http, null),
            Err(GreetingError::Malformed(why)) if why.starts_with("expected a ZMTP greeting")
        ));
    }

    fn ready(socket_type: &[u8]) -> Vec<u8> {
        let mut body = b"\x05READY\x0bSocket-Type".to_vec();
        body.extend_from_slice(&(socket_type.len() as u32).to_be_bytes());
        body.extend_from_slice(socket_type);
        body
    }

    #[test]
    fn ready_must_name_a_subscriber_socket_type() {
        assert!(zmtp::check_ready(&ready(b"SUB")).is_ok());
        assert!(zmtp::check_ready(&ready(b"XSUB")).is_ok());
        assert!(zmtp::check_ready(&ready(b"PUSH"))
            .unwrap_err()
            .contains("found \"PUSH\""));
        // Our own READY frame, without its 2-byte header, names PUB.
        assert!(zmtp::check_ready(&zmtp::ready_frame()[2..])
            .unwrap_err()
            .contains("found \"PUB\""));
        let mut cut = ready(b"SUB");
        cut.truncate(cut.len() - 1);
        assert!(zmtp::check_ready(&cut).unwrap_err().contains("a cut one"));
        assert!(zmtp::check_ready(b"\x05ERROR\x04nope")
            .unwrap_err()
            .contains("refused the connection: nope"));
    }

    #[test]
    fn frames_over_the_limit_end_the_connection_before_their_body_is_read() {
        let mut huge = vec![0x02u8];
        huge.extend_from_slice(&(1u64 << 40).to_be_bytes());
        match zmtp::read_frame(&mut &huge[..]) {
            Err(End::Failed(why)) => assert!(why.contains("found one of 1099511627776"), "{why}"),
            other => panic!("{other:?}"),
        }
        match zmtp::read_frame(&mut &[0x05u8, 0][..]) {
            Err(End::Failed(why)) => assert!(why.contains("found 0x05"), "{why}"),
            other => panic!("{other:?}"),
        }
        let frame = zmtp::read_frame(&mut &[0x01u8, 2, b'a', b'b'][..]).unwrap();
        assert!(frame.more && !frame.command);
        assert_eq!(frame.body, b"ab");
    }

    #[test]
    fn messages_are_framed_as_zmtp_with_long_sizes_past_255_bytes() {
        let frames = [
            Bytes::from_static(b"topic"),
            Bytes::new(),
            Bytes::from(vec![7u8; 300]),
        ];
        let mut out = Vec::new();
        zmtp::write_messages(&mut out, [&frames[..]].into_iter()).unwrap();
        let mut expected = vec![0x01, 5];
        expected.extend_from_slice(b"topic");
        expected.extend_from_slice(&[0x01, 0]);
        expected.push(0x02);
        expected.extend_from_slice(&300u64.to_be_bytes());
        expected.extend_from_slice(&[7u8; 300]);
        assert_eq!(out, expected);
    }

    #[test]
    fn subscriptions_match_by_prefix_and_count_repeats() {
        let mut s = Subscriptions::default();
        assert!(!s.matches(b"temperature"));
        s.subscribe(b"temp").unwrap();
        s.subscribe(b"temp").unwrap();
        assert!(s.matches(b"temperature") && !s.matches(b"pressure"));
        s.cancel(b"temp");
        assert!(s.matches(b"temperature"));
        s.cancel(b"temp");
        assert!(!s.matches(b"temperature"));
        s.subscribe(b"").unwrap();
        assert!(s.matches(b"anything"));
        for i in 1..MAX_SUBSCRIPTIONS {
            s.subscribe(format!("t{i}").as_bytes()).unwrap();
        }
        let err = s.subscribe(b"one-too-many").unwrap_err();
        assert!(err.contains("expected at most 1024 subscriptions"), "{err}");
    }

    /// A record named `name` of one u8 array of `len` elements `seq as u8`, as a sink gets it.
    fn record(name: &str, seq: u64, len: usize) -> Received {
        use crate::wire::{encode, ArrayBuffer, Compression, Envelope, Limits};
        let envelope = Envelope {
            name: name.into(),
            source: "w".into(),
            session: "s".into(),
            seq,
            time: 0.0,
            attrs: None,
        };
        let array = ArrayBuffer::from_owned(ndarray::Array1::<u8>::from_elem(len, seq as u8));
        let frames = encode(envelope, vec![(name.to_owned(), array)], Compression::Raw)
            .unwrap()
            .frames;
        Received {
            record: crate::wire::decode(&frames, &Limits::default()).unwrap(),
            frames,
            received_at: std::time::SystemTime::now(),
            claimed_source: None,
        }
    }

    /// A libzmq SUB socket connected to `endpoint`, with CURVE client keys when given.
    fn zmq_subscriber(
        context: &zmq::Context,
        endpoint: &str,
        curve: Option<(&PublicKey, &KeyPair)>,
    ) -> zmq::Socket {
        let sub = context.socket(zmq::SUB).unwrap();
        sub.set_rcvtimeo(100).unwrap();
        sub.set_linger(0).unwrap();
        if let Some((server, own)) = curve {
            sub.set_curve_serverkey(server.as_bytes()).unwrap();
            sub.set_curve_publickey(own.public().as_bytes()).unwrap();
            sub.set_curve_secretkey(own.secret()).unwrap();
        }
        // Heartbeats every 50 ms: PINGs and our PONGs cross the connection all along.
        sub.set_heartbeat_ivl(50).unwrap();
        sub.set_heartbeat_timeout(500).unwrap();
        sub.set_subscribe(b"").unwrap();
        sub.connect(endpoint).unwrap();
        sub
    }

    fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
        let start = Instant::now();
        while !done() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "waited 20 s for {what}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Messages `sub` receives within `wait`.
    fn receive_for(sub: &zmq::Socket, wait: Duration) -> Vec<Vec<Vec<u8>>> {
        let start = Instant::now();
        let mut got = Vec::new();
        while start.elapsed() < wait {
            if let Ok(frames) = sub.recv_multipart(0) {
                got.push(frames);
            }
        }
        got
    }

    fn curve_sink(allowed: &KeyPair) -> ForwardSink {
        let mut allow = Allowlist::new();
        allow.insert("allowed", *allowed.public()).unwrap();
        ForwardSink::listen_curve(
            "tcp://127.0.0.1:*",
            KeyPair::generate().unwrap(),
            Arc::new(allow),
        )
        .unwrap()
    }

    #[test]
    fn a_libzmq_curve_subscriber_receives_records_bit_exact_and_heartbeats_pass() {
        let allowed = KeyPair::generate().unwrap();
        let sink = curve_sink(&allowed);
        let server = sink.public_key().unwrap();
        let context = zmq::Context::new();
        let sub = zmq_subscriber(&context, sink.endpoint(), Some((&server, &allowed)));
        wait_until("the subscriber", || {
            let subs = sink.subscribers();
            subs.len() == 1 && subs[0].ready && subs[0].subscriptions == 1
        });
        assert_eq!(sink.subscribers()[0].key_name.as_deref(), Some("allowed"));
        // Small, empty and long frames (over 255 bytes, and over the sealing batch).
        let records = [
            record("a", 1, 0),
            record("b", 2, 300),
            record("c", 3, 300 << 10),
        ];
        for r in &records {
            sink.write(r).unwrap();
        }
        let got = receive_for(&sub, Duration::from_millis(1500));
        assert_eq!(got.len(), records.len());
        for (frames, r) in got.iter().zip(&records) {
            let mut expected = vec![r.record.header.name.as_bytes().to_vec()];
            expected.extend(r.frames.iter().map(|f| f.to_vec()));
            assert_eq!(frames, &expected);
        }
        // A second of heartbeats both ways kept the one connection.
        std::thread::sleep(Duration::from_millis(1000));
        sink.write(&record("d", 4, 10)).unwrap();
        assert_eq!(receive_for(&sub, Duration::from_millis(500)).len(), 1);
        let totals = sink.totals();
        assert_eq!(
            (
                totals.accepted,
                totals.failed,
                totals.refused_keys,
                totals.sent
            ),
            (1, 0, 0, 4)
        );
        let report = sink.report();
        assert_eq!(report["mechanism"], "CURVE");
        assert_eq!(report["public_key"], server.to_z85());
    }

    #[test]
    fn a_handshake_sent_a_byte_at_a_time_is_cut_off_when_its_time_is_up() {
        let sink = curve_sink(&KeyPair::generate().unwrap());
        let address = sink.endpoint().strip_prefix("tcp://").unwrap().to_owned();
        let mut client = TcpStream::connect(&address).unwrap();
        client
            .set_read_timeout(Some(HANDSHAKE_TIMEOUT * 3))
            .unwrap();
        // Our signature and version come first.
        let mut first = [0u8; zmtp::GREETING_FIRST_LEN];
        client.read_exact(&mut first).unwrap();
        let started = Instant::now();
        // A valid CURVE greeting, one byte every 500 ms (a tenth of the time each read
        // waits): 32 s for the greeting alone.
        let greeting = zmtp::greeting(Mechanism::Curve);
        let stop = Arc::new(AtomicBool::new(false));
        let trickle = {
            let (mut client, stop) = (client.try_clone().unwrap(), Arc::clone(&stop));
            std::thread::spawn(move || {
                for byte in greeting {
                    if stop.load(Ordering::Relaxed) || client.write_all(&[byte]).is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(500));
                }
            })
        };
        // The sink closes the connection once the handshake's 5 s are up.
        let mut rest = Vec::new();
        let read = client.read_to_end(&mut rest);
        let waited = started.elapsed();
        stop.store(true, Ordering::Relaxed);
        trickle.join().unwrap();
        assert!(
            read.is_ok() || matches!(&read, Err(e) if e.kind() == io::ErrorKind::ConnectionReset),
            "the connection stayed open for {waited:?}: {read:?}"
        );
        assert!(
            waited < HANDSHAKE_TIMEOUT + Duration::from_secs(2),
            "closed after {waited:?}"
        );
        wait_until("the connection counted as failed", || {
            sink.totals().failed == 1 && sink.subscribers().is_empty()
        });
    }

    #[test]
    fn libzmq_subscribers_with_an_unlisted_key_or_without_curve_are_refused_and_counted() {
        let allowed = KeyPair::generate().unwrap();
        let stranger = KeyPair::generate().unwrap();
        let sink = curve_sink(&allowed);
        let server = sink.public_key().unwrap();
        let context = zmq::Context::new();
        let unlisted = zmq_subscriber(&context, sink.endpoint(), Some((&server, &stranger)));
        let plain = zmq_subscriber(&context, sink.endpoint(), None);
        wait_until("both refused", || {
            let t = sink.totals();
            t.refused_keys > 0 && t.refused_mechanism > 0
        });
        for i in 0..5 {
            sink.write(&record("x", i, 100)).unwrap();
        }
        assert!(receive_for(&unlisted, Duration::from_millis(300)).is_empty());
        assert!(receive_for(&plain, Duration::from_millis(300)).is_empty());
        let totals = sink.totals();
        assert_eq!((totals.sent, totals.failed), (0, 0));
        let report = sink.report();
        assert!(report["subscribers"]["refused_keys"].as_u64().unwrap() > 0);
        assert!(report["subscribers"]["refused_mechanism"].as_u64().unwrap() > 0);
        // A sink without CURVE refuses a CURVE client in turn.
        let plain_sink = ForwardSink::listen("tcp://127.0.0.1:*").unwrap();
        let _curve = zmq_subscriber(&context, plain_sink.endpoint(), Some((&server, &allowed)));
        wait_until("the CURVE client refused", || {
            plain_sink.totals().refused_mechanism > 0
        });
        assert_eq!(plain_sink.report()["mechanism"], "NULL");
    }
}

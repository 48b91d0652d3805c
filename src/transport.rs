//! ZeroMQ at the edge: every socket ndbridge opens is made here (kind, options, bind or
//! connect), and frames cross it as [`Bytes`] without being copied in either direction.

use std::ffi::c_void;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::keys::{KeyPair, PublicKey};

/// The ZeroMQ socket kinds ndbridge uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketKind {
    /// Fan-in with backpressure: a publisher blocks when the collector is slow or absent.
    Push,
    /// The collector's side of [`SocketKind::Push`].
    Pull,
    /// Live fan-out: messages carry a topic frame; slow subscribers lose messages.
    Pub,
    /// The receiving side of [`SocketKind::Pub`].
    Sub,
    /// A publisher's socket in acked delivery ([`Delivery::Acked`](crate::Delivery::Acked)):
    /// sends records and receives acknowledgements. Chosen by the delivery mode, not by
    /// `kind`.
    Dealer,
    /// A collector's input socket in acked delivery: receives records and sends each
    /// publisher its acknowledgements. Chosen by the delivery mode, not by `kind`.
    Router,
}

impl SocketKind {
    fn zmq(self) -> zmq::SocketType {
        match self {
            SocketKind::Push => zmq::PUSH,
            SocketKind::Pull => zmq::PULL,
            SocketKind::Pub => zmq::PUB,
            SocketKind::Sub => zmq::SUB,
            SocketKind::Dealer => zmq::DEALER,
            SocketKind::Router => zmq::ROUTER,
        }
    }

    /// True for kinds whose messages start with a topic frame.
    pub fn has_topic(self) -> bool {
        matches!(self, SocketKind::Pub | SocketKind::Sub)
    }
}

/// Where a socket attaches: `bind` to listen on an address, `connect` to reach one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// Listen on this address (`tcp://127.0.0.1:*` picks a free port).
    Bind(String),
    /// Connect to this address; ZeroMQ reconnects on its own when the peer restarts.
    Connect(String),
}

impl Endpoint {
    /// An endpoint to bind.
    pub(crate) fn bind(addr: impl Into<String>) -> Endpoint {
        Endpoint::Bind(addr.into())
    }

    /// An endpoint to connect to.
    pub(crate) fn connect(addr: impl Into<String>) -> Endpoint {
        Endpoint::Connect(addr.into())
    }

    /// The address.
    pub(crate) fn addr(&self) -> &str {
        match self {
            Endpoint::Bind(a) | Endpoint::Connect(a) => a,
        }
    }

    /// True when the address can only reach this machine: `ipc://`, `inproc://`, or `tcp://`
    /// (`ws://`) to or on a loopback address (`127.*`, `localhost`, `[::1]`). Bytes then move
    /// at memory speed, not at a network's.
    pub(crate) fn is_local(&self) -> bool {
        is_local(self.addr())
    }
}

/// See [`Endpoint::is_local`]; false for an address without a transport.
pub(crate) fn is_local(addr: &str) -> bool {
    let Some((transport, rest)) = addr.split_once("://") else {
        return false;
    };
    if matches!(transport, "ipc" | "inproc") {
        return true;
    }
    // `tcp://[source;]host:port`, `ws://host:port/path`: the host is after any source and
    // before the path and the last colon.
    let target = rest.rsplit(';').next().unwrap_or(rest);
    let target = target.split('/').next().unwrap_or(target);
    let host = target.rsplit_once(':').map_or(target, |(host, _port)| host);
    host == "localhost" || host == "[::1]" || host.starts_with("127.")
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Bind(a) => write!(f, "bind {a}"),
            Endpoint::Connect(a) => write!(f, "connect {a}"),
        }
    }
}

/// Socket options ndbridge sets; the defaults suit large arrays on a local network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketOptions {
    /// Messages queued per peer for sending before ZeroMQ pushes back (ZMQ_SNDHWM).
    pub send_hwm: i32,
    /// Messages queued per peer on receipt (ZMQ_RCVHWM).
    pub recv_hwm: i32,
    /// How long a closing socket keeps trying to deliver queued messages (ZMQ_LINGER).
    pub linger: Duration,
    /// The wait of one blocking send before control returns to ndbridge (ZMQ_SNDTIMEO).
    pub send_poll: Duration,
    /// Every handshake asks the context's admission handler (ZeroMQ's ZAP, domain
    /// `"ndbridge"`) whether to let the peer in; the collector answers it to bound its
    /// peers.
    pub admission: bool,
    /// Largest message a receiving socket accepts, its frames counted together with 64 bytes
    /// each besides their data (ZMQ_MAXMSGSIZE, as ndbridge's build of libzmq applies it); a
    /// peer sending a larger one is disconnected before the excess is allocated. `None`: no
    /// limit.
    pub max_message_bytes: Option<u64>,
}

impl Default for SocketOptions {
    fn default() -> Self {
        SocketOptions {
            send_hwm: 64,
            recv_hwm: 64,
            linger: Duration::from_secs(2),
            send_poll: Duration::from_millis(100),
            max_message_bytes: None,
            admission: false,
        }
    }
}

/// The ZAP domain of sockets opened with [`SocketOptions::admission`].
pub(crate) const ADMISSION_DOMAIN: &str = "ndbridge";

/// A socket failed to open, bind, connect or take an option.
///
/// Its message includes ZeroMQ's, so [`source`](std::error::Error::source) returns none (see
/// [`Error`](crate::Error)). An address without a transport (`127.0.0.1:5555`) is told what it
/// lacks: `... expected an endpoint such as tcp://HOST:PORT, ...: did you mean
/// tcp://127.0.0.1:5555?`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketError {
    /// What was being done (`bind`, `connect`, `set option on`, ...).
    pub action: &'static str,
    /// The address or socket concerned.
    pub address: String,
    /// ZeroMQ's error.
    pub source: zmq::Error,
}

impl fmt::Display for SocketError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let SocketError {
            action,
            address,
            source,
        } = self;
        write!(f, "cannot {action} {address}: {source}")?;
        if matches!(*action, "bind" | "connect") && !address.contains("://") {
            write!(
                f,
                "; expected an endpoint such as tcp://HOST:PORT, ipc://PATH or inproc://NAME"
            )?;
            if address.contains(':') {
                write!(f, ": did you mean tcp://{address}?")?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for SocketError {}

fn millis(d: Duration) -> i32 {
    d.as_millis().min(i32::MAX as u128) as i32
}

/// A socket's side of CURVE (ZeroMQ's authentication and encryption, RFC 26).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Curve<'a> {
    /// Accepts peers that know this pair's public key; which peers, the context's ZAP handler
    /// decides.
    Server(&'a KeyPair),
    /// Reaches a server whose public key is `server`, proving `own`.
    Client {
        /// The server's public key.
        server: &'a PublicKey,
        /// This peer's key pair.
        own: &'a KeyPair,
    },
}

impl Curve<'_> {
    fn apply(self, socket: &zmq::Socket) -> zmq::Result<()> {
        match self {
            Curve::Server(own) => {
                socket.set_curve_server(true)?;
                socket.set_curve_secretkey(own.secret())
            }
            Curve::Client { server, own } => {
                socket.set_curve_serverkey(server.as_bytes())?;
                socket.set_curve_publickey(own.public().as_bytes())?;
                socket.set_curve_secretkey(own.secret())
            }
        }
    }
}

/// Opens a socket of `kind` with `options` (and CURVE, if given) and attaches it to every
/// endpoint. A SUB socket subscribes to everything; narrow it with `set_subscribe` before use
/// if needed.
pub(crate) fn open(
    context: &zmq::Context,
    kind: SocketKind,
    endpoints: &[Endpoint],
    options: &SocketOptions,
    curve: Option<Curve<'_>>,
) -> Result<zmq::Socket, SocketError> {
    let fail = |action: &'static str, address: &str| {
        let address = address.to_owned();
        move |source| SocketError {
            action,
            address,
            source,
        }
    };
    let socket = context
        .socket(kind.zmq())
        .map_err(fail("create socket for", "ZeroMQ context"))?;
    let set = |r: zmq::Result<()>| r.map_err(fail("set an option on", "socket"));
    if options.admission {
        set(socket.set_zap_domain(ADMISSION_DOMAIN))?;
    }
    set(socket.set_sndhwm(options.send_hwm))?;
    set(socket.set_rcvhwm(options.recv_hwm))?;
    set(socket.set_linger(millis(options.linger)))?;
    set(socket.set_sndtimeo(millis(options.send_poll).max(1)))?;
    if let Some(max) = options.max_message_bytes {
        set(socket.set_maxmsgsize(i64::try_from(max).unwrap_or(i64::MAX)))?;
    }
    if let Some(curve) = curve {
        set(curve.apply(&socket))?;
    }
    if kind == SocketKind::Sub {
        set(socket.set_subscribe(b""))?;
    }
    attach(&socket, endpoints)?;
    Ok(socket)
}

/// Binds or connects `socket` to every endpoint.
pub(crate) fn attach(socket: &zmq::Socket, endpoints: &[Endpoint]) -> Result<(), SocketError> {
    for endpoint in endpoints {
        let (action, addr, result) = match endpoint {
            Endpoint::Bind(addr) => ("bind", addr, socket.bind(addr)),
            Endpoint::Connect(addr) => ("connect", addr, socket.connect(addr)),
        };
        result.map_err(|source| SocketError {
            action,
            address: addr.clone(),
            source,
        })?;
    }
    Ok(())
}

/// A new `inproc://` address of this process, `name` in it, for sockets that connect threads.
pub(crate) fn inproc_address(name: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "inproc://ndbridge-{name}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Follows `socket`'s `events` (ZeroMQ's socket monitor): returns the socket the events come
/// out of, read with [`read_event`]. `name` tells the monitor's inproc address apart.
pub(crate) fn monitor(
    context: &zmq::Context,
    socket: &zmq::Socket,
    name: &str,
    events: u16,
) -> Result<zmq::Socket, SocketError> {
    let address = inproc_address(name);
    let fail = |action: &'static str| {
        let address = address.clone();
        move |source| SocketError {
            action,
            address,
            source,
        }
    };
    socket
        .monitor(&address, i32::from(events))
        .map_err(fail("monitor"))?;
    let monitor = context.socket(zmq::PAIR).map_err(fail("open"))?;
    monitor.connect(&address).map_err(fail("connect"))?;
    Ok(monitor)
}

/// One monitor event, if one is waiting: what happened, its value (a connection's descriptor,
/// for the connection events) and the endpoint it concerns.
pub(crate) fn read_event(monitor: &zmq::Socket) -> Option<(u16, u32, String)> {
    let frames = monitor.recv_multipart(zmq::DONTWAIT).ok()?;
    let first = frames.first()?;
    let event = u16::from_le_bytes(first.get(..2)?.try_into().ok()?);
    let value = u32::from_le_bytes(first.get(2..6)?.try_into().ok()?);
    let endpoint = String::from_utf8_lossy(frames.get(1)?).into_owned();
    Some((event, value, endpoint))
}

/// The address a socket was last bound to, with any `*` port resolved.
pub(crate) fn last_endpoint(socket: &zmq::Socket) -> Option<String> {
    socket.get_last_endpoint().ok()?.ok()
}

/// Keeps a received ZeroMQ frame alive behind a [`Bytes`].
struct ReceivedFrame(zmq::Message);

impl AsRef<[u8]> for ReceivedFrame {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// Wraps a received frame as `Bytes` without copying its data.
pub(crate) fn frame_bytes(message: zmq::Message) -> Bytes {
    Bytes::from_owner(ReceivedFrame(message))
}

/// Receives one whole multipart message, or `Ok(None)` when none is waiting (with
/// `zmq::DONTWAIT`) or the receive timed out. Keeps at most `max_frames` frames: the rest of a longer message is
/// read and discarded, so a peer cannot make the receiver hold unbounded frames. A caller that
/// sees `max_frames` frames treats the message as too long.
pub(crate) fn recv_message_capped(
    socket: &zmq::Socket,
    flags: i32,
    max_frames: usize,
) -> zmq::Result<Option<Vec<zmq::Message>>> {
    let mut frames = Vec::with_capacity(4);
    let mut first = true;
    loop {
        let mut msg = zmq::Message::new();
        match socket.recv(&mut msg, if first { flags } else { 0 }) {
            Ok(()) => {}
            Err(zmq::Error::EAGAIN) if first => return Ok(None),
            // The rest of a message arrives with its first frame: a signal while reading it
            // must not leave its frames to be read as a message of their own.
            Err(zmq::Error::EINTR) if !first => continue,
            Err(e) => return Err(e),
        }
        first = false;
        let more = msg.get_more();
        if frames.len() < max_frames {
            frames.push(msg);
        }
        if !more {
            return Ok(Some(frames));
        }
    }
}

/// Frames below this size are copied into a ZeroMQ message: for small frames a copy costs less
/// than handing over ownership (two allocations and a release callback).
const COPY_BELOW: usize = 2048;

/// A frame handed to libzmq without a copy: the `Bytes` that keeps its memory alive, and the
/// counter to raise once libzmq has passed it on (the last frame of a tracked message).
struct HandedFrame {
    frame: Bytes,
    passed_on: Option<Arc<AtomicU64>>,
}

/// Called by libzmq (on any of its threads) when it no longer needs a frame sent by
/// [`send_tracked`]: drops the `Bytes` that kept the frame's memory alive,
/// and counts the message as passed on if it is tracked.
unsafe extern "C" fn release_frame(_data: *mut c_void, hint: *mut c_void) {
    // SAFETY: `hint` is the `Box<HandedFrame>` leaked in `send_frame`, and libzmq calls this
    // exactly once per message; `HandedFrame` is `Send`, so dropping it on libzmq's thread is
    // sound.
    let handed = unsafe { Box::from_raw(hint as *mut HandedFrame) };
    if let Some(counter) = &handed.passed_on {
        counter.fetch_add(1, Ordering::Release);
    }
}

fn send_frame(
    socket: &mut zmq::Socket,
    frame: &Bytes,
    flags: i32,
    passed_on: Option<&Arc<AtomicU64>>,
) -> zmq::Result<()> {
    if frame.len() < COPY_BELOW && passed_on.is_none() {
        return socket.send(&frame[..], flags);
    }
    let owner = Box::new(HandedFrame {
        frame: frame.clone(),
        passed_on: passed_on.cloned(),
    });
    let data = owner.frame.as_ptr() as *mut c_void;
    let len = owner.frame.len();
    let hint = Box::into_raw(owner);
    let mut msg = zmq_sys::zmq_msg_t::default();
    // SAFETY: `data..data+len` lies in the buffer that the leaked `Bytes` at `hint` keeps alive
    // and never mutates; `release_frame` reclaims the box when libzmq is done with the data.
    let rc = unsafe {
        zmq_sys::zmq_msg_init_data(
            &mut msg,
            data,
            len,
            Some(release_frame),
            hint as *mut c_void,
        )
    };
    if rc != 0 {
        // SAFETY: init failed, so libzmq never took the box: it is still ours to free.
        drop(unsafe { Box::from_raw(hint) });
        // SAFETY: `zmq_errno` only reads this thread's errno.
        return Err(zmq::Error::from_raw(unsafe { zmq_sys::zmq_errno() }));
    }
    // SAFETY: `msg` was initialised above and `socket.as_mut_ptr()` is a live socket that this
    // thread owns (`&mut`). On success libzmq owns `msg`; on failure we must close it, which
    // runs `release_frame`. A message that was not sent is not passed on: its counter is taken
    // off first (`hint` is still the box libzmq did not take, freed by that close).
    unsafe {
        if zmq_sys::zmq_msg_send(&mut msg, socket.as_mut_ptr(), flags) == -1 {
            let error = zmq::Error::from_raw(zmq_sys::zmq_errno());
            (*hint).passed_on = None;
            zmq_sys::zmq_msg_close(&mut msg);
            return Err(error);
        }
    }
    Ok(())
}

/// Sends `frames` as one multipart message; each frame of 2 KiB or more is handed to
/// ZeroMQ without copying (the `Bytes` is released when ZeroMQ is done with it). `flags` apply
/// to the first frame (e.g. `zmq::DONTWAIT`); once the first frame is accepted, ZeroMQ accepts
/// the rest of the message. Raises `passed_on` once ZeroMQ has passed the
/// message on: written to the operating system for a peer (or, on a PUB socket, to every
/// subscriber, or dropped for want of any). A message ZeroMQ discards when its socket closes
/// is counted then too, so a caller compares the count with what it sent before closing.
pub(crate) fn send_tracked(
    socket: &mut zmq::Socket,
    frames: &[Bytes],
    flags: i32,
    passed_on: &Arc<AtomicU64>,
) -> zmq::Result<()> {
    send_frames(socket, frames, flags, Some(passed_on))
}

fn send_frames(
    socket: &mut zmq::Socket,
    frames: &[Bytes],
    flags: i32,
    passed_on: Option<&Arc<AtomicU64>>,
) -> zmq::Result<()> {
    let last = frames.len().saturating_sub(1);
    for (i, frame) in frames.iter().enumerate() {
        let more = if i < last { zmq::SNDMORE } else { 0 };
        let first_flags = if i == 0 { flags } else { 0 };
        let tracker = if i == last { passed_on } else { None };
        send_frame(socket, frame, first_flags | more, tracker)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoint_without_a_transport_is_told_to_add_tcp() {
        let ctx = zmq::Context::new();
        let error = open(
            &ctx,
            SocketKind::Push,
            &[Endpoint::connect("127.0.0.1:5555")],
            &SocketOptions::default(),
            None,
        )
        .err()
        .expect("no socket connects to an address without a transport");
        assert_eq!(error.source, zmq::Error::EINVAL);
        assert_eq!(
            error.to_string(),
            "cannot connect 127.0.0.1:5555: Invalid argument; expected an endpoint such as \
             tcp://HOST:PORT, ipc://PATH or inproc://NAME: did you mean tcp://127.0.0.1:5555?"
        );
        assert!(std::error::Error::source(&error).is_none());
        let with_scheme = SocketError {
            action: "bind",
            address: "tcp://127.0.0.1:5555".into(),
            source: zmq::Error::EADDRINUSE,
        };
        assert_eq!(
            with_scheme.to_string(),
            "cannot bind tcp://127.0.0.1:5555: Address already in use"
        );
    }

    #[test]
    fn large_frames_cross_inproc_without_a_copy_and_are_released() {
        let ctx = zmq::Context::new();
        let pull = open(
            &ctx,
            SocketKind::Pull,
            &[Endpoint::bind("inproc://zero-copy")],
            &SocketOptions::default(),
            None,
        )
        .unwrap();
        let mut push = open(
            &ctx,
            SocketKind::Push,
            &[Endpoint::connect("inproc://zero-copy")],
            &SocketOptions::default(),
            None,
        )
        .unwrap();
        let big = Bytes::from(vec![7u8; 1 << 20]);
        let small = Bytes::from_static(b"header");
        send_frames(&mut push, &[small.clone(), big.clone()], 0, None).unwrap();
        let frames = recv_message_capped(&pull, 0, usize::MAX).unwrap().unwrap();
        assert_eq!(frames.len(), 2);
        assert_eq!(&frames[0][..], b"header");
        // inproc hands the very message over: same memory as the sender's Bytes.
        assert_eq!(frames[1].as_ptr(), big.as_ptr());
        let received = frame_bytes(frames.into_iter().nth(1).unwrap());
        assert_eq!(received.as_ptr(), big.as_ptr());
        assert_eq!(received.len(), 1 << 20);
        drop(received);
        // Once ZeroMQ released the message, ours is the last reference again.
        assert!(big.is_unique());
    }

    #[test]
    fn recv_without_message_is_none_and_bad_address_is_named() {
        let ctx = zmq::Context::new();
        let pull = open(
            &ctx,
            SocketKind::Pull,
            &[Endpoint::bind("tcp://127.0.0.1:*")],
            &SocketOptions::default(),
            None,
        )
        .unwrap();
        assert!(last_endpoint(&pull)
            .unwrap()
            .starts_with("tcp://127.0.0.1:"));
        assert!(recv_message_capped(&pull, zmq::DONTWAIT, usize::MAX)
            .unwrap()
            .is_none());
        let err = open(
            &ctx,
            SocketKind::Pull,
            &[Endpoint::bind("tcp://no-such-interface-xyz:1")],
            &SocketOptions::default(),
            None,
        )
        .err()
        .expect("binding an unknown interface fails");
        assert_eq!(err.action, "bind");
        assert!(err
            .to_string()
            .starts_with("cannot bind tcp://no-such-interface-xyz:1"));
    }

    #[test]
    fn endpoints_print_what_they_do() {
        let e = Endpoint::bind("tcp://127.0.0.1:*");
        assert_eq!(e.to_string(), "bind tcp://127.0.0.1:*");
    }

    #[test]
    fn local_addresses_are_told_from_network_ones() {
        assert!(Endpoint::connect("tcp://127.0.0.1:5555").is_local());
        assert!(Endpoint::bind("tcp://localhost:*").is_local());
        assert!(Endpoint::connect("tcp://[::1]:5555").is_local());
        assert!(Endpoint::connect("ipc:///tmp/ndbridge.sock").is_local());
        assert!(!Endpoint::connect("tcp://head-node:5555").is_local());
        assert!(!Endpoint::bind("tcp://0.0.0.0:5555").is_local());
        assert!(!Endpoint::connect("tcp://eth0;10.0.0.2:5555").is_local());
        assert!(Endpoint::bind("ws://127.0.0.1:80/ndbridge").is_local());
        assert!(!Endpoint::bind("ws://0.0.0.0:80/ndbridge").is_local());
        assert!(!Endpoint::bind("tcp://*:5555").is_local());
        assert!(!Endpoint::connect("127.0.0.1:5555").is_local());
    }

    #[test]
    fn a_message_zeromq_refused_is_not_counted_as_passed_on() {
        let ctx = zmq::Context::new();
        // A PUSH socket with no peer refuses a message sent without waiting.
        let mut push = open(
            &ctx,
            SocketKind::Push,
            &[Endpoint::bind("inproc://nobody-pulls")],
            &SocketOptions::default(),
            None,
        )
        .unwrap();
        let passed_on = Arc::new(AtomicU64::new(0));
        let small = Bytes::from_static(b"header only");
        let big = Bytes::from(vec![1u8; 1 << 16]);
        for frames in [vec![small.clone()], vec![small, big.clone()]] {
            let sent = send_tracked(&mut push, &frames, zmq::DONTWAIT, &passed_on);
            assert_eq!(sent, Err(zmq::Error::EAGAIN));
        }
        assert_eq!(passed_on.load(Ordering::Acquire), 0);
        // The refused frame's memory was given back.
        assert!(big.is_unique());
    }
}

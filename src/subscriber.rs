//! The subscriber: one SUB socket that receives records from a collector's forward socket (or
//! from publishers bound as PUB) and decodes them with the wire core, on the caller's thread.
//!
//! A message on a SUB socket is `[topic, header, buf_0, ...]`, the topic being the record name.
//! ZeroMQ filters topics by prefix; the subscriber keeps only records whose topic is exactly one
//! of the names asked for, and whose header names the record as its topic does.

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::error::Error;
use crate::keys::{KeyPair, PublicKey};
use crate::transport::{self, Curve, Endpoint, SocketError, SocketKind, SocketOptions};
use crate::wire::{DecodeError, Decoder, Limits, Record};

/// Builds a [`Subscriber`].
///
/// ```no_run
/// use std::time::Duration;
/// use ndbridge::Subscriber;
///
/// let mut subscriber = Subscriber::builder()
///     .connect("tcp://127.0.0.1:5556") // a collector's --forward socket
///     .name("temperature")
///     .timeout(Duration::from_secs(10))
///     .build()?;
/// let record = subscriber.recv()?; // Error::RecvTimeout after 10 s without a record
/// let t = record.arrays[0].view::<f64>()?;
/// println!("{} seq {}: {:?}", record.header.source, record.header.seq, t.shape());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct SubscriberBuilder {
    endpoints: Vec<String>,
    names: Vec<String>,
    timeout: Option<Duration>,
    limits: Limits,
    options: SocketOptions,
    context: Option<zmq::Context>,
    curve: Option<(PublicKey, KeyPair)>,
}

impl Default for SubscriberBuilder {
    fn default() -> Self {
        SubscriberBuilder {
            endpoints: Vec::new(),
            names: Vec::new(),
            timeout: None,
            limits: Limits::default(),
            options: SocketOptions {
                // A subscriber has nothing of its own to deliver when it closes.
                linger: Duration::ZERO,
                ..SocketOptions::default()
            },
            context: None,
            curve: None,
        }
    }
}

impl SubscriberBuilder {
    /// Connects to a collector's forward socket, or to a publisher bound as PUB, at `addr`; may
    /// be called several times. ZeroMQ connects in the background and reconnects on its own, so
    /// nothing needs to listen there yet.
    pub fn connect(mut self, addr: impl Into<String>) -> Self {
        self.endpoints.push(addr.into());
        self
    }

    /// Receives only records called `name` (exactly: not `name2`); may be called several times.
    /// Default: every record.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.names.push(name.into());
        self
    }

    /// The longest [`Subscriber::recv`] waits for a record before it returns
    /// [`Error::RecvTimeout`]. Default: no limit.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The bounds every message is decoded within ([`Limits`]); a larger message is refused
    /// before anything it claims is allocated. Default: [`Limits::default`].
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// ZeroMQ socket options. Default: [`SocketOptions::default`] with no linger, and
    /// `max_message_bytes` (when `None`) from the limits ([`Limits::max_wire_bytes`]).
    pub fn socket_options(mut self, options: SocketOptions) -> Self {
        self.options = options;
        self
    }

    /// Authenticates with CURVE and encrypts everything on the socket: `server` is the
    /// collector's public key (its `NAME.key` file), `own` this subscriber's key pair, whose public
    /// key the collector must list (`--allow`). Default: no CURVE.
    pub fn curve(mut self, server: PublicKey, own: KeyPair) -> Self {
        self.curve = Some((server, own));
        self
    }

    /// Shares a ZeroMQ context (needed for `inproc://` endpoints). Default: a new context.
    pub fn context(mut self, context: zmq::Context) -> Self {
        self.context = Some(context);
        self
    }

    /// Opens the socket, subscribes and connects. Without any endpoint
    /// ([`SubscriberBuilder::connect`]) it would never receive anything: [`Error::Usage`].
    pub fn build(self) -> Result<Subscriber, Error> {
        if self.endpoints.is_empty() {
            return Err(Error::Usage {
                what: "SubscriberBuilder::connect",
                expected: "at least one endpoint",
                found: "none".to_owned(),
            });
        }
        let context = self.context.unwrap_or_default();
        let options = SocketOptions {
            max_message_bytes: Some(
                self.options
                    .max_message_bytes
                    .unwrap_or(self.limits.max_wire_bytes()),
            ),
            ..self.options
        };
        let endpoints: Vec<Endpoint> = self.endpoints.iter().map(Endpoint::connect).collect();
        let socket = transport::open(
            &context,
            SocketKind::Sub,
            &endpoints,
            &options,
            self.curve
                .as_ref()
                .map(|(server, own)| Curve::Client { server, own }),
        )?;
        let mut names = self.names;
        names.sort_unstable();
        names.dedup();
        if !names.is_empty() {
            let fail = |source| SocketError {
                action: "set a subscription on",
                address: "the subscriber's socket".to_owned(),
                source,
            };
            socket.set_unsubscribe(b"").map_err(fail)?;
            for name in &names {
                socket.set_subscribe(name.as_bytes()).map_err(fail)?;
            }
        }
        Ok(Subscriber {
            socket,
            names,
            timeout: self.timeout,
            // The topic and the header besides one frame per array, and one more so that a
            // longer message is seen as such.
            max_frames: self.limits.max_arrays.saturating_add(3),
            decoder: Decoder::new(self.limits),
            endpoints: self.endpoints.join(", "),
            _context: context,
        })
    }
}

/// Receives decoded records from a SUB socket: a collector's forward socket
/// (`ndbridge collect --forward`), or publishers bound as PUB.
///
/// `Send`, not `Sync`: one thread receives. Raw arrays borrow the received frames (no copy);
/// compressed ones are decoded into buffers of their own. A message that does not decode is
/// returned as [`Error::Decode`] and consumed: the next call receives the next message.
pub struct Subscriber {
    socket: zmq::Socket,
    /// Exact record names to keep, sorted; empty: all.
    names: Vec<String>,
    timeout: Option<Duration>,
    max_frames: usize,
    decoder: Decoder,
    /// The endpoints, for messages.
    endpoints: String,
    _context: zmq::Context,
}

/// How a wait for a message ended.
enum Waited {
    Message(Vec<zmq::Message>),
    TimedOut,
    /// A signal arrived while waiting.
    Interrupted,
}

impl Subscriber {
    /// A builder with the defaults: every record, no timeout, [`Limits::default`].
    pub fn builder() -> SubscriberBuilder {
        SubscriberBuilder::default()
    }

    /// The next record, waiting at most the builder's timeout; [`Error::RecvTimeout`] when none
    /// came within it. A signal does not end the wait (see [`Subscriber::recv_within`]).
    pub fn recv(&mut self) -> Result<Record, Error> {
        let deadline = self.timeout.map(|t| Instant::now() + t);
        loop {
            match self.next_message(deadline)? {
                Waited::Message(frames) => {
                    if let Some(record) = self.accept(frames) {
                        return record;
                    }
                }
                Waited::Interrupted => {}
                Waited::TimedOut => {
                    return Err(Error::RecvTimeout {
                        waited: self.timeout.unwrap_or_default(),
                        endpoints: self.endpoints.clone(),
                    })
                }
            }
        }
    }

    /// The next record if one comes within `wait`, `Ok(None)` otherwise. A signal ends the wait
    /// early with `Ok(None)`, so a loop around this call sees a flag set by a signal handler
    /// within `wait`.
    pub fn recv_within(&mut self, wait: Duration) -> Result<Option<Record>, Error> {
        let deadline = Some(Instant::now() + wait);
        loop {
            match self.next_message(deadline)? {
                Waited::Message(frames) => {
                    if let Some(record) = self.accept(frames) {
                        return record.map(Some);
                    }
                }
                Waited::Interrupted | Waited::TimedOut => return Ok(None),
            }
        }
    }

    /// Waits until a message is there or `deadline` passes (`None`: no deadline), and
    /// receives it.
    fn next_message(&self, deadline: Option<Instant>) -> Result<Waited, Error> {
        loop {
            match transport::recv_message_capped(&self.socket, zmq::DONTWAIT, self.max_frames) {
                Ok(Some(frames)) => return Ok(Waited::Message(frames)),
                Ok(None) => {}
                Err(zmq::Error::EINTR) => return Ok(Waited::Interrupted),
                Err(e) => return Err(e.into()),
            }
            let wait_ms = match deadline {
                None => -1,
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok(Waited::TimedOut);
                    }
                    // Rounded up, so that the wait never ends before the deadline.
                    i64::try_from(left.as_micros().div_ceil(1000)).unwrap_or(i64::MAX)
                }
            };
            match self.socket.poll(zmq::POLLIN, wait_ms) {
                Ok(_) => {}
                Err(zmq::Error::EINTR) => return Ok(Waited::Interrupted),
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Decodes a received message, or `None` when its topic is not one of the names asked for
    /// (a longer name that shares a subscribed prefix).
    fn accept(&mut self, frames: Vec<zmq::Message>) -> Option<Result<Record, Error>> {
        let wanted = |topic: &[u8]| {
            self.names.is_empty()
                || self
                    .names
                    .binary_search_by(|n| n.as_bytes().cmp(topic))
                    .is_ok()
        };
        if !frames.first().is_some_and(|topic| wanted(topic)) {
            return None;
        }
        let frames: Vec<Bytes> = frames.into_iter().map(transport::frame_bytes).collect();
        Some(self.decode(&frames).map_err(Error::from))
    }

    /// Decodes `[topic, header, buf_0, ...]`, checking that the header names the record as the
    /// topic does.
    fn decode(&mut self, frames: &[Bytes]) -> Result<Record, DecodeError> {
        let (topic, message) = frames.split_first().ok_or(DecodeError::Empty)?;
        let header = self.decoder.header(message)?;
        if header.name.as_bytes() != &topic[..] {
            let shown = &topic[..topic.len().min(64)];
            return Err(DecodeError::InvalidField {
                field: "topic".to_owned(),
                expected: "the record name the header gives",
                found: format!(
                    "{:?} for a record named {:?}",
                    String::from_utf8_lossy(shown),
                    header.name
                ),
            });
        }
        self.decoder.buffers(header, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subscriber_without_an_endpoint_is_a_usage_error() {
        match Subscriber::builder().name("t").build() {
            Err(Error::Usage {
                what,
                expected,
                found,
            }) => {
                assert_eq!(what, "SubscriberBuilder::connect");
                assert_eq!(expected, "at least one endpoint");
                assert_eq!(found, "none");
            }
            Err(other) => panic!("expected Error::Usage, got {other}"),
            Ok(_) => panic!("expected Error::Usage, got a subscriber"),
        }
    }
}

//! The publisher: a handle that simulation threads share to queue named arrays, and one thread
//! that owns the socket, encodes (compresses) each message and hands it to ZeroMQ.
//!
//! `send` returns once the array is queued: an owned array is moved, a view is copied once.
//! The queue is bounded in bytes; a [`FullPolicy`] decides what `send` does when it is full.

mod acked;
mod spool;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use compact_str::CompactString;
use crossbeam_channel::{Receiver, Sender};
use ndarray::{Array, ArrayBase, Data, Dimension};
use serde_json::{Map, Value};
use smallvec::SmallVec;

use crate::budget::{ByteBudget, Permit, Wake};
use crate::delivery::Delivery;
use crate::error::Error;
use crate::keys::{KeyPair, PublicKey};
use crate::link_pacing::LinkPacing;
use crate::transport::{self, Curve, Endpoint, SocketKind, SocketOptions};
use crate::wire::check_names;
use crate::wire::{encode_buffer, CHUNKED_FROM};
use crate::wire::{ArrayBuffer, Compression, Element, EncodedMessage, Encoder, Envelope, Header};
use acked::AckedLink;

/// What the publisher's link is, for the automatic codec ([`Compression::Auto`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Link {
    /// Local when every endpoint is (`ipc://`, `inproc://`, loopback `tcp://`), a network
    /// otherwise.
    #[default]
    Detect,
    /// This machine only: bytes move at memory speed, so compression never pays and
    /// [`Compression::Auto`] sends raw without measuring anything. (Sends that block here mean
    /// a busy receiver, and compressing would only give it decompression to do.)
    Local,
    /// A network, also behind a local port that forwards to one (an SSH tunnel):
    /// [`Compression::Auto`] measures what the link delivers, raw and compressed, and
    /// compresses when that is faster.
    Network,
}

impl Link {
    /// What [`Link::Detect`] finds for one endpoint: [`Link::Local`] for `ipc://`,
    /// `inproc://`, and `tcp://` (or `ws://`) to or on a loopback address (`127.*`,
    /// `localhost`, `[::1]`); [`Link::Network`] for anything else.
    ///
    /// ```
    /// use ndbridge::Link;
    ///
    /// assert_eq!(Link::of("tcp://127.0.0.1:5555"), Link::Local);
    /// assert_eq!(Link::of("tcp://head-node:5555"), Link::Network);
    /// ```
    pub fn of(endpoint: &str) -> Link {
        if transport::is_local(endpoint) {
            Link::Local
        } else {
            Link::Network
        }
    }
}

/// When a publisher compresses an array of 2 MiB or more in parallel chunks (the `zstd-chunks`
/// codec: chunks of about 1 MiB on every core, decoded in parallel too) instead of as one zstd
/// frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Chunking {
    /// With [`Compression::Auto`] on a network link, when one core compresses slower than the
    /// link takes compressed bytes (10 Gbit/s and faster links): the compressor would set the
    /// pace. Never with [`Compression::Zstd`], which measures nothing.
    #[default]
    Auto,
    /// Every compressed array of 2 MiB or more, whatever the link.
    Always,
    /// Never: every compressed array is one zstd frame (what a collector's store keeps as it
    /// came, without decoding it).
    Never,
}

/// What `send` does when the queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FullPolicy {
    /// Wait until there is room: nothing is lost, the simulation slows to the network's pace.
    /// A caller waiting on a full queue resumes once it has drained to half its limit, so it
    /// then queues many messages per wake-up ([`FullPolicy::Timeout`] resumes as soon as there
    /// is room).
    #[default]
    Block,
    /// Wait at most this long, then return [`Error::QueueFull`].
    Timeout(Duration),
    /// Drop the message at once and count it in [`PublisherStats::dropped`].
    Drop,
}

/// Counters of a publisher, readable at any time.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct PublisherStats {
    /// Messages handed to ZeroMQ.
    pub sent: u64,
    /// Messages ZeroMQ has passed on: written to the operating system for a peer (on a PUB
    /// socket: to every subscriber, or dropped for want of any). After `close`, those passed
    /// on before the socket closed; the rest of `sent` was discarded, and `close` said so.
    /// In acked delivery ([`Delivery::Acked`]): messages the collector acknowledged as
    /// stored durably.
    pub delivered: u64,
    /// Acked delivery: messages the collector acknowledged as refused for good (it could not
    /// decode or store them; its log says why). Never resent.
    pub refused: u64,
    /// Acked delivery: messages sent again, unacknowledged when the connection to the
    /// collector was made anew (not counted in `sent`).
    pub resent: u64,
    /// Acked delivery with a spool: messages of earlier publishers' sessions found in the
    /// spool and sent (not counted in `sent`).
    pub recovered: u64,
    /// Messages dropped: by [`FullPolicy::Drop`], or still queued when `close` timed out.
    pub dropped: u64,
    /// Messages that failed to encode (see the log) and were not sent.
    pub failed: u64,
    /// Messages queued and not yet handed to ZeroMQ.
    pub queued: u64,
    /// Decoded bytes of the arrays sent.
    pub raw_bytes: u64,
    /// Bytes of the frames sent (after compression, headers included).
    pub wire_bytes: u64,
}

impl PublisherStats {
    /// `wire_bytes / raw_bytes`: below 1 when compression saved space.
    pub fn compression_ratio(&self) -> f64 {
        if self.raw_bytes == 0 {
            1.0
        } else {
            self.wire_bytes as f64 / self.raw_bytes as f64
        }
    }
}

/// Builds a [`Publisher`].
///
/// ```no_run
/// use ndbridge::{Compression, FullPolicy, Publisher};
///
/// let publisher = Publisher::builder()
///     .connect("tcp://127.0.0.1:5555")
///     .source("node17")
///     .compression(Compression::auto())
///     .on_full(FullPolicy::Block)
///     .build()?;
/// publisher.send_owned("temperature", ndarray::Array2::<f64>::zeros((512, 512)))?;
/// publisher.close(std::time::Duration::from_secs(10))?;
/// # Ok::<(), ndbridge::Error>(())
/// ```
#[derive(Clone)]
pub struct PublisherBuilder {
    endpoints: Vec<Endpoint>,
    kind: SocketKind,
    source: Option<String>,
    compression: Compression,
    queue_bytes: usize,
    on_full: FullPolicy,
    options: SocketOptions,
    context: Option<zmq::Context>,
    link: Link,
    curve: Option<(PublicKey, KeyPair)>,
    delivery: Delivery,
    window_bytes: u64,
    spool_dir: Option<PathBuf>,
    spool_bytes: u64,
    chunking: Chunking,
}

impl Default for PublisherBuilder {
    fn default() -> Self {
        PublisherBuilder {
            endpoints: Vec::new(),
            kind: SocketKind::Push,
            source: None,
            compression: Compression::auto(),
            queue_bytes: 256 << 20,
            on_full: FullPolicy::Block,
            options: SocketOptions::default(),
            context: None,
            link: Link::Detect,
            curve: None,
            delivery: Delivery::FireAndForget,
            window_bytes: 512 << 20,
            spool_dir: None,
            spool_bytes: 16 << 30,
            chunking: Chunking::Auto,
        }
    }
}

impl PublisherBuilder {
    /// Connects to a collector (or any receiver) at `addr`; may be called several times.
    pub fn connect(mut self, addr: impl Into<String>) -> Self {
        self.endpoints.push(Endpoint::connect(addr));
        self
    }

    /// Binds `addr` so receivers connect to the publisher instead.
    pub fn bind(mut self, addr: impl Into<String>) -> Self {
        self.endpoints.push(Endpoint::bind(addr));
        self
    }

    /// The socket kind: [`SocketKind::Push`] (default) or [`SocketKind::Pub`].
    pub fn kind(mut self, kind: SocketKind) -> Self {
        self.kind = kind;
        self
    }

    /// The `source` id in every header. Default: `<host name>:<process id>`.
    pub fn source(mut self, source: impl Into<String>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// The codec policy. Default: [`Compression::auto`].
    pub fn compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }

    /// The queue limit in bytes: of queued arrays, plus a few hundred bytes per message for what
    /// the queue holds besides (names, shapes, bookkeeping). Default: 256 MiB. A single message
    /// larger than the limit is still accepted when the queue is empty.
    pub fn queue_bytes(mut self, bytes: usize) -> Self {
        self.queue_bytes = bytes;
        self
    }

    /// What `send` does when the queue is full. Default: [`FullPolicy::Block`].
    pub fn on_full(mut self, policy: FullPolicy) -> Self {
        self.on_full = policy;
        self
    }

    /// ZeroMQ socket options (high-water marks, linger).
    pub fn socket_options(mut self, options: SocketOptions) -> Self {
        self.options = options;
        self
    }

    /// What the link is, for the automatic codec. Default: [`Link::Detect`] (from the
    /// endpoints).
    pub fn link(mut self, link: Link) -> Self {
        self.link = link;
        self
    }

    /// Authenticates with CURVE and encrypts everything on the socket: `server` is the
    /// collector's public key (its `NAME.key` file), `own` this publisher's key pair, whose public
    /// key the collector must list (`--allow`). Default: no CURVE.
    pub fn curve(mut self, server: PublicKey, own: KeyPair) -> Self {
        self.curve = Some((server, own));
        self
    }

    /// How records reach the collector, which must use the same mode. [`Delivery::Acked`]:
    /// the collector acknowledges each record once it is stored durably; this publisher keeps
    /// what is not acknowledged (at most [`window_bytes`](Self::window_bytes)) and sends it
    /// again after a reconnect, and [`Publisher::close`] waits for every acknowledgement.
    /// Acked delivery connects to exactly one collector, with [`SocketKind::Push`] (the
    /// default kind). Default: [`Delivery::FireAndForget`].
    pub fn delivery(mut self, delivery: Delivery) -> Self {
        self.delivery = delivery;
        self
    }

    /// Acked delivery: the most bytes of messages sent and not yet acknowledged (and at most
    /// 65,536 messages). A full window stops sending until acknowledgements come; the queue
    /// ([`queue_bytes`](Self::queue_bytes)) then fills and [`on_full`](Self::on_full)
    /// applies, so a slow collector slows its publishers. A message larger than the window
    /// still goes, alone. Default: 512 MiB, what ZeroMQ queues at its high-water mark (64
    /// messages) of 8 MiB arrays: at 256 MiB, 8 MiB arrays crossed loopback at 0.84x
    /// fire-and-forget, at 512 MiB at 1.05x (BENCHMARKS.md).
    pub fn window_bytes(mut self, bytes: u64) -> Self {
        self.window_bytes = bytes;
        self
    }

    /// Acked delivery: a directory of this publisher's own where every message is written
    /// before it is sent, and stays until the collector acknowledges it. Sending then never
    /// waits for the collector: while the window is full or the collector away, messages wait
    /// in the spool (up to [`spool_bytes`](Self::spool_bytes)). A publisher killed, or closed
    /// before everything was acknowledged, leaves its messages there; the next publisher built
    /// with the same directory sends them first, under their own session and `seq`, and ends
    /// that session, so the collector stores every record once. One publisher at a time may
    /// use a directory. The spool is written without `fsync`: it survives the publisher's
    /// process, not a power cut of its node. Default: no spool.
    pub fn spool_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.spool_dir = Some(dir.into());
        self
    }

    /// The most bytes the spool ([`spool_dir`](Self::spool_dir)) holds; beyond them sending
    /// waits for acknowledgements, as the window does without a spool. Default: 16 GiB.
    pub fn spool_bytes(mut self, bytes: u64) -> Self {
        self.spool_bytes = bytes;
        self
    }

    /// Shares a ZeroMQ context (needed for `inproc://` endpoints). Default: a new context.
    pub fn context(mut self, context: zmq::Context) -> Self {
        self.context = Some(context);
        self
    }

    /// When large arrays are compressed in parallel chunks (default [`Chunking::Auto`]).
    pub fn chunking(mut self, chunking: Chunking) -> Self {
        self.chunking = chunking;
        self
    }

    /// Whether the link is local ([`Link`]), detected from the endpoints unless set.
    fn local_link(&self) -> bool {
        match self.link {
            Link::Detect => {
                !self.endpoints.is_empty() && self.endpoints.iter().all(Endpoint::is_local)
            }
            Link::Local => true,
            Link::Network => false,
        }
    }

    /// What the handle and the publisher thread share: the queue's budget and the counters.
    fn shared(&self) -> Shared {
        Shared {
            queue: Arc::new(ByteBudget::new(
                self.queue_bytes as u64,
                wake_policy(self.on_full),
            )),
            limit: self.queue_bytes,
            on_full: self.on_full,
            counters: Counters::default(),
            endpoints: self
                .endpoints
                .iter()
                .map(|e| e.addr())
                .collect::<Vec<_>>()
                .join(", "),
            curve: self.curve.is_some(),
            acked: self.delivery == Delivery::Acked,
            spool_dir: self.spool_dir.clone(),
            close_deadline: Mutex::new(None),
            linger: self.options.linger,
        }
    }

    /// Opens the socket and starts the publisher thread. A kind other than Push or Pub is
    /// [`Error::Usage`].
    pub fn build(self) -> Result<Publisher, Error> {
        if !matches!(self.kind, SocketKind::Push | SocketKind::Pub) {
            return Err(Error::Usage {
                what: "PublisherBuilder::kind",
                expected: "SocketKind::Push or SocketKind::Pub",
                found: format!("SocketKind::{:?}", self.kind),
            });
        }
        self.check_delivery()?;
        self.compression.validate()?;
        let local_link = self.local_link();
        let context = self.context.clone().unwrap_or_default();
        let kind = match self.delivery {
            Delivery::Acked => SocketKind::Dealer,
            Delivery::FireAndForget => self.kind,
        };
        // Acked delivery follows the socket's connections from before the first one.
        let attach_now = if self.delivery == Delivery::Acked {
            &[][..]
        } else {
            &self.endpoints[..]
        };
        let socket = transport::open(
            &context,
            kind,
            attach_now,
            &self.options,
            self.curve
                .as_ref()
                .map(|(server, own)| Curve::Client { server, own }),
        )?;
        let shared = Arc::new(self.shared());
        let (jobs, rx) = crossbeam_channel::unbounded();
        let (source, session) = (
            self.source.unwrap_or_else(Publisher::default_source),
            new_session_id(),
        );
        let session_id = session.clone();
        let acked = match self.delivery {
            Delivery::Acked => Some(AckedLink::new(
                &context,
                &socket,
                acked::Setup {
                    window_bytes: self.window_bytes,
                    session: &session,
                    spool: self.spool_dir.as_deref().map(|dir| (dir, self.spool_bytes)),
                },
            )?),
            Delivery::FireAndForget => None,
        };
        if acked.is_some() {
            transport::attach(&socket, &self.endpoints)?;
        }
        let worker = SendLoop {
            socket,
            kind: self.kind,
            ids: (source.clone(), session.clone()),
            source,
            session,
            seq: 0,
            compression: self.compression,
            local_link,
            pacing: LinkPacing::with_cores(match self.chunking {
                Chunking::Never => 1,
                Chunking::Auto | Chunking::Always => rayon::current_num_threads(),
            }),
            chunking: self.chunking,
            started: Instant::now(),
            linger: self.options.linger,
            shared: Arc::clone(&shared),
            encoder: Encoder::default(),
            acked,
        };
        let thread = std::thread::Builder::new()
            .name("ndbridge-publisher".into())
            .spawn(move || worker.run(rx))
            .map_err(|source| Error::Thread {
                name: "ndbridge-publisher".into(),
                source,
            })?;
        Ok(Publisher {
            shared,
            jobs: Mutex::new(Some(jobs)),
            thread: Mutex::new(Some(thread)),
            session: session_id,
            _context: context,
        })
    }
}

impl PublisherBuilder {
    /// Acked delivery takes a PUSH publisher connected to exactly one collector: the
    /// collector's acknowledgements and its record of what it stored are its own.
    fn check_delivery(&self) -> Result<(), Error> {
        if self.delivery != Delivery::Acked {
            if self.spool_dir.is_some() {
                return Err(Error::Usage {
                    what: "PublisherBuilder::spool_dir",
                    expected: "Delivery::Acked: only acknowledgements tell what to keep",
                    found: format!("Delivery::{:?}", self.delivery),
                });
            }
            return Ok(());
        }
        let connects = self
            .endpoints
            .iter()
            .filter(|e| matches!(e, Endpoint::Connect(_)))
            .count();
        if self.kind != SocketKind::Push || connects != 1 || self.endpoints.len() != 1 {
            return Err(Error::Usage {
                what: "PublisherBuilder::delivery",
                expected: "Delivery::Acked with SocketKind::Push and one `connect` endpoint",
                found: format!(
                    "SocketKind::{:?} with {} endpoints ({connects} to connect)",
                    self.kind,
                    self.endpoints.len()
                ),
            });
        }
        Ok(())
    }
}

/// Queues named arrays for sending; `Send + Sync`, so simulation threads can share it (wrap in
/// an `Arc`).
///
/// Sending, compression and socket I/O happen on the publisher's own thread. Dropping the
/// publisher closes it with the socket's linger time as the timeout.
pub struct Publisher {
    shared: Arc<Shared>,
    jobs: Mutex<Option<Sender<Job>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    session: String,
    _context: zmq::Context,
}

struct Shared {
    /// The queue's bytes: each queued message holds a [`Permit`] until it has been sent.
    queue: Arc<ByteBudget>,
    limit: usize,
    on_full: FullPolicy,
    counters: Counters,
    /// The endpoints, for messages.
    endpoints: String,
    /// Whether the socket uses CURVE, for messages.
    curve: bool,
    /// Acked delivery: what counts as delivered is what the collector acknowledged.
    acked: bool,
    /// Acked delivery's spool, where what is not acknowledged at `close` stays.
    spool_dir: Option<PathBuf>,
    close_deadline: Mutex<Option<Instant>>,
    linger: Duration,
}

/// How a release of queue bytes wakes the callers waiting for room. A notification is a system
/// call and a context switch: under [`FullPolicy::Block`], only once the queue has drained to
/// half its limit (or is empty), so that waiters then queue many messages per wake-up instead of
/// one per message sent. Callers waiting with a timeout are woken by every release, so that they
/// take room as soon as there is some.
fn wake_policy(on_full: FullPolicy) -> Wake {
    match on_full {
        FullPolicy::Block => Wake::AtHalf,
        FullPolicy::Timeout(_) | FullPolicy::Drop => Wake::EveryRelease,
    }
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    /// Raised by ZeroMQ's threads as each sent message is passed on.
    passed_on: Arc<AtomicU64>,
    /// `passed_on` when the socket closed, plus one: what stays delivered (0: still open).
    delivered_at_close: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
    /// Messages queued and not yet handed to ZeroMQ.
    queued: AtomicU64,
    raw_bytes: AtomicU64,
    wire_bytes: AtomicU64,
    /// Acked delivery: every `seq` below this is acknowledged (the session's end included).
    acknowledged: AtomicU64,
    /// Acked delivery: of those, refused by the collector.
    refused: AtomicU64,
    /// Acked delivery: a connection to the collector was made.
    connected: AtomicBool,
    /// Acked delivery: messages sent again.
    resent: AtomicU64,
    /// Acked delivery: messages of earlier sessions sent from the spool.
    recovered: AtomicU64,
    /// Acked delivery: messages of earlier sessions found in the spool and not acknowledged
    /// when the publisher thread ended.
    recovered_unsettled: AtomicU64,
}

/// What a queued message counts for against the queue limit: its arrays, plus an estimate of
/// what the queue holds for it besides (the job, names, shapes, buffer handles), so that the
/// limit also bounds the queue's memory when the arrays are small.
/// `cargo run --release --example memory_bounds` compares the estimate with the resident memory
/// per queued message (figures in BENCHMARKS.md).
fn queued_bytes<N: AsRef<str>>(name: &str, arrays: &[(N, ArrayBuffer)]) -> usize {
    const PER_MESSAGE: usize = 176;
    const PER_ARRAY: usize = 80;
    // Past one array, the list of arrays moves to the heap.
    const PER_SPILLED_ARRAY: usize = 128;
    let per_array: usize = arrays
        .iter()
        .map(|(n, a)| a.data().len() + PER_ARRAY + n.as_ref().len() + 8 * a.shape().len())
        .sum();
    let spilled = if arrays.len() > 1 {
        PER_SPILLED_ARRAY * arrays.len()
    } else {
        0
    };
    PER_MESSAGE + name.len() + per_array + spilled
}

enum Job {
    Send(Queued),
    Flush(Sender<()>),
}

/// A message as the caller's thread queues it. Names of up to 24 bytes, one array and shapes of
/// up to four dimensions are held inline: the caller allocates nothing for it (the channel
/// allocates one block per 31 messages). What the caller allocates, the publisher thread frees,
/// and such cross-thread traffic is what glibc's malloc handles worst.
struct Queued {
    name: CompactString,
    arrays: SmallVec<[(CompactString, ArrayBuffer); 1]>,
    attrs: Option<Map<String, Value>>,
    /// The message's bytes of the queue, given back once it has been sent (or dropped).
    permit: Permit<Arc<ByteBudget>>,
}

impl Publisher {
    /// The source name of a publisher not given one: `<host name>:<process id>`.
    pub fn default_source() -> String {
        let host = gethostname::gethostname().to_string_lossy().into_owned();
        format!("{host}:{}", std::process::id())
    }

    /// A builder with the defaults: PUSH, auto compression, 256 MiB queue, blocking when full.
    pub fn builder() -> PublisherBuilder {
        PublisherBuilder::default()
    }

    /// Queues `array` under `name`, copying it once (use [`Publisher::send_owned`] to move an
    /// owned array instead).
    pub fn send<S, D, T>(&self, name: &str, array: &ArrayBase<S, D>) -> Result<(), Error>
    where
        S: Data<Elem = T>,
        D: Dimension,
        T: Element,
    {
        self.send_record(name, [(name, ArrayBuffer::from_array(array))], None)
    }

    /// Queues an owned array under `name`; its buffer becomes the frame without a copy when it
    /// is C- or F-contiguous.
    pub fn send_owned<T: Element, D: Dimension>(
        &self,
        name: &str,
        array: Array<T, D>,
    ) -> Result<(), Error> {
        self.send_record(name, [(name, ArrayBuffer::from_owned(array))], None)
    }

    /// Queues several named arrays that arrive together, as one atomic multipart message, with
    /// optional user attributes.
    ///
    /// ```no_run
    /// use ndarray::Array2;
    /// use ndbridge::{ArrayBuffer, Publisher};
    ///
    /// let publisher = Publisher::builder().connect("tcp://127.0.0.1:5555").build()?;
    /// let u = Array2::<f32>::zeros((64, 64));
    /// let v = Array2::<f32>::ones((64, 64));
    /// let attrs = serde_json::json!({"step": 10, "dt": 0.01});
    /// publisher.send_record(
    ///     "velocity",
    ///     [("u", ArrayBuffer::from_owned(u)), ("v", ArrayBuffer::from_array(&v))],
    ///     attrs.as_object().cloned(),
    /// )?;
    /// # Ok::<(), ndbridge::Error>(())
    /// ```
    pub fn send_record<N: AsRef<str>>(
        &self,
        name: &str,
        arrays: impl IntoIterator<Item = (N, ArrayBuffer)>,
        attrs: Option<Map<String, Value>>,
    ) -> Result<(), Error> {
        let arrays: SmallVec<[(CompactString, ArrayBuffer); 1]> = arrays
            .into_iter()
            .map(|(n, a)| (CompactString::new(n.as_ref()), a))
            .collect();
        check_names(name, &arrays)?;
        let bytes = queued_bytes(name, &arrays);
        let Some(permit) = self.reserve(bytes)? else {
            return Ok(());
        };
        let job = Job::Send(Queued {
            name: CompactString::new(name),
            arrays,
            attrs,
            permit,
        });
        let queued = &self.shared.counters.queued;
        queued.fetch_add(1, Ordering::Relaxed);
        let sent = match &*self.jobs.lock().expect("jobs lock") {
            Some(jobs) => jobs.send(job).is_ok(),
            None => false,
        };
        if !sent {
            // The job, and with it the permit, was dropped: its bytes are back.
            queued.fetch_sub(1, Ordering::Relaxed);
            return Err(Error::Closed);
        }
        Ok(())
    }

    /// Takes `bytes` of the queue, waiting for room according to the policy; `Ok(None)`:
    /// dropped.
    fn reserve(&self, bytes: usize) -> Result<Option<Permit<Arc<ByteBudget>>>, Error> {
        let shared = &self.shared;
        let queue = || Arc::clone(&shared.queue);
        if let Some(permit) = Permit::try_acquire(queue(), bytes as u64) {
            return Ok(Some(permit));
        }
        match shared.on_full {
            FullPolicy::Drop => {
                shared.counters.dropped.fetch_add(1, Ordering::Relaxed);
                Ok(None)
            }
            FullPolicy::Block => Ok(Some(Permit::acquire(queue(), bytes as u64))),
            FullPolicy::Timeout(limit) => {
                // The clock is read only for a timed wait: not once per message.
                let started = Instant::now();
                let Some(deadline) = started.checked_add(limit) else {
                    return Ok(Some(Permit::acquire(queue(), bytes as u64)));
                };
                match Permit::acquire_until(queue(), bytes as u64, deadline) {
                    Some(permit) => Ok(Some(permit)),
                    None => Err(Error::QueueFull {
                        queued: shared.queue.used() as usize,
                        limit: shared.limit,
                        waited: started.elapsed(),
                    }),
                }
            }
        }
    }

    /// Waits until every message queued so far has been passed on by ZeroMQ (written to the
    /// operating system for a peer), at most `timeout`. [`Error::Timeout`] names how many were
    /// not; they stay queued and may still go out.
    pub fn flush(&self, timeout: Duration) -> Result<(), Error> {
        let started = Instant::now();
        let (ack, done) = crossbeam_channel::bounded(1);
        match &*self.jobs.lock().expect("jobs lock") {
            Some(jobs) => jobs.send(Job::Flush(ack)).map_err(|_| Error::Closed)?,
            None => return Err(Error::Closed),
        }
        let timed_out = |stats: PublisherStats| Error::Timeout {
            waited: timeout,
            pending: (stats.queued + stats.sent - stats.delivered - stats.refused) as usize,
        };
        if done.recv_timeout(timeout).is_err() {
            return Err(timed_out(self.stats()));
        }
        let sent = self.shared.counters.sent.load(Ordering::Relaxed);
        if self.shared.wait_delivered(sent, started + timeout) {
            Ok(())
        } else {
            Err(timed_out(self.stats()))
        }
    }

    /// Sends what is queued and lets ZeroMQ deliver it, for at most `timeout` in all, then stops
    /// the thread and closes the socket. Messages still queued at the deadline are dropped and
    /// counted; ZeroMQ keeps delivering what it holds until the deadline (its linger time), and
    /// the context waits for that when the publisher drops.
    pub fn close(&self, timeout: Duration) -> Result<PublisherStats, Error> {
        let now = Instant::now();
        let deadline = now
            .checked_add(timeout)
            .unwrap_or(now + Duration::from_secs(1 << 32));
        let dropped_before = self.shared.counters.dropped.load(Ordering::Relaxed);
        *self.shared.close_deadline.lock().expect("deadline lock") = Some(deadline);
        self.jobs.lock().expect("jobs lock").take();
        if let Some(thread) = self.thread.lock().expect("thread lock").take() {
            let _ = thread.join();
        }
        let stats = self.stats();
        let abandoned = stats.dropped - dropped_before;
        // Messages an earlier publisher left in the spool count too: they stay there.
        let recovered = self
            .shared
            .counters
            .recovered_unsettled
            .load(Ordering::Acquire);
        let undelivered = stats.sent - stats.delivered - stats.refused + recovered;
        let connected =
            !self.shared.acked || self.shared.counters.connected.load(Ordering::Relaxed);
        // With a spool, nothing is discarded: what is not acknowledged waits there.
        let spool = self.shared.spool_dir.is_some();
        if stats.sent > 0 && stats.delivered == 0 && (!self.shared.acked || !connected) && !spool {
            return Err(Error::NoPeer {
                endpoints: self.shared.endpoints.clone(),
                messages: (stats.sent + abandoned) as usize,
                curve: self.shared.curve,
            });
        }
        if self.shared.acked && abandoned + undelivered + stats.refused > 0 {
            return Err(Error::Unacknowledged {
                waited: timeout,
                unacknowledged: (abandoned + undelivered) as usize,
                refused: stats.refused as usize,
                kept: self.shared.spool_dir.clone().filter(|_| undelivered > 0),
            });
        }
        if abandoned + undelivered > 0 {
            return Err(Error::Timeout {
                waited: timeout,
                pending: (abandoned + undelivered) as usize,
            });
        }
        Ok(stats)
    }

    /// The session id in every header this publisher sends: 16 random hex digits chosen when
    /// it was built.
    pub fn session(&self) -> &str {
        &self.session
    }

    /// The counters now.
    pub fn stats(&self) -> PublisherStats {
        let c = &self.shared.counters;
        let sent = c.sent.load(Ordering::Relaxed);
        let (delivered, refused) = if self.shared.acked {
            // The session's end is acknowledged too, as one past the last record.
            let refused = c.refused.load(Ordering::Relaxed);
            let settled = c.acknowledged.load(Ordering::Acquire).min(sent);
            (settled.saturating_sub(refused), refused)
        } else {
            let delivered = match c.delivered_at_close.load(Ordering::Acquire) {
                0 => c.passed_on.load(Ordering::Acquire).min(sent),
                frozen => frozen - 1,
            };
            (delivered, 0)
        };
        PublisherStats {
            sent,
            delivered,
            refused,
            resent: c.resent.load(Ordering::Relaxed),
            recovered: c.recovered.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            queued: c.queued.load(Ordering::Relaxed),
            raw_bytes: c.raw_bytes.load(Ordering::Relaxed),
            wire_bytes: c.wire_bytes.load(Ordering::Relaxed),
        }
    }
}

// Simulation threads share one publisher: it must stay `Send + Sync` (checked at compile time).
const _: () = {
    fn send_and_sync<T: Send + Sync>() {}
    let _ = send_and_sync::<Publisher>;
};

impl Drop for Publisher {
    /// Closes with the socket's linger time as the timeout (2 s by default).
    fn drop(&mut self) {
        let _ = self.close(self.shared.linger);
    }
}

impl Shared {
    /// Waits until `sent` messages are delivered or `deadline` passes; true if they are.
    /// Delivered: passed on by ZeroMQ, or in acked delivery settled by the collector (the
    /// publisher thread reads its acknowledgements meanwhile).
    fn wait_delivered(&self, sent: u64, deadline: Instant) -> bool {
        let count = if self.acked {
            &self.counters.acknowledged
        } else {
            &self.counters.passed_on
        };
        wait_for(count, sent, deadline)
    }

    fn past_close_deadline(&self) -> bool {
        matches!(*self.close_deadline.lock().expect("deadline lock"), Some(d) if Instant::now() >= d)
    }
}

/// Seconds since the Unix epoch, now (0 on a clock before it).
fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Waits until `count` reaches `target` or `deadline` passes; true if it has.
fn wait_for(count: &AtomicU64, target: u64, deadline: Instant) -> bool {
    let mut pause = Duration::from_micros(50);
    while count.load(Ordering::Acquire) < target {
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(5));
    }
    true
}

/// The publisher thread: owns the socket, encodes what the handles queue and sends it.
struct SendLoop {
    socket: zmq::Socket,
    kind: SocketKind,
    source: String,
    session: String,
    seq: u64,
    compression: Compression,
    /// The link is local ([`Link`]): the automatic codec sends raw without measuring.
    local_link: bool,
    /// The automatic codec on a network link: what the link delivers, and whether to compress.
    pacing: LinkPacing,
    /// When large arrays are compressed in parallel chunks.
    chunking: Chunking,
    /// The zero of the monotonic clock `pacing` is given.
    started: Instant,
    linger: Duration,
    shared: Arc<Shared>,
    /// Reuses the header bytes that consecutive messages share.
    encoder: Encoder,
    /// `(source, session)` as set up, to restore the two fields above if an encoding fails
    /// after taking them.
    ids: (String, String),
    /// Acked delivery: the window of unacknowledged messages, and the acknowledgements.
    acked: Option<AckedLink>,
}

impl SendLoop {
    fn run(mut self, jobs: Receiver<Job>) {
        // Set up this thread's zstd context now, so that the first measurement of the codec's
        // speed does not include it.
        if let Compression::Auto { level, shuffle, .. } | Compression::Zstd { level, shuffle } =
            self.compression
        {
            let warm_up = bytes::Bytes::from_static(&[0u8; 64]);
            let _ = encode_buffer(&warm_up, 8, Compression::Zstd { level, shuffle });
        }
        while let Some(job) = self.next_job(&jobs) {
            match job {
                Job::Send(queued) => {
                    self.send(queued);
                    self.shared.counters.queued.fetch_sub(1, Ordering::Relaxed);
                }
                Job::Flush(ack) => {
                    let _ = ack.send(());
                }
            }
        }
        self.finish();
    }

    /// The next job, waiting for one; `None` once every handle is gone. Finding none waiting
    /// tells the automatic codec that the producer, not the link, sets the pace.
    fn next_job(&mut self, jobs: &Receiver<Job>) -> Option<Job> {
        if let Some(link) = &mut self.acked {
            if let Ok(job) = jobs.try_recv() {
                // Acknowledgements are read every so many messages, not for each.
                link.pump_now_and_then(&mut self.socket, &self.shared.counters);
                return Some(job);
            }
            // Acknowledgements are read while waiting, so that a flush or close sees them.
            while !link.all_settled() {
                link.pump(&mut self.socket, &self.shared.counters, 0);
                match jobs.recv_timeout(Duration::from_millis(1)) {
                    Ok(job) => return Some(job),
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                    Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return None,
                }
            }
        }
        match jobs.try_recv() {
            Ok(job) => Some(job),
            Err(crossbeam_channel::TryRecvError::Empty) if self.paced() => {
                let passed_on = self.shared.counters.passed_on.load(Ordering::Acquire);
                self.pacing.idle(self.clock(), passed_on);
                let job = jobs.recv().ok();
                self.pacing.woke(self.clock());
                job
            }
            Err(crossbeam_channel::TryRecvError::Empty) => jobs.recv().ok(),
            Err(crossbeam_channel::TryRecvError::Disconnected) => None,
        }
    }

    /// Gives ZeroMQ the rest of the close timeout to pass on what it holds, ends the session
    /// once every record (at least one) is passed on, then closes the socket at once,
    /// discarding the rest: what counts as delivered is fixed then.
    fn finish(&mut self) {
        let deadline = self
            .shared
            .close_deadline
            .lock()
            .expect("deadline lock")
            .unwrap_or_else(|| Instant::now() + self.linger);
        let shared = Arc::clone(&self.shared);
        let counters = &shared.counters;
        let sent = counters.sent.load(Ordering::Relaxed);
        // A session without records is not ended: no collector heard of it, and without one
        // the end would wait out the deadline.
        let all_out = match self.acked {
            Some(_) => self.wait_acknowledged(deadline),
            None => shared.wait_delivered(sent, deadline),
        };
        if all_out && sent > 0 {
            self.end_session(deadline);
        }
        if let Some(link) = &self.acked {
            counters
                .recovered_unsettled
                .store(link.recovered_unsettled(), Ordering::Release);
        }
        let _ = self.socket.set_linger(0);
        let delivered = counters
            .passed_on
            .load(Ordering::Acquire)
            .min(counters.sent.load(Ordering::Relaxed));
        counters
            .delivered_at_close
            .store(delivered + 1, Ordering::Release);
    }

    /// Sends the message that ends the session ([`Header::end_of`]) to a collector (PUSH
    /// sockets only) and waits until `deadline` for ZeroMQ to pass it on. Best effort: without
    /// a connected collector or room in ZeroMQ's queue it is not sent, and the collector then
    /// reports the session as not ended. It is no record: no counter counts it.
    fn end_session(&mut self, deadline: Instant) {
        if self.kind != SocketKind::Push {
            return;
        }
        let end = Header::end_of(&self.source, &self.session, self.seq, unix_now());
        let released = Arc::new(AtomicU64::new(0));
        let frames = [bytes::Bytes::from(end.to_json())];
        if let Some(spooled) = self.spool(&frames, true) {
            if spooled {
                self.wait_acknowledged(deadline);
            }
            return;
        }
        match transport::send_tracked(&mut self.socket, &frames, zmq::DONTWAIT, &released) {
            Ok(()) => match &mut self.acked {
                Some(link) => {
                    link.sent(self.seq, frames.to_vec());
                    self.wait_acknowledged(deadline);
                }
                None => {
                    wait_for(&released, 1, deadline);
                }
            },
            Err(e) => tracing::debug!("the session's end was not sent: {e}"),
        }
    }

    /// Acked delivery: reads acknowledgements until every message sent is settled or
    /// `deadline` passes; true if settled.
    fn wait_acknowledged(&mut self, deadline: Instant) -> bool {
        let Some(link) = &mut self.acked else {
            return true;
        };
        loop {
            link.pump(&mut self.socket, &self.shared.counters, 0);
            if link.all_settled() {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            link.pump(
                &mut self.socket,
                &self.shared.counters,
                left.as_millis().clamp(1, 10) as i64,
            );
        }
    }

    /// Acked delivery: waits until the window has room for `frames`, reading acknowledgements;
    /// false when the close deadline passed first.
    fn wait_for_window(&mut self, frames: &[bytes::Bytes]) -> bool {
        let Some(link) = &mut self.acked else {
            return true;
        };
        if link.has_room(frames) {
            return true;
        }
        loop {
            link.pump(&mut self.socket, &self.shared.counters, 0);
            if link.has_room(frames) {
                return true;
            }
            if self.shared.past_close_deadline() {
                return false;
            }
            link.pump(&mut self.socket, &self.shared.counters, 10);
        }
    }

    /// Encodes and sends one queued message, and counts what became of it.
    fn send(&mut self, queued: Queued) {
        // The queue's bytes go back when this returns: once the message is sent or dropped.
        let Queued {
            name,
            arrays,
            attrs,
            permit: _queue_bytes,
        } = queued;
        let shared = Arc::clone(&self.shared);
        let counters = &shared.counters;
        if self.shared.past_close_deadline() {
            counters.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        // Only the automatic codec on a network weighs the message (no work per message else).
        let raw_bytes: u64 = if self.paced() {
            let raw_bytes = arrays.iter().map(|(_, a)| a.data().len() as u64).sum();
            self.wait_for_room(raw_bytes);
            raw_bytes
        } else {
            0
        };
        let (policy, chunked) = self.choose_compression(&arrays, raw_bytes);
        let Some(message) = self.encode(name, arrays, attrs, policy, chunked) else {
            counters.failed.fetch_add(1, Ordering::Relaxed);
            return;
        };
        match self.spool(&message.frames, false) {
            Some(true) => return self.count_sent(&message, policy != Compression::Raw),
            Some(false) => {
                counters.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            None => {}
        }
        if !self.wait_for_window(&message.frames) {
            counters.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        match self.transmit(&message) {
            Sent::Yes => {
                let seq = self.seq;
                self.count_sent(&message, policy != Compression::Raw);
                if let Some(link) = &mut self.acked {
                    // The window keeps the frames themselves: no copy per message.
                    link.sent(seq, message.frames);
                }
            }
            Sent::Dropped => {
                counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Sent::Failed => {
                counters.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Acked delivery with a spool: waits until the spool has room, then spools the message
    /// under the next `seq` and sends it, or leaves it waiting in the spool. A spool that
    /// cannot write (a full disk) is tried again, with a growing pause: a message never goes
    /// without it (a later publisher on the spool ends the session after its last message
    /// there). `Some(true)`: spooled; `Some(false)`: the close deadline passed first; `None`:
    /// no spool.
    fn spool(&mut self, frames: &[bytes::Bytes], end: bool) -> Option<bool> {
        let link = self.acked.as_mut().filter(|l| l.spool_dir().is_some())?;
        let counters = &self.shared.counters;
        let mut pause = Duration::from_millis(50);
        loop {
            if self.shared.past_close_deadline() {
                return Some(false);
            }
            if link.spool_full() {
                link.pump(&mut self.socket, counters, 10);
                continue;
            }
            let ids = (&self.source[..], &self.session[..]);
            let passed_on = &counters.passed_on;
            if link.spool_and_send(&mut self.socket, ids, self.seq, end, frames, passed_on) {
                return Some(true);
            }
            // Not written (logged): acknowledgements meanwhile may free the disk.
            let until = Instant::now() + pause;
            pause = (pause * 2).min(Duration::from_secs(1));
            while Instant::now() < until && !self.shared.past_close_deadline() {
                link.pump(&mut self.socket, counters, 10);
            }
        }
    }

    /// Counts a message ZeroMQ took (`compressed` when the policy asked for compression), and
    /// notes it for the automatic codec until ZeroMQ releases it.
    fn count_sent(&mut self, message: &EncodedMessage, compressed: bool) {
        let (raw, wire) = (message.raw_bytes(), message.wire_bytes());
        if self.paced() {
            self.pacing.handed(raw, wire, compressed);
        }
        self.seq += 1;
        let counters = &self.shared.counters;
        counters.sent.fetch_add(1, Ordering::Relaxed);
        counters.raw_bytes.fetch_add(raw, Ordering::Relaxed);
        counters.wire_bytes.fetch_add(wire, Ordering::Relaxed);
    }

    /// Only the automatic mode on a network measures the codec and the link (clock reads cost
    /// per message).
    fn paced(&self) -> bool {
        matches!(self.compression, Compression::Auto { .. }) && !self.local_link
    }

    /// Encodes a queued message under the next `seq` with `policy`, timing the compression for
    /// the automatic codec; `None` when it cannot be encoded (logged).
    fn encode(
        &mut self,
        name: CompactString,
        arrays: SmallVec<[(CompactString, ArrayBuffer); 1]>,
        attrs: Option<Map<String, Value>>,
        policy: Compression,
        chunked: bool,
    ) -> Option<EncodedMessage> {
        // The header takes the ids for the message and they are taken back from it afterwards:
        // no copy per message.
        let envelope = Envelope {
            name: name.into_string(),
            source: std::mem::take(&mut self.source),
            session: std::mem::take(&mut self.session),
            seq: self.seq,
            time: unix_now(),
            attrs,
        };
        let encode_started = (self.paced() && policy != Compression::Raw).then(Instant::now);
        let arrays = arrays
            .into_iter()
            .map(|(name, array)| (name.into_string(), array))
            .collect();
        let encoded = if chunked {
            self.encoder.encode_chunked(envelope, arrays, policy)
        } else {
            self.encoder.encode(envelope, arrays, policy)
        };
        let mut message = match encoded {
            Ok(message) => message,
            Err(e) => {
                self.source.clone_from(&self.ids.0);
                self.session.clone_from(&self.ids.1);
                tracing::error!("cannot encode a message: {e}");
                return None;
            }
        };
        self.source = std::mem::take(&mut message.header.source);
        self.session = std::mem::take(&mut message.header.session);
        if let Some(started) = encode_started {
            let header = message.frames[0].len() as u64;
            self.pacing.observe_compress(
                message.raw_bytes(),
                message.wire_bytes() - header,
                started.elapsed().as_secs_f64(),
                chunked,
            );
        }
        Some(message)
    }

    /// Hands `message` to ZeroMQ, retrying a full queue until the close deadline. For the
    /// automatic codec, a first try that finds ZeroMQ's queue full (its high-water mark in
    /// messages reached before the bytes bound) tells that the link sets the pace.
    fn transmit(&mut self, message: &EncodedMessage) -> Sent {
        // On PUB sockets the record name goes first, as the topic.
        let with_topic: Vec<bytes::Bytes>;
        let frames = if self.kind.has_topic() {
            with_topic = std::iter::once(bytes::Bytes::from(message.header.name.clone()))
                .chain(message.frames.iter().cloned())
                .collect();
            &with_topic
        } else {
            &message.frames
        };
        let passed_on = &self.shared.counters.passed_on;
        let mut flags = if self.paced() { zmq::DONTWAIT } else { 0 };
        loop {
            match transport::send_tracked(&mut self.socket, frames, flags, passed_on) {
                Ok(()) => return Sent::Yes,
                Err(zmq::Error::EAGAIN) if flags != 0 => {
                    self.pacing.blocked();
                    flags = 0;
                }
                // A full queue (EAGAIN) or a signal (EINTR): try again until the deadline.
                Err(zmq::Error::EAGAIN | zmq::Error::EINTR)
                    if !self.shared.past_close_deadline() =>
                {
                    continue
                }
                Err(zmq::Error::EAGAIN | zmq::Error::EINTR) => return Sent::Dropped,
                Err(e) => {
                    tracing::error!("cannot send a message: {e}");
                    return Sent::Failed;
                }
            }
        }
    }

    /// The longest pause between two looks at what ZeroMQ released, while waiting for room: on
    /// a 10 Gbit/s link a 4 MiB record leaves in about 3.5 ms, and a longer pause would leave
    /// the link idle.
    const MAX_ROOM_PAUSE: Duration = Duration::from_millis(1);

    /// Waits until ZeroMQ holds few enough bytes for the link that a message of `raw` bytes may
    /// join them (the rest of a burst waits here, not yet encoded, and is encoded as the link
    /// is then known to deliver), or until the close deadline.
    fn wait_for_room(&mut self, raw: u64) {
        let mut pause = Duration::from_micros(50);
        loop {
            let passed_on = self.shared.counters.passed_on.load(Ordering::Acquire);
            self.pacing.released(self.clock(), passed_on);
            if self.pacing.has_room(raw) || self.shared.past_close_deadline() {
                return;
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Self::MAX_ROOM_PAUSE);
        }
    }

    /// Seconds since the publisher started, for the automatic codec.
    fn clock(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }
}

/// What became of a message handed to ZeroMQ.
enum Sent {
    Yes,
    /// Still refused at the close deadline.
    Dropped,
    /// An error other than a full queue (logged).
    Failed,
}

impl SendLoop {
    /// The policy for the next message, of `raw_bytes`, and whether its large arrays are
    /// compressed in parallel chunks. `Auto` goes raw unless the link delivers more compressed
    /// (see [`LinkPacing`]); then it compresses, in chunks when one core would be too slow,
    /// and keeps the result only when it saves enough.
    fn choose_compression(
        &mut self,
        arrays: &[(CompactString, ArrayBuffer)],
        raw_bytes: u64,
    ) -> (Compression, bool) {
        let always = self.chunking == Chunking::Always;
        let Compression::Auto { level, shuffle, .. } = self.compression else {
            let large = || arrays.iter().any(|(_, a)| a.data().len() >= CHUNKED_FROM);
            return (self.compression, always && large());
        };
        if self.local_link {
            return (Compression::Raw, false);
        }
        if self.pacing.wants_sample(raw_bytes) {
            self.measure_sample(arrays, Compression::Zstd { level, shuffle });
        }
        if self.pacing.should_compress() {
            // Only an array of two chunks or more is compressed in parallel: a message without
            // one is compressed on one core, and measured as such.
            let large = arrays.iter().any(|(_, a)| a.data().len() >= CHUNKED_FROM);
            let wanted = always || self.chunking == Chunking::Auto && self.pacing.should_chunk();
            (self.compression, wanted && large)
        } else {
            (Compression::Raw, false)
        }
    }

    /// Compresses up to 256 KiB from the middle of the largest array to measure the codec,
    /// twice, and counts the faster: the first time in a stream runs on cold caches and fresh
    /// buffers, at half the speed or less.
    fn measure_sample(&mut self, arrays: &[(CompactString, ArrayBuffer)], policy: Compression) {
        const SAMPLE: usize = 256 << 10;
        let Some((_, largest)) = arrays.iter().max_by_key(|(_, a)| a.data().len()) else {
            return;
        };
        let itemsize = largest.dtype().itemsize();
        let data = largest.data();
        let len = data.len().min(SAMPLE) / itemsize * itemsize;
        if len == 0 {
            return;
        }
        let start = (data.len() - len) / 2 / itemsize * itemsize;
        let sample = data.slice(start..start + len);
        let mut fastest: Option<(f64, usize)> = None;
        for _ in 0..2 {
            let started = Instant::now();
            let Ok(encoded) = encode_buffer(&sample, itemsize, policy) else {
                return;
            };
            let secs = started.elapsed().as_secs_f64();
            if fastest.is_none_or(|(best, _)| secs < best) {
                fastest = Some((secs, encoded.frame.len()));
            }
        }
        if let Some((secs, compressed)) = fastest {
            self.pacing
                .observe_compress(len as u64, compressed as u64, secs, false);
        }
    }
}

/// 16 random hex digits.
pub(crate) fn new_session_id() -> String {
    let mut bytes = [0u8; 8];
    if getrandom::getrandom(&mut bytes).is_err() {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        bytes = (nanos ^ u64::from(std::process::id()).rotate_left(32)).to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::{queued_bytes, wake_policy, FullPolicy, Wake};
    use crate::wire::ArrayBuffer;
    use ndarray::{Array1, Array2};
    use std::time::Duration;

    #[test]
    fn a_queued_message_counts_its_arrays_and_what_the_queue_holds_besides() {
        let one = [(
            "payload".to_owned(),
            ArrayBuffer::from_owned(Array1::<f64>::zeros(100)),
        )];
        // 800 bytes of array, 278 of bookkeeping (265 measured besides the array).
        assert_eq!(queued_bytes("payload", &one), 800 + 278);
        let two = [
            (
                "a".to_owned(),
                ArrayBuffer::from_owned(Array2::<f32>::zeros((4, 4))),
            ),
            (
                "b".to_owned(),
                ArrayBuffer::from_owned(Array1::<u8>::zeros(0)),
            ),
        ];
        assert_eq!(
            queued_bytes("r", &two),
            64 + 176 + 1 + (80 + 1 + 16) + (80 + 1 + 8) + 2 * 128
        );
        let (u, v) = (
            ArrayBuffer::from_owned(Array1::<f64>::zeros(50)),
            ArrayBuffer::from_owned(Array1::<f64>::zeros(50)),
        );
        // The memory_bounds example's record of two arrays: 615 estimated, 568 measured.
        assert_eq!(queued_bytes("state", &[("u", u), ("v", v)]), 800 + 615);
    }

    #[test]
    fn blocked_callers_wake_at_half_and_timed_ones_at_every_release() {
        assert_eq!(wake_policy(FullPolicy::Block), Wake::AtHalf);
        let timeout = FullPolicy::Timeout(Duration::from_millis(10));
        assert_eq!(wake_policy(timeout), Wake::EveryRelease);
        assert_eq!(wake_policy(FullPolicy::Drop), Wake::EveryRelease);
    }
}

//! The collector: its topology and lifecycle. One receiver thread owns the input socket and
//! feeds a bounded channel; N decode workers decode and pass records to the sinks; a shutdown
//! value stops the receiver, after which the workers drain the channel and the sinks finish.
//! Small batches of cheap records are handled by the receiver itself while the workers are idle
//! (see [`CollectorBuilder::inline_cost`]).
//!
//! ```text
//! socket => receiver --(bounded channel, in-flight byte cap)--> decode workers --> sinks
//!              `--(small, cheap batches, workers idle)--> sinks
//! ```
//!
//! Inside: `receiver` (the thread that owns the input socket and batches what it reads, and
//! in acked delivery sends the acknowledgements), `acks` (acked delivery's ledger and group
//! commit),
//! `pool` (the batches it hands over and the decode workers that take them), `peers` (the
//! input socket's connections, counted and bounded), `stats` (every counter and the sequence
//! tracking behind the report), `sink` ([`Sink`], the disk and forward sinks), `shutdown`
//! ([`Shutdown`]), `ratelimit` (warnings about bad input, at most a burst per second).

mod acks;
mod peers;
mod pool;
mod ratelimit;
mod receiver;
mod shutdown;
mod sink;
mod stats;

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use serde::Serialize;

use crate::budget::{ByteBudget, Wake};
use crate::delivery::Delivery;
use crate::error::Error;
use crate::keys::{Allowlist, KeyPair};
use crate::transport::{self, Curve, Endpoint, SocketKind, SocketOptions};
use crate::wire::{Decoder, Limits};
use pool::Pool;
use ratelimit::RateLimitedLog;

pub use shutdown::Shutdown;
pub use sink::{DiskSink, ForwardSink, Received, Sink, SinkError, StoreSink};
use stats::Stats;
pub use stats::{SourceStats, StatsSnapshot};

/// How long a stopping collector retries sink errors that may pass, by default.
const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Builds and starts a [`Collector`].
///
/// ```
/// use ndbridge::collector::{Collector, DiskSink};
///
/// let out = tempfile::tempdir()?;
/// let collector = Collector::builder()
///     .bind("tcp://127.0.0.1:*")
///     .workers(2)
///     .sink(DiskSink::new(out.path())?)
///     .start()?;
/// assert!(collector.endpoint().starts_with("tcp://127.0.0.1:"));
/// let summary = collector.stop();
/// assert_eq!(summary.stats.stored, 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct CollectorBuilder {
    endpoints: Vec<Endpoint>,
    kind: SocketKind,
    workers: usize,
    inline_cost: Duration,
    inflight_bytes: u64,
    limits: Limits,
    sinks: Vec<Arc<dyn Sink>>,
    options: SocketOptions,
    report_every: Option<Duration>,
    context: Option<zmq::Context>,
    shutdown: Shutdown,
    drain_timeout: Duration,
    max_peers: u64,
    curve: Option<(KeyPair, Arc<Allowlist>)>,
    delivery: Delivery,
    commit_interval: Duration,
}

impl Default for CollectorBuilder {
    fn default() -> Self {
        CollectorBuilder {
            endpoints: Vec::new(),
            kind: SocketKind::Pull,
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            inline_cost: receiver::INLINE_COST,
            inflight_bytes: 1 << 30,
            limits: Limits::default(),
            sinks: Vec::new(),
            options: SocketOptions::default(),
            report_every: None,
            context: None,
            shutdown: Shutdown::new(),
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            max_peers: peers::DEFAULT_MAX_PEERS,
            curve: None,
            delivery: Delivery::FireAndForget,
            commit_interval: acks::COMMIT_INTERVAL,
        }
    }
}

impl CollectorBuilder {
    /// Listens on `addr` (publishers connect); may be called several times.
    pub fn bind(mut self, addr: impl Into<String>) -> Self {
        self.endpoints.push(Endpoint::bind(addr));
        self
    }

    /// Connects to `addr` (for example a publisher that binds a PUB socket).
    pub fn connect(mut self, addr: impl Into<String>) -> Self {
        self.endpoints.push(Endpoint::connect(addr));
        self
    }

    /// The input socket kind: [`SocketKind::Pull`] (default) or [`SocketKind::Sub`] to tap
    /// PUB publishers.
    pub fn kind(mut self, kind: SocketKind) -> Self {
        self.kind = kind;
        self
    }

    /// Decode worker threads. Default: the number of cores.
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers.max(1);
        self
    }

    /// Records that have recently cost at most this much each to decode and store are handled
    /// on the receiver thread, in small batches while the workers are idle: waking a worker
    /// costs more than such a record. `Duration::ZERO` sends every batch to the workers.
    /// Default: 10 µs (small raw arrays with quick sinks; not files, not decompression).
    pub fn inline_cost(mut self, limit: Duration) -> Self {
        self.inline_cost = limit;
        self
    }

    /// Cap on bytes received but not yet through the sinks, and, separately, on what decoding
    /// them allocates (what compressed frames decode to). Default: 1 GiB.
    pub fn max_inflight_bytes(mut self, bytes: u64) -> Self {
        self.inflight_bytes = bytes.max(1);
        self
    }

    /// Decoder limits. Default: [`Limits::default`].
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Adds a sink; records go to every sink, in the order added.
    pub fn sink(self, sink: impl Sink + 'static) -> Self {
        self.shared_sink(Arc::new(sink))
    }

    /// Adds a sink the caller keeps a handle on.
    pub fn shared_sink(mut self, sink: Arc<dyn Sink>) -> Self {
        self.sinks.push(sink);
        self
    }

    /// Input socket options (receive high-water mark, ...).
    pub fn socket_options(mut self, options: SocketOptions) -> Self {
        self.options = options;
        self
    }

    /// Logs one stats line (`tracing` at info level) at this interval while running.
    pub fn report_every(mut self, interval: Duration) -> Self {
        self.report_every = Some(interval);
        self
    }

    /// Shares a ZeroMQ context (needed for `inproc://` endpoints).
    pub fn context(mut self, context: zmq::Context) -> Self {
        self.context = Some(context);
        self
    }

    /// Most publishers connected to the input socket at once (accepted connections); one more
    /// is shut down before its handshake completes, so before any message crosses, and counted
    /// (`refused_peers`); it keeps its messages and retries later. With the receive high-water mark
    /// and [`Limits::max_wire_bytes`], this bounds what ZeroMQ queues before the in-flight cap
    /// applies. Default: 64.
    pub fn max_peers(mut self, peers: u64) -> Self {
        self.max_peers = peers;
        self
    }

    /// How long a stopping collector keeps retrying records that a sink could not take for a
    /// reason that may pass (a full disk: [`SinkError::may_pass`]) before it counts them as
    /// sink errors and finishes. Until it stops, such records are retried without limit.
    /// Default: 30 s.
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// Authenticates every publisher with CURVE and encrypts what it sends: `own` is the
    /// collector's key pair (publishers are given its public key), `allow` the publishers'
    /// keys. A peer with another key, or without CURVE, is refused before any message crosses,
    /// and counted (`refused_keys`, `failed_handshakes`). Each record is counted and stored
    /// under the name of the key that sent it; a header naming another source is counted
    /// (`reattributed`) and kept as [`Received::claimed_source`]. The context
    /// ([`CollectorBuilder::context`]) must have no ZAP handler of its own. Default: no CURVE.
    pub fn curve(mut self, own: KeyPair, allow: Allowlist) -> Self {
        self.curve = Some((own, Arc::new(allow)));
        self
    }

    /// How publishers deliver to this collector; every publisher must use the same mode.
    /// [`Delivery::Acked`] makes the input socket a ROUTER: each record is claimed (a copy
    /// that came before is dropped and counted as `redelivered`), passed to the sinks, made
    /// durable by a group commit ([`Sink::sync`]) and then acknowledged to its publisher.
    /// What the sinks held before the start ([`Sink::stored_before`]) counts as stored, so
    /// a restarted collector does not store a resent record twice. Only with
    /// [`SocketKind::Pull`] (the default kind). Default: [`Delivery::FireAndForget`].
    pub fn delivery(mut self, delivery: Delivery) -> Self {
        self.delivery = delivery;
        self
    }

    /// In acked delivery, how long a written record waits at most for the group commit that
    /// makes it durable and acknowledges it; a commit also starts once 64 MiB wait. Longer
    /// intervals sync less often. Default: 5 ms.
    pub fn commit_interval(mut self, interval: Duration) -> Self {
        self.commit_interval = interval;
        self
    }

    /// Uses this shutdown flag (for example one registered with signal handlers).
    pub fn shutdown(mut self, shutdown: Shutdown) -> Self {
        self.shutdown = shutdown;
        self
    }

    /// Opens the input socket and starts the receiver, the workers and the reporter. A kind
    /// other than Pull or Sub is [`Error::Usage`].
    pub fn start(self) -> Result<Collector, Error> {
        self.check_kind()?;
        let context = self.context.clone().unwrap_or_default();
        let (socket, zap) = self.open_input(&context)?;
        let endpoints = bound_endpoints(&socket, &self.endpoints);
        let stats = Arc::new(Stats::new(self.inflight_bytes));
        let committer = (self.delivery == Delivery::Acked)
            .then(|| Arc::new(acks::Committer::new(self.commit_interval)));
        for sink in &self.sinks {
            sink.stored_before(&mut |source, session, seq| {
                stats.on_stored_before(source, session, seq);
                if let Some(committer) = &committer {
                    committer.ledger.stored_before(source, session, seq);
                }
            });
        }
        let peers = peers::PeerGuard::start(
            &context,
            &socket,
            zap,
            self.max_peers,
            self.curve.as_ref().map(|(_, allow)| Arc::clone(allow)),
            Arc::clone(&stats),
        )?;
        let drain = Arc::new(pool::Drain::new(self.shutdown.clone(), self.drain_timeout));
        let pool = Arc::new(self.pool(&stats, &drain, committer.clone()));
        let (acks_in, commit) = match committer {
            Some(committer) => {
                let (pull, push) = acks::socket_pair(&context)?;
                let sinks = self.sinks.clone();
                let commit =
                    acks::CommitThread::start(committer, sinks, Arc::clone(&stats), drain, push)?;
                (Some(pull), Some(commit))
            }
            None => (None, None),
        };
        let (tx, rx) = crossbeam_channel::bounded(self.workers * 4);
        let workers = self.spawn_workers(&pool, rx)?;
        let receiver = self.spawn_receiver(socket, acks_in, pool, tx)?;
        let reporter = {
            let (stats, shutdown) = (Arc::clone(&stats), self.shutdown.clone());
            let (sinks, report_every) = (self.sinks.clone(), self.report_every);
            spawn("ndbridge-flush".into(), move || {
                flush_loop(&stats, &sinks, &shutdown, report_every)
            })?
        };
        Ok(Collector {
            endpoints,
            stats,
            sinks: self.sinks,
            shutdown: self.shutdown,
            receiver: Some(receiver),
            workers,
            commit,
            reporter: Some(reporter),
            _peers: peers,
            _context: context,
        })
    }

    /// The input socket's kind must be Pull or Sub, and Pull in acked delivery.
    fn check_kind(&self) -> Result<(), Error> {
        if !matches!(self.kind, SocketKind::Pull | SocketKind::Sub) {
            return Err(Error::Usage {
                what: "CollectorBuilder::kind",
                expected: "SocketKind::Pull or SocketKind::Sub",
                found: format!("SocketKind::{:?}", self.kind),
            });
        }
        if self.delivery == Delivery::Acked && self.kind != SocketKind::Pull {
            return Err(Error::Usage {
                what: "CollectorBuilder::delivery",
                expected: "Delivery::Acked with SocketKind::Pull (publishers connect to it)",
                found: format!("SocketKind::{:?}", self.kind),
            });
        }
        Ok(())
    }

    /// Opens the input socket, with the admission handler bound first (so that no handshake on
    /// the socket finds it missing) and no message larger than the limits allow, frames counted.
    fn open_input(
        &self,
        context: &zmq::Context,
    ) -> Result<(zmq::Socket, Option<zmq::Socket>), Error> {
        let zap = peers::bind_zap(context);
        if self.curve.is_some() && zap.is_none() {
            return Err(Error::Usage {
                what: "CollectorBuilder::curve",
                expected:
                    "a ZeroMQ context without a ZAP handler (the collector's checks the keys)",
                found: "a context with a ZAP handler already".to_owned(),
            });
        }
        let options = SocketOptions {
            // Each handshake waits for `peers` to weigh its connection.
            admission: zap.is_some(),
            max_message_bytes: Some(
                self.options
                    .max_message_bytes
                    .unwrap_or(self.limits.max_wire_bytes()),
            ),
            ..self.options
        };
        let kind = match self.delivery {
            Delivery::Acked => SocketKind::Router,
            Delivery::FireAndForget => self.kind,
        };
        let socket = transport::open(
            context,
            kind,
            &self.endpoints,
            &options,
            self.curve.as_ref().map(|(own, _)| Curve::Server(own)),
        )?;
        Ok((socket, zap))
    }

    /// What the decode workers (and the receiver, for the batches it handles) share.
    fn pool(
        &self,
        stats: &Arc<Stats>,
        drain: &Arc<pool::Drain>,
        acks: Option<Arc<acks::Committer>>,
    ) -> Pool {
        Pool {
            limits: self.limits,
            has_topic: self.kind.has_topic(),
            authenticated: self.curve.is_some(),
            sinks: self.sinks.clone(),
            stats: Arc::clone(stats),
            decode_budget: ByteBudget::new(self.inflight_bytes, Wake::EveryRelease),
            log: RateLimitedLog::new(),
            drain: Arc::clone(drain),
            acks,
            cost_ns: AtomicU64::new(pool::UNMEASURED_COST_NS),
        }
    }

    /// Starts the decode workers on the receiving end of the batch channel.
    fn spawn_workers(
        &self,
        pool: &Arc<Pool>,
        rx: crossbeam_channel::Receiver<pool::Batch>,
    ) -> Result<Vec<JoinHandle<()>>, Error> {
        (0..self.workers)
            .map(|i| {
                let (pool, rx) = (Arc::clone(pool), rx.clone());
                spawn(format!("ndbridge-decode-{i}"), move || pool.decode_loop(rx))
            })
            .collect()
    }

    /// Starts the receiver thread: it owns `socket` and takes the in-flight budget.
    fn spawn_receiver(
        &self,
        socket: zmq::Socket,
        acks_in: Option<zmq::Socket>,
        pool: Arc<Pool>,
        tx: crossbeam_channel::Sender<pool::Batch>,
    ) -> Result<JoinHandle<()>, Error> {
        let budget = Arc::new(ByteBudget::new(self.inflight_bytes, Wake::EveryRelease));
        let stats = Arc::clone(&pool.stats);
        let shutdown = self.shutdown.clone();
        // Topic, header and one frame per array, plus one so a longer message is seen as such.
        let max_frames = self.limits.max_arrays.saturating_add(3);
        let inline_cost = self.inline_cost;
        spawn("ndbridge-receiver".into(), move || {
            let spare_cores = std::thread::available_parallelism().is_ok_and(|n| n.get() > 2);
            let receiver = receiver::Receiver {
                pool: &pool,
                budget,
                stats,
                shutdown,
                max_frames,
                spare_cores,
                inline_cost,
                decoder: Decoder::new(pool.limits),
                acks: acks_in,
            };
            receiver.run(socket, tx)
        })
    }
}

fn spawn(name: String, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>, Error> {
    std::thread::Builder::new()
        .name(name.clone())
        .spawn(f)
        .map_err(|source| Error::Thread { name, source })
}

/// The addresses the input socket listens on, ports resolved; connect endpoints as given.
fn bound_endpoints(socket: &zmq::Socket, endpoints: &[Endpoint]) -> Vec<String> {
    // ZeroMQ reports only the last bound address; a `*` port can only be resolved for it.
    let last = transport::last_endpoint(socket);
    let last_bind = endpoints
        .iter()
        .rposition(|e| matches!(e, Endpoint::Bind(_)));
    endpoints
        .iter()
        .enumerate()
        .map(|(i, e)| match (Some(i) == last_bind, &last) {
            (true, Some(resolved)) if !resolved.is_empty() => resolved.clone(),
            _ => e.addr().to_owned(),
        })
        .collect()
}

/// How often the collector flushes its sinks ([`Sink::flush`]).
const FLUSH_EVERY: Duration = Duration::from_millis(500);

/// Flushes the sinks every [`FLUSH_EVERY`] and logs a stats line every `report_every`: the
/// counters are read before the flush, so a line counts as stored only what is flushed.
fn flush_loop(
    stats: &Stats,
    sinks: &[Arc<dyn Sink>],
    shutdown: &Shutdown,
    report_every: Option<Duration>,
) {
    let mut previous: Option<StatsSnapshot> = None;
    let step = Duration::from_millis(50);
    let (mut since_flush, mut since_report) = (Duration::ZERO, Duration::ZERO);
    while !shutdown.is_triggered() {
        std::thread::sleep(step);
        since_flush += step;
        since_report += step;
        let report = report_every.filter(|&every| since_report >= every);
        if since_flush < FLUSH_EVERY && report.is_none() {
            continue;
        }
        since_flush = Duration::ZERO;
        let snap = report.map(|_| stats.snapshot());
        for sink in sinks {
            if let Err(e) = sink.flush() {
                tracing::warn!("sink {}: cannot flush, retrying: {e}", sink.name());
            }
        }
        if let Some(snap) = snap {
            since_report = Duration::ZERO;
            tracing::info!("{}", snap.line(previous.as_ref()));
            previous = Some(snap);
        }
    }
}

/// What a collector did, returned when it stops.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// The final counters.
    pub stats: StatsSnapshot,
    /// Each sink's own report, by sink name.
    pub sinks: BTreeMap<String, serde_json::Map<String, serde_json::Value>>,
}

/// A running collector. Stop it with [`Collector::stop`], or trigger its [`Shutdown`] and call
/// [`Collector::wait`].
pub struct Collector {
    endpoints: Vec<String>,
    stats: Arc<Stats>,
    sinks: Vec<Arc<dyn Sink>>,
    shutdown: Shutdown,
    receiver: Option<JoinHandle<()>>,
    workers: Vec<JoinHandle<()>>,
    /// Acked delivery's group commit, stopped after the workers.
    commit: Option<acks::CommitThread>,
    /// Flushes the sinks and logs the stats lines.
    reporter: Option<JoinHandle<()>>,
    _peers: peers::PeerGuard,
    _context: zmq::Context,
}

impl Collector {
    /// A builder with the defaults: PULL, one worker per core, 1 GiB in flight, no sinks.
    pub fn builder() -> CollectorBuilder {
        CollectorBuilder::default()
    }

    /// The first input endpoint, with a `*` port resolved.
    pub fn endpoint(&self) -> &str {
        self.endpoints.first().map_or("", String::as_str)
    }

    /// Every input endpoint.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// The counters now.
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// The collector's shutdown flag.
    pub fn shutdown_handle(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// Stops reading, drains every message already read through the sinks, finishes the sinks
    /// and returns the summary.
    pub fn stop(self) -> Summary {
        self.shutdown.trigger();
        self.wait()
    }

    /// Waits until the shutdown flag is triggered (by a signal handler, say), then drains and
    /// finishes like [`Collector::stop`].
    pub fn wait(mut self) -> Summary {
        // The workers end once the receiver has stopped reading and they have drained what it
        // read; then the last commit; the receiver sends its acknowledgements, then ends.
        for worker in self.workers.drain(..) {
            if worker.join().is_err() {
                tracing::error!("a decode worker panicked");
            }
        }
        if let Some(mut commit) = self.commit.take() {
            commit.stop();
        }
        if let Some(receiver) = self.receiver.take() {
            if receiver.join().is_err() {
                tracing::error!("the receiver thread panicked");
            }
        }
        if let Some(reporter) = self.reporter.take() {
            let _ = reporter.join();
        }
        let mut sinks = BTreeMap::new();
        for sink in &self.sinks {
            if let Err(e) = sink.finish() {
                tracing::error!("sink {}: cannot finish: {e}", sink.name());
                self.stats.on_sink_error(sink.name());
            }
            sinks.insert(sink.name().to_owned(), sink.report());
        }
        Summary {
            stats: self.stats.snapshot(),
            sinks,
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        if self.receiver.is_some() {
            self.shutdown.trigger();
            for worker in self.workers.drain(..) {
                let _ = worker.join();
            }
            if let Some(mut commit) = self.commit.take() {
                commit.stop();
            }
            if let Some(receiver) = self.receiver.take() {
                let _ = receiver.join();
            }
            if let Some(reporter) = self.reporter.take() {
                let _ = reporter.join();
            }
        }
    }
}

//! `ndbridge-bench`: end-to-end throughput and latency of publisher -> collector in separate
//! processes, over tcp loopback and ipc, against bare libzmq moving the same two-frame messages.
//!
//! The parent process runs each case by starting one collector process and N publisher
//! processes (this same binary with a hidden role), then prints a table (or `--json`).
//! Throughput is array payload bytes over the time from the first message received to the last
//! one through the sinks, measured in the receiving process.
//!
//! ```text
//! cargo build --release --example ndbridge-bench
//! target/release/examples/ndbridge-bench --baseline
//! ```
//!
//! An example target (Cargo.toml), so that it is built on demand and never installed.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use clap::{Parser, Subcommand, ValueEnum};
use ndarray::Array1;
use ndbridge::collector::{Collector, DiskSink, Received, Sink, SinkError, StoreSink};
use ndbridge::{ArrayBuffer, Compression, Publisher};
use serde::{Deserialize, Serialize};

// The library's own socket layer and synthetic fields, compiled into the harness: the bare
// libzmq baseline sends and receives with the same zero-copy frames as ndbridge.
#[allow(dead_code, unreachable_pub)]
#[path = "../../src/keys.rs"]
mod keys;
#[path = "../../src/synth.rs"]
mod synth;
#[allow(dead_code, unreachable_pub)]
#[path = "../../src/transport.rs"]
mod transport;
use transport::{Endpoint, SocketKind, SocketOptions};

/// Measure ndbridge end to end: publishers and a collector in separate processes.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    role: Option<Role>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(clap::Args, Clone)]
struct RunArgs {
    /// Transports to measure.
    #[arg(long, value_delimiter = ',', default_value = "tcp,ipc")]
    transport: Vec<Transport>,
    /// Publisher process counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16")]
    publishers: Vec<usize>,
    /// Array sizes in bytes (float64 arrays).
    #[arg(long, value_delimiter = ',', default_value = "800,80000,8388608")]
    sizes: Vec<usize>,
    /// Codecs: raw, auto, zstd1, shuffle-zstd1, shuffle-zstd3.
    #[arg(long, value_delimiter = ',', default_value = "raw,auto")]
    codecs: Vec<String>,
    /// Also measure storing: with the store (sink `zarr`) and with `--format npy` (sink `npy`),
    /// written below --out and removed after each case.
    #[arg(long)]
    disk: bool,
    /// Only the storing variants.
    #[arg(long)]
    disk_only: bool,
    /// With --disk: also the store compressing arrays that arrive raw with shuffle + zstd at
    /// this level (sink `zarr-zN`).
    #[arg(long)]
    store_zstd: Option<i32>,
    /// The sinks to measure, instead of what --disk and --disk-only choose: `none`, `zarr`,
    /// `npy`, `zarr-zN` (e.g. `none,zarr`).
    #[arg(long, value_delimiter = ',')]
    sinks: Vec<String>,
    /// Bytes of payload per case (the message count follows from the size).
    #[arg(long, default_value_t = 1 << 30)]
    bytes_per_case: u64,
    /// Most messages per case (bounds small-message cases).
    #[arg(long, default_value_t = 100_000)]
    max_messages: u64,
    /// Also run bare libzmq (PUSH/PULL, header + payload frames) as the ceiling; with --disk,
    /// also bare libzmq writing each payload to its own file.
    #[arg(long)]
    baseline: bool,
    /// Repeats per case, in rounds: each round runs every variant of a case (bare libzmq, each
    /// codec, with and without disk) once. The table reports the median and min-max.
    #[arg(long, default_value_t = 1)]
    repeats: usize,
    /// Where disk cases write: each case in a new directory of its own below this one,
    /// removed when the case ends.
    #[arg(long, default_value = "/tmp/ndbridge-bench-out")]
    out: String,
    /// Print JSON lines (one per case) instead of a table.
    #[arg(long)]
    json: bool,
    /// Also run every variant with CURVE (mode `curve` for ndbridge, `zmq-curve` for bare
    /// libzmq), interleaved with the plain runs: the collector a CURVE server admitting the
    /// publishers' key, every message encrypted.
    #[arg(long)]
    curve: bool,
    /// Also run every ndbridge variant in acked delivery (mode `acked`), interleaved with the
    /// plain runs: each record acknowledged after the collector's group commit (every 5 ms:
    /// with the disk sink, one `syncfs` of the output's file system), the publishers keeping
    /// at most their window (512 MiB) unacknowledged.
    #[arg(long)]
    acked: bool,
    /// Collector decode workers [default: the number of cores].
    #[arg(long)]
    workers: Option<usize>,
    /// Messages per second per publisher (0: as fast as possible). Set it below saturation to
    /// measure latency without queueing.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Run collector processes with glibc's default malloc settings instead of
    /// GLIBC_TUNABLES=glibc.malloc.trim_threshold=1073741824:glibc.malloc.mmap_threshold=33554432
    /// (what the Docker image sets; applied to bare libzmq and ndbridge alike). libzmq
    /// allocates a buffer per large message it receives; with the defaults glibc gives that
    /// memory back to the kernel between messages, and every message faults it in again.
    #[arg(long)]
    default_malloc: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
enum Transport {
    Tcp,
    Ipc,
}

#[derive(Subcommand)]
enum Role {
    /// (internal) The collector side of one case.
    #[command(hide = true)]
    Collector {
        #[arg(long)]
        transport: Transport,
        #[arg(long)]
        expect: u64,
        #[arg(long)]
        disk: Option<String>,
        /// `zarr` or `npy`.
        #[arg(long, default_value = "zarr")]
        format: String,
        #[arg(long)]
        store_zstd: Option<i32>,
        #[arg(long)]
        bare: bool,
        #[arg(long)]
        workers: Option<usize>,
        #[arg(long)]
        acked: bool,
    },
    /// Codec speed on one thread over a .npy file (after untimed rounds): median encode and
    /// decode GB/s with min and max, every timed run's figures, and the size
    /// ratio, as one JSON line (used by benches/peers to compare on the same bytes).
    Codec {
        /// The array to encode.
        #[arg(long)]
        input: String,
        /// raw, auto, zstd1, zstd3, shuffle-zstd1, shuffle-zstd3.
        #[arg(long, default_value = "shuffle-zstd1")]
        codec: String,
        /// Timed runs; the median is reported with min and max.
        #[arg(long, default_value_t = 15)]
        repeats: usize,
        /// Untimed runs before them.
        #[arg(long, default_value_t = 5)]
        warmup: usize,
    },
    /// (internal) One publisher of one case.
    #[command(hide = true)]
    Publisher {
        #[arg(long)]
        endpoint: String,
        #[arg(long)]
        size: usize,
        #[arg(long)]
        messages: u64,
        #[arg(long)]
        codec: String,
        #[arg(long)]
        id: usize,
        #[arg(long)]
        bare: bool,
        #[arg(long, default_value_t = 0.0)]
        rate: f64,
        #[arg(long)]
        acked: bool,
    },
}

/// What the receiving process measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Measured {
    messages: u64,
    payload_bytes: u64,
    wire_bytes: u64,
    seconds: f64,
    latency_p50_us: f64,
    latency_p99_us: f64,
    cpu_seconds: f64,
    peak_rss_bytes: u64,
    gaps: u64,
    rejected: u64,
    /// CPU seconds of all publisher processes together (filled in by the parent).
    #[serde(default)]
    publisher_cpu_seconds: f64,
    /// Bytes the case left on disk (filled in by the parent).
    #[serde(default)]
    stored_bytes: u64,
}

/// One row of the result table.
#[derive(Debug, Clone, Serialize)]
struct CaseResult {
    mode: &'static str,
    transport: Transport,
    publishers: usize,
    size: usize,
    codec: String,
    /// `-` (none), `npy`, `zarr`, `zarr-zN`, or `files` (bare libzmq, a file per payload).
    sink: String,
    repeats: usize,
    msgs_per_s: f64,
    msgs_per_s_min: f64,
    msgs_per_s_max: f64,
    gb_per_s: f64,
    gb_per_s_min: f64,
    gb_per_s_max: f64,
    latency_p50_us: f64,
    latency_p99_us: f64,
    collector_cpu_s_per_gb: f64,
    collector_cpu_us_per_msg: f64,
    publisher_cpu_us_per_msg: f64,
    collector_peak_rss_mb: f64,
    compression_ratio: f64,
    gaps: u64,
    /// Bytes left on disk over bytes on the wire (0 without a sink).
    stored_per_wire: f64,
}

fn compression(codec: &str) -> Result<Compression> {
    Ok(match codec {
        "raw" => Compression::Raw,
        "auto" => Compression::auto(),
        "zstd1" => Compression::zstd(1),
        "zstd3" => Compression::zstd(3),
        "shuffle-zstd1" => Compression::zstd(1).with_shuffle(true),
        "shuffle-zstd3" => Compression::zstd(3).with_shuffle(true),
        other => bail!("unknown codec {other:?}"),
    })
}

fn now_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// CPU seconds and peak RSS of this process, from /proc: the CPU time is the sum over its live
/// threads of the nanosecond run times in `schedstat` (the tick counts of `stat` are too coarse
/// for short cases), or the ticks of `stat` where `schedstat` is missing.
fn own_usage() -> (f64, u64) {
    let schedstat_ns: Option<u64> = std::fs::read_dir("/proc/self/task").ok().map(|tasks| {
        tasks
            .flatten()
            .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
            .filter_map(|line| line.split_whitespace().next()?.parse::<u64>().ok())
            .sum()
    });
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // Fields after the command name: utime is the 12th, stime the 13th (0-based 11, 12).
    let cpu = match schedstat_ns {
        Some(ns) if ns > 0 => ns as f64 / 1e9,
        _ => (ticks(11) + ticks(12)) / 100.0,
    };
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let hwm_kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0);
    (cpu, hwm_kb * 1024)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Records, for each message through the sinks, its latency from the publisher's header time.
struct Timing {
    count: AtomicU64,
    inner: Mutex<TimingInner>,
}

#[derive(Default)]
struct TimingInner {
    first: Option<Instant>,
    last: Option<Instant>,
    latencies_us: Vec<f64>,
}

impl Sink for Timing {
    fn name(&self) -> &str {
        "timing"
    }
    fn write(&self, message: &Received) -> Result<(), SinkError> {
        let now = Instant::now();
        let latency = now_seconds() - message.record.header.time;
        let mut inner = self.inner.lock().expect("timing lock");
        inner.latencies_us.push(latency * 1e6);
        inner.first.get_or_insert(now);
        inner.last = Some(now);
        drop(inner);
        self.count.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

fn endpoint_for(transport: Transport) -> String {
    match transport {
        Transport::Tcp => "tcp://127.0.0.1:*".into(),
        Transport::Ipc => format!(
            "ipc:///tmp/ndbridge-bench-{}-{}.sock",
            std::process::id(),
            now_seconds().to_bits() % 1_000_000
        ),
    }
}

/// Where a CURVE case's keys are (set by the parent on the case's processes): `collector`
/// and `publisher` key pairs, and `allow/` listing the publisher's key.
const CURVE_KEYS: &str = "NDBRIDGE_BENCH_CURVE";

/// The keys of a CURVE case: the collector's pair, the publisher's pair, the allowlist.
fn curve_keys() -> Result<Option<(ndbridge::KeyPair, ndbridge::KeyPair, ndbridge::Allowlist)>> {
    let Some(dir) = std::env::var_os(CURVE_KEYS).map(std::path::PathBuf::from) else {
        return Ok(None);
    };
    Ok(Some((
        ndbridge::KeyPair::load(dir.join("collector.key_secret"))?,
        ndbridge::KeyPair::load(dir.join("publisher.key_secret"))?,
        ndbridge::Allowlist::load(dir.join("allow"))?,
    )))
}

/// The same two key pairs as the harness's own socket layer takes them (bare libzmq cases).
fn bare_curve_keys() -> Result<Option<(keys::KeyPair, keys::KeyPair)>> {
    let Some(dir) = std::env::var_os(CURVE_KEYS).map(std::path::PathBuf::from) else {
        return Ok(None);
    };
    Ok(Some((
        keys::KeyPair::load(dir.join("collector.key_secret"))?,
        keys::KeyPair::load(dir.join("publisher.key_secret"))?,
    )))
}

/// Makes the keys of CURVE cases in `dir` (see [`CURVE_KEYS`]).
fn make_curve_keys(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir.join("allow"))?;
    ndbridge::KeyPair::generate()?.save(dir, "collector")?;
    let publisher = ndbridge::KeyPair::generate()?;
    publisher.save(dir, "publisher")?;
    publisher.save(dir.join("allow"), "publisher")?;
    Ok(())
}

/// Where and how the collector of a case stores: directory, format, zstd level for raw arrays.
type Storing = (Option<String>, String, Option<i32>);

fn run_collector(
    transport: Transport,
    expect: u64,
    (disk, format, store_zstd): Storing,
    (bare, acked): (bool, bool),
    workers: Option<usize>,
) -> Result<()> {
    if bare {
        return run_bare_pull(transport, expect, disk.as_deref());
    }
    let timing = Arc::new(Timing {
        count: AtomicU64::new(0),
        inner: Mutex::new(TimingInner {
            latencies_us: Vec::with_capacity(expect as usize),
            ..TimingInner::default()
        }),
    });
    let mut builder = Collector::builder()
        .bind(endpoint_for(transport))
        .delivery(delivery(acked))
        .shared_sink(timing.clone());
    let store: Option<Arc<dyn Sink>> = match (&disk, format.as_str()) {
        (None, _) => None,
        (Some(dir), "npy") => Some(Arc::new(DiskSink::new(dir).map_err(|e| anyhow!("{e}"))?)),
        (Some(dir), _) => Some(Arc::new(
            StoreSink::new(dir)
                .map_err(|e| anyhow!("{e}"))?
                .raw_level(store_zstd),
        )),
    };
    if let Some(store) = &store {
        builder = builder.shared_sink(store.clone());
    }
    if let Some(workers) = workers {
        builder = builder.workers(workers);
    }
    if let Some((own, _, allow)) = curve_keys()? {
        builder = builder.curve(own, allow);
    }
    let collector = builder.start()?;
    println!("{}", collector.endpoint());
    std::io::stdout().flush()?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while collector.stats().stored + collector.stats().rejected < expect {
        if Instant::now() > deadline {
            bail!(
                "collector timed out with {} of {expect}",
                collector.stats().stored
            );
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    // What a store holds in memory is not stored until it is flushed: the time to flush it
    // counts.
    let mut flushed = None;
    if let Some(store) = &store {
        store.flush().map_err(|e| anyhow!("{e}"))?;
        flushed = Some(Instant::now());
    }
    // Measured while the collector's threads are alive (their run times leave with them).
    let (cpu, rss) = own_usage();
    let summary = collector.stop();
    let inner = std::mem::take(&mut *timing.inner.lock().expect("timing lock"));
    let mut lat = inner.latencies_us;
    lat.sort_by(f64::total_cmp);
    let first = inner.first.unwrap_or_else(Instant::now);
    let last = inner.last.unwrap_or(first).max(flushed.unwrap_or(first));
    let measured = Measured {
        messages: summary.stats.stored,
        payload_bytes: summary.stats.raw_bytes,
        wire_bytes: summary.stats.wire_bytes,
        seconds: (last - first).as_secs_f64(),
        latency_p50_us: percentile(&lat, 0.5),
        latency_p99_us: percentile(&lat, 0.99),
        cpu_seconds: cpu,
        peak_rss_bytes: rss,
        publisher_cpu_seconds: 0.0,
        gaps: summary.stats.gaps,
        rejected: summary.stats.rejected,
        stored_bytes: 0,
    };
    println!("{}", serde_json::to_string(&measured)?);
    Ok(())
}

/// Bare libzmq: PULL two-frame messages and count them; with `disk`, also write each payload
/// frame to its own file there (`<n>.bin`, one `write`), the least a disk sink can do.
fn run_bare_pull(transport: Transport, expect: u64, disk: Option<&str>) -> Result<()> {
    if let Some(dir) = disk {
        std::fs::create_dir_all(dir)?;
    }
    let ctx = zmq::Context::new();
    let keys = bare_curve_keys()?;
    let socket = transport::open(
        &ctx,
        SocketKind::Pull,
        &[Endpoint::bind(endpoint_for(transport))],
        &SocketOptions::default(),
        keys.as_ref().map(|(own, _)| transport::Curve::Server(own)),
    )?;
    println!("{}", transport::last_endpoint(&socket).unwrap_or_default());
    std::io::stdout().flush()?;
    let mut first = None;
    let mut payload = 0u64;
    let mut wire = 0u64;
    let mut lat = Vec::with_capacity(expect as usize);
    for n in 0..expect {
        let frames = loop {
            if let Some(f) = transport::recv_message_capped(&socket, 0, usize::MAX)? {
                break f;
            }
        };
        first.get_or_insert_with(Instant::now);
        if let (Some(dir), Some(last)) = (disk, frames.last()) {
            std::fs::write(Path::new(dir).join(format!("{n}.bin")), &last[..])?;
        }
        let sent_at: f64 = std::str::from_utf8(&frames[0])?.parse().unwrap_or(0.0);
        lat.push((now_seconds() - sent_at) * 1e6);
        payload += frames.last().map_or(0, |f| f.len() as u64);
        wire += frames.iter().map(|f| f.len() as u64).sum::<u64>();
    }
    let seconds = first.map_or(0.0, |f| f.elapsed().as_secs_f64());
    let (cpu, rss) = own_usage();
    lat.sort_by(f64::total_cmp);
    let measured = Measured {
        messages: expect,
        payload_bytes: payload,
        wire_bytes: wire,
        seconds,
        latency_p50_us: percentile(&lat, 0.5),
        latency_p99_us: percentile(&lat, 0.99),
        cpu_seconds: cpu,
        peak_rss_bytes: rss,
        publisher_cpu_seconds: 0.0,
        gaps: 0,
        rejected: 0,
        stored_bytes: 0,
    };
    println!("{}", serde_json::to_string(&measured)?);
    Ok(())
}

fn payload(size: usize, id: usize) -> Vec<f64> {
    let n = (size / 8).max(1);
    let cols = n.min(1000);
    let mut v = synth::smooth_field(n.div_ceil(cols), cols, id as f64, id as u64);
    v.truncate(n);
    v
}

fn run_publisher(
    endpoint: &str,
    (size, messages): (usize, u64),
    codec: &str,
    id: usize,
    (bare, acked): (bool, bool),
    rate: f64,
) -> Result<()> {
    let data = ArrayBuffer::from_owned(Array1::from(payload(size, id)));
    let started = Instant::now();
    let pace = |i: u64| {
        if rate > 0.0 {
            let due = Duration::from_secs_f64(i as f64 / rate);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    };
    if bare {
        let ctx = zmq::Context::new();
        let keys = bare_curve_keys()?;
        let mut socket = transport::open(
            &ctx,
            SocketKind::Push,
            &[Endpoint::connect(endpoint)],
            &SocketOptions::default(),
            keys.as_ref().map(|(server, own)| transport::Curve::Client {
                server: server.public(),
                own,
            }),
        )?;
        let passed_on = Arc::new(AtomicU64::new(0));
        for i in 0..messages {
            pace(i);
            let header = Bytes::from(format!("{:.6}", now_seconds()));
            let frames = [header, data.data().clone()];
            loop {
                match transport::send_tracked(&mut socket, &frames, 0, &passed_on) {
                    Ok(()) => break,
                    Err(zmq::Error::EAGAIN) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
        }
        socket.set_linger(60_000)?;
        let cpu = own_usage().0;
        wait_for_parent();
        println!("{cpu}");
        return Ok(());
    }
    let mut builder = Publisher::builder()
        .connect(endpoint)
        .source(format!("bench-{id}"))
        .delivery(delivery(acked))
        .compression(compression(codec)?);
    if let Some((server, own, _)) = curve_keys()? {
        builder = builder.curve(*server.public(), own);
    }
    let publisher = builder.build()?;
    for i in 0..messages {
        pace(i);
        publisher.send_record("payload", [("payload", data.clone())], None)?;
    }
    // Hand everything to ZeroMQ but keep the socket open until the collector has it all.
    publisher.flush(Duration::from_secs(600))?;
    let cpu = own_usage().0;
    wait_for_parent();
    println!("{cpu}");
    // Every record is acknowledged (acked) or passed on, and the collector has stopped: the
    // session's end has no one to go to, and is not waited for long.
    let stats = publisher.close(Duration::from_secs(1))?;
    eprintln!("publisher {id}: {stats:?}");
    Ok(())
}

/// Keeps this publisher's socket open until the parent closes our stdin, which it does once the
/// collector has counted every message: over ipc, libzmq may discard messages still queued in a
/// socket that closes while the receiver is at its high-water mark.
fn wait_for_parent() {
    let mut sink = Vec::new();
    let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
}

/// glibc malloc settings for collector processes: keep freed memory for reuse (see
/// `--default-malloc`).
const COLLECTOR_MALLOC: &str =
    "glibc.malloc.trim_threshold=1073741824:glibc.malloc.mmap_threshold=33554432";

/// Cases run so far by this process (names each disk case's directory).
static CASES_RUN: AtomicU64 = AtomicU64::new(0);

/// How the two ends of a case send and receive: bare libzmq or ndbridge, and with CURVE
/// keys (their directory, see [`CURVE_KEYS`]) or without.
#[derive(Clone, Copy)]
struct Ends<'a> {
    bare: bool,
    curve: Option<&'a Path>,
    acked: bool,
}

/// The delivery mode of a case's ndbridge ends.
fn delivery(acked: bool) -> ndbridge::Delivery {
    if acked {
        ndbridge::Delivery::Acked
    } else {
        ndbridge::Delivery::FireAndForget
    }
}

/// Runs one case once: one collector process, `publishers` publisher processes.
fn run_case(
    args: &RunArgs,
    transport: Transport,
    publishers: usize,
    size: usize,
    (codec, sink): (&str, &str),
    Ends { bare, curve, acked }: Ends<'_>,
) -> Result<Measured> {
    let exe = std::env::current_exe()?;
    let per_publisher = ((args.bytes_per_case / size as u64).clamp(16, args.max_messages)
        / publishers as u64)
        .max(1);
    let expect = per_publisher * publishers as u64;
    let mut collector_cmd = Command::new(&exe);
    collector_cmd.args([
        "collector",
        "--transport",
        match transport {
            Transport::Tcp => "tcp",
            Transport::Ipc => "ipc",
        },
        "--expect",
        &expect.to_string(),
    ]);
    // A directory of this case's own under --out: only it is removed afterwards.
    let case_dir = Path::new(&args.out).join(format!(
        "case-{}-{}",
        std::process::id(),
        CASES_RUN.fetch_add(1, Ordering::Relaxed)
    ));
    let disk = sink != "-";
    if disk {
        collector_cmd.arg("--disk").arg(&case_dir);
        let format = if sink == "npy" { "npy" } else { "zarr" };
        collector_cmd.args(["--format", format]);
        if let Some(level) = sink.strip_prefix("zarr-z") {
            collector_cmd.args(["--store-zstd", level]);
        }
    }
    if bare {
        collector_cmd.arg("--bare");
    }
    if acked {
        collector_cmd.arg("--acked");
    }
    if let Some(workers) = args.workers {
        collector_cmd.args(["--workers", &workers.to_string()]);
    }
    if !args.default_malloc && std::env::var_os("GLIBC_TUNABLES").is_none() {
        collector_cmd.env("GLIBC_TUNABLES", COLLECTOR_MALLOC);
    }
    if let Some(dir) = curve {
        collector_cmd.env(CURVE_KEYS, dir);
    }
    let mut collector = collector_cmd
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the collector process")?;
    let mut lines = BufReader::new(collector.stdout.take().expect("piped")).lines();
    let endpoint = lines
        .next()
        .ok_or_else(|| anyhow!("collector printed no endpoint"))??;
    let mut children = Vec::new();
    for id in 0..publishers {
        let mut cmd = Command::new(&exe);
        cmd.args([
            "publisher",
            "--endpoint",
            &endpoint,
            "--size",
            &size.to_string(),
            "--messages",
            &per_publisher.to_string(),
            "--codec",
            codec,
            "--id",
            &id.to_string(),
            "--rate",
            &args.rate.to_string(),
        ]);
        if bare {
            cmd.arg("--bare");
        }
        if acked {
            cmd.arg("--acked");
        }
        if let Some(dir) = curve {
            cmd.env(CURVE_KEYS, dir);
        }
        children.push(
            cmd.stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()?,
        );
    }
    let result = lines.next();
    // The collector has everything (or gave up): the publishers may exit now. Each prints its
    // CPU seconds as its last act.
    let mut publisher_cpu_seconds = 0.0;
    for mut child in children {
        drop(child.stdin.take());
        let mut out = String::new();
        if let Some(mut stdout) = child.stdout.take() {
            std::io::Read::read_to_string(&mut stdout, &mut out)?;
        }
        let status = child.wait()?;
        if !status.success() {
            bail!("a publisher failed: {status}");
        }
        publisher_cpu_seconds += out
            .trim()
            .parse::<f64>()
            .with_context(|| format!("a publisher printed {out:?}, not its CPU seconds"))?;
    }
    let result = result.ok_or_else(|| anyhow!("collector printed no result"))??;
    collector.wait()?;
    let mut measured: Measured = serde_json::from_str(&result)?;
    measured.publisher_cpu_seconds = publisher_cpu_seconds;
    if disk {
        measured.stored_bytes = bytes_under(&case_dir);
        let _ = std::fs::remove_dir_all(&case_dir);
    }
    Ok(measured)
}

/// Bytes of the regular files under `dir`.
fn bytes_under(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => bytes_under(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn summarize(
    mode: &'static str,
    key: (Transport, usize, usize, &str, &str),
    runs: &[Measured],
) -> CaseResult {
    let (transport, publishers, size, codec, sink) = key;
    let gbs: Vec<f64> = runs
        .iter()
        .map(|m| m.payload_bytes as f64 / m.seconds.max(1e-9) / 1e9)
        .collect();
    let msgs: Vec<f64> = runs
        .iter()
        .map(|m| m.messages as f64 / m.seconds.max(1e-9))
        .collect();
    let fold = |v: &[f64], f: fn(f64, f64) -> f64, init| v.iter().copied().fold(init, f);
    CaseResult {
        mode,
        transport,
        publishers,
        size,
        codec: codec.to_owned(),
        sink: sink.to_owned(),
        repeats: runs.len(),
        msgs_per_s: median(msgs.clone()),
        msgs_per_s_min: fold(&msgs, f64::min, f64::INFINITY),
        msgs_per_s_max: fold(&msgs, f64::max, 0.0),
        gb_per_s: median(gbs.clone()),
        gb_per_s_min: fold(&gbs, f64::min, f64::INFINITY),
        gb_per_s_max: fold(&gbs, f64::max, 0.0),
        latency_p50_us: median(runs.iter().map(|m| m.latency_p50_us).collect()),
        latency_p99_us: median(runs.iter().map(|m| m.latency_p99_us).collect()),
        collector_cpu_s_per_gb: median(
            runs.iter()
                .map(|m| m.cpu_seconds / (m.payload_bytes as f64 / 1e9).max(1e-9))
                .collect(),
        ),
        collector_cpu_us_per_msg: median(
            runs.iter()
                .map(|m| m.cpu_seconds * 1e6 / m.messages.max(1) as f64)
                .collect(),
        ),
        publisher_cpu_us_per_msg: median(
            runs.iter()
                .map(|m| m.publisher_cpu_seconds * 1e6 / m.messages.max(1) as f64)
                .collect(),
        ),
        collector_peak_rss_mb: median(runs.iter().map(|m| m.peak_rss_bytes as f64 / 1e6).collect()),
        compression_ratio: median(
            runs.iter()
                .map(|m| m.wire_bytes as f64 / m.payload_bytes.max(1) as f64)
                .collect(),
        ),
        gaps: runs.iter().map(|m| m.gaps).sum(),
        stored_per_wire: median(
            runs.iter()
                .map(|m| m.stored_bytes as f64 / m.wire_bytes.max(1) as f64)
                .collect(),
        ),
    }
}

fn print_row(r: &CaseResult) {
    println!(
        "{:<9} {:<4} {:>3} {:>9} {:<14} {:<7} {:>10.0} {:>8.3} [{:.3}-{:.3}] {:>9.0} {:>9.0} {:>8.2} {:>8.2} {:>8.2} {:>8.0} {:>6.2} {:>7.3} {:>4}",
        r.mode,
        format!("{:?}", r.transport).to_lowercase(),
        r.publishers,
        r.size,
        r.codec,
        r.sink,
        r.msgs_per_s,
        r.gb_per_s,
        r.gb_per_s_min,
        r.gb_per_s_max,
        r.latency_p50_us,
        r.latency_p99_us,
        r.collector_cpu_s_per_gb,
        r.collector_cpu_us_per_msg,
        r.publisher_cpu_us_per_msg,
        r.collector_peak_rss_mb,
        r.compression_ratio,
        r.stored_per_wire,
        r.gaps,
    );
}

fn run_all(args: &RunArgs) -> Result<()> {
    if !args.json {
        println!(
            "{:<9} {:<4} {:>3} {:>9} {:<14} {:<7} {:>10} {:>8} {:<15} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8} {:>6} {:>7} {:>4}",
            "mode", "tr", "pub", "bytes", "codec", "sink", "msgs/s", "GB/s", "[min-max]",
            "p50 us", "p99 us", "cpu s/GB", "c us/msg", "p us/msg", "RSS MB", "ratio", "st/wire",
            "gaps"
        );
    }
    let keys = tempfile::tempdir()?;
    if args.curve {
        make_curve_keys(keys.path())?;
    }
    let mut stores = vec!["zarr".to_owned(), "npy".to_owned()];
    stores.extend(args.store_zstd.map(|level| format!("zarr-z{level}")));
    let sinks: Vec<&str> = if !args.sinks.is_empty() {
        fn name(s: &String) -> &str {
            if s == "none" {
                "-"
            } else {
                s
            }
        }
        args.sinks.iter().map(name).collect()
    } else if args.disk_only || args.disk {
        let none = (!args.disk_only).then_some("-");
        none.into_iter()
            .chain(stores.iter().map(String::as_str))
            .collect()
    } else {
        vec!["-"]
    };
    for &transport in &args.transport {
        for &size in &args.sizes {
            for &publishers in &args.publishers {
                // Every variant of this case (bare libzmq, each codec, with and without disk)
                // runs once per round, so that the machine's slow spells fall on all of them.
                let mut variants: Vec<(&'static str, &str, &str)> = Vec::new();
                let mut modes: Vec<(&'static str, &'static str)> = vec![("libzmq", "ndbridge")];
                if args.curve {
                    modes.push(("zmq-curve", "curve"));
                }
                if args.acked {
                    modes.push(("", "acked"));
                }
                for &(bare_mode, mode) in &modes {
                    if args.baseline && !bare_mode.is_empty() {
                        // Bare libzmq stores by writing each payload to a file of its own.
                        let mut bare_sinks = vec![];
                        bare_sinks.extend(sinks.iter().find(|&&s| s == "-"));
                        bare_sinks.extend((sinks.len() > 1 || sinks[0] != "-").then_some(&"files"));
                        variants.extend(bare_sinks.iter().map(|&&sink| (bare_mode, "raw", sink)));
                    }
                    for codec in &args.codecs {
                        variants.extend(sinks.iter().map(|&sink| (mode, codec.as_str(), sink)));
                    }
                }
                let mut runs: Vec<Vec<Measured>> = vec![Vec::new(); variants.len()];
                for _ in 0..args.repeats {
                    for (&(mode, codec, sink), runs) in variants.iter().zip(&mut runs) {
                        let bare = mode == "libzmq" || mode == "zmq-curve";
                        let curve = matches!(mode, "curve" | "zmq-curve").then_some(keys.path());
                        let acked = mode == "acked";
                        let ends = Ends { bare, curve, acked };
                        runs.push(run_case(
                            args,
                            transport,
                            publishers,
                            size,
                            (codec, sink),
                            ends,
                        )?);
                    }
                }
                for (&(mode, codec, sink), runs) in variants.iter().zip(&runs) {
                    let row = summarize(mode, (transport, publishers, size, codec, sink), runs);
                    emit(args, &row)?;
                }
            }
        }
    }
    Ok(())
}

fn emit(args: &RunArgs, row: &CaseResult) -> Result<()> {
    if args.json {
        println!("{}", serde_json::to_string(row)?);
    } else {
        print_row(row);
    }
    std::io::stdout().flush()?;
    Ok(())
}

/// Times encode and decode of one array, single-threaded, and prints one JSON line.
fn run_codec(input: &str, codec: &str, repeats: usize, warmup: usize) -> Result<()> {
    use ndbridge::wire::{decode, encode, Envelope, Limits};
    let bytes = std::fs::read(input).with_context(|| format!("reading {input}"))?;
    let array = ndbridge::npy::read_npy(Bytes::from(bytes))?;
    let policy = compression(codec)?;
    let envelope = || Envelope {
        name: "a".into(),
        source: "bench".into(),
        session: "s".into(),
        seq: 0,
        time: 0.0,
        attrs: None,
    };
    let raw = array.data().len() as f64;
    let mut enc = Vec::with_capacity(repeats);
    let mut dec = Vec::with_capacity(repeats);
    // Untimed rounds first: the zstd contexts, the reused buffers and their pages are set up
    // there (a long-running sender or receiver has them), not in the timed rounds.
    for _ in 0..warmup {
        let warm_up = encode(envelope(), vec![("a".into(), array.clone())], policy)?;
        std::hint::black_box(decode(&warm_up.frames, &Limits::default())?);
    }
    let mut wire = 0usize;
    for _ in 0..repeats.max(1) {
        let t = Instant::now();
        let msg = encode(envelope(), vec![("a".into(), array.clone())], policy)?;
        enc.push(raw / t.elapsed().as_secs_f64() / 1e9);
        wire = msg.frames[1].len();
        let t = Instant::now();
        let record = decode(&msg.frames, &Limits::default())?;
        std::hint::black_box(&record);
        dec.push(raw / t.elapsed().as_secs_f64() / 1e9);
    }
    let stats = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (v[v.len() / 2], v[0], v[v.len() - 1])
    };
    let (encode_runs, decode_runs) = (enc.clone(), dec.clone());
    let (e, emin, emax) = stats(&mut enc);
    let (d, dmin, dmax) = stats(&mut dec);
    println!(
        "{}",
        serde_json::json!({
            "codec": codec, "bytes": raw, "ratio": wire as f64 / raw,
            "encode_gbps": e, "encode_min": emin, "encode_max": emax,
            "decode_gbps": d, "decode_min": dmin, "decode_max": dmax,
            "encode_runs": encode_runs, "decode_runs": decode_runs,
        })
    );
    Ok(())
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.role {
        None => run_all(&cli.run),
        Some(Role::Codec {
            input,
            codec,
            repeats,
            warmup,
        }) => run_codec(&input, &codec, repeats, warmup),
        Some(Role::Collector {
            transport,
            expect,
            disk,
            format,
            store_zstd,
            bare,
            workers,
            acked,
        }) => run_collector(
            transport,
            expect,
            (disk, format, store_zstd),
            (bare, acked),
            workers,
        ),
        Some(Role::Publisher {
            endpoint,
            size,
            messages,
            codec,
            id,
            bare,
            rate,
            acked,
        }) => run_publisher(&endpoint, (size, messages), &codec, id, (bare, acked), rate),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ndbridge-bench: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

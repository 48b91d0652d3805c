//! The `ndbridge` command: argument parsing, logging, signals and exit codes around the library.

use std::ffi::OsString;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use ndbridge::collector::{
    Collector, CollectorBuilder, DiskSink, ForwardSink, Shutdown, StatsSnapshot, StoreSink, Summary,
};
use ndbridge::wire::{DecodeError, Limits, Record};
use ndbridge::{
    Allowlist, ArrayBuffer, Chunking, Compression, Delivery, KeyPair, Link, Publisher, SocketKind,
    SocketOptions, Subscriber,
};

use demo::{DemoConfig, DemoReport};
use plural::plural;
use security::{ClientKeyArgs, KeygenArgs, ServerKeyArgs};

mod demo;
#[path = "../../plural.rs"]
mod plural;
mod security;
mod store_cmds;
#[path = "../../synth.rs"]
mod synth;
mod verify;

/// Move numpy / ndarray arrays between processes over ZeroMQ: fast, compressed when that pays,
/// never pickled.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// More log output (-v debug, -vv trace); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
}

#[derive(Subcommand)]
enum Command {
    /// Run the collector service: receive arrays, append them to a Zarr v3 store (or .npy/.npz
    /// files), forward them live.
    Collect(CollectArgs),
    /// Publish existing .npy / .npz files.
    Send(SendArgs),
    /// Subscribe to a forward socket and print one line per record.
    Tail(TailArgs),
    /// Run a local end-to-end demo: a collector and simulated workers in one process.
    Demo(DemoArgs),
    /// Check a collector's output directory: per source and session the records stored, the
    /// sequence numbers missing, and those stored twice. Exit code 1 when any is missing.
    Verify(VerifyArgs),
    /// List what a store holds: per source and record name, each array's records, type, shape,
    /// codec, size on disk and ratio to its decoded size.
    Ls(store_cmds::LsArgs),
    /// Send a store's records again, each as the message that brought it (name, source,
    /// session, seq, attrs, arrays as stored): for late subscribers, another collector, tests.
    Replay(store_cmds::ReplayArgs),
    /// Make a CURVE key pair: NAME.key (public, for peers and allowlists) and NAME.key_secret
    /// (private). A collector with --curve-secret admits only the keys in its --allow DIR.
    Keygen(KeygenArgs),
}

#[derive(Args)]
struct VerifyArgs {
    /// The collector's --out: a store, or a --format npy directory (with its manifest.jsonl).
    out: PathBuf,
}

/// How the collector stores records.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    /// A Zarr v3 store.
    Zarr,
    /// .npy/.npz files and a manifest.
    Npy,
}

#[derive(Args)]
struct CollectArgs {
    /// Address to listen on; publishers connect here. Binding another interface than loopback
    /// exposes the service to the network: do it on purpose.
    #[arg(long, default_value = "tcp://127.0.0.1:5555")]
    bind: Vec<String>,
    /// Connect to publishers that bind (e.g. PUB publishers, with --sub) instead of binding.
    #[arg(long)]
    connect: Vec<String>,
    /// Receive with a SUB socket (to tap PUB publishers) instead of PULL.
    #[arg(long)]
    sub: bool,
    /// Where to store: the Zarr v3 store (created, or continued when it exists) [default:
    /// run.zarr], or with --format npy the directory of .npy/.npz files and manifest.jsonl
    /// [default: ndbridge-data].
    #[arg(long)]
    out: Option<PathBuf>,
    /// How to store: `zarr`, one Zarr v3 array per stream, few files, compressed as the arrays
    /// arrived, readable while written (docs/store.md); or `npy`, one file per record and a
    /// manifest.
    #[arg(long, value_enum, default_value_t = Format::Zarr)]
    format: Format,
    /// With --format zarr: compress arrays that arrive raw with shuffle + zstd at this level
    /// (costs the collector's CPU) [default: store them as they came].
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..=22))]
    store_zstd: Option<i32>,
    /// Do not store anything on disk (forward only, or count only).
    #[arg(long)]
    no_disk: bool,
    /// Re-publish every valid message to ZeroMQ SUB sockets that connect here
    /// (tcp://HOST:PORT or ipc://PATH, e.g. tcp://127.0.0.1:5556).
    #[arg(long)]
    forward: Option<String>,
    /// Most MiB of forwarded messages queued for one subscriber. A subscriber that reads slower
    /// than records arrive loses the records that do not fit, counted for it alone (its
    /// `dropped` in the forward report); the other subscribers are not affected. A record
    /// larger than this goes to a subscriber only when nothing else is queued for it.
    #[arg(long, default_value_t = 64, value_parser = mebibytes)]
    forward_subscriber_mib: u64,
    /// Most subscribers connected to the forward socket at once; a connection beyond is closed
    /// at once and counted (`refused`). The forward sink holds at most this many times
    /// max(--forward-subscriber-mib, largest record).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
    max_subscribers: u32,
    /// Decode worker threads [default: number of cores].
    #[arg(long)]
    workers: Option<usize>,
    /// Cap on received bytes not yet stored, in MiB; the collector stops reading at the cap.
    /// Decoding has a cap of its own of the same size (what compressed frames decode to).
    #[arg(long, default_value_t = 1024, value_parser = mebibytes)]
    max_inflight_mib: u64,
    /// Largest array accepted, in MiB (also the most decoded bytes of one message).
    #[arg(long, default_value_t = 4096, value_parser = mebibytes)]
    max_array_mib: u64,
    /// Largest ratio of decoded to compressed size for zstd arrays over 64 MiB: a small
    /// message cannot make the collector write gigabytes. Constant arrays (all zeros) compress
    /// about 30,000 to 1: raise this to receive such arrays over 64 MiB (0: no limit).
    #[arg(long, default_value_t = 1024)]
    max_expansion: u64,
    /// Most publishers connected at once; a connection beyond is closed at once and counted
    /// (refused_peers), and ZeroMQ retries it later.
    #[arg(long, default_value_t = 64)]
    max_peers: u64,
    /// Messages ZeroMQ queues per publisher before it stops reading that connection (each
    /// at most the largest message the limits allow).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(i32).range(1..))]
    recv_hwm: i32,
    /// Seconds between stats lines (0: none).
    #[arg(long, default_value_t = 5.0, value_parser = seconds)]
    stats_every: f64,
    /// Seconds a stopping collector keeps retrying records its disk could not take for a
    /// reason that may pass (a full disk); then they are counted as sink errors and the exit
    /// code is non-zero. While running, such records are retried without limit and reading
    /// stops until the disk takes them.
    #[arg(long, default_value_t = 30.0, value_parser = seconds)]
    drain_timeout: f64,
    /// How publishers deliver: fire-and-forget (PUSH/PULL, fastest; what a crash loses is
    /// reported as gaps) or acked (each record acknowledged once stored durably; publishers
    /// resend what is not, and records sent again are stored once, across restarts too).
    /// Publishers must use the same mode (`send --delivery`).
    #[arg(long, value_enum, default_value = "fire-and-forget")]
    delivery: DeliveryArg,
    /// With --delivery acked: milliseconds a stored record waits at most for the group commit
    /// (one sync of the output's file system for every record written meanwhile) after which
    /// it is acknowledged.
    #[arg(long, default_value_t = 5.0, value_parser = milliseconds)]
    commit_ms: f64,
    /// Write the final statistics as JSON to this file.
    #[arg(long)]
    stats_json: Option<PathBuf>,
    /// Print the bound endpoints as JSON on stdout once listening (for scripts and tests).
    #[arg(long, hide = true)]
    print_endpoints: bool,
    #[command(flatten)]
    security: ServerKeyArgs,
}

#[derive(Clone, Copy, ValueEnum)]
enum DeliveryArg {
    /// PUSH/PULL, no acknowledgements.
    FireAndForget,
    /// Every record acknowledged once stored durably, resent until it is.
    Acked,
}

impl From<DeliveryArg> for Delivery {
    fn from(delivery: DeliveryArg) -> Delivery {
        match delivery {
            DeliveryArg::FireAndForget => Delivery::FireAndForget,
            DeliveryArg::Acked => Delivery::Acked,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum CodecArg {
    /// No compression.
    Raw,
    /// Always zstd.
    Zstd,
    /// Raw on a local link (loopback, ipc); on a network, zstd when the link delivers the
    /// records faster that way (measured, and tried before it is kept).
    Auto,
}

/// `--chunking`: [`Chunking`] on the command line.
#[derive(Clone, Copy, ValueEnum)]
enum ChunkingArg {
    /// With --codec auto, when one core compresses slower than the link takes compressed bytes.
    Auto,
    /// Every compressed array of 2 MiB or more.
    Always,
    /// One zstd frame per array.
    Never,
}

impl From<ChunkingArg> for Chunking {
    fn from(arg: ChunkingArg) -> Chunking {
        match arg {
            ChunkingArg::Auto => Chunking::Auto,
            ChunkingArg::Always => Chunking::Always,
            ChunkingArg::Never => Chunking::Never,
        }
    }
}

#[derive(Args)]
struct CodecArgs {
    /// Codec policy.
    #[arg(long, value_enum, default_value = "auto")]
    codec: CodecArg,
    /// zstd level.
    #[arg(long, default_value_t = 1)]
    level: i32,
    /// Do not byte-shuffle before compressing.
    #[arg(long)]
    no_shuffle: bool,
}

impl CodecArgs {
    fn compression(&self) -> Compression {
        let shuffle = !self.no_shuffle;
        match self.codec {
            CodecArg::Raw => Compression::Raw,
            CodecArg::Zstd => Compression::Zstd {
                level: self.level,
                shuffle,
            },
            CodecArg::Auto => Compression::Auto {
                level: self.level,
                shuffle,
                max_ratio: 0.9,
            },
        }
    }
}

#[derive(Args)]
struct SendArgs {
    /// .npy files (one array each) and .npz files (one record each).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Collector address.
    #[arg(long, default_value = "tcp://127.0.0.1:5555")]
    to: String,
    /// Record name [default: the file name without extension].
    #[arg(long)]
    name: Option<String>,
    /// Source id [default: host:pid].
    #[arg(long)]
    source: Option<String>,
    /// Give up if the messages have not all been handed to ZeroMQ after this many seconds; ZeroMQ
    /// then has what is left of that time to deliver them.
    #[arg(long, default_value_t = 30.0, value_parser = seconds)]
    timeout: f64,
    #[command(flatten)]
    codec: CodecArgs,
    /// When arrays of 2 MiB or more are compressed in parallel chunks on every core (codec
    /// zstd-chunks, decoded in parallel too): auto (with --codec auto, when one core compresses
    /// slower than the link takes compressed bytes), always, or never (one zstd frame each).
    #[arg(long, value_enum, default_value = "auto")]
    chunking: ChunkingArg,
    /// The link, for --codec auto: detect (local for loopback and ipc endpoints), local (always
    /// raw), or network (weigh the link against the compressor; e.g. a local port that is an
    /// SSH tunnel to another machine).
    #[arg(long, value_enum, default_value = "detect")]
    link: LinkArg,
    /// fire-and-forget, or acked: wait until the collector (run with the same --delivery)
    /// acknowledges every record as stored durably, resending after a reconnect.
    #[arg(long, value_enum, default_value = "fire-and-forget")]
    delivery: DeliveryArg,
    #[command(flatten)]
    keys: ClientKeyArgs,
}

#[derive(Clone, Copy, ValueEnum)]
enum LinkArg {
    Detect,
    Local,
    Network,
}

impl From<LinkArg> for Link {
    fn from(link: LinkArg) -> Link {
        match link {
            LinkArg::Detect => Link::Detect,
            LinkArg::Local => Link::Local,
            LinkArg::Network => Link::Network,
        }
    }
}

#[derive(Args)]
struct TailArgs {
    /// Forward socket to subscribe to.
    #[arg(long, default_value = "tcp://127.0.0.1:5556")]
    from: String,
    /// Only these record names (default: all).
    #[arg(long)]
    name: Vec<String>,
    /// Exit after this many records.
    #[arg(long)]
    count: Option<u64>,
    /// Exit after this many seconds without a record.
    #[arg(long, value_parser = seconds)]
    idle_timeout: Option<f64>,
    #[command(flatten)]
    keys: ClientKeyArgs,
}

#[derive(Args)]
struct DemoArgs {
    /// Simulated workers.
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// Seconds of streaming.
    #[arg(long, default_value_t = 5.0, value_parser = seconds)]
    seconds: f64,
    /// Steps per second per worker (each step sends three records); 0: as fast as possible.
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
    /// Side of the largest field (n x n float64).
    #[arg(long, default_value_t = 256)]
    size: usize,
    /// Directory for the demo's stores (each run writes a new `run-<time>.zarr` in it).
    #[arg(long, default_value = "ndbridge-demo")]
    out: PathBuf,
    #[command(flatten)]
    codec: CodecArgs,
}

/// Parses a duration in seconds: a finite number, zero or more.
fn seconds(text: &str) -> Result<f64, String> {
    duration(text, "seconds")
}

fn milliseconds(text: &str) -> Result<f64, String> {
    duration(text, "milliseconds")
}

/// Parses a duration in `unit`s, between 0 and 1e9.
fn duration(text: &str, unit: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if (0.0..1e9).contains(&v) => Ok(v),
        Ok(_) => Err(format!("expected {unit} between 0 and 1e9, found {text}")),
        Err(e) => Err(format!("expected a number of {unit}, found {text:?}: {e}")),
    }
}

/// Parses a size in MiB and checks that it fits in bytes.
fn mebibytes(text: &str) -> Result<u64, String> {
    let mib: u64 = text
        .parse()
        .map_err(|e| format!("expected a whole number of MiB, found {text:?}: {e}"))?;
    mib.checked_mul(1 << 20)
        .map(|_| mib)
        .ok_or_else(|| format!("{mib} MiB does not fit in 64 bits of bytes"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = match cli.verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(use_colour(
            std::io::stderr().is_terminal(),
            std::env::var_os("NO_COLOR"),
        ))
        .with_target(false)
        .init();
    let result = match cli.command {
        Command::Collect(args) => collect(args),
        Command::Ls(args) => store_cmds::ls(args),
        Command::Replay(args) => store_cmds::replay(args),
        Command::Send(args) => send(args),
        Command::Tail(args) => tail(args),
        Command::Demo(args) => demo(args),
        Command::Verify(args) => verify(args),
        Command::Keygen(args) => security::keygen(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // Whoever read the output has all they wanted of it.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ndbridge: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Whether log lines are coloured: only on a terminal, and not when `NO_COLOR` is set to
/// anything but the empty string (<https://no-color.org>).
fn use_colour(stderr_is_terminal: bool, no_color: Option<OsString>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// The directories that storing into `--out` is about to create: removed when dropped, unless
/// [`CreatedDirs::keep`] was called first, so that a collector that cannot start leaves
/// nothing behind.
struct CreatedDirs(Option<PathBuf>);

impl CreatedDirs {
    /// Notes the first of `out` and its ancestors that does not exist yet (with everything
    /// under it, what creating `out` would make).
    fn before_creating(out: &Path) -> CreatedDirs {
        let missing = |p: &&Path| {
            !p.as_os_str().is_empty()
                && std::fs::symlink_metadata(p)
                    .is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound)
        };
        CreatedDirs(
            out.ancestors()
                .take_while(missing)
                .last()
                .map(Path::to_owned),
        )
    }

    /// Keeps what was created.
    fn keep(mut self) {
        self.0 = None;
    }
}

impl Drop for CreatedDirs {
    fn drop(&mut self) {
        if let Some(dir) = &self.0 {
            // Absent when creating it failed.
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn collect(args: CollectArgs) -> Result<()> {
    let shutdown = Shutdown::new();
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, shutdown.flag())
            .context("installing signal handler")?;
    }
    let listening = args.bind.iter().filter(|_| args.connect.is_empty());
    args.security
        .check_exposure(listening.chain(&args.forward).map(String::as_str))?;
    let curve = args.security.load()?;
    let mut builder = collector_builder(&args, shutdown);
    if let Some((own, allow)) = &curve {
        builder = builder.curve(own.clone(), allow.clone());
    }
    // Binding first: a collector that cannot listen creates no output directory.
    let (builder, forward_endpoint) = add_forward_sink(builder, &args, curve)?;
    // The collector binds its input socket once it has its sinks: should that fail, the
    // directories made for the disk sink are removed.
    let out = args.out();
    let created = (!args.no_disk).then(|| CreatedDirs::before_creating(&out));
    let builder = match (args.no_disk, args.format) {
        (true, _) => builder,
        (false, Format::Npy) => {
            builder.sink(DiskSink::new(&out).context("opening the output directory (--out)")?)
        }
        (false, Format::Zarr) => builder.sink(
            StoreSink::new(&out)
                .context("opening the store (--out)")?
                .raw_level(args.store_zstd),
        ),
    };
    let collector = builder.start().context("starting the collector")?;
    if let Some(created) = created {
        created.keep();
    }
    announce(&collector, &args, forward_endpoint.as_deref())?;
    finish_collect(collector.wait(), &args)
}

impl CollectArgs {
    /// `--out`, or the default of `--format`.
    fn out(&self) -> PathBuf {
        self.out.clone().unwrap_or_else(|| match self.format {
            Format::Zarr => "run.zarr".into(),
            Format::Npy => "ndbridge-data".into(),
        })
    }
}

/// The collector `args` describe, stopped by `shutdown`, without its sinks.
fn collector_builder(args: &CollectArgs, shutdown: Shutdown) -> CollectorBuilder {
    let mut builder = Collector::builder()
        .kind(if args.sub {
            SocketKind::Sub
        } else {
            SocketKind::Pull
        })
        .max_inflight_bytes(args.max_inflight_mib << 20)
        .max_peers(args.max_peers)
        .socket_options(SocketOptions {
            recv_hwm: args.recv_hwm,
            ..SocketOptions::default()
        })
        .limits(
            Limits::default()
                .max_array_bytes(args.max_array_mib << 20)
                .max_message_bytes(args.max_array_mib << 20)
                .max_expansion(match args.max_expansion {
                    0 => u64::MAX,
                    ratio => ratio,
                }),
        )
        .drain_timeout(Duration::from_secs_f64(args.drain_timeout))
        .delivery(args.delivery.into())
        .commit_interval(Duration::from_secs_f64(args.commit_ms / 1000.0))
        .shutdown(shutdown);
    if args.connect.is_empty() {
        for addr in &args.bind {
            builder = builder.bind(addr);
        }
    }
    for addr in &args.connect {
        builder = builder.connect(addr);
    }
    if let Some(workers) = args.workers {
        builder = builder.workers(workers);
    }
    if args.stats_every > 0.0 {
        builder = builder.report_every(Duration::from_secs_f64(args.stats_every));
    }
    builder
}

/// With `--forward`, the forward sink, listening: the builder with it, and its endpoint.
fn add_forward_sink(
    builder: CollectorBuilder,
    args: &CollectArgs,
    curve: Option<(KeyPair, Allowlist)>,
) -> Result<(CollectorBuilder, Option<String>)> {
    let Some(addr) = &args.forward else {
        return Ok((builder, None));
    };
    let forward = match curve {
        Some((own, allow)) => ForwardSink::listen_curve(addr, own, std::sync::Arc::new(allow)),
        None => ForwardSink::listen(addr),
    };
    let forward = forward
        .context("opening the forward socket (--forward)")?
        .subscriber_bytes(args.forward_subscriber_mib << 20)
        .max_subscribers(args.max_subscribers as usize);
    let endpoint = forward.endpoint().to_owned();
    Ok((builder.sink(forward), Some(endpoint)))
}

/// Logs where the collector listens and stores, and with `--print-endpoints` prints it.
fn announce(collector: &Collector, args: &CollectArgs, forward: Option<&str>) -> Result<()> {
    tracing::info!(
        "collecting on {} -> {}{}",
        collector.endpoints().join(", "),
        if args.no_disk {
            "(no disk)".to_owned()
        } else {
            args.out().display().to_string()
        },
        forward
            .map(|f| format!(", forwarding on {f}"))
            .unwrap_or_default()
    );
    if args.print_endpoints {
        let endpoints = serde_json::json!({"input": collector.endpoints(), "forward": forward});
        let mut out = std::io::stdout().lock();
        writeln!(out, "{endpoints}")
            .and_then(|()| out.flush())
            .context("writing the endpoints to stdout")?;
    }
    Ok(())
}

/// The summary, logged and printed (and written with `--stats-json`); an error when a record
/// could not be stored.
fn finish_collect(summary: Summary, args: &CollectArgs) -> Result<()> {
    tracing::info!("stopped: {}", summary.stats.line(None));
    print_summary(&summary);
    if let Some(path) = &args.stats_json {
        let json = serde_json::to_vec_pretty(&summary)?;
        std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
    }
    let unstored: u64 = summary.stats.sink_errors.values().sum();
    if unstored > 0 {
        bail!(
            "{} could not be stored (sink errors {:?})",
            plural(unstored, "record"),
            summary.stats.sink_errors
        );
    }
    Ok(())
}

fn verify(args: VerifyArgs) -> Result<()> {
    let manifest = verify::read(&args.out)?;
    let sessions = &manifest.sessions;
    let (text, missing) = verify::report(sessions);
    print!("{text}");
    let records: u64 = sessions.values().map(verify::Session::records).sum();
    if manifest.unreadable > 0 {
        eprintln!(
            "{} of the manifest not read (cut short, or not a record's)",
            plural(manifest.unreadable, "line")
        );
    }
    if missing > 0 || manifest.unreadable > 0 {
        bail!(
            "{} missing of {} in {}{}",
            plural(missing, "record"),
            plural(records.saturating_add(missing), "record"),
            plural(sessions.len() as u64, "session"),
            if manifest.unreadable > 0 {
                ", and unreadable manifest lines"
            } else {
                ""
            }
        );
    }
    let not_ended = sessions.values().filter(|s| !s.ended()).count() as u64;
    eprintln!(
        "{} in {}, none missing{}",
        plural(records, "record"),
        plural(sessions.len() as u64, "session"),
        if not_ended > 0 {
            format!(
                "; {} not ended: records sent after the last one stored cannot be seen",
                plural(not_ended, "session")
            )
        } else {
            String::new()
        }
    );
    Ok(())
}

fn print_summary(summary: &Summary) {
    let s = &summary.stats;
    eprintln!(
        "{:<24} {:>10} {:>12} {:>12} {:>7} {:>6} {:>6} {:>8}",
        "source", "messages", "wire MB", "decoded MB", "ratio", "gaps", "dups", "errors"
    );
    for (source, st) in &s.sources {
        eprintln!(
            "{:<24} {:>10} {:>12.1} {:>12.1} {:>7.2} {:>6} {:>6} {:>8}",
            source,
            st.messages,
            st.wire_bytes as f64 / 1e6,
            st.raw_bytes as f64 / 1e6,
            st.compression_ratio(),
            st.gaps,
            st.duplicates,
            st.errors.values().sum::<u64>()
        );
    }
    eprintln!(
        "received {} ({}), stored {}, rejected {} {:?}, sink errors {:?}, sink retries {:?}",
        s.received,
        plural(s.session_ends, "session end"),
        s.stored,
        s.rejected,
        s.errors,
        s.sink_errors,
        s.sink_retries
    );
    if s.redelivered > 0 {
        eprintln!(
            "{} received again (acked delivery: resent by publishers that missed an \
             acknowledgement) and not stored twice",
            plural(s.redelivered, "record")
        );
    }
    if s.sessions_not_ended > 0 {
        eprintln!(
            "{} not ended (still sending, stopped without closing, or the end was lost): the \
             records they sent last may be missing without a gap to show it",
            plural(s.sessions_not_ended, "session")
        );
    }
    if s.refused_keys + s.failed_handshakes > 0 {
        eprintln!(
            "peers refused: {} not allowed (--allow), {} failed (no CURVE, or not with this \
             collector's key)",
            plural(s.refused_keys, "key"),
            plural(s.failed_handshakes, "handshake")
        );
    }
    for (source, st) in &s.sources {
        if st.reattributed > 0 {
            eprintln!(
                "{source}: {} claimed another source (stored under the key's name)",
                plural(st.reattributed, "record")
            );
        }
        if st.source_conflicts > 0 {
            eprintln!(
                "{source}: {} while a later session held the source (two publishers under \
                 one source name?)",
                plural(st.source_conflicts, "record")
            );
        }
    }
    for (kind, &count) in &s.errors {
        if let Some(flag) = DecodeError::raised_by(kind) {
            eprintln!(
                "{} rejected over a limit ({kind}): raise it with {flag}",
                plural(count, "message")
            );
        }
    }
}

fn send(args: SendArgs) -> Result<()> {
    let mut builder = Publisher::builder()
        .connect(&args.to)
        .compression(args.codec.compression())
        .chunking(args.chunking.into())
        .delivery(args.delivery.into())
        .link(args.link.into());
    if let Some((server, own)) = args.keys.load()? {
        builder = builder.curve(server, own);
    }
    if let Some(source) = &args.source {
        builder = builder.source(source);
    }
    let publisher = builder.build().context("opening the publisher (--to)")?;
    for path in &args.files {
        let name = match &args.name {
            Some(n) => n.clone(),
            None => path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "array".into()),
        };
        let is_npz = path.extension().is_some_and(|e| e == "npz");
        if is_npz {
            let file =
                std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
            let arrays = ndbridge::npy::read_npz(std::io::BufReader::new(file))
                .with_context(|| format!("reading {}", path.display()))?;
            eprintln!(
                "{}: record {name:?} with {}",
                path.display(),
                plural(arrays.len() as u64, "array")
            );
            publisher.send_record(&name, arrays, None)?;
        } else {
            let bytes =
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            let array: ArrayBuffer = ndbridge::npy::read_npy(bytes.into())
                .with_context(|| format!("reading {}", path.display()))?;
            eprintln!(
                "{}: {name:?} {} {:?}",
                path.display(),
                array.dtype(),
                array.shape()
            );
            publisher.send_record(&name, [(name.clone(), array)], None)?;
        }
    }
    let stats = publisher
        .close(Duration::from_secs_f64(args.timeout))
        .context("closing the publisher")?;
    if stats.failed > 0 || stats.dropped > 0 {
        bail!(
            "{} failed and {} dropped (see the log above)",
            plural(stats.failed, "message"),
            plural(stats.dropped, "message")
        );
    }
    eprintln!(
        "{} {}, {:.1} MB decoded, {:.1} MB on the wire",
        match args.delivery {
            DeliveryArg::FireAndForget => "delivered",
            DeliveryArg::Acked => "stored and acknowledged:",
        },
        plural(stats.delivered, "message"),
        stats.raw_bytes as f64 / 1e6,
        stats.wire_bytes as f64 / 1e6
    );
    Ok(())
}

fn tail(args: TailArgs) -> Result<()> {
    let mut builder = Subscriber::builder().connect(&args.from);
    if let Some((server, own)) = args.keys.load()? {
        builder = builder.curve(server, own);
    }
    for name in &args.name {
        builder = builder.name(name);
    }
    let mut subscriber = builder.build().context("subscribing (--from)")?;
    let shutdown = Shutdown::new();
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, shutdown.flag())
            .context("installing signal handler")?;
    }
    let mut out = std::io::stdout().lock();
    let mut seen = 0u64;
    let mut idle = Instant::now();
    while !shutdown.is_triggered() && args.count.is_none_or(|c| seen < c) {
        if let Some(limit) = args.idle_timeout {
            if idle.elapsed().as_secs_f64() > limit {
                bail!("no record for {limit} s");
            }
        }
        // A short wait, so that signals and the idle timeout are seen.
        let record = match subscriber.recv_within(Duration::from_millis(100)) {
            Ok(Some(record)) => record,
            Ok(None) => continue,
            Err(ndbridge::Error::Decode(e)) => {
                eprintln!("bad message: {e}");
                continue;
            }
            Err(e) => return Err(e).context("receiving"),
        };
        idle = Instant::now();
        seen += 1;
        // A reader that has gone (`| head`) ends the command quietly: see `main`.
        writeln!(out, "{}", tail_line(&record)).context("writing to stdout")?;
    }
    out.flush().context("writing to stdout")
}

/// One record as `tail` prints it: name, source, sequence number, each array's dtype, shape
/// and codec, and the decoded size.
fn tail_line(record: &Record) -> String {
    let h = &record.header;
    let arrays: Vec<String> = record
        .arrays
        .iter()
        .map(|a| {
            let m = a.meta();
            format!("{}:{}{:?}/{}", m.name, m.dtype, m.shape, m.codec.as_str())
        })
        .collect();
    format!(
        "{} {} seq={} {} {:.1} kB",
        h.name,
        h.source,
        h.seq,
        arrays.join(" "),
        record.raw_bytes() as f64 / 1e3
    )
}

fn demo(args: DemoArgs) -> Result<()> {
    let config = DemoConfig {
        workers: args.workers,
        duration: Duration::from_secs_f64(args.seconds),
        steps_per_second: args.rate,
        size: args.size,
        out: args.out.clone(),
        compression: args.codec.compression(),
    };
    eprintln!(
        "ndbridge demo: {} streaming for {:.0} s into a collector on loopback; files in {}",
        plural(config.workers as u64, "worker"),
        args.seconds,
        config.out.display()
    );
    let tty = std::io::stderr().is_terminal();
    let mut previous: Option<StatsSnapshot> = None;
    let report: DemoReport = demo::run(&config, |snap| {
        let line = snap.line(previous.as_ref());
        if tty {
            eprint!("\r\x1b[2K{line}");
        } else {
            eprintln!("{line}");
        }
        previous = Some(snap.clone());
    })?;
    if tty {
        eprintln!();
    }
    let sent = print_demo_summary(&mut std::io::stdout().lock(), &report)
        .context("writing the summary to stdout")?;
    let s = &report.summary.stats;
    if s.stored != sent || s.gaps != 0 || s.sessions_not_ended != 0 {
        bail!(
            "{} sent but {} stored ({}, {} not ended)",
            plural(sent, "record"),
            s.stored,
            plural(s.gaps, "gap"),
            plural(s.sessions_not_ended, "session")
        );
    }
    Ok(())
}

/// Writes the demo's summary table; returns the records the workers sent.
fn print_demo_summary(out: &mut impl Write, report: &DemoReport) -> std::io::Result<u64> {
    let s = &report.summary.stats;
    let secs = report.elapsed.as_secs_f64();
    let sent: u64 = report.publishers.iter().map(|p| p.sent).sum();
    writeln!(out)?;
    writeln!(out, "{:<28} {:>14}", "collector endpoint", report.endpoint)?;
    writeln!(out, "{:<28} {:>14}", "records stored", s.stored)?;
    writeln!(
        out,
        "{:<28} {:>14.3}",
        "GB decoded",
        s.raw_bytes as f64 / 1e9
    )?;
    writeln!(
        out,
        "{:<28} {:>14.3}",
        "GB on the wire",
        s.wire_bytes as f64 / 1e9
    )?;
    writeln!(
        out,
        "{:<28} {:>14.3}",
        "GB/s decoded",
        s.raw_bytes as f64 / 1e9 / secs
    )?;
    writeln!(
        out,
        "{:<28} {:>14.2}",
        "compression ratio",
        s.wire_bytes as f64 / s.raw_bytes.max(1) as f64
    )?;
    writeln!(out, "{:<28} {:>14}", "gaps", s.gaps)?;
    writeln!(
        out,
        "{:<28} {:>14}",
        "sessions not ended", s.sessions_not_ended
    )?;
    writeln!(out, "{:<28} {:>14}", "rejected", s.rejected)?;
    writeln!(out, "{:<28} {:>14}", "sent by workers", sent)?;
    writeln!(out)?;
    let store = report.out.display();
    writeln!(out, "store: {store}   (list it: ndbridge ls {store})")?;
    writeln!(out, "open it with xarray (pip install zarr xarray):")?;
    writeln!(out, "  import xarray as xr")?;
    writeln!(
        out,
        "  ds = xr.open_zarr('{store}/sim-0/temperature'); print(ds.temperature.mean('record'))"
    )?;
    out.flush()?;
    Ok(sent)
}

/// True when `error` comes from writing to a pipe whose reader has gone (`ndbridge ... | head`).
fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(use_colour(true, None));
        assert!(use_colour(true, Some(OsString::new())));
        assert!(!use_colour(true, Some(OsString::from("1"))));
        assert!(!use_colour(false, None));
    }

    #[test]
    fn created_dirs_are_removed_unless_kept() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("a").join("b");
        let created = CreatedDirs::before_creating(&out);
        std::fs::create_dir_all(&out).unwrap();
        drop(created);
        assert!(!dir.path().join("a").exists());
        let created = CreatedDirs::before_creating(&out);
        std::fs::create_dir_all(&out).unwrap();
        created.keep();
        assert!(out.exists());
        // What existed before is never removed.
        drop(CreatedDirs::before_creating(&out));
        assert!(out.exists());
    }
}

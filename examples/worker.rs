//! A simulation worker that publishes its state with ndbridge: a 2-D heat equation with a
//! wandering heat source. Every step it sends the evolving fields (`temperature` as f64,
//! `density` as f32) with `send_owned`, so their buffers go out without a copy; every few steps
//! it sends one `state` record holding several arrays and the step's attributes. At the end it
//! prints the publisher's counters.
//!
//! ```text
//! cargo run --example collector -- --seconds 30 &
//! cargo run --example worker -- tcp://127.0.0.1:5555 --steps 200
//! ```
//!
//! To a collector in acked delivery (`ndbridge collect --delivery acked`), add `--acked`; with
//! `--spool DIR` too, what the collector has not acknowledged survives the worker: the next
//! worker on `DIR` sends it.
//!
//! To a collector with CURVE keys (README, Deployment), add `--curve-server collector.key
//! --curve-secret worker.key_secret`.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use ndarray::{Array2, Array3};
use ndbridge::{ArrayBuffer, Delivery, FullPolicy, KeyPair, PublicKey, Publisher};

/// Run a small heat simulation and publish its fields to a collector.
#[derive(Parser)]
struct Args {
    /// Collector address to connect to.
    #[arg(default_value = "tcp://127.0.0.1:5555")]
    address: String,
    /// Simulation steps.
    #[arg(long, default_value_t = 100)]
    steps: u64,
    /// Grid side (n x n cells).
    #[arg(long, default_value_t = 128)]
    size: usize,
    /// Send a `state` record every this many steps (0: never).
    #[arg(long, default_value_t = 10)]
    record_every: u64,
    /// Pause between steps, in milliseconds.
    #[arg(long, default_value_t = 0)]
    interval_ms: u64,
    /// Source id in every header [default: host:pid].
    #[arg(long)]
    source: Option<String>,
    /// Seconds `close` waits for the collector to take everything.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    /// Acked delivery (for `ndbridge collect --delivery acked`): every record acknowledged once
    /// stored durably, resent after a reconnect.
    #[arg(long)]
    acked: bool,
    /// With --acked: a directory of this worker's own where every record is kept until the
    /// collector acknowledges it. A worker killed leaves its records there; the next one
    /// started on the directory sends them first.
    #[arg(long, requires = "acked")]
    spool: Option<std::path::PathBuf>,
    /// The collector's public key file (NAME.key), for a collector with CURVE keys.
    #[arg(long, requires = "curve_secret")]
    curve_server: Option<std::path::PathBuf>,
    /// This worker's secret key file (NAME.key_secret from `ndbridge keygen`).
    #[arg(long, requires = "curve_server")]
    curve_secret: Option<std::path::PathBuf>,
}

/// The simulation: temperature on an n x n grid, explicit diffusion, fixed cold borders.
struct Heat {
    temperature: Array2<f64>,
    time: f64,
    dt: f64,
}

impl Heat {
    fn new(n: usize) -> Heat {
        Heat {
            temperature: Array2::from_elem((n, n), 300.0),
            time: 0.0,
            dt: 0.2,
        }
    }

    /// One step: diffuse, then heat a spot that circles the middle of the grid.
    fn step(&mut self) {
        let n = self.temperature.nrows();
        let t = &self.temperature;
        let mut next = t.clone();
        for i in 1..n.saturating_sub(1) {
            for j in 1..n - 1 {
                let laplacian =
                    t[[i - 1, j]] + t[[i + 1, j]] + t[[i, j - 1]] + t[[i, j + 1]] - 4.0 * t[[i, j]];
                next[[i, j]] = t[[i, j]] + self.dt * laplacian;
            }
        }
        let radius = n as f64 / 4.0;
        let centre = n as f64 / 2.0;
        let si = (centre + radius * (self.time * 0.05).cos()) as usize;
        let sj = (centre + radius * (self.time * 0.05).sin()) as usize;
        if let Some(cell) = next.get_mut([si.min(n - 1), sj.min(n - 1)]) {
            *cell += 50.0;
        }
        self.temperature = next;
        self.time += self.dt;
    }

    /// An ideal-gas density at constant pressure, in single precision.
    fn density(&self) -> Array2<f32> {
        self.temperature.mapv(|t| (101_325.0 / (287.05 * t)) as f32)
    }

    /// The temperature gradient (central differences) as a `2 x n x n` velocity-like field.
    fn gradient(&self) -> Array3<f32> {
        let t = &self.temperature;
        let n = t.nrows();
        Array3::from_shape_fn((2, n, n), |(axis, i, j)| {
            let (lo, hi) = if axis == 0 {
                (t[[i.saturating_sub(1), j]], t[[(i + 1).min(n - 1), j]])
            } else {
                (t[[i, j.saturating_sub(1)]], t[[i, (j + 1).min(n - 1)]])
            };
            ((hi - lo) / 2.0) as f32
        })
    }
}

fn run(args: &Args) -> Result<()> {
    anyhow::ensure!(args.size >= 3, "--size must be at least 3");
    let mut builder = Publisher::builder()
        .connect(&args.address)
        .on_full(FullPolicy::Block);
    if args.acked {
        builder = builder.delivery(Delivery::Acked);
    }
    if let Some(dir) = &args.spool {
        builder = builder.spool_dir(dir);
    }
    if let Some(source) = &args.source {
        builder = builder.source(source);
    }
    if let (Some(server), Some(secret)) = (&args.curve_server, &args.curve_secret) {
        builder = builder.curve(
            PublicKey::load(server).context("reading --curve-server")?,
            KeyPair::load(secret).context("reading --curve-secret")?,
        );
    }
    let publisher = builder.build().context("opening the publisher")?;
    let mut sim = Heat::new(args.size);
    let started = Instant::now();
    for step in 0..args.steps {
        sim.step();
        // Owned arrays: their buffers become the frames, nothing is copied.
        publisher.send_owned("temperature", sim.temperature.clone())?;
        publisher.send_owned("density", sim.density())?;
        if args.record_every > 0 && step % args.record_every == 0 {
            let hot = sim.temperature.mapv(|t| t > 310.0);
            let peak = sim.temperature.iter().copied().fold(f64::MIN, f64::max);
            let attrs = serde_json::json!({
                "step": step, "time": sim.time, "dt": sim.dt, "units": "K", "peak": peak,
            });
            publisher.send_record(
                "state",
                [
                    ("temperature", ArrayBuffer::from_array(&sim.temperature)),
                    ("gradient", ArrayBuffer::from_owned(sim.gradient())),
                    ("hot", ArrayBuffer::from_owned(hot)),
                ],
                attrs.as_object().cloned(),
            )?;
        }
        if args.interval_ms > 0 {
            std::thread::sleep(Duration::from_millis(args.interval_ms));
        }
    }
    let stats = publisher
        .close(Duration::from_secs_f64(args.timeout))
        .context("the collector did not take every message in time")?;
    println!(
        "worker: {} steps in {:.2} s; sent {} messages ({} dropped, {} failed), \
         {:.2} MB decoded, {:.2} MB on the wire, ratio {:.2}; {} delivered, {} recovered from \
         the spool, {} resent",
        args.steps,
        started.elapsed().as_secs_f64(),
        stats.sent,
        stats.dropped,
        stats.failed,
        stats.raw_bytes as f64 / 1e6,
        stats.wire_bytes as f64 / 1e6,
        stats.compression_ratio(),
        stats.delivered,
        stats.recovered,
        stats.resent,
    );
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("worker: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

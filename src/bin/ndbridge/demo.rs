//! The end-to-end demo: a collector on an ephemeral loopback port and K simulated workers, each
//! a thread with its own [`Publisher`], streaming smooth evolving fields of several shapes and
//! dtypes for a few seconds. `ndbridge demo` runs it; tests run it small.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use ndarray::{Array1, Array2};

use ndbridge::collector::{Collector, StatsSnapshot, StoreSink, Summary};
use ndbridge::{ArrayBuffer, Compression, Error, Publisher, PublisherStats};

use crate::synth::smooth_field;

/// What the demo runs.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    /// Simulated workers (publisher threads).
    pub workers: usize,
    /// How long the workers stream.
    pub duration: Duration,
    /// Simulation steps per second per worker (each step sends three records); 0 or less: as
    /// fast as the pipeline takes them.
    pub steps_per_second: f64,
    /// Side of the largest field (`n x n` f64); the others scale from it.
    pub size: usize,
    /// Where the collector stores the files: each run in a new `run-<milliseconds>` directory
    /// under it.
    pub out: PathBuf,
    /// The workers' codec policy.
    pub compression: Compression,
}

impl Default for DemoConfig {
    fn default() -> Self {
        DemoConfig {
            workers: 4,
            duration: Duration::from_secs(5),
            steps_per_second: 20.0,
            size: 256,
            out: PathBuf::from("ndbridge-demo"),
            compression: Compression::auto(),
        }
    }
}

/// What the demo did.
#[derive(Debug, Clone)]
pub struct DemoReport {
    /// The collector's summary.
    pub summary: Summary,
    /// Each worker's publisher counters.
    pub publishers: Vec<PublisherStats>,
    /// Wall time from the first send to the last record stored.
    pub elapsed: Duration,
    /// The collector's endpoint.
    pub endpoint: String,
    /// The directory this run stored its files in.
    pub out: PathBuf,
}

/// One simulated worker: sends `temperature` (f64, n x n), `pressure` (f32, n/2 x 2n) and a
/// `state` record (`u`, `v` f32 and a `wet` bool mask, with the step in `attrs`) every step.
fn simulate(worker: usize, endpoint: &str, config: &DemoConfig) -> Result<PublisherStats, Error> {
    let publisher = Publisher::builder()
        .connect(endpoint)
        .source(format!("sim-{worker}"))
        .compression(config.compression)
        .build()?;
    let n = config.size.max(4);
    let period = (config.steps_per_second > 0.0)
        .then(|| Duration::from_secs_f64(1.0 / config.steps_per_second));
    let start = Instant::now();
    let mut step = 0u64;
    while start.elapsed() < config.duration {
        let t = step as f64 * 0.05 + worker as f64;
        let seed = (worker as u64) << 32 | step;
        let temperature = Array2::from_shape_vec((n, n), smooth_field(n, n, t, seed))
            .expect("field has n*n values");
        publisher.send_owned("temperature", temperature.mapv(|v| 280.0 + 15.0 * v))?;
        let pressure: Vec<f32> = smooth_field(n / 2, 2 * n, t * 0.5, seed ^ 1)
            .into_iter()
            .map(|v| (101_325.0 + 500.0 * v) as f32)
            .collect();
        let pressure = Array2::from_shape_vec((n / 2, 2 * n), pressure).expect("sized");
        publisher.send_owned("pressure", pressure)?;
        let m = n / 4;
        let u = Array2::from_shape_vec((m, m), smooth_field(m, m, t, seed ^ 2))
            .expect("sized")
            .mapv(|v| v as f32);
        let v = u.t().to_owned();
        let wet = Array1::from_iter(u.iter().map(|&x| x > 0.0));
        let attrs = serde_json::json!({"step": step, "t": t});
        publisher.send_record(
            "state",
            [
                ("u", ArrayBuffer::from_owned(u)),
                ("v", ArrayBuffer::from_owned(v)),
                ("wet", ArrayBuffer::from_owned(wet)),
            ],
            attrs.as_object().cloned(),
        )?;
        step += 1;
        if let Some(wait) = period.and_then(|p| p.mul_f64(step as f64).checked_sub(start.elapsed()))
        {
            std::thread::sleep(wait);
        }
    }
    publisher.close(Duration::from_secs(30))
}

/// Runs the demo; `progress` is called about twice a second with the collector's counters.
pub fn run(
    config: &DemoConfig,
    mut progress: impl FnMut(&StatsSnapshot),
) -> anyhow::Result<DemoReport> {
    // Each run gets a store of its own, so records of an earlier run are never mixed in.
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let out = config.out.join(format!("run-{stamp}.zarr"));
    let collector = Collector::builder()
        .bind("tcp://127.0.0.1:*")
        .sink(StoreSink::new(&out).context("opening the demo's store")?)
        .start()
        .context("starting the collector")?;
    let endpoint = collector.endpoint().to_owned();
    let started = Instant::now();
    let handles: Vec<_> = (0..config.workers)
        .map(|w| {
            let (endpoint, config) = (endpoint.clone(), config.clone());
            std::thread::spawn(move || simulate(w, &endpoint, &config))
        })
        .collect();
    while !handles.iter().all(|h| h.is_finished()) {
        std::thread::sleep(Duration::from_millis(500));
        progress(&collector.stats());
    }
    let mut publishers = Vec::with_capacity(handles.len());
    for (w, handle) in handles.into_iter().enumerate() {
        let stats = handle
            .join()
            .map_err(|_| anyhow!("demo worker {w} panicked"))?
            .with_context(|| format!("demo worker {w}"))?;
        publishers.push(stats);
    }
    let sent: u64 = publishers.iter().map(|p| p.sent).sum();
    // Everything sent is in ZeroMQ's hands: wait until the collector has it all, and every
    // session's end.
    let deadline = Instant::now() + Duration::from_secs(30);
    let settled = |s: &StatsSnapshot| s.stored + s.rejected >= sent && s.sessions_not_ended == 0;
    while !settled(&collector.stats()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let elapsed = started.elapsed();
    let summary = collector.stop();
    progress(&summary.stats);
    Ok(DemoReport {
        summary,
        publishers,
        elapsed,
        endpoint,
        out,
    })
}

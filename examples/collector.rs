//! A collector embedded in a program, with a sink of its own: besides storing every record with
//! the [`DiskSink`], it keeps a running mean of each record's values per record name and prints
//! the table every few seconds and at the end. Stops on Ctrl-C (or SIGTERM), or after
//! `--seconds`.
//!
//! ```text
//! cargo run --example collector -- --bind tcp://127.0.0.1:5555 --out ndbridge-example
//! cargo run --example worker -- tcp://127.0.0.1:5555      # in another terminal
//! ```
//!
//! The first line on stdout is `listening on <endpoint>`, with a `*` port resolved.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use ndbridge::collector::{Collector, DiskSink, Received, Shutdown, Sink, SinkError};
use ndbridge::wire::{DecodedArray, DynArray};

/// Collect arrays from workers, store them and print running means.
#[derive(Parser)]
struct Args {
    /// Address to listen on (`tcp://127.0.0.1:*` picks a free port).
    #[arg(long, default_value = "tcp://127.0.0.1:5555")]
    bind: String,
    /// Directory for the .npy/.npz files and manifest.jsonl.
    #[arg(long, default_value = "ndbridge-example")]
    out: PathBuf,
    /// Stop after this many seconds [default: run until Ctrl-C].
    #[arg(long)]
    seconds: Option<f64>,
    /// Decode worker threads.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Seconds between printed tables (0: only at the end).
    #[arg(long, default_value_t = 5.0)]
    print_every: f64,
}

/// The mean of one record name's values, over every record received so far.
#[derive(Debug, Default, Clone, Copy)]
struct Mean {
    records: u64,
    elements: u64,
    sum: f64,
    last: f64,
}

/// A custom sink: a running mean of all elements of each record, by record name. Booleans
/// count as 0 and 1, complex numbers by their modulus.
#[derive(Default)]
struct RunningMeans {
    by_name: Mutex<BTreeMap<String, Mean>>,
}

impl RunningMeans {
    fn table(&self) -> String {
        let by_name = self.by_name.lock().expect("means lock");
        let mut text = format!(
            "{:<16} {:>8} {:>16} {:>16}\n",
            "record", "count", "running mean", "last mean"
        );
        for (name, m) in by_name.iter() {
            let mean = m.sum / m.elements.max(1) as f64;
            text += &format!(
                "{name:<16} {:>8} {mean:>16.6} {:>16.6}\n",
                m.records, m.last
            );
        }
        text
    }
}

/// The sum and element count of one array, whatever its dtype.
fn sum(array: &DecodedArray) -> Result<(f64, u64), SinkError> {
    let view = array.to_dyn().map_err(|e| SinkError::Other(Box::new(e)))?;
    macro_rules! total {
        ($a:expr, $f:expr) => {
            ($a.iter().map($f).sum::<f64>(), $a.len() as u64)
        };
    }
    Ok(match view {
        DynArray::Bool(a) => total!(a, |&x| f64::from(u8::from(x))),
        DynArray::I8(a) => total!(a, |&x| f64::from(x)),
        DynArray::I16(a) => total!(a, |&x| f64::from(x)),
        DynArray::I32(a) => total!(a, |&x| f64::from(x)),
        DynArray::I64(a) => total!(a, |&x| x as f64),
        DynArray::U8(a) => total!(a, |&x| f64::from(x)),
        DynArray::U16(a) => total!(a, |&x| f64::from(x)),
        DynArray::U32(a) => total!(a, |&x| f64::from(x)),
        DynArray::U64(a) => total!(a, |&x| x as f64),
        DynArray::F16(a) => total!(a, |&x| x.to_f64()),
        DynArray::F32(a) => total!(a, |&x| f64::from(x)),
        DynArray::F64(a) => total!(a, |&x| x),
        DynArray::C64(a) => total!(a, |&x| f64::from(x.norm())),
        DynArray::C128(a) => total!(a, |&x| x.norm()),
    })
}

impl Sink for RunningMeans {
    fn name(&self) -> &str {
        "means"
    }

    fn write(&self, message: &Received) -> Result<(), SinkError> {
        let (mut total, mut elements) = (0.0, 0);
        for array in &message.record.arrays {
            let (s, n) = sum(array)?;
            total += s;
            elements += n;
        }
        let mut by_name = self.by_name.lock().expect("means lock");
        let m = by_name
            .entry(message.record.header.name.clone())
            .or_default();
        m.records += 1;
        m.elements += elements;
        m.sum += total;
        m.last = total / elements.max(1) as f64;
        Ok(())
    }

    fn finish(&self) -> Result<(), SinkError> {
        print!("{}", self.table());
        Ok(())
    }

    fn report(&self) -> serde_json::Map<String, serde_json::Value> {
        let by_name = self.by_name.lock().expect("means lock");
        by_name
            .iter()
            .map(|(name, m)| {
                let mean = m.sum / m.elements.max(1) as f64;
                (name.clone(), serde_json::json!(mean))
            })
            .collect()
    }
}

fn run(args: &Args) -> Result<()> {
    let shutdown = Shutdown::new();
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, shutdown.flag())
            .context("installing a signal handler")?;
    }
    let means = std::sync::Arc::new(RunningMeans::default());
    let disk = DiskSink::new(&args.out).context("opening the output directory")?;
    let collector = Collector::builder()
        .bind(&args.bind)
        .workers(args.workers)
        .sink(disk)
        .shared_sink(means.clone())
        .shutdown(shutdown.clone())
        .start()
        .context("starting the collector")?;
    println!("listening on {}", collector.endpoint());
    std::io::stdout().flush()?;

    let started = Instant::now();
    let deadline = args.seconds.map(|s| started + Duration::from_secs_f64(s));
    let print_every = (args.print_every > 0.0).then(|| Duration::from_secs_f64(args.print_every));
    let mut last_print = Instant::now();
    let mut previous = None;
    while !shutdown.is_triggered() && deadline.is_none_or(|d| Instant::now() < d) {
        std::thread::sleep(Duration::from_millis(50));
        if print_every.is_some_and(|every| last_print.elapsed() >= every) {
            last_print = Instant::now();
            let snap = collector.stats();
            println!("{}", snap.line(previous.as_ref()));
            previous = Some(snap);
            print!("{}", means.table());
            std::io::stdout().flush()?;
        }
    }
    let summary = collector.stop();
    let s = &summary.stats;
    println!(
        "collector: stopped after {:.1} s; received {}, stored {}, rejected {}, gaps {}; files in {}",
        started.elapsed().as_secs_f64(),
        s.received,
        s.stored,
        s.rejected,
        s.gaps,
        args.out.display()
    );
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("collector: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

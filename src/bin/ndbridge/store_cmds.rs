//! `ndbridge ls STORE` (what a store holds) and `ndbridge replay STORE --to EP` (its records
//! sent again as they came).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use ndbridge::store::{JournalEntry, Store};
use ndbridge::wire::Header;

use crate::plural;

#[derive(Args)]
pub(crate) struct LsArgs {
    /// The store (a collector's --out with --format zarr).
    store: PathBuf,
}

#[derive(Args)]
pub(crate) struct ReplayArgs {
    /// The store to read.
    store: PathBuf,
    /// Where to send: a collector's input (PUSH, connecting), e.g. tcp://127.0.0.1:5555.
    #[arg(long)]
    to: String,
    /// Only this source's records.
    #[arg(long)]
    source: Option<String>,
    /// Only records of this name.
    #[arg(long)]
    record: Option<String>,
    /// Only sequence numbers in FIRST:END (END excluded; either may be left out, as in
    /// `100:` or `:50`). Without it and --record, each session's end is sent too, after the
    /// records.
    #[arg(long, value_parser = seq_range)]
    seq: Option<(u64, u64)>,
    /// Seconds to wait for the receiver to take what is still queued at the end.
    #[arg(long, default_value_t = 30.0)]
    linger: f64,
}

fn seq_range(text: &str) -> Result<(u64, u64), String> {
    let (first, end) = text
        .split_once(':')
        .ok_or_else(|| format!("expected FIRST:END (e.g. 100:200), found {text:?}"))?;
    let parse = |part: &str, default: u64| {
        if part.is_empty() {
            Ok(default)
        } else {
            part.parse::<u64>()
                .map_err(|e| format!("expected a sequence number, found {part:?}: {e}"))
        }
    };
    Ok((parse(first, 0)?, parse(end, u64::MAX)?))
}

/// Prints one line per array of each group, then the totals.
pub(crate) fn ls(args: LsArgs) -> Result<()> {
    let store = Store::open(&args.store).context("opening the store")?;
    println!(
        "{:<16} {:<16} {:>9}  {:<16} {:<6} {:<14} {:<13} {:>9} {:>10} {:>10} {:>6}",
        "source",
        "record",
        "records",
        "array",
        "dtype",
        "shape",
        "codec",
        "present",
        "stored MB",
        "raw MB",
        "ratio"
    );
    let (mut records, mut stored, mut raw) = (0u64, 0u64, 0u64);
    for group in store.groups() {
        records += group.records;
        for a in &group.arrays {
            stored += a.stored_bytes;
            raw += a.raw_bytes;
            println!(
                "{:<16} {:<16} {:>9}  {:<16} {:<6} {:<14} {:<13} {:>9} {:>10.2} {:>10.2} {:>6.2}",
                group.source,
                group.record,
                group.records,
                a.node,
                a.dtype.to_string(),
                format!(
                    "{:?}{}",
                    a.shape,
                    if a.order == ndbridge::wire::Order::F {
                        " F"
                    } else {
                        ""
                    }
                ),
                a.codec,
                a.present,
                a.stored_bytes as f64 / 1e6,
                a.raw_bytes as f64 / 1e6,
                ratio(a.stored_bytes, a.raw_bytes)
            );
        }
    }
    let journal = store.journal().context("reading the journal")?;
    let ended = journal
        .iter()
        .filter(|e| matches!(e, JournalEntry::End { .. }))
        .count();
    let refused = journal.len() - ended;
    println!(
        "{} in {}; arrays {:.2} MB stored of {:.2} MB (ratio {:.2}); {} ended{}",
        plural(records, "record"),
        plural(store.groups().len() as u64, "group"),
        stored as f64 / 1e6,
        raw as f64 / 1e6,
        ratio(stored, raw),
        plural(ended as u64, "session"),
        if refused > 0 {
            format!(", {} refused", plural(refused as u64, "record"))
        } else {
            String::new()
        }
    );
    Ok(())
}

fn ratio(stored: u64, raw: u64) -> f64 {
    if raw == 0 {
        1.0
    } else {
        stored as f64 / raw as f64
    }
}

/// Sends the records chosen, group by group, each as the message that brought it.
pub(crate) fn replay(args: ReplayArgs) -> Result<()> {
    let store = Store::open(&args.store).context("opening the store")?;
    let context = zmq::Context::new();
    let socket = context.socket(zmq::PUSH).context("opening a PUSH socket")?;
    socket
        .set_linger((args.linger * 1000.0) as i32)
        .context("setting the linger")?;
    socket
        .connect(&args.to)
        .with_context(|| format!("connecting to {} (--to)", args.to))?;
    let (first, end) = args.seq.unwrap_or((0, u64::MAX));
    let chosen = |source: &str, record: &str| {
        args.source.as_deref().is_none_or(|s| s == source)
            && args.record.as_deref().is_none_or(|r| r == record)
    };
    let mut sent = 0u64;
    for group in store.groups() {
        if !chosen(&group.source, &group.record) {
            continue;
        }
        let mut reader = store.reader(group).context("reading the store")?;
        for i in 0..reader.len() {
            if !(first..end).contains(&reader.seq(i)) {
                continue;
            }
            let (_, frames) = reader.message(i).context("reading the store")?;
            socket
                .send_multipart(frames.iter().map(|f| f.as_ref()), 0)
                .context("sending")?;
            sent += 1;
        }
    }
    let mut ends = 0u64;
    // A session's end says how many records it sent, of every name: sent when the whole
    // session is.
    if args.seq.is_none() && args.record.is_none() {
        for entry in store.journal().context("reading the journal")? {
            if let JournalEntry::End {
                source,
                session,
                records,
            } = entry
            {
                if args.source.as_deref().is_none_or(|s| s == source) {
                    let header = Header::end_of(&source, &session, records, 0.0);
                    socket
                        .send(header.to_json(), 0)
                        .context("sending a session end")?;
                    ends += 1;
                }
            }
        }
    }
    if sent == 0 {
        bail!(
            "no record of {} matches the selection",
            args.store.display()
        );
    }
    eprintln!(
        "sent {} and {} to {}",
        plural(sent, "record"),
        plural(ends, "session end"),
        args.to
    );
    Ok(())
}

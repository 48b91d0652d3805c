//! `ndbridge verify OUT`: what a collector's store (or `--format npy` output directory) holds,
//! per source and session: the records, the sequence numbers missing, those stored more than
//! once, and whether the session ended. Missing are the numbers from 0 to the session's end
//! (the record count its last message gave), or to the last one stored for a session that did
//! not end. In a store a record counts when it is committed (within every array's length); in
//! an npy directory when its manifest line names a file that is there.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::BufRead as _;
use std::path::Path;

use anyhow::{Context, Result};

/// One session of one source, as stored.
#[derive(Debug, Default)]
pub(crate) struct Session {
    /// How many times each sequence number is stored.
    seqs: BTreeMap<u64, u64>,
    /// Manifest lines whose file is gone.
    files_gone: u64,
    /// Sequence numbers the collector refused for good (acked delivery), with the reason.
    refused: BTreeMap<u64, String>,
    /// The records the session sent, as its end said; `None` if it did not end.
    end: Option<u64>,
}

impl Session {
    /// Records stored (each sequence number once).
    pub(crate) fn records(&self) -> u64 {
        self.seqs.len() as u64
    }

    /// Whether the session's end is stored.
    pub(crate) fn ended(&self) -> bool {
        self.end.is_some()
    }

    /// The sequence numbers from 0 to the session's end (or to the last stored) that are not,
    /// as inclusive ranges. A record refused by the collector is not missing: it is listed
    /// apart ([`refused`](Self::refused)).
    pub(crate) fn missing(&self) -> Vec<(u64, u64)> {
        let mut ranges = Vec::new();
        let mut next = 0;
        let mut known: Vec<u64> = self
            .seqs
            .keys()
            .chain(self.refused.keys())
            .copied()
            .collect();
        known.sort_unstable();
        for seq in known {
            if seq > next {
                ranges.push((next, seq - 1));
            }
            next = seq.saturating_add(1);
        }
        if let Some(end) = self.end.filter(|&end| end > next) {
            ranges.push((next, end - 1));
        }
        ranges
    }

    /// The sequence numbers refused by the collector, as inclusive ranges.
    pub(crate) fn refused(&self) -> Vec<(u64, u64)> {
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        for &seq in self.refused.keys() {
            match ranges.last_mut() {
                Some(last) if last.1 + 1 == seq => last.1 = seq,
                _ => ranges.push((seq, seq)),
            }
        }
        ranges
    }

    /// The sequence numbers stored more than once.
    pub(crate) fn duplicated(&self) -> Vec<u64> {
        self.seqs
            .iter()
            .filter(|(_, &n)| n > 1)
            .map(|(&seq, _)| seq)
            .collect()
    }
}

/// What a manifest holds: the sessions by (source, session), and the lines that are not a
/// record's (cut short by a crash, or written by something else).
pub(crate) struct Manifest {
    pub(crate) sessions: BTreeMap<(String, String), Session>,
    pub(crate) unreadable: u64,
}

/// Reads the store at `out`, or `out/manifest.jsonl` (checking each file it names).
pub(crate) fn read(out: &Path) -> Result<Manifest> {
    if out.join("zarr.json").exists() {
        return read_store(out);
    }
    let path = out.join("manifest.jsonl");
    let file = std::fs::File::open(&path).with_context(|| {
        format!(
            "{}: expected the manifest of a collector's --out",
            path.display()
        )
    })?;
    let mut manifest = Manifest {
        sessions: BTreeMap::new(),
        unreadable: 0,
    };
    let mut reader = std::io::BufReader::new(file);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            return Ok(manifest);
        }
        let entry: serde_json::Value = serde_json::from_slice(&line).unwrap_or_default();
        let (Some(source), Some(session), Some(seq)) = (
            entry["source"].as_str(),
            entry["session"].as_str(),
            entry["seq"].as_u64(),
        ) else {
            manifest.unreadable += 1;
            continue;
        };
        let refused = entry["refused"].as_str();
        let file = match (entry["end"].as_bool(), entry["path"].as_str(), refused) {
            (Some(true), None, None) | (None, None, Some(_)) => None,
            (None, Some(file), None) => Some(file),
            _ => {
                manifest.unreadable += 1;
                continue;
            }
        };
        let session = manifest
            .sessions
            .entry((source.to_owned(), session.to_owned()))
            .or_default();
        if let Some(reason) = refused {
            session.refused.insert(seq, reason.to_owned());
            continue;
        }
        let Some(file) = file else {
            session.end = session.end.max(Some(seq));
            continue;
        };
        if out.join(file).is_file() {
            *session.seqs.entry(seq).or_default() += 1;
        } else {
            session.files_gone += 1;
        }
    }
}

/// Reads a store's records (by the `seq` and `session` columns of each group) and journal.
fn read_store(out: &Path) -> Result<Manifest> {
    use ndbridge::store::{JournalEntry, Store};
    let store = Store::open(out).context("opening the store")?;
    let mut manifest = Manifest {
        sessions: BTreeMap::new(),
        unreadable: 0,
    };
    for group in store.groups() {
        for (seq, session) in store.keys(group).context("reading the store")? {
            let entry = manifest.sessions.entry((group.source.clone(), session));
            *entry.or_default().seqs.entry(seq).or_default() += 1;
        }
    }
    for entry in store.journal().context("reading the store's journal")? {
        match entry {
            JournalEntry::End {
                source,
                session,
                records,
            } => {
                let s = manifest.sessions.entry((source, session)).or_default();
                s.end = s.end.max(Some(records));
            }
            JournalEntry::Refused {
                source,
                session,
                seq,
                reason,
            } => {
                let s = manifest.sessions.entry((source, session)).or_default();
                s.refused.insert(seq, reason);
            }
        }
    }
    Ok(manifest)
}

/// The report: a line per session, then what is missing and what the collector refused; and
/// the number of records missing or refused.
pub(crate) fn report(sessions: &BTreeMap<(String, String), Session>) -> (String, u64) {
    let mut text = format!(
        "{:<24} {:<18} {:>9} {:>9} {:>11} {:>10} {:>6}\n",
        "source", "session", "records", "missing", "duplicated", "files gone", "ended"
    );
    let mut missing_total = 0u64;
    for ((source, session), s) in sessions {
        let missing = s.missing();
        let count = missing
            .iter()
            .fold(0u64, |n, (a, b)| n.saturating_add(b - a).saturating_add(1));
        missing_total = missing_total.saturating_add(count);
        let _ = writeln!(
            text,
            "{source:<24} {session:<18} {:>9} {count:>9} {:>11} {:>10} {:>6}",
            s.records(),
            s.duplicated().len(),
            s.files_gone,
            if s.ended() { "yes" } else { "no" }
        );
        if !missing.is_empty() {
            let _ = writeln!(text, "  missing seqs: {}", ranges(&missing));
        }
        let refused = s.refused();
        if !refused.is_empty() {
            let reasons: std::collections::BTreeSet<&str> =
                s.refused.values().map(String::as_str).collect();
            let reasons: Vec<&str> = reasons.into_iter().collect();
            let _ = writeln!(
                text,
                "  refused by the collector: {} ({})",
                ranges(&refused),
                reasons.join(", ")
            );
            missing_total = missing_total.saturating_add(s.refused.len() as u64);
        }
    }
    (text, missing_total)
}

/// `3, 7-9, 12`, at most 20 ranges and then how many more.
fn ranges(ranges: &[(u64, u64)]) -> String {
    let mut shown: Vec<String> = ranges
        .iter()
        .take(20)
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect();
    if ranges.len() > 20 {
        shown.push(format!("... ({} more ranges)", ranges.len() - 20));
    }
    shown.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_ranges_and_duplicates_are_found() {
        let mut s = Session::default();
        for seq in [1, 2, 2, 6, 7, 9] {
            *s.seqs.entry(seq).or_default() += 1;
        }
        assert_eq!(s.records(), 5);
        assert_eq!(s.missing(), [(0, 0), (3, 5), (8, 8)]);
        assert_eq!(s.duplicated(), [2]);
        assert_eq!(ranges(&s.missing()), "0, 3-5, 8");
        // The session's end says 12 records were sent: 10 and 11 are missing too.
        s.end = Some(12);
        assert_eq!(s.missing(), [(0, 0), (3, 5), (8, 8), (10, 11)]);
        s.end = Some(10);
        assert_eq!(s.missing(), [(0, 0), (3, 5), (8, 8)]);
        // Refused by the collector: listed apart, not missing.
        for seq in [0, 3, 4] {
            s.refused.insert(seq, "array_too_large".into());
        }
        assert_eq!(s.missing(), [(5, 5), (8, 8)]);
        assert_eq!(s.refused(), [(0, 0), (3, 4)]);
    }
}

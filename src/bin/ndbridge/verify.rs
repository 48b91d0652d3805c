//! `ndbridge verify OUT`: what a disk sink's output directory holds, per source and session: the
//! records, the sequence numbers missing between 0 and the last one stored, and those stored
//! more than once. A record counts when its manifest line names a file that is there.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::BufRead;
use std::path::Path;

use anyhow::{Context, Result};

/// One session of one source, as stored.
#[derive(Debug, Default)]
pub(crate) struct Session {
    /// How many times each sequence number is stored.
    seqs: BTreeMap<u64, u64>,
    /// Manifest lines whose file is gone.
    files_gone: u64,
}

impl Session {
    /// Records stored (each sequence number once).
    pub(crate) fn records(&self) -> u64 {
        self.seqs.len() as u64
    }

    /// The sequence numbers from 0 to the last stored that are not, as inclusive ranges.
    pub(crate) fn missing(&self) -> Vec<(u64, u64)> {
        let mut ranges = Vec::new();
        let mut next = 0;
        for &seq in self.seqs.keys() {
            if seq > next {
                ranges.push((next, seq - 1));
            }
            next = seq + 1;
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

/// Reads `out/manifest.jsonl` and checks each file it names: the sessions by (source, session).
pub(crate) fn read(out: &Path) -> Result<BTreeMap<(String, String), Session>> {
    let path = out.join("manifest.jsonl");
    let file = std::fs::File::open(&path).with_context(|| {
        format!(
            "{}: expected the manifest of a collector's --out",
            path.display()
        )
    })?;
    let mut sessions: BTreeMap<(String, String), Session> = BTreeMap::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("reading {}", path.display()))?;
        let entry: serde_json::Value = serde_json::from_str(&line)
            .with_context(|| format!("{} line {}: not JSON", path.display(), n + 1))?;
        let field = |name: &str| {
            entry[name].as_str().map(str::to_owned).with_context(|| {
                format!(
                    "{} line {}: expected a string `{name}`",
                    path.display(),
                    n + 1
                )
            })
        };
        let seq = entry["seq"].as_u64().with_context(|| {
            format!("{} line {}: expected a number `seq`", path.display(), n + 1)
        })?;
        let session = sessions
            .entry((field("source")?, field("session")?))
            .or_default();
        if out.join(field("path")?).is_file() {
            *session.seqs.entry(seq).or_default() += 1;
        } else {
            session.files_gone += 1;
        }
    }
    Ok(sessions)
}

/// The report: a line per session, then what is missing; and the number of records missing.
pub(crate) fn report(sessions: &BTreeMap<(String, String), Session>) -> (String, u64) {
    let mut text = format!(
        "{:<24} {:<18} {:>9} {:>9} {:>11} {:>10}\n",
        "source", "session", "records", "missing", "duplicated", "files gone"
    );
    let mut missing_total = 0;
    for ((source, session), s) in sessions {
        let missing = s.missing();
        let count: u64 = missing.iter().map(|(a, b)| b - a + 1).sum();
        missing_total += count;
        let _ = writeln!(
            text,
            "{source:<24} {session:<18} {:>9} {count:>9} {:>11} {:>10}",
            s.records(),
            s.duplicated().len(),
            s.files_gone
        );
        if !missing.is_empty() {
            let _ = writeln!(text, "  missing seqs: {}", ranges(&missing));
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
    }
}

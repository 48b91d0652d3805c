//! The disk sink's file names: one file per stored record and one manifest line for each, when
//! sessions of one source store the same name and seq at once, and when a record is resent.

use std::fs::File;
use std::time::Duration;

use ndarray::Array1;
use ndarray_npy::ReadNpyExt;
use ndbridge::collector::{DiskSink, Received, Sink};
use ndbridge::ArrayBuffer;

use crate::common::{manifest, received, walk, watchdog};

/// A decoded record of source `twin`, name `x`: ten elements equal to `value`.
fn twin_record(session: &str, seq: u64, value: f64) -> Received {
    let a = ArrayBuffer::from_owned(Array1::from_elem(10, value));
    received("x", "twin", session, seq, a)
}

/// Every manifest line names its own file, every file has a line, and each file holds the
/// value that `expected` reads from its line.
fn check_one_file_per_line(
    out: &std::path::Path,
    total: usize,
    expected: impl Fn(&serde_json::Value) -> f64,
) {
    let lines = manifest(out);
    let paths: std::collections::HashSet<&str> =
        lines.iter().map(|l| l["path"].as_str().unwrap()).collect();
    let files = walk(out).into_iter().filter(|p| p.is_file()).count() - 1;
    assert_eq!((lines.len(), paths.len(), files), (total, total, total));
    for line in &lines {
        let file = File::open(out.join(line["path"].as_str().unwrap())).unwrap();
        let a = Array1::<f64>::read_npy(file).unwrap();
        let value = expected(line);
        assert!(a.iter().all(|&x| x == value), "{line}");
    }
}

/// Sessions of one source (a restarted publisher, or two configured with the same source)
/// storing the same record name and seq at the same moment each keep their own file.
#[test]
fn sessions_storing_the_same_seq_at_once_each_keep_their_file() {
    let _watchdog = watchdog("same seq at once", Duration::from_secs(60));
    const SESSIONS: usize = 4;
    const ROUNDS: u64 = 200;
    let out = tempfile::tempdir().unwrap();
    let sink = DiskSink::new(out.path()).unwrap();
    let start = std::sync::Barrier::new(SESSIONS);
    std::thread::scope(|s| {
        for session in 0..SESSIONS {
            let (sink, start) = (&sink, &start);
            s.spawn(move || {
                for seq in 0..ROUNDS {
                    let message = twin_record(&format!("session-{session}"), seq, session as f64);
                    start.wait(); // every session writes this seq at the same moment
                    sink.write(&message).unwrap();
                }
            });
        }
    });
    check_one_file_per_line(out.path(), SESSIONS * ROUNDS as usize, |line| {
        line["session"].as_str().unwrap()[8..].parse().unwrap()
    });
}

/// A record stored again under the same session and seq (a resend) keeps every copy: no file
/// is replaced, and the manifest has a line for each.
#[test]
fn a_resent_record_is_stored_beside_the_first_not_over_it() {
    let out = tempfile::tempdir().unwrap();
    let sink = DiskSink::new(out.path()).unwrap();
    for copy in 0..4 {
        sink.write(&twin_record("s", 7, f64::from(copy))).unwrap();
    }
    let lines = manifest(out.path());
    let paths: Vec<&str> = lines.iter().map(|l| l["path"].as_str().unwrap()).collect();
    assert_eq!(
        paths,
        [
            "twin/x/7.npy",
            "twin/x/7.s.npy",
            "twin/x/7.s.1.npy",
            "twin/x/7.s.2.npy"
        ]
    );
    // Copy k was written with the value k.
    check_one_file_per_line(out.path(), 4, |line| {
        paths.iter().position(|p| *p == line["path"]).unwrap() as f64
    });
}

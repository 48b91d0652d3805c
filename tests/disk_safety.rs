//! The disk sink never writes outside `--out`, whatever a prepared output directory holds: a
//! collector started in-process on 127.0.0.1 (ephemeral port), with symbolic links planted at
//! `out/<source>`, at `out/<source>/<name>` and at `out/manifest.jsonl`, stores nothing through
//! them, counts the records it cannot store as sink errors and stores every other record; and
//! temporary files left by a killed collector are removed when the next one starts.

use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::Duration;

mod common;
use common::wait_until;
use common::watchdog;

use ndarray::Array1;
use ndarray_npy::ReadNpyExt;
use ndbridge::collector::sink::disk::path_component;
use ndbridge::collector::{Collector, DiskSink, SinkError, Summary};
use ndbridge::Publisher;

/// Every entry of `dir`, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Sends `count` records named `name` from each of `sources` (sequence numbers 0, 1, ...) to a
/// collector storing into `out`, waits until each is stored or counted as a sink error, and
/// returns the collector's summary.
fn collect(out: &Path, sources: &[&str], name: &str, count: u64) -> Summary {
    let collector = Collector::builder()
        .bind("tcp://127.0.0.1:*")
        .workers(2)
        .sink(DiskSink::new(out).unwrap())
        .start()
        .unwrap();
    for source in sources {
        let publisher = Publisher::builder()
            .connect(collector.endpoint())
            .source(*source)
            .build()
            .unwrap();
        for seq in 0..count {
            publisher
                .send_owned(name, Array1::from_elem(8, seq as f64))
                .unwrap();
        }
        publisher.close(Duration::from_secs(10)).unwrap();
    }
    let sent = sources.len() as u64 * count;
    wait_until("every record handled", Duration::from_secs(20), || {
        let s = collector.stats();
        s.stored + s.sink_errors.values().sum::<u64>() == sent
    });
    collector.stop()
}

fn manifest_paths(out: &Path) -> Vec<String> {
    std::fs::read_to_string(out.join("manifest.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let line: serde_json::Value = serde_json::from_str(l).unwrap();
            line["path"].as_str().unwrap().to_owned()
        })
        .collect()
}

#[test]
fn a_link_planted_at_a_source_directory_is_not_followed() {
    let _watchdog = watchdog("link at a source", Duration::from_secs(60));
    let out = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    // The escaped directory name of a hostile source.
    let evil = "evil/../..";
    symlink(elsewhere.path(), out.path().join(path_component(evil).0)).unwrap();

    let summary = collect(out.path(), &[evil, "good"], "field", 6);
    assert_eq!(summary.stats.stored, 6);
    assert_eq!(summary.stats.sink_errors["disk"], 6);
    assert!(entries(elsewhere.path()).is_empty());
    for seq in 0..6 {
        let file = std::fs::File::open(out.path().join(format!("good/field/{seq}.npy"))).unwrap();
        assert_eq!(
            Array1::<f64>::read_npy(file).unwrap(),
            Array1::from_elem(8, seq as f64)
        );
    }
    assert_eq!(manifest_paths(out.path()).len(), 6);
}

#[test]
fn a_link_planted_at_a_name_directory_is_not_followed() {
    let _watchdog = watchdog("link at a name", Duration::from_secs(60));
    let out = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    std::fs::create_dir(out.path().join("sim")).unwrap();
    symlink(elsewhere.path(), out.path().join("sim/field")).unwrap();

    let summary = collect(out.path(), &["sim", "other"], "field", 4);
    assert_eq!(summary.stats.stored, 4);
    assert_eq!(summary.stats.sink_errors["disk"], 4);
    assert!(entries(elsewhere.path()).is_empty());
    assert_eq!(entries(&out.path().join("other/field")).len(), 4);
    assert!(manifest_paths(out.path())
        .iter()
        .all(|p| p.starts_with("other/field/")));
}

#[test]
fn a_linked_manifest_is_refused_at_start_and_never_written() {
    let out = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let target = elsewhere.path().join("theirs.jsonl");
    std::fs::write(&target, b"theirs\n").unwrap();
    symlink(&target, out.path().join("manifest.jsonl")).unwrap();

    match DiskSink::new(out.path()) {
        Err(error @ SinkError::UnsafePath { .. }) => {
            let message = error.to_string();
            assert!(
                message.contains("manifest.jsonl: expected a regular file, found a symbolic link"),
                "{message}"
            );
        }
        Err(other) => panic!("expected UnsafePath, got {other:?}"),
        Ok(_) => panic!("a sink started on a linked manifest"),
    }
    assert_eq!(std::fs::read(&target).unwrap(), b"theirs\n");
    assert_eq!(entries(elsewhere.path()), ["theirs.jsonl"]);
}

#[test]
fn a_stale_temporary_file_is_removed_at_start_and_a_record_file_is_not() {
    let _watchdog = watchdog("stale temporary files", Duration::from_secs(60));
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("sim/field");
    std::fs::create_dir_all(&dir).unwrap();
    // A collector killed while writing seq 0: its process is gone, its temporary file is left.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let stale = format!(".0.npy.tmp-{dead}-0");
    std::fs::write(dir.join(&stale), b"partial").unwrap();
    std::fs::write(dir.join("1.npy"), b"an earlier record").unwrap();

    let summary = collect(out.path(), &["sim"], "field", 2);
    assert_eq!(summary.sinks["disk"]["stale_temp_files_removed"], 1);
    assert_eq!(summary.stats.stored, 2);
    assert!(summary.stats.sink_errors.is_empty());
    // The earlier record stays; seq 1 arrives again and lands beside it.
    assert_eq!(
        std::fs::read(dir.join("1.npy")).unwrap(),
        b"an earlier record"
    );
    let files = entries(&dir);
    assert_eq!(files.len(), 3, "{files:?}");
    assert!(files.contains(&"0.npy".to_owned()) && !files.contains(&stale));
}

//! The disk sink never writes outside `--out`, whatever a prepared output directory holds and
//! whatever names come from the network: a collector started in-process on 127.0.0.1
//! (ephemeral port), with symbolic links planted at `out/<source>`, at `out/<source>/<name>` and
//! at `out/manifest.jsonl`, stores nothing through them, counts the records it cannot store as
//! sink errors and stores every other record; records whose names climb out, are absolute,
//! hidden, too long or hold NUL bytes are escaped or refused, and nothing leaves the output
//! directory; temporary files left by a killed collector are removed when the next one starts.

use std::fs::File;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::Duration;

use ndarray::{Array1, ArrayD};
use ndarray_npy::{NpzReader, ReadNpyExt};
use ndbridge::collector::{Collector, DiskSink, SinkError, Summary};
use ndbridge::Publisher;
use serde_json::Value;

use crate::common::{manifest, wait_until, walk, watchdog};

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
        .filter_map(|l| {
            let line: serde_json::Value = serde_json::from_str(l).unwrap();
            // Lines that end sessions name no file.
            Some(line["path"].as_str()?.to_owned())
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
    symlink(
        elsewhere.path(),
        out.path().join(DiskSink::path_component(evil).0),
    )
    .unwrap();

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

/// A message built by hand per docs/wire-format.md: `|u1` arrays, raw, with the given names.
fn hand_built(
    name: &str,
    source: &str,
    session: &str,
    seq: u64,
    arrays: &[(&str, Vec<u8>)],
) -> Vec<Vec<u8>> {
    let metas: Vec<Value> = arrays
        .iter()
        .map(|(array, data)| {
            serde_json::json!({"name": array, "dtype": "|u1", "shape": [data.len()],
                               "order": "C", "codec": "raw", "nbytes": data.len()})
        })
        .collect();
    let header = serde_json::json!({"v": 1, "name": name, "source": source, "session": session,
                                    "seq": seq, "time": 0.0, "arrays": metas});
    let mut frames = vec![serde_json::to_vec(&header).unwrap()];
    frames.extend(arrays.iter().map(|(_, data)| data.clone()));
    frames
}

#[test]
fn hostile_names_stay_inside_the_output_directory() {
    let _watchdog = watchdog("hostile names", Duration::from_secs(60));
    // `out` sits three levels down, so names climbing one or two levels would land in `root`.
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("a/b/out");
    let collector = Collector::builder()
        .bind("tcp://127.0.0.1:*")
        .workers(2)
        .sink(DiskSink::new(&out).unwrap())
        .start()
        .unwrap();
    let ctx = zmq::Context::new();
    let push = ctx.socket(zmq::PUSH).unwrap();
    push.set_sndtimeo(5000).unwrap();
    push.set_linger(5000).unwrap();
    push.connect(collector.endpoint()).unwrap();

    let long = "x".repeat(300);
    let wide = "é".repeat(128); // 256 bytes: the longest name allowed
    let huge_source = "s/".repeat(500);
    // (record name, source, session, array names, accepted by the decoder)
    let cases: Vec<(&str, &str, &str, Vec<&str>, bool)> = vec![
        ("../../etc/x", "evil", "s1", vec!["data"], true),
        ("/abs/path", "/abs/source", "s1", vec!["/abs/array"], true),
        ("a\u{0}b", "evil", "s1", vec!["data"], false),
        (&long, "evil", "s1", vec!["data"], false),
        ("..", "..", "s1", vec![".."], true),
        (".", ".", "s1", vec!["."], true),
        (".hidden", ".hidden", "s1", vec![".hidden"], true),
        ("back\\..\\..\\slash", "C:\\Windows", "s1", vec!["d"], true),
        (
            "température/../../x",
            "ünï/cödé",
            "s1",
            vec!["température"],
            true,
        ),
        (&wide, "evil", "s1", vec!["data"], true),
        ("n", "src\u{0}nul", "s1", vec!["data"], true),
        ("n", &huge_source, "s1", vec!["data"], true),
        ("n", "", "s1", vec!["data"], true),
        ("n", "manifest.jsonl", "s1", vec!["data"], true),
        (
            "npz",
            "evil",
            "s1",
            vec!["../../m", "/abs/m", ".hidden", "ok", "a\\b"],
            true,
        ),
        ("npz", "evil", "s1", vec!["ok", "a\u{0}b"], false),
        ("npz", "evil", "s1", vec!["ok", &long], false),
        // The same source, name and seq from another session: the second file's name carries
        // the session, escaped too.
        ("twin", "evil", "s1", vec!["data"], true),
        ("twin", "evil", "../../../../session", vec!["data"], true),
    ];
    let mut valid = 0u64;
    for (k, (name, source, session, arrays, _)) in cases.iter().enumerate() {
        let seq = if *name == "twin" { 7 } else { k as u64 };
        let arrays: Vec<(&str, Vec<u8>)> = arrays
            .iter()
            .enumerate()
            .map(|(i, a)| (*a, vec![k as u8, i as u8, 0xAB]))
            .collect();
        push.send_multipart(hand_built(name, source, session, seq, &arrays), 0)
            .unwrap();
        // A valid message between every two hostile ones.
        push.send_multipart(
            hand_built("ok", "good", "g", valid, &[("ok", vec![valid as u8; 5])]),
            0,
        )
        .unwrap();
        valid += 1;
    }
    let invalid = cases.iter().filter(|c| !c.4).count() as u64;
    let sent = cases.len() as u64 + valid;
    wait_until("every message handled", Duration::from_secs(20), || {
        let s = collector.stats();
        s.stored + s.rejected + s.sink_errors.values().sum::<u64>() == sent
    });
    let summary = collector.stop();
    let s = &summary.stats;
    assert_eq!(s.rejected, invalid, "{:?}", s.errors);
    assert_eq!(s.errors["invalid_field"], invalid);
    assert!(summary.sinks["disk"]["escaped_names"].as_u64().unwrap() > 0);

    // Nothing outside `out`: `root` holds only the way down to it.
    let names = |dir: &std::path::Path| -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };
    assert_eq!(names(root.path()), ["a"]);
    assert_eq!(names(&root.path().join("a")), ["b"]);
    assert_eq!(names(&root.path().join("a/b")), ["out"]);
    let out = out.canonicalize().unwrap();
    let created = walk(&out);
    for path in &created {
        let canonical = path.canonicalize().unwrap();
        assert!(canonical.starts_with(&out), "{} escaped", path.display());
        let relative = path.strip_prefix(&out).unwrap();
        for component in relative.components() {
            let c = component.as_os_str().to_string_lossy();
            assert!(
                matches!(component, std::path::Component::Normal(_)) && !c.starts_with('.'),
                "component {c:?} of {}",
                path.display()
            );
            assert!(c.len() <= 120, "component of {} bytes", c.len());
        }
    }

    // Every stored message is one manifest line and one file, and every valid message is stored.
    let files: Vec<_> = created
        .iter()
        .filter(|p| p.is_file() && p.file_name().unwrap() != "manifest.jsonl")
        .collect();
    let lines = manifest(&out);
    assert_eq!(lines.len() as u64, s.stored);
    assert_eq!(files.len() as u64, s.stored);
    for k in 0..valid {
        assert!(out.join(format!("good/ok/{k}.npy")).is_file());
    }
    // Every valid record is stored, even the one whose source is the manifest's own name.
    assert_eq!(s.stored + s.rejected, sent);
    assert!(s.sink_errors.is_empty(), "{:?}", s.sink_errors);
    assert!(out.join("manifest%2Ejsonl").is_dir());
    for line in &lines {
        let path = std::path::Path::new(line["path"].as_str().unwrap());
        assert!(path
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_))));
        let file = out.join(path);
        assert!(file.canonicalize().unwrap().starts_with(&out));
        let source = line["source"].as_str().unwrap();
        let name = line["name"].as_str().unwrap();
        let source_dir = match DiskSink::path_component(source).0 {
            manifest if manifest == "manifest.jsonl" => "manifest%2Ejsonl".to_owned(),
            other => other,
        };
        let expected_dir = out.join(source_dir).join(DiskSink::path_component(name).0);
        assert_eq!(file.parent().unwrap(), expected_dir);
        // Contents: the bytes sent, under escaped member names in archives.
        let k = if source == "good" {
            continue;
        } else {
            cases
                .iter()
                .position(|c| c.0 == name && c.1 == source && c.2 == line["session"])
                .unwrap()
        };
        let arrays = &cases[k].3;
        if arrays.len() == 1 {
            let a = ArrayD::<u8>::read_npy(File::open(&file).unwrap()).unwrap();
            assert_eq!(a.as_slice().unwrap(), [k as u8, 0, 0xAB]);
        } else {
            let mut npz = NpzReader::new(File::open(&file).unwrap()).unwrap();
            let members = npz.names().unwrap();
            for member in &members {
                assert!(
                    !member.contains('/') && !member.contains('\\') && !member.starts_with('.')
                );
            }
            for (i, array) in arrays.iter().enumerate() {
                let member = DiskSink::path_component(array).0;
                assert!(members.contains(&member), "{member} in {members:?}");
                let a: ArrayD<u8> = npz.by_name(&format!("{member}.npy")).unwrap();
                assert_eq!(a.as_slice().unwrap(), [k as u8, i as u8, 0xAB]);
            }
        }
    }
    // Both twins are kept: the second under a name that carries its (escaped) session.
    let twins: Vec<_> = lines.iter().filter(|l| l["name"] == "twin").collect();
    assert_eq!(twins.len(), 2);
    assert_ne!(twins[0]["path"], twins[1]["path"]);
}

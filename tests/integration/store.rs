//! The run store: what the store sink writes reads back bit-exact (every wire type, both
//! orders, every codec), compressed arrays are kept as they came, streams that change start
//! new segments, a store continues after a restart and after a crash of the collector, readers
//! see whole records only, and names from the network stay inside the store.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ndbridge::collector::{Received, Sink, StoreSink};
use ndbridge::store::Store;
use ndbridge::wire::{decode, encode, ArrayBuffer, Compression, DType, Envelope, Limits, Order};
use rand::{Rng, SeedableRng};

use crate::common::{walk, watchdog};

/// A message of `arrays` as the collector hands it to its sinks.
fn message(
    name: &str,
    source: &str,
    seq: u64,
    arrays: Vec<(String, ArrayBuffer)>,
    compression: Compression,
) -> Received {
    let envelope = Envelope {
        name: name.into(),
        source: source.into(),
        session: "s1".into(),
        seq,
        time: 1_700_000_000.0 + seq as f64,
        attrs: serde_json::json!({"seq": seq}).as_object().cloned(),
    };
    let frames = encode(envelope, arrays, compression).unwrap().frames;
    Received {
        record: decode(&frames, &Limits::default()).unwrap(),
        frames,
        received_at: std::time::SystemTime::now(),
        claimed_source: None,
    }
}

/// Random bytes for `count` elements of `dtype` (0 or 1 for booleans), from `rng`.
fn random_data(dtype: DType, count: usize, rng: &mut rand::rngs::StdRng) -> Bytes {
    let len = count * dtype.itemsize();
    let bytes: Vec<u8> = if dtype.to_string() == "|b1" {
        (0..len).map(|_| rng.gen_range(0..2)).collect()
    } else {
        (0..len).map(|_| rng.gen()).collect()
    };
    Bytes::from(bytes)
}

/// Every record of every group of the store at `root`, decoded: (group source, group record,
/// the record).
fn read_all(root: &Path) -> Vec<(String, String, ndbridge::wire::Record)> {
    let store = Store::open(root).unwrap();
    let mut out = Vec::new();
    for group in store.groups() {
        let mut reader = store.reader(group).unwrap();
        for i in 0..reader.len() {
            let (_, frames) = reader.message(i).unwrap();
            let record = decode(&frames, &Limits::default()).unwrap();
            out.push((group.source.clone(), group.record.clone(), record));
        }
    }
    out
}

const TYPES: [&str; 19] = [
    "|b1", "|i1", "|u1", "<i2", ">i2", "<u2", "<i4", ">i4", "<u4", "<i8", ">u8", "<f2", ">f2",
    "<f4", ">f4", "<f8", ">f8", "<c8", ">c16",
];

#[test]
fn every_wire_type_order_and_codec_reads_back_bit_exact() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("run.zarr");
    let sink = StoreSink::new(&root).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let codecs = [
        ("raw", Compression::Raw),
        ("zstd", Compression::zstd(1).with_shuffle(false)),
        ("shuffle", Compression::zstd(3).with_shuffle(true)),
    ];
    let mut sent = std::collections::BTreeMap::new();
    for ty in TYPES {
        let dtype: DType = ty.parse().unwrap();
        for (order, shape) in [
            (Order::C, vec![3, 5]),
            (Order::F, vec![3, 5]),
            (Order::C, vec![]),
        ] {
            for (codec, compression) in codecs {
                let name = format!("{ty}-{order:?}-{}-{codec}", shape.len());
                for seq in 0..3 {
                    let count = shape.iter().product();
                    let data = random_data(dtype, count, &mut rng);
                    let array =
                        ArrayBuffer::new(dtype, shape.clone(), order, data.clone()).unwrap();
                    let empty =
                        ArrayBuffer::new(dtype, vec![0, 4], Order::C, Bytes::new()).unwrap();
                    let arrays = vec![("a".to_owned(), array), ("e".to_owned(), empty)];
                    sink.write(&message(&name, "w", seq, arrays, compression))
                        .unwrap();
                    sent.insert((name.clone(), seq), (data, shape.clone(), order));
                }
            }
        }
    }
    sink.finish().unwrap();
    let records = read_all(&root);
    assert_eq!(records.len(), sent.len());
    for (_, name, record) in records {
        let (data, shape, order) = &sent[&(name.clone(), record.header.seq)];
        let a = record.array("a").unwrap();
        assert_eq!(a.bytes(), data, "{name} seq {}", record.header.seq);
        assert_eq!((a.shape(), a.meta().order), (&shape[..], *order), "{name}");
        assert_eq!(a.dtype().to_string(), name.split('-').next().unwrap());
        // An empty array has no chunk to store: the record reads back without it.
        assert!(record.array("e").is_none());
        assert_eq!(
            record.header.attrs.as_ref().unwrap()["seq"],
            record.header.seq
        );
        assert_eq!(
            record.header.time,
            1_700_000_000.0 + record.header.seq as f64
        );
    }
}

#[test]
fn arrays_that_arrived_compressed_are_stored_as_they_came() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("run.zarr");
    let sink = StoreSink::new(&root).unwrap();
    let mut frames = Vec::new();
    for seq in 0..8u64 {
        let field = ndarray::Array1::<f64>::from_shape_fn(1 << 17, |i| {
            seq as f64 + (i as f64 * 1e-3).sin()
        });
        let arrays = vec![("u".to_owned(), ArrayBuffer::from_owned(field))];
        let m = message(
            "field",
            "w",
            seq,
            arrays,
            Compression::zstd(1).with_shuffle(true),
        );
        frames.push(m.frames[1].clone());
        sink.write(&m).unwrap();
    }
    sink.finish().unwrap();
    let report = sink.report();
    assert_eq!(
        (
            report["arrays_as_they_came"].as_u64(),
            report["arrays_encoded"].as_u64()
        ),
        (Some(8), Some(0))
    );
    let store = Store::open(&root).unwrap();
    let array = &store.groups()[0].arrays[0];
    let wire: u64 = frames.iter().map(|f| f.len() as u64).sum();
    assert!(
        wire < array.raw_bytes * 9 / 10,
        "compressible: {wire} of {}",
        array.raw_bytes
    );
    assert!(
        array.stored_bytes >= wire && array.stored_bytes as f64 <= 1.01 * wire as f64,
        "stored {} for {wire} on the wire",
        array.stored_bytes
    );
    // Byte for byte the frames that came.
    let mut reader = store.reader(&store.groups()[0]).unwrap();
    for (i, frame) in frames.iter().enumerate() {
        assert_eq!(&reader.message(i as u64).unwrap().1[1], frame);
    }
}

#[test]
fn a_stream_that_changes_codec_type_or_shape_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("run.zarr");
    let sink = StoreSink::new(&root).unwrap();
    let f8 = |n: usize, v: f64| ArrayBuffer::from_owned(ndarray::Array1::<f64>::from_elem(n, v));
    // (array, codec): the codec changes within the first segment, then the shape, the type,
    // and back to the first.
    let plan: Vec<(ArrayBuffer, Compression)> = vec![
        (f8(4, 0.0), Compression::zstd(1).with_shuffle(true)),
        (f8(4, 1.0), Compression::Raw),
        (f8(4, 2.0), Compression::zstd(1).with_shuffle(false)),
        (f8(5, 3.0), Compression::Raw),
        (
            ArrayBuffer::from_owned(ndarray::Array1::<i32>::from_elem(4, 4)),
            Compression::Raw,
        ),
        (f8(4, 5.0), Compression::zstd(1).with_shuffle(true)),
    ];
    for (seq, (array, compression)) in plan.into_iter().enumerate() {
        sink.write(&message(
            "r",
            "w",
            seq as u64,
            vec![("x".into(), array)],
            compression,
        ))
        .unwrap();
    }
    sink.finish().unwrap();
    let report = sink.report();
    // The raw one encoded into the compressed segment; the unshuffled one decoded and encoded.
    assert_eq!(report["arrays_encoded"].as_u64(), Some(2));
    assert_eq!(report["segments"].as_u64(), Some(3));
    let store = Store::open(&root).unwrap();
    let group = &store.groups()[0];
    assert_eq!(group.records, 6);
    let present: Vec<(&str, u64)> = group
        .arrays
        .iter()
        .map(|a| (a.node.as_str(), a.present))
        .collect();
    assert_eq!(present, [("x", 4), ("x~2", 1), ("x~3", 1)]);
    for (_, _, record) in read_all(&root) {
        assert_eq!(record.arrays.len(), 1);
        let seq = record.header.seq;
        let a = &record.arrays[0];
        if seq == 4 {
            assert!(a.to_owned_array::<i32>().unwrap().iter().all(|&v| v == 4));
        } else {
            let v = a.to_owned_array::<f64>().unwrap();
            assert!(v.len() == if seq == 3 { 5 } else { 4 } && v.iter().all(|&x| x == seq as f64));
        }
    }
}

/// A record of `len` f32 values, all `seq`.
fn numbered(seq: u64, len: usize) -> Vec<(String, ArrayBuffer)> {
    let a = ndarray::Array1::<f32>::from_elem(len, seq as f32);
    vec![("v".to_owned(), ArrayBuffer::from_owned(a))]
}

/// Checks every record of the store at `root` holds its seq, each seq once; with `prefix`,
/// that they are the seqs 0 to `expected - 1`, else that there are `expected`.
fn check_numbered(root: &Path, expected: u64, prefix: bool) {
    let records = read_all(root);
    let mut seqs: Vec<u64> = records.iter().map(|(_, _, r)| r.header.seq).collect();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len() as u64, expected, "records, each seq once");
    if prefix {
        assert!(
            seqs.iter().copied().eq(0..expected),
            "seqs from 0 to {expected}"
        );
    }
    for (_, _, record) in records {
        let v = record.arrays[0].to_owned_array::<f32>().unwrap();
        assert!(
            v.iter().all(|&x| x == record.header.seq as f32),
            "seq {}",
            record.header.seq
        );
    }
}

#[test]
fn a_store_continues_after_a_restart_and_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("run.zarr");
    let sink = StoreSink::new(&root).unwrap();
    for seq in 0..10 {
        sink.write(&message(
            "r",
            "w",
            seq,
            numbered(seq, 2000),
            Compression::Raw,
        ))
        .unwrap();
    }
    sink.finish().unwrap();
    drop(sink);

    // Restarted: what it held is reported, and the next records follow (in the same shard).
    let sink = StoreSink::new(&root).unwrap();
    let mut before = Vec::new();
    sink.stored_before(&mut |source, session, seq| {
        before.push((source.to_owned(), session.to_owned(), seq))
    });
    assert_eq!(
        before,
        (0..10)
            .map(|s| ("w".to_owned(), "s1".to_owned(), s))
            .collect::<Vec<_>>()
    );
    for seq in 10..15 {
        sink.write(&message(
            "r",
            "w",
            seq,
            numbered(seq, 2000),
            Compression::Raw,
        ))
        .unwrap();
    }
    sink.flush().unwrap();
    // Taken, never committed: a crash of the collector now loses these and nothing else.
    for seq in 100..103 {
        sink.write(&message(
            "r",
            "w",
            seq,
            numbered(seq, 2000),
            Compression::zstd(1),
        ))
        .unwrap();
    }
    check_numbered(&root, 15, true);
    drop(sink);

    let sink = StoreSink::new(&root).unwrap();
    for seq in 15..20 {
        sink.write(&message(
            "r",
            "w",
            seq,
            numbered(seq, 2000),
            Compression::Raw,
        ))
        .unwrap();
    }
    sink.finish().unwrap();
    check_numbered(&root, 20, true);
}

#[test]
fn groups_whose_creation_a_crash_cut_short_do_not_stop_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("run.zarr");
    let sink = StoreSink::new(&root).unwrap();
    for seq in 0..3 {
        sink.write(&message("r", "w", seq, numbered(seq, 10), Compression::Raw))
            .unwrap();
    }
    sink.finish().unwrap();
    drop(sink);
    // What a collector killed while creating groups leaves: a record group and a source group
    // without their `zarr.json` (written last), and a source group whose first record group
    // was never begun.
    let half = root.join("w").join("state");
    std::fs::create_dir_all(half.join("seq")).unwrap();
    std::fs::write(half.join("seq").join("zarr.json"), "{}").unwrap();
    std::fs::create_dir_all(root.join("v")).unwrap();
    std::fs::create_dir(root.join("x")).unwrap();
    let source_x = r#"{"zarr_format": 3, "node_type": "group",
        "attributes": {"ndbridge": {"source": "x"}}}"#;
    std::fs::write(root.join("x").join("zarr.json"), source_x).unwrap();
    // And a directory that is not a collector's (it holds a file of its own): it is left, and
    // its name is not given to a group.
    let foreign = root.join("w").join("notes");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("todo.txt"), "mine").unwrap();

    // Readers skip them; the next collector removes them and creates those groups anew.
    assert_eq!(read_all(&root).len(), 3);
    let sink = StoreSink::new(&root).unwrap();
    assert!(!half.exists() && !root.join("v").exists());
    assert_eq!(std::fs::read(foreign.join("todo.txt")).unwrap(), b"mine");
    for seq in 3..5 {
        sink.write(&message("r", "w", seq, numbered(seq, 10), Compression::Raw))
            .unwrap();
        for (source, record) in [("w", "state"), ("x", "r"), ("v", "r"), ("w", "notes")] {
            sink.write(&message(
                record,
                source,
                seq,
                numbered(seq, 10),
                Compression::Raw,
            ))
            .unwrap();
        }
    }
    sink.finish().unwrap();
    let mut groups: Vec<(String, String, u64)> = Store::open(&root)
        .unwrap()
        .groups()
        .iter()
        .map(|g| (g.path.clone(), g.source.clone(), g.records))
        .collect();
    groups.sort();
    let expected = [
        ("v/r", "v", 2),
        ("w/notes~2", "w", 2),
        ("w/r", "w", 5),
        ("w/state", "w", 2),
        ("x/r", "x", 2),
    ]
    .map(|(path, source, n)| (path.to_owned(), source.to_owned(), n));
    assert_eq!(groups, expected, "the source group x is continued, not x~2");
    assert_eq!(std::fs::read(foreign.join("todo.txt")).unwrap(), b"mine");
}

#[test]
fn what_a_crash_left_past_the_last_commit_never_shows() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("run.zarr");
    // 8 MiB arrays: 4 records a shard.
    let big = |seq: u64| {
        let a = ndarray::Array1::<f64>::from_elem(1 << 20, seq as f64);
        ("big".to_owned(), ArrayBuffer::from_owned(a))
    };
    let sink = StoreSink::new(&root).unwrap();
    for seq in 0..2 {
        let mut arrays = numbered(seq, 10);
        arrays.push(big(seq));
        sink.write(&message("r", "w", seq, arrays, Compression::Raw))
            .unwrap();
    }
    sink.flush().unwrap();
    // Past the commit: `big` in this shard and the next, and a new array; written out (the
    // shard switch writes the first), never committed.
    for seq in 2..8 {
        let mut arrays = numbered(seq, 10);
        arrays.push(big(seq));
        if seq == 7 {
            let a = ndarray::Array1::<i8>::from_elem(3, 7);
            arrays.push(("new".to_owned(), ArrayBuffer::from_owned(a)));
        }
        sink.write(&message("r", "w", seq, arrays, Compression::Raw))
            .unwrap();
    }
    drop(sink);

    // The next collector's records have no `big`: the group grows over what was left.
    let sink = StoreSink::new(&root).unwrap();
    for seq in 2..10 {
        sink.write(&message("r", "w", seq, numbered(seq, 10), Compression::Raw))
            .unwrap();
    }
    sink.finish().unwrap();
    let records = read_all(&root);
    assert_eq!(records.len(), 10);
    for (_, _, record) in records {
        let names: Vec<&str> = record.arrays.iter().map(|a| a.name()).collect();
        let expected: &[&str] = if record.header.seq < 2 {
            &["big", "v"]
        } else {
            &["v"]
        };
        assert_eq!(names, expected, "seq {}", record.header.seq);
    }
    let store = Store::open(&root).unwrap();
    let nodes: Vec<&str> = store.groups()[0]
        .arrays
        .iter()
        .map(|a| a.node.as_str())
        .collect();
    assert_eq!(nodes, ["big", "v"]);
}

#[test]
fn a_reader_sees_whole_records_only_while_the_store_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("run.zarr");
    let sink = Arc::new(StoreSink::new(&root).unwrap());
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let (sink, done) = (sink.clone(), done.clone());
        std::thread::spawn(move || {
            for seq in 0..3000u64 {
                let compression = if seq % 3 == 0 {
                    Compression::zstd(1)
                } else {
                    Compression::Raw
                };
                sink.write(&message("r", "w", seq, numbered(seq, 300), compression))
                    .unwrap();
                if seq % 50 == 0 {
                    sink.flush().unwrap();
                }
            }
            sink.finish().unwrap();
            done.store(true, Ordering::SeqCst);
        })
    };
    let mut seen = Vec::new();
    while !done.load(Ordering::SeqCst) {
        let Ok(store) = Store::open(&root) else {
            continue;
        };
        let Some(group) = store.groups().first() else {
            continue;
        };
        let mut reader = store.reader(group).unwrap();
        for i in 0..reader.len() {
            let (header, frames) = reader.message(i).unwrap();
            let v = decode(&frames, &Limits::default()).unwrap().arrays[0]
                .to_owned_array::<f32>()
                .unwrap();
            assert_eq!(header.seq, i);
            assert!(v.iter().all(|&x| x == i as f32), "record {i} not whole");
        }
        seen.push(reader.len());
    }
    writer.join().unwrap();
    eprintln!("lengths seen while written: {seen:?}");
    assert!(
        seen.len() >= 2 && seen.windows(2).all(|w| w[0] <= w[1]),
        "{seen:?}"
    );
    check_numbered(&root, 3000, true);
}

#[test]
fn names_from_the_network_stay_inside_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("run.zarr");
    let sink = StoreSink::new(&root).unwrap();
    let long = "x".repeat(250);
    let names = [
        "../../etc",
        "/abs",
        "zarr.json",
        "seq",
        "__x",
        "a/b",
        "sessions.jsonl",
        ".",
        "..",
        long.as_str(),
        "é ü",
    ];
    for (i, name) in names.iter().enumerate() {
        let seq = i as u64;
        let array = ArrayBuffer::from_owned(ndarray::Array1::<u8>::from_elem(3, i as u8));
        sink.write(&message(
            name,
            name,
            seq,
            vec![(name.to_string(), array)],
            Compression::Raw,
        ))
        .unwrap();
    }
    sink.finish().unwrap();
    for path in walk(dir.path()) {
        assert!(
            path.starts_with(&root),
            "{} outside the store",
            path.display()
        );
    }
    let records = read_all(&root);
    assert_eq!(records.len(), names.len());
    for (source, record_name, record) in records {
        let i = names.iter().position(|n| *n == source).unwrap();
        assert_eq!(
            (record_name.as_str(), record.arrays[0].name()),
            (names[i], names[i])
        );
        assert!(record.arrays[0]
            .to_owned_array::<u8>()
            .unwrap()
            .iter()
            .all(|&v| v == i as u8));
    }
}

#[test]
fn every_record_a_stats_line_counted_is_in_the_store_after_a_kill() {
    let _watchdog = watchdog("stats line then kill", Duration::from_secs(120));
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("run.zarr");
    let log = dir.path().join("collect.log");
    let mut collector = std::process::Command::new(env!("CARGO_BIN_EXE_ndbridge"))
        .args([
            "collect",
            "--bind",
            "tcp://127.0.0.1:*",
            "--print-endpoints",
        ])
        .args(["--stats-every", "0.3", "--out"])
        .arg(&root)
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let stdout = collector.stdout.take().unwrap();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).unwrap();
    let endpoints: serde_json::Value = serde_json::from_str(&line).unwrap();
    let publisher = ndbridge::Publisher::builder()
        .connect(endpoints["input"][0].as_str().unwrap())
        .source("w")
        .build()
        .unwrap();
    let stored_in_log = || -> u64 {
        let text = std::fs::read_to_string(&log).unwrap();
        let mut counted = text.lines().rev().filter_map(|l| {
            l.split(" INFO ")
                .nth(1)?
                .split(" stored")
                .next()?
                .parse()
                .ok()
        });
        counted.next().unwrap_or(0)
    };
    let mut seq = 0u64;
    while stored_in_log() < 2000 {
        for _ in 0..50 {
            publisher
                .send_owned("r", ndarray::Array1::<f32>::from_elem(200, seq as f32))
                .unwrap();
            seq += 1;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    // Killed with records taken after the last line.
    collector.kill().unwrap();
    collector.wait().unwrap();
    let counted = stored_in_log();
    let store = Store::open(&root).unwrap();
    let held = store.groups()[0].records;
    eprintln!("sent {seq}, the last stats line counted {counted}, the store holds {held}");
    assert!(held >= counted, "{held} < {counted}");
    check_numbered(&root, held, false);
    drop(publisher);
}

/// Runs `ndbridge` with `args`; its standard output, failing the test if it fails.
fn ndbridge(args: &[&std::ffi::OsStr]) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_ndbridge"))
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "ndbridge {args:?}: {stderr}");
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn ls_lists_a_store_and_replay_sends_it_again_as_it_came() {
    let _watchdog = watchdog("ls and replay", Duration::from_secs(120));
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("first.zarr");
    let sink = StoreSink::new(&first).unwrap();
    // One session: `r` at the even seqs (compressed or not), `state` at the odd ones.
    for k in 0..40u64 {
        let compression = if k % 2 == 0 {
            Compression::zstd(1).with_shuffle(true)
        } else {
            Compression::Raw
        };
        let r = message("r", "w", 2 * k, numbered(2 * k, 3000), compression);
        sink.write(&r).unwrap();
        let s = ndarray::Array1::<u8>::from_elem(5, k as u8);
        let state = vec![("s".to_owned(), ArrayBuffer::from_owned(s))];
        sink.write(&message("state", "w", 2 * k + 1, state, Compression::Raw))
            .unwrap();
    }
    let mut end = message("end", "w", 80, vec![], Compression::Raw);
    end.record.header.end = true;
    sink.end(&end).unwrap();
    sink.finish().unwrap();
    drop(sink);

    let listing = ndbridge(&["ls".as_ref(), first.as_os_str()]);
    let rows: Vec<Vec<&str>> = listing
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert!(
        rows.iter()
            .any(|r| r[..6] == ["w", "r", "40", "v", "<f4", "[3000]"] && r[6] == "shuffle+zstd"),
        "{listing}"
    );
    assert!(
        rows.iter().any(|r| r[..4] == ["w", "state", "40", "s"]),
        "{listing}"
    );
    assert!(
        listing.contains("80 records in 2 groups") && listing.contains("1 session ended"),
        "{listing}"
    );

    // Into a collector of its own: the same records, sessions, seqs, attrs and frames.
    let second = dir.path().join("second.zarr");
    let log = dir.path().join("collect.log");
    let mut collector =
        crate::common::CollectorProcess::start(&["--out".as_ref(), second.as_os_str()], &log);
    ndbridge(&[
        "replay".as_ref(),
        first.as_os_str(),
        "--to".as_ref(),
        collector.endpoint.as_ref(),
    ]);
    let store = || Store::open(&second).ok();
    crate::common::wait_until("the replayed records", Duration::from_secs(30), || {
        store().is_some_and(|s| s.groups().iter().map(|g| g.records).sum::<u64>() == 80)
            && store().is_some_and(|s| !s.journal().unwrap().is_empty())
    });
    assert!(collector.stop().success(), "{}", collector.log());
    let (a, b) = (Store::open(&first).unwrap(), Store::open(&second).unwrap());
    assert_eq!(a.journal().unwrap(), b.journal().unwrap());
    for (ga, gb) in a.groups().iter().zip(b.groups()) {
        assert_eq!(
            (&ga.source, &ga.record, ga.records),
            (&gb.source, &gb.record, gb.records)
        );
        let (mut ra, mut rb) = (a.reader(ga).unwrap(), b.reader(gb).unwrap());
        let mut by_seq = std::collections::BTreeMap::new();
        for i in 0..rb.len() {
            let (header, frames) = rb.message(i).unwrap();
            by_seq.insert(header.seq, (header, frames));
        }
        for i in 0..ra.len() {
            let (header, frames) = ra.message(i).unwrap();
            let (h, f) = &by_seq[&header.seq];
            assert_eq!(
                (&h.session, h.time, &h.attrs),
                (&header.session, header.time, &header.attrs)
            );
            assert_eq!(
                &f[1..],
                &frames[1..],
                "{} seq {}: frames differ",
                ga.record,
                header.seq
            );
        }
    }
}

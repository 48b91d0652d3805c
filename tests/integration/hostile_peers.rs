//! Attacks on a running `ndbridge collect` process over loopback: zstd frames built to make the
//! block decoder read another message's bytes, a small frame that declares 4 GiB, and a zstd
//! bomb of RLE blocks. Every attack record is stored right or refused and counted; valid records
//! around them are all stored; the collector stays alive, within its memory, and exits 0.

use std::ffi::OsStr;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ndarray::Array1;
use ndbridge::wire::{unshuffle, ArrayBuffer};
use serde_json::Value;

use crate::common::block_frames::{build, reference};
use crate::common::{wait_until, watchdog, CollectorProcess};

/// `ndbridge collect` with two workers, storing under `out`, its final statistics written to
/// `stats` and its standard error to `stderr`, with `args` besides.
fn start_collector(out: &Path, stats: &Path, stderr: &Path, args: &[&str]) -> CollectorProcess {
    let mut all: Vec<&OsStr> = vec![
        "--workers".as_ref(),
        "2".as_ref(),
        "--format".as_ref(),
        "npy".as_ref(),
        "--out".as_ref(),
    ];
    all.extend([out.as_os_str(), "--stats-json".as_ref(), stats.as_os_str()]);
    all.extend(args.iter().map(OsStr::new));
    CollectorProcess::start(&all, stderr)
}

fn push(ctx: &zmq::Context, endpoint: &str) -> zmq::Socket {
    let s = ctx.socket(zmq::PUSH).unwrap();
    s.set_sndtimeo(10_000).unwrap();
    s.set_linger(10_000).unwrap();
    s.connect(endpoint).unwrap();
    s
}

fn send(socket: &zmq::Socket, frames: &[Bytes]) {
    socket
        .send_multipart(frames.iter().map(|f| f.to_vec()), 0)
        .unwrap();
}

/// Replaces the `source` and `seq` of a generated message's header.
fn renamed(frames: &[Bytes], source: &str, seq: u64) -> Vec<Bytes> {
    let header = std::str::from_utf8(&frames[0])
        .unwrap()
        .replace(r#""source":"fuzz""#, &format!(r#""source":"{source}""#))
        .replace(r#""seq":0"#, &format!(r#""seq":{seq}"#));
    let mut out = frames.to_vec();
    out[0] = Bytes::from(header);
    out
}

/// Frames of a valid record of 32768 float64 (256 KiB), all equal to `value`.
fn valid(source: &str, seq: u64, value: f64) -> Vec<Bytes> {
    let array = ArrayBuffer::from_owned(Array1::from(vec![value; 32768]));
    crate::common::one_array_message("field", source, "s", seq, array)
}

fn stats(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// The decoded bytes of a stored one-array `.npy` file (its header skipped).
fn npy_payload(path: &Path) -> Vec<u8> {
    let data = std::fs::read(path).unwrap();
    let header_len = u16::from_le_bytes([data[8], data[9]]) as usize;
    data[10 + header_len..].to_vec()
}

#[test]
fn zero_size_block_frames_are_stored_right_between_other_sources_records() {
    let _watchdog = watchdog(
        "zero size block frames are stored",
        Duration::from_secs(180),
    );
    let dir = tempfile::tempdir().unwrap();
    let (out, stats_path) = (dir.path().join("out"), dir.path().join("stats.json"));
    let mut collector = start_collector(&out, &stats_path, &dir.path().join("err.log"), &[]);
    let ctx = zmq::Context::new();
    let victim = push(&ctx, &collector.endpoint);
    let attacker = push(&ctx, &collector.endpoint);
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/block_frames");
    let attacks: Vec<_> = [
        "regression-rle0-128k",
        "regression-raw0-128k",
        "regression-rle0-1m",
    ]
    .iter()
    .map(|name| build(&std::fs::read(corpus.join(name)).unwrap()))
    .collect();
    const ROUNDS: u64 = 20;
    for round in 0..ROUNDS {
        // A record of another source decoded just before each attack: its bytes must never
        // appear in the attacker's records.
        send(&victim, &valid("victim", round, round as f64 + 0.5));
        let case = &attacks[round as usize % attacks.len()];
        send(&attacker, &renamed(&case.frames, "attacker", round));
    }
    drop((victim, attacker));
    let expect = |seq: u64| {
        let case = &attacks[seq as usize % attacks.len()];
        let shuffled = reference(case).expect("the regression frames are valid zstd");
        let mut plain = vec![0; shuffled.len()];
        unshuffle(&shuffled, &mut plain, case.itemsize);
        plain
    };
    wait_until("all records stored", Duration::from_secs(30), || {
        std::fs::read_to_string(out.join("manifest.jsonl"))
            .is_ok_and(|m| m.lines().count() as u64 == 2 * ROUNDS)
    });
    assert!(collector.alive());
    assert!(collector.stop().success());
    let s = stats(&stats_path);
    assert_eq!(s["stats"]["stored"].as_u64(), Some(2 * ROUNDS), "{s}");
    assert_eq!(s["stats"]["rejected"].as_u64(), Some(0), "{s}");
    for seq in 0..ROUNDS {
        let stored = npy_payload(&out.join(format!("attacker/r/{seq}.npy")));
        assert!(stored == expect(seq), "attack record {seq} stored wrong");
        let victim = npy_payload(&out.join(format!("victim/field/{seq}.npy")));
        let value = seq as f64 + 0.5;
        assert!(victim
            .chunks(8)
            .all(|v| f64::from_le_bytes(v.try_into().unwrap()) == value));
    }
}

/// A shuffled zstd message of `<u8` elements whose frame is `frame` and declares `nbytes`.
fn zstd_message(source: &str, seq: u64, nbytes: u64, frame: Vec<u8>) -> Vec<Bytes> {
    let header = format!(
        r#"{{"v":1,"name":"bomb","source":"{source}","session":"s","seq":{seq},"time":0,"arrays":[{{"name":"a","dtype":"<u8","shape":[{}],"order":"C","codec":"zstd","filters":["shuffle"],"nbytes":{nbytes}}}]}}"#,
        nbytes / 8
    );
    vec![Bytes::from(header), Bytes::from(frame)]
}

/// A zstd frame header: single segment, 8-byte content size `declared`.
fn frame_header(declared: u64) -> Vec<u8> {
    let mut f = 0xFD2F_B528u32.to_le_bytes().to_vec();
    f.push(0xE0);
    f.extend(declared.to_le_bytes());
    f
}

fn block(kind: u32, size: u32, last: bool) -> [u8; 3] {
    let b = (size << 3 | kind << 1 | u32::from(last)).to_le_bytes();
    [b[0], b[1], b[2]]
}

#[test]
fn lying_frames_and_zstd_bombs_are_refused_within_memory() {
    let _watchdog = watchdog("lying frames and zstd bombs are", Duration::from_secs(180));
    let dir = tempfile::tempdir().unwrap();
    let (out, stats_path) = (dir.path().join("out"), dir.path().join("stats.json"));
    let mut collector = start_collector(&out, &stats_path, &dir.path().join("err.log"), &[]);
    let ctx = zmq::Context::new();
    let attacker = push(&ctx, &collector.endpoint);
    let honest = push(&ctx, &collector.endpoint);
    const GIB4: u64 = 4 << 30;
    // About 1 KB: a frame declaring 4 GiB with a few small compressed blocks.
    let mut liar = frame_header(GIB4);
    for i in 0..200 {
        liar.extend(block(2, 2, i == 199));
        liar.extend([0, 0]);
    }
    // 128 KB of RLE blocks: each 4 bytes for 128 KiB, 4 GiB in all.
    let mut bomb = frame_header(GIB4);
    let blocks = (GIB4 / (128 << 10)) as u32;
    for i in 0..blocks {
        bomb.extend(block(1, 128 << 10, i + 1 == blocks));
        bomb.push(0);
    }
    assert!(liar.len() < 1100 && bomb.len() < 140_000);
    const ROUNDS: u64 = 10;
    let started = Instant::now();
    for seq in 0..ROUNDS {
        send(&attacker, &zstd_message("liar", seq, GIB4, liar.clone()));
        send(&attacker, &zstd_message("bomber", seq, GIB4, bomb.clone()));
        send(&honest, &valid("honest", seq, 1.0));
    }
    drop((attacker, honest));
    wait_until("the honest records stored", Duration::from_secs(60), || {
        std::fs::read_to_string(out.join("manifest.jsonl"))
            .is_ok_and(|m| m.lines().count() as u64 == ROUNDS)
    });
    let elapsed = started.elapsed();
    let peak = collector.peak_rss();
    assert!(collector.alive());
    assert!(collector.stop().success());
    let s = stats(&stats_path);
    assert_eq!(s["stats"]["stored"].as_u64(), Some(ROUNDS), "{s}");
    assert_eq!(s["stats"]["rejected"].as_u64(), Some(2 * ROUNDS), "{s}");
    let sources = &s["stats"]["sources"];
    assert_eq!(
        sources["liar"]["errors"]["zstd"].as_u64(),
        Some(ROUNDS),
        "{s}"
    );
    assert_eq!(
        sources["bomber"]["errors"]["expansion"].as_u64(),
        Some(ROUNDS),
        "{s}"
    );
    eprintln!(
        "{} attack messages refused in {elapsed:?}, collector peak RSS {} MB",
        2 * ROUNDS,
        peak >> 20
    );
    assert!(peak < 1_200_000_000, "peak RSS {peak} bytes");
}

#[test]
fn a_message_of_millions_of_empty_frames_costs_only_its_bounded_size() {
    let _watchdog = watchdog("a message of millions of empty", Duration::from_secs(180));
    let dir = tempfile::tempdir().unwrap();
    let (out, stats_path) = (dir.path().join("out"), dir.path().join("stats.json"));
    // The limits set the largest message: 1 MiB arrays, so about 3.4 MB with frames counted.
    let mut collector = start_collector(
        &out,
        &stats_path,
        &dir.path().join("err.log"),
        &["--max-array-mib", "1"],
    );
    let before = collector.peak_rss();
    let ctx = zmq::Context::new();
    let attacker = push(&ctx, &collector.endpoint);
    // 4,000,000 empty frames: 8 MB on the wire, 256 MB of queued frames if accepted.
    let mut flood = valid("flood", 0, 0.0);
    flood.extend(std::iter::repeat_n(Bytes::new(), 4_000_000));
    send(&attacker, &flood);
    let honest = push(&ctx, &collector.endpoint);
    for seq in 0..10 {
        send(&honest, &valid("honest", seq, 2.0));
    }
    wait_until("the honest records stored", Duration::from_secs(60), || {
        std::fs::read_to_string(out.join("manifest.jsonl")).is_ok_and(|m| m.lines().count() == 10)
    });
    // Let the attacker's frames arrive: libzmq drops its connection once the message passes
    // the bound.
    std::thread::sleep(Duration::from_secs(2));
    let grown = collector.peak_rss().saturating_sub(before);
    assert!(collector.alive());
    assert!(collector.stop().success());
    let s = stats(&stats_path);
    assert_eq!(s["stats"]["stored"].as_u64(), Some(10), "{s}");
    assert!(s["stats"]["sources"].get("flood").is_none(), "{s}");
    eprintln!(
        "4,000,000 empty frames: collector peak RSS grew by {} MB",
        grown >> 20
    );
    assert!(grown < 64 << 20, "peak RSS grew by {grown} bytes");
}

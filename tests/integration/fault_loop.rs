//! The collector killed (SIGKILL) at random moments and restarted on the same `--out` and port,
//! 10 times, while 4 publishers send mixed records. In the default (fire-and-forget) mode every
//! record is either stored once or reported missing by `ndbridge verify`, the sessions' ends
//! included; in acked delivery every record is stored exactly once, with a spool or without. A
//! publisher killed while its collector is away loses nothing when it is started again on its
//! spool. The loops run on both output formats: a store (whose every record is also read back
//! and checked) and `--format npy`.

use std::process::Command;
use std::time::Duration;

use ndarray::Array1;
use ndbridge::{ArrayBuffer, Compression, Delivery, Publisher};

use ndbridge::store::{JournalEntry, Store};

use crate::common::{example, manifest, manifest_ends, restart_port, watchdog, CollectorProcess};

/// Records each publisher sends, publishers, and kills of the collector.
const RECORDS: u64 = 400;
const PUBLISHERS: usize = 4;
const KILLS: usize = 10;

/// Collectors one after the other on the same port and `--out`, each with `args` besides and a
/// log of its own in `dir`.
struct Restarts<'a> {
    dir: &'a std::path::Path,
    endpoint: String,
    args: &'a [&'a str],
    runs: usize,
}

impl<'a> Restarts<'a> {
    fn new(dir: &'a std::path::Path, args: &'a [&'a str]) -> Restarts<'a> {
        let endpoint = format!("tcp://127.0.0.1:{}", restart_port());
        Restarts {
            dir,
            endpoint,
            args,
            runs: 0,
        }
    }

    fn out(&self) -> std::path::PathBuf {
        self.dir.join("run")
    }

    /// The next collector.
    fn start(&mut self) -> CollectorProcess {
        let log = self.dir.join(format!("collect-{}.log", self.runs));
        self.runs += 1;
        let out = self.out();
        let mut args: Vec<&std::ffi::OsStr> = vec!["--bind".as_ref(), self.endpoint.as_ref()];
        args.extend(self.args.iter().map(std::ffi::OsStr::new));
        args.extend(["--out".as_ref(), out.as_os_str()]);
        CollectorProcess::start(&args, &log)
    }

    /// Kills (SIGKILL) and restarts the collector [`KILLS`] times at random moments, each up
    /// 100 to 800 ms and down 0 to 400 ms (the seed is printed); returns the last one.
    fn kill_loop(&mut self) -> CollectorProcess {
        let seed: u64 = rand::random();
        eprintln!("kill schedule seed {seed}");
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed);
        let mut collector = self.start();
        for _ in 0..KILLS {
            let up = rand::Rng::gen_range(&mut rng, 100..800);
            std::thread::sleep(Duration::from_millis(up));
            drop(collector); // SIGKILL
            let down = rand::Rng::gen_range(&mut rng, 0..400);
            std::thread::sleep(Duration::from_millis(down));
            collector = self.start();
        }
        collector
    }
}

/// `ndbridge verify OUT`: its standard output and exit code.
fn verify(out: &std::path::Path) -> (String, Option<i32>) {
    let output = Command::new(env!("CARGO_BIN_EXE_ndbridge"))
        .arg("verify")
        .arg(out)
        .output()
        .unwrap();
    (
        String::from_utf8(output.stdout).unwrap(),
        output.status.code(),
    )
}

/// The seqs stored for `source`, sorted, as the store's `seq` columns or the manifest list
/// them.
fn stored_seqs(out: &std::path::Path, source: &str) -> Vec<u64> {
    let mut stored: Vec<u64> = if is_store(out) {
        let store = Store::open(out).unwrap();
        let groups = store.groups().iter().filter(|g| g.source == source);
        groups
            .flat_map(|g| store.keys(g).unwrap().into_iter().map(|(seq, _)| seq))
            .collect()
    } else {
        manifest(out)
            .iter()
            .filter(|l| l["source"] == source)
            .map(|l| l["seq"].as_u64().unwrap())
            .collect()
    };
    stored.sort_unstable();
    stored
}

fn is_store(out: &std::path::Path) -> bool {
    out.join("zarr.json").exists()
}

/// Session ends stored so far.
fn ends(out: &std::path::Path) -> usize {
    if !is_store(out) {
        return manifest_ends(out).len();
    }
    let journal = ndbridge::store::Store::open(out)
        .unwrap()
        .journal()
        .unwrap();
    let is_end = |e: &&JournalEntry| matches!(e, JournalEntry::End { .. });
    journal.iter().filter(is_end).count()
}

/// Reads every record of the store at `out` back and checks it holds what [`mixed_record`]
/// sent for its source and seq; returns the records read.
fn check_store(out: &std::path::Path) -> u64 {
    let store = Store::open(out).unwrap();
    let mut read = 0;
    for group in store.groups() {
        let p: usize = group.source[1..].parse().unwrap();
        let mut reader = store.reader(group).unwrap();
        for i in 0..reader.len() {
            let (header, frames) = reader.message(i).unwrap();
            let record = ndbridge::wire::decode(&frames, &Default::default()).unwrap();
            let seq = header.seq;
            let x = seq as f64;
            let context = format!("{} {} seq {seq}", group.source, group.record);
            match header.name.as_str() {
                "u" => {
                    let u = record.arrays[0].to_owned_array::<f64>().unwrap();
                    assert!(u.len() == 64 && u.iter().all(|&v| v == x), "{context}");
                }
                "field" => {
                    let f = record.arrays[0].to_owned_array::<f32>().unwrap();
                    let expected = Array1::<f32>::linspace(0.0, x as f32, 50_000).into_dyn();
                    assert_eq!(f, expected, "{context}");
                }
                "state" => {
                    let a = record.array("a").unwrap().to_owned_array::<i32>().unwrap();
                    let b = record.array("b").unwrap().to_owned_array::<u8>().unwrap();
                    assert!(a.iter().all(|&v| v == seq as i32), "{context}");
                    assert!(b.iter().all(|&v| v == p as u8), "{context}");
                    let attrs = serde_json::json!({"seq": seq, "p": p});
                    assert_eq!(header.attrs.as_ref(), attrs.as_object(), "{context}");
                }
                other => panic!("{context}: record name {other:?}"),
            }
            read += 1;
        }
    }
    read
}

/// The cells of `verify`'s row for `source`: source, session, records, missing, duplicated,
/// files gone, ended.
fn verify_row<'a>(stdout: &'a str, source: &str) -> Vec<&'a str> {
    let row = stdout.lines().find(|l| l.starts_with(source)).unwrap();
    row.split_whitespace().collect()
}

/// Publisher `p` of a loop: mixed records, one every 15 ms, with a spool in `spool` if given;
/// returns what `close` returned.
fn publish(
    endpoint: String,
    p: usize,
    delivery: Delivery,
    spool: Option<std::path::PathBuf>,
) -> std::thread::JoinHandle<Result<ndbridge::PublisherStats, ndbridge::Error>> {
    std::thread::spawn(move || {
        let mut builder = Publisher::builder();
        if let Some(dir) = spool {
            builder = builder.spool_dir(dir);
        }
        let publisher = builder
            .connect(&endpoint)
            .source(format!("w{p}"))
            .delivery(delivery)
            .compression(if p.is_multiple_of(2) {
                Compression::Raw
            } else {
                Compression::zstd(1)
            })
            .window_bytes(4 << 20)
            .build()
            .unwrap();
        for seq in 0..RECORDS {
            mixed_record(&publisher, p, seq);
            std::thread::sleep(Duration::from_millis(15));
        }
        publisher.close(Duration::from_secs(120))
    })
}

#[test]
fn killed_collectors_lose_no_record_without_saying_so() {
    kill_loop_fire_and_forget("zarr");
}

#[test]
fn killed_collectors_lose_no_npy_record_without_saying_so() {
    kill_loop_fire_and_forget("npy");
}

fn kill_loop_fire_and_forget(format: &str) {
    let _watchdog = watchdog("collector kill loop", Duration::from_secs(300));
    let dir = tempfile::tempdir().unwrap();
    let args = ["--format", format];
    let mut restarts = Restarts::new(dir.path(), &args);
    let senders: Vec<_> = (0..PUBLISHERS)
        .map(|p| publish(restarts.endpoint.clone(), p, Delivery::FireAndForget, None))
        .collect();
    let mut collector = restarts.kill_loop();
    for sender in senders {
        // What was lost cannot be known to the publisher: its close may still succeed.
        if let Ok(stats) = sender.join().unwrap() {
            assert_eq!(stats.sent, RECORDS, "{stats:?}");
        }
    }
    let out = restarts.out();
    // A session's end is lost like any message when the collector that was passed it is
    // killed before storing it; verify then reports that session as not ended.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while ends(&out) < PUBLISHERS && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(collector.stop().success(), "{}", collector.log());

    // What verify reports missing is exactly what is not stored, per session: every record up
    // to the session's end, or up to the last one stored for a session whose end was lost.
    let (stdout, code) = verify(&out);
    let (mut reported_missing, mut not_ended) = (0, 0);
    for p in 0..PUBLISHERS {
        let source = format!("w{p}");
        let mut stored = stored_seqs(&out, &source);
        stored.dedup();
        let cells = verify_row(&stdout, &source);
        let missing: u64 = cells[3].parse().unwrap();
        assert_eq!(
            cells[2].parse::<u64>().unwrap(),
            stored.len() as u64,
            "{stdout}"
        );
        assert_eq!(cells[5], "0", "{stdout}");
        match cells[6] {
            "yes" => assert_eq!(stored.len() as u64 + missing, RECORDS, "{stdout}"),
            "no" => {
                let last = stored.last().map_or(0, |&seq| seq + 1);
                assert_eq!(stored.len() as u64 + missing, last, "{stdout}");
                not_ended += 1;
            }
            other => panic!("ended {other:?}: {stdout}"),
        }
        reported_missing += missing;
    }
    assert_eq!(ends(&out), PUBLISHERS - not_ended);
    eprintln!("{reported_missing} records lost and reported, {not_ended} sessions not ended");
    let expected = if reported_missing > 0 { 1 } else { 0 };
    assert_eq!(code, Some(expected), "{stdout}");
    if format == "zarr" {
        let stored = PUBLISHERS as u64 * RECORDS - reported_missing;
        assert_eq!(check_store(&out), stored);
    }
}

/// One of the mixed records the loops send: publisher `p`'s record `seq`, small or large,
/// raw or compressed, one array or two with attributes.
fn mixed_record(publisher: &Publisher, p: usize, seq: u64) {
    let x = seq as f64;
    match (p + seq as usize) % 3 {
        0 => publisher
            .send("u", &Array1::<f64>::from_elem(64, x))
            .unwrap(),
        1 => publisher
            .send_owned("field", Array1::<f32>::linspace(0.0, x as f32, 50_000))
            .unwrap(),
        _ => {
            let attrs = serde_json::json!({"seq": seq, "p": p});
            publisher
                .send_record(
                    "state",
                    [
                        (
                            "a",
                            ArrayBuffer::from_owned(Array1::<i32>::from_elem(10, seq as i32)),
                        ),
                        (
                            "b",
                            ArrayBuffer::from_owned(Array1::<u8>::from_elem(3, p as u8)),
                        ),
                    ],
                    attrs.as_object().cloned(),
                )
                .unwrap()
        }
    }
}

#[test]
fn killed_collectors_in_acked_delivery_store_every_record_once() {
    kill_loop_acked("zarr");
}

#[test]
fn killed_collectors_in_acked_delivery_store_every_npy_record_once() {
    kill_loop_acked("npy");
}

fn kill_loop_acked(format: &str) {
    let _watchdog = watchdog("acked collector kill loop", Duration::from_secs(300));
    let dir = tempfile::tempdir().unwrap();
    let args = ["--delivery", "acked", "--format", format];
    let mut restarts = Restarts::new(dir.path(), &args);
    // Publisher 1 keeps its records in a spool, the others in memory.
    let spool = dir.path().join("spool");
    let senders: Vec<_> = (0..PUBLISHERS)
        .map(|p| {
            let spool = (p == 1).then(|| spool.clone());
            publish(restarts.endpoint.clone(), p, Delivery::Acked, spool)
        })
        .collect();
    let mut collector = restarts.kill_loop();
    let mut resent = 0;
    for sender in senders {
        let stats = sender.join().unwrap().expect("every record acknowledged");
        assert_eq!(
            (stats.sent, stats.delivered),
            (RECORDS, RECORDS),
            "{stats:?}"
        );
        resent += stats.resent;
    }
    // The kills cut the stream: unacknowledged records were sent again.
    eprintln!("{resent} records resent");
    assert!(resent > 0);
    assert!(collector.stop().success(), "{}", collector.log());

    // Every record once, every session ended: verify finds nothing missing or duplicated.
    let out = restarts.out();
    let (stdout, code) = verify(&out);
    for p in 0..PUBLISHERS {
        let source = format!("w{p}");
        assert_eq!(stored_seqs(&out, &source), (0..RECORDS).collect::<Vec<_>>());
        let cells = verify_row(&stdout, &source);
        assert_eq!(&cells[2..], ["400", "0", "0", "0", "yes"], "{stdout}");
    }
    assert_eq!(code, Some(0), "{stdout}");
    if format == "zarr" {
        assert_eq!(check_store(&out), PUBLISHERS as u64 * RECORDS);
    }
}

/// The example worker in acked delivery with a spool, to `endpoint`, as source `ws`: `steps`
/// steps of three records every 2 ms.
fn spooling_worker(
    worker: &std::path::Path,
    endpoint: &str,
    spool: &std::path::Path,
    steps: u64,
) -> Command {
    let mut command = Command::new(worker);
    command
        .args([endpoint, "--acked", "--source", "ws", "--size", "16"])
        .args([
            "--interval-ms",
            "2",
            "--record-every",
            "1",
            "--timeout",
            "60",
        ])
        .arg("--steps")
        .arg(steps.to_string())
        .arg("--spool")
        .arg(spool);
    command
}

#[test]
fn a_publisher_killed_while_its_collector_is_away_loses_nothing_with_its_spool() {
    let _watchdog = watchdog("publisher kill with a spool", Duration::from_secs(120));
    let Some(worker) = example("worker") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let mut restarts = Restarts::new(dir.path(), &["--delivery", "acked"]);
    let endpoint = restarts.endpoint.clone();

    // The first worker sends while its collector runs, then while it is away (SIGKILL), and is
    // killed itself: what was not acknowledged is only in its spool.
    let mut collector = restarts.start();
    let mut first = spooling_worker(&worker, &endpoint, &spool, 1_000_000)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    drop(collector);
    std::thread::sleep(Duration::from_millis(500));
    first.kill().unwrap();
    first.wait().unwrap();
    let spooled = |spool: &std::path::Path| {
        std::fs::read_dir(spool)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension() == Some("spool".as_ref()))
            .count()
    };
    assert!(spooled(&spool) > 0);

    // The collector back, a second worker on the same spool sends the first one's records
    // first, ends its session, then sends its own.
    collector = restarts.start();
    let second = spooling_worker(&worker, &endpoint, &spool, 20)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&second.stdout);
    assert!(
        second.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&second.stderr)
    );
    let words: Vec<&str> = stdout.split_whitespace().collect();
    let recovered: u64 = words[words.iter().position(|w| *w == "recovered").unwrap() - 1]
        .parse()
        .unwrap();
    eprintln!("{stdout}");
    assert!(recovered > 0, "{stdout}");
    assert!(collector.stop().success(), "{}", collector.log());
    assert_eq!(
        spooled(&spool),
        0,
        "everything acknowledged leaves the spool"
    );

    // Both sessions stored whole and ended, each record once.
    let (stdout, code) = verify(&restarts.out());
    let rows: Vec<Vec<&str>> = stdout
        .lines()
        .filter(|l| l.starts_with("ws "))
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 2, "{stdout}");
    for row in &rows {
        assert_eq!(&row[3..], ["0", "0", "0", "yes"], "{stdout}");
    }
    let records: Vec<u64> = rows.iter().map(|r| r[2].parse().unwrap()).collect();
    assert!(
        records.contains(&60),
        "the second worker's 20 steps: {stdout}"
    );
    assert!(
        records.iter().any(|&r| r > 60),
        "the first worker ran longer: {stdout}"
    );
    assert_eq!(code, Some(0), "{stdout}");
}

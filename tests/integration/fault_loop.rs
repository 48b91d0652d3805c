//! The collector killed (SIGKILL) and restarted on the same `--out` again and again while
//! publishers send in the default (fire-and-forget) mode: every record the publishers sent is
//! either stored once or reported missing by `ndbridge verify`, the sessions' ends included, and
//! what is stored is whole.

use std::process::Command;
use std::time::Duration;

use ndarray::Array1;
use ndbridge::{ArrayBuffer, Compression, Delivery, Publisher};

use crate::common::{manifest, watchdog, CollectorProcess};

/// Records each publisher sends, and publishers.
const RECORDS: u64 = 300;
const PUBLISHERS: usize = 2;

/// A loopback port free now, for collectors to bind one after the other.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn killed_collectors_lose_no_record_without_saying_so() {
    let _watchdog = watchdog("collector kill loop", Duration::from_secs(240));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let endpoint = format!("tcp://127.0.0.1:{}", free_port());
    let start = |run: usize| {
        let log = dir.path().join(format!("collect-{run}.log"));
        let args = ["--bind", endpoint.as_str(), "--out"];
        let mut args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
        args.push(out.as_os_str());
        CollectorProcess::start(&args, &log)
    };
    let senders: Vec<_> = (0..PUBLISHERS)
        .map(|p| {
            let endpoint = endpoint.clone();
            std::thread::spawn(move || {
                let publisher = Publisher::builder()
                    .connect(&endpoint)
                    .source(format!("w{p}"))
                    .compression(Compression::Raw)
                    .build()
                    .unwrap();
                for seq in 0..RECORDS {
                    publisher
                        .send("u", &Array1::<f64>::from_elem(64, seq as f64))
                        .unwrap();
                    std::thread::sleep(Duration::from_millis(10));
                }
                publisher.close(Duration::from_secs(60)).unwrap()
            })
        })
        .collect();
    // Killed at moments spread over the stream (3 s long), restarted at once or after a pause.
    let mut collector = start(0);
    for (run, (alive, down)) in [(450, 0), (300, 200), (700, 50), (250, 400), (500, 0)]
        .into_iter()
        .enumerate()
    {
        std::thread::sleep(Duration::from_millis(alive));
        drop(collector); // SIGKILL
        std::thread::sleep(Duration::from_millis(down));
        collector = start(run + 1);
    }
    for sender in senders {
        let stats = sender.join().unwrap();
        assert_eq!(stats.sent, RECORDS, "{stats:?}");
    }
    let ends = || {
        std::fs::read_to_string(out.join("manifest.jsonl"))
            .unwrap()
            .matches(r#""end":true"#)
            .count()
    };
    crate::common::wait_until("every session's end", Duration::from_secs(30), || {
        ends() == PUBLISHERS
    });
    assert!(collector.stop().success(), "{}", collector.log());

    // What verify reports missing is exactly what is not stored, per session.
    let output = Command::new(env!("CARGO_BIN_EXE_ndbridge"))
        .arg("verify")
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    let lines = manifest(&out);
    let mut reported_missing = 0;
    for p in 0..PUBLISHERS {
        let source = format!("w{p}");
        let mut stored: Vec<u64> = lines
            .iter()
            .filter(|l| l["source"] == source.as_str())
            .map(|l| l["seq"].as_u64().unwrap())
            .collect();
        stored.sort_unstable();
        stored.dedup();
        let row = stdout.lines().find(|l| l.starts_with(&source)).unwrap();
        let cells: Vec<&str> = row.split_whitespace().collect();
        // source session records missing duplicated files-gone ended
        let missing: u64 = cells[3].parse().unwrap();
        assert_eq!(
            cells[2].parse::<u64>().unwrap(),
            stored.len() as u64,
            "{row}"
        );
        assert_eq!(stored.len() as u64 + missing, RECORDS, "{stdout}");
        assert_eq!((cells[5], cells[6]), ("0", "yes"), "{row}");
        reported_missing += missing;
    }
    let expected = if reported_missing > 0 { 1 } else { 0 };
    assert_eq!(output.status.code(), Some(expected), "{stdout}{stderr}");
}

/// Records each publisher sends in the acked loop, and the kills.
const ACKED_RECORDS: u64 = 400;
const KILLS: usize = 10;

/// One of the mixed records the acked loop sends: publisher `p`'s record `seq`, small or large,
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
    let _watchdog = watchdog("acked collector kill loop", Duration::from_secs(300));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let endpoint = format!("tcp://127.0.0.1:{}", free_port());
    let start = |run: usize| {
        let log = dir.path().join(format!("collect-{run}.log"));
        let args = ["--bind", endpoint.as_str(), "--delivery", "acked", "--out"];
        let mut args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
        args.push(out.as_os_str());
        CollectorProcess::start(&args, &log)
    };
    let senders: Vec<_> = (0..PUBLISHERS_ACKED)
        .map(|p| {
            let endpoint = endpoint.clone();
            std::thread::spawn(move || {
                let publisher = Publisher::builder()
                    .connect(&endpoint)
                    .source(format!("w{p}"))
                    .delivery(Delivery::Acked)
                    .compression(if p % 2 == 0 {
                        Compression::Raw
                    } else {
                        Compression::zstd(1)
                    })
                    .window_bytes(4 << 20)
                    .build()
                    .unwrap();
                for seq in 0..ACKED_RECORDS {
                    mixed_record(&publisher, p, seq);
                    std::thread::sleep(Duration::from_millis(15));
                }
                publisher.close(Duration::from_secs(120))
            })
        })
        .collect();
    // Killed at random moments over the stream (6 s long), restarted at once or after a pause.
    let seed: u64 = rand::random();
    eprintln!("kill schedule seed {seed}");
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed);
    let mut collector = start(0);
    for run in 0..KILLS {
        std::thread::sleep(Duration::from_millis(rand::Rng::gen_range(
            &mut rng,
            100..800,
        )));
        drop(collector); // SIGKILL
        std::thread::sleep(Duration::from_millis(rand::Rng::gen_range(
            &mut rng,
            0..400,
        )));
        collector = start(run + 1);
    }
    let mut resent = 0;
    for sender in senders {
        let stats = sender.join().unwrap().expect("every record acknowledged");
        assert_eq!(
            (stats.sent, stats.delivered),
            (ACKED_RECORDS, ACKED_RECORDS),
            "{stats:?}"
        );
        resent += stats.resent;
    }
    // The kills cut the stream: unacknowledged records were sent again.
    eprintln!("{resent} records resent");
    assert!(resent > 0);
    assert!(collector.stop().success(), "{}", collector.log());

    // Every record once, every session ended: verify finds nothing missing or duplicated.
    let output = Command::new(env!("CARGO_BIN_EXE_ndbridge"))
        .arg("verify")
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    let lines = manifest(&out);
    for p in 0..PUBLISHERS_ACKED {
        let source = format!("w{p}");
        let mut stored: Vec<u64> = lines
            .iter()
            .filter(|l| l["source"] == source.as_str())
            .map(|l| l["seq"].as_u64().unwrap())
            .collect();
        stored.sort_unstable();
        assert_eq!(stored, (0..ACKED_RECORDS).collect::<Vec<_>>(), "{source}");
        let row = stdout.lines().find(|l| l.starts_with(&source)).unwrap();
        let cells: Vec<&str> = row.split_whitespace().collect();
        // source session records missing duplicated files-gone ended
        assert_eq!(&cells[2..], ["400", "0", "0", "0", "yes"], "{row}");
    }
    assert_eq!(output.status.code(), Some(0), "{stdout}");
}

/// Publishers of the acked loop.
const PUBLISHERS_ACKED: usize = 4;

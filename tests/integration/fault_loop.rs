//! The collector killed (SIGKILL) and restarted on the same `--out` again and again while
//! publishers send in the default (fire-and-forget) mode: every record the publishers sent is
//! either stored once or reported missing by `ndbridge verify`, the sessions' ends included, and
//! what is stored is whole.

use std::process::Command;
use std::time::Duration;

use ndarray::Array1;
use ndbridge::{Compression, Publisher};

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

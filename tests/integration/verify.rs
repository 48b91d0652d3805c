//! `ndbridge verify OUT` on what a collector stored: every record there is exit 0; records whose
//! files are gone are listed by sequence number and make the exit code 1.

use std::process::Command;
use std::time::Duration;

use ndarray::Array1;
use ndbridge::collector::{Collector, DiskSink};
use ndbridge::{Compression, Publisher};

use crate::common::{manifest, wait_until, watchdog};

fn verify(out: &std::path::Path) -> (Option<i32>, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_ndbridge"))
        .arg("verify")
        .arg(out)
        .output()
        .expect("running ndbridge verify");
    (
        output.status.code(),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

#[test]
fn verify_finds_the_records_whose_files_are_gone() {
    let _watchdog = watchdog("verify", Duration::from_secs(60));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let collector = Collector::builder()
        .bind("tcp://127.0.0.1:*")
        .sink(DiskSink::new(&out).unwrap())
        .start()
        .unwrap();
    let publisher = Publisher::builder()
        .connect(collector.endpoint())
        .source("w1")
        .compression(Compression::Raw)
        .build()
        .unwrap();
    for k in 0..20 {
        let name = if k % 2 == 0 { "u" } else { "v" };
        publisher
            .send(name, &Array1::<f64>::from_elem(4, k as f64))
            .unwrap();
    }
    publisher.close(Duration::from_secs(20)).unwrap();
    wait_until(
        "20 records stored, and the end",
        Duration::from_secs(20),
        || {
            let stats = collector.stats();
            stats.stored == 20 && stats.sessions_not_ended == 0
        },
    );
    collector.stop();

    let (code, stdout, stderr) = verify(&out);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stderr.contains("20 records in 1 session, none missing"),
        "{stderr}"
    );

    // Records 3, 7 and 8 lost: their files removed.
    for line in manifest(&out) {
        if [3, 7, 8].contains(&line["seq"].as_u64().unwrap()) {
            std::fs::remove_file(out.join(line["path"].as_str().unwrap())).unwrap();
        }
    }
    let (code, stdout, stderr) = verify(&out);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("  missing seqs: 3, 7-8\n"), "{stdout}");
    let row = stdout.lines().find(|l| l.starts_with("w1 ")).unwrap();
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells[2..], ["17", "3", "0", "3", "yes"], "{row}");
    assert!(
        stderr.contains("3 records missing of 20 records in 1 session"),
        "{stderr}"
    );

    // The last two records never stored (their lines gone): the session's end shows them.
    let text = std::fs::read_to_string(out.join("manifest.jsonl")).unwrap();
    let kept: String = text
        .lines()
        .filter(|line| {
            let seq = serde_json::from_str::<serde_json::Value>(line).unwrap()["seq"].clone();
            seq != 18 && seq != 19
        })
        .map(|line| format!("{line}\n"))
        .collect();
    std::fs::write(out.join("manifest.jsonl"), kept).unwrap();
    let (code, stdout, stderr) = verify(&out);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(
        stdout.contains("  missing seqs: 3, 7-8, 18-19\n"),
        "{stdout}"
    );
    // Without the end, records after the last one stored cannot be seen.
    let ends = text
        .lines()
        .filter(|line| line.contains(r#""end":true"#))
        .count();
    assert_eq!(ends, 1, "{text}");
    let kept: String = text
        .lines()
        .filter(|line| !line.contains(r#""end":true"#))
        .map(|line| format!("{line}\n"))
        .collect();
    std::fs::write(out.join("manifest.jsonl"), kept).unwrap();
    let (code, stdout, stderr) = verify(&out);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("  missing seqs: 3, 7-8\n"), "{stdout}");
    let row = stdout.lines().find(|l| l.starts_with("w1 ")).unwrap();
    assert!(row.ends_with(" no"), "{row}");

    // A line cut short (a collector killed while appending) is reported, not fatal.
    let mut manifest = std::fs::OpenOptions::new()
        .append(true)
        .open(out.join("manifest.jsonl"))
        .unwrap();
    std::io::Write::write_all(&mut manifest, br#"{"source":"w1","sess"#).unwrap();
    let (code, stdout, stderr) = verify(&out);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("  missing seqs: 3, 7-8\n"), "{stdout}");
    assert!(
        stderr.contains("1 line of the manifest not read (cut short, or not a record's)"),
        "{stderr}"
    );
}

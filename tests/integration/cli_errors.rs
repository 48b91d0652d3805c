//! What the `ndbridge` program says when it cannot do what it was asked, run as a process: each
//! cause once, the option to fix named, nothing left on disk after a failed start, no colour
//! codes in a log that is not a terminal, and counts in the right number.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use ndarray::Array1;
use ndarray_npy::WriteNpyExt;
use ndbridge::collector::Collector;
use ndbridge::{Compression, Publisher};

use crate::common::{wait_until, watchdog, CollectorProcess, Tmpfs};

/// Runs `ndbridge args...` to its end and returns its output.
fn ndbridge(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ndbridge"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running ndbridge")
}

/// Its standard error, checked free of ANSI escape codes (it is a pipe, not a terminal).
fn stderr_of(output: &Output) -> String {
    let stderr = String::from_utf8(output.stderr.clone()).unwrap();
    assert!(
        !stderr.contains('\x1b'),
        "colour codes in a pipe: {stderr:?}"
    );
    stderr
}

/// A port nothing listens on: bound to pick it, then released.
fn fresh_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn a_port_in_use_is_said_once_and_leaves_no_output_directory() {
    let _watchdog = watchdog("port in use", Duration::from_secs(60));
    let dir = tempfile::tempdir().unwrap();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let out = dir.path().join("new").join("sub");
    let input = format!("tcp://127.0.0.1:{port}");
    let output = ndbridge(&[
        "collect",
        "--bind",
        &input,
        "--format",
        "npy",
        "--out",
        out.to_str().unwrap(),
        "--stats-every",
        "0",
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        stderr_of(&output),
        format!(
            "ndbridge: error: starting the collector: cannot bind {input}: Address already in use\n"
        )
    );
    assert!(!dir.path().join("new").exists(), "--out was left behind");

    // The forward socket on the port in use: nothing is created either.
    let out = dir.path().join("new2");
    let free = format!("tcp://127.0.0.1:{}", fresh_port());
    let forward = format!("tcp://127.0.0.1:{port}");
    let output = ndbridge(&[
        "collect",
        "--bind",
        &free,
        "--forward",
        &forward,
        "--format",
        "npy",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = stderr_of(&output);
    assert!(
        stderr.starts_with(&format!(
            "ndbridge: error: opening the forward socket (--forward): cannot listen on {forward}: \
             Address already in use"
        )),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("Address already in use").count(),
        1,
        "{stderr}"
    );
    assert!(!out.exists(), "--out was left behind");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn an_endpoint_without_a_transport_is_told_to_add_tcp() {
    let _watchdog = watchdog("endpoint without tcp://", Duration::from_secs(60));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a.npy");
    Array1::<f64>::zeros(4)
        .write_npy(std::fs::File::create(&file).unwrap())
        .unwrap();
    let bare = format!("127.0.0.1:{}", fresh_port());
    let hint = format!("did you mean tcp://{bare}?");
    let out = dir.path().join("out");
    let out = out.to_str().unwrap();
    let cases: [(&str, Vec<&str>); 4] = [
        (
            "opening the publisher (--to): cannot connect",
            vec!["send", "--to", &bare, file.to_str().unwrap()],
        ),
        (
            "subscribing (--from): cannot connect",
            vec!["tail", "--from", &bare, "--count", "1"],
        ),
        (
            "starting the collector: cannot bind",
            vec!["collect", "--bind", &bare, "--format", "npy", "--out", out],
        ),
        (
            "opening the forward socket (--forward): forward address",
            vec!["collect", "--no-disk", "--forward", &bare],
        ),
    ];
    for (says, args) in cases {
        let output = ndbridge(&args);
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        let stderr = stderr_of(&output);
        assert!(
            stderr.starts_with(&format!("ndbridge: error: {says}")),
            "{args:?}: {stderr}"
        );
        assert!(stderr.trim_end().ends_with(&hint), "{args:?}: {stderr}");
    }
    assert!(!Path::new(out).exists(), "--out was left behind");
}

#[test]
fn out_on_a_regular_file_says_not_a_directory() {
    let _watchdog = watchdog("--out on a file", Duration::from_secs(60));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, b"data").unwrap();
    for out in [file.clone(), file.join("below")] {
        let output = ndbridge(&[
            "collect",
            "--bind",
            "tcp://127.0.0.1:*",
            "--format",
            "npy",
            "--out",
            out.to_str().unwrap(),
        ]);
        assert_eq!(output.status.code(), Some(1));
        assert_eq!(
            stderr_of(&output),
            format!(
                "ndbridge: error: opening the output directory (--out): {}: not a directory \
                 (expected a directory to store records in, found a regular file)\n",
                file.display()
            )
        );
    }
    assert_eq!(std::fs::read(&file).unwrap(), b"data");
}

#[test]
fn out_where_nothing_can_be_created_names_the_path_and_the_cause_once() {
    let _watchdog = watchdog("--out not writable", Duration::from_secs(60));
    // Not even root creates directories in /proc.
    let out = "/proc/ndbridge-test-out/records";
    let output = ndbridge(&[
        "collect",
        "--bind",
        "tcp://127.0.0.1:*",
        "--format",
        "npy",
        "--out",
        out,
    ]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = stderr_of(&output);
    assert!(
        stderr.starts_with(&format!(
            "ndbridge: error: opening the output directory (--out): {out}: "
        )),
        "{stderr}"
    );
    assert_eq!(stderr.matches(out).count(), 1, "{stderr}");
    assert_eq!(stderr.matches("(os error").count(), 1, "{stderr}");
}

#[test]
fn a_malformed_endpoint_gives_zeromqs_reason_once() {
    let _watchdog = watchdog("malformed endpoint", Duration::from_secs(60));
    let output = ndbridge(&["tail", "--from", "tcp://127.0.0.1:port", "--count", "1"]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        stderr_of(&output),
        "ndbridge: error: subscribing (--from): cannot connect tcp://127.0.0.1:port: \
         Invalid argument\n"
    );
}

#[test]
fn send_counts_one_message_in_the_singular() {
    let _watchdog = watchdog("send one message", Duration::from_secs(60));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a.npy");
    Array1::<f64>::zeros(4)
        .write_npy(std::fs::File::create(&file).unwrap())
        .unwrap();
    let collector = Collector::builder()
        .bind("tcp://127.0.0.1:*")
        .start()
        .unwrap();
    let output = ndbridge(&[
        "send",
        "--to",
        collector.endpoint(),
        "--timeout",
        "20",
        file.to_str().unwrap(),
    ]);
    let stderr = stderr_of(&output);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("\ndelivered 1 message, "), "{stderr}");
    collector.stop();
}

#[test]
fn a_message_over_the_array_limit_names_the_option_that_raises_it() {
    let _watchdog = watchdog("limit names its option", Duration::from_secs(60));
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("stderr.log");
    let mut collect = CollectorProcess::start(
        &["--no-disk", "--max-array-mib", "1"].map(std::ffi::OsStr::new),
        &log,
    );
    let publisher = Publisher::builder()
        .connect(&collect.endpoint)
        .compression(Compression::zstd(1))
        .build()
        .unwrap();
    // 2 MiB of zeros: a small message on the wire, over the 1 MiB array limit decoded.
    publisher
        .send_owned("big", Array1::<u8>::zeros(2 << 20))
        .unwrap();
    publisher.close(Duration::from_secs(20)).unwrap();
    wait_until("the rejection", Duration::from_secs(20), || {
        collect.log().contains("rejected a message")
    });
    assert!(collect.stop().success());
    let stderr = collect.log();
    assert!(
        !stderr.contains('\x1b'),
        "colour codes in a file: {stderr:?}"
    );
    assert!(stderr.contains(" INFO collecting on "), "{stderr}");
    // The warning when it happens, and the summary at the end, both name the option.
    assert!(
        stderr.contains("(raise the limit with --max-array-mib)\n"),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "\n1 message rejected over a limit (array_too_large): raise it with --max-array-mib\n"
        ),
        "{stderr}"
    );
}

#[test]
fn records_a_full_disk_never_took_make_the_exit_code_non_zero() {
    let _watchdog = watchdog("unstored records", Duration::from_secs(60));
    let dir = tempfile::tempdir().unwrap();
    let _tmpfs = Tmpfs::mount(dir.path(), 1 << 20);
    // The whole tmpfs taken: the manifest can be created, no record written.
    let _ = std::fs::write(dir.path().join("ballast"), vec![1u8; 1 << 20]);
    // The log outside the full tmpfs.
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("stderr.log");
    let out = dir.path().join("run");
    let mut collect = CollectorProcess::start(
        &[
            "--drain-timeout".as_ref(),
            "1".as_ref(),
            "--format".as_ref(),
            "npy".as_ref(),
            "--out".as_ref(),
            out.as_os_str(),
        ],
        &log,
    );
    let publisher = Publisher::builder()
        .connect(&collect.endpoint)
        .compression(Compression::Raw)
        .build()
        .unwrap();
    publisher
        .send_owned("u", Array1::<f64>::from_elem(16 << 10, 1.0))
        .unwrap();
    publisher.close(Duration::from_secs(20)).unwrap();
    wait_until("the disk sink retrying", Duration::from_secs(20), || {
        collect.log().contains("No space left on device")
    });
    let code = collect.stop().code();
    let stderr = collect.log();
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("reading stops, retrying in"), "{stderr}");
    assert!(
        stderr.contains("1 record could not be stored (sink errors {\"disk\": 1})"),
        "{stderr}"
    );
}

#[test]
fn acked_send_waits_for_the_collector_and_fails_without_one() {
    let _watchdog = watchdog("acked send", Duration::from_secs(90));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a.npy");
    Array1::<f64>::zeros(4)
        .write_npy(std::fs::File::create(&file).unwrap())
        .unwrap();
    let out = dir.path().join("run");
    let mut collect = CollectorProcess::start(
        &[
            "--delivery".as_ref(),
            "acked".as_ref(),
            "--format".as_ref(),
            "npy".as_ref(),
            "--out".as_ref(),
            out.as_os_str(),
        ],
        &dir.path().join("collect.log"),
    );
    // A collector that is there has 30 s to store and acknowledge (other tests load the
    // machine and its disk); the sends that can never be acknowledged give up after 3.
    let send = |to: &str, timeout: &str| {
        ndbridge(&[
            "send",
            "--delivery",
            "acked",
            "--to",
            to,
            "--timeout",
            timeout,
            file.to_str().unwrap(),
        ])
    };
    let output = send(&collect.endpoint, "30");
    let stderr = stderr_of(&output);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("\nstored and acknowledged: 1 message, "),
        "{stderr}"
    );
    assert!(collect.stop().success(), "{}", collect.log());
    assert_eq!(crate::common::manifest(&out).len(), 1);

    // Nothing listens, or a collector in the other mode: the handshake never completes.
    let plain = Collector::builder()
        .bind("tcp://127.0.0.1:*")
        .start()
        .unwrap();
    for to in [
        format!("tcp://127.0.0.1:{}", fresh_port()),
        plain.endpoint().to_owned(),
    ] {
        let output = send(&to, "3");
        let stderr = stderr_of(&output);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains("no peer took any of 1 message from"),
            "{stderr}"
        );
    }
    assert_eq!(plain.stop().stats.received, 0);
}

//! Acked delivery in-process: a publisher and a collector in `Delivery::Acked` store every
//! record once, acknowledged only after the group commit; a record sent again is dropped and
//! acknowledged again; what cannot be stored is settled as refused; what a publisher could not
//! deliver stays in its spool, and the next publisher on the spool delivers it.

use std::time::Duration;

use ndarray::Array1;
use ndbridge::collector::{Collector, DiskSink};
use ndbridge::{Compression, Delivery, Error, Limits, Publisher};

use crate::common::{manifest, manifest_ends, restart_port, wait_until, watchdog, Tmpfs};

/// An [`Error::Unacknowledged`]'s records not acknowledged, refused, and the spool keeping them;
/// `None` for another error.
fn unacknowledged(err: &Error) -> Option<(usize, usize, Option<std::path::PathBuf>)> {
    match err {
        Error::Unacknowledged {
            unacknowledged,
            refused,
            kept,
            ..
        } => Some((*unacknowledged, *refused, kept.clone())),
        _ => None,
    }
}

fn acked_collector(out: &std::path::Path) -> Collector {
    Collector::builder()
        .bind("tcp://127.0.0.1:*")
        .delivery(Delivery::Acked)
        .sink(DiskSink::new(out).unwrap())
        .start()
        .unwrap()
}

#[test]
fn every_record_is_acknowledged_once_stored() {
    let _watchdog = watchdog("acked roundtrip", Duration::from_secs(60));
    let out = tempfile::tempdir().unwrap();
    let collector = acked_collector(out.path());
    let publisher = Publisher::builder()
        .connect(collector.endpoint())
        .source("w")
        .delivery(Delivery::Acked)
        .compression(Compression::Raw)
        .window_bytes(64 << 10)
        .build()
        .unwrap();
    for i in 0..300 {
        publisher
            .send_owned("u", Array1::<f64>::from_elem(1000, f64::from(i)))
            .unwrap();
    }
    let stats = publisher.close(Duration::from_secs(20)).unwrap();
    assert_eq!((stats.sent, stats.delivered, stats.refused), (300, 300, 0));
    let summary = collector.stop();
    assert_eq!(summary.stats.stored, 300);
    assert_eq!(summary.stats.redelivered, 0);
    assert_eq!(summary.stats.sessions_not_ended, 0);
    let seqs: Vec<u64> = manifest(out.path())
        .iter()
        .map(|l| l["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs.len(), 300);
    assert_eq!(manifest_ends(out.path()).len(), 1);
}

#[test]
fn a_record_too_large_for_the_collector_is_refused_and_reported() {
    let _watchdog = watchdog("acked refusal", Duration::from_secs(60));
    let out = tempfile::tempdir().unwrap();
    let collector = Collector::builder()
        .bind("tcp://127.0.0.1:*")
        .delivery(Delivery::Acked)
        .limits(Limits {
            max_array_bytes: 4096,
            ..Limits::default()
        })
        .sink(DiskSink::new(out.path()).unwrap())
        .start()
        .unwrap();
    let publisher = Publisher::builder()
        .connect(collector.endpoint())
        .source("w")
        .delivery(Delivery::Acked)
        .compression(Compression::Raw)
        .build()
        .unwrap();
    publisher
        .send_owned("small", Array1::<f64>::zeros(10))
        .unwrap();
    publisher
        .send_owned("large", Array1::<f64>::zeros(10_000))
        .unwrap();
    publisher
        .send_owned("small", Array1::<f64>::zeros(10))
        .unwrap();
    let err = publisher.close(Duration::from_secs(20)).unwrap_err();
    assert_eq!(unacknowledged(&err), Some((0, 1, None)), "{err}");
    assert_eq!(
        err.to_string(),
        "1 record refused by the collector (see its log)"
    );
    let stats = publisher.stats();
    assert_eq!((stats.delivered, stats.refused), (2, 1));
    let summary = collector.stop();
    assert_eq!((summary.stats.stored, summary.stats.rejected), (2, 1));
}

#[test]
fn a_publisher_with_no_collector_says_so() {
    let _watchdog = watchdog("acked no collector", Duration::from_secs(60));
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let publisher = Publisher::builder()
        .connect(format!("tcp://127.0.0.1:{port}"))
        .delivery(Delivery::Acked)
        .build()
        .unwrap();
    publisher.send_owned("u", Array1::<f64>::zeros(10)).unwrap();
    let err = publisher.close(Duration::from_millis(500)).unwrap_err();
    assert!(matches!(err, Error::NoPeer { messages: 1, .. }), "{err}");
}

#[test]
fn acked_delivery_takes_one_collector_to_connect_to() {
    let two = Publisher::builder()
        .connect("tcp://127.0.0.1:1")
        .connect("tcp://127.0.0.1:2")
        .delivery(Delivery::Acked)
        .build();
    assert!(matches!(
        two,
        Err(Error::Usage {
            what: "PublisherBuilder::delivery",
            ..
        })
    ));
    let bound = Publisher::builder()
        .bind("tcp://127.0.0.1:*")
        .delivery(Delivery::Acked)
        .build();
    assert!(matches!(bound, Err(Error::Usage { .. })));
    let sub = Collector::builder()
        .connect("tcp://127.0.0.1:1")
        .kind(ndbridge::SocketKind::Sub)
        .delivery(Delivery::Acked)
        .start();
    assert!(matches!(
        sub,
        Err(Error::Usage {
            what: "CollectorBuilder::delivery",
            ..
        })
    ));
}

#[test]
fn what_no_collector_acknowledged_stays_in_the_spool_for_the_next_publisher() {
    let _watchdog = watchdog("acked spool", Duration::from_secs(60));
    let spool = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let endpoint = format!("tcp://127.0.0.1:{}", restart_port());
    let spooling = |source: &str| {
        Publisher::builder()
            .connect(&endpoint)
            .source(source)
            .delivery(Delivery::Acked)
            .compression(Compression::Raw)
            .window_bytes(4096)
            .spool_dir(spool.path())
            .build()
            .unwrap()
    };

    // Nothing listens: the publisher takes every record all the same (without a spool it would
    // wait for a collector), and close keeps them in the spool.
    let first = spooling("first");
    for i in 0..50 {
        first
            .send_owned("u", Array1::<f64>::from_elem(100, f64::from(i)))
            .unwrap();
    }
    wait_until("every record spooled", Duration::from_secs(10), || {
        first.stats().sent == 50
    });
    let second_on_it = Publisher::builder()
        .connect(&endpoint)
        .delivery(Delivery::Acked)
        .spool_dir(spool.path())
        .build();
    assert!(
        matches!(&second_on_it, Err(Error::Spool { source, .. }) if source.to_string().contains("spool of another publisher")),
        "one publisher per spool"
    );
    let err = first.close(Duration::from_millis(300)).unwrap_err();
    let kept = Some(spool.path().to_owned());
    assert_eq!(unacknowledged(&err), Some((50, 0, kept.clone())), "{err}");
    assert!(err.to_string().contains("kept in the spool"), "{err}");
    drop(first);

    // A publisher that only found records in the spool, with still no collector, says they
    // stay there: the first one's 50 and its end.
    let idle = spooling("idle");
    let err = idle.close(Duration::from_millis(300)).unwrap_err();
    assert_eq!(unacknowledged(&err), Some((51, 0, kept)), "{err}");
    drop(idle);

    // A collector on the port, and the next publisher on the spool sends the first one's
    // records and its end (51 messages), then its own.
    let collector = Collector::builder()
        .bind(&endpoint)
        .delivery(Delivery::Acked)
        .sink(DiskSink::new(out.path()).unwrap())
        .start()
        .unwrap();
    let second = spooling("second");
    for i in 0..10 {
        second
            .send_owned("v", Array1::<f32>::from_elem(10, i as f32))
            .unwrap();
    }
    let stats = second.close(Duration::from_secs(20)).unwrap();
    assert_eq!((stats.sent, stats.delivered, stats.recovered), (10, 10, 51));
    let summary = collector.stop();
    assert_eq!(summary.stats.stored, 60);
    assert_eq!(summary.stats.sessions_not_ended, 0);
    assert_eq!(manifest_ends(out.path()).len(), 2);
    let mut first_seqs: Vec<u64> = manifest(out.path())
        .iter()
        .filter(|l| l["source"] == "first")
        .map(|l| l["seq"].as_u64().unwrap())
        .collect();
    first_seqs.sort_unstable();
    assert_eq!(first_seqs, (0..50).collect::<Vec<_>>());
    let left = std::fs::read_dir(spool.path()).unwrap().count();
    assert_eq!(left, 1, "only the lock file stays");
}

#[test]
fn a_spool_takes_acked_delivery() {
    let spool = tempfile::tempdir().unwrap();
    let fire_and_forget = Publisher::builder()
        .connect("tcp://127.0.0.1:1")
        .spool_dir(spool.path())
        .build();
    assert!(matches!(
        fire_and_forget,
        Err(Error::Usage {
            what: "PublisherBuilder::spool_dir",
            ..
        })
    ));
}

/// Sends `records` records of `len` float64 through a spool at `spool` (of `spool_bytes`, if
/// given) to an acked collector, and checks that every one is stored once and acknowledged, and
/// the session ended.
fn deliver_through_a_spool(
    spool: &std::path::Path,
    spool_bytes: Option<u64>,
    records: u64,
    len: usize,
) {
    let out = tempfile::tempdir().unwrap();
    let collector = acked_collector(out.path());
    let mut builder = Publisher::builder()
        .connect(collector.endpoint())
        .source("w")
        .delivery(Delivery::Acked)
        .compression(Compression::Raw)
        .spool_dir(spool);
    if let Some(bytes) = spool_bytes {
        builder = builder.spool_bytes(bytes);
    }
    let publisher = builder.build().unwrap();
    for i in 0..records {
        publisher
            .send_owned("u", Array1::<f64>::from_elem(len, i as f64))
            .unwrap();
    }
    let stats = publisher.close(Duration::from_secs(30)).unwrap();
    assert_eq!(
        (stats.sent, stats.delivered, stats.failed),
        (records, records, 0)
    );
    let summary = collector.stop();
    assert_eq!(summary.stats.stored, records);
    assert_eq!(summary.stats.sessions_not_ended, 0);
    let left: Vec<_> = std::fs::read_dir(spool).unwrap().collect();
    assert_eq!(left.len(), 1, "only the lock stays: {left:?}");
}

#[test]
fn a_small_spool_fills_and_empties_as_the_collector_acknowledges() {
    let _watchdog = watchdog("acked small spool", Duration::from_secs(60));
    // 500 records of 800 bytes through a spool of 64 KiB: sending waits for acknowledged
    // segments to go, again and again.
    let spool = tempfile::tempdir().unwrap();
    deliver_through_a_spool(spool.path(), Some(64 << 10), 500, 100);
}

#[test]
fn a_spool_on_a_full_disk_waits_for_room_and_loses_nothing() {
    let _watchdog = watchdog("acked spool on a full disk", Duration::from_secs(60));
    // 256 KiB of disk for 2 MB of records: writes fail again and again, and succeed once
    // acknowledged segments are gone.
    let spool = tempfile::tempdir().unwrap();
    let _tmpfs = Tmpfs::mount(spool.path(), 256 << 10);
    deliver_through_a_spool(spool.path(), None, 250, 1000);
}

#[test]
fn a_refusal_holds_across_a_restart_of_the_collector() {
    let _watchdog = watchdog("acked refusal across a restart", Duration::from_secs(60));
    let out = tempfile::tempdir().unwrap();
    let start = |bind: &str| {
        Collector::builder()
            .bind(bind)
            .delivery(Delivery::Acked)
            .limits(Limits {
                max_array_bytes: 4096,
                ..Limits::default()
            })
            .sink(DiskSink::new(out.path()).unwrap())
            .start()
            .unwrap()
    };
    let first = start("tcp://127.0.0.1:*");
    let endpoint = first.endpoint().to_owned();
    let publisher = Publisher::builder()
        .connect(&endpoint)
        .source("w")
        .delivery(Delivery::Acked)
        .compression(Compression::Raw)
        .build()
        .unwrap();
    let small = || Array1::<f64>::zeros(10);
    publisher.send_owned("small", small()).unwrap();
    publisher
        .send_owned("large", Array1::<f64>::zeros(10_000))
        .unwrap();
    publisher.send_owned("small", small()).unwrap();
    wait_until("the refusal acknowledged", Duration::from_secs(10), || {
        let stats = publisher.stats();
        (stats.delivered, stats.refused) == (2, 1)
    });
    first.stop();

    // The next run on the same store knows seq 1 was refused: it acknowledges past it.
    let second = start(&endpoint);
    publisher.send_owned("small", small()).unwrap();
    publisher.send_owned("small", small()).unwrap();
    let err = publisher.close(Duration::from_secs(20)).unwrap_err();
    assert_eq!(unacknowledged(&err), Some((0, 1, None)), "{err}");
    assert_eq!(second.stop().stats.stored, 2);
    let verify = std::process::Command::new(env!("CARGO_BIN_EXE_ndbridge"))
        .arg("verify")
        .arg(out.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&verify.stdout);
    assert!(
        stdout.contains("refused by the collector: 1 (array_too_large)"),
        "{stdout}"
    );
    assert_eq!(verify.status.code(), Some(1), "{stdout}");
}

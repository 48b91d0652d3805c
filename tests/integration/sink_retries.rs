//! A collector never discards what it accepted: a sink error that may pass (a full disk) stops
//! the collector from reading and is retried until the sink takes the record; a stopping
//! collector gives up after its drain timeout and counts what it could not store. With the
//! disk sink on a tmpfs that fills up and is then freed, every record is stored once.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ndarray::Array1;
use ndbridge::collector::{Collector, DiskSink, Received, Sink, SinkError};
use ndbridge::{Compression, Publisher};

use crate::common::{manifest, wait_until, watchdog, Tmpfs};

/// A sink whose disk is full (`ENOSPC`) while `full` is set; it counts what it took.
struct FullDisk {
    full: AtomicBool,
    taken: AtomicU64,
    refused: AtomicU64,
}

impl FullDisk {
    fn new(full: bool) -> Arc<FullDisk> {
        Arc::new(FullDisk {
            full: AtomicBool::new(full),
            taken: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        })
    }
}

impl Sink for FullDisk {
    fn name(&self) -> &str {
        "full"
    }

    fn write(&self, _message: &Received) -> Result<(), SinkError> {
        if self.full.load(Ordering::SeqCst) {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Err(SinkError::Io {
                path: "/full/disk".into(),
                source: std::io::Error::from_raw_os_error(28), // ENOSPC
            });
        }
        self.taken.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

fn publisher(endpoint: &str) -> Publisher {
    Publisher::builder()
        .connect(endpoint)
        .compression(Compression::Raw)
        .build()
        .unwrap()
}

#[test]
fn a_full_disk_stops_reading_and_every_record_is_stored_once_it_frees() {
    let _watchdog = watchdog("full disk, then freed", Duration::from_secs(120));
    let sink = FullDisk::new(true);
    let collector = Collector::builder()
        .bind("tcp://127.0.0.1:*")
        .workers(1)
        .max_inflight_bytes(1 << 20)
        .shared_sink(sink.clone())
        .start()
        .unwrap();
    let publisher = publisher(collector.endpoint());
    const RECORDS: u64 = 200;
    let sender = {
        let publisher = Arc::new(publisher);
        let p = Arc::clone(&publisher);
        let thread = std::thread::spawn(move || {
            for k in 0..RECORDS {
                p.send("u", &Array1::<f64>::from_elem(16 << 10, k as f64))
                    .unwrap();
            }
        });
        (publisher, thread)
    };
    wait_until("retries", Duration::from_secs(30), || {
        sink.refused.load(Ordering::SeqCst) >= 3
    });
    // While the disk is full the collector holds what it read and reads no more: far from all
    // 200 records (128 KiB each) have been received, and none was dropped.
    std::thread::sleep(Duration::from_millis(500));
    let stalled = collector.stats();
    assert!(
        stalled.received < RECORDS / 2,
        "reading went on while the sink was full: {stalled:?}"
    );
    assert_eq!(sink.taken.load(Ordering::SeqCst), 0);
    assert!(stalled.sink_errors.is_empty(), "{stalled:?}");
    sink.full.store(false, Ordering::SeqCst);
    let (publisher, thread) = sender;
    thread.join().unwrap();
    publisher.close(Duration::from_secs(30)).unwrap();
    wait_until("every record stored", Duration::from_secs(60), || {
        collector.stats().stored == RECORDS
    });
    let summary = collector.stop();
    assert_eq!(
        sink.taken.load(Ordering::SeqCst),
        RECORDS,
        "each record once"
    );
    assert!(summary.stats.sink_errors.is_empty(), "{:?}", summary.stats);
    assert!(
        summary.stats.sink_retries["full"] >= 3,
        "{:?}",
        summary.stats
    );
    assert_eq!(summary.stats.gaps, 0);
}

#[test]
fn a_stopping_collector_gives_up_after_its_drain_timeout_and_counts_the_records() {
    let _watchdog = watchdog("drain timeout", Duration::from_secs(120));
    let sink = FullDisk::new(true);
    let collector = Collector::builder()
        .bind("tcp://127.0.0.1:*")
        .workers(1)
        .drain_timeout(Duration::from_secs(1))
        .shared_sink(sink.clone())
        .start()
        .unwrap();
    let publisher = publisher(collector.endpoint());
    for k in 0..3 {
        publisher
            .send("u", &Array1::<f64>::from_elem(8, k as f64))
            .unwrap();
    }
    publisher.close(Duration::from_secs(10)).unwrap();
    wait_until("the three records read", Duration::from_secs(20), || {
        collector.stats().received >= 3
    });
    let stopping = Instant::now();
    let summary = collector.stop();
    let took = stopping.elapsed();
    // The drain timeout, and at most one more pause between retries (2 s).
    assert!(took < Duration::from_secs(5), "stopping took {took:?}");
    assert_eq!(summary.stats.sink_errors["full"], 3, "{:?}", summary.stats);
    assert_eq!(summary.stats.stored, 0);
    assert_eq!(sink.taken.load(Ordering::SeqCst), 0);
}

#[test]
fn the_disk_sink_on_a_tmpfs_that_fills_and_is_freed_stores_every_record() {
    let _watchdog = watchdog("tmpfs fills and is freed", Duration::from_secs(120));
    let dir = tempfile::tempdir().unwrap();
    let _tmpfs = Tmpfs::mount(dir.path(), 4 << 20);
    // Ballast that leaves room for a few records only; removed once the sink waits.
    let ballast = dir.path().join("ballast");
    std::fs::write(&ballast, vec![1u8; 3 << 20]).unwrap();
    let out = dir.path().join("run");
    let collector = Collector::builder()
        .bind("tcp://127.0.0.1:*")
        .workers(2)
        .sink(DiskSink::new(&out).unwrap())
        .start()
        .unwrap();
    let publisher = publisher(collector.endpoint());
    const RECORDS: u64 = 40;
    for k in 0..RECORDS {
        // 64 KiB each: 2.5 MiB in all, more than the room left.
        publisher
            .send("u", &Array1::<f64>::from_elem(8 << 10, k as f64))
            .unwrap();
    }
    wait_until("the disk sink waiting", Duration::from_secs(30), || {
        collector.stats().sink_retries.contains_key("disk")
    });
    std::fs::remove_file(&ballast).unwrap();
    publisher.close(Duration::from_secs(30)).unwrap();
    wait_until("every record stored", Duration::from_secs(60), || {
        collector.stats().stored == RECORDS
    });
    let summary = collector.stop();
    assert!(summary.stats.sink_errors.is_empty(), "{:?}", summary.stats);
    let lines = manifest(&out);
    assert_eq!(lines.len() as u64, RECORDS, "one manifest line per record");
    let mut seqs: Vec<u64> = lines.iter().map(|l| l["seq"].as_u64().unwrap()).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (0..RECORDS).collect::<Vec<_>>());
    for line in &lines {
        let path = out.join(line["path"].as_str().unwrap());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), (64 << 10) + 128);
    }
}

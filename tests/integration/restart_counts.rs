//! A collector restarted on the same output continues the counts of the sessions stored there:
//! records lost across the restart are gaps, not hidden behind a fresh start.

use std::time::Duration;

use bytes::Bytes;
use ndarray::Array1;
use ndbridge::collector::{Collector, DiskSink, Summary};
use ndbridge::ArrayBuffer;

use crate::common::{one_array_message, wait_until, watchdog};

/// Starts a collector on `out`, pushes the records `seqs` of source `w`, session `s`, stops it.
fn collect(out: &std::path::Path, seqs: &[u64]) -> Summary {
    let collector = Collector::builder()
        .bind("tcp://127.0.0.1:*")
        .sink(DiskSink::new(out).unwrap())
        .start()
        .unwrap();
    let context = zmq::Context::new();
    let push = context.socket(zmq::PUSH).unwrap();
    push.connect(collector.endpoint()).unwrap();
    for &seq in seqs {
        let array = ArrayBuffer::from_owned(Array1::<f64>::from_elem(4, seq as f64));
        let frames: Vec<Bytes> = one_array_message("u", "w", "s", seq, array);
        let frames: Vec<&[u8]> = frames.iter().map(|f| &f[..]).collect();
        push.send_multipart(frames, 0).unwrap();
    }
    wait_until("every record stored", Duration::from_secs(20), || {
        collector.stats().stored == seqs.len() as u64
    });
    collector.stop()
}

#[test]
fn a_restarted_collector_counts_the_records_lost_across_the_restart() {
    let _watchdog = watchdog("restart counts", Duration::from_secs(60));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let first = collect(&out, &(0..10).collect::<Vec<_>>());
    assert_eq!(first.stats.sources["w"].gaps, 0);
    // 10 and 11 never arrive; the session goes on after the restart.
    let second = collect(&out, &[12, 13, 14]);
    let w = &second.stats.sources["w"];
    assert_eq!(
        second.stats.received, 3,
        "records of the first run are not received again"
    );
    assert_eq!(w.messages, 3);
    assert_eq!(w.gaps, 2, "10 and 11: {w:?}");
    assert_eq!(w.duplicates, 0);
    // A record stored before and sent again is a duplicate; the gap is the second run's to
    // report, not counted again.
    let third = collect(&out, &[14, 15]);
    let w = &third.stats.sources["w"];
    assert_eq!((w.gaps, w.duplicates), (0, 1), "{w:?}");
}

//! A publisher's session ends with a message of its own: the collector then counts the records
//! lost at the end (and at the start) of the stream as gaps, and reports sessions that never
//! ended.

use std::time::Duration;

use bytes::Bytes;
use ndarray::Array1;
use ndbridge::collector::{Collector, DiskSink};
use ndbridge::wire::Header;
use ndbridge::{ArrayBuffer, Compression, Publisher};

use crate::common::{manifest, manifest_ends, one_array_message, wait_until, watchdog};

#[test]
fn records_lost_at_either_end_of_a_session_are_gaps_once_it_ends() {
    let _watchdog = watchdog("session end gaps", Duration::from_secs(60));
    let collector = Collector::builder()
        .bind("tcp://127.0.0.1:*")
        .start()
        .unwrap();
    let context = zmq::Context::new();
    let push = context.socket(zmq::PUSH).unwrap();
    push.connect(collector.endpoint()).unwrap();
    let send = |frames: Vec<Bytes>| {
        let frames: Vec<&[u8]> = frames.iter().map(|f| &f[..]).collect();
        push.send_multipart(frames, 0).unwrap();
    };
    let record = |session: &str, seq: u64| {
        let array = ArrayBuffer::from_owned(Array1::<f64>::from_elem(4, seq as f64));
        one_array_message("u", "w", session, seq, array)
    };
    // Session a: records 0 and 1 lost at the start, 5 to 7 at the end; it ends after 8.
    for seq in [2, 3, 4] {
        send(record("a", seq));
    }
    send(vec![Bytes::from(
        Header::end_of("w", "a", 8, 1.0).to_json(),
    )]);
    // Session b: two records, and no end.
    for seq in [0, 1] {
        send(record("b", seq));
    }
    wait_until("5 records and an end", Duration::from_secs(20), || {
        let stats = collector.stats();
        stats.stored == 5
            && stats
                .sources
                .get("w")
                .is_some_and(|w| w.sessions_ended == 1)
    });
    let stats = collector.stop().stats;
    let w = &stats.sources["w"];
    assert_eq!(stats.received, 6);
    assert_eq!((w.messages, stats.stored), (5, 5), "the end is no record");
    assert_eq!(w.gaps, 5, "0-1 and 5-7 of session a: {w:?}");
    assert_eq!((w.sessions, w.sessions_ended), (2, 1), "{w:?}");
    assert_eq!(stats.sessions_not_ended, 1, "session b");
}

#[test]
fn a_closing_publisher_ends_its_session_and_the_store_keeps_the_end() {
    let _watchdog = watchdog("session end stored", Duration::from_secs(60));
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
    for k in 0..10 {
        publisher
            .send("u", &Array1::<f64>::from_elem(4, k as f64))
            .unwrap();
    }
    let session = publisher.session().to_owned();
    let sent = publisher.close(Duration::from_secs(20)).unwrap();
    assert_eq!(
        (sent.sent, sent.delivered),
        (10, 10),
        "the end is no record"
    );
    wait_until("the session's end", Duration::from_secs(20), || {
        collector.stats().sessions_not_ended == 0 && collector.stats().stored == 10
    });
    let stats = collector.stop().stats;
    let w1 = &stats.sources["w1"];
    assert_eq!(
        (w1.messages, w1.gaps, w1.sessions_ended),
        (10, 0, 1),
        "{w1:?}"
    );
    assert_eq!(manifest(&out).len(), 10);
    let ends = manifest_ends(&out);
    assert_eq!(ends.len(), 1, "{ends:?}");
    assert_eq!(
        (&ends[0]["source"], &ends[0]["session"], &ends[0]["seq"]),
        (&"w1".into(), &session.as_str().into(), &10.into())
    );
    assert!(ends[0].get("path").is_none(), "{ends:?}");
}

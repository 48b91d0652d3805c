//! The publisher's contract: full-queue policies, sharing one publisher between threads, and
//! PUB publishers tapped by a SUB collector.

use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;
use common::{wait_until, NotingSink};

use ndarray::Array1;
use ndbridge::collector::Collector;
use ndbridge::{Compression, FullPolicy, Publisher, SocketKind};

fn slow_collector(delay: Duration) -> Collector {
    Collector::builder()
        .bind("tcp://127.0.0.1:*")
        .workers(1)
        .max_inflight_bytes(1 << 20)
        .socket_options(ndbridge::transport::SocketOptions {
            recv_hwm: 1,
            ..Default::default()
        })
        .sink(NotingSink::new(delay, |_| ()))
        .start()
        .unwrap()
}

fn small_queue_publisher(endpoint: &str, policy: FullPolicy) -> Publisher {
    Publisher::builder()
        .connect(endpoint)
        .compression(Compression::Raw)
        .queue_bytes(1 << 20)
        .on_full(policy)
        .socket_options(ndbridge::transport::SocketOptions {
            send_hwm: 1,
            ..Default::default()
        })
        .build()
        .unwrap()
}

#[test]
fn block_waits_for_room_and_loses_nothing() {
    let collector = slow_collector(Duration::from_millis(20));
    let publisher = small_queue_publisher(collector.endpoint(), FullPolicy::Block);
    let started = Instant::now();
    for _ in 0..40 {
        publisher
            .send_owned("block", Array1::<f64>::zeros(64 << 10))
            .unwrap();
    }
    // 40 x 512 KiB through a 20 ms-per-record collector: the sender had to wait.
    assert!(started.elapsed() > Duration::from_millis(200));
    let stats = publisher.close(Duration::from_secs(20)).unwrap();
    assert_eq!((stats.sent, stats.dropped), (40, 0));
    wait_until("all 40 stored", Duration::from_secs(20), || {
        collector.stats().stored == 40
    });
    assert_eq!(collector.stop().stats.gaps, 0);
}

#[test]
fn drop_returns_at_once_and_counts() {
    let collector = slow_collector(Duration::from_millis(50));
    let publisher = small_queue_publisher(collector.endpoint(), FullPolicy::Drop);
    let started = Instant::now();
    for _ in 0..100 {
        publisher
            .send_owned("drop", Array1::<f64>::zeros(64 << 10))
            .unwrap();
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "Drop must not wait for the collector"
    );
    let stats = publisher.close(Duration::from_secs(20)).unwrap();
    assert!(stats.dropped > 0, "{stats:?}");
    assert_eq!(stats.sent + stats.dropped, 100);
    wait_until("what was sent", Duration::from_secs(20), || {
        collector.stats().stored == stats.sent
    });
    collector.stop();
}

#[test]
fn one_publisher_shared_by_threads_numbers_every_message_once() {
    let collector = Collector::builder()
        .bind("tcp://127.0.0.1:*")
        .start()
        .unwrap();
    let publisher = Arc::new(
        Publisher::builder()
            .connect(collector.endpoint())
            .source("shared")
            .build()
            .unwrap(),
    );
    std::thread::scope(|s| {
        for t in 0..4 {
            let publisher = Arc::clone(&publisher);
            s.spawn(move || {
                for i in 0..250 {
                    let a = Array1::from(vec![(t * 1000 + i) as f32; 100]);
                    publisher.send(&format!("t{t}"), &a).unwrap();
                }
            });
        }
    });
    publisher.flush(Duration::from_secs(10)).unwrap();
    wait_until("1000 records", Duration::from_secs(20), || {
        collector.stats().stored == 1000
    });
    let summary = collector.stop();
    let shared = &summary.stats.sources["shared"];
    assert_eq!(
        (shared.messages, shared.gaps, shared.duplicates),
        (1000, 0, 0)
    );
}

#[test]
fn pub_publisher_to_sub_collector() {
    // The publisher binds a PUB socket (an ipc path in a fresh directory); the collector
    // connects with SUB and strips the topic frame.
    let dir = tempfile::tempdir().unwrap();
    let endpoint = format!("ipc://{}/pub.sock", dir.path().display());
    let publisher = Publisher::builder()
        .bind(&endpoint)
        .kind(SocketKind::Pub)
        .source("live")
        .build()
        .unwrap();
    let collector = Collector::builder()
        .connect(&endpoint)
        .kind(SocketKind::Sub)
        .start()
        .unwrap();
    // PUB/SUB joins late: publish until the subscription is live, then a counted burst.
    wait_until("the subscription", Duration::from_secs(20), || {
        publisher.send("probe", &Array1::<u8>::zeros(4)).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        collector.stats().stored > 0
    });
    let before = collector.stats().stored;
    for i in 0..50 {
        publisher
            .send("field", &Array1::from(vec![i as f64; 1000]))
            .unwrap();
    }
    publisher.flush(Duration::from_secs(10)).unwrap();
    wait_until("the burst", Duration::from_secs(20), || {
        collector.stats().stored >= before + 50
    });
    let summary = collector.stop();
    assert_eq!(
        summary.stats.rejected, 0,
        "topic frames are stripped before decoding"
    );
    assert_eq!(summary.stats.sources["live"].gaps, 0);
}

#[test]
fn close_says_so_when_no_collector_ever_took_a_message() {
    // A port that was bound a moment ago and is closed now: nothing listens there.
    let endpoint = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("tcp://{}", listener.local_addr().unwrap())
    };
    let publisher = Publisher::builder()
        .connect(endpoint.clone())
        .compression(Compression::Raw)
        .build()
        .unwrap();
    publisher
        .send_owned("u", Array1::<f64>::zeros(1000))
        .unwrap();
    let started = std::time::Instant::now();
    let err = publisher.close(Duration::from_millis(300)).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    match &err {
        ndbridge::Error::NoPeer {
            endpoints,
            messages,
        } => {
            assert_eq!((endpoints.as_str(), *messages), (endpoint.as_str(), 1));
        }
        other => panic!("expected NoPeer, got {other}"),
    }
    assert!(err.to_string().contains("is a collector listening there?"));
    let stats = publisher.stats();
    assert_eq!((stats.sent, stats.delivered), (1, 0));
}

#[test]
fn flush_and_close_wait_until_the_collector_has_every_message() {
    let collector = Collector::builder()
        .bind("tcp://127.0.0.1:*")
        .start()
        .unwrap();
    let publisher = Publisher::builder()
        .connect(collector.endpoint())
        .compression(Compression::Raw)
        .build()
        .unwrap();
    for i in 0..50 {
        publisher
            .send_owned("u", Array1::<f64>::from_elem(1 << 17, i as f64))
            .unwrap();
    }
    publisher.flush(Duration::from_secs(20)).unwrap();
    let stats = publisher.stats();
    assert_eq!((stats.sent, stats.delivered, stats.queued), (50, 50, 0));
    publisher.send_owned("u", Array1::<f64>::zeros(10)).unwrap();
    let stats = publisher.close(Duration::from_secs(20)).unwrap();
    assert_eq!((stats.sent, stats.delivered), (51, 51));
    let stored = || collector.stats().stored;
    let started = std::time::Instant::now();
    while stored() < 51 && started.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(collector.stop().stats.stored, 51);
}

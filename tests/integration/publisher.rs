//! The publisher's contract: full-queue policies, sharing one publisher between threads, PUB
//! publishers tapped by a SUB collector, and a publisher whose collector starts late or never
//! (it delivers once the collector binds; `close` keeps its timeout).

use std::sync::Arc;
use std::time::{Duration, Instant};

use ndarray::Array1;
use ndbridge::collector::Collector;
use ndbridge::{Compression, FullPolicy, Publisher, SocketKind};

use crate::common::{block, wait_until, watchdog, NotingSink, SlowSink};

fn slow_collector(delay: Duration) -> Collector {
    Collector::builder()
        .bind("tcp://127.0.0.1:*")
        .workers(1)
        .max_inflight_bytes(1 << 20)
        .socket_options(ndbridge::SocketOptions {
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
        .socket_options(ndbridge::SocketOptions {
            send_hwm: 1,
            ..Default::default()
        })
        .build()
        .unwrap()
}

#[test]
fn block_waits_for_room_and_loses_nothing() {
    let _watchdog = watchdog("block waits for room and loses", Duration::from_secs(120));
    let collector = slow_collector(Duration::from_millis(20));
    let publisher = small_queue_publisher(collector.endpoint(), FullPolicy::Block);
    let started = Instant::now();
    for _ in 0..80 {
        publisher
            .send_owned("block", Array1::<f64>::zeros(64 << 10))
            .unwrap();
    }
    // 80 x 512 KiB through a 20 ms-per-record collector: the buffers on the way (the queues,
    // and loopback's socket buffers of up to about 10 MB) hold some 30 of them, so the sender
    // waited for about 50 x 20 ms.
    let waited = started.elapsed();
    assert!(waited > Duration::from_millis(200), "{waited:?}");
    let stats = publisher.close(Duration::from_secs(20)).unwrap();
    assert_eq!((stats.sent, stats.dropped), (80, 0));
    wait_until("all 80 stored", Duration::from_secs(20), || {
        collector.stats().stored == 80
    });
    assert_eq!(collector.stop().stats.gaps, 0);
}

#[test]
fn drop_returns_at_once_and_counts() {
    let _watchdog = watchdog("drop returns at once and counts", Duration::from_secs(120));
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
    let _watchdog = watchdog(
        "one publisher shared by threads numbers",
        Duration::from_secs(120),
    );
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
    let _watchdog = watchdog("pub publisher to sub collector", Duration::from_secs(120));
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
    let _watchdog = watchdog("close says so when no collector", Duration::from_secs(120));
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
            curve: false,
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
    let _watchdog = watchdog("flush and close wait until the", Duration::from_secs(120));
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

#[test]
fn publisher_started_before_the_collector_delivers_once_it_binds() {
    let _watchdog = watchdog("collector late", Duration::from_secs(60));
    let dir = tempfile::tempdir().unwrap();
    let endpoint = format!("ipc://{}/late.sock", dir.path().display());
    let publisher = Publisher::builder()
        .connect(&endpoint)
        .source("early-0")
        .compression(Compression::Raw)
        .queue_bytes(256 << 10)
        .on_full(ndbridge::FullPolicy::Timeout(Duration::from_millis(20)))
        .socket_options(ndbridge::SocketOptions {
            send_hwm: 4,
            ..Default::default()
        })
        .build()
        .unwrap();
    // Nobody listens: ZeroMQ holds a few messages, the queue a few more, then sends time out.
    // A refused message gets no seq, so the next accepted one carries `accepted.len()`.
    let (mut accepted, mut refused) = (Vec::new(), 0);
    for i in 0..40u64 {
        match publisher.send_owned("early", block(0, accepted.len() as u64, 8192)) {
            Ok(()) => accepted.push(i),
            Err(ndbridge::Error::QueueFull { .. }) => refused += 1,
            Err(e) => panic!("send {i}: {e}"),
        }
    }
    assert!(refused > 0, "every send was accepted with nobody listening");
    assert!(accepted.len() >= 4, "{} accepted", accepted.len());
    let stats = publisher.stats();
    assert_eq!(stats.sent + stats.queued, accepted.len() as u64);

    let sink = Arc::new(SlowSink::new(Duration::ZERO));
    let collector = Collector::builder()
        .bind(&endpoint)
        .shared_sink(sink.clone())
        .start()
        .unwrap();
    // Once it listens, the same publisher goes on: retry what the full queue refuses.
    for i in 40..60u64 {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match publisher.send_owned("early", block(0, accepted.len() as u64, 8192)) {
                Ok(()) => break,
                Err(ndbridge::Error::QueueFull { .. }) if Instant::now() < deadline => {}
                Err(e) => panic!("send {i} after the collector started: {e}"),
            }
        }
        accepted.push(i);
    }
    publisher.flush(Duration::from_secs(20)).unwrap();
    let total = accepted.len();
    wait_until("every accepted message", Duration::from_secs(20), || {
        sink.count() >= total
    });
    let stats = publisher.close(Duration::from_secs(5)).unwrap();
    assert_eq!(
        (stats.sent, stats.dropped, stats.queued),
        (total as u64, 0, 0)
    );
    let summary = collector.stop();
    assert_eq!(summary.stats.stored, total as u64);
    assert_eq!(summary.stats.gaps, 0);
    assert_eq!(sink.bad.load(std::sync::atomic::Ordering::Relaxed), 0);
    // The messages that arrived are exactly the accepted ones, each with the seq it expected.
    let seen = sink.seen.lock().unwrap();
    assert_eq!(seen.len(), total);
    assert!((0..total as u64).all(|seq| seen.contains(&("early-0".to_owned(), seq))));
}

#[test]
fn a_publisher_that_sent_nothing_closes_at_once_without_a_collector() {
    let _watchdog = watchdog("nothing sent", Duration::from_secs(60));
    let dir = tempfile::tempdir().unwrap();
    let publisher = Publisher::builder()
        .connect(format!("ipc://{}/nobody.sock", dir.path().display()))
        .build()
        .unwrap();
    let started = Instant::now();
    let stats = publisher.close(Duration::from_secs(10)).unwrap();
    // No record, no session to end: nothing waits for a collector.
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!((stats.sent, stats.delivered), (0, 0));
}

#[test]
fn close_keeps_its_timeout_when_no_collector_ever_appears() {
    let _watchdog = watchdog("collector absent", Duration::from_secs(60));
    let dir = tempfile::tempdir().unwrap();
    let publisher = Publisher::builder()
        .connect(format!("ipc://{}/nobody.sock", dir.path().display()))
        .compression(Compression::Raw)
        .queue_bytes(256 << 10)
        .on_full(ndbridge::FullPolicy::Drop)
        .socket_options(ndbridge::SocketOptions {
            send_hwm: 4,
            ..Default::default()
        })
        .build()
        .unwrap();
    for i in 0..40u64 {
        publisher.send_owned("lost", block(0, i, 8192)).unwrap();
    }
    let before = publisher.stats();
    assert!(before.dropped > 0, "the queue never filled: {before:?}");
    assert!(before.queued > 0);
    let timeout = Duration::from_millis(300);
    let started = Instant::now();
    let result = publisher.close(timeout);
    let closed = started.elapsed();
    let after = publisher.stats();
    drop(publisher);
    let dropped = started.elapsed();
    // Sends block at most 100 ms (ZMQ_SNDTIMEO) before the deadline is checked again.
    let slack = Duration::from_millis(400);
    assert!(closed <= timeout + slack, "close took {closed:?}");
    assert!(
        dropped <= timeout + slack,
        "close and drop took {dropped:?}"
    );
    // Every message is accounted for once: handed to ZeroMQ, dropped, or failed.
    assert_eq!(after.queued, 0);
    assert_eq!(after.sent + after.dropped + after.failed, 40, "{after:?}");
    // Nothing was delivered, and close says that no peer ever took a message.
    assert_eq!(after.delivered, 0, "{after:?}");
    let abandoned = after.dropped - before.dropped;
    match result {
        Err(ndbridge::Error::NoPeer { messages, .. }) if after.sent > 0 => {
            assert_eq!(messages as u64, after.sent + abandoned, "{after:?}");
        }
        Err(ndbridge::Error::Timeout { pending, .. }) if after.sent == 0 => {
            assert_eq!(pending as u64, abandoned, "{after:?}");
        }
        other => panic!("close: {other:?} with {after:?}"),
    }
}

#[test]
fn a_socket_kind_the_publisher_cannot_send_on_is_a_usage_error() {
    for kind in [SocketKind::Pull, SocketKind::Sub] {
        match Publisher::builder().kind(kind).build() {
            Err(ndbridge::Error::Usage {
                what,
                expected,
                found,
            }) => {
                assert_eq!(what, "PublisherBuilder::kind");
                assert_eq!(expected, "SocketKind::Push or SocketKind::Pub");
                assert_eq!(found, format!("SocketKind::{kind:?}"));
            }
            Err(other) => panic!("{kind:?}: expected Error::Usage, got {other}"),
            Ok(_) => panic!("{kind:?}: a publisher was built"),
        }
    }
}

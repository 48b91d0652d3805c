//! The forward sink's subscribers, over tcp and ipc on ephemeral endpoints, with libzmq SUB
//! sockets (and raw connections for hostile peers): a subscriber that stops reading loses only
//! its own records and holds at most its byte limit (and the sink at most its own), subscribers
//! beyond the limit are refused
//! and counted, topics filter, heartbeats are answered, and peers that break the protocol are
//! disconnected and counted while the others keep receiving.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ndarray::Array1;
use ndbridge::collector::{Collector, ForwardSink, Received, Sink};
use ndbridge::{ArrayBuffer, Compression, Publisher};

use crate::common::{received, wait_until, watchdog};

/// A decoded record named `name` of one u8 array of `len` elements.
fn record(name: &str, seq: u64, len: usize) -> Received {
    let array = ArrayBuffer::from_owned(Array1::<u8>::from_elem(len, seq as u8));
    received(name, "w", "s", seq, array)
}

/// A SUB socket connected to `endpoint`, subscribed to `topic`, with a receive timeout.
fn subscriber(context: &zmq::Context, endpoint: &str, topic: &[u8]) -> zmq::Socket {
    let sub = context.socket(zmq::SUB).unwrap();
    sub.set_rcvtimeo(200).unwrap();
    sub.set_linger(0).unwrap();
    sub.set_subscribe(topic).unwrap();
    sub.connect(endpoint).unwrap();
    sub
}

/// A SUB socket that will never read: a small kernel buffer and a queue of one message, so
/// what is sent to it backs up into the sink quickly.
fn stalled_subscriber(context: &zmq::Context, endpoint: &str) -> zmq::Socket {
    let sub = context.socket(zmq::SUB).unwrap();
    sub.set_rcvbuf(64 << 10).unwrap();
    sub.set_rcvhwm(1).unwrap();
    sub.set_linger(0).unwrap();
    sub.set_subscribe(b"").unwrap();
    sub.connect(endpoint).unwrap();
    sub
}

/// Waits until `n` subscribers have completed their handshake and subscribed.
fn wait_for_subscribers(sink: &ForwardSink, n: usize) {
    wait_until(
        &format!("{n} subscribed subscribers"),
        Duration::from_secs(20),
        || {
            let subs = sink.subscribers();
            subs.len() == n && subs.iter().all(|s| s.ready && s.subscriptions > 0)
        },
    );
}

/// Receives one message within `timeout`, or `None`.
fn recv_within(sub: &zmq::Socket, timeout: Duration) -> Option<Vec<Vec<u8>>> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if let Ok(frames) = sub.recv_multipart(0) {
            return Some(frames);
        }
    }
    None
}

/// 2,048 records of 256 KiB through a collector to two subscribers, one of which never reads:
/// the other gets (nearly) all of them, and the sink never holds more than the bound its docs
/// state, `subscribers × max(limit, largest message)`, nor the stalled one more than its own.
#[test]
fn a_stalled_subscriber_costs_a_healthy_one_nothing() {
    let _watchdog = watchdog("stalled subscriber", Duration::from_secs(240));
    const RECORDS: u64 = 2048;
    const LEN: usize = 256 << 10;
    let context = zmq::Context::new();
    let sink = Arc::new(ForwardSink::listen("tcp://127.0.0.1:*").unwrap());
    let limit = ndbridge::collector::ForwardSink::DEFAULT_SUBSCRIBER_BYTES;
    let collector = Collector::builder()
        .bind("tcp://127.0.0.1:*")
        .workers(1)
        .shared_sink(sink.clone())
        .start()
        .unwrap();
    let _stalled = stalled_subscriber(&context, sink.endpoint());
    let healthy = subscriber(&context, sink.endpoint(), b"");
    wait_for_subscribers(&sink, 2);

    let publishing_done = Arc::new(AtomicBool::new(false));
    let reader = {
        let done = Arc::clone(&publishing_done);
        std::thread::spawn(move || {
            let mut seqs = std::collections::BTreeSet::new();
            let mut idle_since = Instant::now();
            while (seqs.len() as u64) < RECORDS {
                match healthy.recv_multipart(0) {
                    Ok(frames) => {
                        let record = ndbridge::wire::decode(
                            &frames[1..]
                                .iter()
                                .map(|f| bytes::Bytes::copy_from_slice(f))
                                .collect::<Vec<_>>(),
                            &ndbridge::wire::Limits::default(),
                        )
                        .unwrap();
                        assert_eq!(frames[0], b"big");
                        seqs.insert(record.header.seq);
                        idle_since = Instant::now();
                    }
                    Err(_)
                        if done.load(Ordering::Relaxed)
                            && idle_since.elapsed() > Duration::from_secs(3) =>
                    {
                        break
                    }
                    Err(_) => {}
                }
            }
            (seqs.len() as u64, healthy)
        })
    };
    // The most bytes the sink holds, sampled while records go through.
    let max_total = Arc::new(AtomicU64::new(0));
    let max_one = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (sink, done) = (sink.clone(), Arc::clone(&publishing_done));
        let (max_total, max_one) = (Arc::clone(&max_total), Arc::clone(&max_one));
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                max_total.fetch_max(sink.held_bytes(), Ordering::Relaxed);
                for s in sink.subscribers() {
                    max_one.fetch_max(s.held_bytes, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };

    let publisher = Publisher::builder()
        .connect(collector.endpoint())
        .compression(Compression::Raw)
        .build()
        .unwrap();
    let started = Instant::now();
    for _ in 0..RECORDS {
        publisher
            .send_owned("big", Array1::<u8>::from_elem(LEN, 1))
            .unwrap();
    }
    publisher.close(Duration::from_secs(60)).unwrap();
    wait_until(
        "every record through the sink",
        Duration::from_secs(60),
        || collector.stats().stored == RECORDS,
    );
    let elapsed = started.elapsed();
    publishing_done.store(true, Ordering::Relaxed);
    // The healthy subscriber stays connected until the collector stops.
    let (healthy_records, _healthy) = reader.join().unwrap();
    sampler.join().unwrap();

    let subs = sink.subscribers();
    let stalled = subs.iter().min_by_key(|s| s.sent).unwrap();
    let message = (LEN + 1024) as u64; // an array, its header and topic
    let max_total = max_total.load(Ordering::Relaxed);
    let max_one = max_one.load(Ordering::Relaxed);
    eprintln!(
        "healthy subscriber: {healthy_records} of {RECORDS} records; stalled: {} sent, {} \
         dropped, {} bytes held; most held: {max_total} bytes in all, {max_one} for one \
         subscriber (limit {limit}); {elapsed:?}",
        stalled.sent, stalled.dropped, stalled.held_bytes
    );
    assert!(
        healthy_records * 100 >= RECORDS * 95,
        "the healthy subscriber got {healthy_records} of {RECORDS} records"
    );
    // The stalled subscriber filled its queue, and no more.
    assert!(stalled.held_bytes >= limit / 2, "{stalled:?}");
    assert!(max_one <= limit.max(message), "{max_one} > {limit}");
    assert!(max_total <= 2 * limit.max(message), "{max_total}");
    assert_eq!(
        stalled.sent + stalled.dropped + stalled.queued,
        RECORDS,
        "{stalled:?}"
    );
    let summary = collector.stop();
    let report = &summary.sinks["forward"];
    assert_eq!(report["forwarded"], RECORDS);
    assert_eq!(report["subscribers"]["accepted"], 2);
    assert_eq!(report["subscribers"]["connected"], 0);
    // What was still queued when the sink closed is dropped too, for either subscriber (on a
    // busy machine the healthy one may fall behind its own limit for a moment); what was
    // queued at the snapshot above may still have gone out before the close.
    let last = report["per_subscriber"].as_array().unwrap();
    assert_eq!(last.len(), 2);
    let dropped: u64 = last.iter().map(|s| s["dropped"].as_u64().unwrap()).sum();
    assert_eq!(report["subscribers"]["dropped"], dropped);
    let at_most: u64 = subs.iter().map(|s| s.dropped + s.queued).sum();
    let at_least: u64 = subs.iter().map(|s| s.dropped).sum();
    assert!(
        (at_least..=at_most).contains(&dropped),
        "{dropped} of {subs:?}"
    );
    for s in last {
        let (sent, dropped) = (s["sent"].as_u64().unwrap(), s["dropped"].as_u64().unwrap());
        assert_eq!(sent + dropped, RECORDS, "{s}");
    }
    assert!(last
        .iter()
        .all(|s| s["queued"] == 0 && s["held_bytes"] == 0));
    assert!(last.iter().any(|s| s["sent"] == RECORDS), "{last:?}");
}

/// A subscriber that stops reading holds at most its limit; reading what was queued gives
/// every byte back, and every message was either written or counted as dropped for it.
#[test]
fn a_subscriber_holds_at_most_its_limit_and_gives_every_byte_back() {
    let _watchdog = watchdog("subscriber limit", Duration::from_secs(60));
    const LIMIT: u64 = 8 << 20;
    let context = zmq::Context::new();
    let sink = ForwardSink::listen("tcp://127.0.0.1:*")
        .unwrap()
        .subscriber_bytes(LIMIT);
    let sub = subscriber(&context, sink.endpoint(), b"");
    sub.set_rcvhwm(1).unwrap();
    wait_for_subscribers(&sink, 1);
    let mut written = 0u64;
    for seq in 0..64 {
        sink.write(&record("big", seq, 1 << 20)).unwrap();
        written += 1;
        let held = sink.subscribers()[0].held_bytes;
        assert!(held <= LIMIT, "{held} bytes held after record {seq}");
        assert!(sink.held_bytes() <= LIMIT);
    }
    let s = &sink.subscribers()[0];
    assert!(s.dropped > 0, "nothing dropped: {s:?}");
    assert_eq!(sink.dropped(), 0, "a drop for everyone: {s:?}");
    let mut received = 0u64;
    wait_until("every held frame released", Duration::from_secs(20), || {
        while sub.recv_multipart(0).is_ok() {
            received += 1;
        }
        sink.held_bytes() == 0
    });
    let s = &sink.subscribers()[0];
    assert_eq!((s.sent, s.queued, s.held_bytes), (received, 0, 0), "{s:?}");
    assert_eq!(s.sent + s.dropped, written, "{s:?}");
    sink.finish().unwrap();
}

/// Beyond `max_subscribers` connections, a new one is closed at once and counted; once one
/// leaves, a new subscriber gets in, and those connected keep receiving throughout.
#[test]
fn subscribers_beyond_the_limit_are_refused_and_counted() {
    let _watchdog = watchdog("subscriber limit", Duration::from_secs(60));
    let context = zmq::Context::new();
    let sink = ForwardSink::listen("tcp://127.0.0.1:*")
        .unwrap()
        .max_subscribers(2);
    let first = subscriber(&context, sink.endpoint(), b"");
    let second = subscriber(&context, sink.endpoint(), b"");
    wait_for_subscribers(&sink, 2);

    let address = sink.endpoint().strip_prefix("tcp://").unwrap();
    let mut third = TcpStream::connect(address).unwrap();
    third
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut greeting = [0u8; 64];
    match third.read(&mut greeting) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("the third connection was served: {other:?}"),
    }
    wait_until("the refusal counted", Duration::from_secs(10), || {
        sink.totals().refused == 1
    });
    sink.write(&record("x", 1, 8)).unwrap();
    for sub in [&first, &second] {
        let frames = recv_within(sub, Duration::from_secs(10)).expect("a record");
        assert_eq!(frames[0], b"x");
    }

    drop(first);
    wait_until("the first subscriber gone", Duration::from_secs(10), || {
        sink.totals().connected == 1
    });
    let replacement = subscriber(&context, sink.endpoint(), b"");
    wait_for_subscribers(&sink, 2);
    sink.write(&record("x", 2, 8)).unwrap();
    for sub in [&second, &replacement] {
        assert!(recv_within(sub, Duration::from_secs(10)).is_some());
    }
    let totals = sink.totals();
    assert_eq!(
        (
            totals.accepted,
            totals.refused,
            totals.connected,
            totals.failed
        ),
        (3, 1, 2, 0),
        "{totals:?}"
    );
    assert_eq!(sink.report()["subscribers"]["refused"], 1);
}

/// A subscriber gets only the topics it subscribed to (by prefix); its heartbeats are answered,
/// so libzmq keeps the connection (a PING without a PONG would make it reconnect).
#[test]
fn topics_filter_and_heartbeats_are_answered() {
    let _watchdog = watchdog("topics and heartbeats", Duration::from_secs(60));
    let context = zmq::Context::new();
    let sink = ForwardSink::listen("tcp://127.0.0.1:*").unwrap();
    let sub = context.socket(zmq::SUB).unwrap();
    sub.set_heartbeat_ivl(100).unwrap();
    sub.set_heartbeat_timeout(1000).unwrap();
    sub.set_rcvtimeo(200).unwrap();
    sub.set_subscribe(b"temp").unwrap();
    sub.connect(sink.endpoint()).unwrap();
    wait_for_subscribers(&sink, 1);
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(sink.totals().accepted, 1, "the subscriber reconnected");

    sink.write(&record("pressure", 1, 8)).unwrap();
    sink.write(&record("temperature", 2, 8)).unwrap();
    let frames = recv_within(&sub, Duration::from_secs(10)).expect("the matching record");
    assert_eq!(frames[0], b"temperature");
    assert!(recv_within(&sub, Duration::from_millis(500)).is_none());
    let s = &sink.subscribers()[0];
    assert_eq!((s.sent, s.dropped, s.subscriptions), (1, 0, 1), "{s:?}");
}

/// Writes a ZMTP 3.1 greeting and a READY command naming `socket_type`.
fn handshake(stream: &mut TcpStream, socket_type: &[u8]) {
    let mut greeting = [0u8; 64];
    greeting[0] = 0xFF;
    greeting[9] = 0x7F;
    greeting[10] = 3;
    greeting[11] = 1;
    greeting[12..16].copy_from_slice(b"NULL");
    stream.write_all(&greeting).unwrap();
    let mut body = b"\x05READY\x0bSocket-Type".to_vec();
    body.extend_from_slice(&(socket_type.len() as u32).to_be_bytes());
    body.extend_from_slice(socket_type);
    stream.write_all(&[0x04, body.len() as u8]).unwrap();
    stream.write_all(&body).unwrap();
}

/// Reads until the sink closes the connection; fails the test if it stays open for 10 s.
fn assert_closed(mut stream: TcpStream) {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
            Err(e) => panic!("the connection stayed open: {e}"),
        }
    }
}

/// Connections that speak something else, name another socket type, or send a frame larger
/// than a subscriber may are closed and counted, and the subscriber beside them keeps
/// receiving; a frame's announced size allocates nothing.
#[test]
fn peers_that_break_the_protocol_are_closed_and_counted() {
    let _watchdog = watchdog("hostile peers", Duration::from_secs(60));
    let context = zmq::Context::new();
    let sink = ForwardSink::listen("tcp://127.0.0.1:*").unwrap();
    let good = subscriber(&context, sink.endpoint(), b"");
    wait_for_subscribers(&sink, 1);
    let address = sink.endpoint().strip_prefix("tcp://").unwrap().to_owned();

    let mut http = TcpStream::connect(&address).unwrap();
    http.write_all(&[b'x'; 64]).unwrap();
    assert_closed(http);

    let mut push = TcpStream::connect(&address).unwrap();
    handshake(&mut push, b"PUSH");
    assert_closed(push);

    let mut huge = TcpStream::connect(&address).unwrap();
    handshake(&mut huge, b"SUB");
    let mut frame = vec![0x06u8]; // a long command
    frame.extend_from_slice(&(1u64 << 40).to_be_bytes());
    huge.write_all(&frame).unwrap();
    assert_closed(huge);

    wait_until("three failures counted", Duration::from_secs(10), || {
        sink.totals().failed == 3
    });
    sink.write(&record("x", 1, 8)).unwrap();
    assert!(recv_within(&good, Duration::from_secs(10)).is_some());
    let totals = sink.totals();
    assert_eq!((totals.connected, totals.failed), (1, 3), "{totals:?}");
}

/// A connection that sends nothing is closed when its handshake time runs out, counted, and
/// holds no subscriber's records up meanwhile.
#[test]
fn a_silent_connection_is_closed_after_the_handshake_time() {
    let _watchdog = watchdog("silent connection", Duration::from_secs(60));
    let context = zmq::Context::new();
    let sink = ForwardSink::listen("tcp://127.0.0.1:*").unwrap();
    let address = sink.endpoint().strip_prefix("tcp://").unwrap().to_owned();
    let silent = TcpStream::connect(&address).unwrap();
    let good = subscriber(&context, sink.endpoint(), b"");
    wait_until("the subscriber ready", Duration::from_secs(20), || {
        sink.subscribers().iter().any(|s| s.subscriptions > 0)
    });
    sink.write(&record("x", 1, 8)).unwrap();
    assert!(recv_within(&good, Duration::from_secs(2)).is_some());
    let start = Instant::now();
    assert_closed(silent);
    assert!(
        start.elapsed() < Duration::from_secs(8),
        "{:?}",
        start.elapsed()
    );
    wait_until("the failure counted", Duration::from_secs(5), || {
        sink.totals().failed == 1
    });
}

/// Over ipc: a socket file left by a previous run is replaced, records arrive, and the file
/// is removed when the sink finishes.
#[test]
fn ipc_endpoints_serve_subscribers_and_are_removed_at_finish() {
    let _watchdog = watchdog("ipc", Duration::from_secs(60));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("forward.sock");
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let endpoint = format!("ipc://{}", path.display());
    let context = zmq::Context::new();
    let sink = ForwardSink::listen(&endpoint).unwrap();
    assert_eq!(sink.endpoint(), endpoint);
    let sub = subscriber(&context, &endpoint, b"");
    wait_for_subscribers(&sink, 1);
    sink.write(&record("x", 1, 100_000)).unwrap();
    let frames = recv_within(&sub, Duration::from_secs(10)).expect("a record");
    assert_eq!(frames.len(), 3);
    assert_eq!(frames[2].len(), 100_000);
    sink.finish().unwrap();
    assert!(!path.exists());

    std::fs::write(&path, b"not a socket").unwrap();
    let err = ForwardSink::listen(&endpoint).err().unwrap();
    assert!(
        err.to_string().contains("found another kind of file"),
        "{err}"
    );
}

/// A subscriber that stops reading makes ZeroMQ keep the messages forwarded to it; the forward
/// sink holds at most its byte limit of them, drops (and counts) the rest, and the bytes come
/// back once the subscriber has read what was queued for it.
#[test]
fn a_subscriber_that_stops_reading_holds_at_most_the_forward_limit() {
    let _watchdog = watchdog("forward limit", Duration::from_secs(60));
    const LIMIT: u64 = 8 << 20;
    let context = zmq::Context::new();
    let sink = ForwardSink::listen("tcp://127.0.0.1:*")
        .unwrap()
        .max_bytes(LIMIT);
    let sub = context.socket(zmq::SUB).unwrap();
    sub.set_rcvhwm(1).unwrap();
    sub.set_rcvtimeo(100).unwrap();
    sub.set_subscribe(b"").unwrap();
    sub.connect(sink.endpoint()).unwrap();
    let record = |seq: u64, len: usize| {
        let a = ArrayBuffer::from_owned(Array1::<u8>::from_elem(len, seq as u8));
        received("big", "w", "s", seq, a)
    };
    // Forward small records until one arrives: the subscription is live.
    wait_until("a live subscription", Duration::from_secs(20), || {
        sink.write(&record(0, 16)).unwrap();
        sub.recv_multipart(0).is_ok()
    });
    // The subscriber stops reading; 64 records of 1 MiB go out.
    for seq in 1..=64 {
        sink.write(&record(seq, 1 << 20)).unwrap();
        assert!(
            sink.held_bytes() <= LIMIT,
            "{} bytes held",
            sink.held_bytes()
        );
    }
    assert!(sink.dropped() > 0, "nothing was dropped");
    // Reading what was queued gives every byte back.
    wait_until("every held frame released", Duration::from_secs(20), || {
        while sub.recv_multipart(0).is_ok() {}
        sink.held_bytes() == 0
    });
    sink.finish().unwrap();
}

/// A publisher's records reach a subscriber through the collector; the end of its session is
/// counted by the collector but not forwarded.
#[test]
fn a_sessions_end_is_not_forwarded() {
    let _watchdog = watchdog("end not forwarded", Duration::from_secs(60));
    let context = zmq::Context::new();
    let sink = Arc::new(ForwardSink::listen("tcp://127.0.0.1:*").unwrap());
    let sub = subscriber(&context, sink.endpoint(), b"");
    wait_for_subscribers(&sink, 1);
    let collector = Collector::builder()
        .bind("tcp://127.0.0.1:*")
        .shared_sink(sink.clone())
        .start()
        .unwrap();
    let publisher = Publisher::builder()
        .connect(collector.endpoint())
        .compression(Compression::Raw)
        .build()
        .unwrap();
    for k in 0..3 {
        publisher
            .send("u", &Array1::<f64>::from_elem(4, k as f64))
            .unwrap();
    }
    publisher.close(Duration::from_secs(20)).unwrap();
    wait_until("the session's end", Duration::from_secs(20), || {
        collector.stats().session_ends == 1
    });
    let mut topics = Vec::new();
    while let Some(frames) = recv_within(&sub, Duration::from_millis(500)) {
        topics.push(frames[0].clone());
    }
    assert_eq!(topics, [b"u".to_vec(), b"u".to_vec(), b"u".to_vec()]);
    collector.stop();
    assert_eq!(sink.subscribers()[0].sent, 3);
}

//! The Rust subscriber: records from a publisher bound as PUB and from a collector's forward
//! socket arrive decoded with their values, names filter exactly (not by prefix), the limits
//! refuse a message and the next one is received, a receive timeout is an error that says what
//! it waited for, and `ndbridge tail | head -n 1` ends quietly with exit 0.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ndarray::{Array1, Array2};
use ndbridge::collector::{Collector, ForwardSink};
use ndbridge::wire::{DecodeError, Limits, Record};
use ndbridge::{ArrayBuffer, Compression, Error, Publisher, SocketKind, Subscriber};

use crate::common::{wait_until, watchdog};

/// The field a test sends as its `k`-th record: every element tells `k` and its position.
fn field(k: u64) -> Array2<f64> {
    Array2::from_shape_fn((64, 48), |(i, j)| {
        (k * 10_000 + i as u64 * 48 + j as u64) as f64
    })
}

/// `k` from a record's attributes.
fn k_of(record: &Record) -> u64 {
    record
        .header
        .attrs
        .as_ref()
        .and_then(|a| a.get("k"))
        .and_then(|k| k.as_u64())
        .unwrap_or_else(|| panic!("record without attribute k: {:?}", record.header))
}

/// Sends `field(k)` as record `name`, array `u`, with attribute `k`.
fn send(publisher: &Publisher, name: &str, k: u64) {
    let attrs = serde_json::json!({ "k": k });
    publisher
        .send_record(
            name,
            [("u", ArrayBuffer::from_owned(field(k)))],
            attrs.as_object().cloned(),
        )
        .unwrap();
}

/// Checks that `record` holds `field(k)` under `u`.
fn assert_holds_field(record: &Record) {
    let k = k_of(record);
    let u = record
        .array("u")
        .expect("array u")
        .to_owned_array::<f64>()
        .unwrap();
    assert_eq!(u, field(k).into_dyn(), "record {k}");
}

/// A collector on an ephemeral port with a forward sink on another, and a publisher into it.
fn collector_with_forward(limits: Limits) -> (Collector, Arc<ForwardSink>, Publisher) {
    let sink = Arc::new(ForwardSink::listen("tcp://127.0.0.1:*").unwrap());
    let collector = Collector::builder()
        .bind("tcp://127.0.0.1:*")
        .limits(limits)
        .shared_sink(sink.clone())
        .start()
        .unwrap();
    let publisher = Publisher::builder()
        .connect(collector.endpoint())
        .source("w")
        .compression(Compression::Zstd {
            level: 1,
            shuffle: true,
        })
        .build()
        .unwrap();
    (collector, sink, publisher)
}

/// Waits until the forward sink has `n` subscribers that have subscribed.
fn wait_for_subscribers(sink: &ForwardSink, n: usize) {
    wait_until("subscribed subscribers", Duration::from_secs(20), || {
        let subs = sink.subscribers();
        subs.len() == n && subs.iter().all(|s| s.ready && s.subscriptions > 0)
    });
}

#[test]
fn a_pub_publisher_reaches_a_subscriber_with_its_values() {
    let _watchdog = watchdog("pub_publisher_to_subscriber", Duration::from_secs(60));
    let context = zmq::Context::new();
    let publisher = Publisher::builder()
        .kind(SocketKind::Pub)
        .bind("inproc://subscriber-test-pub")
        .context(context.clone())
        .compression(Compression::Zstd {
            level: 1,
            shuffle: true,
        })
        .build()
        .unwrap();
    let mut subscriber = Subscriber::builder()
        .connect("inproc://subscriber-test-pub")
        .context(context)
        .timeout(Duration::from_millis(50))
        .build()
        .unwrap();
    // A PUB socket drops what it sends before the subscription reaches it: send until records
    // come, then check that three in a row arrive in order with their values.
    let start = Instant::now();
    let mut received: Vec<Record> = Vec::new();
    let mut k = 0;
    while received.len() < 3 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "received {} records of {k} sent",
            received.len()
        );
        send(&publisher, "state", k);
        k += 1;
        match subscriber.recv() {
            Ok(record) => received.push(record),
            Err(Error::RecvTimeout { .. }) => {}
            Err(e) => panic!("receiving: {e}"),
        }
    }
    for record in &received {
        assert_eq!(record.header.name, "state");
        assert_eq!(record.arrays[0].meta().codec.as_str(), "zstd");
        assert_holds_field(record);
    }
    let ks: Vec<u64> = received.iter().map(k_of).collect();
    assert!(ks.windows(2).all(|w| w[0] < w[1]), "out of order: {ks:?}");
    publisher.close(Duration::from_secs(5)).unwrap();
}

#[test]
fn a_forward_socket_reaches_a_subscriber_by_exact_name() {
    let _watchdog = watchdog("forward_to_subscriber", Duration::from_secs(60));
    let (collector, sink, publisher) = collector_with_forward(Limits::default());
    let mut subscriber = Subscriber::builder()
        .connect(sink.endpoint())
        .name("temperature")
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    wait_for_subscribers(&sink, 1);
    // "temperature2" shares the subscribed prefix; it must not come out.
    for k in 0..20 {
        send(&publisher, "temperature2", 100 + k);
        send(&publisher, "pressure", 200 + k);
        send(&publisher, "temperature", k);
    }
    publisher.close(Duration::from_secs(10)).unwrap();
    // The collector decodes on several workers, so records may come out of order.
    let mut ks = Vec::new();
    for _ in 0..20 {
        let record = subscriber.recv().unwrap();
        assert_eq!(record.header.name, "temperature");
        assert_eq!(record.header.source, "w");
        let k = k_of(&record);
        assert_eq!(record.header.seq, 3 * k + 2);
        assert_holds_field(&record);
        ks.push(k);
    }
    ks.sort_unstable();
    assert_eq!(ks, (0..20).collect::<Vec<_>>());
    // Nothing else was forwarded to it.
    assert!(subscriber
        .recv_within(Duration::from_millis(300))
        .unwrap()
        .is_none());
    collector.stop();
}

#[test]
fn a_message_beyond_the_limits_is_an_error_and_the_next_one_comes() {
    let _watchdog = watchdog("subscriber_limits", Duration::from_secs(60));
    let (collector, sink, publisher) = collector_with_forward(Limits::default());
    let mut subscriber = Subscriber::builder()
        .connect(sink.endpoint())
        .limits(Limits::default().max_array_bytes(1000))
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    wait_for_subscribers(&sink, 1);
    send(&publisher, "large", 0);
    publisher
        .send_owned("small", Array1::<f64>::from_elem(4, 1.5))
        .unwrap();
    publisher.close(Duration::from_secs(10)).unwrap();
    // The collector's workers handle batches in parallel: the small record may come first.
    let (mut refused, mut small) = (0, 0);
    for _ in 0..2 {
        match subscriber.recv() {
            Err(Error::Decode(DecodeError::ArrayTooLarge {
                array,
                nbytes,
                limit,
            })) => {
                assert_eq!((array.as_str(), nbytes, limit), ("u", 64 * 48 * 8, 1000));
                refused += 1;
            }
            Ok(record) => {
                assert_eq!(record.header.name, "small");
                let values = record.arrays[0].to_owned_array::<f64>().unwrap();
                assert_eq!(values.as_slice().unwrap(), &[1.5; 4]);
                small += 1;
            }
            Err(other) => panic!("expected the large array refused, found {other:?}"),
        }
    }
    assert_eq!((refused, small), (1, 1));
    collector.stop();
}

#[test]
fn a_receive_timeout_is_an_error_naming_the_wait_and_the_endpoint() {
    let _watchdog = watchdog("subscriber_timeout", Duration::from_secs(30));
    let sink = ForwardSink::listen("tcp://127.0.0.1:*").unwrap();
    let mut subscriber = Subscriber::builder()
        .connect(sink.endpoint())
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let start = Instant::now();
    let err = subscriber.recv().expect_err("nothing was sent");
    let waited = start.elapsed();
    assert!(
        (Duration::from_millis(300)..Duration::from_secs(10)).contains(&waited),
        "returned after {waited:?}"
    );
    match &err {
        Error::RecvTimeout { waited, endpoints } => {
            assert_eq!(*waited, Duration::from_millis(300));
            assert_eq!(endpoints, sink.endpoint());
        }
        other => panic!("expected a receive timeout, found {other:?}"),
    }
    assert_eq!(
        err.to_string(),
        format!("no record within 300ms from {}", sink.endpoint())
    );
    // The short wait is no error.
    assert!(subscriber
        .recv_within(Duration::from_millis(50))
        .unwrap()
        .is_none());
}

/// `ndbridge tail --from FORWARD | head -n 1` as processes: head takes one line and exits, the
/// next line tail writes meets a broken pipe, and tail exits 0 without a word on stderr.
#[cfg(feature = "cli")]
#[test]
fn tail_into_head_ends_quietly_on_the_broken_pipe() {
    use std::io::Read;
    use std::process::{Command, Stdio};

    let _watchdog = watchdog("tail_into_head", Duration::from_secs(60));
    let (collector, sink, publisher) = collector_with_forward(Limits::default());
    let mut tail = Command::new(env!("CARGO_BIN_EXE_ndbridge"))
        .args(["tail", "--from", sink.endpoint()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let head = Command::new("head")
        .args(["-n", "1"])
        .stdin(tail.stdout.take().unwrap())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_subscribers(&sink, 1);
    // Records keep coming until tail has written past head's one line and exited.
    let start = Instant::now();
    let mut k = 0;
    let status = loop {
        if let Some(status) = tail.try_wait().unwrap() {
            break status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "tail still running after {k} records"
        );
        send(&publisher, "temperature", k);
        k += 1;
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    tail.stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let head_out = head.wait_with_output().unwrap();
    let line = String::from_utf8(head_out.stdout).unwrap();
    assert!(status.success(), "tail exited with {status}: {stderr}");
    assert!(stderr.is_empty(), "tail wrote to stderr: {stderr}");
    assert!(
        line.starts_with("temperature w seq="),
        "head printed {line:?}"
    );
    assert_eq!(line.lines().count(), 1, "head printed {line:?}");
    publisher.close(Duration::from_secs(10)).unwrap();
    collector.stop();
}

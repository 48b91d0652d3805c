//! The forward sink as a CURVE server, with `ndbridge::Subscriber`s on ephemeral tcp endpoints:
//! a subscriber whose key the allowlist holds receives records bit-exact; one with another key,
//! and one without CURVE, are refused, counted and get nothing; and a relay that keeps every
//! byte crossing the connection never sees a record's array in clear with CURVE, while it does
//! without (so the check can fail).

use std::sync::Arc;
use std::time::Duration;

use ndarray::Array1;
use ndbridge::collector::{ForwardSink, Received, Sink};
use ndbridge::{Allowlist, ArrayBuffer, KeyPair, Subscriber};

use crate::common::{received, wait_until, watchdog, CaptureRelay};

/// 64 bytes no encoder would make by chance: text, then a counting pattern.
fn pattern() -> Vec<u8> {
    let mut p = b"ndbridge/forward-curve/".to_vec();
    p.extend((0..64 - p.len() as u8).map(|i| i.wrapping_mul(37) ^ 0xA5));
    p
}

/// A record named `name` of one u8 array: the pattern 1024 times (64 KiB).
fn patterned(name: &str, seq: u64) -> (Received, Vec<u8>) {
    let data = pattern().repeat(1024);
    let array = ArrayBuffer::from_owned(Array1::from_vec(data.clone()));
    (received(name, "w", "s", seq, array), data)
}

/// A sink listening on loopback with CURVE, admitting `allowed` as "analysis".
fn curve_sink(allowed: &KeyPair) -> ForwardSink {
    let mut allow = Allowlist::new();
    allow.insert("analysis", *allowed.public()).unwrap();
    ForwardSink::listen_curve(
        "tcp://127.0.0.1:*",
        KeyPair::generate().unwrap(),
        Arc::new(allow),
    )
    .unwrap()
}

/// Waits until one subscriber has finished its handshake and subscribed.
fn wait_for_subscriber(sink: &ForwardSink) {
    wait_until("a subscribed subscriber", Duration::from_secs(20), || {
        let subs = sink.subscribers();
        subs.len() == 1 && subs[0].ready && subs[0].subscriptions > 0
    });
}

/// Writes `record` until `subscriber` receives one (a record written before its subscription
/// reached the sink is not sent to it); returns its array's bytes.
fn receive(sink: &ForwardSink, subscriber: &mut Subscriber, record: &Received) -> Vec<u8> {
    for _ in 0..50 {
        sink.write(record).unwrap();
        if let Some(got) = subscriber.recv_within(Duration::from_millis(200)).unwrap() {
            assert_eq!(got.header.name, record.record.header.name);
            return got.arrays[0].bytes().to_vec();
        }
    }
    panic!("no record within 50 tries");
}

#[test]
fn a_subscriber_whose_key_is_allowed_receives_records_bit_exact() {
    let _watchdog = watchdog("forward curve allowed", Duration::from_secs(60));
    let own = KeyPair::generate().unwrap();
    let sink = curve_sink(&own);
    let server = sink.public_key().expect("a CURVE sink has a public key");
    let mut subscriber = Subscriber::builder()
        .connect(sink.endpoint())
        .curve(server, own)
        .build()
        .unwrap();
    wait_for_subscriber(&sink);
    assert_eq!(sink.subscribers()[0].key_name.as_deref(), Some("analysis"));
    let (record, data) = patterned("field", 1);
    assert_eq!(receive(&sink, &mut subscriber, &record), data);
    let totals = sink.totals();
    assert_eq!(
        (totals.failed, totals.refused_keys, totals.refused_mechanism),
        (0, 0, 0)
    );
    assert_eq!(sink.report()["mechanism"], "CURVE");
}

#[test]
fn a_subscriber_with_an_unlisted_key_is_refused_counted_and_gets_nothing() {
    let _watchdog = watchdog("forward curve unlisted", Duration::from_secs(60));
    let sink = curve_sink(&KeyPair::generate().unwrap());
    let server = sink.public_key().unwrap();
    let mut stranger = Subscriber::builder()
        .connect(sink.endpoint())
        .curve(server, KeyPair::generate().unwrap())
        .build()
        .unwrap();
    wait_until("the key refused", Duration::from_secs(20), || {
        sink.totals().refused_keys > 0
    });
    gets_nothing(&sink, &mut stranger, "refused_keys");
}

/// Records written to `sink` never reach `refused`, no subscriber is connected or sent
/// anything, and the report counts the refusal under `counter`.
fn gets_nothing(sink: &ForwardSink, refused: &mut Subscriber, counter: &str) {
    for seq in 0..5 {
        sink.write(&patterned("field", seq).0).unwrap();
    }
    assert!(refused
        .recv_within(Duration::from_millis(500))
        .unwrap()
        .is_none());
    let totals = sink.totals();
    assert_eq!((totals.connected, totals.sent), (0, 0), "{totals:?}");
    let report = sink.report();
    assert!(report["subscribers"][counter].as_u64().unwrap() > 0);
}

#[test]
fn a_subscriber_without_curve_is_refused_counted_and_gets_nothing() {
    let _watchdog = watchdog("forward curve plain", Duration::from_secs(60));
    let sink = curve_sink(&KeyPair::generate().unwrap());
    let mut plain = Subscriber::builder()
        .connect(sink.endpoint())
        .build()
        .unwrap();
    wait_until(
        "the plain subscriber refused",
        Duration::from_secs(20),
        || sink.totals().refused_mechanism > 0,
    );
    gets_nothing(&sink, &mut plain, "refused_mechanism");
}

/// Sends a patterned record through a relay to a subscriber (with CURVE or without) and says
/// whether the pattern crossed the relay in clear; the subscriber must get the record either
/// way.
fn pattern_in_clear(curve: bool) -> bool {
    let own = KeyPair::generate().unwrap();
    let sink = if curve {
        curve_sink(&own)
    } else {
        ForwardSink::listen("tcp://127.0.0.1:*").unwrap()
    };
    let relay = CaptureRelay::start(sink.endpoint().strip_prefix("tcp://").unwrap());
    let mut builder = Subscriber::builder().connect(&relay.endpoint);
    if let Some(server) = sink.public_key() {
        builder = builder.curve(server, own);
    }
    let mut subscriber = builder.build().unwrap();
    wait_for_subscriber(&sink);
    let (record, data) = patterned("secret-field", 7);
    assert_eq!(receive(&sink, &mut subscriber, &record), data);
    relay.saw(&pattern())
}

#[test]
fn with_curve_a_record_never_crosses_the_network_in_clear() {
    let _watchdog = watchdog("forward curve on the wire", Duration::from_secs(60));
    assert!(
        pattern_in_clear(false),
        "without CURVE the relay must see the array (else this test cannot fail)"
    );
    assert!(
        !pattern_in_clear(true),
        "with CURVE the relay saw the array"
    );
}

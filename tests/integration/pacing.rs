//! The publisher's automatic codec on real sockets. On a network link: raw while the receiver
//! keeps up, zstd once the receiver (standing in for a slow link) makes sends block. On a local
//! link: always raw.

use std::sync::Arc;
use std::time::Duration;

use ndarray::Array1;
use ndbridge::collector::Collector;
use ndbridge::wire::Codec;
use ndbridge::SocketOptions;
use ndbridge::{Compression, Link, Publisher};

use crate::common::{wait_until, watchdog, NotingSink};

/// The codec of each of `messages` records sent over loopback, told to be `link`, to a receiver
/// that takes `delay` per record.
fn run(delay: Duration, messages: usize, link: Link) -> Vec<Codec> {
    // Takes `delay` per record and notes each record's codec.
    let sink = Arc::new(NotingSink::new(delay, |message| {
        message.record.arrays[0].meta().codec
    }));
    let small_queues = SocketOptions {
        send_hwm: 2,
        recv_hwm: 2,
        ..SocketOptions::default()
    };
    let collector = Collector::builder()
        .bind("tcp://127.0.0.1:*")
        .workers(1)
        .max_inflight_bytes(2 << 20)
        .socket_options(small_queues)
        .shared_sink(sink.clone())
        .start()
        .unwrap();
    let publisher = Publisher::builder()
        .connect(collector.endpoint())
        .compression(Compression::auto())
        .link(link)
        .queue_bytes(4 << 20)
        .socket_options(small_queues)
        .build()
        .unwrap();
    let field = Array1::from(crate::synth::smooth_field(250, 500, 0.0, 1));
    for _ in 0..messages {
        publisher.send("field", &field).unwrap();
    }
    publisher.close(Duration::from_secs(30)).unwrap();
    wait_until("every record", Duration::from_secs(30), || {
        sink.count() >= messages
    });
    collector.stop();
    sink.notes()
}

#[test]
fn fast_receiver_gets_raw_arrays() {
    let _watchdog = watchdog("fast receiver gets raw arrays", Duration::from_secs(180));
    let codecs = run(Duration::ZERO, 30, Link::Network);
    assert!(
        codecs.iter().all(|&c| c == Codec::Raw),
        "a receiver that keeps up must get raw arrays: {codecs:?}"
    );
}

#[test]
fn slow_receiver_gets_compressed_arrays() {
    let _watchdog = watchdog(
        "slow receiver gets compressed arrays",
        Duration::from_secs(180),
    );
    // 1 MB per 100 ms is 10 MB/s: far slower than zstd saves time at, even in a debug build on
    // a busy machine. The first messages fill the socket buffers without blocking, so the
    // publisher learns the link's speed only then.
    let codecs = run(Duration::from_millis(100), 60, Link::Network);
    assert_eq!(
        codecs.first(),
        Some(&Codec::Raw),
        "nothing is known at the start"
    );
    let late = &codecs[codecs.len() - 20..];
    let compressed = late.iter().filter(|&&c| c == Codec::Zstd).count();
    assert!(
        compressed >= 18,
        "once sends block, arrays must go compressed: {compressed} of the last 20 ({codecs:?})"
    );
}

#[test]
fn a_local_link_gets_raw_arrays_even_from_a_slow_receiver() {
    let _watchdog = watchdog("a local link gets raw arrays", Duration::from_secs(180));
    // Loopback is detected as local: sends that block mean a busy receiver, and compressing
    // would only add decompression to its work.
    let codecs = run(Duration::from_millis(20), 40, Link::Detect);
    assert!(
        codecs.iter().all(|&c| c == Codec::Raw),
        "a local link must get raw arrays: {codecs:?}"
    );
}

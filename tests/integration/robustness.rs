//! Hostile or broken input reaches the collector: a sink that panics, a message of a great many
//! frames, a frame over the size limit, a flood of sessions. The collector keeps going, counts
//! what happened, stores the valid messages around it and still stops cleanly.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ndarray::Array1;
use ndbridge::collector::{Collector, Received, Sink, SinkError};
use ndbridge::wire::{ArrayBuffer, Limits};

use crate::common::{wait_until, watchdog};

/// Frames of a valid one-array message: 16 float64 equal to `seq`.
fn message(name: &str, source: &str, session: &str, seq: u64) -> Vec<bytes::Bytes> {
    let array = ArrayBuffer::from_owned(Array1::from(vec![seq as f64; 16]));
    crate::common::one_array_message(name, source, session, seq, array)
}

fn push(ctx: &zmq::Context, endpoint: &str) -> zmq::Socket {
    let s = ctx.socket(zmq::PUSH).unwrap();
    s.set_sndtimeo(5000).unwrap();
    s.set_linger(5000).unwrap();
    s.connect(endpoint).unwrap();
    s
}

fn send(socket: &zmq::Socket, frames: &[bytes::Bytes]) {
    socket
        .send_multipart(frames.iter().map(|f| f.to_vec()), 0)
        .unwrap();
}

/// Panics on every record named `boom`.
#[derive(Default)]
struct Grumpy {
    taken: AtomicU64,
}

impl Sink for Grumpy {
    fn name(&self) -> &str {
        "grumpy"
    }
    fn write(&self, message: &Received) -> Result<(), SinkError> {
        assert_ne!(
            message.record.header.name, "boom",
            "this sink refuses booms"
        );
        self.taken.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

#[test]
fn a_panicking_sink_is_counted_and_the_collector_still_stops() {
    let _watchdog = watchdog("a panicking sink is counted and", Duration::from_secs(120));
    let sink = Arc::new(Grumpy::default());
    let collector = Collector::builder()
        .bind("tcp://127.0.0.1:*")
        .workers(2)
        .max_inflight_bytes(4096)
        .shared_sink(sink.clone())
        .start()
        .unwrap();
    let ctx = zmq::Context::new();
    let socket = push(&ctx, collector.endpoint());
    for seq in 0..40 {
        let name = if seq % 2 == 0 { "boom" } else { "fine" };
        send(&socket, &message(name, "s", "x", seq));
    }
    wait_until(
        "every record through the sinks",
        Duration::from_secs(20),
        || {
            let s = collector.stats();
            s.stored + s.sink_errors.values().sum::<u64>() == 40
        },
    );
    let summary = collector.stop();
    assert_eq!(summary.stats.stored, 20);
    assert_eq!(summary.stats.sink_errors["grumpy"], 20);
    assert_eq!(sink.taken.load(Ordering::Relaxed), 20);
    assert_eq!(
        summary.stats.inflight_bytes, 0,
        "every batch gave its bytes back"
    );
}

#[test]
fn a_message_of_many_frames_is_rejected_and_the_next_one_stored() {
    let _watchdog = watchdog("a message of many frames is", Duration::from_secs(120));
    let limits = Limits::default().max_arrays(8);
    let collector = Collector::builder()
        .bind("tcp://127.0.0.1:*")
        .limits(limits)
        .start()
        .unwrap();
    let ctx = zmq::Context::new();
    let socket = push(&ctx, collector.endpoint());
    let mut flood = message("flood", "s", "x", 0);
    flood.extend(std::iter::repeat_n(bytes::Bytes::new(), 10_000));
    send(&socket, &flood);
    send(&socket, &message("after", "s", "x", 1));
    wait_until(
        "the flood rejected and the next stored",
        Duration::from_secs(20),
        || {
            let s = collector.stats();
            s.rejected == 1 && s.stored == 1
        },
    );
    let summary = collector.stop();
    assert_eq!(summary.stats.errors["frame_count"], 1);
}

#[test]
fn a_frame_over_the_size_limit_drops_only_that_peer() {
    let _watchdog = watchdog("a frame over the size limit", Duration::from_secs(120));
    let limits = Limits::default()
        .max_array_bytes(1 << 20)
        .max_message_bytes(1 << 20)
        .max_arrays(2);
    let collector = Collector::builder()
        .bind("tcp://127.0.0.1:*")
        .limits(limits)
        .start()
        .unwrap();
    let ctx = zmq::Context::new();
    let hostile = push(&ctx, collector.endpoint());
    let mut huge = message("huge", "evil", "x", 0);
    huge[1] = bytes::Bytes::from(vec![0u8; 8 << 20]);
    send(&hostile, &huge);
    let honest = push(&ctx, collector.endpoint());
    send(&honest, &message("fine", "good", "y", 0));
    wait_until("the honest message", Duration::from_secs(20), || {
        collector.stats().stored == 1
    });
    let summary = collector.stop();
    assert_eq!(
        summary.stats.received, 1,
        "the oversized frame never reached ndbridge"
    );
}

#[test]
fn a_flood_of_sessions_and_seq_jumps_keeps_stats_bounded() {
    let _watchdog = watchdog("a flood of sessions and seq", Duration::from_secs(120));
    let collector = Collector::builder()
        .bind("tcp://127.0.0.1:*")
        .start()
        .unwrap();
    let ctx = zmq::Context::new();
    let socket = push(&ctx, collector.endpoint());
    let sessions = 3000u64;
    for s in 0..sessions {
        let session = format!("session-{s}");
        send(&socket, &message("m", "flooder", &session, 0));
        send(&socket, &message("m", "flooder", &session, 1 << 40));
    }
    send(&socket, &message("m", "good", "g", 0));
    wait_until("every message", Duration::from_secs(20), || {
        collector.stats().stored == 2 * sessions + 1
    });
    let started = Instant::now();
    let snapshot = collector.stats();
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "a snapshot must stay cheap: {:?}",
        started.elapsed()
    );
    assert_eq!(snapshot.sources["good"].gaps, 0);
    assert!(snapshot.sources["flooder"].gaps >= (1 << 40) - 1);
    collector.stop();
}

#[test]
fn peers_beyond_the_limit_are_refused_until_one_leaves() {
    let _watchdog = watchdog(
        "peers beyond the limit are refused",
        Duration::from_secs(120),
    );
    let collector = Collector::builder()
        .bind("tcp://127.0.0.1:*")
        .max_peers(2)
        .start()
        .unwrap();
    let ctx = zmq::Context::new();
    let first = push(&ctx, collector.endpoint());
    let second = push(&ctx, collector.endpoint());
    send(&first, &message("m", "first", "a", 0));
    send(&second, &message("m", "second", "b", 0));
    wait_until("two peers stored", Duration::from_secs(20), || {
        let s = collector.stats();
        s.stored == 2 && s.peers == 2
    });
    let third = push(&ctx, collector.endpoint());
    send(&third, &message("m", "third", "c", 0));
    wait_until("the third peer refused", Duration::from_secs(20), || {
        collector.stats().refused_peers >= 1
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        collector.stats().stored,
        2,
        "a refused peer's message waits"
    );
    first.set_linger(0).unwrap();
    drop(first);
    // ZeroMQ reconnects the third peer; with the first gone, it is let in.
    wait_until("the third peer stored", Duration::from_secs(20), || {
        collector.stats().stored == 3
    });
    let summary = collector.stop();
    assert!(summary.stats.sources.contains_key("third"));
    drop((second, third));
}

#[test]
fn two_collectors_can_share_a_context() {
    let _watchdog = watchdog(
        "two collectors can share a context",
        Duration::from_secs(120),
    );
    let ctx = zmq::Context::new();
    let first = Collector::builder()
        .bind("tcp://127.0.0.1:*")
        .context(ctx.clone())
        .start()
        .unwrap();
    // The second finds the context's ZAP handler taken: it starts, counting peers only.
    let second = Collector::builder()
        .bind("tcp://127.0.0.1:*")
        .context(ctx.clone())
        .max_peers(1)
        .start()
        .unwrap();
    let (a, b) = (push(&ctx, first.endpoint()), push(&ctx, second.endpoint()));
    let c = push(&ctx, second.endpoint());
    send(&a, &message("m", "a", "x", 0));
    send(&b, &message("m", "b", "y", 0));
    send(&c, &message("m", "c", "z", 0));
    wait_until("every message stored", Duration::from_secs(20), || {
        first.stats().stored == 1 && second.stats().stored == 2
    });
    assert_eq!(second.stats().refused_peers, 0);
    first.stop();
    second.stop();
    drop((a, b, c));
}

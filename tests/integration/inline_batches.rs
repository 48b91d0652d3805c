//! Where the collector handles a batch: cheap records on the receiver thread itself, slow ones
//! (or all, with a zero inline cost) on the decode workers.

use std::sync::Arc;
use std::time::Duration;

use ndarray::Array1;
use ndbridge::collector::Collector;
use ndbridge::{Compression, Publisher};

use crate::common::{wait_until, watchdog, NotingSink};

/// Sends `messages` small records through a collector whose sink takes `delay` per record (and
/// whose receiver handles records that cost up to `inline_cost`), and returns the names of the
/// threads that handled them.
fn handling_threads(delay: Duration, inline_cost: Duration, messages: usize) -> Vec<String> {
    let sink = Arc::new(NotingSink::new(delay, |_| {
        std::thread::current().name().unwrap_or("?").to_owned()
    }));
    let collector = Collector::builder()
        .bind("tcp://127.0.0.1:*")
        .workers(2)
        .inline_cost(inline_cost)
        .shared_sink(sink.clone())
        .start()
        .unwrap();
    let publisher = Publisher::builder()
        .connect(collector.endpoint())
        .compression(Compression::Raw)
        .build()
        .unwrap();
    for _ in 0..messages {
        publisher
            .send_owned("small", Array1::<f64>::zeros(100))
            .unwrap();
    }
    publisher.flush(Duration::from_secs(10)).unwrap();
    wait_until("every record", Duration::from_secs(30), || {
        collector.stats().stored == messages as u64
    });
    collector.stop();
    sink.notes()
}

#[test]
fn cheap_records_stay_on_the_receiver_and_slow_ones_go_to_the_workers() {
    let _watchdog = watchdog(
        "cheap records stay on the receiver",
        Duration::from_secs(180),
    );
    // Cheap records (here: under a limit that unoptimised test builds meet too): once their
    // cost is measured, the receiver handles batches itself instead of waking a worker.
    // The cost starts high (unmeasured) and falls as batches are measured: enough records that
    // it falls even when the publisher sends them in few, large batches.
    let fast = handling_threads(Duration::ZERO, Duration::from_millis(1), 20_000);
    let on_receiver = fast.iter().filter(|t| *t == "ndbridge-receiver").count();
    assert!(
        on_receiver > 0,
        "no record handled on the receiver, {} on the workers",
        fast.len()
    );
    // With a zero limit, every batch goes to the workers.
    let off = handling_threads(Duration::ZERO, Duration::ZERO, 200);
    assert!(
        off.iter().all(|t| t.starts_with("ndbridge-decode-")),
        "{off:?}"
    );
    // A sink that takes 5 ms per record, under the default limit: batches go to the workers,
    // so the receiver goes on reading the socket.
    let slow = handling_threads(Duration::from_millis(5), Duration::from_micros(10), 60);
    let on_workers = slow
        .iter()
        .filter(|t| t.starts_with("ndbridge-decode-"))
        .count();
    assert!(
        on_workers >= slow.len() / 2,
        "slow records mostly on the receiver: {slow:?}"
    );
}

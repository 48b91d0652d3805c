//! Measures the memory behind two bounds that ndbridge documents: what a queued message takes
//! in a publisher besides its arrays (what `queue_bytes` counts per message), for one array and
//! for two, and what a header cache takes when a peer fills it with the largest headers it
//! remembers.
//!
//! `cargo run --release --example memory_bounds` (Linux: reads `VmRSS` from `/proc/self/status`).

use std::time::Duration;

use ndarray::Array1;
use ndbridge::wire::{HeaderCache, Limits, MAX_TEMPLATE_BYTES};
use ndbridge::{ArrayBuffer, Compression, Publisher};

fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("Linux /proc");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS line");
    kib * 1024
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Nobody listens: the publisher thread holds one message and the rest stays queued.
    let endpoint = format!("ipc:///tmp/ndbridge-memory-bounds-{}", std::process::id());
    let publisher = Publisher::builder()
        .connect(endpoint)
        .compression(Compression::Raw)
        .queue_bytes(1 << 40)
        .build()?;
    std::thread::sleep(Duration::from_millis(200));
    let messages = 200_000u64;
    let before = resident_bytes();
    for _ in 0..messages {
        publisher.send_owned("payload", Array1::<f64>::zeros(100))?;
    }
    let per_message = (resident_bytes() - before) / messages;
    println!(
        "queued message of one 800-byte array: {per_message} bytes resident, {} besides the array",
        per_message.saturating_sub(800)
    );
    // Two arrays: the list of arrays no longer fits inline.
    let before = resident_bytes();
    for _ in 0..messages {
        let u = ArrayBuffer::from_owned(Array1::<f64>::zeros(50));
        let v = ArrayBuffer::from_owned(Array1::<f64>::zeros(50));
        publisher.send_record("state", [("u", u), ("v", v)], None)?;
    }
    let per_message = (resident_bytes() - before) / messages;
    println!(
        "queued message of two 400-byte arrays: {per_message} bytes resident, {} besides the arrays",
        per_message.saturating_sub(800)
    );

    // 256 canonical headers of the largest size a cache keeps, with attributes of many small
    // values (the costliest to hold parsed), each under its own record name.
    let mut cache = HeaderCache::new(Limits::default());
    let before = resident_bytes();
    let mut kept = 0;
    for i in 0..256 {
        let head = format!(
            r#"{{"v":1,"name":"r{i}","source":"w","session":"s","seq":0,"time":0.0,"arrays":[],"attrs":{{"a":["#
        );
        let zeros = (MAX_TEMPLATE_BYTES - head.len() - 4) / 2;
        let json = format!("{head}{}0]}}}}", "0,".repeat(zeros));
        cache.parse(json.as_bytes())?;
        // Read again: a hit shows it was kept.
        let hits = cache.hits();
        cache.parse(json.as_bytes())?;
        kept += u64::from(cache.hits() > hits);
    }
    println!(
        "header cache with {kept} headers of up to {MAX_TEMPLATE_BYTES} bytes: {:.1} MiB resident",
        (resident_bytes() - before) as f64 / (1u64 << 20) as f64
    );
    std::process::exit(0) // the publisher would wait for its linger on a peer that never comes
}

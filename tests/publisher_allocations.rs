//! The caller's side of `Publisher::send_record` allocates nothing per message for a record of
//! one array with short names and a shape of at most four dimensions: what the caller allocates,
//! the publisher thread frees, and that cross-thread traffic is what glibc's malloc handles worst.
//! Only the queue's channel allocates, one block per 31 messages.
//!
//! A counting allocator in this test binary counts the allocations of the calling thread. It is
//! a binary of its own, outside `tests/integration/`: a global allocator serves every test of
//! its binary, and this one would count (and slow) the allocations of every other test.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::Duration;

use ndarray::{Array1, Array3};
use ndbridge::{ArrayBuffer, Compression, Publisher};

#[path = "common/watchdog.rs"]
mod watchdog;
use watchdog::watchdog;

struct CountingAllocator;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: every call is passed on to the system allocator unchanged; the counter is a
// thread-local `Cell` with a const initializer, which never allocates.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: the caller's contract for `alloc` is passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: the caller's contract for `realloc` is passed on as is.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

#[test]
fn queueing_a_shared_array_allocates_only_channel_blocks() {
    let _watchdog = watchdog("queueing a shared array", Duration::from_secs(60));
    // Nobody listens: everything stays queued, and the queue is large enough for all of it.
    let endpoint = format!("ipc:///tmp/ndbridge-alloc-test-{}.sock", std::process::id());
    let publisher = Publisher::builder()
        .connect(endpoint)
        .compression(Compression::Raw)
        .queue_bytes(1 << 30)
        .build()
        .expect("publisher");
    let flat = ArrayBuffer::from_owned(Array1::<f64>::zeros(100));
    let cube = ArrayBuffer::from_owned(Array3::<f32>::zeros((4, 5, 6)));
    // Warm up: thread-locals and the first channel block.
    for _ in 0..40 {
        publisher
            .send_record("field", [("field", flat.clone())], None)
            .expect("queued");
    }
    let messages = 31 * 20;
    let before = allocations();
    assert_eq!("a-name-of-exactly-24-byt".len(), 24);
    for i in 0..messages {
        let (name, array) = if i % 2 == 0 {
            ("temperature", &flat)
        } else {
            ("a-name-of-exactly-24-byt", &cube)
        };
        publisher
            .send_record(name, [(name, array.clone())], None)
            .expect("queued");
    }
    let during = allocations() - before;
    // One channel block per 31 messages (and the one the send loop might leave half used).
    assert!(
        during <= messages / 31 + 1,
        "{during} allocations for {messages} queued messages"
    );

    // A longer name is still accepted; it allocates.
    let long = "n".repeat(25);
    let before = allocations();
    publisher
        .send_record(&long, [(&long, flat.clone())], None)
        .expect("queued");
    assert!(allocations() > before);
    // Nobody will receive what is queued: drop it.
    let _ = publisher.close(Duration::ZERO);
}

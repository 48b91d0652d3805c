//! The no-copy claims, proven with a counting allocator and pointer equality: an owned array
//! becomes a raw frame without its buffer being copied, and a raw frame decodes to a view that
//! borrows it.
//!
//! A binary of its own, outside `tests/integration/`: its counting allocator counts the bytes
//! every thread of the binary allocates, so another test running beside it would break the
//! count. It opens no socket.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use ndarray::Array2;
use ndbridge::wire::{decode, encode, ArrayBuffer, Compression, Envelope, Limits};

/// Counts the bytes allocated by this test binary.
struct CountingAlloc;

static ALLOCATED: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; the counter only observes.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATED.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, which we pass on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout` in `alloc` above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

fn allocated_during<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let before = ALLOCATED.load(Ordering::SeqCst);
    let result = f();
    (result, ALLOCATED.load(Ordering::SeqCst) - before)
}

const ARRAY_BYTES: usize = 8 << 20;

#[test]
fn owned_array_is_sent_and_received_without_copying_its_buffer() {
    // The tests of this binary run one at a time in this single test, so the counter sees only
    // this work.
    let array = Array2::<f64>::from_shape_fn((1024, 1024), |(i, j)| (i * j) as f64);
    let array_ptr = array.as_ptr() as *const u8;
    let envelope = Envelope {
        name: "u".into(),
        source: "w".into(),
        session: "s".into(),
        seq: 0,
        time: 0.0,
        attrs: None,
    };

    let (msg, encode_bytes) = allocated_during(|| {
        let buffer = ArrayBuffer::from_owned(array);
        encode(envelope, vec![("u".into(), buffer)], Compression::Raw).unwrap()
    });
    assert_eq!(
        msg.frames[1].as_ptr(),
        array_ptr,
        "the frame is the array's own memory"
    );
    assert!(
        encode_bytes < 16 << 10,
        "encoding allocated {encode_bytes} bytes for an {ARRAY_BYTES}-byte array"
    );

    let (record, decode_bytes) =
        allocated_during(|| decode(&msg.frames, &Limits::default()).unwrap());
    let (view, view_bytes) = allocated_during(|| record.arrays[0].borrow::<f64>().unwrap());
    assert_eq!(
        view.as_ptr() as *const u8,
        array_ptr,
        "the view borrows the frame"
    );
    assert!(
        decode_bytes + view_bytes < 16 << 10,
        "decoding allocated {decode_bytes} + {view_bytes} bytes"
    );
    assert_eq!(view[[1023, 1023]], (1023 * 1023) as f64);

    // A view of a borrowed array is copied exactly once.
    let borrowed = Array2::<f64>::zeros((1024, 1024));
    let (buffer, copy_bytes) = allocated_during(|| ArrayBuffer::from_array(&borrowed));
    assert_ne!(buffer.data().as_ptr(), borrowed.as_ptr() as *const u8);
    assert!((ARRAY_BYTES..ARRAY_BYTES + (16 << 10)).contains(&copy_bytes));
}

//! Helpers shared by the integration tests: the golden `.frames` file format, logical-order
//! byte dumps of decoded arrays, raw one-array messages, waiting for a condition with a
//! timeout, a slow sink that notes what it sees, and the length of a zstd frame header.
#![allow(dead_code)]

pub mod block_frames;

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ndbridge::collector::{Received, Sink, SinkError};
use ndbridge::wire::{encode, ArrayBuffer, Compression, DecodedArray, DynArray, Envelope};

/// Reads a `.frames` file: frames, each an 8-byte little-endian length and its bytes.
pub fn read_frames(path: &Path) -> Vec<Bytes> {
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut frames = Vec::new();
    let mut rest = &data[..];
    while !rest.is_empty() {
        let (len, tail) = rest.split_at(8);
        let len = u64::from_le_bytes(len.try_into().unwrap()) as usize;
        frames.push(Bytes::copy_from_slice(&tail[..len]));
        rest = &tail[len..];
    }
    frames
}

/// The array's elements in C order, little-endian: the layout of the golden `.bin` files.
pub fn c_order_le_bytes(array: &DecodedArray) -> Vec<u8> {
    const { assert!(cfg!(target_endian = "little")) };
    macro_rules! dump {
        ($a:expr) => {
            $a.iter()
                .flat_map(|x| bytemuck::bytes_of(x).to_vec())
                .collect()
        };
    }
    match array.to_dyn().unwrap() {
        DynArray::Bool(a) => dump!(a),
        DynArray::I8(a) => dump!(a),
        DynArray::I16(a) => dump!(a),
        DynArray::I32(a) => dump!(a),
        DynArray::I64(a) => dump!(a),
        DynArray::U8(a) => dump!(a),
        DynArray::U16(a) => dump!(a),
        DynArray::U32(a) => dump!(a),
        DynArray::U64(a) => dump!(a),
        DynArray::F16(a) => dump!(a),
        DynArray::F32(a) => dump!(a),
        DynArray::F64(a) => dump!(a),
        DynArray::C64(a) => dump!(a),
        DynArray::C128(a) => dump!(a),
    }
}

/// Polls `done` every 10 ms until it holds; fails the test after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A sink that takes `delay` per record (a collector that falls behind) and notes
/// `note(record)` for each.
pub struct NotingSink<T> {
    delay: Duration,
    note: fn(&Received) -> T,
    notes: Mutex<Vec<T>>,
}

impl<T: Clone> NotingSink<T> {
    pub fn new(delay: Duration, note: fn(&Received) -> T) -> Self {
        NotingSink {
            delay,
            note,
            notes: Mutex::new(Vec::new()),
        }
    }

    /// What was noted so far, in order.
    pub fn notes(&self) -> Vec<T> {
        self.notes.lock().unwrap().clone()
    }

    /// How many records went through.
    pub fn count(&self) -> usize {
        self.notes.lock().unwrap().len()
    }
}

impl<T: Send> Sink for NotingSink<T> {
    fn name(&self) -> &str {
        "noting"
    }

    fn write(&self, message: &Received) -> Result<(), SinkError> {
        std::thread::sleep(self.delay);
        let note = (self.note)(message);
        self.notes.lock().unwrap().push(note);
        Ok(())
    }
}

/// The length of a zstd frame's header (RFC 8878 3.1.1.1: magic number, descriptor, window
/// descriptor, dictionary id, content size): where its first block header starts.
pub fn zstd_frame_header_len(frame: &[u8]) -> usize {
    let descriptor = frame[4];
    let single_segment = descriptor & 0x20 != 0;
    let content_size = match descriptor >> 6 {
        0 => usize::from(single_segment),
        1 => 2,
        2 => 4,
        _ => 8,
    };
    let dictionary_id = [0, 1, 2, 4][usize::from(descriptor & 3)];
    5 + usize::from(!single_segment) + dictionary_id + content_size
}

/// The frames of a raw message of one array named like the record, with time 0.
pub fn one_array_message(
    name: &str,
    source: &str,
    session: &str,
    seq: u64,
    array: ArrayBuffer,
) -> Vec<Bytes> {
    let envelope = Envelope {
        name: name.into(),
        source: source.into(),
        session: session.into(),
        seq,
        time: 0.0,
        attrs: None,
    };
    encode(envelope, vec![(name.to_owned(), array)], Compression::Raw)
        .unwrap()
        .frames
}

/// Ends the whole test binary if a test outlives `limit`, so a hang fails instead of blocking
/// the suite. Dropping the returned value disarms it.
pub fn watchdog(test: &'static str, limit: Duration) -> std::sync::mpsc::Sender<()> {
    let (disarm, armed) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = armed.recv_timeout(limit) {
            eprintln!("{test}: still running after {limit:?}, aborting the test binary");
            std::process::exit(101);
        }
    });
    disarm
}

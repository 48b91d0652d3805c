//! Helpers shared by the integration tests: the golden `.frames` file format, logical-order
//! byte dumps of decoded arrays, and waiting for a condition with a timeout.
#![allow(dead_code)]

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ndbridge::wire::{DecodedArray, DynArray};

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

//! Any bytes, cut into frames, through `wire::decode` and the streaming `wire::Decoder`: never a
//! panic, both agree, and a decoded array always holds `nbytes` bytes.
#![no_main]

use bytes::Bytes;
use ndbridge::wire::{decode, Decoder, Limits};

libfuzzer_sys::fuzz_target!(|input: &[u8]| {
    // Frames are separated by the byte sequence 0xFF 0x00 0xFF.
    let mut frames = Vec::new();
    let mut rest = input;
    while let Some(at) = rest.windows(3).position(|w| w == [0xFF, 0x00, 0xFF]) {
        frames.push(Bytes::copy_from_slice(&rest[..at]));
        rest = &rest[at + 3..];
    }
    frames.push(Bytes::copy_from_slice(rest));
    let limits = Limits::default().max_array_bytes(64 << 20).max_message_bytes(64 << 20);
    let whole = decode(&frames, &limits);
    let streamed = Decoder::new(limits).decode(&frames);
    assert_eq!(whole.is_ok(), streamed.is_ok());
    if let Ok(record) = whole {
        for array in &record.arrays {
            assert_eq!(array.bytes().len() as u64, array.meta().nbytes);
        }
    }
});

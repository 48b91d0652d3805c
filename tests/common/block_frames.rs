//! Shuffled zstd frames built block by block from a byte string, and the differential check
//! that ndbridge decodes each exactly as zstd's reference decoder and the plain unshuffle do, or
//! refuses it. Shared by the proptest in `tests/integration/zstd_block_frames.rs` and the cargo
//! fuzz target `fuzz/fuzz_targets/block_frames.rs`, so that both explore the same space.
//!
//! The input bytes choose the frame header (window, single segment, a lying content size, a
//! checksum flag with a wrong checksum), then blocks one by one: raw, RLE or compressed, of size
//! 0, 1, small, random or the 128 KiB maximum, holding noise, one repeated byte, a smooth ramp,
//! or a copy of earlier content from 1 byte to past the start of the frame. Compressed blocks
//! come from zstd's own block compressor, fed every block's content as history, including
//! content left out of the frame: its matches then reach across raw blocks, past the window and
//! before the frame's first byte, and its repeat offsets point where the decoder's do not.
#![allow(dead_code)]

use bytes::Bytes;
use ndbridge::wire::{decode, unshuffle, Limits};

/// Most content bytes a generated frame holds (history included).
const MAX_CONTENT: usize = 3 << 20;
const BLOCK_MAX: usize = 128 << 10;

/// Reads choices from the input; an exhausted input reads zeros.
struct Choices<'a>(&'a [u8]);

impl Choices<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }

    fn pick<T: Copy>(&mut self, options: &[T]) -> T {
        options[usize::from(self.byte()) % options.len()]
    }
}

/// A zstd compression context fed block by block (zstd's block-level API).
struct BlockCompressor(*mut zstd_sys::ZSTD_CCtx);

impl BlockCompressor {
    fn new(level: i32) -> BlockCompressor {
        // SAFETY: plain allocation; checked for null below.
        let cctx = unsafe { zstd_sys::ZSTD_createCCtx() };
        assert!(!cctx.is_null());
        // SAFETY: `cctx` is live; beginning a frame only resets its state.
        let code = unsafe { zstd_sys::ZSTD_compressBegin(cctx, level) };
        // SAFETY: a pure function of the code.
        assert_eq!(unsafe { zstd_sys::ZSTD_isError(code) }, 0);
        BlockCompressor(cctx)
    }

    /// Compresses `block`, which must directly follow (in memory) the blocks given before or
    /// start a new segment, and stay unmodified while this compressor lives. `None`: zstd found
    /// the block not compressible (it must then be stored raw or RLE).
    fn compress(&mut self, block: &[u8]) -> Option<Vec<u8>> {
        let mut out = vec![0u8; block.len() + 1024];
        // SAFETY: `out` has room for `out.len()` bytes; `block` and the history the context
        // remembers (earlier slices of one buffer that the caller keeps alive and unmodified)
        // are readable.
        let written = unsafe {
            zstd_sys::ZSTD_compressBlock(
                self.0,
                out.as_mut_ptr().cast(),
                out.len(),
                block.as_ptr().cast(),
                block.len(),
            )
        };
        // SAFETY: a pure function of the code.
        if unsafe { zstd_sys::ZSTD_isError(written) } != 0 || written == 0 {
            return None;
        }
        out.truncate(written);
        Some(out)
    }
}

impl Drop for BlockCompressor {
    fn drop(&mut self) {
        // SAFETY: created by ZSTD_createCCtx, freed once.
        unsafe { zstd_sys::ZSTD_freeCCtx(self.0) };
    }
}

/// One generated case: a message's frames and the element size of its array.
pub struct Case {
    /// `[header, zstd frame]`.
    pub frames: Vec<Bytes>,
    /// The frame alone.
    pub frame: Vec<u8>,
    /// The content size the frame declares (and the header's `nbytes`).
    pub nbytes: usize,
    /// The element size the array is unshuffled with.
    pub itemsize: usize,
}

fn block_header(kind: u32, size: usize, last: bool) -> [u8; 3] {
    let value = (size as u32) << 3 | kind << 1 | u32::from(last);
    let b = value.to_le_bytes();
    [b[0], b[1], b[2]]
}

/// Appends `len` bytes of a content kind to `content` (whose capacity never grows).
fn push_content(c: &mut Choices, content: &mut Vec<u8>, len: usize) {
    let len = len.min(MAX_CONTENT - content.len());
    match c.byte() % 4 {
        0 => {
            let mut state = c.u32() as u64 | 1;
            content.extend((0..len).map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            }));
        }
        1 => {
            let byte = c.byte();
            content.extend(std::iter::repeat_n(byte, len));
        }
        2 => {
            let step = c.byte();
            content.extend((0..len).map(|i| (i as u8).wrapping_mul(step) >> 2));
        }
        _ => {
            let distance: usize = c.pick(&[1, 7, 4096, BLOCK_MAX, BLOCK_MAX + 3, 1 << 20, 2 << 20]);
            if content.is_empty() {
                content.extend(std::iter::repeat_n(0x55, len));
            } else {
                let from = content.len().saturating_sub(distance);
                for i in 0..len {
                    let b = content[from + i % (content.len() - from)];
                    content.push(b);
                }
            }
        }
    }
}

/// Builds a case from `input` (any bytes).
pub fn build(input: &[u8]) -> Case {
    let mut c = Choices(input);
    let level = c.pick(&[1, 3, 9, 3, -5]);
    let itemsize = c.pick(&[2usize, 4, 8]);
    let single_segment = c.byte() % 4 == 0;
    let window_descriptor = c.pick(&[0u8, 0x18, 0x38, 0x39, 0x58, 0x88, 0x8f]);
    let checksum = c.byte() % 16 == 0;
    let lie: i64 = c.pick(&[0, 0, 0, 0, 0, 0, 1, -1, 4096, 1 << 30]);
    let blocks = 1 + usize::from(c.byte() % 12);

    let mut compressor = BlockCompressor::new(level);
    let mut content: Vec<u8> = Vec::with_capacity(MAX_CONTENT);
    let mut decoded = 0usize;
    let mut body = Vec::new();
    for i in 0..blocks {
        let last = i + 1 == blocks;
        let size: usize = match c.byte() % 8 {
            0 => 0,
            1 => 1,
            2 => 3,
            3 => 1 + (c.u32() as usize) % 4096,
            4 => 1 + (c.u32() as usize) % BLOCK_MAX,
            _ => BLOCK_MAX,
        };
        let start = content.len();
        push_content(&mut c, &mut content, size);
        let block = &content[start..];
        let emit = c.byte() % 8;
        // Every block goes through the compressor, whether or not it reaches the frame, so its
        // history may hold what the decoder never saw.
        let compressed = if block.is_empty() {
            None
        } else {
            compressor.compress(block)
        };
        match (emit, compressed) {
            // Left out of the frame (but not the last block: the frame must end).
            (0, _) if !last => continue,
            (1, _) if block.iter().all(|&b| Some(&b) == block.first()) || block.is_empty() => {
                body.extend(block_header(1, block.len(), last));
                body.push(block.first().copied().unwrap_or(c.byte()));
            }
            (2..=5, Some(z)) => {
                body.extend(block_header(2, z.len(), last));
                body.extend(&z);
            }
            _ => {
                body.extend(block_header(0, block.len(), last));
                body.extend(block);
            }
        }
        decoded += block.len();
        // A zero-size block between any two others.
        if !last && c.byte() % 4 == 0 {
            body.extend(block_header(c.pick(&[0, 1]), 0, false));
            if body.len() >= 3 && body[body.len() - 3] & 6 == 2 {
                body.push(c.byte());
            }
        }
    }
    // The element size must divide the content: pad with a last raw block, rewriting the
    // previous block's last flag.
    let pad = (itemsize - decoded % itemsize) % itemsize;
    if pad != 0 {
        clear_last_flag(&mut body);
        body.extend(block_header(0, pad, true));
        body.extend(std::iter::repeat_n(0xA5, pad));
        decoded += pad;
    }
    let declared = (decoded as i64 + lie).max(0) as u64;
    let declared = declared - declared % itemsize as u64;

    let mut frame = 0xFD2F_B528u32.to_le_bytes().to_vec();
    let fcs_flag = 3u8; // an 8-byte content size
    let descriptor = fcs_flag << 6 | u8::from(single_segment) << 5 | u8::from(checksum) << 2;
    frame.push(descriptor);
    if !single_segment {
        frame.push(window_descriptor);
    }
    frame.extend(declared.to_le_bytes());
    frame.extend(&body);
    if checksum {
        frame.extend(c.u32().to_le_bytes());
    }
    let nbytes = declared as usize;
    let header = format!(
        r#"{{"v":1,"name":"r","source":"fuzz","session":"s","seq":0,"time":0,"arrays":[{{"name":"a","dtype":"<u{itemsize}","shape":[{}],"order":"C","codec":"zstd","filters":["shuffle"],"nbytes":{nbytes}}}]}}"#,
        nbytes / itemsize
    );
    Case {
        frames: vec![Bytes::from(header), Bytes::from(frame.clone())],
        frame,
        nbytes,
        itemsize,
    }
}

/// Clears the last-block flag of the last block header in a frame body.
fn clear_last_flag(body: &mut [u8]) {
    let mut at = 0;
    let mut last_header = 0;
    while at + 3 <= body.len() {
        last_header = at;
        let h = u32::from_le_bytes([body[at], body[at + 1], body[at + 2], 0]);
        let size = (h >> 3) as usize;
        at += 3 + if (h >> 1) & 3 == 1 { 1 } else { size };
    }
    body[last_header] &= !1;
}

/// What zstd's reference decoder makes of the frame: exactly `nbytes` bytes, or nothing.
pub fn reference(case: &Case) -> Option<Vec<u8>> {
    let mut out = vec![0u8; case.nbytes];
    let mut d = zstd::bulk::Decompressor::new().unwrap();
    match d.decompress_to_buffer(&case.frame[..], &mut out[..]) {
        Ok(n) if n == case.nbytes => Some(out),
        _ => None,
    }
}

/// Checks that ndbridge decodes `case` to the reference decoder's bytes, unshuffled, or refuses
/// it where the reference decoder does. Returns whether the frame was valid.
pub fn check(case: &Case) -> bool {
    let expected = reference(case).map(|shuffled| {
        let mut plain = vec![0u8; shuffled.len()];
        unshuffle(&shuffled, &mut plain, case.itemsize);
        plain
    });
    let limits = Limits::default();
    let ours = decode(&case.frames, &limits);
    match (expected, ours) {
        (Some(expected), Ok(record)) => {
            assert_eq!(
                &record.arrays[0].bytes()[..],
                &expected[..],
                "decoded bytes differ"
            );
            true
        }
        (None, Err(_)) => false,
        (Some(_), Err(e)) => panic!("the reference decoder reads the frame, ndbridge refuses: {e}"),
        (None, Ok(_)) => panic!("the reference decoder refuses the frame, ndbridge reads it"),
    }
}

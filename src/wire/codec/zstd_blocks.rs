//! Decoding one zstd frame block by block, for shuffled buffers: compressed and RLE blocks are
//! decoded into a scratch buffer at their place, raw (stored) blocks stay where they are in the
//! frame. The shuffle is then undone straight from those pieces
//! ([`unshuffle_parts`](super::shuffle::unshuffle_parts)), which saves copying the raw blocks:
//! zstd stores the noisy low-order byte streams of a numeric field raw, often most of a frame.
//!
//! Only the frame header ([`layout`]) and the 3-byte block headers are read here (RFC 8878,
//! sections 3.1.1.1 and 3.1.1.2); every compressed block goes to zstd's own block decoder, with
//! the history the format defines. Anything this path does not take (a checksum to verify, a
//! dictionary, an empty block, a block larger than the frame's block maximum, a match reaching
//! further back than the previous block's piece, a malformed frame) returns `None`, and the caller
//! decompresses the frame as a whole with zstd's reference decoder, which also reports what is
//! wrong. `tests/integration/zstd_block_frames.rs` and the fuzz target `block_frames` check that both paths
//! give the reference decoder's bytes on frames built block by block.
//!
//! Memory safety rests on zstd's history tracking seeing every block: each call names where the
//! block's bytes are, and a block not directly after the previous one makes the previous run the
//! only history behind it. An empty range would not (zstd skips its continuity check for empty
//! ranges but still moves its record of the previous output's end, after which the next block
//! would be taken as following bytes of another buffer), so no empty range is ever given.

use std::cell::RefCell;
use std::marker::PhantomData;
use std::ops::Range;
use std::ptr::NonNull;

use super::zstd_frame::{layout, BLOCK_MAX};

/// Where one block of the decoded buffer is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Piece {
    /// These bytes of the frame (a raw block, stored as it is).
    Frame(Range<usize>),
    /// These bytes of the scratch buffer (a decoded block, at its offset in the buffer).
    Scratch(Range<usize>),
}

impl Piece {
    /// The piece's bytes, in the frame or the scratch buffer it was decoded with.
    pub(crate) fn bytes<'a>(&self, frame: &'a [u8], scratch: &'a [u8]) -> &'a [u8] {
        match self {
            Piece::Frame(r) => &frame[r.clone()],
            Piece::Scratch(r) => &scratch[r.clone()],
        }
    }
}

/// The largest window this path accepts: zstd's default limit for decoders (`1 << 27`).
const WINDOW_MAX: u64 = 1 << 27;

/// A zstd decompression context used only for block-level decoding.
struct BlockDecoder(NonNull<zstd_sys::ZSTD_DCtx>);

impl BlockDecoder {
    fn new() -> Option<BlockDecoder> {
        // SAFETY: plain allocation call; a null result is handled.
        NonNull::new(unsafe { zstd_sys::ZSTD_createDCtx() }).map(BlockDecoder)
    }
}

impl Drop for BlockDecoder {
    fn drop(&mut self) {
        // SAFETY: the context came from `ZSTD_createDCtx` and is freed once, here.
        unsafe { zstd_sys::ZSTD_freeDCtx(self.0.as_ptr()) };
    }
}

thread_local! {
    static DECODER: RefCell<Option<BlockDecoder>> = const { RefCell::new(None) };
}

/// Where the frame's blocks start and the frame's block maximum (its window, at most 128 KiB),
/// if this path can take the frame: no checksum to verify, no dictionary, a window zstd's own
/// decoder accepts by default.
fn frame_blocks(frame: &[u8]) -> Option<(usize, usize)> {
    let layout = layout(frame).ok()?;
    if layout.checksum || layout.dictionary || layout.window > WINDOW_MAX {
        return None;
    }
    let block_max = usize::try_from(layout.window.min(BLOCK_MAX)).ok()?;
    Some((layout.header_len, block_max))
}

/// Decodes `frame`, one complete zstd frame of exactly `scratch.len()` decoded bytes, into
/// pieces: raw blocks are left in the frame, the other blocks are decoded into `scratch` at
/// their offsets. The pieces in order are the decoded buffer. `None`: decode the frame as a
/// whole instead (see the module documentation).
pub(crate) fn decode_in_pieces(frame: &[u8], scratch: &mut [u8]) -> Option<Vec<Piece>> {
    let (mut pos, block_max) = frame_blocks(frame)?;
    DECODER.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(BlockDecoder::new()?);
        }
        let dctx = slot.as_ref()?.0.as_ptr();
        // SAFETY: `dctx` is this thread's live context. Beginning resets its history, so no
        // pointer kept from an earlier call (into buffers that may be gone) is ever read again.
        if unsafe { zstd_sys::ZSTD_isError(zstd_sys::ZSTD_decompressBegin(dctx)) } != 0 {
            return None;
        }
        let mut run = BlockRun::new(dctx, scratch, block_max);
        loop {
            let header = frame.get(pos..pos + 3)?;
            let header =
                u32::from(header[0]) | u32::from(header[1]) << 8 | u32::from(header[2]) << 16;
            pos += 3;
            let size = (header >> 3) as usize;
            // An empty block takes no part here: zstd's continuity check skips empty ranges
            // yet still moves its record of where the previous output ended, so after one the
            // next block could be taken as following history in another buffer. The whole-frame
            // decoder takes such frames.
            if size == 0 || run.at == run.out_len {
                return None;
            }
            pos += match (header >> 1) & 3 {
                0 => run.raw(frame, pos, size)?,
                1 => run.rle(frame, pos, size)?,
                2 => run.compressed(frame, pos, size)?,
                _ => return None,
            };
            if header & 1 != 0 {
                break;
            }
        }
        (pos == frame.len() && run.at == run.out_len).then_some(run.pieces)
    })
}

/// One frame's blocks going through a decoder context: where the next decoded byte goes in the
/// scratch buffer, and the pieces so far. Each block method checks the block against the frame
/// and the buffer, decodes it, and returns the frame bytes it took (`None`: leave the frame to
/// the whole-frame decoder).
struct BlockRun<'a> {
    dctx: *mut zstd_sys::ZSTD_DCtx,
    /// Every write to the scratch buffer goes through this one pointer, as zstd's history
    /// refers to blocks already written through it.
    out: *mut u8,
    out_len: usize,
    at: usize,
    block_max: usize,
    pieces: Vec<Piece>,
    _scratch: PhantomData<&'a mut [u8]>,
}

impl<'a> BlockRun<'a> {
    fn new(dctx: *mut zstd_sys::ZSTD_DCtx, scratch: &'a mut [u8], block_max: usize) -> Self {
        BlockRun {
            dctx,
            out: scratch.as_mut_ptr(),
            out_len: scratch.len(),
            at: 0,
            block_max,
            pieces: Vec::new(),
            _scratch: PhantomData,
        }
    }

    /// A raw block: the next `size` bytes of the frame are the block, left where they are.
    fn raw(&mut self, frame: &[u8], pos: usize, size: usize) -> Option<usize> {
        let block = frame.get(pos..pos + size)?;
        if size > self.block_max || self.at + size > self.out_len {
            return None;
        }
        // SAFETY: `block` lies in `frame`, which outlives this call; zstd records it as history
        // for the blocks that follow (read only, within this frame's run).
        unsafe {
            zstd_sys::ZSTD_insertBlock(self.dctx, block.as_ptr().cast(), size);
        }
        self.pieces.push(Piece::Frame(pos..pos + size));
        self.at += size;
        Some(size)
    }

    /// An RLE block: one byte of the frame, repeated `size` times in the scratch buffer.
    fn rle(&mut self, frame: &[u8], pos: usize, size: usize) -> Option<usize> {
        let byte = *frame.get(pos)?;
        if size > self.block_max || self.at + size > self.out_len {
            return None;
        }
        let at = self.at;
        // SAFETY: `at + size <= out_len`, so the range is inside the scratch buffer, and it is
        // written through `out` only. The bytes then become history, as above.
        unsafe {
            std::ptr::write_bytes(self.out.add(at), byte, size);
            zstd_sys::ZSTD_insertBlock(self.dctx, self.out.add(at).cast_const().cast(), size);
        }
        self.pieces.push(Piece::Scratch(at..at + size));
        self.at += size;
        Some(1)
    }

    /// A compressed block: zstd decodes it into the scratch buffer at its offset.
    fn compressed(&mut self, frame: &[u8], pos: usize, size: usize) -> Option<usize> {
        let block = frame.get(pos..pos + size)?;
        if size > self.block_max {
            return None;
        }
        // No more than the block maximum: zstd's whole-frame decoder refuses some blocks that
        // decode past it, so such frames are left to that decoder.
        let at = self.at;
        let capacity = (self.out_len - at).min(self.block_max);
        // SAFETY: zstd writes at most `capacity` bytes at `out + at`, inside the scratch
        // buffer, and reads `block` (inside `frame`) and history from earlier blocks of this
        // run, all still alive. A match reaching beyond the history it can follow is an error,
        // not a wrong read.
        let written = unsafe {
            zstd_sys::ZSTD_decompressBlock(
                self.dctx,
                self.out.add(at).cast(),
                capacity,
                block.as_ptr().cast(),
                size,
            )
        };
        // SAFETY: a pure function of the code.
        if unsafe { zstd_sys::ZSTD_isError(written) } != 0 || written == 0 {
            return None;
        }
        self.pieces.push(Piece::Scratch(at..at + written));
        self.at += written;
        Some(size)
    }
}

#[cfg(test)]
mod tests {
    use super::super::shuffle::{shuffle, unshuffle_parts};
    use super::*;
    use crate::synth::{noise, smooth_field};
    use proptest::prelude::*;

    /// The decoded buffer assembled from the pieces.
    fn assemble(frame: &[u8], scratch: &[u8], pieces: &[Piece]) -> Vec<u8> {
        pieces
            .iter()
            .flat_map(|p| p.bytes(frame, scratch))
            .copied()
            .collect()
    }

    fn f64_bytes(values: &[f64]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    #[test]
    fn shuffled_field_leaves_the_noisy_streams_in_the_frame() {
        let field = f64_bytes(&smooth_field(256, 1000, 0.0, 7));
        let mut shuffled = vec![0; field.len()];
        shuffle(&field, &mut shuffled, 8);
        let frame = zstd::bulk::compress(&shuffled, 1).unwrap();
        let mut scratch = vec![0; field.len()];
        let pieces = decode_in_pieces(&frame, &mut scratch).expect("a plain level-1 frame");
        assert!(pieces.iter().any(|p| matches!(p, Piece::Frame(_))));
        assert!(pieces.iter().any(|p| matches!(p, Piece::Scratch(_))));
        assert_eq!(assemble(&frame, &scratch, &pieces), shuffled);
        // Undone straight from the pieces, the field comes back exactly.
        let parts: Vec<&[u8]> = pieces.iter().map(|p| p.bytes(&frame, &scratch)).collect();
        let mut back = vec![0; field.len()];
        unshuffle_parts(&parts, &mut back, 8);
        assert_eq!(back, field);
    }

    fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
        let mut rng = crate::synth::SplitMix64::new(seed);
        (0..len).map(|_| rng.next_u64() as u8).collect()
    }

    #[test]
    fn a_match_two_raw_blocks_back_is_left_to_the_whole_frame_decoder() {
        // Random A, random B (both stored raw), then A again: the third block is a match
        // 256 KiB back, into a raw block that is not the one just before it.
        let a = random_bytes(BLOCK_MAX as usize, 1);
        let b = random_bytes(BLOCK_MAX as usize, 2);
        let data = [a.as_slice(), &b, &a].concat();
        let frame = zstd::bulk::compress(&data, 3).unwrap();
        let mut scratch = vec![0; data.len()];
        assert_eq!(decode_in_pieces(&frame, &mut scratch), None);
        // The same context serves the next frame correctly.
        let mut shuffled = vec![0; data.len()];
        shuffle(&f64_bytes(&smooth_field(64, 768, 0.0, 3)), &mut shuffled, 8);
        let ok = zstd::bulk::compress(&shuffled, 1).unwrap();
        let pieces = decode_in_pieces(&ok, &mut scratch).unwrap();
        assert_eq!(assemble(&ok, &scratch, &pieces), shuffled);
    }

    #[test]
    fn frames_with_a_checksum_or_the_wrong_size_are_declined() {
        let data = f64_bytes(&smooth_field(8, 100, 0.0, 3));
        let mut c = zstd::bulk::Compressor::new(1).unwrap();
        c.include_checksum(true).unwrap();
        let frame = c.compress(&data).unwrap();
        let mut scratch = vec![0; data.len()];
        assert_eq!(decode_in_pieces(&frame, &mut scratch), None);
        let frame = zstd::bulk::compress(&data, 1).unwrap();
        let mut short = vec![0; data.len() - 1];
        assert_eq!(decode_in_pieces(&frame, &mut short), None);
        let mut long = vec![0; data.len() + 1];
        assert_eq!(decode_in_pieces(&frame, &mut long), None);
        assert_eq!(
            decode_in_pieces(&frame[..frame.len() - 1], &mut scratch),
            None
        );
        assert_eq!(decode_in_pieces(b"not zstd", &mut scratch), None);
    }

    proptest! {
        /// Runs of repeated bytes, copies of earlier data and noise, at several levels: the
        /// pieces are the content exactly whenever the path takes the frame.
        #[test]
        fn pieces_are_the_content(
            chunks in proptest::collection::vec((0u8..3, 1usize..70_000, any::<u8>()), 1..12),
            level in prop::sample::select(vec![-5, 1, 3, 9]),
        ) {
            let mut data: Vec<u8> = Vec::new();
            for (i, &(kind, len, byte)) in chunks.iter().enumerate() {
                match kind {
                    0 => data.extend(std::iter::repeat_n(byte, len)),
                    1 if !data.is_empty() => {
                        let from = (byte as usize * 997) % data.len();
                        for k in 0..len {
                            data.push(data[from + k % (data.len() - from)]);
                        }
                    }
                    _ => data.extend(f64_bytes(&noise(len / 8 + 1, i as u64))),
                }
            }
            let frame = zstd::bulk::compress(&data, level).unwrap();
            let mut scratch = vec![0; data.len()];
            if let Some(pieces) = decode_in_pieces(&frame, &mut scratch) {
                prop_assert_eq!(assemble(&frame, &scratch, &pieces), data);
            }
        }

        /// Damaged frames never panic; whatever the path accepts has the declared length.
        #[test]
        fn damaged_frames_are_handled(flips in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..), 1..6)) {
            let data = f64_bytes(&smooth_field(64, 100, 0.0, 5));
            let mut shuffled = vec![0; data.len()];
            shuffle(&data, &mut shuffled, 8);
            let mut frame = zstd::bulk::compress(&shuffled, 1).unwrap();
            for (at, mask) in flips {
                let i = at.index(frame.len());
                frame[i] ^= mask;
            }
            let mut scratch = vec![0; data.len()];
            if let Some(pieces) = decode_in_pieces(&frame, &mut scratch) {
                prop_assert_eq!(assemble(&frame, &scratch, &pieces).len(), data.len());
            }
        }
    }
}

//! Encoding a shuffled buffer as one zstd frame whose noisy leading and trailing byte streams are
//! stored as raw blocks without running the compressor over them.
//!
//! After the byte shuffle, the low-order bytes of floating-point data (the first streams of
//! little-endian elements, the last of big-endian ones) are usually noise: zstd's match finder
//! runs over them, finds nothing, and stores them raw anyway, at a cost of about a fifth of the
//! encoding time of a float64 field. Here each stream is first judged on samples (compressed
//! with the same level); the leading and trailing streams that do not compress are written as raw
//! blocks directly, and only the streams between them go through zstd's block compressor.
//!
//! Only a prefix and a suffix can bypass the compressor. The compressor never sees the raw
//! prefix, so its matches cannot reach back into it, and its offsets (distances back in the
//! decoded output) stay right because everything it has seen precedes each of its blocks
//! contiguously; nothing it compresses follows the raw suffix. The compressor gets the
//! parameters zstd would choose for the middle's size (window and tables no larger than it
//! needs). The frame is standard (RFC 8878: a window descriptor of the compressor's window, the
//! content size, no checksum), so any zstd decoder reads it; `tests/integration/zstd_frames.rs` decodes it
//! with zstd's own streaming decoder.

use std::cell::RefCell;
use std::ops::Range;
use std::ptr::NonNull;

use bytes::Bytes;

use super::buffer::AlignedBuf;
use crate::wire::error::EncodeError;

const MAGIC: u32 = 0xFD2F_B528;

/// The largest block (RFC 8878, `Block_Maximum_Size`, for windows of 128 KiB or more).
const BLOCK_MAX: usize = 128 << 10;

/// Streams shorter than this are not worth judging: the whole buffer goes to the compressor.
const MIN_STREAM: usize = 64 << 10;

/// Bytes of each sample a stream is judged on, and how many samples (start, middle, end).
const SAMPLE: usize = 4 << 10;
const SAMPLES: usize = 3;

/// A stream is noise when its samples compress to more than this share of their size: zstd
/// itself stores a block raw when compression saves less than about 1/64 of it.
const NOISE_RATIO: f64 = 0.98;

/// A zstd compression context used for block-level compression and for judging samples.
struct BlockEncoder(NonNull<zstd_sys::ZSTD_CCtx>);

impl BlockEncoder {
    fn new() -> Option<BlockEncoder> {
        // SAFETY: plain allocation call; a null result is handled.
        NonNull::new(unsafe { zstd_sys::ZSTD_createCCtx() }).map(BlockEncoder)
    }

    /// The compressed size of `src` as a whole frame at `level`, written into `dst`.
    fn frame_size(&mut self, dst: &mut [u8], src: &[u8], level: i32) -> Option<usize> {
        // SAFETY: the context is live and owned by this thread; `dst` and `src` are valid for
        // their lengths, and zstd writes at most `dst.len()` bytes.
        let written = unsafe {
            zstd_sys::ZSTD_compressCCtx(
                self.0.as_ptr(),
                dst.as_mut_ptr().cast(),
                dst.len(),
                src.as_ptr().cast(),
                src.len(),
                level,
            )
        };
        checked(written).ok()
    }
}

impl Drop for BlockEncoder {
    fn drop(&mut self) {
        // SAFETY: the context came from `ZSTD_createCCtx` and is freed once, here.
        unsafe { zstd_sys::ZSTD_freeCCtx(self.0.as_ptr()) };
    }
}

thread_local! {
    static ENCODER: RefCell<Option<BlockEncoder>> = const { RefCell::new(None) };
}

/// Compresses `shuffled` (a byte-shuffled buffer of `itemsize`-byte elements) at `level` into
/// one zstd frame, storing its noisy leading and trailing streams raw. `None` when this path
/// does not apply (short streams, no noisy stream at either end, no context): the caller then
/// compresses the buffer whole.
pub(crate) fn compress_shuffled(
    shuffled: &[u8],
    itemsize: usize,
    level: i32,
) -> Option<Result<Bytes, EncodeError>> {
    let stream = shuffled.len() / itemsize.max(1);
    if itemsize < 2 || stream < MIN_STREAM {
        return None;
    }
    ENCODER.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = BlockEncoder::new();
        }
        let encoder = slot.as_mut()?;
        let noisy: Vec<bool> = (0..itemsize)
            .map(|i| is_noise(encoder, &shuffled[i * stream..(i + 1) * stream], level))
            .collect();
        let lead = noisy.iter().take_while(|&&n| n).count();
        let trail = if lead == itemsize {
            0
        } else {
            noisy.iter().rev().take_while(|&&n| n).count()
        };
        if lead == 0 && trail == 0 {
            return None;
        }
        // The bytes after the last whole element (not shuffled) belong to the suffix if there
        // is one, else to the middle.
        let middle_end = if trail > 0 {
            (itemsize - trail) * stream
        } else {
            shuffled.len()
        };
        Some(write_frame(
            encoder,
            shuffled,
            lead * stream..middle_end,
            level,
        ))
    })
}

/// Whether a stream's samples compress to no less than [`NOISE_RATIO`] of their size.
fn is_noise(encoder: &mut BlockEncoder, stream: &[u8], level: i32) -> bool {
    let mut dst = [0u8; SAMPLE + 512];
    let mut raw = 0usize;
    let mut compressed = 0usize;
    for k in 0..SAMPLES {
        let start = (stream.len() - SAMPLE) * k / (SAMPLES - 1);
        let sample = &stream[start..start + SAMPLE];
        match encoder.frame_size(&mut dst, sample, level) {
            Some(n) => compressed += n,
            None => return false,
        }
        raw += SAMPLE;
    }
    compressed as f64 >= NOISE_RATIO * raw as f64
}

/// Writes the frame: raw blocks before `middle`, `middle` through the block compressor, raw
/// blocks after it. `src` is not empty (its streams are at least [`MIN_STREAM`] bytes).
fn write_frame(
    encoder: &mut BlockEncoder,
    src: &[u8],
    middle: Range<usize>,
    level: i32,
) -> Result<Bytes, EncodeError> {
    let blocks = src.len().div_ceil(BLOCK_MAX);
    // SAFETY: `ZSTD_compressBound` is a pure computation.
    let bound = unsafe { zstd_sys::ZSTD_compressBound(middle.len()) };
    let capacity = 18 + 3 * (blocks + 2) + (src.len() - middle.len()) + bound;
    let mut out = AlignedBuf::for_overwrite(capacity);
    let buf = out.as_mut_slice();
    let params = block_params(level, middle.len());
    let mut at = write_header(buf, src.len() as u64, params.cParams.windowLog);
    let raw_before = 0..middle.start;
    let raw_after = middle.end..src.len();
    let last_end = src.len();
    for chunk in chunks(raw_before) {
        at = write_raw(buf, at, &src[chunk.clone()], chunk.end == last_end);
    }
    if !middle.is_empty() {
        at = compress_middle(encoder, buf, at, src, middle, params)?;
    }
    for chunk in chunks(raw_after) {
        at = write_raw(buf, at, &src[chunk.clone()], chunk.end == last_end);
    }
    Ok(out.into_bytes_of_len(at))
}

/// Compresses `src[middle]` block by block into `buf` from `at`, each block stored raw where
/// zstd cannot shrink it; returns where the frame continues.
fn compress_middle(
    encoder: &mut BlockEncoder,
    buf: &mut [u8],
    mut at: usize,
    src: &[u8],
    middle: Range<usize>,
    params: zstd_sys::ZSTD_parameters,
) -> Result<usize, EncodeError> {
    let last_end = src.len();
    // SAFETY: the context is live and owned by this thread; no dictionary; `params` were
    // checked by `block_params`.
    let begun = unsafe {
        zstd_sys::ZSTD_compressBegin_advanced(
            encoder.0.as_ptr(),
            std::ptr::null(),
            0,
            params,
            CONTENT_SIZE_UNKNOWN,
        )
    };
    checked(begun).map_err(zstd_error)?;
    for chunk in chunks(middle) {
        let last = chunk.end == last_end;
        let block = &src[chunk];
        let room = &mut buf[at + 3..];
        // SAFETY: the context was begun above; `block` is at most `BLOCK_MAX` bytes and
        // lies right after the previous block in memory (the compressor's history is
        // contiguous); zstd writes at most `room.len()` bytes into `room`.
        let written = unsafe {
            zstd_sys::ZSTD_compressBlock(
                encoder.0.as_ptr(),
                room.as_mut_ptr().cast(),
                room.len(),
                block.as_ptr().cast(),
                block.len(),
            )
        };
        let written = checked(written).map_err(zstd_error)?;
        if written == 0 {
            // Not compressible: zstd's block API leaves storing it raw to the caller.
            at = write_raw(buf, at, block, last);
        } else {
            buf[at..at + 3].copy_from_slice(&block_header(written, 2, last));
            at += 3 + written;
        }
    }
    Ok(at)
}

/// A zstd return value: the size, or the error code.
fn checked(code: usize) -> Result<usize, usize> {
    // SAFETY: `ZSTD_isError` only inspects the value.
    if unsafe { zstd_sys::ZSTD_isError(code) } == 0 {
        Ok(code)
    } else {
        Err(code)
    }
}

/// `ZSTD_CONTENTSIZE_UNKNOWN`.
const CONTENT_SIZE_UNKNOWN: u64 = u64::MAX;

/// The compression parameters of `level` for `len` bytes (zstd shrinks its window and tables to
/// the input, as it does when compressing a whole buffer), with a window of at least 128 KiB so
/// that blocks of [`BLOCK_MAX`] are allowed. The window is also the one the frame declares.
fn block_params(level: i32, len: usize) -> zstd_sys::ZSTD_parameters {
    // SAFETY: `ZSTD_getParams` is a pure computation.
    let mut params = unsafe { zstd_sys::ZSTD_getParams(level, len as u64, 0) };
    params.cParams.windowLog = params.cParams.windowLog.max(17);
    params.fParams = zstd_sys::ZSTD_frameParameters {
        contentSizeFlag: 0,
        checksumFlag: 0,
        noDictIDFlag: 1,
    };
    params
}

/// `range` cut into blocks of at most [`BLOCK_MAX`] bytes.
fn chunks(range: Range<usize>) -> impl Iterator<Item = Range<usize>> {
    range
        .clone()
        .step_by(BLOCK_MAX)
        .map(move |start| start..(start + BLOCK_MAX).min(range.end))
}

/// Magic number, frame header descriptor (content size field of 4 or 8 bytes, no single
/// segment, no checksum, no dictionary), window descriptor, content size. Returns its length.
fn write_header(buf: &mut [u8], content_size: u64, window_log: u32) -> usize {
    buf[..4].copy_from_slice(&MAGIC.to_le_bytes());
    let wide = content_size > u64::from(u32::MAX);
    buf[4] = if wide { 3 << 6 } else { 2 << 6 };
    buf[5] = ((window_log - 10) << 3) as u8;
    if wide {
        buf[6..14].copy_from_slice(&content_size.to_le_bytes());
        14
    } else {
        buf[6..10].copy_from_slice(&(content_size as u32).to_le_bytes());
        10
    }
}

/// A block header: `Last_Block`, `Block_Type` (0 raw, 2 compressed), `Block_Size`.
fn block_header(size: usize, kind: u32, last: bool) -> [u8; 3] {
    let value = ((size as u32) << 3) | (kind << 1) | u32::from(last);
    let bytes = value.to_le_bytes();
    [bytes[0], bytes[1], bytes[2]]
}

fn write_raw(buf: &mut [u8], at: usize, block: &[u8], last: bool) -> usize {
    buf[at..at + 3].copy_from_slice(&block_header(block.len(), 0, last));
    buf[at + 3..at + 3 + block.len()].copy_from_slice(block);
    at + 3 + block.len()
}

fn zstd_error(code: usize) -> EncodeError {
    // SAFETY: `ZSTD_getErrorName` returns a static NUL-terminated string for any code.
    let name = unsafe { std::ffi::CStr::from_ptr(zstd_sys::ZSTD_getErrorName(code)) };
    EncodeError::Zstd {
        reason: name.to_string_lossy().into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_headers_follow_the_format() {
        // RFC 8878 3.1.1.2: little-endian, bit 0 last, bits 1-2 type, bits 3-23 size.
        assert_eq!(block_header(0, 0, true), [1, 0, 0]);
        assert_eq!(block_header(BLOCK_MAX, 0, false), [0, 0, 16]);
        assert_eq!(block_header(5, 2, true), [0b0010_1101, 0, 0]);
    }

    #[test]
    fn chunks_cover_a_range_in_blocks() {
        let cut: Vec<_> = chunks(10..10 + 2 * BLOCK_MAX + 1).collect();
        assert_eq!(
            cut,
            [
                10..10 + BLOCK_MAX,
                10 + BLOCK_MAX..10 + 2 * BLOCK_MAX,
                10 + 2 * BLOCK_MAX..11 + 2 * BLOCK_MAX
            ]
        );
        assert_eq!(chunks(5..5).count(), 0);
    }
}

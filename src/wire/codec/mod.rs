//! The codec engine: what a buffer frame is ([`Codec`], [`Filter`]), the policy a sender
//! chooses ([`Compression`]), and the transforms in both directions ([`encode_buffer`],
//! [`decode_buffer`]). Pure code over bytes, as the rest of `wire`.
//!
//! - [`shuffle`](self::shuffle): the byte shuffle, both directions, blocked for the L1 cache
//! - `zstd_streams`: shuffled buffers compressed with their noisy byte streams stored raw
//! - `zstd_frame`, `zstd_blocks`: a zstd frame's layout read from its headers, and shuffled
//!   frames decoded block by block, raw blocks unshuffled where they lie
//! - `buffer`: aligned buffers and owned vectors behind [`Bytes`] without copying
//!
//! # State kept between calls, and its bounds
//! The engine keeps no state that affects its output; what it keeps only saves allocations:
//! - per thread: one zstd compressor (of the last level used), one decompressor, one block
//!   encoder and one block decoder context, and one scratch buffer, released after use when it
//!   grew beyond `SCRATCH_KEEP` (64 MiB). A thread that never encodes or decodes holds none.
//! - per process: the pool of large aligned buffers (`buffer::POOL`): buffers of 256 KiB or
//!   more come back to it when their last `Bytes` drops, at most 16 buffers and 512 MiB in all.

use std::cell::RefCell;

use bytes::Bytes;
use serde::Serialize;

pub(crate) mod buffer;
mod chunks;
mod shuffle;
mod zstd_blocks;
mod zstd_frame;
mod zstd_streams;

use self::buffer::AlignedBuf;
use self::zstd_blocks::decode_in_pieces;
use crate::wire::error::{DecodeError, EncodeError};
use crate::wire::header::ArrayMeta;
use crate::wire::limits::{Limits, EXPANSION_FREE_BYTES};

use self::shuffle::unshuffle_parts;
pub use self::shuffle::{shuffle, unshuffle};

/// How a buffer frame is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    /// The decoded bytes as they are.
    Raw,
    /// One zstd frame with its content size set.
    Zstd,
    /// A table, then independent zstd frames of consecutive chunks of whole elements, compressed
    /// and decompressed in parallel (`chunks`: the layout).
    #[serde(rename = "zstd-chunks")]
    ZstdChunks,
}

impl Codec {
    /// The name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Codec::Raw => "raw",
            Codec::Zstd => "zstd",
            Codec::ZstdChunks => "zstd-chunks",
        }
    }
}

/// A reversible transform applied before the codec and undone after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Filter {
    /// Byte shuffle: byte 0 of every element, then byte 1 of every element, and so on.
    Shuffle,
}

/// How a sender encodes array buffers.
///
/// ```
/// use ndbridge::wire::Compression;
///
/// // Keep zstd output only when it is at most 90% of the raw size.
/// let auto = Compression::auto();
/// assert_eq!(auto, Compression::Auto { level: 1, shuffle: true, max_ratio: 0.9 });
/// let strong = Compression::zstd(3).with_shuffle(true);
/// assert_eq!(strong, Compression::Zstd { level: 3, shuffle: true });
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Compression {
    /// Send the bytes as they are (no copy for owned arrays).
    Raw,
    /// Always compress with zstd at `level`, after a byte shuffle when `shuffle` is set.
    Zstd {
        /// zstd level (1 is fast, 3 is zstd's default, up to 22).
        level: i32,
        /// Byte-shuffle before compressing (helps smooth numeric fields a lot).
        shuffle: bool,
    },
    /// Compress like `Zstd`, but send raw whenever the compressed frame is larger than
    /// `max_ratio` times the raw size, or expands more than a default collector accepts (an
    /// array over [`EXPANSION_FREE_BYTES`] beyond [`Limits::max_expansion`]): the data decides. A [`Publisher`](crate::Publisher)
    /// also sends raw on a local link (loopback, ipc: see [`Link`](crate::Link)) and while a
    /// network link drains bytes faster than compression would save time (a fast LAN).
    Auto {
        /// zstd level.
        level: i32,
        /// Byte-shuffle before compressing.
        shuffle: bool,
        /// Largest compressed/raw size ratio worth keeping, e.g. 0.9.
        max_ratio: f64,
    },
}

impl Default for Compression {
    /// [`Compression::auto`]: compressed when that pays, raw otherwise.
    fn default() -> Self {
        Compression::auto()
    }
}

impl Compression {
    /// zstd at `level`, no shuffle.
    pub fn zstd(level: i32) -> Compression {
        Compression::Zstd {
            level,
            shuffle: false,
        }
    }

    /// Automatic: shuffle + zstd level 1, kept when it saves at least 10%. A
    /// [`Publisher`](crate::Publisher) also sends raw on a local link and while its link keeps
    /// up (see [`Compression::Auto`]).
    pub fn auto() -> Compression {
        Compression::Auto {
            level: 1,
            shuffle: true,
            max_ratio: 0.9,
        }
    }

    /// The same policy with the byte shuffle switched on or off (no effect on `Raw`).
    pub fn with_shuffle(self, on: bool) -> Compression {
        match self {
            Compression::Raw => Compression::Raw,
            Compression::Zstd { level, .. } => Compression::Zstd { level, shuffle: on },
            Compression::Auto {
                level, max_ratio, ..
            } => Compression::Auto {
                level,
                shuffle: on,
                max_ratio,
            },
        }
    }

    /// Checks the zstd level against the range of the linked zstd.
    pub fn validate(&self) -> Result<(), EncodeError> {
        let level = match *self {
            Compression::Raw => return Ok(()),
            Compression::Zstd { level, .. } | Compression::Auto { level, .. } => level,
        };
        let range = zstd::compression_level_range();
        if range.contains(&level) {
            Ok(())
        } else {
            Err(EncodeError::ZstdLevel {
                level,
                min: *range.start(),
                max: *range.end(),
            })
        }
    }
}

/// One buffer frame as encoded, with how it was encoded.
#[derive(Debug, Clone)]
pub struct EncodedBuffer {
    /// The codec applied.
    pub codec: Codec,
    /// Filters applied before the codec.
    pub filters: Vec<Filter>,
    /// The frame's bytes.
    pub frame: Bytes,
}

/// Scratch buffers above this size are released after use rather than kept per thread.
const SCRATCH_KEEP: usize = 64 << 20;

thread_local! {
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { RefCell::new(None) };
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's scratch buffer resized to `len`, releasing it afterwards if large.
fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
    SCRATCH.with(|cell| {
        let mut scratch = cell.borrow_mut();
        scratch.resize(len, 0);
        let result = f(&mut scratch[..len]);
        if scratch.capacity() > SCRATCH_KEEP {
            *scratch = Vec::new();
        }
        result
    })
}

fn compress(src: &[u8], level: i32) -> Result<Bytes, EncodeError> {
    COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        let needs_new = !matches!(&*slot, Some((l, _)) if *l == level);
        if needs_new {
            // No content checksum: TCP and ipc deliver the bytes intact, and hashing costs about
            // 15% of compression and 25% of decompression time. A reader still verifies a
            // checksum that another sender chose to include.
            let c = zstd::bulk::Compressor::new(level).map_err(zstd_encode_error)?;
            *slot = Some((level, c));
        }
        let (_, compressor) = slot.as_mut().expect("compressor was just set");
        let capacity = zstd::zstd_safe::compress_bound(src.len());
        let mut out = AlignedBuf::for_overwrite(capacity);
        let written = compressor
            .compress_to_buffer(src, out.as_mut_slice())
            .map_err(zstd_encode_error)?;
        Ok(out.into_bytes_of_len(written))
    })
}

fn zstd_encode_error(e: std::io::Error) -> EncodeError {
    EncodeError::Zstd {
        reason: e.to_string(),
    }
}

/// The smallest array [`encode_buffer_chunked`] compresses in chunks: two of them.
pub(crate) const CHUNKED_FROM: usize = 2 * chunks::CHUNK_BYTES;

/// Compresses `data` as one zstd frame, after a byte shuffle of its `itemsize`-byte elements
/// when `shuffled`.
fn compress_piece(
    data: &[u8],
    itemsize: usize,
    level: i32,
    shuffled: bool,
) -> Result<Bytes, EncodeError> {
    if shuffled {
        with_scratch(data.len(), |scratch| {
            shuffle(data, scratch, itemsize);
            zstd_streams::compress_shuffled(scratch, itemsize, level)
                .unwrap_or_else(|| compress(scratch, level))
        })
    } else {
        compress(data, level)
    }
}

/// Encodes one decoded buffer (`data`, elements of `itemsize` bytes) under `policy`.
///
/// `Raw`, and `Auto` when compression does not pay, return `data` itself (no copy). A
/// compressed buffer is one zstd frame ([`Codec::Zstd`]); see [`encode_buffer_chunked`] for the
/// parallel form.
pub fn encode_buffer(
    data: &Bytes,
    itemsize: usize,
    policy: Compression,
) -> Result<EncodedBuffer, EncodeError> {
    encode_buffer_as(data, itemsize, policy, false)
}

/// Encodes one decoded buffer as [`encode_buffer`] does, except that a buffer of at least two
/// chunks (2 MiB) that is compressed becomes [`Codec::ZstdChunks`]: chunks of about 1 MiB of
/// whole elements, compressed at once on rayon's worker threads (one per core), and decoded in
/// parallel the same way. On a link faster than one core compresses, this is what lets
/// compression keep up.
///
/// ```
/// use bytes::Bytes;
/// use ndbridge::wire::{decode_buffer, encode_buffer_chunked, ArrayMeta, Codec, Compression};
/// use ndbridge::wire::{DType, Filter, Limits, Order};
///
/// let field: Vec<u8> = (0..1u32 << 20).flat_map(|i| (i as f32).sin().to_le_bytes()).collect();
/// let data = Bytes::from(field);
/// let encoded = encode_buffer_chunked(&data, 4, Compression::zstd(1).with_shuffle(true))?;
/// assert_eq!((encoded.codec, encoded.filters.as_slice()), (Codec::ZstdChunks, &[Filter::Shuffle][..]));
/// let meta = ArrayMeta {
///     name: "u".into(), dtype: "<f4".parse::<DType>()?, shape: vec![1 << 20], order: Order::C,
///     codec: encoded.codec, filters: encoded.filters, nbytes: data.len() as u64,
/// };
/// assert_eq!(decode_buffer(&meta, &encoded.frame, &Limits::default())?, data);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn encode_buffer_chunked(
    data: &Bytes,
    itemsize: usize,
    policy: Compression,
) -> Result<EncodedBuffer, EncodeError> {
    encode_buffer_as(data, itemsize, policy, true)
}

fn encode_buffer_as(
    data: &Bytes,
    itemsize: usize,
    policy: Compression,
    may_chunk: bool,
) -> Result<EncodedBuffer, EncodeError> {
    let (level, want_shuffle, max_ratio) = match policy {
        Compression::Raw => return Ok(raw(data)),
        Compression::Zstd { level, shuffle } => (level, shuffle, None),
        Compression::Auto {
            level,
            shuffle,
            max_ratio,
        } => (level, shuffle, Some(max_ratio)),
    };
    let shuffled = want_shuffle && itemsize > 1;
    let chunked = may_chunk && data.len() >= CHUNKED_FROM;
    let compressed = if chunked {
        chunks::encode_chunked(data, itemsize, |chunk| {
            compress_piece(chunk, itemsize, level, shuffled)
        })?
    } else {
        compress_piece(data, itemsize, level, shuffled)?
    };
    if let Some(max_ratio) = max_ratio {
        if compressed.len() as f64 > max_ratio * data.len() as f64
            || over_default_expansion(data.len(), compressed.len())
        {
            return Ok(raw(data));
        }
    }
    Ok(EncodedBuffer {
        codec: if chunked {
            Codec::ZstdChunks
        } else {
            Codec::Zstd
        },
        filters: if shuffled {
            vec![Filter::Shuffle]
        } else {
            Vec::new()
        },
        frame: compressed,
    })
}

/// True for a frame a collector with the default [`Limits`] refuses as too expanding (an array
/// over [`EXPANSION_FREE_BYTES`] of one repeated value): `Auto` sends such an array raw.
fn over_default_expansion(raw_bytes: usize, frame_bytes: usize) -> bool {
    let max_expansion = Limits::default().max_expansion.max(1);
    raw_bytes as u64 > EXPANSION_FREE_BYTES && raw_bytes as u64 / max_expansion > frame_bytes as u64
}

fn raw(data: &Bytes) -> EncodedBuffer {
    EncodedBuffer {
        codec: Codec::Raw,
        filters: Vec::new(),
        frame: data.clone(),
    }
}

/// What [`decode_buffer`] allocates for an array: the buffer it hands out (none for a raw,
/// unfiltered frame, handed out as it is; `nbytes` for a decompressed or unshuffled one) and,
/// while it decodes only, scratch (`nbytes` more for a shuffled zstd frame). A zstd frame of
/// about 100 KB can declare gigabytes: this is what a receiver weighs before decompressing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct DecodeAllocation {
    /// Bytes of the decoded buffer, held as long as the array is.
    pub output: u64,
    /// Bytes used while decoding only.
    pub scratch: u64,
}

impl DecodeAllocation {
    /// Output and scratch together: the most held at once.
    pub(crate) fn total(self) -> u64 {
        self.output.saturating_add(self.scratch)
    }
}

impl std::ops::Add for DecodeAllocation {
    type Output = DecodeAllocation;

    /// Saturating: sizes come from the network.
    fn add(self, other: DecodeAllocation) -> DecodeAllocation {
        DecodeAllocation {
            output: self.output.saturating_add(other.output),
            scratch: self.scratch.saturating_add(other.scratch),
        }
    }
}

/// What decoding the array `meta` describes allocates (see [`DecodeAllocation`]).
pub(crate) fn decode_allocation(meta: &ArrayMeta) -> DecodeAllocation {
    let shuffled = meta.is_shuffled() && meta.dtype.itemsize() > 1;
    let (output, scratch) = match meta.codec {
        Codec::Raw if meta.is_shuffled() => (meta.nbytes, 0),
        Codec::Raw => (0, 0),
        Codec::Zstd if shuffled => (meta.nbytes, meta.nbytes),
        Codec::Zstd => (meta.nbytes, 0),
        // Each worker thread shuffles one chunk at a time: a chunk is at most the array, and
        // an encoder's chunks are about `CHUNK_BYTES`; a hostile table's larger chunks are
        // bounded by the array.
        Codec::ZstdChunks if shuffled => (meta.nbytes, meta.nbytes),
        Codec::ZstdChunks => (meta.nbytes, 0),
    };
    DecodeAllocation { output, scratch }
}

/// The checks [`decode_buffer`] makes before it allocates anything: a raw frame's length, a zstd
/// frame's declared content size and its extent, a `zstd-chunks` frame's table and each of its
/// chunk frames' headers. Cheap (no decompression), so that a receiver can
/// refuse a malformed message before it weighs what decoding it would take.
pub(super) fn check_buffer(
    meta: &ArrayMeta,
    frame: &[u8],
    limits: &Limits,
) -> Result<(), DecodeError> {
    match meta.codec {
        Codec::Raw if frame.len() as u64 != meta.nbytes => Err(DecodeError::BufferLength {
            array: meta.name.clone(),
            expected: meta.nbytes,
            found: frame.len() as u64,
        }),
        Codec::Raw => Ok(()),
        Codec::Zstd => check_zstd_frame(meta, frame, limits),
        Codec::ZstdChunks => check_chunks(meta, frame, limits).map(|_| ()),
    }
}

/// Decodes one buffer frame described by `meta` into its `nbytes` decoded bytes.
///
/// A raw, unfiltered frame is returned as is (no copy). A zstd frame must declare a content
/// size equal to `nbytes` and be a single frame filling the buffer; it is decompressed straight
/// into a new buffer aligned for every element type, so nothing larger than `nbytes` (already
/// checked against the limits) is ever allocated. A `zstd-chunks` frame's table and every chunk
/// frame's headers are checked the same way first; its chunks are then decompressed in
/// parallel, each straight into its place in the buffer.
pub fn decode_buffer(
    meta: &ArrayMeta,
    frame: &Bytes,
    limits: &Limits,
) -> Result<Bytes, DecodeError> {
    let nbytes = meta.nbytes;
    match meta.codec {
        Codec::Raw => {
            if frame.len() as u64 != nbytes {
                return Err(DecodeError::BufferLength {
                    array: meta.name.clone(),
                    expected: nbytes,
                    found: frame.len() as u64,
                });
            }
            if meta.is_shuffled() {
                let mut out = AlignedBuf::for_overwrite(frame.len());
                unshuffle(frame, out.as_mut_slice(), meta.dtype.itemsize());
                Ok(out.into_bytes())
            } else {
                Ok(frame.clone())
            }
        }
        Codec::Zstd => {
            check_zstd_frame(meta, frame, limits)?;
            // Every byte is written below (the decompressed length is checked) before the
            // buffer is handed out.
            let mut out = AlignedBuf::for_overwrite(nbytes as usize);
            decompress_piece(meta, frame, out.as_mut_slice())?;
            Ok(out.into_bytes())
        }
        Codec::ZstdChunks => {
            let table = check_chunks(meta, frame, limits)?;
            let mut out = AlignedBuf::for_overwrite(nbytes as usize);
            let itemsize = meta.dtype.itemsize();
            // Every chunk's frame declares its chunk's length (checked above), each decodes to
            // exactly that, and the chunks cover the buffer: every byte is written before it
            // is handed out.
            chunks::decode_chunked(&table, frame, itemsize, out.as_mut_slice(), |part, dst| {
                decompress_piece(meta, part, dst)
            })?;
            Ok(out.into_bytes())
        }
    }
}

/// Decompresses the zstd frame `frame` of the array `meta` into `out`, whose length it must
/// decode to exactly, undoing the byte shuffle when `meta` has it.
fn decompress_piece(meta: &ArrayMeta, frame: &[u8], out: &mut [u8]) -> Result<(), DecodeError> {
    let itemsize = meta.dtype.itemsize();
    if !(meta.is_shuffled() && itemsize > 1) {
        return decompress_exact(meta, frame, out);
    }
    with_scratch(out.len(), |scratch| {
        // Block by block where possible: raw blocks are unshuffled straight from the frame,
        // with no copy into the scratch buffer first.
        if let Some(pieces) = decode_in_pieces(frame, scratch) {
            let parts: Vec<&[u8]> = pieces.iter().map(|p| p.bytes(frame, scratch)).collect();
            unshuffle_parts(&parts, out, itemsize);
        } else {
            decompress_exact(meta, frame, scratch)?;
            unshuffle(scratch, out, itemsize);
        }
        Ok(())
    })
}

/// Checks a `zstd-chunks` frame without decompressing, before anything is allocated for it:
/// its table against `meta`, each chunk's zstd frame headers against the chunk's length (as
/// [`check_zstd_frame`] does for a whole array), and the whole frame against the expansion
/// limit.
fn check_chunks(
    meta: &ArrayMeta,
    frame: &[u8],
    limits: &Limits,
) -> Result<chunks::ChunkTable, DecodeError> {
    let itemsize = meta.dtype.itemsize() as u64;
    let table = chunks::read_table(&meta.name, frame, meta.nbytes, itemsize as usize)?;
    check_expansion(meta, frame.len() as u64, limits)?;
    let chunk_bytes = table.elements.saturating_mul(itemsize);
    for (i, range) in table.frames.iter().enumerate() {
        let left = meta.nbytes - chunk_bytes.saturating_mul(i as u64).min(meta.nbytes);
        check_frame_declares(meta, &frame[range.clone()], left.min(chunk_bytes))?;
    }
    Ok(table)
}

/// Checks a zstd frame's headers against `meta` and `limits` without decompressing: one frame
/// filling the buffer, declaring `nbytes`, whose blocks can hold that many bytes, within the
/// expansion limit.
fn check_zstd_frame(meta: &ArrayMeta, frame: &[u8], limits: &Limits) -> Result<(), DecodeError> {
    check_frame_declares(meta, frame, meta.nbytes)?;
    check_expansion(meta, frame.len() as u64, limits)
}

/// Checks that `frame` is one zstd frame filling the buffer, declaring `expected` bytes, whose
/// blocks can hold that many.
fn check_frame_declares(meta: &ArrayMeta, frame: &[u8], expected: u64) -> Result<(), DecodeError> {
    let zstd_error = |reason: String| DecodeError::Zstd {
        array: meta.name.clone(),
        reason,
    };
    let layout = zstd_frame::layout(frame).map_err(|e| zstd_error(e.to_string()))?;
    let declared = layout
        .content_size
        .ok_or_else(|| DecodeError::ZstdContentSize {
            array: meta.name.clone(),
            expected,
            found: "not declared".to_owned(),
        })?;
    if declared != expected {
        return Err(DecodeError::ZstdContentSize {
            array: meta.name.clone(),
            expected,
            found: declared.to_string(),
        });
    }
    if layout.end != frame.len() {
        return Err(zstd_error(format!(
            "frame ends at byte {} but the buffer holds {} bytes",
            layout.end,
            frame.len()
        )));
    }
    if declared > layout.capacity {
        return Err(zstd_error(format!(
            "frame declares {declared} bytes but its blocks hold at most {}",
            layout.capacity
        )));
    }
    Ok(())
}

/// Checks an array of `meta.nbytes` from `frame_bytes` against the expansion limit.
fn check_expansion(meta: &ArrayMeta, frame_bytes: u64, limits: &Limits) -> Result<(), DecodeError> {
    let nbytes = meta.nbytes;
    if nbytes > EXPANSION_FREE_BYTES && nbytes / limits.max_expansion.max(1) > frame_bytes {
        return Err(DecodeError::Expansion {
            array: meta.name.clone(),
            nbytes,
            frame_bytes,
            max_expansion: limits.max_expansion,
        });
    }
    Ok(())
}

fn decompress_exact(meta: &ArrayMeta, frame: &[u8], out: &mut [u8]) -> Result<(), DecodeError> {
    let written = DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(zstd::bulk::Decompressor::new().map_err(|e| e.to_string())?);
        }
        let decompressor = slot.as_mut().expect("decompressor was just set");
        decompressor
            .decompress_to_buffer(frame, out)
            .map_err(|e| e.to_string())
    });
    match written {
        Ok(n) if n == out.len() => Ok(()),
        Ok(n) => Err(DecodeError::Zstd {
            array: meta.name.clone(),
            reason: format!("decompressed to {n} bytes, expected {}", out.len()),
        }),
        Err(reason) => Err(DecodeError::Zstd {
            array: meta.name.clone(),
            reason,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::SplitMix64;
    use crate::wire::{DType, Header, Order};

    fn meta(nbytes: usize) -> ArrayMeta {
        ArrayMeta {
            name: "a".into(),
            dtype: "<f8".parse::<DType>().unwrap(),
            shape: vec![nbytes / 8],
            order: Order::C,
            codec: Codec::Zstd,
            filters: vec![Filter::Shuffle],
            nbytes: nbytes as u64,
        }
    }

    /// Decoding takes the block-by-block path or the whole-frame one; both give the same bytes.
    #[test]
    fn auto_sends_raw_what_a_default_collector_would_refuse_as_too_expanding() {
        let zeros = Bytes::from(vec![0u8; (EXPANSION_FREE_BYTES + 8) as usize]);
        let auto = encode_buffer(&zeros, 8, Compression::auto()).unwrap();
        assert_eq!(auto.codec, Codec::Raw);
        assert_eq!(
            auto.frame.as_ptr(),
            zeros.as_ptr(),
            "raw is the data itself"
        );
        let zstd = encode_buffer(&zeros, 8, Compression::zstd(1)).unwrap();
        assert_eq!(zstd.codec, Codec::Zstd, "zstd is what the sender asked for");
        let small = Bytes::from(vec![0u8; 1 << 20]);
        let auto_small = encode_buffer(&small, 8, Compression::auto()).unwrap();
        assert_eq!(
            auto_small.codec,
            Codec::Zstd,
            "small arrays are never held to the limit"
        );
    }

    #[test]
    fn shuffled_frames_decode_by_either_path() {
        let mut rng = SplitMix64::new(9);
        let a: Vec<u8> = (0..128 << 10).map(|_| rng.next_u64() as u8).collect();
        let b: Vec<u8> = (0..128 << 10).map(|_| rng.next_u64() as u8).collect();
        let smooth: Vec<u8> = crate::synth::smooth_field(64, 1000, 0.0, 1)
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        // A far match into a raw block (whole-frame path), and a field (block path).
        let far = [a.as_slice(), &b, &a].concat();
        let mut field = vec![0; smooth.len()];
        shuffle(&smooth, &mut field, 8);
        for (shuffled, level) in [(far, 3), (field, 1)] {
            let frame = Bytes::from(zstd::bulk::compress(&shuffled, level).unwrap());
            let decoded = decode_buffer(&meta(shuffled.len()), &frame, &Limits::default()).unwrap();
            let mut expected = vec![0; shuffled.len()];
            unshuffle(&shuffled, &mut expected, 8);
            assert_eq!(&decoded[..], &expected[..]);
        }
    }

    fn meta_of(dtype: &str, nbytes: usize, codec: Codec, filters: Vec<Filter>) -> ArrayMeta {
        let dtype = dtype.parse::<DType>().unwrap();
        ArrayMeta {
            name: "a".into(),
            shape: vec![nbytes / dtype.itemsize()],
            dtype,
            order: Order::C,
            codec,
            filters,
            nbytes: nbytes as u64,
        }
    }

    #[test]
    fn chunked_frames_round_trip_for_every_width_and_either_filter() {
        for (dtype, elements) in [("<f8", 300_001), ("<f4", 1 << 20), ("<i2", 1_500_000)] {
            let itemsize = dtype[2..].parse::<usize>().unwrap();
            let field = crate::synth::smooth_field(1, elements, 0.0, 3);
            let data: Vec<u8> = field
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .take(elements * itemsize)
                .collect();
            let data = Bytes::from(data);
            for shuffle in [false, true] {
                let policy = Compression::zstd(1).with_shuffle(shuffle);
                let encoded = encode_buffer_chunked(&data, itemsize, policy).unwrap();
                assert_eq!(encoded.codec, Codec::ZstdChunks, "{dtype}");
                let elements_per = u64::from_le_bytes(encoded.frame[..8].try_into().unwrap());
                assert!(elements_per as usize * itemsize <= chunks::CHUNK_BYTES);
                let meta = meta_of(dtype, data.len(), encoded.codec, encoded.filters);
                let decoded = decode_buffer(&meta, &encoded.frame, &Limits::default()).unwrap();
                assert_eq!(decoded, data, "{dtype} shuffle={shuffle}");
                // The same array in one frame decodes to the same bytes.
                let whole = encode_buffer(&data, itemsize, policy).unwrap();
                assert_eq!(whole.codec, Codec::Zstd);
            }
        }
    }

    #[test]
    fn small_arrays_stay_one_frame_and_auto_still_sends_noise_raw() {
        let small = Bytes::from(vec![1u8; (2 << 20) - 8]);
        let encoded = encode_buffer_chunked(&small, 8, Compression::zstd(1)).unwrap();
        assert_eq!(encoded.codec, Codec::Zstd);
        let mut rng = SplitMix64::new(4);
        let noise: Vec<u8> = (0..4 << 20).map(|_| rng.next_u64() as u8).collect();
        let noise = Bytes::from(noise);
        let auto = encode_buffer_chunked(&noise, 8, Compression::auto()).unwrap();
        assert_eq!(auto.codec, Codec::Raw);
        assert_eq!(auto.frame.as_ptr(), noise.as_ptr());
    }

    /// Chunks whose frames do not match the table's chunk sizes, or a frame over the expansion
    /// limit, are refused before or while decoding, naming the array.
    #[test]
    fn chunked_frames_that_lie_are_refused() {
        let data = Bytes::from(vec![7u8; 3 << 20]);
        let encoded = encode_buffer_chunked(&data, 8, Compression::zstd(1)).unwrap();
        let meta = meta_of("<f8", data.len(), Codec::ZstdChunks, Vec::new());
        let limits = Limits::default();
        // One element fewer per chunk: every chunk's frame declares 8 bytes more than it holds.
        let mut fewer = encoded.frame.to_vec();
        let m = u64::from_le_bytes(fewer[..8].try_into().unwrap());
        fewer[..8].copy_from_slice(&(m - 1).to_le_bytes());
        let err = decode_buffer(&meta, &Bytes::from(fewer), &limits).unwrap_err();
        assert!(
            matches!(
                err,
                DecodeError::Chunks { .. } | DecodeError::ZstdContentSize { .. }
            ),
            "{err}"
        );
        // A chunk frame cut short.
        let mut cut = encoded.frame.to_vec();
        let first = u64::from_le_bytes(cut[8..16].try_into().unwrap());
        cut[8..16].copy_from_slice(&(first - 1).to_le_bytes());
        let second = u64::from_le_bytes(cut[16..24].try_into().unwrap());
        cut[16..24].copy_from_slice(&(second + 1).to_le_bytes());
        assert!(decode_buffer(&meta, &Bytes::from(cut), &limits).is_err());
        // Large arrays are held to the expansion limit as a whole.
        let big = meta_of("<f8", 512 << 20, Codec::ZstdChunks, Vec::new());
        let tight = Limits::default().max_expansion(2);
        let err = decode_buffer(&big, &encoded.frame, &tight).unwrap_err();
        assert!(matches!(
            err,
            DecodeError::Chunks { .. } | DecodeError::Expansion { .. }
        ));
        assert_eq!(
            decode_buffer(&meta, &encoded.frame, &limits).unwrap(),
            data,
            "the frame itself is fine"
        );
    }

    /// A chunk frame that cannot hold its chunk is refused from its headers, before the array's
    /// buffer is weighed or allocated: 17 bytes cannot make a receiver take 64 MiB.
    #[test]
    fn chunk_frames_are_checked_before_anything_is_allocated() {
        let meta = meta_of("<f8", 64 << 20, Codec::ZstdChunks, Vec::new());
        let n = (64u64 << 20) / 8;
        let mut frame: Vec<u8> = [n, 1].iter().flat_map(|w| w.to_le_bytes()).collect();
        frame.push(0x28);
        let err = check_buffer(&meta, &frame, &Limits::default()).unwrap_err();
        assert!(matches!(err, DecodeError::Zstd { .. }), "{err}");
    }

    #[test]
    fn decode_allocations_by_codec_and_filter() {
        let json = br#"{"v":1,"name":"r","source":"w","session":"s","seq":0,"time":0,"arrays":[
            {"name":"a","dtype":"<f8","shape":[1000],"order":"C","codec":"raw","nbytes":8000},
            {"name":"b","dtype":"<f8","shape":[1000],"order":"C","codec":"zstd","nbytes":8000},
            {"name":"c","dtype":"<f8","shape":[1000],"order":"C","codec":"zstd",
             "filters":["shuffle"],"nbytes":8000}]}"#;
        let header = Header::parse(json, &Limits::default()).unwrap();
        let bytes: Vec<(u64, u64)> = header
            .arrays
            .iter()
            .map(decode_allocation)
            .map(|a| (a.output, a.scratch))
            .collect();
        assert_eq!(bytes, [(0, 0), (8000, 0), (8000, 8000)]);
    }
}

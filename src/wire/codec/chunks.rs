//! The `zstd-chunks` codec: one array compressed as independent chunks of whole elements, so
//! that several cores compress and decompress it at once.
//!
//! A frame is a table, then the chunks' zstd frames back to back (all integers little-endian
//! `u64`):
//!
//! ```text
//! m                      elements per chunk (the last chunk may hold fewer)
//! len_0 ... len_{k-1}    bytes of each chunk's zstd frame, k = ceil(n / m) for n elements
//! frame_0 ... frame_{k-1}
//! ```
//!
//! Chunk `i` holds elements `i*m` up to `min((i+1)*m, n)` of the array's buffer, in its
//! `order`. Filters apply to each chunk on its own (a shuffled chunk is the byte shuffle of its
//! own elements), and each chunk's frame follows the `zstd` codec's rules with the chunk's bytes
//! as its content size. With more than one chunk, `m` elements are at least
//! [`MIN_CHUNK_BYTES`], which bounds the table (8 bytes a chunk) and the per-chunk overhead a
//! frame may claim.
//!
//! The parsing here is pure; [`encode_chunked`] and [`decode_chunked`] run the chunks on
//! rayon's worker threads (one per core) through the caller-supplied per-chunk functions.

use rayon::prelude::*;

use bytes::Bytes;

use super::buffer::AlignedBuf;
use crate::wire::error::{DecodeError, EncodeError};

/// Bytes of decoded data an encoder puts in one chunk: large enough that a chunk costs
/// about what the same bytes in one frame do, small enough that an array of a few MiB spreads
/// over every core.
pub(crate) const CHUNK_BYTES: usize = 1 << 20;

/// The fewest decoded bytes of a chunk when an array has more than one.
pub(crate) const MIN_CHUNK_BYTES: u64 = 64 << 10;

/// Where each chunk is, read from a frame's table and checked against the array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChunkTable {
    /// Elements per chunk.
    pub(crate) elements: u64,
    /// Byte range of each chunk's zstd frame within the frame, in order.
    pub(crate) frames: Vec<std::ops::Range<usize>>,
}

/// Reads and checks a frame's table for an array of `nbytes` bytes with `itemsize`-byte
/// elements: the table fits the frame, the chunks' lengths fill the rest exactly, and `m`
/// elements are at least [`MIN_CHUNK_BYTES`] when there is more than one chunk. Nothing is allocated before the chunk count is
/// known to fit the frame.
pub(crate) fn read_table(
    array: &str,
    frame: &[u8],
    nbytes: u64,
    itemsize: usize,
) -> Result<ChunkTable, DecodeError> {
    let bad = |reason: String| DecodeError::Chunks {
        array: array.to_owned(),
        reason,
    };
    let word = |i: usize| -> Option<u64> {
        let bytes = frame.get(i * 8..i * 8 + 8)?;
        Some(u64::from_le_bytes(bytes.try_into().expect("8 bytes")))
    };
    let elements = word(0).ok_or_else(|| bad(format!("{} bytes, no chunk table", frame.len())))?;
    let itemsize = itemsize.max(1);
    if !nbytes.is_multiple_of(itemsize as u64) {
        return Err(bad(format!(
            "{nbytes} bytes are not whole elements of {itemsize} bytes"
        )));
    }
    let n = nbytes / itemsize as u64;
    if elements == 0 {
        return Err(bad("0 elements per chunk".to_owned()));
    }
    let count = n.div_ceil(elements);
    let chunk_bytes = elements.saturating_mul(itemsize as u64);
    if count > 1 && chunk_bytes < MIN_CHUNK_BYTES {
        return Err(bad(format!(
            "{count} chunks of {chunk_bytes} bytes: chunks below {MIN_CHUNK_BYTES} bytes are \
             allowed only alone"
        )));
    }
    let table_len = count
        .checked_add(1)
        .and_then(|words| words.checked_mul(8))
        .filter(|&len| len <= frame.len() as u64)
        .ok_or_else(|| {
            bad(format!(
                "a table of {count} chunks does not fit a frame of {} bytes",
                frame.len()
            ))
        })? as usize;
    let mut frames = Vec::with_capacity(count as usize);
    let mut at = table_len;
    for i in 0..count as usize {
        let len = word(i + 1).expect("the table fits the frame");
        let end = (at as u64)
            .checked_add(len)
            .filter(|&end| end <= frame.len() as u64)
            .ok_or_else(|| {
                bad(format!(
                    "chunk {i} of {len} bytes runs past the frame's {} bytes",
                    frame.len()
                ))
            })? as usize;
        frames.push(at..end);
        at = end;
    }
    if at != frame.len() {
        return Err(bad(format!(
            "the chunks end at byte {at} but the frame holds {} bytes",
            frame.len()
        )));
    }
    Ok(ChunkTable { elements, frames })
}

/// Elements per chunk that an encoder uses for `n` elements of `itemsize` bytes: about
/// [`CHUNK_BYTES`] each, spread evenly.
pub(crate) fn elements_per_chunk(n: usize, itemsize: usize) -> usize {
    let per = (CHUNK_BYTES / itemsize.max(1)).max(1);
    let count = n.div_ceil(per).max(1);
    n.div_ceil(count).max(1)
}

/// Encodes `data` (elements of `itemsize` bytes) as a `zstd-chunks` frame, each chunk
/// compressed by `compress_chunk` on rayon's worker threads.
pub(crate) fn encode_chunked(
    data: &[u8],
    itemsize: usize,
    compress_chunk: impl Fn(&[u8]) -> Result<Bytes, EncodeError> + Sync,
) -> Result<Bytes, EncodeError> {
    let itemsize = itemsize.max(1);
    let elements = elements_per_chunk(data.len() / itemsize, itemsize);
    let parts: Vec<Bytes> = data
        .par_chunks(elements * itemsize)
        .map(&compress_chunk)
        .collect::<Result<_, _>>()?;
    let table_len = 8 * (parts.len() + 1);
    let total = table_len + parts.iter().map(Bytes::len).sum::<usize>();
    let mut out = AlignedBuf::for_overwrite(total);
    let (table, mut rest) = out.as_mut_slice().split_at_mut(table_len);
    table[..8].copy_from_slice(&(elements as u64).to_le_bytes());
    let mut places = Vec::with_capacity(parts.len());
    for (slot, part) in table[8..].chunks_exact_mut(8).zip(&parts) {
        slot.copy_from_slice(&(part.len() as u64).to_le_bytes());
        let (place, after) = rest.split_at_mut(part.len());
        places.push(place);
        rest = after;
    }
    places
        .into_par_iter()
        .zip(parts.par_iter())
        .for_each(|(place, part)| place.copy_from_slice(part));
    Ok(out.into_bytes())
}

/// Decodes the chunks `table` locates in `frame` into `out` (the array's `nbytes`), each by
/// `decode_chunk(chunk_frame, chunk_out)` on rayon's worker threads.
pub(crate) fn decode_chunked(
    table: &ChunkTable,
    frame: &[u8],
    itemsize: usize,
    out: &mut [u8],
    decode_chunk: impl Fn(&[u8], &mut [u8]) -> Result<(), DecodeError> + Sync,
) -> Result<(), DecodeError> {
    let chunk_bytes = usize::try_from(table.elements)
        .unwrap_or(usize::MAX)
        .saturating_mul(itemsize.max(1));
    // The table was read for `out`'s length: one frame per chunk of the output. Checked again
    // here, so that no part of `out` can be left unwritten.
    if out.len().div_ceil(chunk_bytes) != table.frames.len() {
        return Err(DecodeError::Chunks {
            array: String::new(),
            reason: format!(
                "{} chunk frames for {} bytes in chunks of {chunk_bytes}",
                table.frames.len(),
                out.len()
            ),
        });
    }
    out.par_chunks_mut(chunk_bytes)
        .zip(table.frames.par_iter())
        .try_for_each(|(chunk_out, range)| decode_chunk(&frame[range.clone()], chunk_out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(elements: u64, lens: &[u64]) -> Vec<u8> {
        let mut frame: Vec<u8> = std::iter::once(elements)
            .chain(lens.iter().copied())
            .flat_map(u64::to_le_bytes)
            .collect();
        // The chunks' bytes, when they are few enough to make.
        let body = lens.iter().try_fold(0u64, |sum, &len| sum.checked_add(len));
        frame.resize(
            frame.len() + body.filter(|&b| b < 1 << 20).unwrap_or(0) as usize,
            0,
        );
        frame
    }

    #[test]
    fn a_table_locates_each_chunk() {
        let frame = table(1 << 14, &[5, 7, 3]);
        // 3 chunks of 16384 f8 elements, the last one short.
        let t = read_table("a", &frame, (2 * (1 << 14) + 100) * 8, 8).unwrap();
        assert_eq!(t.frames, vec![32..37, 37..44, 44..47]);
        assert_eq!(t.elements, 1 << 14);
    }

    #[test]
    fn malformed_tables_are_refused_with_what_is_wrong() {
        let n = (4u64 << 14) * 8;
        let cases: [(&str, Vec<u8>, u64, &str); 7] = [
            ("empty", Vec::new(), n, "no chunk table"),
            ("zero", table(0, &[]), n, "0 elements per chunk"),
            ("small", table(16, &[1; 4]), 64 * 8, "allowed only alone"),
            ("short table", table(1 << 14, &[1, 1]), n, "does not fit"),
            (
                "past the end",
                table(1 << 14, &[1, 1, 1, u64::MAX]),
                n,
                "runs past",
            ),
            (
                "trailing",
                [table(1 << 14, &[1; 4]), vec![0]].concat(),
                n,
                "end at byte",
            ),
            (
                "huge count",
                table(1 << 13, &[]),
                u64::MAX / 8 * 8,
                "does not fit",
            ),
        ];
        for (what, frame, nbytes, expected) in cases {
            let err = read_table("a", &frame, nbytes, 8).unwrap_err().to_string();
            assert!(err.contains(expected), "{what}: {err}");
        }
    }

    #[test]
    fn a_lone_chunk_may_be_small_and_an_empty_array_has_none() {
        let t = read_table("a", &table(3, &[9]), 24, 8).unwrap();
        assert_eq!(t.frames, vec![16..25]);
        let t = read_table("a", &table(1, &[]), 0, 8).unwrap();
        assert!(t.frames.is_empty());
    }

    #[test]
    fn encoders_split_evenly_into_chunks_of_about_a_mebibyte() {
        assert_eq!(elements_per_chunk(1 << 20, 8), 1 << 17);
        // 8 MiB + 8 bytes: 9 chunks, evenly.
        let n = (1 << 20) + 1;
        let m = elements_per_chunk(n, 8);
        assert_eq!(n.div_ceil(m), 9);
        assert!(m * 8 >= MIN_CHUNK_BYTES as usize);
        assert_eq!(elements_per_chunk(0, 8), 1);
    }
}

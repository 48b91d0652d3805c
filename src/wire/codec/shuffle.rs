//! The byte shuffle filter: a transpose of an `n x itemsize` byte matrix, so that the bytes of
//! equal significance of all elements sit together and compress well.
//!
//! Both directions work on blocks of elements that fit in the L1 cache, with the element size a
//! compile-time constant for the common sizes so the inner loops unroll.

/// Elements per block: 8 KiB of 8-byte elements read, and 8 KiB written, per step.
const BLOCK: usize = 1024;

/// Writes the byte-shuffled `src` into `dst`: for element `i` and byte `j`,
/// `dst[j * n + i] = src[i * itemsize + j]`. Trailing bytes that do not form a whole element
/// are copied as they are.
///
/// ```
/// let src = [1u8, 2, 3, 4, 5, 6];
/// let mut dst = [0u8; 6];
/// ndbridge::wire::shuffle(&src, &mut dst, 2);
/// assert_eq!(dst, [1, 3, 5, 2, 4, 6]);
/// ```
///
/// # Panics
/// If `dst` and `src` differ in length or `itemsize` is 0.
pub fn shuffle(src: &[u8], dst: &mut [u8], itemsize: usize) {
    assert_eq!(
        src.len(),
        dst.len(),
        "shuffle: source and destination lengths differ"
    );
    assert!(itemsize > 0, "shuffle: itemsize must be positive");
    match itemsize {
        1 => dst.copy_from_slice(src),
        2 => simd::shuffle2(src, dst),
        4 => simd::shuffle4(src, dst),
        8 => simd::shuffle8(src, dst),
        16 => shuffle_fixed::<16>(src, dst),
        _ => shuffle_any(src, dst, itemsize),
    }
}

/// Undoes [`shuffle`]: for element `i` and byte `j`, `dst[i * itemsize + j] = src[j * n + i]`.
///
/// ```
/// let shuffled = [1u8, 3, 5, 2, 4, 6];
/// let mut dst = [0u8; 6];
/// ndbridge::wire::unshuffle(&shuffled, &mut dst, 2);
/// assert_eq!(dst, [1, 2, 3, 4, 5, 6]);
/// ```
///
/// # Panics
/// If `dst` and `src` differ in length or `itemsize` is 0.
pub fn unshuffle(src: &[u8], dst: &mut [u8], itemsize: usize) {
    assert_eq!(
        src.len(),
        dst.len(),
        "unshuffle: source and destination lengths differ"
    );
    unshuffle_parts(&[src], dst, itemsize);
}

/// [`unshuffle`] of a shuffled buffer held in pieces: `parts` in order are the shuffled bytes
/// (e.g. blocks left in place inside a zstd frame, and blocks decoded elsewhere), so the
/// pieces never need to be gathered into one buffer first.
///
/// # Panics
/// If the parts together are not as long as `dst`, or `itemsize` is 0.
pub(super) fn unshuffle_parts(parts: &[&[u8]], dst: &mut [u8], itemsize: usize) {
    let total: usize = parts.iter().map(|p| p.len()).sum();
    assert_eq!(
        total,
        dst.len(),
        "unshuffle: source and destination lengths differ"
    );
    assert!(itemsize > 0, "unshuffle: itemsize must be positive");
    let n = total / itemsize;
    // Where each part starts in the shuffled buffer.
    let starts: Vec<usize> = parts
        .iter()
        .scan(0, |at, p| {
            let start = *at;
            *at += p.len();
            Some(start)
        })
        .collect();
    // Stream `j` (byte `j` of every element) starts at `j * n`; each takes its bytes from the
    // part it is in, and a chunk of elements ends where any stream crosses into the next part.
    let mut part_of = vec![0usize; itemsize];
    let mut streams: Vec<&[u8]> = Vec::with_capacity(itemsize);
    let mut i = 0;
    while i < n {
        let mut len = n - i;
        streams.clear();
        for (j, part) in part_of.iter_mut().enumerate() {
            let at = j * n + i;
            while starts[*part] + parts[*part].len() <= at {
                *part += 1;
            }
            let piece = &parts[*part][at - starts[*part]..];
            len = len.min(piece.len());
            streams.push(piece);
        }
        for stream in &mut streams {
            *stream = &stream[..len];
        }
        interleave(&streams, &mut dst[i * itemsize..(i + len) * itemsize]);
        i += len;
    }
    // The trailing bytes that do not form a whole element, as they are.
    let mut at = n * itemsize;
    for (part, &start) in parts.iter().zip(&starts) {
        let end = start + part.len();
        if end > at {
            let from = at - start;
            dst[at..end].copy_from_slice(&part[from..]);
            at = end;
        }
    }
}

/// Interleaves equally long streams: `dst[i * streams.len() + j] = streams[j][i]`.
fn interleave(streams: &[&[u8]], dst: &mut [u8]) {
    match *streams {
        [s] => dst.copy_from_slice(s),
        [a, b] => simd::interleave2([a, b], dst),
        [a, b, c, d] => simd::interleave4([a, b, c, d], dst),
        [a, b, c, d, e, f, g, h] => simd::interleave8([a, b, c, d, e, f, g, h], dst),
        _ => interleave_blocked(streams, dst),
    }
}

/// 16 elements at a time with SSE2 byte interleaves (part of every x86-64 CPU, reached safely
/// through `safe_arch`), then the portable word-transpose code for what is left.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
mod simd {
    use safe_arch::{
        m128i, pack_i16_to_u8_m128i, set_splat_i16_m128i, shr_imm_u16_m128i, unpack_high_i16_m128i,
        unpack_high_i32_m128i, unpack_high_i8_m128i, unpack_low_i16_m128i, unpack_low_i32_m128i,
        unpack_low_i8_m128i,
    };

    fn load(bytes: &[u8], at: usize) -> m128i {
        let chunk: [u8; 16] = bytes[at..at + 16].try_into().expect("16 bytes");
        m128i::from(chunk)
    }

    fn store(bytes: &mut [u8], at: usize, v: m128i) {
        let chunk: [u8; 16] = v.into();
        bytes[at..at + 16].copy_from_slice(&chunk);
    }

    /// One round of byte interleaves over `N` registers, pairing registers whose index differs
    /// in bit `K`: the low halves interleaved replace the register with bit `K` clear, the high
    /// halves the one with it set. Seen on the byte address (register index, then byte index),
    /// register bit `K` becomes byte bit 0, byte bits 0-2 move up by one, and byte bit 3 takes
    /// register bit `K`'s place.
    #[inline(always)]
    fn interleave_round<const N: usize, const K: usize>(s: [m128i; N]) -> [m128i; N] {
        let mut out = s;
        for x in 0..N {
            if x & (1 << K) == 0 {
                let y = x | (1 << K);
                out[x] = unpack_low_i8_m128i(s[x], s[y]);
                out[y] = unpack_high_i8_m128i(s[x], s[y]);
            }
        }
        out
    }

    /// Bytes `j` of elements `i..i+16` gathered: `dst[j*n + i ..][..16]` for each `j < 8`.
    ///
    /// Register `r` holds elements `2r` and `2r + 1`, so the byte address is element bits
    /// `i3 i2 i1 | i0 j2 j1 j0`. Four [`interleave_round`]s on register bits 2, 1, 0, 2 bring
    /// `i3 i2 i1 i0` into the byte index and leave the register index as `j0 j2 j1`.
    pub(super) fn shuffle8(src: &[u8], dst: &mut [u8]) {
        let n = src.len() / 8;
        let blocks = n / 16;
        for b in 0..blocks {
            let v: [m128i; 8] = std::array::from_fn(|k| load(src, b * 128 + 16 * k));
            let v = interleave_round::<8, 2>(v);
            let v = interleave_round::<8, 1>(v);
            let v = interleave_round::<8, 0>(v);
            let v = interleave_round::<8, 2>(v);
            for j in 0..8 {
                let register = ((j & 1) << 2) | (j >> 1);
                store(dst, j * n + b * 16, v[register]);
            }
        }
        super::shuffle_tail8(src, dst, blocks * 16);
    }

    /// Interleaves eight streams of 16 bytes at a time: the inverse of [`shuffle8`].
    pub(super) fn interleave8(s: [&[u8]; 8], dst: &mut [u8]) {
        let len = s[0].len();
        let blocks = len / 16;
        for b in 0..blocks {
            let s: [m128i; 8] = std::array::from_fn(|j| load(s[j], b * 16));
            // Bytes (2k, 2k+1) of elements 0-7 and 8-15.
            let mut a = [s[0]; 8];
            for k in 0..4 {
                a[2 * k] = unpack_low_i8_m128i(s[2 * k], s[2 * k + 1]);
                a[2 * k + 1] = unpack_high_i8_m128i(s[2 * k], s[2 * k + 1]);
            }
            // Bytes 0-3 or 4-7 of four elements.
            let mut c = [s[0]; 8];
            for (h, (lo, hi)) in [(0, 2), (4, 6), (1, 3), (5, 7)].into_iter().enumerate() {
                c[2 * h] = unpack_low_i16_m128i(a[lo], a[hi]);
                c[2 * h + 1] = unpack_high_i16_m128i(a[lo], a[hi]);
            }
            // c: [0-3 of e0-3, 0-3 of e4-7, 4-7 of e0-3, 4-7 of e4-7, then the same for e8-15].
            let base = b * 128;
            for g in 0..4 {
                let (lo, hi) = match g {
                    0 => (c[0], c[2]),
                    1 => (c[1], c[3]),
                    2 => (c[4], c[6]),
                    _ => (c[5], c[7]),
                };
                store(dst, base + 32 * g, unpack_low_i32_m128i(lo, hi));
                store(dst, base + 32 * g + 16, unpack_high_i32_m128i(lo, hi));
            }
        }
        super::interleave_tail(&s, dst, blocks * 16);
    }

    /// Interleaves four 16-byte rows: byte `i` of row `j` moves to byte `4 * i + j` of the
    /// 64-byte result. Seen as a permutation of the 6-bit byte index, this rotates the index
    /// left by two bits, so three applications are the identity.
    #[inline(always)]
    fn interleave4_rows(s: [m128i; 4]) -> [m128i; 4] {
        let a = [
            unpack_low_i8_m128i(s[0], s[1]),
            unpack_high_i8_m128i(s[0], s[1]),
            unpack_low_i8_m128i(s[2], s[3]),
            unpack_high_i8_m128i(s[2], s[3]),
        ];
        [
            unpack_low_i16_m128i(a[0], a[2]),
            unpack_high_i16_m128i(a[0], a[2]),
            unpack_low_i16_m128i(a[1], a[3]),
            unpack_high_i16_m128i(a[1], a[3]),
        ]
    }

    /// Bytes `j` of elements `i..i+16` gathered: `dst[j*n + i ..][..16]` for each `j < 4`.
    ///
    /// The shuffle of 16 elements rotates the byte index right by two bits, which is
    /// [`interleave4_rows`] applied twice. (A direct de-interleave network of byte unpacks is
    /// rewritten by the compiler into pack sequences several times slower.)
    pub(super) fn shuffle4(src: &[u8], dst: &mut [u8]) {
        let n = src.len() / 4;
        let blocks = n / 16;
        for b in 0..blocks {
            let v: [m128i; 4] = std::array::from_fn(|k| load(src, b * 64 + 16 * k));
            let streams = interleave4_rows(interleave4_rows(v));
            for (j, stream) in streams.into_iter().enumerate() {
                store(dst, j * n + b * 16, stream);
            }
        }
        super::shuffle_tail4(src, dst, blocks * 16);
    }

    /// Interleaves four streams of 16 bytes at a time: the inverse of [`shuffle4`], one
    /// [`interleave4_rows`] round.
    pub(super) fn interleave4(s: [&[u8]; 4], dst: &mut [u8]) {
        let len = s[0].len();
        let blocks = len / 16;
        for b in 0..blocks {
            let v: [m128i; 4] = std::array::from_fn(|j| load(s[j], b * 16));
            for (k, v) in interleave4_rows(v).into_iter().enumerate() {
                store(dst, b * 64 + 16 * k, v);
            }
        }
        super::interleave_tail(&s, dst, blocks * 16);
    }

    /// Bytes 0 and 1 of elements `i..i+16` gathered: even bytes are masked and packed, odd
    /// bytes shifted down and packed.
    pub(super) fn shuffle2(src: &[u8], dst: &mut [u8]) {
        let n = src.len() / 2;
        let blocks = n / 16;
        let low_byte = set_splat_i16_m128i(0x00ff);
        for b in 0..blocks {
            let (x, y) = (load(src, b * 32), load(src, b * 32 + 16));
            let even = pack_i16_to_u8_m128i(x & low_byte, y & low_byte);
            let odd = pack_i16_to_u8_m128i(shr_imm_u16_m128i::<8>(x), shr_imm_u16_m128i::<8>(y));
            store(dst, b * 16, even);
            store(dst, n + b * 16, odd);
        }
        super::shuffle_tail(src, dst, 2, blocks * 16);
    }

    /// Interleaves two streams of 16 bytes at a time: the inverse of [`shuffle2`].
    pub(super) fn interleave2(s: [&[u8]; 2], dst: &mut [u8]) {
        let len = s[0].len();
        let blocks = len / 16;
        for b in 0..blocks {
            let (even, odd) = (load(s[0], b * 16), load(s[1], b * 16));
            store(dst, b * 32, unpack_low_i8_m128i(even, odd));
            store(dst, b * 32 + 16, unpack_high_i8_m128i(even, odd));
        }
        super::interleave_tail(&s, dst, blocks * 16);
    }
}

/// Without SSE2: the portable word-transpose code for everything.
#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
mod simd {
    pub(super) use super::{interleave4, interleave8, shuffle4, shuffle8};

    pub(super) fn shuffle2(src: &[u8], dst: &mut [u8]) {
        super::shuffle_fixed::<2>(src, dst)
    }

    pub(super) fn interleave2(s: [&[u8]; 2], dst: &mut [u8]) {
        super::interleave_blocked(&s, dst)
    }
}

/// Shuffles 8-byte elements from element `from` on (blocks of eight, then one by one).
fn shuffle_tail8(src: &[u8], dst: &mut [u8], from: usize) {
    shuffle8_from(src, dst, from)
}

fn shuffle_tail4(src: &[u8], dst: &mut [u8], from: usize) {
    shuffle4_from(src, dst, from)
}

/// Transposes the 8x8 byte matrix whose rows are the little-endian bytes of `w[0..8]`: afterwards
/// byte `i` of `w[j]` is what byte `j` of `w[i]` was. Three rounds of block swaps (1, 2 and 4
/// bytes) on whole words; the transpose is its own inverse.
#[inline(always)]
fn transpose8x8(w: &mut [u64; 8]) {
    const MASKS: [(u32, u64); 3] = [
        (8, 0x00ff_00ff_00ff_00ff),
        (16, 0x0000_ffff_0000_ffff),
        (32, 0x0000_0000_ffff_ffff),
    ];
    for (round, (shift, mask)) in MASKS.into_iter().enumerate() {
        let distance = 1 << round;
        for i in 0..8 {
            if i & distance == 0 {
                let t = ((w[i] >> shift) ^ w[i + distance]) & mask;
                w[i + distance] ^= t;
                w[i] ^= t << shift;
            }
        }
    }
}

/// The 4x4 version of [`transpose8x8`] on 32-bit words.
#[inline(always)]
fn transpose4x4(w: &mut [u32; 4]) {
    const MASKS: [(u32, u32); 2] = [(8, 0x00ff_00ff), (16, 0x0000_ffff)];
    for (round, (shift, mask)) in MASKS.into_iter().enumerate() {
        let distance = 1 << round;
        for i in 0..4 {
            if i & distance == 0 {
                let t = ((w[i] >> shift) ^ w[i + distance]) & mask;
                w[i + distance] ^= t;
                w[i] ^= t << shift;
            }
        }
    }
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

/// Shuffle of 8-byte elements, eight elements (one 8x8 byte transpose) at a time.
#[cfg_attr(all(target_arch = "x86_64", target_feature = "sse2"), allow(dead_code))]
fn shuffle8(src: &[u8], dst: &mut [u8]) {
    shuffle8_from(src, dst, 0)
}

/// [`shuffle8`] of the elements from `from` (a multiple of 8) on.
fn shuffle8_from(src: &[u8], dst: &mut [u8], from: usize) {
    let n = src.len() / 8;
    let groups = n / 8;
    for g in from / 8..groups {
        let base = g * 64;
        let mut w = [0u64; 8];
        for (i, word) in w.iter_mut().enumerate() {
            *word = read_u64(src, base + i * 8);
        }
        transpose8x8(&mut w);
        for (j, word) in w.iter().enumerate() {
            dst[j * n + g * 8..j * n + g * 8 + 8].copy_from_slice(&word.to_le_bytes());
        }
    }
    shuffle_tail(src, dst, 8, groups * 8);
}

/// Interleaves eight streams, eight elements (one 8x8 byte transpose) at a time.
#[cfg_attr(all(target_arch = "x86_64", target_feature = "sse2"), allow(dead_code))]
fn interleave8(s: [&[u8]; 8], dst: &mut [u8]) {
    let groups = s[0].len() / 8;
    for g in 0..groups {
        let mut w = [0u64; 8];
        for (j, word) in w.iter_mut().enumerate() {
            *word = read_u64(s[j], g * 8);
        }
        transpose8x8(&mut w);
        let base = g * 64;
        for (i, word) in w.iter().enumerate() {
            dst[base + i * 8..base + i * 8 + 8].copy_from_slice(&word.to_le_bytes());
        }
    }
    interleave_tail(&s, dst, groups * 8);
}

/// Shuffle of 4-byte elements, eight elements (two 4x4 byte transposes) at a time.
#[cfg_attr(all(target_arch = "x86_64", target_feature = "sse2"), allow(dead_code))]
fn shuffle4(src: &[u8], dst: &mut [u8]) {
    shuffle4_from(src, dst, 0)
}

fn shuffle4_from(src: &[u8], dst: &mut [u8], from: usize) {
    let n = src.len() / 4;
    let groups = n / 8;
    for g in from / 8..groups {
        let base = g * 32;
        let mut lo = [0u32; 4];
        let mut hi = [0u32; 4];
        for i in 0..4 {
            lo[i] = read_u32(src, base + i * 4);
            hi[i] = read_u32(src, base + 16 + i * 4);
        }
        transpose4x4(&mut lo);
        transpose4x4(&mut hi);
        for j in 0..4 {
            let word = lo[j] as u64 | (hi[j] as u64) << 32;
            dst[j * n + g * 8..j * n + g * 8 + 8].copy_from_slice(&word.to_le_bytes());
        }
    }
    shuffle_tail(src, dst, 4, groups * 8);
}

/// Interleaves four streams, eight elements (two 4x4 byte transposes) at a time.
#[cfg_attr(all(target_arch = "x86_64", target_feature = "sse2"), allow(dead_code))]
fn interleave4(s: [&[u8]; 4], dst: &mut [u8]) {
    let groups = s[0].len() / 8;
    for g in 0..groups {
        let mut lo = [0u32; 4];
        let mut hi = [0u32; 4];
        for j in 0..4 {
            let word = read_u64(s[j], g * 8);
            lo[j] = word as u32;
            hi[j] = (word >> 32) as u32;
        }
        transpose4x4(&mut lo);
        transpose4x4(&mut hi);
        let base = g * 32;
        for i in 0..4 {
            dst[base + i * 4..base + i * 4 + 4].copy_from_slice(&lo[i].to_le_bytes());
            dst[base + 16 + i * 4..base + 16 + i * 4 + 4].copy_from_slice(&hi[i].to_le_bytes());
        }
    }
    interleave_tail(&s, dst, groups * 8);
}

/// Shuffles elements `from..n` one byte at a time, and copies the trailing partial element.
fn shuffle_tail(src: &[u8], dst: &mut [u8], size: usize, from: usize) {
    let n = src.len() / size;
    for i in from..n {
        for j in 0..size {
            dst[j * n + i] = src[i * size + j];
        }
    }
    dst[n * size..].copy_from_slice(&src[n * size..]);
}

/// Interleaves elements `from..` of `streams` one byte at a time.
fn interleave_tail(streams: &[&[u8]], dst: &mut [u8], from: usize) {
    let size = streams.len();
    for i in from..streams[0].len() {
        for (j, stream) in streams.iter().enumerate() {
            dst[i * size + j] = stream[i];
        }
    }
}

fn shuffle_fixed<const S: usize>(src: &[u8], dst: &mut [u8]) {
    let n = src.len() / S;
    let body = n * S;
    let mut start = 0;
    while start < n {
        let len = BLOCK.min(n - start);
        let block = &src[start * S..(start + len) * S];
        for j in 0..S {
            let out = &mut dst[j * n + start..j * n + start + len];
            for (o, element) in out.iter_mut().zip(block.chunks_exact(S)) {
                *o = element[j];
            }
        }
        start += len;
    }
    dst[body..].copy_from_slice(&src[body..]);
}

/// Interleaves any number of streams, a block of elements at a time (the block's output stays
/// in cache while each stream is read in turn).
fn interleave_blocked(streams: &[&[u8]], dst: &mut [u8]) {
    let size = streams.len();
    let n = streams[0].len();
    let mut start = 0;
    while start < n {
        let len = BLOCK.min(n - start);
        let block = &mut dst[start * size..(start + len) * size];
        for (j, stream) in streams.iter().enumerate() {
            for (element, &b) in block
                .chunks_exact_mut(size)
                .zip(&stream[start..start + len])
            {
                element[j] = b;
            }
        }
        start += len;
    }
}

fn shuffle_any(src: &[u8], dst: &mut [u8], size: usize) {
    let n = src.len() / size;
    for (i, element) in src.chunks_exact(size).enumerate() {
        for (j, &b) in element.iter().enumerate() {
            dst[j * n + i] = b;
        }
    }
    dst[n * size..].copy_from_slice(&src[n * size..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn reference(src: &[u8], size: usize) -> Vec<u8> {
        let n = src.len() / size;
        let mut out = Vec::with_capacity(src.len());
        for j in 0..size {
            for i in 0..n {
                out.push(src[i * size + j]);
            }
        }
        out.extend_from_slice(&src[n * size..]);
        out
    }

    proptest! {
        #[test]
        fn matches_the_definition_and_inverts(
            src in proptest::collection::vec(any::<u8>(), 0..5000),
            size in prop::sample::select(vec![1usize, 2, 3, 4, 8, 16]),
        ) {
            let mut shuffled = vec![0; src.len()];
            shuffle(&src, &mut shuffled, size);
            prop_assert_eq!(&shuffled, &reference(&src, size));
            let mut back = vec![0; src.len()];
            unshuffle(&shuffled, &mut back, size);
            prop_assert_eq!(back, src);
        }

        #[test]
        fn unshuffles_from_pieces(
            src in proptest::collection::vec(any::<u8>(), 0..5000),
            size in prop::sample::select(vec![1usize, 2, 3, 4, 8, 16]),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..12),
        ) {
            let mut shuffled = vec![0; src.len()];
            shuffle(&src, &mut shuffled, size);
            // Split the shuffled buffer at arbitrary points (empty pieces included).
            let mut at: Vec<usize> = cuts.iter().map(|c| c.index(src.len() + 1)).collect();
            at.sort_unstable();
            let mut parts = Vec::new();
            let mut from = 0;
            for &cut in &at {
                parts.push(&shuffled[from..cut]);
                from = cut;
            }
            parts.push(&shuffled[from..]);
            let mut back = vec![0; src.len()];
            unshuffle_parts(&parts, &mut back, size);
            prop_assert_eq!(back, src);
        }
    }

    #[test]
    fn spans_several_blocks() {
        let src: Vec<u8> = (0..(3 * BLOCK * 8 + 13))
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let mut shuffled = vec![0; src.len()];
        shuffle(&src, &mut shuffled, 8);
        assert_eq!(shuffled, reference(&src, 8));
        let mut back = vec![0; src.len()];
        unshuffle(&shuffled, &mut back, 8);
        assert_eq!(back, src);
    }

    #[test]
    fn unshuffle_parts_reads_the_pieces_in_order() {
        let mut dst = [0u8; 6];
        unshuffle_parts(&[&[1, 3], &[5, 2, 4], &[6]], &mut dst, 2);
        assert_eq!(dst, [1, 2, 3, 4, 5, 6]);
    }
}

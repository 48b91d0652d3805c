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
        2 => shuffle_fixed::<2>(src, dst),
        4 => shuffle4(src, dst),
        8 => shuffle8(src, dst),
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
    assert!(itemsize > 0, "unshuffle: itemsize must be positive");
    match itemsize {
        1 => dst.copy_from_slice(src),
        2 => unshuffle_fixed::<2>(src, dst),
        4 => unshuffle4(src, dst),
        8 => unshuffle8(src, dst),
        16 => unshuffle_fixed::<16>(src, dst),
        _ => unshuffle_any(src, dst, itemsize),
    }
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
fn shuffle8(src: &[u8], dst: &mut [u8]) {
    let n = src.len() / 8;
    let groups = n / 8;
    for g in 0..groups {
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

fn unshuffle8(src: &[u8], dst: &mut [u8]) {
    let n = src.len() / 8;
    let groups = n / 8;
    for g in 0..groups {
        let mut w = [0u64; 8];
        for (j, word) in w.iter_mut().enumerate() {
            *word = read_u64(src, j * n + g * 8);
        }
        transpose8x8(&mut w);
        let base = g * 64;
        for (i, word) in w.iter().enumerate() {
            dst[base + i * 8..base + i * 8 + 8].copy_from_slice(&word.to_le_bytes());
        }
    }
    unshuffle_tail(src, dst, 8, groups * 8);
}

/// Shuffle of 4-byte elements, eight elements (two 4x4 byte transposes) at a time.
fn shuffle4(src: &[u8], dst: &mut [u8]) {
    let n = src.len() / 4;
    let groups = n / 8;
    for g in 0..groups {
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

fn unshuffle4(src: &[u8], dst: &mut [u8]) {
    let n = src.len() / 4;
    let groups = n / 8;
    for g in 0..groups {
        let mut lo = [0u32; 4];
        let mut hi = [0u32; 4];
        for j in 0..4 {
            let word = read_u64(src, j * n + g * 8);
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
    unshuffle_tail(src, dst, 4, groups * 8);
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

fn unshuffle_tail(src: &[u8], dst: &mut [u8], size: usize, from: usize) {
    let n = src.len() / size;
    for i in from..n {
        for j in 0..size {
            dst[i * size + j] = src[j * n + i];
        }
    }
    dst[n * size..].copy_from_slice(&src[n * size..]);
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

fn unshuffle_fixed<const S: usize>(src: &[u8], dst: &mut [u8]) {
    let n = src.len() / S;
    let body = n * S;
    let mut start = 0;
    while start < n {
        let len = BLOCK.min(n - start);
        let block = &mut dst[start * S..(start + len) * S];
        for j in 0..S {
            let input = &src[j * n + start..j * n + start + len];
            for (element, &b) in block.chunks_exact_mut(S).zip(input) {
                element[j] = b;
            }
        }
        start += len;
    }
    dst[body..].copy_from_slice(&src[body..]);
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

fn unshuffle_any(src: &[u8], dst: &mut [u8], size: usize) {
    let n = src.len() / size;
    for (i, element) in dst.chunks_exact_mut(size).enumerate() {
        for (j, b) in element.iter_mut().enumerate() {
            *b = src[j * n + i];
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
}

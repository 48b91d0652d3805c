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
        4 => shuffle_fixed::<4>(src, dst),
        8 => shuffle_fixed::<8>(src, dst),
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
        4 => unshuffle_fixed::<4>(src, dst),
        8 => unshuffle_fixed::<8>(src, dst),
        16 => unshuffle_fixed::<16>(src, dst),
        _ => unshuffle_any(src, dst, itemsize),
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

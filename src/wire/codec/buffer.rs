//! Owners that let a [`Bytes`] hold typed or aligned memory without copying it: an owned
//! array's element vector, and buffers aligned for every element type. Large buffers are
//! recycled through a small pool when their last `Bytes` drops, so a stream of large messages
//! does not pay the kernel's page faults for fresh memory on every message.

use std::sync::Mutex;

use bytes::Bytes;

use crate::wire::dtype::Element;

/// The largest alignment any [`Element`] type needs (`f64`, `i64`, `Complex<f64>`).
#[cfg(test)]
pub(crate) const MAX_ALIGN: usize = 8;

/// Keeps a `Vec<T>` alive behind a `Bytes` that views its elements as bytes.
struct ElementVec<T: Element>(Vec<T>);

impl<T: Element> AsRef<[u8]> for ElementVec<T> {
    fn as_ref(&self) -> &[u8] {
        bytemuck::cast_slice(&self.0)
    }
}

/// Wraps an element vector as bytes without copying: the `Bytes` points into the vector's own
/// allocation, which is freed when the last clone of the `Bytes` drops.
pub(crate) fn bytes_from_vec<T: Element>(vec: Vec<T>) -> Bytes {
    Bytes::from_owner(ElementVec(vec))
}

/// Buffers smaller than this are not pooled: the allocator serves them well.
const POOL_MIN_BYTES: usize = 256 << 10;

/// Most buffers kept for reuse, and most bytes they may hold together.
const POOL_MAX_BUFFERS: usize = 16;
const POOL_MAX_BYTES: usize = 512 << 20;

/// Recycled word buffers, by capacity.
static POOL: Mutex<Vec<Vec<u64>>> = Mutex::new(Vec::new());

fn take_from_pool(words: usize) -> Option<Vec<u64>> {
    if words * 8 < POOL_MIN_BYTES {
        return None;
    }
    let mut pool = POOL.lock().ok()?;
    // The smallest buffer that fits, and not wastefully larger than needed.
    let best = pool
        .iter()
        .enumerate()
        .filter(|(_, v)| v.capacity() >= words && v.capacity() <= words.saturating_mul(2))
        .min_by_key(|(_, v)| v.capacity())
        .map(|(i, _)| i)?;
    Some(pool.swap_remove(best))
}

fn return_to_pool(buffer: Vec<u64>) {
    if buffer.capacity() * 8 < POOL_MIN_BYTES {
        return;
    }
    if let Ok(mut pool) = POOL.lock() {
        let held: usize = pool.iter().map(|v| v.capacity() * 8).sum();
        if pool.len() < POOL_MAX_BUFFERS && held + buffer.capacity() * 8 <= POOL_MAX_BYTES {
            pool.push(buffer);
        }
    }
}

/// A byte buffer whose start is aligned for every element type (8 bytes). Its memory returns to a small pool
/// of large buffers when the buffer (or the last `Bytes` made from it) drops.
pub(crate) struct AlignedBuf {
    words: Vec<u64>,
    len: usize,
}

impl AlignedBuf {
    /// A zeroed buffer of `len` bytes.
    #[cfg(test)]
    pub(crate) fn zeroed(len: usize) -> AlignedBuf {
        let mut buf = AlignedBuf::for_overwrite(len);
        buf.as_mut_slice().fill(0);
        buf
    }

    /// A buffer of `len` bytes whose contents are unspecified (zeros, or bytes of an earlier
    /// message): for callers that overwrite every byte before the buffer is read.
    pub(crate) fn for_overwrite(len: usize) -> AlignedBuf {
        let words_needed = len.div_ceil(8);
        let words = match take_from_pool(words_needed) {
            Some(mut words) => {
                words.resize(words_needed, 0);
                words
            }
            None => vec![0u64; words_needed],
        };
        AlignedBuf { words, len }
    }

    /// The buffer, writable.
    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut bytemuck::cast_slice_mut(&mut self.words)[..self.len]
    }

    /// Freezes the buffer into `Bytes` without copying.
    pub(crate) fn into_bytes(self) -> Bytes {
        Bytes::from_owner(self)
    }

    /// Its first `len` bytes as `Bytes`, for a buffer sized for the worst case (a compression
    /// bound): frozen as it is, or, when `len` is under half the buffer, copied into a buffer
    /// of the right size, so that a well-compressed frame waiting in ZeroMQ's queue does not
    /// pin the large one.
    pub(crate) fn into_bytes_of_len(self, len: usize) -> Bytes {
        if len < self.len / 2 {
            Bytes::copy_from_slice(&self.as_ref()[..len])
        } else {
            self.into_bytes().slice(..len)
        }
    }
}

impl AsRef<[u8]> for AlignedBuf {
    fn as_ref(&self) -> &[u8] {
        &bytemuck::cast_slice(&self.words)[..self.len]
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        return_to_pool(std::mem::take(&mut self.words));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vec_becomes_bytes_in_place() {
        let v: Vec<f64> = vec![1.0, 2.0, 3.0];
        let ptr = v.as_ptr() as *const u8;
        let b = bytes_from_vec(v);
        assert_eq!(b.as_ptr(), ptr);
        assert_eq!(b.len(), 24);
        assert_eq!(&b[..8], &1.0f64.to_ne_bytes());
    }

    #[test]
    fn large_buffers_are_recycled() {
        let len = 1 << 20;
        let mut first = AlignedBuf::for_overwrite(len);
        first.as_mut_slice().fill(7);
        let ptr = first.as_mut_slice().as_ptr();
        drop(first.into_bytes());
        // Another thread's test may take it first; look for it a few times.
        let again = (0..4)
            .map(|_| AlignedBuf::for_overwrite(len))
            .collect::<Vec<_>>();
        assert!(again.iter().any(|b| b.as_ref().as_ptr() == ptr));
        let zeroed = AlignedBuf::zeroed(len);
        assert!(zeroed.as_ref().iter().all(|&b| b == 0));
    }

    #[test]
    fn aligned_buffer_is_aligned_and_sized() {
        for len in [0, 1, 7, 8, 9, 1000] {
            let mut buf = AlignedBuf::zeroed(len);
            assert_eq!(buf.as_mut_slice().len(), len);
            let b = buf.into_bytes();
            assert_eq!(b.len(), len);
            assert_eq!(b.as_ptr() as usize % MAX_ALIGN, 0);
        }
    }
}

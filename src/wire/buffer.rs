//! Owners that let a [`Bytes`] hold typed or aligned memory without copying it: an owned
//! array's element vector, and a zeroed buffer aligned for every element type.

use bytes::Bytes;

use super::dtype::Element;

/// The largest alignment any [`Element`] type needs (`f64`, `i64`, `Complex<f64>`).
pub const MAX_ALIGN: usize = 8;

/// Keeps a `Vec<T>` alive behind a `Bytes` that views its elements as bytes.
struct ElementVec<T: Element>(Vec<T>);

impl<T: Element> AsRef<[u8]> for ElementVec<T> {
    fn as_ref(&self) -> &[u8] {
        bytemuck::cast_slice(&self.0)
    }
}

/// Wraps an element vector as bytes without copying: the `Bytes` points into the vector's own
/// allocation, which is freed when the last clone of the `Bytes` drops.
pub fn bytes_from_vec<T: Element>(vec: Vec<T>) -> Bytes {
    Bytes::from_owner(ElementVec(vec))
}

/// A zeroed byte buffer whose start is aligned to [`MAX_ALIGN`].
pub struct AlignedBuf {
    words: Vec<u64>,
    len: usize,
}

impl AlignedBuf {
    /// A zeroed buffer of `len` bytes, aligned to [`MAX_ALIGN`].
    pub fn zeroed(len: usize) -> AlignedBuf {
        AlignedBuf {
            words: vec![0u64; len.div_ceil(8)],
            len,
        }
    }

    /// The buffer, writable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut bytemuck::cast_slice_mut(&mut self.words)[..self.len]
    }

    /// Freezes the buffer into `Bytes` without copying.
    pub fn into_bytes(self) -> Bytes {
        Bytes::from_owner(self)
    }
}

impl AsRef<[u8]> for AlignedBuf {
    fn as_ref(&self) -> &[u8] {
        &bytemuck::cast_slice(&self.words)[..self.len]
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

//! Frames to arrays: [`decode`] checks a message against its header and the limits, and
//! [`DecodedArray`] hands out typed views that borrow the frame when they can.

use bytes::Bytes;
use ndarray::{ArrayD, ArrayViewD, CowArray, IxDyn, ShapeBuilder};
use num_complex::Complex;

use super::codec::{check_buffer, decode_buffer};
use super::dtype::{DType, Element, Kind};
use super::error::{DecodeError, ViewError};
use super::header::{ArrayMeta, Header, Order};
use super::limits::Limits;
use super::template::HeaderCache;

/// A decoded message: its header and one array per buffer frame.
#[derive(Debug, Clone)]
pub struct Record {
    /// The parsed header.
    pub header: Header,
    /// The arrays, in frame order.
    pub arrays: Vec<DecodedArray>,
    header_bytes: usize,
}

impl Record {
    /// The array called `name`, if any.
    pub fn array(&self, name: &str) -> Option<&DecodedArray> {
        self.arrays.iter().find(|a| a.meta.name == name)
    }

    /// Total bytes of the frames as received (header included).
    pub fn wire_bytes(&self) -> u64 {
        self.header_bytes as u64 + self.arrays.iter().map(|a| a.wire_len as u64).sum::<u64>()
    }

    /// Total decoded bytes of all arrays.
    pub fn raw_bytes(&self) -> u64 {
        self.arrays.iter().map(|a| a.meta.nbytes).sum()
    }
}

/// One decoded array: its header entry and its decoded bytes, in the byte order and element
/// order the header names.
#[derive(Clone)]
pub struct DecodedArray {
    meta: ArrayMeta,
    data: Bytes,
    wire_len: usize,
}

impl std::fmt::Debug for DecodedArray {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecodedArray")
            .field("meta", &self.meta)
            .field(
                "data",
                &format_args!("<{} bytes at {:p}>", self.data.len(), self.data.as_ptr()),
            )
            .field("wire_len", &self.wire_len)
            .finish()
    }
}

/// Decodes a message `[header, buf_0, ..., buf_{n-1}]` (without a topic frame).
///
/// Raw buffers are not copied: each array keeps a clone of its frame's `Bytes`. zstd buffers are
/// decompressed into new aligned buffers of exactly `nbytes`, after the header's claims have been
/// checked against `limits`. Boolean arrays must hold only 0 and 1.
pub fn decode(frames: &[Bytes], limits: &Limits) -> Result<Record, DecodeError> {
    let (header_frame, buffers) = frames.split_first().ok_or(DecodeError::Empty)?;
    let header = Header::parse(header_frame, limits)?;
    decode_buffers(header, header_frame.len(), buffers, limits)
}

/// Decodes a stream of messages under fixed limits, as [`decode`] does, reading the headers
/// through a [`HeaderCache`]: a header that differs from a recent one in `seq` and `time` only
/// is read by parsing those two fields.
///
/// ```
/// # use ndarray::Array1;
/// # use ndbridge::wire::{encode, ArrayBuffer, Compression, Envelope};
/// use ndbridge::wire::{Decoder, Limits};
///
/// let mut decoder = Decoder::new(Limits::default());
/// for seq in 0..3 {
///     # let envelope = Envelope { name: "u".into(), source: "w".into(), session: "s".into(),
///     #     seq, time: 0.0, attrs: None };
///     # let a = ArrayBuffer::from_owned(Array1::<f64>::ones(4));
///     # let msg = encode(envelope, vec![("u".into(), a)], Compression::Raw)?;
///     let record = decoder.decode(&msg.frames)?;
///     assert_eq!(record.header.seq, seq);
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Decoder {
    headers: HeaderCache,
}

impl Decoder {
    /// A decoder that checks every message against `limits`.
    pub fn new(limits: Limits) -> Self {
        Decoder {
            headers: HeaderCache::new(limits),
        }
    }

    /// The limits messages are checked against.
    pub fn limits(&self) -> &Limits {
        self.headers.limits()
    }

    /// Decodes a message `[header, buf_0, ..., buf_{n-1}]`, with the same result as [`decode`].
    pub fn decode(&mut self, frames: &[Bytes]) -> Result<Record, DecodeError> {
        let header = self.header(frames)?;
        self.buffers(header, frames)
    }

    /// The first half of [`Decoder::decode`]: parses and checks the header of a message, so
    /// that a caller can weigh what decoding its buffers will take
    /// (the collector bounds it in bytes) before
    /// [`Decoder::buffers`] does it.
    pub fn header(&mut self, frames: &[Bytes]) -> Result<Header, DecodeError> {
        let header_frame = frames.first().ok_or(DecodeError::Empty)?;
        self.headers.parse(header_frame)
    }

    /// The checks of [`Decoder::buffers`] that come before any allocation: the frame count,
    /// raw frames' lengths, zstd frames' declared sizes. For a caller that
    /// weighs what decoding will take only for messages that can be decoded.
    pub fn check_buffers(&self, header: &Header, frames: &[Bytes]) -> Result<(), DecodeError> {
        let buffers = frames.get(1..).unwrap_or_default();
        check_frame_count(header, buffers)?;
        header
            .arrays
            .iter()
            .zip(buffers)
            .try_for_each(|(meta, frame)| check_buffer(meta, frame, self.limits()))
    }

    /// The second half of [`Decoder::decode`]: checks and decodes the buffer frames of
    /// `frames` against the `header` that [`Decoder::header`] read from it.
    pub fn buffers(&self, header: Header, frames: &[Bytes]) -> Result<Record, DecodeError> {
        let (header_frame, buffers) = frames.split_first().ok_or(DecodeError::Empty)?;
        decode_buffers(header, header_frame.len(), buffers, self.limits())
    }
}

/// One buffer frame per array.
fn check_frame_count(header: &Header, buffers: &[Bytes]) -> Result<(), DecodeError> {
    if buffers.len() != header.arrays.len() {
        return Err(DecodeError::FrameCount {
            expected: header.arrays.len() + 1,
            found: buffers.len() + 1,
        });
    }
    Ok(())
}

/// Checks the buffer frames against a parsed header and decodes each.
fn decode_buffers(
    header: Header,
    header_bytes: usize,
    buffers: &[Bytes],
    limits: &Limits,
) -> Result<Record, DecodeError> {
    check_frame_count(&header, buffers)?;
    let arrays = header
        .arrays
        .iter()
        .zip(buffers)
        .map(|(meta, frame)| {
            let data = decode_buffer(meta, frame, limits)?;
            if meta.dtype.kind() == Kind::Bool {
                if let Some(index) = data.iter().position(|&b| b > 1) {
                    return Err(DecodeError::InvalidBool {
                        array: meta.name.clone(),
                        index: index as u64,
                        value: data[index],
                    });
                }
            }
            Ok(DecodedArray {
                data,
                meta: meta.clone(),
                wire_len: frame.len(),
            })
        })
        .collect::<Result<Vec<_>, DecodeError>>()?;
    Ok(Record {
        header_bytes,
        header,
        arrays,
    })
}

impl DecodedArray {
    /// The array's header entry.
    pub fn meta(&self) -> &ArrayMeta {
        &self.meta
    }

    /// The array's name.
    pub fn name(&self) -> &str {
        &self.meta.name
    }

    /// Element type as sent (byte order included).
    pub fn dtype(&self) -> DType {
        self.meta.dtype
    }

    /// Shape.
    pub fn shape(&self) -> &[usize] {
        &self.meta.shape
    }

    /// The decoded bytes, in the sent byte order and element order.
    pub fn bytes(&self) -> &Bytes {
        &self.data
    }

    /// Length of the buffer frame as received.
    pub fn wire_len(&self) -> usize {
        self.wire_len
    }

    /// True when [`DecodedArray::borrow`] would succeed for `T`: same type, native byte order,
    /// and a buffer aligned for `T`.
    pub fn is_borrowable<T: Element>(&self) -> bool {
        self.borrow::<T>().is_ok()
    }

    /// A view that borrows the buffer, never copying. Fails with [`ViewError::Misaligned`] or
    /// [`ViewError::NotNative`] where [`DecodedArray::view`] would copy.
    pub fn borrow<T: Element>(&self) -> Result<ArrayViewD<'_, T>, ViewError> {
        self.check_type::<T>()?;
        if !self.meta.dtype.is_native() {
            return Err(ViewError::NotNative {
                array: self.meta.name.clone(),
                found: self.meta.dtype,
            });
        }
        let elements: &[T] = match bytemuck::checked::try_cast_slice(&self.data) {
            Ok(elements) => elements,
            Err(bytemuck::checked::CheckedCastError::PodCastError(_)) => {
                return Err(ViewError::Misaligned {
                    array: self.meta.name.clone(),
                    address: self.data.as_ptr() as usize,
                    align: std::mem::align_of::<T>(),
                })
            }
            Err(bytemuck::checked::CheckedCastError::InvalidBitPattern) => {
                return Err(self.invalid_bool())
            }
        };
        self.shaped(elements)
    }

    /// A typed view: borrowed from the frame when it is aligned and in native byte order (the
    /// common case, no copy), otherwise copied once into an aligned native-order array.
    /// [`CowArray::is_view`] tells which happened.
    ///
    /// ```
    /// # use ndarray::Array1;
    /// # use ndbridge::wire::{decode, encode, ArrayBuffer, Compression, Envelope, Limits};
    /// # let envelope = Envelope { name: "u".into(), source: "w".into(), session: "s".into(),
    /// #     seq: 0, time: 0.0, attrs: None };
    /// # let a = ArrayBuffer::from_owned(Array1::<f64>::ones(4));
    /// # let msg = encode(envelope, vec![("u".into(), a)], Compression::Raw)?;
    /// let record = decode(&msg.frames, &Limits::default())?;
    /// let u = record.arrays[0].view::<f64>()?;
    /// assert!(u.is_view()); // aligned, native raw frame: borrowed
    /// assert_eq!(u.sum(), 4.0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn view<T: Element>(&self) -> Result<CowArray<'_, T, IxDyn>, ViewError> {
        match self.borrow::<T>() {
            Ok(view) => Ok(CowArray::from(view)),
            Err(ViewError::Misaligned { .. } | ViewError::NotNative { .. }) => {
                Ok(CowArray::from(self.to_owned_array::<T>()?))
            }
            Err(other) => Err(other),
        }
    }

    /// An owned native-order copy of the array.
    pub fn to_owned_array<T: Element>(&self) -> Result<ArrayD<T>, ViewError> {
        self.check_type::<T>()?;
        let swap_unit = if self.meta.dtype.is_native() {
            1
        } else {
            self.meta.dtype.swap_unit()
        };
        let elements =
            T::copy_from_bytes(&self.data, swap_unit).map_err(|index| ViewError::InvalidBool {
                array: self.meta.name.clone(),
                index,
                value: self.data[index],
            })?;
        let shape = IxDyn(&self.meta.shape);
        let array = match self.meta.order {
            Order::C => ArrayD::from_shape_vec(shape, elements),
            Order::F => ArrayD::from_shape_vec(shape.f(), elements),
        };
        array.map_err(|e| self.shape_error(e))
    }

    /// A view of whatever type the array holds, for code that does not know it in advance.
    ///
    /// ```
    /// # use ndarray::Array1;
    /// # use ndbridge::wire::{decode, encode, ArrayBuffer, Compression, Envelope, Limits};
    /// use ndbridge::wire::DynArray;
    /// # let envelope = Envelope { name: "n".into(), source: "w".into(), session: "s".into(),
    /// #     seq: 0, time: 0.0, attrs: None };
    /// # let a = ArrayBuffer::from_owned(Array1::<i32>::from(vec![1, 2, 3]));
    /// # let msg = encode(envelope, vec![("n".into(), a)], Compression::Raw)?;
    /// let record = decode(&msg.frames, &Limits::default())?;
    /// match record.arrays[0].to_dyn()? {
    ///     DynArray::I32(a) => assert_eq!(a.sum(), 6),
    ///     other => panic!("unexpected {}", other.dtype()),
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn to_dyn(&self) -> Result<DynArray<'_>, ViewError> {
        let t = self.meta.dtype;
        Ok(match (t.kind(), t.itemsize()) {
            (Kind::Bool, _) => DynArray::Bool(self.view()?),
            (Kind::Int, 1) => DynArray::I8(self.view()?),
            (Kind::Int, 2) => DynArray::I16(self.view()?),
            (Kind::Int, 4) => DynArray::I32(self.view()?),
            (Kind::Int, _) => DynArray::I64(self.view()?),
            (Kind::UInt, 1) => DynArray::U8(self.view()?),
            (Kind::UInt, 2) => DynArray::U16(self.view()?),
            (Kind::UInt, 4) => DynArray::U32(self.view()?),
            (Kind::UInt, _) => DynArray::U64(self.view()?),
            (Kind::Float, 2) => DynArray::F16(self.view()?),
            (Kind::Float, 4) => DynArray::F32(self.view()?),
            (Kind::Float, _) => DynArray::F64(self.view()?),
            (Kind::Complex, 8) => DynArray::C64(self.view()?),
            (Kind::Complex, _) => DynArray::C128(self.view()?),
        })
    }

    fn check_type<T: Element>(&self) -> Result<(), ViewError> {
        if self.meta.dtype.to_native() == T::DTYPE {
            Ok(())
        } else {
            Err(ViewError::DTypeMismatch {
                array: self.meta.name.clone(),
                expected: T::DTYPE,
                found: self.meta.dtype,
            })
        }
    }

    fn shaped<'a, T: Element>(&self, elements: &'a [T]) -> Result<ArrayViewD<'a, T>, ViewError> {
        let shape = IxDyn(&self.meta.shape);
        let view = match self.meta.order {
            Order::C => ArrayViewD::from_shape(shape, elements),
            Order::F => ArrayViewD::from_shape(shape.f(), elements),
        };
        view.map_err(|e| self.shape_error(e))
    }

    fn shape_error(&self, e: ndarray::ShapeError) -> ViewError {
        ViewError::Shape {
            array: self.meta.name.clone(),
            reason: e.to_string(),
        }
    }

    fn invalid_bool(&self) -> ViewError {
        let index = self.data.iter().position(|&b| b > 1).unwrap_or(0);
        ViewError::InvalidBool {
            array: self.meta.name.clone(),
            index,
            value: self.data.get(index).copied().unwrap_or(0),
        }
    }
}

/// An array of any wire type, borrowed where possible (see [`DecodedArray::view`]).
#[derive(Debug, Clone)]
pub enum DynArray<'a> {
    /// `|b1`.
    Bool(CowArray<'a, bool, IxDyn>),
    /// `|i1`.
    I8(CowArray<'a, i8, IxDyn>),
    /// `<i2` / `>i2`.
    I16(CowArray<'a, i16, IxDyn>),
    /// `<i4` / `>i4`.
    I32(CowArray<'a, i32, IxDyn>),
    /// `<i8` / `>i8`.
    I64(CowArray<'a, i64, IxDyn>),
    /// `|u1`.
    U8(CowArray<'a, u8, IxDyn>),
    /// `<u2` / `>u2`.
    U16(CowArray<'a, u16, IxDyn>),
    /// `<u4` / `>u4`.
    U32(CowArray<'a, u32, IxDyn>),
    /// `<u8` / `>u8`.
    U64(CowArray<'a, u64, IxDyn>),
    /// `<f2` / `>f2`.
    F16(CowArray<'a, half::f16, IxDyn>),
    /// `<f4` / `>f4`.
    F32(CowArray<'a, f32, IxDyn>),
    /// `<f8` / `>f8`.
    F64(CowArray<'a, f64, IxDyn>),
    /// `<c8` / `>c8`.
    C64(CowArray<'a, Complex<f32>, IxDyn>),
    /// `<c16` / `>c16`.
    C128(CowArray<'a, Complex<f64>, IxDyn>),
}

impl DynArray<'_> {
    /// The element type (native byte order).
    pub fn dtype(&self) -> DType {
        match self {
            DynArray::Bool(_) => bool::DTYPE,
            DynArray::I8(_) => i8::DTYPE,
            DynArray::I16(_) => i16::DTYPE,
            DynArray::I32(_) => i32::DTYPE,
            DynArray::I64(_) => i64::DTYPE,
            DynArray::U8(_) => u8::DTYPE,
            DynArray::U16(_) => u16::DTYPE,
            DynArray::U32(_) => u32::DTYPE,
            DynArray::U64(_) => u64::DTYPE,
            DynArray::F16(_) => half::f16::DTYPE,
            DynArray::F32(_) => f32::DTYPE,
            DynArray::F64(_) => f64::DTYPE,
            DynArray::C64(_) => Complex::<f32>::DTYPE,
            DynArray::C128(_) => Complex::<f64>::DTYPE,
        }
    }
}

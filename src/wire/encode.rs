//! Arrays to frames: [`ArrayBuffer`] takes an ndarray's bytes (moving an owned array's buffer,
//! copying a view at most once), and [`encode`] builds the header and buffer frames of a message.

use bytes::Bytes;
use ndarray::{Array, ArrayBase, Data, Dimension};
use serde_json::{Map, Value};
use smallvec::SmallVec;

use super::codec::buffer::bytes_from_vec;
use super::codec::{encode_buffer, encode_buffer_chunked, Compression};
use super::dtype::{DType, Element};
use super::error::EncodeError;
use super::header::{check_name_for_encode, ArrayMeta, Header, Order};
use super::template::HeaderWriter;

/// An array as the wire sees it: element type, shape, element order and its decoded bytes.
///
/// ```
/// use ndarray::array;
/// use ndbridge::wire::{ArrayBuffer, Order};
///
/// let a = array![[1.0f32, 2.0], [3.0, 4.0]];
/// let buf = ArrayBuffer::from_array(&a.t()); // F-contiguous view: sent as is, order "F"
/// assert_eq!((buf.order(), buf.shape()), (Order::F, &[2, 2][..]));
/// assert_eq!(buf.data().len(), 16);
/// ```
#[derive(Debug, Clone)]
pub struct ArrayBuffer {
    dtype: DType,
    /// Held inline up to four dimensions: cloning a buffer allocates nothing.
    shape: SmallVec<[usize; 4]>,
    order: Order,
    data: Bytes,
}

impl ArrayBuffer {
    /// Wraps bytes already laid out as `dtype` elements in `order`; checks the length.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use ndbridge::wire::{ArrayBuffer, EncodeError, Order};
    ///
    /// let f8 = "<f8".parse()?;
    /// let ok = ArrayBuffer::new(f8, vec![2], Order::C, Bytes::from(vec![0u8; 16]))?;
    /// assert_eq!(ok.shape(), &[2]);
    /// let short = ArrayBuffer::new(f8, vec![3], Order::C, Bytes::from(vec![0u8; 16]));
    /// let err = short.unwrap_err();
    /// assert_eq!(err, EncodeError::BufferLength { expected: 24, found: 16 });
    /// assert_eq!(err.to_string(), "buffer holds 16 bytes, shape and dtype need 24");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(
        dtype: DType,
        shape: Vec<usize>,
        order: Order,
        data: Bytes,
    ) -> Result<ArrayBuffer, EncodeError> {
        let expected = shape
            .iter()
            .try_fold(dtype.itemsize() as u64, |acc, &n| acc.checked_mul(n as u64))
            .unwrap_or(u64::MAX);
        if data.len() as u64 != expected {
            return Err(EncodeError::BufferLength {
                expected,
                found: data.len() as u64,
            });
        }
        Ok(ArrayBuffer {
            dtype,
            shape: SmallVec::from_vec(shape),
            order,
            data,
        })
    }

    /// Copies any array or view once into a buffer: C-contiguous arrays keep order `"C"`,
    /// F-contiguous arrays keep order `"F"` (no transpose), any other strides (slices, negative
    /// steps, permuted axes) are gathered into C order.
    pub fn from_array<S, D, T>(array: &ArrayBase<S, D>) -> ArrayBuffer
    where
        S: Data<Elem = T>,
        D: Dimension,
        T: Element,
    {
        let shape = SmallVec::from_slice(array.shape());
        let (order, elements) = match contiguous_order(array) {
            Some(order) => {
                let slice = array
                    .as_slice_memory_order()
                    .expect("a C- or F-contiguous array has a memory-order slice");
                (order, slice.to_vec())
            }
            None => (Order::C, array.iter().copied().collect()),
        };
        ArrayBuffer {
            dtype: T::DTYPE,
            shape,
            order,
            data: bytes_from_vec(elements),
        }
    }

    /// Takes an owned array's buffer without copying it when the array is C- or F-contiguous
    /// and fills its allocation; otherwise copies once like [`ArrayBuffer::from_array`].
    ///
    /// ```
    /// use ndarray::Array2;
    /// use ndbridge::wire::ArrayBuffer;
    ///
    /// let a = Array2::<f64>::zeros((100, 100));
    /// let ptr = a.as_ptr() as *const u8;
    /// let buf = ArrayBuffer::from_owned(a);
    /// assert_eq!(buf.data().as_ptr(), ptr); // the same memory, not a copy
    /// ```
    pub fn from_owned<T, D>(array: Array<T, D>) -> ArrayBuffer
    where
        T: Element,
        D: Dimension,
    {
        let Some(order) = contiguous_order(&array) else {
            return ArrayBuffer::from_array(&array);
        };
        let shape = SmallVec::from_slice(array.shape());
        let len = array.len();
        let (mut vec, offset) = array.into_raw_vec_and_offset();
        let offset = offset.unwrap_or(0);
        if offset != 0 || vec.len() != len {
            // The array is a window into a larger allocation: keep only its own elements.
            vec = vec[offset..offset + len].to_vec();
        }
        ArrayBuffer {
            dtype: T::DTYPE,
            shape,
            order,
            data: bytes_from_vec(vec),
        }
    }

    /// Element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Element order of the bytes.
    pub fn order(&self) -> Order {
        self.order
    }

    /// The decoded bytes.
    pub fn data(&self) -> &Bytes {
        &self.data
    }
}

/// `Some(C)` for a C-contiguous array (also every 0-d and 1-d contiguous one), `Some(F)` for an
/// F-contiguous one, `None` for anything that needs gathering.
fn contiguous_order<S: Data, D: Dimension>(array: &ArrayBase<S, D>) -> Option<Order> {
    if array.is_standard_layout() {
        Some(Order::C)
    } else if array.view().reversed_axes().is_standard_layout() {
        Some(Order::F)
    } else {
        None
    }
}

/// Who sent a record and where it stands in the sender's stream: every header field but the
/// arrays.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// The record's name.
    pub name: String,
    /// The publisher's id.
    pub source: String,
    /// The publisher's session id.
    pub session: String,
    /// Position in the session.
    pub seq: u64,
    /// Seconds since the Unix epoch.
    pub time: f64,
    /// The user's JSON object.
    pub attrs: Option<Map<String, Value>>,
}

/// A message ready for the socket: the header it describes and its frames, header JSON first.
#[derive(Debug, Clone)]
pub struct EncodedMessage {
    /// The header as encoded in frame 0.
    pub header: Header,
    /// `[header_json, buf_0, ..., buf_{n-1}]`.
    pub frames: Vec<Bytes>,
}

impl EncodedMessage {
    /// Total bytes of all frames.
    pub fn wire_bytes(&self) -> u64 {
        self.frames.iter().map(|f| f.len() as u64).sum()
    }

    /// Total decoded bytes of all arrays.
    pub fn raw_bytes(&self) -> u64 {
        self.header.arrays.iter().map(|a| a.nbytes).sum()
    }
}

/// Checks a record's name and its array names (valid, and unique within the record): what
/// [`encode`] refuses, checked up front so a sender can refuse it before queueing.
pub fn check_names<N: AsRef<str>>(
    record: &str,
    arrays: &[(N, ArrayBuffer)],
) -> Result<(), EncodeError> {
    check_name_for_encode(record)?;
    for (i, (name, _)) in arrays.iter().enumerate() {
        let name = name.as_ref();
        check_name_for_encode(name)?;
        if arrays[..i].iter().any(|(other, _)| other.as_ref() == name) {
            return Err(EncodeError::DuplicateArrayName {
                name: name.to_owned(),
            });
        }
    }
    Ok(())
}

/// Encodes named arrays into one message under `compression`.
///
/// ```
/// use ndarray::Array1;
/// use ndbridge::wire::{decode, encode, ArrayBuffer, Compression, Envelope, Limits};
///
/// let envelope = Envelope {
///     name: "u".into(), source: "w1".into(), session: "s".into(), seq: 0, time: 0.0,
///     attrs: None,
/// };
/// let u = ArrayBuffer::from_owned(Array1::<f64>::linspace(0.0, 1.0, 1000));
/// let msg = encode(envelope, vec![("u".into(), u)], Compression::auto())?;
/// assert_eq!(msg.frames.len(), 2);
///
/// let record = decode(&msg.frames, &Limits::default())?;
/// assert_eq!(record.arrays[0].view::<f64>()?[[999]], 1.0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn encode(
    envelope: Envelope,
    arrays: Vec<(String, ArrayBuffer)>,
    compression: Compression,
) -> Result<EncodedMessage, EncodeError> {
    encode_with(envelope, arrays, compression, false, Header::to_json)
}

/// Encodes a stream of messages, as [`encode`] does, writing the headers through a
/// [`HeaderWriter`]: the bytes that a header shares with the one before it are copied, not
/// written again.
///
/// ```
/// use ndarray::Array1;
/// use ndbridge::wire::{decode, encode, ArrayBuffer, Compression, Encoder, Envelope, Limits};
///
/// let mut encoder = Encoder::default();
/// for seq in 0..3 {
///     let envelope = Envelope {
///         name: "u".into(), source: "w1".into(), session: "s".into(), seq, time: 0.5,
///         attrs: None,
///     };
///     let u = ArrayBuffer::from_owned(Array1::<f64>::zeros(8));
///     let msg = encoder.encode(envelope.clone(), vec![("u".into(), u.clone())], Compression::Raw)?;
///     let once = encode(envelope, vec![("u".into(), u)], Compression::Raw)?;
///     assert_eq!(msg.frames, once.frames);
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Default)]
pub struct Encoder {
    headers: HeaderWriter,
}

impl Encoder {
    /// Encodes named arrays into one message under `compression`: the same frames as
    /// [`encode`].
    pub fn encode(
        &mut self,
        envelope: Envelope,
        arrays: Vec<(String, ArrayBuffer)>,
        compression: Compression,
    ) -> Result<EncodedMessage, EncodeError> {
        encode_with(envelope, arrays, compression, false, |header| {
            self.headers.write(header)
        })
    }

    /// Encodes as [`encode`](Self::encode) does, except that compressed arrays of 2 MiB or more
    /// are compressed in parallel chunks ([`encode_buffer_chunked`](super::encode_buffer_chunked),
    /// codec `zstd-chunks`).
    pub fn encode_chunked(
        &mut self,
        envelope: Envelope,
        arrays: Vec<(String, ArrayBuffer)>,
        compression: Compression,
    ) -> Result<EncodedMessage, EncodeError> {
        encode_with(envelope, arrays, compression, true, |header| {
            self.headers.write(header)
        })
    }
}

fn encode_with(
    envelope: Envelope,
    arrays: Vec<(String, ArrayBuffer)>,
    compression: Compression,
    chunked: bool,
    write_header: impl FnOnce(&Header) -> Vec<u8>,
) -> Result<EncodedMessage, EncodeError> {
    check_names(&envelope.name, &arrays)?;
    if !envelope.time.is_finite() {
        // JSON has no NaN or infinity: such a header would not parse anywhere.
        return Err(EncodeError::InvalidTime {
            time: envelope.time,
        });
    }
    compression.validate()?;
    let mut metas = Vec::with_capacity(arrays.len());
    let mut frames = Vec::with_capacity(arrays.len() + 1);
    frames.push(Bytes::new());
    for (name, buffer) in arrays {
        let itemsize = buffer.dtype.itemsize();
        let encoded = if chunked {
            encode_buffer_chunked(&buffer.data, itemsize, compression)?
        } else {
            encode_buffer(&buffer.data, itemsize, compression)?
        };
        metas.push(ArrayMeta {
            name,
            dtype: buffer.dtype,
            shape: buffer.shape.into_vec(),
            order: buffer.order,
            codec: encoded.codec,
            filters: encoded.filters,
            nbytes: buffer.data.len() as u64,
        });
        frames.push(encoded.frame);
    }
    let header = Header {
        name: envelope.name,
        source: envelope.source,
        session: envelope.session,
        seq: envelope.seq,
        time: envelope.time,
        arrays: metas,
        attrs: envelope.attrs,
        end: false,
    };
    frames[0] = Bytes::from(write_header(&header));
    Ok(EncodedMessage { header, frames })
}

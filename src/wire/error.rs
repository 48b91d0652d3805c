//! Errors of the wire core: what a peer sent wrong ([`DecodeError`]), what a caller asked for
//! that cannot be encoded ([`EncodeError`]), and what a typed view cannot give ([`ViewError`]).

use thiserror::Error;

use super::dtype::{DType, DTypeError};

/// A message that does not follow the wire format. Each variant names the field, what was
/// expected and what came. These are the peer's errors: a service counts them by
/// [`DecodeError::kind`] and goes on.
#[derive(Debug, Clone, PartialEq, Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The message has no frames at all.
    #[error("empty message: expected a header frame")]
    Empty,
    /// The header frame is larger than the configured limit.
    #[error("header is {size} bytes, more than the limit of {limit}")]
    HeaderTooLarge {
        /// Bytes received.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The header frame is not UTF-8 JSON.
    #[error("header is not valid JSON: {reason}")]
    NotJson {
        /// The parser's explanation, with position.
        reason: String,
    },
    /// The header is JSON but not an object.
    #[error("header must be a JSON object, found {found}")]
    NotAnObject {
        /// The JSON type that came.
        found: &'static str,
    },
    /// A required field is absent.
    #[error("header field `{field}` is missing")]
    MissingField {
        /// The field's path, e.g. `arrays[1].dtype`.
        field: String,
    },
    /// A field has the wrong type or value.
    #[error("header field `{field}`: expected {expected}, found {found}")]
    InvalidField {
        /// The field's path, e.g. `arrays[0].shape[2]`.
        field: String,
        /// What the format requires.
        expected: &'static str,
        /// What came (shortened).
        found: String,
    },
    /// The message was written by a newer version of the format.
    #[error("format version {found} is not supported: this decoder reads version {supported}")]
    UnsupportedVersion {
        /// The version in the header.
        found: u64,
        /// The version this decoder reads.
        supported: u64,
    },
    /// A dtype string that is not one of the wire's types.
    #[error("header field `{field}`: {error}")]
    BadDType {
        /// The field's path.
        field: String,
        /// The parse error.
        error: DTypeError,
    },
    /// More arrays than the limit allows.
    #[error("header declares {count} arrays, more than the limit of {limit}")]
    TooManyArrays {
        /// Arrays declared.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// The number of buffer frames differs from the number of arrays in the header.
    #[error("message has {found} frames, expected {expected} (the header plus one per array)")]
    FrameCount {
        /// Header plus one frame per declared array.
        expected: usize,
        /// Frames received.
        found: usize,
    },
    /// `nbytes` differs from `product(shape) * itemsize`.
    #[error("array `{array}`: nbytes {declared} declared, but shape and dtype give {computed}")]
    NbytesMismatch {
        /// The array's name.
        array: String,
        /// `nbytes` in the header.
        declared: u64,
        /// `product(shape) * itemsize` (saturated on overflow).
        computed: u64,
    },
    /// An array larger than the configured limit.
    #[error("array `{array}`: {nbytes} bytes declared, more than the limit of {limit}")]
    ArrayTooLarge {
        /// The array's name.
        array: String,
        /// Bytes declared.
        nbytes: u64,
        /// The limit.
        limit: u64,
    },
    /// The arrays of one message declare more decoded bytes together than the limit allows.
    #[error("message declares {total} decoded bytes in all, more than the limit of {limit}")]
    MessageTooLarge {
        /// `nbytes` summed over the arrays.
        total: u64,
        /// The limit.
        limit: u64,
    },
    /// A raw buffer frame whose length differs from `nbytes`.
    #[error("array `{array}`: nbytes {expected} declared, {found} received")]
    BufferLength {
        /// The array's name.
        array: String,
        /// `nbytes` in the header.
        expected: u64,
        /// Bytes in the frame.
        found: u64,
    },
    /// A zstd frame that would decode to more than [`Limits::max_expansion`] times its own size.
    ///
    /// [`Limits::max_expansion`]: super::Limits::max_expansion
    #[error(
        "array `{array}`: {nbytes} bytes from a zstd frame of {frame_bytes}, more than \
         {max_expansion} times its size (the expansion limit)"
    )]
    Expansion {
        /// The array's name.
        array: String,
        /// `nbytes` in the header.
        nbytes: u64,
        /// Bytes of the zstd frame.
        frame_bytes: u64,
        /// The limit.
        max_expansion: u64,
    },
    /// A zstd frame whose declared content size is absent or differs from `nbytes`.
    #[error("array `{array}`: zstd frame content size is {found}, expected {expected} (nbytes)")]
    ZstdContentSize {
        /// The array's name.
        array: String,
        /// `nbytes` in the header.
        expected: u64,
        /// What the zstd frame declares.
        found: String,
    },
    /// A boolean array holding a byte other than 0 or 1.
    #[error("array `{array}`: boolean byte at index {index} is {value}, expected 0 or 1")]
    InvalidBool {
        /// The array's name.
        array: String,
        /// Position of the first bad byte.
        index: u64,
        /// Its value.
        value: u8,
    },
    /// A buffer frame that zstd cannot decode.
    #[error("array `{array}`: invalid zstd data: {reason}")]
    Zstd {
        /// The array's name.
        array: String,
        /// zstd's explanation.
        reason: String,
    },
    /// A `zstd-chunks` frame whose chunk table does not describe the array and the frame.
    #[error("array `{array}`: invalid chunk table: {reason}")]
    Chunks {
        /// The array's name.
        array: String,
        /// What is wrong with the table.
        reason: String,
    },
}

impl DecodeError {
    /// A short stable name for counting errors by class (`"not_json"`, `"frame_count"`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            DecodeError::Empty => "empty",
            DecodeError::HeaderTooLarge { .. } => "header_too_large",
            DecodeError::NotJson { .. } => "not_json",
            DecodeError::NotAnObject { .. } => "not_an_object",
            DecodeError::MissingField { .. } => "missing_field",
            DecodeError::InvalidField { .. } => "invalid_field",
            DecodeError::UnsupportedVersion { .. } => "unsupported_version",
            DecodeError::BadDType { .. } => "bad_dtype",
            DecodeError::TooManyArrays { .. } => "too_many_arrays",
            DecodeError::FrameCount { .. } => "frame_count",
            DecodeError::NbytesMismatch { .. } => "nbytes_mismatch",
            DecodeError::ArrayTooLarge { .. } => "array_too_large",
            DecodeError::MessageTooLarge { .. } => "message_too_large",
            DecodeError::BufferLength { .. } => "buffer_length",
            DecodeError::ZstdContentSize { .. } => "zstd_content_size",
            DecodeError::Expansion { .. } => "expansion",
            DecodeError::InvalidBool { .. } => "invalid_bool",
            DecodeError::Zstd { .. } => "zstd",
            DecodeError::Chunks { .. } => "chunks",
        }
    }

    /// For a message refused by one of a collector's limits, by [`kind`](Self::kind): the
    /// `ndbridge collect` option that raises it (the [`Limits`](super::Limits) setter behind
    /// it is named in the option's help).
    ///
    /// ```
    /// use ndbridge::wire::DecodeError;
    ///
    /// assert_eq!(DecodeError::raised_by("array_too_large"), Some("--max-array-mib"));
    /// assert_eq!(DecodeError::raised_by("not_json"), None);
    /// ```
    pub fn raised_by(kind: &str) -> Option<&'static str> {
        match kind {
            "array_too_large" | "message_too_large" => Some("--max-array-mib"),
            "expansion" => Some("--max-expansion"),
            _ => None,
        }
    }
}

/// A request the encoder cannot turn into a valid message: the caller's mistake, not a peer's.
#[derive(Debug, Clone, PartialEq, Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// A record or array name that is empty, too long, or contains NUL.
    #[error("invalid name {name:?}: {reason}")]
    InvalidName {
        /// The name (shortened).
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Two arrays of one record share a name.
    #[error("array name {name:?} appears twice in one record")]
    DuplicateArrayName {
        /// The repeated name.
        name: String,
    },
    /// A buffer whose length does not match its shape and dtype.
    #[error("buffer holds {found} bytes, shape and dtype need {expected}")]
    BufferLength {
        /// `product(shape) * itemsize`.
        expected: u64,
        /// Bytes given.
        found: u64,
    },
    /// A `time` that JSON cannot carry (NaN or infinite).
    #[error("time must be a finite number of seconds, found {time}")]
    InvalidTime {
        /// The time given.
        time: f64,
    },
    /// A zstd level outside zstd's range.
    #[error("zstd level {level} is outside {min}..={max}")]
    ZstdLevel {
        /// The level asked for.
        level: i32,
        /// zstd's lowest level.
        min: i32,
        /// zstd's highest level.
        max: i32,
    },
    /// zstd failed while compressing.
    #[error("zstd compression failed: {reason}")]
    Zstd {
        /// zstd's explanation.
        reason: String,
    },
}

/// Why a decoded array cannot be viewed as the requested element type.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ViewError {
    /// The array holds another element type.
    #[error("array `{array}` holds {found}, not {expected}")]
    DTypeMismatch {
        /// The array's name.
        array: String,
        /// The type asked for (native order).
        expected: DType,
        /// The type on the wire.
        found: DType,
    },
    /// A borrowed view was asked for, but the buffer is not aligned for the element type.
    #[error("array `{array}`: buffer at address {address:#x} is not aligned to {align} bytes")]
    Misaligned {
        /// The array's name.
        array: String,
        /// The buffer's address.
        address: usize,
        /// The alignment the element type needs.
        align: usize,
    },
    /// A borrowed view was asked for, but the bytes are in the other byte order.
    #[error("array `{array}` is {found}, which needs a byte swap to be read here")]
    NotNative {
        /// The array's name.
        array: String,
        /// The type on the wire.
        found: DType,
    },
    /// A boolean array with a byte that is neither 0 nor 1.
    #[error("array `{array}`: boolean byte at index {index} is {value}, expected 0 or 1")]
    InvalidBool {
        /// The array's name.
        array: String,
        /// Position of the first bad byte.
        index: usize,
        /// Its value.
        value: u8,
    },
    /// The buffer does not fit the shape (not expected after [`decode`](super::decode())'s checks).
    #[error("array `{array}`: {reason}")]
    Shape {
        /// The array's name.
        array: String,
        /// ndarray's explanation.
        reason: String,
    },
}

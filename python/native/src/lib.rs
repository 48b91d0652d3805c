//! `ndbridge._native`: the ndbridge Rust crate as a Python extension module.
//!
//! It gives Python the Rust [`ndbridge::Publisher`] (its sending thread, the link-aware automatic
//! codec, queue limits and statistics) and the Rust wire codec (shuffle + zstd, block-level
//! decoding). The Python package wraps it in `ndbridge.native`; nothing here is meant to be
//! called directly.
//!
//! # Zero copy and the lifetime of a numpy array's memory
//!
//! A contiguous numpy array of at least `copy_threshold` bytes is handed to the Rust side
//! without copying: its memory becomes a [`Bytes`] whose owner ([`ArrayOwner`]) holds a strong
//! reference (`Py<PyAny>`) to the array object. Why that is sound:
//!
//! - The memory of a numpy array lives as long as the array object (or the object it views,
//!   which the array itself references). A strong reference therefore keeps every byte the
//!   `Bytes` points to allocated, whichever thread reads it: the publisher thread (encoding,
//!   compressing), or ZeroMQ's I/O thread, which reads zero-copy frames after `send` returned
//!   and frees them (dropping the last `Bytes` clone) only once the kernel has the bytes.
//! - The reference is released only when the last `Bytes` clone drops. On a thread that is not
//!   attached to the interpreter (the publisher thread, ZeroMQ's I/O thread) PyO3 does not
//!   touch the reference count: it queues the decrement, and applies it with the interpreter
//!   lock held the next time any thread enters PyO3 (every call into this module, and the
//!   return from each blocking wait, which detaches and re-attaches). So ZeroMQ's thread never
//!   waits for the interpreter lock, cannot deadlock with a Python thread that waits for it, and
//!   never touches a finalized interpreter at process exit (a decrement still queued then is
//!   never applied: the memory is simply not freed before the process ends).
//! - The Rust side only reads these bytes. The contract for the caller is the pure-Python
//!   publisher's: do not modify an array in place until its record has gone out (`flush`), or
//!   send with `copy_threshold=None`, which copies every array.
//!
//! Arrays that are neither C- nor F-contiguous are made contiguous (a copy) by the Python
//! wrapper before they get here.
//!
//! Every blocking call (`send` on a full queue, `flush`, `close`, and dropping a publisher,
//! which terminates its ZeroMQ context) runs with the interpreter lock released.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use ndbridge::keys::KeyError;
use ndbridge::wire::encode_buffer;
use ndbridge::wire::{
    shuffle, ArrayBuffer, ArrayMeta, Codec, Compression, DType, Decoder, Filter, Header, Limits,
    Order, EXPANSION_FREE_BYTES,
};
use ndbridge::{Delivery, FullPolicy, KeyPair, Link, PublicKey};
use numpy::{PyUntypedArray, PyUntypedArrayMethods};
use pyo3::buffer::PyBuffer;
use pyo3::exceptions::{
    PyBlockingIOError, PyFileNotFoundError, PyOSError, PyPermissionError, PyRuntimeError,
    PyTypeError, PyValueError,
};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};

pyo3::create_exception!(
    _native,
    DeliveryFailure,
    pyo3::exceptions::PyException,
    "Records did not go out in time, or (acked delivery) were not acknowledged or were refused: \
     args are (message, records not passed on or None, records refused, kind, kept), kind one \
     of 'timeout', 'no-peer', 'unacknowledged', 'other', kept the spool directory keeping the \
     records not acknowledged or None."
);

/// Keeps a Python object (a numpy array, or an exported buffer) alive behind a [`Bytes`] that
/// points into its memory.
struct ArrayOwner {
    /// The object whose memory `ptr..ptr + len` is; dropped when the last `Bytes` clone drops
    /// (see the module documentation for when its reference count is decremented).
    _object: Py<PyAny>,
    ptr: *const u8,
    len: usize,
}

// SAFETY: `ptr` points into memory owned by `_object`, which stays alive as long as this owner
// does, whichever thread holds it; the memory is only read through `as_ref`. `Py<PyAny>` itself
// is `Send + Sync`, and PyO3 defers its decrement when dropped on a thread that is not attached
// to the interpreter.
unsafe impl Send for ArrayOwner {}
// SAFETY: as for `Send`: shared access only reads the memory.
unsafe impl Sync for ArrayOwner {}

impl AsRef<[u8]> for ArrayOwner {
    fn as_ref(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: `ptr` is valid for `len` bytes for as long as `_object` lives (numpy keeps an
        // array's data allocated while the array exists), and `_object` lives as long as `self`.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

/// Keeps a `PyBuffer` (a received frame: `bytes`, `zmq.Frame`, `memoryview`) exported for as
/// long as a [`Bytes`] points into it.
struct BufferOwner(PyBuffer<u8>);

impl AsRef<[u8]> for BufferOwner {
    fn as_ref(&self) -> &[u8] {
        let len = self.0.len_bytes();
        if len == 0 {
            return &[];
        }
        // SAFETY: the buffer is C-contiguous (checked when taken) and stays exported, so its
        // memory valid, for as long as the `PyBuffer` lives; it is only read.
        unsafe { std::slice::from_raw_parts(self.0.buf_ptr() as *const u8, len) }
    }
}

/// A read-only byte buffer held by Rust ([`Bytes`]) and exported to Python through the buffer
/// protocol, so that `numpy.frombuffer` views it without a copy.
#[pyclass(module = "ndbridge._native", frozen)]
pub struct Buffer {
    data: Bytes,
}

#[pymethods]
impl Buffer {
    /// Exports the bytes, read-only, as a one-dimensional buffer of unsigned bytes.
    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut pyo3::ffi::Py_buffer,
        flags: std::os::raw::c_int,
    ) -> PyResult<()> {
        let data = &slf.get().data;
        let ptr = if data.is_empty() {
            std::ptr::NonNull::<u8>::dangling().as_ptr()
        } else {
            data.as_ptr() as *mut u8
        };
        // SAFETY: `view` is the caller's Py_buffer to fill; `ptr` is valid for `data.len()`
        // bytes while `slf` lives, and PyBuffer_FillInfo stores a new reference to `slf` in
        // the view, so the bytes stay alive until the buffer is released. Read-only: a
        // writable request fails with BufferError.
        let rc = unsafe {
            pyo3::ffi::PyBuffer_FillInfo(
                view,
                slf.as_ptr(),
                ptr.cast(),
                data.len() as pyo3::ffi::Py_ssize_t,
                1,
                flags,
            )
        };
        if rc == -1 {
            return Err(PyErr::fetch(slf.py()));
        }
        Ok(())
    }

    /// Length in bytes.
    fn __len__(&self) -> usize {
        self.data.len()
    }
}

/// The wire order of a contiguous numpy array, `None` when it is neither C- nor F-contiguous.
fn array_order(array: &Bound<'_, PyUntypedArray>) -> Option<Order> {
    if array.is_c_contiguous() {
        Some(Order::C)
    } else if array.is_fortran_contiguous() {
        Some(Order::F)
    } else {
        None
    }
}

/// A contiguous numpy array as an [`ArrayBuffer`]: its memory without a copy when it holds at
/// least `copy_threshold` bytes, a copy otherwise.
fn array_buffer(
    field: &str,
    value: &Bound<'_, PyAny>,
    copy_threshold: Option<usize>,
) -> PyResult<ArrayBuffer> {
    let array = value.cast::<PyUntypedArray>().map_err(|_| {
        PyTypeError::new_err(format!(
            "{field}: expected a numpy.ndarray, found {}",
            value
                .get_type()
                .name()
                .map_or("?".into(), |n| n.to_string())
        ))
    })?;
    let dtype_str: String = array.dtype().getattr("str")?.extract()?;
    let dtype = DType::from_str(&dtype_str)
        .map_err(|e| PyTypeError::new_err(format!("{field}.dtype: {e}")))?;
    let order = array_order(array).ok_or_else(|| {
        PyValueError::new_err(format!(
            "{field}: expected a C- or F-contiguous array, found one that is neither"
        ))
    })?;
    let len = array.len() * dtype.itemsize();
    // SAFETY: `as_array_ptr` is the live array object; its `data` field points to `len` bytes
    // (size times itemsize) laid out contiguously in `order`, as checked above.
    let ptr = unsafe { (*array.as_array_ptr()).fields.data } as *const u8;
    let data = if copy_threshold.is_none_or(|t| len < t) || len == 0 {
        let owner = ArrayOwner {
            _object: array.clone().into_any().unbind(),
            ptr,
            len,
        };
        Bytes::copy_from_slice(owner.as_ref())
    } else {
        Bytes::from_owner(ArrayOwner {
            _object: array.clone().into_any().unbind(),
            ptr,
            len,
        })
    };
    ArrayBuffer::new(dtype, array.shape().to_vec(), order, data)
        .map_err(|e| PyValueError::new_err(format!("{field}: {e}")))
}

/// `arrays` as `(name, ArrayBuffer)` pairs.
fn array_buffers(
    arrays: &Bound<'_, PyList>,
    copy_threshold: Option<usize>,
) -> PyResult<Vec<(String, ArrayBuffer)>> {
    let mut out = Vec::with_capacity(arrays.len());
    for item in arrays.iter() {
        let (name, value): (String, Bound<'_, PyAny>) = item.extract()?;
        let buffer = array_buffer(&format!("arrays[{name:?}]"), &value, copy_threshold)?;
        out.push((name, buffer));
    }
    Ok(out)
}

/// A JSON object given as text (the Python wrapper serializes `attrs` with `json.dumps`).
fn parse_attrs(
    attrs_json: Option<&str>,
) -> PyResult<Option<serde_json::Map<String, serde_json::Value>>> {
    let Some(text) = attrs_json else {
        return Ok(None);
    };
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(map)) => Ok(Some(map)),
        Ok(other) => Err(PyTypeError::new_err(format!(
            "attrs: expected a JSON object, found {other}"
        ))),
        Err(e) => Err(PyValueError::new_err(format!(
            "attrs: expected a JSON object, found text that does not parse: {e}"
        ))),
    }
}

/// One buffer as encoded: `(codec, filters, frame)`.
type EncodedFrame = (Codec, Vec<Filter>, Bytes);

/// How [`encode`] encodes each array, with the pure-Python encoder's meaning of `shuffle`:
/// `None` shuffles multi-byte elements whenever the frame is compressed, `True` always records
/// the filter (raw frames too), `False` never shuffles.
struct Policy {
    codec: Compression,
    forced_shuffle: bool,
    max_expansion: Option<u64>,
}

impl Policy {
    fn new(
        codec: &str,
        level: i32,
        shuffle: Option<bool>,
        max_expansion: Option<u64>,
    ) -> PyResult<Self> {
        let shuffled = shuffle != Some(false);
        let codec = match codec {
            "raw" => Compression::Raw,
            "zstd" => Compression::Zstd {
                level,
                shuffle: shuffled,
            },
            "auto" => Compression::Auto {
                level,
                shuffle: shuffled,
                max_ratio: 0.9,
            },
            other => {
                return Err(PyValueError::new_err(format!(
                    "codec: expected one of ['raw', 'zstd', 'auto'], found {other:?}"
                )))
            }
        };
        codec
            .validate()
            .map_err(|e| PyValueError::new_err(format!("level: {e}")))?;
        Ok(Policy {
            codec,
            forced_shuffle: shuffle == Some(true),
            max_expansion,
        })
    }

    /// Encodes one buffer: `(codec, filters, frame)`.
    fn encode(&self, field: &str, buffer: &ArrayBuffer) -> PyResult<EncodedFrame> {
        let itemsize = buffer.dtype().itemsize();
        let data = buffer.data();
        let encode = |policy| {
            encode_buffer(data, itemsize, policy)
                .map_err(|e| PyValueError::new_err(format!("{field}: {e}")))
        };
        let mut encoded = encode(self.codec)?;
        if encoded.codec == Codec::Zstd {
            if let Some(max) = self.max_expansion {
                let (nbytes, frame) = (data.len() as u64, encoded.frame.len() as u64);
                if nbytes > EXPANSION_FREE_BYTES && nbytes / max.max(1) > frame {
                    if !matches!(self.codec, Compression::Auto { .. }) {
                        return Err(PyValueError::new_err(format!(
                            "{field}: decoded/compressed size ratio {} exceeds the limit \
                             max_expansion={max}, so a reader with these limits would reject \
                             the message",
                            nbytes / frame.max(1)
                        )));
                    }
                    encoded = encode(Compression::Raw)?;
                }
            }
        }
        if encoded.codec == Codec::Raw && self.forced_shuffle {
            let frame = if itemsize > 1 {
                let mut out = vec![0u8; data.len()];
                shuffle(data, &mut out, itemsize);
                Bytes::from(out)
            } else {
                data.clone()
            };
            return Ok((Codec::Raw, vec![Filter::Shuffle], frame));
        }
        if encoded.codec == Codec::Zstd && self.forced_shuffle && encoded.filters.is_empty() {
            // One-byte elements: shuffling changes nothing, only the filter is recorded.
            encoded.filters.push(Filter::Shuffle);
        }
        Ok((encoded.codec, encoded.filters, encoded.frame))
    }
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Encodes one message with the Rust codec; returns `[header, buf_0, ...]` (header as `bytes`,
/// buffers as [`Buffer`]s: a raw frame is the array's own memory).
///
/// `arrays` is a list of `(name, contiguous numpy array)`; `attrs_json` the attributes as JSON
/// text. The shuffle filter means what it means to the pure-Python encoder (see [`Policy`]).
#[pyfunction]
#[pyo3(signature = (name, arrays, codec, level, shuffle, attrs_json, source, session, seq, time, max_expansion))]
#[allow(clippy::too_many_arguments)]
fn encode(
    py: Python<'_>,
    name: String,
    arrays: &Bound<'_, PyList>,
    codec: &str,
    level: i32,
    shuffle: Option<bool>,
    attrs_json: Option<&str>,
    source: String,
    session: String,
    seq: u64,
    time: Option<f64>,
    max_expansion: Option<u64>,
) -> PyResult<Vec<Py<PyAny>>> {
    let policy = Policy::new(codec, level, shuffle, max_expansion)?;
    let attrs = parse_attrs(attrs_json)?;
    let buffers = array_buffers(arrays, Some(0))?;
    ndbridge::wire::check_names(&name, &buffers)
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    let time = time.unwrap_or_else(now);
    if !time.is_finite() {
        return Err(PyValueError::new_err(format!(
            "time: expected finite seconds since the Unix epoch, found {time}"
        )));
    }
    // Compressing runs without the interpreter lock: other Python threads go on meanwhile.
    let encoded: Vec<(String, ArrayBuffer, PyResult<EncodedFrame>)> = py.detach(|| {
        buffers
            .into_iter()
            .map(|(n, b)| {
                let r = policy.encode(&format!("arrays[{n:?}]"), &b);
                (n, b, r)
            })
            .collect()
    });
    let mut metas = Vec::with_capacity(encoded.len());
    let mut frames: Vec<Py<PyAny>> = Vec::with_capacity(encoded.len() + 1);
    frames.push(py.None());
    for (array_name, buffer, result) in encoded {
        let (codec, filters, frame) = result?;
        metas.push(ArrayMeta {
            name: array_name,
            dtype: buffer.dtype(),
            shape: buffer.shape().to_vec(),
            order: buffer.order(),
            codec,
            filters,
            nbytes: buffer.data().len() as u64,
        });
        frames.push(Py::new(py, Buffer { data: frame })?.into_any());
    }
    let header = Header {
        name,
        source,
        session,
        seq,
        time,
        arrays: metas,
        attrs,
        end: false,
    };
    frames[0] = PyBytes::new(py, &header.to_json()).into_any().unbind();
    Ok(frames)
}

/// `frame` as [`Bytes`] without a copy: `bytes`, `zmq.Frame`, `memoryview` or any C-contiguous
/// buffer of unsigned bytes.
fn frame_bytes(index: usize, frame: &Bound<'_, PyAny>) -> PyResult<Bytes> {
    let buffer =
        PyBuffer::<u8>::get(frame).map_err(|e| {
            PyTypeError::new_err(format!(
            "frames[{index}]: expected bytes, zmq.Frame or another buffer of bytes, found {} ({e})",
            frame.get_type().name().map_or("?".into(), |n| n.to_string())
        ))
        })?;
    if !buffer.is_c_contiguous() {
        return Err(PyTypeError::new_err(format!(
            "frames[{index}]: expected a contiguous buffer"
        )));
    }
    Ok(Bytes::from_owner(BufferOwner(buffer)))
}

/// Decodes `[header, buf_0, ...]` with the Rust decoder. Returns `(header JSON bytes, [(name,
/// dtype str, shape, order, Buffer)])`; the Python wrapper makes the numpy arrays and the
/// `Record`. Raw frames come back as views of the received frames (no copy).
#[pyfunction]
#[pyo3(signature = (frames, max_header_bytes, max_arrays, max_array_bytes, max_ndim, max_message_bytes, max_expansion))]
#[allow(clippy::too_many_arguments)]
fn decode<'py>(
    py: Python<'py>,
    frames: &Bound<'py, PyList>,
    max_header_bytes: usize,
    max_arrays: usize,
    max_array_bytes: u64,
    max_ndim: usize,
    max_message_bytes: u64,
    max_expansion: u64,
) -> PyResult<Bound<'py, PyList>> {
    let frames: Vec<Bytes> = frames
        .iter()
        .enumerate()
        .map(|(i, f)| frame_bytes(i, &f))
        .collect::<PyResult<_>>()?;
    let limits = Limits::default()
        .max_header_bytes(max_header_bytes)
        .max_arrays(max_arrays)
        .max_array_bytes(max_array_bytes)
        .max_ndim(max_ndim)
        .max_message_bytes(max_message_bytes)
        .max_expansion(max_expansion);
    let record = py
        .detach(|| Decoder::new(limits).decode(&frames))
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    let out = PyList::empty(py);
    for array in &record.arrays {
        let meta = array.meta();
        let order = match meta.order {
            Order::C => "C",
            Order::F => "F",
        };
        let buffer = Py::new(
            py,
            Buffer {
                data: array.bytes().clone(),
            },
        )?;
        out.append((
            meta.name.as_str(),
            meta.dtype.to_string(),
            meta.shape.clone(),
            order,
            buffer,
        ))?;
    }
    Ok(out)
}

/// Shuffle + zstd of one buffer with the Rust codec, as the publisher encodes it: returns the
/// frame. For measuring the codec's speed from Python.
#[pyfunction]
fn compress(
    py: Python<'_>,
    data: &Bound<'_, PyAny>,
    itemsize: usize,
    level: i32,
) -> PyResult<Buffer> {
    let bytes = frame_bytes(0, data)?;
    let policy = Compression::Zstd {
        level,
        shuffle: true,
    };
    let encoded = py
        .detach(|| encode_buffer(&bytes, itemsize, policy))
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok(Buffer {
        data: encoded.frame,
    })
}

/// A timeout in seconds (`None`: wait forever) as a [`Duration`].
fn timeout(seconds: Option<f64>) -> PyResult<Duration> {
    match seconds {
        None => Ok(Duration::from_secs(100 * 365 * 24 * 3600)),
        Some(s) if s >= 0.0 && s.is_finite() => Ok(Duration::from_secs_f64(s)),
        Some(s) => Err(PyValueError::new_err(format!(
            "timeout: expected seconds >= 0 or None, found {s}"
        ))),
    }
}

/// The Rust publisher: a sending thread that encodes (compresses) and hands records to
/// ZeroMQ, a queue bounded in bytes, the link-aware automatic codec, and statistics.
#[pyclass(module = "ndbridge._native", name = "Publisher", frozen)]
pub struct NativePublisher {
    inner: Mutex<Option<Arc<ndbridge::Publisher>>>,
    copy_threshold: Option<usize>,
    /// `send` calls accepted: the sequence number the next record carries, unless a record was
    /// dropped or failed to encode (see `stats`).
    accepted: AtomicU64,
    endpoints: String,
    /// The Rust publisher's session id (kept after close).
    session: String,
    /// The process that opened the publisher. A forked child inherits the object but not the
    /// sending thread or ZeroMQ's threads: it must neither join nor terminate them.
    pid: u32,
}

impl NativePublisher {
    fn publisher(&self, action: &str) -> PyResult<Arc<ndbridge::Publisher>> {
        self.inner
            .lock()
            .expect("publisher lock")
            .clone()
            .ok_or_else(|| {
                PyValueError::new_err(format!(
                    "{action}: the publisher to {} is closed",
                    self.endpoints
                ))
            })
    }
}

fn stats_dict<'py>(
    py: Python<'py>,
    stats: &ndbridge::PublisherStats,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("sent", stats.sent)?;
    d.set_item("delivered", stats.delivered)?;
    d.set_item("refused", stats.refused)?;
    d.set_item("resent", stats.resent)?;
    d.set_item("recovered", stats.recovered)?;
    d.set_item("dropped", stats.dropped)?;
    d.set_item("failed", stats.failed)?;
    d.set_item("queued", stats.queued)?;
    d.set_item("raw_bytes", stats.raw_bytes)?;
    d.set_item("wire_bytes", stats.wire_bytes)?;
    d.set_item("compression_ratio", stats.compression_ratio())?;
    Ok(d)
}

#[pymethods]
impl NativePublisher {
    /// Opens the socket and starts the sending thread.
    ///
    /// `codec`: "auto" | "raw" | "zstd"; `link`: None (detect from the endpoints) | "local" |
    /// "network"; `on_full`: "block" | "drop" | seconds to wait before raising.
    /// `curve_server` (the server's public key as Z85 text) and `curve_secret` (the path of this
    /// publisher's secret certificate) turn CURVE on; both or neither. `delivery`:
    /// "fire-and-forget" | "acked" (`PublisherBuilder::delivery`, with a window of
    /// `window_bytes`). `spool_dir` (acked delivery only) keeps every message in files of
    /// the publisher's own until acknowledged, up to `spool_bytes`
    /// (`PublisherBuilder::spool_dir`). A combination the Rust publisher does not take (acked
    /// delivery with a PUB socket, or bound; a spool without acked delivery) raises
    /// `ValueError`; a spool that cannot be opened raises `OSError` (`BlockingIOError` when
    /// another publisher holds it).
    #[new]
    #[pyo3(signature = (endpoints, *, bind=false, kind="push", codec="auto", level=1, shuffle=true, link=None, source=None, queue_bytes=256 << 20, on_full=None, linger=2.0, copy_threshold=Some(64 << 10), curve_server=None, curve_secret=None, delivery="fire-and-forget", window_bytes=512 << 20, spool_dir=None, spool_bytes=16 << 30, chunking="auto"))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        endpoints: Vec<String>,
        bind: bool,
        kind: &str,
        codec: &str,
        level: i32,
        shuffle: bool,
        link: Option<&str>,
        source: Option<String>,
        queue_bytes: usize,
        on_full: Option<&Bound<'_, PyAny>>,
        linger: f64,
        copy_threshold: Option<usize>,
        curve_server: Option<&str>,
        curve_secret: Option<PathBuf>,
        delivery: &str,
        window_bytes: u64,
        spool_dir: Option<PathBuf>,
        spool_bytes: u64,
        chunking: &str,
    ) -> PyResult<Self> {
        if endpoints.is_empty() {
            return Err(PyValueError::new_err(
                "endpoints: expected at least one endpoint, found none",
            ));
        }
        let compression = match codec {
            "raw" => Compression::Raw,
            "zstd" => Compression::Zstd { level, shuffle },
            "auto" => Compression::auto().with_shuffle(shuffle),
            other => {
                return Err(PyValueError::new_err(format!(
                    "codec: expected one of ['raw', 'zstd', 'auto'], found {other:?}"
                )))
            }
        };
        let compression = match compression {
            Compression::Auto {
                shuffle, max_ratio, ..
            } => Compression::Auto {
                level,
                shuffle,
                max_ratio,
            },
            c => c,
        };
        let chunking = match chunking {
            "auto" => ndbridge::Chunking::Auto,
            "always" => ndbridge::Chunking::Always,
            "never" => ndbridge::Chunking::Never,
            other => {
                return Err(PyValueError::new_err(format!(
                    "chunking: expected 'auto', 'always' or 'never', found {other:?}"
                )))
            }
        };
        let link = match link {
            None => Link::Detect,
            Some("local") => Link::Local,
            Some("network") => Link::Network,
            Some(other) => {
                return Err(PyValueError::new_err(format!(
                    "link: expected None, 'local' or 'network', found {other:?}"
                )))
            }
        };
        let kind = match kind {
            "push" => ndbridge::SocketKind::Push,
            "pub" => ndbridge::SocketKind::Pub,
            other => {
                return Err(PyValueError::new_err(format!(
                    "kind: expected 'push' or 'pub', found {other:?}"
                )))
            }
        };
        let on_full = match on_full {
            None => FullPolicy::Block,
            Some(v) => {
                if let Ok(s) = v.extract::<String>() {
                    match s.as_str() {
                        "block" => FullPolicy::Block,
                        "drop" => FullPolicy::Drop,
                        other => {
                            return Err(PyValueError::new_err(format!(
                            "on_full: expected 'block', 'drop' or seconds to wait, found {other:?}"
                        )))
                        }
                    }
                } else {
                    let seconds: f64 = v.extract().map_err(|_| {
                        PyValueError::new_err(format!(
                            "on_full: expected 'block', 'drop' or seconds to wait, found {v}"
                        ))
                    })?;
                    FullPolicy::Timeout(timeout(Some(seconds))?)
                }
            }
        };
        let delivery = match delivery {
            "fire-and-forget" => Delivery::FireAndForget,
            "acked" => Delivery::Acked,
            other => {
                return Err(PyValueError::new_err(format!(
                    "delivery: expected one of ['fire-and-forget', 'acked'], found {other:?}"
                )))
            }
        };
        if window_bytes == 0 {
            return Err(PyValueError::new_err(
                "window_bytes: expected a positive integer (bytes), found 0",
            ));
        }
        if spool_bytes == 0 {
            return Err(PyValueError::new_err(
                "spool_bytes: expected a positive integer (bytes), found 0",
            ));
        }
        let options = ndbridge::SocketOptions {
            linger: timeout(Some(linger))?,
            ..Default::default()
        };
        let mut builder = ndbridge::Publisher::builder()
            .kind(kind)
            .compression(compression)
            .link(link)
            .queue_bytes(queue_bytes)
            .on_full(on_full)
            .delivery(delivery)
            .window_bytes(window_bytes)
            .spool_bytes(spool_bytes)
            .chunking(chunking)
            .socket_options(options);
        if let Some(dir) = spool_dir {
            builder = builder.spool_dir(dir);
        }
        for endpoint in &endpoints {
            builder = if bind {
                builder.bind(endpoint.clone())
            } else {
                builder.connect(endpoint.clone())
            };
        }
        if let Some(source) = source {
            builder = builder.source(source);
        }
        if let Some((server, own)) = curve_keys(curve_server, curve_secret)? {
            builder = builder.curve(server, own);
        }
        let publisher = py.detach(|| builder.build()).map_err(|e| match e {
            ndbridge::Error::Usage { .. } => PyValueError::new_err(e.to_string()),
            ndbridge::Error::Spool { ref source, .. } => spool_error(source.kind(), e.to_string()),
            e => PyRuntimeError::new_err(e.to_string()),
        })?;
        Ok(NativePublisher {
            session: publisher.session().to_owned(),
            inner: Mutex::new(Some(Arc::new(publisher))),
            copy_threshold,
            accepted: AtomicU64::new(0),
            endpoints: endpoints.join(", "),
            pid: std::process::id(),
        })
    }

    /// Queues one record of named arrays (`arrays`: a list of `(name, contiguous ndarray)`);
    /// `attrs_json` is the attributes as JSON text. Returns the number of records accepted
    /// before this one. Waits (without the interpreter lock) while the queue is full.
    #[pyo3(signature = (name, arrays, attrs_json=None))]
    fn send(
        &self,
        py: Python<'_>,
        name: &str,
        arrays: &Bound<'_, PyList>,
        attrs_json: Option<&str>,
    ) -> PyResult<u64> {
        let publisher = self.publisher("send")?;
        let attrs = parse_attrs(attrs_json)?;
        let buffers = array_buffers(arrays, self.copy_threshold)?;
        py.detach(|| publisher.send_record(name, buffers, attrs))
            .map_err(|e| match e {
                ndbridge::Error::Encode(e) => PyValueError::new_err(e.to_string()),
                ndbridge::Error::QueueFull { .. } => {
                    pyo3::exceptions::PyTimeoutError::new_err(e.to_string())
                }
                e => PyRuntimeError::new_err(e.to_string()),
            })?;
        Ok(self.accepted.fetch_add(1, Ordering::Relaxed))
    }

    /// Waits until every record queued so far has been handed to ZeroMQ, at most `timeout`
    /// seconds (`None`: forever); raises `DeliveryFailure(message, pending)` after that.
    #[pyo3(signature = (timeout=None))]
    fn flush(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<()> {
        let publisher = self.publisher("flush")?;
        let wait = self::timeout(timeout)?;
        py.detach(|| publisher.flush(wait)).map_err(delivery_error)
    }

    /// Sends what is queued, lets ZeroMQ deliver it for at most `timeout` seconds in all
    /// (`None`: forever), stops the thread and terminates the socket's context. Returns the
    /// final statistics; raises `DeliveryFailure(message, pending)` if records were dropped.
    /// Closing twice is harmless (the second call returns `None`).
    #[pyo3(signature = (timeout=None))]
    fn close<'py>(
        &self,
        py: Python<'py>,
        timeout: Option<f64>,
    ) -> PyResult<Option<Bound<'py, PyDict>>> {
        let wait = self::timeout(timeout)?;
        let Some(publisher) = self.inner.lock().expect("publisher lock").take() else {
            return Ok(None);
        };
        if self.pid != std::process::id() {
            // A fork's copy: the threads it would wait for are the parent's.
            std::mem::forget(publisher);
            return Ok(None);
        }
        let result = py.detach(move || {
            let result = publisher.close(wait);
            let stats = publisher.stats();
            // The last reference terminates the context: that waits for ZeroMQ to finish the
            // rest of the timeout's delivery.
            drop(publisher);
            result.map(|_| stats)
        });
        match result {
            Ok(stats) => Ok(Some(stats_dict(py, &stats)?)),
            Err(e) => Err(delivery_error(e)),
        }
    }

    /// The counters now: sent (handed to ZeroMQ), delivered (passed on by ZeroMQ to a peer;
    /// acked delivery: acknowledged as stored), refused (acked delivery: acknowledged as
    /// refused), resent (acked delivery: sent again after a reconnect), recovered (acked
    /// delivery with a spool: messages of earlier publishers' sessions sent from the spool),
    /// dropped, failed, queued, raw_bytes, wire_bytes, compression_ratio.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let publisher = self.publisher("stats")?;
        stats_dict(py, &publisher.stats())
    }

    /// The session id in every header this publisher sends.
    #[getter]
    fn session(&self) -> String {
        self.session.clone()
    }

    /// True once `close` has run.
    #[getter]
    fn closed(&self) -> bool {
        self.inner.lock().expect("publisher lock").is_none()
    }
}

impl Drop for NativePublisher {
    /// A publisher dropped without `close` closes with its linger time; the wait runs without
    /// the interpreter lock.
    fn drop(&mut self) {
        let publisher = self.inner.get_mut().ok().and_then(Option::take);
        if let Some(publisher) = publisher {
            if self.pid != std::process::id() {
                // A fork's copy: the threads it would wait for are the parent's.
                std::mem::forget(publisher);
                return;
            }
            Python::attach(|py| py.detach(move || drop(publisher)));
        }
    }
}

/// The server's public key (Z85 text) and this publisher's key pair (read from its secret
/// certificate), for `PublisherBuilder::curve`; `None` when neither is given.
fn curve_keys(
    server: Option<&str>,
    secret: Option<PathBuf>,
) -> PyResult<Option<(PublicKey, KeyPair)>> {
    let (server, secret) = match (server, secret) {
        (None, None) => return Ok(None),
        (Some(server), Some(secret)) => (server, secret),
        (server, _) => {
            let (given, missing) = if server.is_some() {
                ("curve_server", "curve_secret")
            } else {
                ("curve_secret", "curve_server")
            };
            return Err(PyValueError::new_err(format!(
                "curve_server and curve_secret: expected both (CURVE: the server's public key \
                 and this peer's secret certificate) or neither, found {given} without {missing}"
            )));
        }
    };
    let server = PublicKey::from_z85(server).ok_or_else(|| {
        PyValueError::new_err(format!(
            "curve_server: expected the server's public key as 40 characters of Z85, found \
             {server:?}"
        ))
    })?;
    let own = KeyPair::load(&secret).map_err(|e| key_error("curve_secret", e))?;
    Ok(Some((server, own)))
}

/// A key that could not be read as a Python error: `OSError` (its subclass for the cause) for
/// a file that cannot be read, `ValueError` for one that does not hold what it should.
fn key_error(argument: &str, e: KeyError) -> PyErr {
    let message = format!("{argument}: {e}");
    match &e {
        KeyError::Io { source, .. } => match source.kind() {
            std::io::ErrorKind::NotFound => PyFileNotFoundError::new_err(message),
            std::io::ErrorKind::PermissionDenied => PyPermissionError::new_err(message),
            _ => PyOSError::new_err(message),
        },
        _ => PyValueError::new_err(message),
    }
}

/// A spool that cannot be opened (`Error::Spool`) as the `OSError` subclass of its cause, as
/// the pure-Python publisher raises it: `BlockingIOError` for a spool another publisher holds.
fn spool_error(kind: std::io::ErrorKind, message: String) -> PyErr {
    match kind {
        std::io::ErrorKind::WouldBlock => PyBlockingIOError::new_err(message),
        std::io::ErrorKind::NotFound => PyFileNotFoundError::new_err(message),
        std::io::ErrorKind::PermissionDenied => PyPermissionError::new_err(message),
        _ => PyOSError::new_err(message),
    }
}

/// A failed `flush` or `close` as `DeliveryFailure(message, pending, refused, kind, kept)`:
/// the records not passed on (acked delivery: not acknowledged; `None` when the error counts
/// none), those the collector refused, which error it was, and the spool directory that keeps
/// the records not acknowledged (`None`: no spool, or nothing kept).
fn delivery_error(e: ndbridge::Error) -> PyErr {
    let (pending, refused, kind, kept) = match &e {
        ndbridge::Error::Timeout { pending, .. } => (Some(*pending), 0, "timeout", None),
        ndbridge::Error::NoPeer { messages, .. } => (Some(*messages), 0, "no-peer", None),
        ndbridge::Error::Unacknowledged {
            unacknowledged,
            refused,
            kept,
            ..
        } => (
            Some(*unacknowledged),
            *refused,
            "unacknowledged",
            kept.clone(),
        ),
        _ => (None, 0, "other", None),
    };
    DeliveryFailure::new_err((e.to_string(), pending, refused, kind, kept))
}

/// The module: `Publisher`, `Buffer`, `encode`, `decode`, `compress`, `DeliveryFailure`.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<NativePublisher>()?;
    m.add_class::<Buffer>()?;
    m.add_function(wrap_pyfunction!(encode, m)?)?;
    m.add_function(wrap_pyfunction!(decode, m)?)?;
    m.add_function(wrap_pyfunction!(compress, m)?)?;
    m.add("DeliveryFailure", m.py().get_type::<DeliveryFailure>())?;
    m.add("default_source", ndbridge::Publisher::default_source())?;
    Ok(())
}

"""Messages as frames: :func:`encode` turns arrays into ``[header, buf_0, ...]``,
:func:`encode_end` makes the message that ends a publisher session, and :func:`decode` turns
either back into a :class:`Record`. Pure: no sockets.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import time as _time
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from .codec import decode_buffer, encode_buffer, over_expansion
from .dtypes import wire_dtype
from .errors import FrameError, WireError
from .header import END_NAME, FORMAT_VERSION, ArrayMeta, check_name, parse_header
from .limits import DEFAULT_LIMITS, Limits

__all__ = [
    "Record",
    "decode",
    "encode",
    "encode_end",
    "strip_topic",
    "default_source",
    "new_session",
]

#: What :func:`encode` accepts as arrays: one array-like, or a mapping of names to array-likes.
ArraysLike = Union[np.ndarray, np.generic, Mapping[str, Any], Any]

#: A frame as :func:`encode` returns it: header bytes, compressed bytes, or a memoryview of an
#: array's memory (raw frames are not copied).
Frame = Union[bytes, memoryview]


def default_source() -> str:
    """The default publisher id: ``"<host name>:<process id>"``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def new_session() -> str:
    """A new random session id: 16 hex characters."""
    return secrets.token_hex(8)


# The session `encode` uses when none is given: one per process.
_PROCESS_SESSION = new_session()


@dataclass
class Record:
    """One decoded message.

    Arrays keep the dtype as sent, byte order included: a big-endian sender's ``>f8`` arrives as
    ``>f8``, which numpy computes with correctly (``decode(..., native=True)`` converts instead).
    Every array is read-only; raw ones are views on the received frames, not copies, and keep
    those frames alive. Call ``.copy()`` for a writable array of your own.

    Attributes:
        name: Record name.
        source: The publisher's id.
        session: The publisher's random session id.
        seq: Position of the message in its publisher session (gaps mean lost messages).
        time: Publisher clock when the message was made, seconds since the Unix epoch.
        attrs: The user's JSON object (``{}`` when the message has none).
        arrays: Array name -> array, in frame order.
        header: The header's JSON object as parsed, unknown fields included.
        end: False for a record. True for the message that ends its publisher session
            (``"end": true``, sent once by a publisher to a collector that closes normally
            after sending records): it is named ``"end"``, has no arrays and no attrs, and its
            `seq` is the number of records the session sent, so records missing before it (the
            last ones included) show as gaps.
    """

    name: str
    source: str
    session: str
    seq: int
    time: float
    attrs: Dict[str, Any]
    arrays: Dict[str, np.ndarray]
    header: Dict[str, Any] = field(repr=False)
    end: bool = False

    def __getitem__(self, name: str) -> np.ndarray:
        """The array called `name`."""
        return self.arrays[name]


def _as_buffer(frame: Any, index: int) -> memoryview:
    """A flat byte view of one frame: ``bytes``, ``zmq.Frame``, ``memoryview`` or any buffer."""
    try:
        view = memoryview(frame)
    except TypeError:
        raise TypeError(f"frames[{index}]: expected bytes, zmq.Frame or another buffer, found "
                        f"{type(frame).__name__}") from None
    if view.ndim != 1 or view.format not in ("B", "b", "c"):
        if not view.c_contiguous:
            raise TypeError(f"frames[{index}]: expected a contiguous buffer")
        view = view.cast("B")
    return view


def strip_topic(frames: Sequence[Any]) -> Tuple[str, List[Any]]:
    """Splits a PUB/SUB message into its topic (the record name) and ``[header, buf_0, ...]``.

    >>> strip_topic([b"state", b"{}"])
    ('state', [b'{}'])
    """
    if len(frames) < 2:
        raise FrameError("frames", f"expected a topic frame and a header frame, found "
                                   f"{len(frames)} frame(s)")
    try:
        topic = bytes(_as_buffer(frames[0], 0)).decode("utf-8")
    except UnicodeDecodeError:
        raise FrameError("topic", "expected the record name as UTF-8, found invalid UTF-8") \
            from None
    return topic, list(frames[1:])


def decode(frames: Sequence[Any], *, limits: Limits = DEFAULT_LIMITS, native: bool = False,
           topic: Optional[str] = None) -> Record:
    """Decodes a message ``[header, buf_0, ..., buf_{n-1}]`` (without a topic frame).

    Args:
        frames: The frames as ``bytes``, ``zmq.Frame`` (from ``recv_multipart(copy=False)``),
            ``memoryview`` or any other buffer.
        limits: The bounds a message must stay within, checked before anything is allocated.
        native: Convert arrays sent in the other byte order to native order (a copy). By
            default arrays keep the byte order they were sent in.
        topic: The topic frame's text, for a message from a SUB socket (see
            :func:`strip_topic`); it must equal the record name.

    Raw arrays are read-only views on the frames (no copy). Use ``.copy()`` for a writable array.
    Raises a :class:`~ndbridge.WireError` subclass for anything that does not follow the format.

    >>> import numpy as np
    >>> rec = decode(encode("u", np.arange(6.0).reshape(2, 3), codec="raw"))
    >>> rec.name, rec["u"].shape, rec["u"].flags.writeable
    ('u', (2, 3), False)
    """
    frames = list(frames)
    if not frames:
        raise FrameError("frames", "expected a header frame, found no frames")
    buffers = [_as_buffer(f, i) for i, f in enumerate(frames)]
    header = parse_header(buffers[0], limits)
    if topic is not None and topic != header.name:
        raise WireError("topic", f"expected the record name {header.name!r}, found {topic!r}")
    if len(buffers) != len(header.arrays) + 1:
        raise FrameError("frames", f"expected {len(header.arrays) + 1} frames (the header and "
                                   f"{len(header.arrays)} buffer(s)), found {len(buffers)}")
    arrays: Dict[str, np.ndarray] = {}
    for meta, buf in zip(header.arrays, buffers[1:]):
        arrays[meta.name] = _to_array(meta, decode_buffer(meta, buf, limits), native)
    return Record(name=header.name, source=header.source, session=header.session,
                  seq=header.seq, time=header.time, attrs=header.attrs, arrays=arrays,
                  header=header.raw, end=header.end)


def _to_array(meta: ArrayMeta, data: Any, native: bool) -> np.ndarray:
    flat = np.frombuffer(data, dtype=meta.dtype) if meta.nbytes else np.empty(0, meta.dtype)
    if meta.dtype.kind == "b" and flat.size:
        as_bytes = flat.view(np.uint8)
        if as_bytes.max() > 1:
            bad = np.flatnonzero(as_bytes > 1)
            raise WireError(f"{meta.field}", f"boolean elements must be bytes 0 or 1, found "
                                             f"{int(as_bytes[bad[0]])} at element {int(bad[0])}")
    try:
        array = flat.reshape(meta.shape, order=meta.order)  # type: ignore[call-overload]
        if native and not array.dtype.isnative:
            array = array.astype(array.dtype.newbyteorder("="), order="K")
    except ValueError as e:  # e.g. more dimensions than this numpy supports
        raise WireError(f"{meta.field}.shape", f"numpy cannot make an array of shape "
                                               f"{list(meta.shape)}: {e}") from None
    array.flags.writeable = False
    return array


def _check_time(value: Any) -> float:
    seconds = float(value)
    if not np.isfinite(seconds):
        raise ValueError(f"time: expected finite seconds since the Unix epoch, found {value!r}")
    return seconds


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _as_array(value: Any) -> np.ndarray:
    """`value` as an array holding all of its content; ``TypeError`` for what would not survive
    the trip: a masked array (the mask would be lost), objects, text, ragged nesting."""
    if isinstance(value, np.ma.MaskedArray):
        raise TypeError("expected a plain array, found a masked array (numpy.ma): the wire "
                        "carries no mask; send a.filled(fill_value), or a.data and "
                        "np.ma.getmaskarray(a) as two arrays")
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as e:  # ragged nesting, objects numpy cannot convert
        raise TypeError(f"expected an array of numbers, found {type(value).__name__} that numpy "
                        f"cannot make into one: {e}") from None
    if array.dtype.kind == "O":
        raise TypeError(f"dtype: expected numbers, found object ({type(value).__name__} "
                        f"holding Python objects): the wire carries numbers only, never Python objects")
    return array


def _checked_arrays(name: str, arrays: "ArraysLike",
                    limits: Optional[Limits]) -> List[Tuple[str, np.ndarray]]:
    """The record's arrays as ``(name, ndarray)``, each checked: names, types the wire carries
    whole (``TypeError`` otherwise), and `limits` (``ValueError``), before anything is copied."""
    problem = check_name(name)
    if problem:
        raise ValueError(f"name: {problem}")
    if isinstance(arrays, Mapping):
        items: Iterable[Tuple[Any, Any]] = arrays.items()
        if limits is not None and len(arrays) > limits.max_arrays:
            raise _over("max_arrays", len(arrays), limits.max_arrays, "arrays: count")
    else:
        items = [(name, arrays)]
    checked: List[Tuple[str, np.ndarray]] = []
    total = 0
    for array_name, value in items:
        problem = check_name(array_name)
        if problem:
            raise ValueError(f"arrays[{array_name!r}]: name {problem}")
        try:
            array = _as_array(value)
            wire_dtype(array.dtype)  # TypeError for types the format cannot carry
        except TypeError as e:
            sep = "." if str(e).startswith("dtype:") else ": "
            raise TypeError(f"arrays[{array_name!r}]{sep}{e}") from None
        if limits is not None:
            field = f"arrays[{array_name!r}]:"
            if array.ndim > limits.max_ndim:
                raise _over("max_ndim", array.ndim, limits.max_ndim, f"{field} ndim")
            if array.nbytes > limits.max_array_bytes:
                raise _over("max_array_bytes", array.nbytes, limits.max_array_bytes,
                            f"{field} nbytes")
            total += array.nbytes
            if total > limits.max_message_bytes:
                raise _over("max_message_bytes", total, limits.max_message_bytes,
                            "arrays: nbytes summed over the message")
        checked.append((array_name, array))
    return checked


def _contiguous(array: np.ndarray) -> Tuple[np.ndarray, str, np.ndarray]:
    """An array as ``(array, order, flat uint8 view of its bytes)``, copying only if the array
    is neither C- nor F-contiguous."""
    if array.flags.c_contiguous:
        order = "C"
    elif array.flags.f_contiguous:
        order = "F"
    else:
        array, order = np.ascontiguousarray(array), "C"
    flat = array.reshape(-1, order=order)  # a view: the array is contiguous in that order
    return array, order, flat.view(np.uint8)


def _over(limit: str, value: int, maximum: int, what: str) -> ValueError:
    """The error for a message over one of the reader's limits, before anything is sent."""
    if limit in ("max_array_bytes", "max_message_bytes"):
        hint = " (a collector started with --max-array-mib N takes up to N MiB; pass the same " \
               "limits=ndbridge.Limits(...))"
    elif limit == "max_expansion":
        hint = " (codec='auto' sends such an array raw; a collector started with " \
               "--max-expansion 0 takes it compressed, with limits=ndbridge.Limits(" \
               "max_expansion=2**64))"
    else:
        hint = ""
    return ValueError(f"{what} {value} exceeds the limit {limit}={maximum}, so a reader with "
                      f"these limits would reject the message{hint}")


def encode(name: str, arrays: ArraysLike, *, codec: str = "auto", level: int = 1,
           shuffle: Optional[bool] = None, attrs: Optional[Mapping[str, Any]] = None,
           source: Optional[str] = None, session: Optional[str] = None, seq: int = 0,
           time: Optional[float] = None,
           limits: Optional[Limits] = DEFAULT_LIMITS) -> List[Frame]:
    """Encodes arrays as the frames ``[header, buf_0, ...]`` of one message (no topic frame).

    Args:
        name: Record name: non-empty, at most 256 bytes of UTF-8, no NUL.
        arrays: One array (sent under the record name), or a mapping of array names to
            arrays. Anything ``np.asarray`` accepts works, numpy scalars and 0-d arrays too.
            C- and F-contiguous arrays are sent without a copy (order ``"C"`` / ``"F"``);
            other arrays are made C-contiguous once.
        codec: ``"raw"`` sends the bytes as they are; ``"zstd"`` compresses; ``"auto"``
            compresses and keeps the result only when it is at most 90% of the raw size (and
            within ``limits.max_expansion``).
        level: zstd level (1 is fast; up to 22).
        shuffle: ``None`` byte-shuffles multi-byte arrays that are compressed; ``True`` always
            adds the shuffle filter (raw frames too); ``False`` never shuffles.
        attrs: A JSON-serializable mapping, passed through to readers untouched.
        source: Publisher id; default ``"<host>:<pid>"``.
        session: Session id; default a random id made once per process.
        seq: Position in the session. :class:`~ndbridge.Publisher` numbers messages for you.
        time: Seconds since the Unix epoch; default now.
        limits: The limits of the reader the message is for (default ndbridge's, which a
            collector enforces): a message over any of them raises ``ValueError`` before
            anything is compressed. ``None`` checks nothing.

    Raw frames are memoryviews of the arrays' memory: they stay valid while the arrays do, and
    show any later change to them. Raises ``ValueError`` for bad arguments and ``TypeError``
    for values that would not arrive as they are: masked arrays (the mask would be lost),
    object arrays, text, and dtypes the format cannot carry.

    >>> import numpy as np
    >>> frames = encode("u", np.zeros((2, 3)), codec="raw", seq=5)
    >>> len(frames), len(frames[1])
    (2, 48)
    """
    if attrs is not None and not isinstance(attrs, Mapping):
        raise TypeError(f"attrs: expected a mapping (a JSON object), found {type(attrs).__name__}")
    if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq < 2**64:
        raise ValueError(f"seq: expected a non-negative integer below 2**64, found {seq!r}")

    # Every array is checked before anything is copied or compressed.
    checked = _checked_arrays(name, arrays, limits)

    entries: List[Dict[str, Any]] = []
    frames: List[Frame] = []
    for array_name, array in checked:
        array, order, data = _contiguous(array)
        used_codec, filters, frame = encode_buffer(data, array.dtype.itemsize, codec, level,
                                                   shuffle)
        if used_codec == "zstd" and limits is not None \
                and over_expansion(data.size, len(frame), limits):
            if codec != "auto":
                raise _over("max_expansion", data.size // max(1, len(frame)),
                            limits.max_expansion,
                            f"arrays[{array_name!r}]: decoded/compressed size ratio")
            # "auto": compressed, the reader would refuse it; raw, it takes it.
            used_codec, filters, frame = encode_buffer(data, array.dtype.itemsize, "raw", level,
                                                       shuffle)
        entry: Dict[str, Any] = {
            "name": array_name,
            "dtype": array.dtype.str,
            "shape": list(array.shape),
            "order": order,
            "codec": used_codec,
        }
        if filters:
            entry["filters"] = list(filters)
        entry["nbytes"] = int(data.size)
        entries.append(entry)
        frames.append(frame)

    header: Dict[str, Any] = {
        "v": FORMAT_VERSION,
        "name": name,
        "source": default_source() if source is None else str(source),
        "session": _PROCESS_SESSION if session is None else str(session),
        "seq": seq,
        "time": _time.time() if time is None else _check_time(time),
        "arrays": entries,
    }
    if attrs is not None:
        header["attrs"] = dict(attrs)
    try:
        text = json.dumps(header, separators=(",", ":"), ensure_ascii=False, allow_nan=False,
                          default=_json_default)
    except (TypeError, ValueError) as e:
        raise ValueError(f"attrs: expected JSON-serializable values (no NaN or infinity), {e}") \
            from None
    header_bytes = text.encode("utf-8")
    if limits is not None and len(header_bytes) > limits.max_header_bytes:
        raise _over("max_header_bytes", len(header_bytes), limits.max_header_bytes,
                    "header: bytes (names and attrs)")
    return [header_bytes] + frames


def encode_end(source: str, session: str, seq: int, time: Optional[float] = None) -> bytes:
    """The header frame of the message that ends a publisher session: the whole message, as it
    has no arrays (no buffer frames) and no attrs.

    Args:
        source: The publisher's id, as in its records.
        session: The session being ended.
        seq: The number of records the session sent (one past the last record's ``seq``).
        time: Seconds since the Unix epoch; default now.

    :class:`~ndbridge.Publisher` sends it when it closes (to a collector, after at least one
    record). Its JSON is canonical: the fields in the order of a record's, then ``"end":true``.

    >>> encode_end("w1", "ab12", 7, time=1.5)
    b'{"v":1,"name":"end","source":"w1","session":"ab12","seq":7,"time":1.5,"arrays":[],"end":true}'
    """
    if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq < 2**64:
        raise ValueError(f"seq: expected a non-negative integer below 2**64, found {seq!r}")
    header: Dict[str, Any] = {
        "v": FORMAT_VERSION,
        "name": END_NAME,
        "source": str(source),
        "session": str(session),
        "seq": seq,
        "time": _time.time() if time is None else _check_time(time),
        "arrays": [],
        "end": True,
    }
    return json.dumps(header, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")

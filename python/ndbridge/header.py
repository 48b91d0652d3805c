"""The header frame: parsing and checking the UTF-8 JSON object that describes a message.

:func:`parse_header` checks every field the format defines and names the one that is wrong;
fields it does not know are ignored. It works on bytes alone (no sockets).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Tuple

import numpy as np

from .dtypes import parse_dtype
from .errors import HeaderError, LimitError, VersionError, describe
from .limits import DEFAULT_LIMITS, Limits

__all__ = [
    "FORMAT_VERSION",
    "MAX_NAME_BYTES",
    "END_NAME",
    "ArrayMeta",
    "Header",
    "check_name",
    "parse_header",
]

#: The format version this package reads and writes.
FORMAT_VERSION = 1

#: Longest record or array name, in bytes of UTF-8.
MAX_NAME_BYTES = 256

# Largest byte extent numpy can address, even for an array with a zero-length axis.
_MAX_ADDRESS = int(np.iinfo(np.intp).max)

#: The record name of a message that ends its publisher session (``"end": true``).
END_NAME = "end"

#: The filters this package can undo.
KNOWN_FILTERS = ("shuffle",)


@dataclass(frozen=True)
class ArrayMeta:
    """One checked entry of the header's ``arrays`` list.

    Attributes:
        index: Position in the list (the buffer frame is frame ``index + 1``).
        name: The array's name within the record.
        dtype: The numpy dtype, byte order as sent.
        shape: Length of each axis; ``()`` for a 0-d array.
        order: ``"C"`` or ``"F"``: the element order of the decoded buffer.
        codec: ``"raw"``, ``"zstd"`` or ``"zstd-chunks"`` (independent chunks of whole elements).
        filters: Filters applied before the codec, in order (only ``"shuffle"`` exists).
        nbytes: Decoded length in bytes, equal to ``product(shape) * itemsize``.
    """

    index: int
    name: str
    dtype: np.dtype
    shape: Tuple[int, ...]
    order: str
    codec: str
    filters: Tuple[str, ...]
    nbytes: int

    @property
    def field(self) -> str:
        """The entry's path in the header, for error messages: ``arrays[3]``."""
        return f"arrays[{self.index}]"


@dataclass(frozen=True)
class Header:
    """A checked header: the record's fields, its array entries and the JSON object as parsed.

    Attributes:
        name: Record name.
        source: The publisher's id.
        session: The publisher's random session id.
        seq: Position of the message in its publisher session.
        time: Publisher clock, seconds since the Unix epoch.
        arrays: The checked array entries, in frame order.
        attrs: The user's JSON object; ``{}`` when the header has none.
        raw: The whole JSON object, unknown fields included.
        end: True when the message ends its publisher session (``"end": true``): it has no
            arrays, and its `seq` is the number of records the session sent. False for a
            record (``end`` absent or false).
    """

    name: str
    source: str
    session: str
    seq: int
    time: float
    arrays: List[ArrayMeta]
    attrs: Dict[str, Any]
    raw: Dict[str, Any] = field(repr=False)
    end: bool = False


def check_name(name: object) -> str:
    """Why `name` is not a valid record or array name, or ``""`` if it is.

    A name is a non-empty string of at most 256 bytes of UTF-8 without NUL.
    """
    if not isinstance(name, str):
        return f"expected a string, found {describe(name)}"
    if not name:
        return "expected a non-empty name, found \"\""
    if "\0" in name:
        return f"expected a name without NUL, found {name[:64]!r}"
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        return f"expected valid UTF-8 text, found {name[:64]!r}"
    if size > MAX_NAME_BYTES:
        return f"expected at most {MAX_NAME_BYTES} bytes of UTF-8, found {size} bytes"
    return ""


def _reject_constant(token: str) -> Any:
    raise ValueError(f"{token} is not valid JSON")


def _is_int(value: object) -> bool:
    # JSON true/false arrive as bool, which Python counts as int.
    return isinstance(value, int) and not isinstance(value, bool)


def _require(obj: Dict[str, Any], key: str, path: str) -> Any:
    if key not in obj:
        raise HeaderError(path, "required field is missing")
    return obj[key]


def _get_str(obj: Dict[str, Any], key: str, path: str) -> str:
    value = _require(obj, key, path)
    if not isinstance(value, str):
        raise HeaderError(path, f"expected a string, found {describe(value)}")
    return value


def _get_uint(obj: Dict[str, Any], key: str, path: str) -> int:
    value = _require(obj, key, path)
    if not _is_int(value) or not 0 <= value < 2**64:
        raise HeaderError(path, "expected a non-negative integer below 2**64, "
                                f"found {describe(value)}")
    return value


def _get_name(obj: Dict[str, Any], key: str, path: str) -> str:
    value = _require(obj, key, path)
    problem = check_name(value)
    if problem:
        raise HeaderError(path, problem)
    return value


def parse_header(data: bytes, limits: Limits = DEFAULT_LIMITS) -> Header:
    """Parses and checks a header frame.

    `data` is the frame's bytes. Every field the format defines is checked: ``nbytes`` must equal
    ``product(shape) * itemsize``, the sizes claimed must be within `limits`, and ``end``, if
    present, must be a boolean (``true`` only with an empty ``arrays`` list). Unknown fields are
    ignored. Raises a :class:`~ndbridge.WireError` subclass naming the faulty field.

    >>> h = parse_header(b'{"v": 1, "name": "u", "source": "w1", "session": "ab", "seq": 7, '
    ...                  b'"time": 1.5, "arrays": [{"name": "u", "dtype": "<f8", '
    ...                  b'"shape": [2, 3], "order": "C", "codec": "raw", "nbytes": 48}]}')
    >>> (h.seq, h.arrays[0].shape, h.arrays[0].codec)
    (7, (2, 3), 'raw')
    """
    if len(data) > limits.max_header_bytes:
        raise LimitError("header", "max_header_bytes", len(data), limits.max_header_bytes,
                         what="size in bytes")
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError as e:
        raise HeaderError("header", f"expected UTF-8 JSON, found invalid UTF-8 at byte "
                                    f"{e.start}") from None
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as e:
        raise HeaderError("header", f"expected a JSON object, found text that is not JSON ({e})") \
            from None
    if not isinstance(obj, dict):
        raise HeaderError("header", f"expected a JSON object, found {describe(obj)}")

    version = _require(obj, "v", "v")
    if not _is_int(version):
        raise HeaderError("v", f"expected the integer {FORMAT_VERSION}, found {describe(version)}")
    if version != FORMAT_VERSION:
        raise VersionError("v", f"format version {version} is not supported; this reader "
                                f"understands version {FORMAT_VERSION}", version)

    name = _get_name(obj, "name", "name")
    source = _get_str(obj, "source", "source")
    session = _get_str(obj, "session", "session")
    seq = _get_uint(obj, "seq", "seq")
    time = _require(obj, "time", "time")
    if not isinstance(time, (int, float)) or isinstance(time, bool):
        raise HeaderError("time", f"expected a number, found {describe(time)}")
    try:
        time = float(time)
    except OverflowError:
        raise HeaderError("time", f"expected seconds since the Unix epoch, found "
                                  f"{describe(time)}") from None
    attrs = obj.get("attrs")
    if attrs is None:
        attrs = {}
    elif not isinstance(attrs, dict):
        raise HeaderError("attrs", f"expected a JSON object, found {describe(attrs)}")

    entries = _require(obj, "arrays", "arrays")
    if not isinstance(entries, list):
        raise HeaderError("arrays", f"expected a list, found {describe(entries)}")
    if len(entries) > limits.max_arrays:
        raise LimitError("arrays", "max_arrays", len(entries), limits.max_arrays,
                         what="array count")
    arrays = [_parse_entry(i, entry, limits) for i, entry in enumerate(entries)]
    total = sum(meta.nbytes for meta in arrays)
    if total > limits.max_message_bytes:
        raise LimitError("arrays", "max_message_bytes", total, limits.max_message_bytes,
                         what="decoded bytes of the message")
    seen: Dict[str, int] = {}
    for meta in arrays:
        if meta.name in seen:
            raise HeaderError(f"{meta.field}.name", f"expected a name unique in the record, found "
                                                    f"{meta.name!r} again (first at "
                                                    f"arrays[{seen[meta.name]}])")
        seen[meta.name] = meta.index
    end = _get_end(obj, len(arrays))
    return Header(name=name, source=source, session=session, seq=seq, time=time,
                  arrays=arrays, attrs=attrs, raw=obj, end=end)


def _get_end(obj: Dict[str, Any], array_count: int) -> bool:
    """The optional ``end`` field: ``False`` when absent; an end message carries no arrays."""
    end = obj.get("end", False)
    if not isinstance(end, bool):
        raise HeaderError("end", f"expected true or false, found {describe(end)}")
    if end and array_count:
        raise HeaderError("end", f"expected no arrays (an end message carries none), found "
                                 f"{array_count} array entr{'y' if array_count == 1 else 'ies'}")
    return end


def _parse_entry(index: int, entry: object, limits: Limits) -> ArrayMeta:
    path = f"arrays[{index}]"
    if not isinstance(entry, dict):
        raise HeaderError(path, f"expected a JSON object, found {describe(entry)}")
    name = _get_name(entry, "name", f"{path}.name")
    dtype = parse_dtype(_require(entry, "dtype", f"{path}.dtype"), f"{path}.dtype")

    shape_value = _require(entry, "shape", f"{path}.shape")
    if not isinstance(shape_value, list):
        raise HeaderError(f"{path}.shape", f"expected a list of non-negative integers, found "
                                           f"{describe(shape_value)}")
    if len(shape_value) > limits.max_ndim:
        raise LimitError(f"{path}.shape", "max_ndim", len(shape_value), limits.max_ndim,
                         what="dimension count")
    for axis, n in enumerate(shape_value):
        if not _is_int(n) or n < 0:
            raise HeaderError(f"{path}.shape[{axis}]", f"expected a non-negative integer, found "
                                                       f"{describe(n)}")
    shape = tuple(shape_value)

    order = _get_str(entry, "order", f"{path}.order")
    if order not in ("C", "F"):
        raise HeaderError(f"{path}.order", f"expected \"C\" or \"F\", found {order[:32]!r}")
    codec = _get_str(entry, "codec", f"{path}.codec")
    if codec not in ("raw", "zstd", "zstd-chunks"):
        raise HeaderError(f"{path}.codec", f"expected \"raw\", \"zstd\" or \"zstd-chunks\", "
                                           f"found {codec[:32]!r}")

    filters_value = entry.get("filters")
    if filters_value is None:
        filters_value = []
    if not isinstance(filters_value, list):
        raise HeaderError(f"{path}.filters", f"expected a list of filter names, found "
                                             f"{describe(filters_value)}")
    for k, f in enumerate(filters_value):
        if f not in KNOWN_FILTERS:
            raise HeaderError(f"{path}.filters[{k}]", f"expected one of {list(KNOWN_FILTERS)}, "
                                                      f"found {describe(f)}")
        if f in filters_value[:k]:
            first = filters_value.index(f)
            raise HeaderError(f"{path}.filters[{k}]", f"expected each filter at most once, "
                                                      f"found {describe(f)} again (first at "
                                                      f"filters[{first}])")
    filters = tuple(filters_value)

    nbytes = _get_uint(entry, "nbytes", f"{path}.nbytes")
    computed = addressed = dtype.itemsize
    for n in shape:
        computed *= n
        addressed *= max(n, 1)
    if addressed > _MAX_ADDRESS:
        # Even an empty array needs its non-zero axes to be addressable.
        raise HeaderError(f"{path}.shape", f"expected axes whose non-zero lengths times the "
                                           f"itemsize fit in {_MAX_ADDRESS}, found {shape_value}")
    if nbytes != computed:
        raise HeaderError(f"{path}.nbytes", f"{nbytes} declared, shape and dtype give {computed}")
    if nbytes > limits.max_array_bytes:
        raise LimitError(f"{path}.nbytes", "max_array_bytes", nbytes, limits.max_array_bytes,
                         what="decoded size")
    return ArrayMeta(index=index, name=name, dtype=dtype, shape=shape, order=order, codec=codec,
                     filters=filters, nbytes=nbytes)

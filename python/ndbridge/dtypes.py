"""Element types on the wire: the type strings the format allows, and numpy dtypes for them.

The wire uses numpy's array-interface type strings with the byte order always spelled out:
``|b1``, ``|i1``, ``|u1``, ``<i2`` ... ``<c16`` and the ``>`` (big-endian) versions of the
multi-byte ones. A reader also accepts ``<`` and ``>`` on the one-byte types.
"""

from __future__ import annotations

import re

import numpy as np

from .errors import HeaderError, describe

__all__ = ["SIZES", "parse_dtype", "wire_dtype"]

#: The item sizes the format allows for each numpy kind character.
SIZES = {
    "b": (1,),
    "i": (1, 2, 4, 8),
    "u": (1, 2, 4, 8),
    "f": (2, 4, 8),
    "c": (8, 16),
}

_PATTERN = re.compile(r"([<>|])([biufc])([1-9][0-9]?)")
_ALLOWED = ", ".join(
    ("|" if size == 1 else "<") + kind + str(size)
    for kind, sizes in SIZES.items()
    for size in sizes
)


def parse_dtype(text: object, field: str = "dtype") -> np.dtype:
    """The numpy dtype for a wire type string, byte order as written.

    Raises :class:`~ndbridge.HeaderError` naming `field` for anything the format does not allow.

    >>> parse_dtype(">f8").str
    '>f8'
    >>> parse_dtype("<u1").str
    '|u1'
    """
    if not isinstance(text, str):
        raise HeaderError(field, f"expected a type string such as \"<f8\", found {describe(text)}")
    match = _PATTERN.fullmatch(text)
    if match is None:
        raise HeaderError(field, f"expected one of {_ALLOWED} (or '>' for big-endian), "
                                 f"found {text[:32]!r}")
    order, kind, size = match.group(1), match.group(2), int(match.group(3))
    if size not in SIZES[kind]:
        raise HeaderError(field, f"expected one of {_ALLOWED}, found {text!r} "
                                 f"(no {size}-byte {kind!r} type on the wire)")
    if size > 1 and order == "|":
        raise HeaderError(field, f"expected '<' or '>' byte order for a {size}-byte type, "
                                 f"found {text!r}")
    return np.dtype(text)


def wire_dtype(dtype: np.dtype) -> str:
    """The wire type string for a numpy dtype; ``TypeError`` if the format cannot carry it.

    >>> wire_dtype(np.dtype("float64")) in ("<f8", ">f8")
    True
    """
    if dtype.fields is not None or dtype.subdtype is not None or dtype.kind not in SIZES \
            or dtype.itemsize not in SIZES[dtype.kind]:
        raise TypeError(f"dtype: expected bool, int8..int64, uint8..uint64, float16/32/64 or "
                        f"complex64/128, found {dtype} ({dtype.str})")
    return dtype.str


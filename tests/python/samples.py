"""Test helpers: the wire's dtypes and sample arrays whose values exercise each type."""

from __future__ import annotations

import numpy as np

#: Every type string of the format, in the byte order numpy writes on a little-endian machine.
DTYPES = ["|b1", "|i1", "|u1", "<i2", "<i4", "<i8", "<u2", "<u4", "<u8", "<f2", "<f4", "<f8",
          "<c8", "<c16"]

#: The big-endian versions of the multi-byte types.
BIG_ENDIAN = [">" + d[1:] for d in DTYPES if d[0] == "<"]


def sample(dtype: str, shape=(4, 3, 2), seed: int = 7) -> np.ndarray:
    """Values that exercise the type: extremes, negative numbers, NaN and infinities."""
    dt = np.dtype(dtype)
    rng = np.random.default_rng(seed)
    n = int(np.prod(shape))
    if dt.kind == "b":
        flat = rng.integers(0, 2, n).astype(bool)
    elif dt.kind in "iu":
        info = np.iinfo(dt)
        flat = rng.integers(int(info.min), int(info.max), n, endpoint=True,
                            dtype=dt.newbyteorder("="))
        flat[:2] = [info.min, info.max]
    elif dt.kind == "f":
        flat = rng.standard_normal(n).astype(dt.newbyteorder("="))
        flat[:4] = [np.nan, np.inf, -np.inf, -0.0]
    else:
        flat = (rng.standard_normal(n) + 1j * rng.standard_normal(n)).astype(dt.newbyteorder("="))
        flat[:2] = [complex(np.nan, np.inf), complex(-0.0, -np.inf)]
    return flat.reshape(shape).astype(dt)

"""Reader limits: the most a message may claim before anything is allocated for it."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Limits", "DEFAULT_LIMITS"]


@dataclass(frozen=True)
class Limits:
    """Bounds :func:`~ndbridge.decode` enforces on every message before it allocates.

    A message over any limit is rejected whole with a :class:`~ndbridge.LimitError` naming the
    limit. The defaults are ndbridge's: raise them for larger arrays, e.g.
    ``Limits(max_array_bytes=16 << 30)``.

    Attributes:
        max_header_bytes: Largest header frame, in bytes. Default 1 MiB.
        max_arrays: Most arrays in one message. Default 4096.
        max_array_bytes: Largest decoded array (``nbytes``), in bytes. Default 4 GiB.
        max_ndim: Most dimensions of one array. Default 64.
        max_message_bytes: Most decoded bytes (``nbytes`` summed over the arrays) of one
            message. Default 4 GiB.
    """

    max_header_bytes: int = 1 << 20
    max_arrays: int = 4096
    max_array_bytes: int = 4 << 30
    max_ndim: int = 64
    max_message_bytes: int = 4 << 30


#: ndbridge's default limits.
DEFAULT_LIMITS = Limits()

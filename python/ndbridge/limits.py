"""Reader limits: the most a message may claim before anything is allocated for it."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Limits", "DEFAULT_LIMITS", "EXPANSION_FREE_BYTES"]

#: Arrays of at most this many decoded bytes (64 MiB) are not held to
#: :attr:`Limits.max_expansion`.
EXPANSION_FREE_BYTES = 64 << 20


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
        max_expansion: Largest ratio of an array's decoded size to its zstd frame's size (for
            ``zstd-chunks``, to the whole buffer frame's), for arrays over 64 MiB
            (:data:`EXPANSION_FREE_BYTES`). Default 1024: a small message
            cannot make a reader allocate gigabytes. Smooth fields compress far less; an array
            of one repeated value compresses about 30,000 to 1, so raise this to receive such
            arrays over 64 MiB compressed (a collector: ``--max-expansion 0``).
    """

    max_header_bytes: int = 1 << 20
    max_arrays: int = 4096
    max_array_bytes: int = 4 << 30
    max_ndim: int = 64
    max_message_bytes: int = 4 << 30
    max_expansion: int = 1024


#: ndbridge's default limits.
DEFAULT_LIMITS = Limits()

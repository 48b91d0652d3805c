"""Buffer codecs: the byte shuffle and zstd, in both directions, for one buffer frame at a time.

Decoding checks before it allocates: a zstd frame must declare a content size equal to the
entry's ``nbytes`` (already checked against the limits) before anything is decompressed. zstd
contexts are kept per thread and reused. Nothing here touches a socket.
"""

from __future__ import annotations

import threading
from typing import Dict, Optional, Tuple, Union

import numpy as np
import zstandard

from .errors import CodecError, FrameError, LimitError
from .header import ArrayMeta
from .limits import DEFAULT_LIMITS, EXPANSION_FREE_BYTES, Limits

__all__ = [
    "AUTO_MAX_RATIO",
    "CHUNKINGS",
    "CODECS",
    "shuffle",
    "unshuffle",
    "compress",
    "encode_buffer",
    "decode_buffer",
    "over_expansion",
]

#: ``codec="auto"`` keeps a zstd frame only when it is at most this fraction of the raw size.
AUTO_MAX_RATIO = 0.9

#: The codec choices an encoder accepts.
CODECS = ("raw", "zstd", "auto")

#: What ``Publisher(chunking=...)`` accepts: when arrays of 2 MiB or more are compressed in
#: parallel chunks (codec ``zstd-chunks``, by the native core).
CHUNKINGS = ("auto", "always", "never")

Buffer = Union[bytes, memoryview, np.ndarray]

_local = threading.local()


def _compressor(level: int) -> zstandard.ZstdCompressor:
    cache: Dict[int, zstandard.ZstdCompressor] = _local.__dict__.setdefault("compressors", {})
    cctx = cache.get(level)
    if cctx is None:
        # The content size lets readers check and allocate exactly. No checksum, like the Rust
        # encoder: the transports deliver bytes intact and hashing costs time on both sides.
        cctx = zstandard.ZstdCompressor(level=level, write_content_size=True, write_checksum=False)
        cache[level] = cctx
    return cctx


def _decompressor() -> zstandard.ZstdDecompressor:
    dctx = _local.__dict__.get("decompressor")
    if dctx is None:
        dctx = _local.decompressor = zstandard.ZstdDecompressor()
    return dctx


def shuffle(data: Buffer, itemsize: int) -> np.ndarray:
    """Byte-shuffles `data`: byte 0 of every element, then byte 1 of every element, and so on.

    ``shuffled[j * n + i] == data[i * itemsize + j]`` for ``n = len(data) // itemsize`` elements.
    Returns a new ``uint8`` array.

    >>> bytes(shuffle(b"\\x01\\x02\\x03\\x04\\x05\\x06", 2))
    b'\\x01\\x03\\x05\\x02\\x04\\x06'
    """
    src = np.frombuffer(data, dtype=np.uint8)
    n = src.size // itemsize
    out = np.empty(src.size, dtype=np.uint8)
    out.reshape(itemsize, n)[...] = src.reshape(n, itemsize).T
    return out


def unshuffle(data: Buffer, itemsize: int) -> np.ndarray:
    """Undoes :func:`shuffle`. Returns a new ``uint8`` array.

    >>> bytes(unshuffle(b"\\x01\\x03\\x05\\x02\\x04\\x06", 2))
    b'\\x01\\x02\\x03\\x04\\x05\\x06'
    """
    src = np.frombuffer(data, dtype=np.uint8)
    n = src.size // itemsize
    out = np.empty(src.size, dtype=np.uint8)
    out.reshape(n, itemsize)[...] = src.reshape(itemsize, n).T
    return out


def compress(data: Buffer, level: int = 1) -> bytes:
    """One zstd frame holding `data`, with its content size declared."""
    return _compressor(level).compress(data)


def check_level(level: object) -> int:
    """`level` if it is a zstd compression level, else ``ValueError``."""
    if not isinstance(level, int) or isinstance(level, bool) \
            or not -(1 << 17) <= level <= zstandard.MAX_COMPRESSION_LEVEL:
        raise ValueError(f"level: expected an integer zstd level up to "
                         f"{zstandard.MAX_COMPRESSION_LEVEL}, found {level!r}")
    return level


def encode_buffer(data: np.ndarray, itemsize: int, codec: str = "auto", level: int = 1,
                  shuffle_filter: Union[bool, None] = None) -> Tuple[str, Tuple[str, ...], Buffer]:
    """Encodes one decoded buffer; returns ``(codec, filters, frame)`` for the header and wire.

    `data` is the array's bytes as a 1-D ``uint8`` array. ``codec="raw"`` returns a memoryview of
    `data` itself (no copy); ``"zstd"`` always compresses; ``"auto"`` compresses and keeps the
    result only when it is at most :data:`AUTO_MAX_RATIO` of the raw size.

    `shuffle_filter`: ``None`` shuffles multi-byte elements whenever the frame is compressed;
    ``True`` always applies the filter (also to raw frames); ``False`` never does.
    """
    if codec not in CODECS:
        raise ValueError(f"codec: expected one of {list(CODECS)}, found {codec!r}")
    if shuffle_filter not in (None, True, False):
        raise ValueError(f"shuffle: expected True, False or None, found {shuffle_filter!r}")
    forced = shuffle_filter is True
    if codec == "raw":
        return _raw(data, itemsize, forced)
    level = check_level(level)
    shuffled = shuffle(data, itemsize) if shuffle_filter is not False and itemsize > 1 else None
    frame = compress(shuffled if shuffled is not None else data, level)
    if codec == "auto" and len(frame) > AUTO_MAX_RATIO * data.size:
        return _raw(data, itemsize, forced, shuffled)
    filters: Tuple[str, ...] = ("shuffle",) if shuffled is not None or forced else ()
    return "zstd", filters, frame


def _raw(data: np.ndarray, itemsize: int, forced: bool,
         shuffled: Union[np.ndarray, None] = None) -> Tuple[str, Tuple[str, ...], Buffer]:
    if not forced:
        return "raw", (), memoryview(data)
    if shuffled is None:
        # Shuffling one-byte elements changes nothing: only the filter is recorded.
        shuffled = shuffle(data, itemsize) if itemsize > 1 else data
    return "raw", ("shuffle",), memoryview(shuffled)


def over_expansion(nbytes: int, frame_bytes: int, limits: Limits) -> bool:
    """True when a zstd frame of `frame_bytes` decoding to `nbytes` exceeds
    :attr:`Limits.max_expansion` (only arrays over 64 MiB are held to it)."""
    return nbytes > EXPANSION_FREE_BYTES and nbytes // max(1, limits.max_expansion) > frame_bytes


def decode_buffer(meta: ArrayMeta, frame: memoryview, limits: Limits = DEFAULT_LIMITS) -> Buffer:
    """The decoded bytes of one buffer frame, exactly ``meta.nbytes`` long.

    A raw frame without filters is returned as is (no copy). Raises :class:`~ndbridge.FrameError`
    for a raw frame of the wrong length, :class:`~ndbridge.CodecError` for a zstd frame that
    is not exactly one frame declaring ``nbytes`` as its content size (for ``zstd-chunks``: a
    chunk table that does not describe the array and the frame, or a chunk frame not declaring
    its chunk's size), and :class:`~ndbridge.LimitError` for one over ``limits.max_expansion``.
    """
    if meta.codec == "zstd-chunks":
        return _decode_chunks(meta, frame, limits)
    if meta.codec == "raw":
        if len(frame) != meta.nbytes:
            raise FrameError(meta.field, f"raw buffer frame holds {len(frame)} bytes, "
                                         f"nbytes declares {meta.nbytes}")
        data: Buffer = frame
    else:
        data = _decompress(meta, frame, limits, meta.nbytes)
    return _unfilter(meta, data)


def _unfilter(meta: ArrayMeta, data: Buffer) -> Buffer:
    for name in reversed(meta.filters):
        if name == "shuffle" and meta.dtype.itemsize > 1:
            data = unshuffle(data, meta.dtype.itemsize)
    return data


#: A ``zstd-chunks`` array of more than one chunk has chunks of at least this many bytes.
MIN_CHUNK_BYTES = 64 << 10


def _chunk_table(meta: ArrayMeta, frame: memoryview) -> Tuple[int, list]:
    """Reads a ``zstd-chunks`` frame's table: elements per chunk and each chunk's
    ``(start, end)`` in the frame, checked to fill the frame exactly (docs/wire-format.md)."""
    def bad(reason: str) -> CodecError:
        return CodecError(meta.field, f"invalid chunk table: {reason}")
    if len(frame) < 8:
        raise bad(f"{len(frame)} bytes, no chunk table")
    per = int.from_bytes(frame[:8], "little")
    if per == 0:
        raise bad("0 elements per chunk")
    itemsize = meta.dtype.itemsize
    count = -(-(meta.nbytes // itemsize) // per)
    if count > 1 and per * itemsize < MIN_CHUNK_BYTES:
        raise bad(f"{count} chunks of {per * itemsize} bytes: chunks below {MIN_CHUNK_BYTES} "
                  f"bytes are allowed only alone")
    at = 8 * (count + 1)
    if at > len(frame):
        raise bad(f"a table of {count} chunks does not fit a frame of {len(frame)} bytes")
    lengths = np.frombuffer(frame, "<u8", count, 8).tolist()
    places = []
    for i, length in enumerate(lengths):
        if at + length > len(frame):
            raise bad(f"chunk {i} of {length} bytes runs past the frame's {len(frame)} bytes")
        places.append((at, at + length))
        at += length
    if at != len(frame):
        raise bad(f"the chunks end at byte {at} but the frame holds {len(frame)} bytes")
    return per, places


def _decode_chunks(meta: ArrayMeta, frame: memoryview, limits: Limits) -> Buffer:
    per, places = _chunk_table(meta, frame)
    if over_expansion(meta.nbytes, len(frame), limits):
        raise LimitError(meta.field, "max_expansion", meta.nbytes // max(1, len(frame)),
                         limits.max_expansion, what="decoded/compressed size ratio")
    step = per * meta.dtype.itemsize
    lengths = [min(step, meta.nbytes - i * step) for i in range(len(places))]
    for (start, end), length in zip(places, lengths):  # every header, before decoding any
        _check_declared(meta, frame[start:end], length)
    out = np.empty(meta.nbytes, np.uint8)
    for i, ((start, end), length) in enumerate(zip(places, lengths)):
        # The expansion limit was checked for the frame as a whole, as the spec says.
        chunk = _decompress(meta, frame[start:end], None, length)
        out[i * step:i * step + length] = np.frombuffer(_unfilter(meta, chunk), np.uint8)
    return out


def _check_declared(meta: ArrayMeta, frame: memoryview, nbytes: int) -> int:
    """The content size `frame`'s zstd header declares, which must be `nbytes`."""
    try:
        declared = zstandard.frame_content_size(frame)
    except zstandard.ZstdError:
        raise CodecError(meta.field, f"expected a zstd frame, found {len(frame)} bytes starting "
                                     f"{bytes(frame[:8]).hex() or '(empty)'}") from None
    if declared < 0:
        raise CodecError(meta.field, f"zstd frame does not declare its content size; expected "
                                     f"{nbytes} (nbytes)")
    if declared != nbytes:
        raise CodecError(meta.field, f"zstd content size {declared} declared, nbytes declares "
                                     f"{nbytes}")
    return declared


def _decompress(meta: ArrayMeta, frame: memoryview, limits: Optional[Limits],
                nbytes: int) -> bytes:
    """One zstd frame of `meta`'s array (or of one of its chunks, `limits` ``None``: its
    array's frame was held to the expansion limit) decoding to `nbytes`."""
    declared = _check_declared(meta, frame, nbytes)
    if limits is not None and over_expansion(declared, len(frame), limits):
        raise LimitError(meta.field, "max_expansion", declared // max(1, len(frame)),
                         limits.max_expansion, what="decoded/compressed size ratio")
    try:
        if nbytes == 0:
            # An empty frame takes the streaming path, which reports trailing bytes reliably.
            dobj = _decompressor().decompressobj()
            out = dobj.decompress(frame)
            if not dobj.eof or dobj.unused_data:
                raise CodecError(meta.field, "expected exactly one complete zstd frame, found "
                                             "a truncated frame or bytes after it")
        else:
            out = _decompressor().decompress(frame, max_output_size=nbytes,
                                             allow_extra_data=False)
    except zstandard.ZstdError as e:
        raise CodecError(meta.field, f"corrupt zstd frame: {e}") from None
    if len(out) != nbytes:
        raise CodecError(meta.field, f"zstd frame decompressed to {len(out)} bytes, nbytes "
                                     f"declares {nbytes}")
    return out

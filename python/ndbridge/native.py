"""The native core: ndbridge's Rust publisher and codec, from the extension module
``ndbridge._native`` (built by ``pip install ./python`` when a Rust toolchain is present).

:data:`AVAILABLE` says whether it is built. :func:`encode` and :func:`decode` take the same
arguments as :func:`ndbridge.encode` and :func:`ndbridge.decode` and produce the same frames
(header bytes identical; a zstd frame with the byte shuffle may differ in its bytes, see
python/README, and decodes to the same array). :class:`Publisher` is the Rust publisher:
encoding, compression and socket I/O run on its own thread, without the interpreter lock.

Zero copy: a C- or F-contiguous array of at least ``copy_threshold`` bytes (64 KiB by default)
is handed to the Rust publisher without a copy, and the publisher holds a reference to the
array until ZeroMQ has written its bytes to the kernel. As with the pure-Python publisher, do not
modify such an array in place until its record has gone out (:meth:`Publisher.flush`), or pass
``copy_threshold=None``. Other arrays are copied once.
"""

from __future__ import annotations

import json
import os
import time as _time
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from . import lifetime
from .acked import DEFAULT_WINDOW_BYTES, check_delivery, check_window_bytes
from .codec import CHUNKINGS
from .curve import KeySource, PathLike, load_curve
from .errors import DeliveryError, WireError
from .header import parse_header
from .limits import DEFAULT_LIMITS, Limits
from .spool import DEFAULT_SPOOL_BYTES, check_spool
from .wire import ArraysLike, Record, default_source, new_session
from .wire import decode as pure_decode
from .wire import _checked_arrays
from .wire import _as_buffer
from .wire import _over

try:
    from . import _native
except ImportError:  # the package was installed without a Rust toolchain
    _native = None  # type: ignore[assignment]

__all__ = ["AVAILABLE", "encode", "decode", "compress", "Publisher"]

#: True when the extension module is built and importable.
AVAILABLE = _native is not None

# The session `encode` uses when none is given: one per process.
_PROCESS_SESSION = new_session()

_DEFAULT: Any = object()  # "the constructor's timeout"


def _require() -> Any:
    if _native is None:
        raise ImportError("ndbridge._native is not built: install the package with a Rust "
                          "toolchain on the PATH (see python/README, Install)")
    return _native


def _arrays(name: str, arrays: ArraysLike, limits: Optional[Limits]) -> List[Tuple[str, np.ndarray]]:
    """The record's arrays as ``(name, contiguous ndarray)``, checked as the pure encoder
    checks them."""
    return [(array_name, array if array.flags.c_contiguous or array.flags.f_contiguous
             else np.ascontiguousarray(array))  # checked first: the copy is within the limits
            for array_name, array in _checked_arrays(name, arrays, limits)]


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _attrs_json(attrs: Optional[Mapping[str, Any]]) -> Optional[str]:
    if attrs is None:
        return None
    if not isinstance(attrs, Mapping):
        raise TypeError(f"attrs: expected a mapping (a JSON object), found {type(attrs).__name__}")
    try:
        return json.dumps(dict(attrs), separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False, default=_json_default)
    except (TypeError, ValueError) as e:
        raise ValueError(f"attrs: expected JSON-serializable values (no NaN or infinity), {e}") \
            from None


def encode(name: str, arrays: ArraysLike, *, codec: str = "auto", level: int = 1,
           shuffle: Optional[bool] = None, attrs: Optional[Mapping[str, Any]] = None,
           source: Optional[str] = None, session: Optional[str] = None, seq: int = 0,
           time: Optional[float] = None,
           limits: Optional[Limits] = DEFAULT_LIMITS) -> List[Union[bytes, Any]]:
    """:func:`ndbridge.encode` with the Rust codec: the frames ``[header, buf_0, ...]``.

    The header is ``bytes``; each buffer frame is a read-only buffer object (``bytes(f)``,
    ``memoryview(f)``, pyzmq's ``send`` all take it). A raw frame is the array's own memory.
    Compression runs without the interpreter lock.
    """
    native = _require()
    if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq < 2**64:
        raise ValueError(f"seq: expected a non-negative integer below 2**64, found {seq!r}")
    if time is not None:
        time = float(time)
        if not np.isfinite(time):
            raise ValueError(f"time: expected finite seconds since the Unix epoch, found {time!r}")
    if not isinstance(level, int) or isinstance(level, bool):
        raise ValueError(f"level: expected an integer zstd level, found {level!r}")
    if shuffle not in (None, True, False):
        raise ValueError(f"shuffle: expected True, False or None, found {shuffle!r}")
    checked = _arrays(name, arrays, limits)
    attrs_json = _attrs_json(attrs)
    frames = native.encode(name, checked, codec, level, shuffle, attrs_json,
                           default_source() if source is None else str(source),
                           _PROCESS_SESSION if session is None else str(session), seq, time,
                           None if limits is None else limits.max_expansion)
    if limits is not None and len(frames[0]) > limits.max_header_bytes:
        raise _over("max_header_bytes", len(frames[0]), limits.max_header_bytes,
                    "header: bytes (names and attrs)")
    return frames


def _frame(value: Any, index: int) -> Any:
    """A frame as a flat buffer of unsigned bytes for the Rust decoder."""
    view = _as_buffer(value, index)
    return view if view.format == "B" else view.cast("B")


def decode(frames: Sequence[Any], *, limits: Limits = DEFAULT_LIMITS, native: bool = False,
           topic: Optional[str] = None) -> Record:
    """:func:`ndbridge.decode` with the Rust decoder: a :class:`~ndbridge.Record`.

    Raw arrays are read-only views of the received frames (numpy handles frames that are not
    aligned for the element type); decompressed ones view buffers the Rust decoder allocated.
    A malformed message raises the same :class:`~ndbridge.WireError` subclass, with the same
    text, as :func:`ndbridge.decode`: the pure-Python decoder reads a message the Rust one
    refused, to say precisely what is wrong with it.
    """
    mod = _require()
    frames = [_frame(f, i) for i, f in enumerate(frames)]
    try:
        decoded = mod.decode(frames, limits.max_header_bytes, limits.max_arrays,
                             limits.max_array_bytes, limits.max_ndim, limits.max_message_bytes,
                             limits.max_expansion)
    except ValueError as e:
        pure_decode(frames, limits=limits, topic=topic)  # raises the precise WireError
        raise WireError("message", str(e)) from None
    header = parse_header(bytes(frames[0]), limits)
    if topic is not None and topic != header.name:
        raise WireError("topic", f"expected the record name {header.name!r}, found {topic!r}")
    arrays: Dict[str, np.ndarray] = {}
    for array_name, dtype, shape, order, buffer in decoded:
        dt = np.dtype(dtype)
        flat = np.frombuffer(buffer, dtype=dt) if len(buffer) else np.empty(0, dt)
        array = flat.reshape(shape, order=order)
        if native and not array.dtype.isnative:
            array = array.astype(array.dtype.newbyteorder("="), order="K")
        array.flags.writeable = False
        arrays[array_name] = array
    return Record(name=header.name, source=header.source, session=header.session,
                  seq=header.seq, time=header.time, attrs=header.attrs, arrays=arrays,
                  header=header.raw, end=header.end)


def compress(data: Any, itemsize: int, level: int = 1) -> Any:
    """One buffer byte-shuffled and zstd-compressed by the Rust codec, as the publisher does:
    the frame as a read-only buffer object."""
    return _require().compress(_frame(data, 0), itemsize, level)


class Publisher:
    """The Rust publisher behind the same interface as :class:`ndbridge.Publisher`.

    Records are queued by :meth:`send` and encoded, compressed and sent by the publisher's own
    thread, without the interpreter lock. :meth:`close` (and leaving the ``with`` block) returns
    once every record has been handed to ZeroMQ and ZeroMQ has delivered what it holds, or
    raises :class:`~ndbridge.DeliveryError` after `timeout` naming how many records did not go
    out. A publisher still open when the process ends is closed at exit, in ``multiprocessing``
    children too (:mod:`ndbridge.lifetime`).

    Args:
        endpoint: A ZeroMQ endpoint, or a list of them (records are spread over them).
        source: Publisher id sent with every record; default ``"<host>:<pid>"``.
        codec: ``"auto"`` (default; raw on a local link, otherwise shuffle + zstd when the link
            is slower than the compressor and the result saves at least 10%), ``"zstd"`` or
            ``"raw"``.
        bind: Bind instead of connecting.
        kind: ``"push"`` (default) or ``"pub"`` (or ``zmq.PUSH`` / ``zmq.PUB``).
        level: zstd level.
        shuffle: Byte-shuffle before compressing (``None`` and ``True``: yes; ``False``: no).
        link: ``"local"`` or ``"network"``, for ``codec="auto"``; default ``None`` detects it
            from the endpoints.
        timeout: Longest wait of :meth:`close`, :meth:`flush` and the exit hook, in seconds;
            ``None`` waits forever. Default 60.
        queue_bytes: Bound on the bytes of queued records; :meth:`send` waits while it is
            reached (``on_full``).
        on_full: ``"block"`` (default), ``"drop"`` (dropped records are counted in
            :meth:`stats`), or seconds to wait before ``TimeoutError``.
        limits: The limits of the receiving collector; :meth:`send` raises ``ValueError`` for a
            record over them, before queueing it.
        copy_threshold: Arrays of at least this many bytes go to the Rust side without a copy;
            ``None`` copies every array (then an array may be modified right after ``send``).
        curve_server: CURVE: the server's public key, as the path of its certificate
            ``NAME.key`` or as 40 characters of Z85; with `curve_secret`, the path of this
            publisher's secret certificate ``NAME.key_secret`` (see
            :class:`ndbridge.Publisher`). The keys are checked here as the pure-Python
            publisher checks them, then handed to the Rust publisher
            (``PublisherBuilder::curve``).
        curve_secret: See `curve_server`.
        delivery: ``"fire-and-forget"`` (default) or ``"acked"``: the collector acknowledges
            each record once stored durably, and the publisher sends again what is not
            acknowledged after a reconnect (see :class:`ndbridge.Publisher`;
            ``PublisherBuilder::delivery``). Acked delivery takes ``kind="push"`` and one
            endpoint to connect to.
        window_bytes: Acked delivery: the most bytes of records sent and not yet acknowledged
            (and at most 65,536 records); while the window is full the queue fills, and
            `on_full` applies. Default 256 MiB.
        spool_dir: Acked delivery: a directory of this publisher's own where every record is
            written before it is sent and stays until acknowledged
            (``PublisherBuilder::spool_dir``; see :class:`ndbridge.Publisher`). Sending then
            never waits for the collector, what :meth:`close` leaves unacknowledged stays
            there (:class:`~ndbridge.DeliveryError` says so in ``kept``), and the next
            publisher on the directory, Rust or Python, sends it first. A directory another
            publisher holds raises ``BlockingIOError``.
        spool_bytes: The most bytes the spool holds; beyond them sending waits for
            acknowledgements. Default 16 GiB.
        chunking: When arrays of 2 MiB or more are compressed in parallel chunks on every core
            (codec ``zstd-chunks``, decoded in parallel too; ``PublisherBuilder::chunking``):
            ``"auto"`` (default: with ``codec="auto"`` on a network link, when one core
            compresses slower than the link takes compressed bytes), ``"always"`` or
            ``"never"`` (one zstd frame per array).
    """

    def __init__(self, endpoint: Union[str, Sequence[str]], source: Optional[str] = None,
                 codec: str = "auto", bind: bool = False, kind: Any = "push", *, level: int = 1,
                 shuffle: Optional[bool] = None, link: Optional[str] = None,
                 timeout: Optional[float] = 60.0, queue_bytes: int = 256 << 20,
                 on_full: Union[str, float] = "block",
                 limits: Optional[Limits] = DEFAULT_LIMITS,
                 copy_threshold: Optional[int] = 64 * 1024, context: None = None,
                 curve_server: Optional[KeySource] = None,
                 curve_secret: Optional[PathLike] = None, delivery: str = "fire-and-forget",
                 window_bytes: int = DEFAULT_WINDOW_BYTES,
                 spool_dir: Optional[PathLike] = None,
                 spool_bytes: int = DEFAULT_SPOOL_BYTES, chunking: str = "auto") -> None:
        native = _require()
        if chunking not in CHUNKINGS:
            raise ValueError(f"chunking: expected one of {list(CHUNKINGS)}, found {chunking!r}")
        if context is not None:
            raise ValueError("context: the Rust publisher has a ZeroMQ context of its own; "
                             "use ndbridge.Publisher(..., native=False) to share one")
        endpoints = [endpoint] if isinstance(endpoint, str) else list(endpoint)
        kind = {"push": "push", "pub": "pub"}.get(kind) if isinstance(kind, str) else \
            _zmq_kind(kind)
        if kind is None:
            raise ValueError("kind: expected 'push', 'pub', zmq.PUSH or zmq.PUB")
        if codec not in ("raw", "zstd", "auto"):
            raise ValueError(f"codec: expected one of ['raw', 'zstd', 'auto'], found {codec!r}")
        if timeout is not None and not timeout >= 0:
            raise ValueError(f"timeout: expected seconds >= 0 or None, found {timeout!r}")
        if not isinstance(queue_bytes, int) or queue_bytes < 1:
            raise ValueError(f"queue_bytes: expected a positive integer, found {queue_bytes!r}")
        self.delivery = check_delivery(delivery)
        check_window_bytes(window_bytes)
        if self.delivery == "acked":
            _check_acked(endpoints, bind, kind)
        spool = check_spool(spool_dir, spool_bytes, self.delivery)
        # Read and checked as the pure-Python publisher does, so that both raise the same
        # errors; the Rust side reads the secret certificate itself (KeyPair::load).
        curve = load_curve(curve_server, curve_secret)
        self._curve = curve is not None
        self.source = default_source() if source is None else source
        if link is None:
            from .net import is_local
            link = "local" if all(is_local(e) for e in endpoints) else "network"
        elif link not in ("local", "network"):
            raise ValueError(f"link: expected None, 'local' or 'network', found {link!r}")
        self.link = link
        self.codec = codec
        self.timeout = timeout
        self.limits = limits
        self._endpoint = ", ".join(endpoints)
        self._inner = native.Publisher(
            endpoints, bind=bind, kind=kind, codec=codec, level=level,
            shuffle=shuffle is not False, link=link, source=self.source,
            queue_bytes=queue_bytes, on_full=on_full,
            linger=60.0 if timeout is None else timeout, copy_threshold=copy_threshold,
            delivery=self.delivery, window_bytes=window_bytes, spool_dir=spool,
            spool_bytes=spool_bytes, chunking=chunking,
            **({} if curve is None else {"curve_server": curve.server.decode("ascii"),
                                         "curve_secret": curve.secret_path}))
        self._last_stats: Optional[Dict[str, Any]] = None
        self._sent = 0
        self.session: str = self._inner.session
        lifetime.track(self)  # type: ignore[arg-type]

    @property
    def endpoint(self) -> str:
        """The endpoints, comma-separated."""
        return self._endpoint

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has run."""
        return bool(self._inner.closed)

    @property
    def pending(self) -> int:
        """Records sent that ZeroMQ has not yet passed on to a peer; in acked delivery, records
        sent that the collector has not acknowledged."""
        if self.closed:
            return 0
        stats = self._inner.stats()
        return int(stats["queued"] + stats["sent"] - stats["delivered"] - stats["refused"])

    @property
    def seq(self) -> int:
        """The number of records :meth:`send` has accepted: the sequence number the next one
        carries, unless a record was dropped (``on_full="drop"``) or failed to encode."""
        return self._sent

    def send(self, name: str, arrays: ArraysLike, attrs: Optional[Mapping[str, Any]] = None) -> int:
        """Queues one record; returns the number of records queued before it (its sequence
        number unless an earlier one was dropped or failed).

        Raises ``TypeError`` for values that would not arrive as they are, ``ValueError`` for a
        record over :attr:`limits` (nothing is queued then).
        """
        if self.closed:
            raise ValueError(f"send: the publisher to {self._endpoint} is closed")
        checked = _arrays(name, arrays, self.limits)
        seq = int(self._inner.send(name, checked, _attrs_json(attrs)))
        self._sent = seq + 1
        return seq

    def flush(self, timeout: Optional[float] = _DEFAULT) -> None:
        """Waits until every record sent so far has been handed to ZeroMQ.

        Raises:
            DeliveryError: Records did not go out in time; they stay queued.
        """
        if self.closed:
            raise ValueError(f"flush: the publisher to {self._endpoint} is closed")
        timeout = self.timeout if timeout is _DEFAULT else timeout
        try:
            self._inner.flush(timeout)
        except _native.DeliveryFailure as e:
            raise self._delivery_error(e, timeout, dropped=False) from None

    def close(self, timeout: Optional[float] = _DEFAULT) -> None:
        """Sends what is queued, lets ZeroMQ deliver it, then stops the publisher's thread and
        closes its socket; at most `timeout` seconds in all (``None``: forever). Closing twice
        is harmless.

        Raises:
            DeliveryError: Records did not go out in time; they are dropped, and the publisher
                is closed all the same. With a spool (`spool_dir`), the records not
                acknowledged stay there instead, for the next publisher on it: the error's
                ``kept`` names the directory.
        """
        if self.closed:
            return
        timeout = self.timeout if timeout is _DEFAULT else timeout
        self._close_by(timeout)

    def _close_by(self, timeout: Optional[float], reported: Any = _DEFAULT) -> None:
        """Closes within `timeout`; an error names `reported` (default `timeout`) as the wait."""
        lifetime.forget(self)  # type: ignore[arg-type]
        try:
            self._last_stats = self._inner.close(timeout)
        except _native.DeliveryFailure as e:
            reported = timeout if reported is _DEFAULT else reported
            raise self._delivery_error(e, reported, dropped=True) from None

    def _close_from(self, start: float) -> None:
        """:meth:`close` with the constructor's timeout counted from `start` (the exit hook)."""
        if self.closed:
            return
        timeout = self.timeout
        if timeout is not None:
            timeout = max(0.0, start + timeout - _time.monotonic())
        self._close_by(timeout, self.timeout)

    def _abandon(self) -> List[BaseException]:
        """Closes at once, dropping what is queued; returns the error that says so, if any."""
        if self.closed:
            return []
        try:
            self._close_by(0.0)
        except DeliveryError as e:
            return [e]
        return []

    def _delivery_error(self, e: BaseException, timeout: Optional[float],
                        dropped: bool) -> DeliveryError:
        message, pending, refused, kind, kept = (tuple(e.args) + (None, 0, "other", None))[:5]
        kept = None if kept is None else os.fspath(kept)
        unsent = self._sent if pending is None else int(pending)
        if self.delivery == "acked" and kind in ("unacknowledged", "no-peer", "timeout"):
            # Error::Unacknowledged (records not acknowledged, or refused), Error::NoPeer (no
            # collector ever connected), Error::Timeout (flush).
            return DeliveryError(self._endpoint, unsent, max(self._sent, unsent),
                                 timeout or 0.0, dropped=dropped, curve=self._curve,
                                 refused=int(refused), acked=True,
                                 connected=kind != "no-peer", kept=kept)
        if pending is None:  # not a timeout: say what the Rust publisher reported
            return DeliveryError(f"{self._endpoint} ({message})", unsent,
                                 max(self._sent, unsent), timeout or 0.0, dropped=dropped,
                                 curve=self._curve)
        return DeliveryError(self._endpoint, unsent, max(self._sent, unsent), timeout or 0.0,
                             dropped=dropped, curve=self._curve)

    def stats(self) -> Dict[str, Any]:
        """The Rust publisher's counters: ``sent`` (handed to ZeroMQ), ``delivered`` (passed on
        to a peer; in acked delivery, acknowledged as stored by the collector), ``refused``
        (acked delivery: acknowledged as refused for good), ``resent`` (acked delivery: sent
        again after a reconnect), ``recovered`` (acked delivery with a spool: messages of
        earlier publishers' sessions sent from the spool, not counted in ``sent``),
        ``dropped``, ``failed``, ``queued``, ``raw_bytes``,
        ``wire_bytes``, ``compression_ratio`` (the final ones after close)."""
        if self.closed:
            return dict(self._last_stats or {})
        return dict(self._inner.stats())

    def __enter__(self) -> "Publisher":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{self.pending} pending"
        return f"<ndbridge.native.Publisher to {self._endpoint} {state}>"


def _check_acked(endpoints: List[str], bind: bool, kind: str) -> None:
    """Acked delivery takes a PUSH publisher that connects to one collector: ``ValueError``
    otherwise."""
    if kind != "push":
        raise ValueError(f"delivery='acked': expected kind=zmq.PUSH (the default; the publisher "
                         f"then connects a DEALER to the collector's ROUTER), found {kind!r}")
    if bind:
        raise ValueError("delivery='acked': expected an endpoint to connect to (a collector "
                         "binds), found bind=True")
    if len(endpoints) != 1:
        raise ValueError(f"delivery='acked': expected one collector's endpoint, found "
                         f"{len(endpoints)}")


def _zmq_kind(kind: Any) -> Optional[str]:
    """``"push"`` / ``"pub"`` for pyzmq's socket type constants, else ``None``."""
    try:
        import zmq
    except ImportError:
        return None
    return {zmq.PUSH: "push", zmq.PUB: "pub"}.get(kind)

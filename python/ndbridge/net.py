"""Sockets: sending and receiving messages with pyzmq, and the :class:`Publisher` and
:class:`Subscriber` wrappers. The only module here that touches ZeroMQ.

A pyzmq socket belongs to one thread: use each Publisher or Subscriber from one thread only.
"""

from __future__ import annotations

import time as _time
from typing import Any, Iterable, Iterator, List, Mapping, Optional, Union

import zmq

from .limits import DEFAULT_LIMITS, Limits
from .wire import ArraysLike, Record, decode, default_source, encode, new_session, strip_topic

__all__ = ["send", "recv", "Publisher", "Subscriber", "COPY_THRESHOLD"]

#: Frames at least this many bytes are handed to ZeroMQ without a copy.
COPY_THRESHOLD = 64 * 1024

# Socket types whose messages start with a topic frame.
_TOPIC_SENDERS = (zmq.PUB, zmq.XPUB)
_TOPIC_RECEIVERS = (zmq.SUB, zmq.XSUB)


def send(sock: zmq.Socket, name: str, arrays: ArraysLike, *,
         copy_threshold: Optional[int] = COPY_THRESHOLD, **options: Any) -> None:
    """Encodes and sends one message on `sock`.

    On a PUB (or XPUB) socket the record name goes first as the topic frame. `options` are
    :func:`~ndbridge.encode`'s keyword arguments (``codec``, ``level``, ``shuffle``, ``attrs``,
    ``source``, ``session``, ``seq``, ``time``).

    Frames of at least `copy_threshold` bytes are sent with ``copy=False``: ZeroMQ reads a raw
    array's memory after this call returns, so do not modify such an array in place until the
    message is gone (for example, write the next step into a new array). ``copy_threshold=None``
    copies every frame, which makes in-place updates right after ``send`` safe.
    """
    frames: List[Union[bytes, memoryview]] = list(encode(name, arrays, **options))
    if sock.type in _TOPIC_SENDERS:
        frames.insert(0, name.encode("utf-8"))
    last = len(frames) - 1
    for i, frame in enumerate(frames):
        copy = copy_threshold is None or len(frame) < copy_threshold
        sock.send(frame, zmq.SNDMORE if i < last else 0, copy=copy)


def recv(sock: zmq.Socket, *, limits: Limits = DEFAULT_LIMITS, native: bool = False) -> Record:
    """Receives and decodes one message from `sock`, dropping the topic frame on SUB sockets.

    Blocks as the socket does (set ``sock.rcvtimeo`` to bound the wait; ``zmq.Again`` is raised
    when it expires). Raises :class:`~ndbridge.WireError` for a malformed message; the message is
    consumed either way.
    """
    frames = sock.recv_multipart(copy=False)
    if sock.type in _TOPIC_RECEIVERS:
        topic, frames = strip_topic(frames)
        return decode(frames, limits=limits, native=native, topic=topic)
    return decode(frames, limits=limits, native=native)


def _attach(sock: zmq.Socket, endpoint: str, bind: bool) -> None:
    """Binds or connects `sock`; closes it at once if that fails, so no socket leaks."""
    try:
        if bind:
            sock.bind(endpoint)
        else:
            sock.connect(endpoint)
    except zmq.ZMQError:
        sock.close(linger=0)
        raise

class Publisher:
    """Sends records, numbered 0, 1, 2, ... within a random session id.

    >>> with Publisher("tcp://127.0.0.1:5555") as pub:          # doctest: +SKIP
    ...     pub.send("u", u, attrs={"step": 41})

    Args:
        endpoint: A ZeroMQ endpoint such as ``"tcp://127.0.0.1:5555"``.
        source: Publisher id sent with every record; default ``"<host>:<pid>"``.
        codec: ``"auto"`` (compress when it saves at least 10%), ``"zstd"`` or ``"raw"``.
        level: zstd level.
        shuffle: Byte-shuffle before compressing; see :func:`~ndbridge.encode`.
        bind: Bind to `endpoint` instead of connecting (``"tcp://127.0.0.1:*"`` picks a free
            port; read it back from :attr:`endpoint`).
        kind: Socket type: ``zmq.PUSH`` (default, to a collector's PULL) or ``zmq.PUB``.
        linger_ms: How long :meth:`close` waits for queued messages to go out.
        copy_threshold: See :func:`send`.
        context: The ZeroMQ context; default the process-wide one.

    Attributes:
        session: This publisher's session id, 16 hex characters.
        seq: The sequence number the next record will carry.
        socket: The underlying pyzmq socket.
    """

    def __init__(self, endpoint: str, source: Optional[str] = None, codec: str = "auto",
                 bind: bool = False, kind: int = zmq.PUSH, *, level: int = 1,
                 shuffle: Optional[bool] = None, linger_ms: int = 1000,
                 copy_threshold: Optional[int] = COPY_THRESHOLD,
                 context: Optional[zmq.Context] = None) -> None:
        if kind not in (zmq.PUSH, zmq.PUB, zmq.XPUB, zmq.DEALER, zmq.PAIR):
            raise ValueError(f"kind: expected zmq.PUSH, zmq.PUB, zmq.XPUB, zmq.DEALER or "
                             f"zmq.PAIR, found {kind!r}")
        self.source = default_source() if source is None else source
        self.session = new_session()
        self.seq = 0
        self.codec = codec
        self.level = level
        self.shuffle = shuffle
        self.linger_ms = linger_ms
        self.copy_threshold = copy_threshold
        self.socket = (context or zmq.Context.instance()).socket(kind)
        _attach(self.socket, endpoint, bind)

    @property
    def endpoint(self) -> str:
        """The endpoint last bound or connected, with the real port if it was ``*``."""
        return self.socket.getsockopt_string(zmq.LAST_ENDPOINT)

    def send(self, name: str, arrays: ArraysLike, attrs: Optional[Mapping[str, Any]] = None) -> int:
        """Sends one record; returns the sequence number it carried."""
        seq = self.seq
        send(self.socket, name, arrays, copy_threshold=self.copy_threshold, codec=self.codec,
             level=self.level, shuffle=self.shuffle, attrs=attrs, source=self.source,
             session=self.session, seq=seq)
        self.seq = seq + 1
        return seq

    def close(self, linger_ms: Optional[int] = None) -> None:
        """Closes the socket, waiting up to `linger_ms` (default the constructor's) for queued
        messages to go out."""
        if not self.socket.closed:
            self.socket.close(linger=self.linger_ms if linger_ms is None else linger_ms)

    def __enter__(self) -> "Publisher":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Subscriber:
    """Receives records from publishers on a SUB socket, optionally only some names.

    >>> for rec in Subscriber("tcp://127.0.0.1:5556", names=["u"]):   # doctest: +SKIP
    ...     print(rec.seq, rec["u"].mean())

    Iteration yields :class:`~ndbridge.Record` s and ends when no wanted record arrives for
    `timeout_ms` (never, by default). :meth:`recv` raises ``TimeoutError`` instead.

    Args:
        endpoint: A ZeroMQ endpoint, e.g. a collector's forwarding PUB socket.
        names: Record names to receive (a string or several); ``None`` receives all. ZeroMQ
            subscribes by topic prefix (``"temp"`` also matches ``"temperature"``); records
            whose name is not exactly one of `names` are dropped here.
        timeout_ms: Longest wait for a record, in milliseconds; ``None`` waits forever.
        bind: Bind to `endpoint` instead of connecting.
        limits: Bounds every message must stay within.
        native: Convert arrays to native byte order (see :func:`~ndbridge.decode`).
        context: The ZeroMQ context; default the process-wide one.

    A malformed message raises :class:`~ndbridge.WireError` from :meth:`recv` (and from the
    iteration); the message is consumed and the next call receives the next one.
    """

    def __init__(self, endpoint: str, names: Union[str, Iterable[str], None] = None, *,
                 timeout_ms: Optional[int] = None, bind: bool = False,
                 limits: Limits = DEFAULT_LIMITS, native: bool = False,
                 context: Optional[zmq.Context] = None) -> None:
        if isinstance(names, str):
            names = [names]
        self.names = None if names is None else frozenset(names)
        if self.names is not None and not all(isinstance(n, str) for n in self.names):
            raise TypeError("names: expected record names as strings")
        self.timeout_ms = timeout_ms
        self.limits = limits
        self.native = native
        self._topics = None if self.names is None else {n.encode("utf-8") for n in self.names}
        self.socket = (context or zmq.Context.instance()).socket(zmq.SUB)
        self.socket.linger = 0
        for topic in sorted(self._topics) if self._topics is not None else [b""]:
            self.socket.setsockopt(zmq.SUBSCRIBE, topic)
        _attach(self.socket, endpoint, bind)

    @property
    def endpoint(self) -> str:
        """The endpoint last bound or connected, with the real port if it was ``*``."""
        return self.socket.getsockopt_string(zmq.LAST_ENDPOINT)

    def recv(self, timeout_ms: Optional[int] = None) -> Record:
        """The next wanted record; ``TimeoutError`` if none arrives within `timeout_ms`
        (default the constructor's)."""
        timeout = self.timeout_ms if timeout_ms is None else timeout_ms
        deadline = None if timeout is None else _time.monotonic() + timeout / 1000.0
        while True:
            if deadline is not None:
                remaining_ms = max(0, int((deadline - _time.monotonic()) * 1000))
                if not self.socket.poll(remaining_ms, zmq.POLLIN):
                    raise TimeoutError(f"no record within {timeout} ms on {self.endpoint}")
            frames = self.socket.recv_multipart(copy=False)
            if self._topics is not None and frames[0].bytes not in self._topics:
                continue  # a longer name that shares a subscribed prefix
            topic, rest = strip_topic(frames)
            return decode(rest, limits=self.limits, native=self.native, topic=topic)

    def __iter__(self) -> Iterator[Record]:
        while True:
            try:
                yield self.recv()
            except TimeoutError:
                return

    def close(self) -> None:
        """Closes the socket."""
        if not self.socket.closed:
            self.socket.close(linger=0)

    def __enter__(self) -> "Subscriber":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

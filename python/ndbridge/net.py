"""Sockets: sending and receiving messages with pyzmq, and the :class:`Publisher` and
:class:`Subscriber` wrappers. The only modules here that touch ZeroMQ are this one and
:mod:`ndbridge.lifetime`.

A pyzmq socket belongs to one thread: use each Publisher or Subscriber from one thread only.

How a publisher knows that a record has gone out: the last frame of every record is handed to
ZeroMQ without a copy and with a pyzmq ``MessageTracker``, which is done once ZeroMQ releases
the frame. ZeroMQ writes a connection's messages in order and releases each one when its bytes
have been written to the kernel (frames of 8 KiB or more) or copied into the connection's 8 KiB
output buffer (smaller frames), so a released last frame means the whole record has left
ZeroMQ's queue. Closing then terminates the publisher's own context, which returns once that
output buffer too has been written (or, with a timeout, once the linger time is over: if it
took that long, the last records are reported as possibly lost). Until a record is released,
the publisher keeps a reference to every buffer ZeroMQ reads without a copy.

The end of a session: once every record is released, a PUSH publisher that sent any sends one
more message, the session's end (:func:`~ndbridge.wire.encode_end`), and gives ZeroMQ until the
close deadline to release it too. It is no record: no count includes it, and if it cannot go out
in time it is discarded without an error (the collector then reports the session as not ended).

Acked delivery (``delivery="acked"``): the publisher's socket is a DEALER, connected to a
collector's ROUTER (``ndbridge collect --delivery acked``), which answers with
acknowledgements once it has stored the records durably. :class:`_AckedLink` keeps every
message sent in a window until an acknowledgement settles it, stops sending while the window
is full, sends the whole window again after ZeroMQ made the connection again (its monitor
reports a second ``HANDSHAKE_SUCCEEDED``: the collector restarted, or the heartbeats found the
link dead), and on close sends the session's end like a record and waits for it to be settled
too. The protocol's pure part (the window, the acknowledgements) is :mod:`ndbridge.acked`.
"""

from __future__ import annotations

import inspect
import logging
import math
import time as _time
from collections import deque
from typing import Any, Callable, Deque, Dict, Iterable, Iterator, List, Mapping, Optional, Tuple, Union

import numpy as np
import zmq
from zmq.utils.monitor import recv_monitor_message

from . import lifetime
from .acked import (DEFAULT_WINDOW_BYTES, HEARTBEAT_IVL_MS, HEARTBEAT_TIMEOUT_MS, MAX_UNACKED,
                    PER_MESSAGE_BYTES, Window, check_delivery, check_window_bytes, parse_ack)
from .curve import CurveKeys, KeySource, PathLike, load_curve
from .codec import CHUNKINGS, CODECS, check_level, encode_buffer
from .errors import DeliveryError, WireError
from .limits import DEFAULT_LIMITS, Limits
from .pacing import SAMPLE_BYTES, TIME_SENDS_EVERY_BYTES, Pacing
from .spool import DEFAULT_SPOOL_BYTES, Spool, Spooled, check_spool
from .wire import (ArraysLike, Record, decode, default_source, encode, encode_end, new_session,
                   strip_topic)

__all__ = ["send", "recv", "is_local", "Publisher", "Subscriber", "COPY_THRESHOLD", "LINKS",
           "DECODERS",
           "DEFAULT_TIMEOUT", "DEFAULT_QUEUE_BYTES"]

#: Frames at least this many bytes are handed to ZeroMQ without a copy.
COPY_THRESHOLD = 64 * 1024

# Socket types whose messages start with a topic frame.
_TOPIC_SENDERS = (zmq.PUB, zmq.XPUB)
_TOPIC_RECEIVERS = (zmq.SUB, zmq.XSUB)


def send(sock: zmq.Socket, name: str, arrays: ArraysLike, *,
         copy_threshold: Optional[int] = COPY_THRESHOLD, limits: Optional[Limits] = DEFAULT_LIMITS,
         **options: Any) -> None:
    """Encodes and sends one message on `sock`.

    On a PUB (or XPUB) socket the record name goes first as the topic frame. `options` are
    :func:`~ndbridge.encode`'s keyword arguments (``codec``, ``level``, ``shuffle``, ``attrs``,
    ``source``, ``session``, ``seq``, ``time``). A message over `limits` (default ndbridge's,
    which a collector enforces) raises ``ValueError`` and nothing is sent.

    Frames of at least `copy_threshold` bytes are sent with ``copy=False``: ZeroMQ reads a raw
    array's memory after this call returns, so do not modify such an array in place until the
    message is gone (for example, write the next step into a new array). ``copy_threshold=None``
    copies every frame, which makes in-place updates right after ``send`` safe.

    This function does not wait for the message to go out, and a process that ends while
    ZeroMQ still holds messages loses them: close the socket with a linger time and terminate
    its context (``ctx.term()`` waits) before the process ends, or use :class:`Publisher`,
    which does all of that.
    """
    frames: List[Union[bytes, memoryview]] = list(encode(name, arrays, limits=limits, **options))
    if sock.type in _TOPIC_SENDERS:
        frames.insert(0, name.encode("utf-8"))
    last = len(frames) - 1
    for i, frame in enumerate(frames):
        copy = copy_threshold is None or len(frame) < copy_threshold
        sock.send(frame, zmq.SNDMORE if i < last else 0, copy=copy)


#: What ``recv(..., decoder=...)`` and ``Subscriber(..., decoder=...)`` accept: ``"auto"``, the
#: Rust decoder when the native core is built and the pure-Python one otherwise; ``"rust"``;
#: ``"python"``. Both decode every message alike and raise the same errors.
DECODERS = ("auto", "rust", "python")


def _decoder(choice: str) -> Callable[..., Record]:
    """The decode function `choice` (one of :data:`DECODERS`) names."""
    from . import native as core
    if choice not in DECODERS:
        raise ValueError(f"decoder: expected one of {list(DECODERS)}, found {choice!r}")
    if choice == "rust" and not core.AVAILABLE:
        raise ImportError("decoder='rust': ndbridge._native is not built (install the package "
                          "with a Rust toolchain; see python/README)")
    return core.decode if core.AVAILABLE and choice != "python" else decode


def recv(sock: zmq.Socket, *, limits: Limits = DEFAULT_LIMITS, native: bool = False,
         decoder: str = "auto") -> Record:
    """Receives and decodes one message from `sock`, dropping the topic frame on SUB sockets.

    Blocks as the socket does (set ``sock.rcvtimeo`` to bound the wait; ``zmq.Again`` is raised
    when it expires). Raises :class:`~ndbridge.WireError` for a malformed message; the message is
    consumed either way. `native` converts arrays to native byte order (see
    :func:`~ndbridge.decode`); `decoder` is one of :data:`DECODERS`.
    """
    decode_with = _decoder(decoder)
    frames = sock.recv_multipart(copy=False)
    if sock.type in _TOPIC_RECEIVERS:
        topic, frames = strip_topic(frames)
        return decode_with(frames, limits=limits, native=native, topic=topic)
    return decode_with(frames, limits=limits, native=native)


def _attach(sock: zmq.Socket, endpoint: str, bind: bool,
            curve: Optional[CurveKeys] = None) -> None:
    """Sets the CURVE keys (if any), then binds or connects `sock`; closes it at once if that
    fails, so no socket leaks."""
    try:
        if curve is not None:
            # A CURVE client: the server's public key, then this peer's pair. Set before
            # connecting: ZeroMQ reads them when a connection starts.
            sock.curve_serverkey = curve.server
            sock.curve_publickey = curve.public
            sock.curve_secretkey = curve.secret
        if bind:
            sock.bind(endpoint)
        else:
            sock.connect(endpoint)
    except zmq.ZMQError:
        sock.close(linger=0)
        raise


def is_local(endpoint: str) -> bool:
    """True for an endpoint on this machine: ``ipc://``, ``inproc://``, or ``tcp://`` to
    ``localhost``, ``127.x.x.x`` or ``[::1]``. The rule of Rust's ``Endpoint::is_local``.

    >>> is_local("tcp://127.0.0.1:5555"), is_local("ipc:///tmp/nd.sock")
    (True, True)
    >>> is_local("tcp://head-node:5555"), is_local("tcp://0.0.0.0:5555")
    (False, False)
    """
    if endpoint.startswith(("ipc://", "inproc://")):
        return True
    if not endpoint.startswith("tcp://"):
        return False
    # tcp://[source;]host:port: the host is after any source and before the last colon.
    target = endpoint[len("tcp://"):].rsplit(";", 1)[-1]
    host = target.rsplit(":", 1)[0] if ":" in target else target
    return host == "localhost" or host == "[::1]" or host.startswith("127.")


#: What ``Publisher(link=...)`` accepts besides ``None`` (detect from the endpoint).
LINKS = ("local", "network")

#: The default wait of :meth:`Publisher.close`, :meth:`Publisher.flush` and the exit hook for
#: records to go out, in seconds.
DEFAULT_TIMEOUT = 60.0

#: Default bound on the bytes of records sent but not yet handed to a peer (as Rust's
#: ``PublisherBuilder::queue_bytes``).
DEFAULT_QUEUE_BYTES = 256 << 20

_DEFAULT: Any = object()  # "the constructor's timeout"

# libzmq copies frames smaller than this into an output buffer of this size, and releases them
# then, before the buffer is written to the kernel (larger frames are released once written).
_OUT_BATCH_BYTES = 8192
# Bytes of ZeroMQ framing per frame, at most.
_FRAME_OVERHEAD = 9
# Extra linger time close gives ZeroMQ's output buffer beyond the timeout, in milliseconds.
_CLOSE_GRACE_MS = 100


class _Queued:
    """One record ZeroMQ has not released yet: the tracker of its last frame, and the
    buffers it reads without a copy, kept alive here until then."""

    __slots__ = ("tracker", "buffers", "nbytes")

    def __init__(self, tracker: zmq.MessageTracker, buffers: List[Any], nbytes: int) -> None:
        self.tracker = tracker
        self.buffers = buffers
        self.nbytes = nbytes


def _wait(tracker: zmq.MessageTracker, deadline: Optional[float]) -> bool:
    """Waits until ZeroMQ released a tracked message or `deadline` (monotonic) passed."""
    while not tracker.done:
        if deadline is None:
            step = 3600.0
        else:
            step = deadline - _time.monotonic()
            if step <= 0:
                return False
        try:
            tracker.wait(step)
        except zmq.NotDone:
            pass
    return True


# The longest single wait of an acked publisher for acknowledgements, in milliseconds: it looks
# at its deadline (and lets Ctrl-C through) at least this often.
_ACK_POLL_MS = 100

_log = logging.getLogger("ndbridge")


class _Backoff:
    """The waits between tries of something that failed: 50 ms, doubling up to 1 s (as the
    Rust publisher retries its spool)."""

    __slots__ = ("delay",)

    #: The first wait, and the longest, in seconds.
    FIRST_S = 0.05
    MOST_S = 1.0

    def __init__(self) -> None:
        self.delay = self.FIRST_S

    def next(self) -> float:
        """The next wait, in seconds."""
        delay = self.delay
        self.delay = min(delay * 2, self.MOST_S)
        return delay


class _Lane:
    """One session's messages in an acked publisher's window: the publisher's own (lane 0), or
    one that an earlier publisher left in the spool."""

    __slots__ = ("source", "session", "window", "end")

    def __init__(self, source: str, session: str, window_bytes: int) -> None:
        self.source = source
        self.session = session
        #: Its messages sent and not acknowledged (the window's bound is shared by the lanes:
        #: :meth:`_AckedLink._has_room`).
        self.window = Window(window_bytes)
        #: With a spool: the ``seq`` of the session's end once spooled; once that is
        #: acknowledged, the session leaves the spool.
        self.end: Optional[int] = None


class _AckedLink:
    """Acked delivery on a publisher's DEALER socket: the window of messages sent and not
    acknowledged (:class:`~ndbridge.acked.Window`, one per session), the acknowledgements read
    from the socket, resending the window, oldest first, once ZeroMQ has made the connection to
    the collector again, and the spool (:class:`~ndbridge.spool.Spool`), when there is one
    (docs/wire-format.md, "Acknowledged delivery").

    With a spool every message is written there before it is sent; it is sent at once only if
    nothing spooled waits before it and the window has room, else it waits in the spool and is
    read back and sent as acknowledgements give room back. The sessions an earlier publisher
    left in the spool get a lane of their own and go first; a session without its end gets one,
    at one past its last ``seq``. A session's segments are removed as they are acknowledged,
    but its last, until its end is: the rules of the Rust publisher (``src/publisher/acked.rs``).

    Every wait reads acknowledgements and monitor events meanwhile, resends what is due and
    sends what waits in the spool; nothing runs between the publisher's calls (acknowledgements
    wait in ZeroMQ's queue, and ZeroMQ's own thread keeps the heartbeats going).
    """

    def __init__(self, socket: zmq.Socket, source: str, session: str, window_bytes: int,
                 copy_threshold: Optional[int], spool_dir: Optional[str] = None,
                 spool_bytes: int = DEFAULT_SPOOL_BYTES) -> None:
        """Opens the spool (if any: ``BlockingIOError`` when another publisher holds it), then
        sets `socket` up, before it connects (so that the monitor sees the first handshake):
        ZeroMQ heartbeats, and a monitor of its handshakes."""
        self.window_bytes = window_bytes
        self.lanes: List[_Lane] = [_Lane(source, session, window_bytes)]
        self.copy_threshold = copy_threshold
        #: Connections made to the collector (handshakes that succeeded).
        self.handshakes = 0
        #: Resending: the lane and the ``seq`` to send again from (``None``: not resending).
        self.resend_from: Optional[Tuple[int, int]] = None
        #: The session's end is sent (it stays in the window until settled).
        self.ended = False
        #: Messages sent again after a reconnect.
        self.resent = 0
        #: Messages of earlier sessions sent from the spool.
        self.recovered = 0
        #: Messages earlier publishers left in the spool, found when it was opened.
        self._recovered_total = 0
        #: Messages lost because the spool could not give them back.
        self.failed = 0
        self.spool: Optional[Spool] = None
        self.spool_bytes = spool_bytes
        #: Spooled and not sent yet, oldest first: ``(lane, Spooled)``.
        self.pending: Deque[Tuple[int, Spooled]] = deque()
        #: The frames of :attr:`pending`'s oldest, when they are at hand (not sent at once).
        self.ready: Optional[List[Any]] = None
        # The oldest of `pending` has room in the window, and ZeroMQ's queue had none.
        self._feed_blocked = False
        # The spool failed to take the last message (logged once until it takes one again).
        self._failing = False
        #: Why the spool could not take the message :meth:`spool_and_send` gave up on.
        self.spool_error: Optional[OSError] = None
        if spool_dir is not None:
            self._open_spool(spool_dir)
        try:
            socket.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_IVL_MS)
            socket.setsockopt(zmq.HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_MS)
            self.socket = socket
            self.monitor = socket.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
        except BaseException:
            if self.spool is not None:
                self.spool.close()
            raise

    def _open_spool(self, spool_dir: str) -> None:
        """Opens the spool and queues what earlier publishers left there, each session in a
        lane of its own, ended if it was not: its end's ``seq`` is one past its last message
        (every record it sent is in the spool, so none is missing)."""
        spool, recovered = Spool.open(spool_dir)
        spool.set_limit(self.spool_bytes)
        self.spool = spool
        before = len(self.pending)
        try:
            for session in recovered:
                lane = len(self.lanes)
                self.lanes.append(_Lane(session.source, session.session, self.window_bytes))
                self.pending.extend((lane, m) for m in session.messages)
                end = session.end
                if end is None:
                    end = session.messages[-1].seq + 1
                    frame = encode_end(session.source, session.session, end)
                    spooled = spool.append(session.source, session.session, end, True, [frame])
                    self.pending.append((lane, spooled))
                self.lanes[lane].end = end
                _log.info("ndbridge: the spool %s holds %d messages of session %s from %s: "
                          "sending them first", spool.dir, len(session.messages),
                          session.session, session.source)
            self._recovered_total = len(self.pending) - before
        except BaseException:
            spool.close()
            self.spool = None
            raise

    @property
    def window(self) -> Window:
        """The publisher's own session's window (lane 0)."""
        return self.lanes[0].window

    @property
    def spool_dir(self) -> Optional[str]:
        """The spool's directory, if there is a spool."""
        return None if self.spool is None else str(self.spool.dir)

    @property
    def connected(self) -> bool:
        """True once a connection to a collector was made."""
        return self.handshakes > 0

    def keep(self, frames: List[Any]) -> List[Any]:
        """The frames to keep in the window: those sent with a copy as bytes of their own (the
        caller may modify what they view once ``send`` returns); the others as they are: raw
        arrays sent without a copy must stay unmodified until acknowledged."""
        threshold = self.copy_threshold
        return [f if isinstance(f, bytes) or (threshold is not None and len(f) >= threshold)
                else bytes(f) for f in frames]

    def _has_room(self, nbytes: int) -> bool:
        """Whether a message of `nbytes` may be sent now: the lanes' windows together hold
        room for it, or are empty (a message larger than the window still goes, alone)."""
        count = sum(len(lane.window) for lane in self.lanes)
        if not count:
            return True
        held = sum(lane.window.bytes for lane in self.lanes)
        return count < MAX_UNACKED and held + nbytes + PER_MESSAGE_BYTES <= self.window_bytes

    def send(self, seq: int, frames: List[Any], nbytes: int, deadline: Optional[float]) -> bool:
        """Waits for room in the window and in ZeroMQ's queue, sends message `seq` (`frames`,
        `nbytes` long) and keeps it in the window. False when `deadline` passed first: nothing
        was sent."""
        window = self.window
        while True:
            self.pump()
            blocked = False
            if self.resend_from is None and not self.pending and self._has_room(nbytes):
                if self._transmit(frames):
                    window.push(seq, frames, nbytes)
                    return True
                blocked = True  # ZeroMQ's queue is full
            if not self._wait(deadline, writable=blocked):
                return False

    def _spool_has_room(self) -> bool:
        """Whether the spool takes another message: it holds less than `spool_bytes`, or nothing
        is unacknowledged and nothing waits in it (a message larger than the spool still goes,
        alone: a session's last segment stays until its end, so it would stay full)."""
        assert self.spool is not None
        return self.spool.bytes < self.spool_bytes or self.settled()

    def spool_and_send(self, seq: int, frames: List[Any], nbytes: int, end: bool,
                       deadline: Optional[float]) -> bool:
        """With a spool: waits (until `deadline`) while the spool is full
        (:meth:`_spool_has_room`), writes message `seq` of the publisher's own session (`end`:
        its end) there, then sends it if nothing spooled waits before it and the window has
        room; else it waits in the spool. While the spool cannot write it, tries again after a
        :class:`_Backoff` (logged once until it can again): nothing goes without the spool, or
        the end a later publisher gives the session could come before it. False when
        `deadline` passed first: nothing was spooled or sent (:attr:`spool_error` says why, if
        the spool could not write)."""
        spool = self.spool
        assert spool is not None
        own = self.lanes[0]
        self.spool_error = None
        backoff: Optional[_Backoff] = None
        while True:
            self.pump()
            if not self._spool_has_room():
                if not self._wait(deadline, writable=self._feed_blocked):
                    return False
                continue
            try:
                spooled = spool.append(own.source, own.session, seq, end, frames)
                break
            except OSError as e:
                self.spool_error = e
                if not self._failing:
                    _log.warning("ndbridge: the spool %s cannot take message %d, sending waits "
                                 "and tries again: %s", spool.dir, seq, e)
                    self._failing = True
                backoff = backoff or _Backoff()
                if not self._pause(backoff.next(), deadline):
                    return False
        if self._failing:
            _log.info("ndbridge: the spool %s takes messages again", spool.dir)
        self.spool_error = None
        self._failing = False
        if end:
            own.end = seq
        if not self.pending and self.resend_from is None and self._has_room(nbytes) \
                and self._transmit(frames):
            own.window.push(seq, frames, nbytes)
            return True
        if not self.pending:
            self.ready = frames
        self.pending.append((0, spooled))
        return True

    def _pause(self, seconds: float, deadline: Optional[float]) -> bool:
        """Waits `seconds`, reading acknowledgements and sending what waits in the spool
        meanwhile; false once `deadline` has passed."""
        until = _time.monotonic() + seconds
        while True:
            bound = until if deadline is None else min(until, deadline)
            if not self._wait(bound, writable=self._feed_blocked):
                return deadline is None or _time.monotonic() < deadline
            self.pump()

    def settled(self) -> bool:
        """True when everything sent is acknowledged and nothing spooled waits."""
        return not self.pending and not any(len(lane.window) for lane in self.lanes)

    def settle(self, deadline: Optional[float]) -> bool:
        """Reads acknowledgements (and sends what waits in the spool) until every message is
        settled or `deadline` passes; true if settled."""
        while True:
            self.pump()
            if self.settled():
                return True
            if not self._wait(deadline, writable=self._feed_blocked):
                return False

    def end(self, frame: bytes, seq: int, deadline: Optional[float]) -> bool:
        """Sends the session's end (`frame`, at `seq`, the number of records) once, keeps it in
        the window like a record (and in the spool, if any), and waits until `deadline` for it
        to be settled; true if it is."""
        if not self.ended:
            if self.spool is not None:
                sent = self.spool_and_send(seq, [frame], len(frame), True, deadline)
            else:
                sent = self.send(seq, [frame], len(frame), deadline)
            if not sent:
                return False
            self.ended = True
        return self.settle(deadline)

    def pump(self) -> None:
        """Takes every monitor event and acknowledgement waiting, goes on resending, then sends
        what waits in the spool."""
        self._read_events()
        self._read_acks()
        self._resend()
        self._feed()

    def unacknowledged(self, records: int) -> int:
        """How many of the publisher's first `records` messages are not acknowledged, sent or
        waiting in the spool (the session's end, at ``seq`` `records`, is no record), and of
        the messages earlier publishers left in the spool (their sessions' ends included)."""
        waiting = sum(1 for lane, m in self.pending if lane != 0 or m.seq < records)
        earlier = sum(len(lane.window) for lane in self.lanes[1:])
        return self.window.count_below(records) + waiting + earlier

    @property
    def recovered_total(self) -> int:
        """Messages earlier publishers left in the spool, found when it was opened."""
        return self._recovered_total

    def close(self) -> None:
        """Stops the monitor and closes its socket (before the socket's context ends), forgets
        the window and closes the spool (what it holds stays there)."""
        try:
            self.socket.disable_monitor()
        except zmq.ZMQError:
            pass
        self.monitor.close(linger=0)
        for lane in self.lanes:
            lane.window.clear()
        self.resend_from = None
        self.pending.clear()
        self.ready = None
        if self.spool is not None:
            self.spool.close()

    def _wait(self, deadline: Optional[float], writable: bool = False) -> bool:
        """Waits until the socket has something to read (or, `writable` or resending, room to
        send), the monitor has an event, or a short while passed; false, without waiting, once
        `deadline` (monotonic) has passed."""
        wait_ms = _ACK_POLL_MS
        if deadline is not None:
            left = deadline - _time.monotonic()
            if left <= 0:
                return False
            wait_ms = max(1, min(wait_ms, math.ceil(left * 1000)))
        flags = zmq.POLLIN
        if writable or self.resend_from is not None:
            flags |= zmq.POLLOUT
        zmq.zmq_poll([(self.socket, flags), (self.monitor, zmq.POLLIN)], wait_ms)
        return True

    def _read_events(self) -> None:
        """Counts the handshakes; one after the first is a new connection, which may have lost
        what the old one carried: the window is sent again."""
        while True:
            try:
                event = recv_monitor_message(self.monitor, zmq.NOBLOCK)
            except zmq.Again:
                return
            if event["event"] != zmq.EVENT_HANDSHAKE_SUCCEEDED:
                continue
            self.handshakes += 1
            unacked = sum(len(lane.window) for lane in self.lanes)
            if self.handshakes > 1 and unacked:
                _log.debug("ndbridge: connected again: resending %d unacknowledged", unacked)
                self.resend_from = (0, 0)

    def _read_acks(self) -> None:
        """Applies every acknowledgement of the sessions in the window; others are ignored.
        With a spool, what they settle leaves it."""
        while True:
            try:
                frames = self.socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(frames) != 1:
                _log.warning("ndbridge: a message of %d frames from the collector was ignored "
                             "(an acknowledgement is one frame)", len(frames))
                continue
            try:
                ack = parse_ack(frames[0])
            except WireError as e:
                _log.warning("ndbridge: a malformed acknowledgement was ignored: %s", e)
                continue
            lane = next((lane for lane in self.lanes if lane.session == ack.session), None)
            if lane is None:
                continue
            before = lane.window.through
            lane.window.acknowledge(ack)
            if lane.window.through > before and self.spool is not None:
                self._settle_spool(lane)

    def _settle_spool(self, lane: _Lane) -> None:
        """`lane` was acknowledged further: removes what is settled from the spool, all of the
        session once its end is."""
        assert self.spool is not None
        through = lane.window.through
        try:
            if lane.end is not None and through > lane.end:
                self.spool.forget(lane.session)
            else:
                self.spool.settle(lane.session, through)
        except OSError as e:
            _log.warning("ndbridge: settled segments of the spool %s are not removed: %s",
                         self.spool.dir, e)

    def _resend(self) -> None:
        """Sends again what is unacknowledged from :attr:`resend_from` on, lane by lane, as far
        as ZeroMQ takes it without waiting; the rest on a later call."""
        if self.resend_from is None:
            return
        start_lane, start_seq = self.resend_from
        for index in range(start_lane, len(self.lanes)):
            for seq, frames in self.lanes[index].window.messages():
                if index == start_lane and seq < start_seq:
                    continue
                if not self._transmit(frames):
                    self.resend_from = (index, seq)
                    return
                self.resent += 1
        self.resend_from = None

    def _feed(self) -> None:
        """Sends what waits in the spool, oldest first, while the window has room and ZeroMQ
        takes it without waiting."""
        self._feed_blocked = False
        spool = self.spool
        while spool is not None and self.pending and self.resend_from is None:
            index, spooled = self.pending[0]
            if not self._has_room(spooled.len):
                return
            frames = self.ready
            if frames is None:
                try:
                    frames = spool.read(spooled)
                except OSError as e:
                    _log.error("ndbridge: message %d of session %s cannot be read back from "
                               "the spool, and is lost: %s", spooled.seq,
                               self.lanes[index].session, e)
                    self.failed += 1
                    self.pending.popleft()
                    continue
            if not self._transmit(frames):
                self.ready = frames
                self._feed_blocked = True
                return
            self.ready = None
            self.pending.popleft()
            lane = self.lanes[index]
            if index:
                self.recovered += 1
            if spooled.seq >= lane.window.through:  # else the collector has it already
                lane.window.push(spooled.seq, frames)

    def _transmit(self, frames: List[Any]) -> bool:
        """Sends one message without waiting; false when ZeroMQ's queue has no room for it
        (then nothing was sent: ZeroMQ refuses a message at its first frame, never later)."""
        sock = self.socket
        threshold = self.copy_threshold
        last = len(frames) - 1
        for i, frame in enumerate(frames):
            flags = zmq.SNDMORE if i < last else 0
            copy = threshold is None or len(frame) < threshold
            if i == 0:
                try:
                    sock.send(frame, flags | zmq.NOBLOCK, copy=copy)
                except zmq.Again:
                    return False
            else:
                sock.send(frame, flags, copy=copy)
        return True


class Publisher:
    """Sends records, numbered 0, 1, 2, ... within a random session id, and makes sure they go
    out.

    >>> with Publisher("tcp://127.0.0.1:5555") as pub:          # doctest: +SKIP
    ...     pub.send("u", u, attrs={"step": 41})

    :meth:`close` (and leaving the ``with`` block) returns once every record has been handed to
    the operating system for a peer, or raises :class:`~ndbridge.DeliveryError` after
    `timeout` naming how many did not go out. A publisher still open when the process ends is
    closed the same way at exit, in ``multiprocessing`` children too (see
    :mod:`ndbridge.lifetime`); records that cannot go out make the process exit with status 1.

    Args:
        endpoint: A ZeroMQ endpoint such as ``"tcp://127.0.0.1:5555"``.
        source: Publisher id sent with every record; default ``"<host>:<pid>"``.
        codec: ``"auto"`` (default): raw on a local link; on a network, shuffle + zstd while
            the link is slower than compressing would make up for, kept when it saves at least
            10% (the rule the Rust publisher follows: see "The automatic codec" in the README);
            ``"zstd"`` always compresses; ``"raw"`` never does.
        bind: Bind to `endpoint` instead of connecting (``"tcp://127.0.0.1:*"`` picks a free
            port; read it back from :attr:`endpoint`).
        kind: Socket type: ``zmq.PUSH`` (default, to a collector's PULL) or ``zmq.PUB``.
        level: zstd level.
        shuffle: Byte-shuffle before compressing; see :func:`~ndbridge.encode`.
        link: ``"local"`` or ``"network"``, for ``codec="auto"``; default ``None`` detects it
            from `endpoint` (:func:`is_local`). Say ``"network"`` for a local port that
            forwards to another machine (an SSH tunnel).
        timeout: Longest wait of :meth:`close`, :meth:`flush` and the exit hook for records
            to go out, in seconds; ``None`` waits forever. Default 60.
        queue_bytes: Most bytes of records sent but not yet handed to a peer; :meth:`send`
            waits while more are queued (a record larger than this waits for an empty queue).
        limits: The limits of the receiving collector (default ndbridge's); :meth:`send`
            raises ``ValueError`` for a record over them, before sending anything.
        copy_threshold: See :func:`send`.
        context: A ZeroMQ context to share (needed for ``inproc://``); default a new one of
            this publisher's own, terminated by :meth:`close`.
        curve_server: Encrypt and authenticate with CURVE: the server's (the collector's)
            public key, as the path of its certificate ``NAME.key`` or as 40 characters of Z85
            (``str`` or ``bytes``). Give `curve_secret` too.
        curve_secret: With `curve_server`: the path of this publisher's secret certificate
            ``NAME.key_secret`` (:func:`~ndbridge.keygen`, ``ndbridge keygen``), whose public
            key the server must admit. A collector started with ``--allow DIR`` admits the keys
            of ``DIR/*.key`` and stores the records under the key's name as their source. A
            server that does not admit the key gets nothing: :meth:`close` then raises
            :class:`~ndbridge.DeliveryError`.
        delivery: ``"fire-and-forget"`` (default: a record has gone out once the operating
            system has its bytes) or ``"acked"``: the collector (``ndbridge collect
            --delivery acked``; both ends must use the same mode) acknowledges each record once
            it has stored it durably, the publisher keeps every record until then and sends
            again what is not acknowledged after a reconnect (a collector restarted on the same
            ``--out`` stores each record once), and :meth:`flush` and :meth:`close` wait for
            the acknowledgements. Acked delivery takes ``kind=zmq.PUSH`` (the default) and an
            endpoint to connect to; :meth:`close` raises :class:`~ndbridge.DeliveryError` for
            records not acknowledged or refused by the collector.
        window_bytes: Acked delivery: the most bytes of records sent and not yet acknowledged
            (and at most 65,536 records); :meth:`send` waits while the window is full, reading
            acknowledgements, and raises :class:`~ndbridge.DeliveryError` if it stays full for
            `timeout` (the record is not sent then). A record larger than the window goes
            alone. Default 256 MiB.
        spool_dir: Acked delivery: a directory of this publisher's own (created if needed)
            where every record, and the session's end, is written before it is sent, and
            stays until the collector acknowledges it: the spool (the same files as the Rust
            publisher's ``PublisherBuilder::spool_dir``, docs/wire-format.md). :meth:`send`
            then never waits for the collector: while the window is full or no collector is
            there, records wait in the spool. What :meth:`close` leaves unacknowledged stays
            there (the :class:`~ndbridge.DeliveryError` names the directory in ``kept``), and
            so does what a publisher killed leaves: the next publisher opened on the directory,
            Python or Rust, sends it first, under its own session and ``seq``, and ends that
            session. One publisher at a time: a directory another one holds raises
            ``BlockingIOError``. Written without ``fsync``: it survives the process, not a
            power cut. A spool with fire-and-forget delivery raises ``ValueError``. A record
            is never sent without the spool: while the spool cannot write (its disk is full),
            :meth:`send` waits and tries again (the log says why, once), and raises
            :class:`~ndbridge.DeliveryError` after `timeout`, the record not sent.
        spool_bytes: The most bytes the spool holds; beyond them :meth:`send` waits for
            acknowledgements (and raises :class:`~ndbridge.DeliveryError` after `timeout`, the
            record not sent). A record larger than that still goes, once nothing else is
            unacknowledged. Default 16 GiB.
        chunking: When arrays of 2 MiB or more are compressed in parallel chunks on every
            core (codec ``zstd-chunks``), which only the native core does: ``"auto"``
            (default; the native core with ``codec="auto"`` on a network link, when one core
            compresses slower than the link takes compressed bytes), ``"always"`` (native
            only: this pure-Python publisher raises ``ValueError``) or ``"never"``. This
            publisher sends every array as one frame.

    Attributes:
        session: This publisher's session id, 16 hex characters.
        seq: The sequence number the next record will carry (the number of records sent).
            Closing sends one more message on a PUSH socket after the records (if there were
            any), the session's end (a :class:`~ndbridge.Record` with ``end`` True and no
            arrays), with this ``seq``; it is not a record: ``seq``, :attr:`pending` and
            :class:`~ndbridge.DeliveryError` never count it, and it is discarded without an
            error if it cannot go out by the close deadline.
        link: ``"local"`` or ``"network"``: the link ``codec="auto"`` decides for.
        delivery: ``"fire-and-forget"`` or ``"acked"``.
        socket: The underlying pyzmq socket (a DEALER in acked delivery).

    Use a publisher from one thread only, and do not modify an array after sending it (raw
    arrays go out without a copy; see :func:`send`).

    The native core: when the package was built with it (:data:`ndbridge.native.AVAILABLE`),
    ``Publisher(...)`` returns the Rust publisher, :class:`ndbridge.native.Publisher`, with the
    same arguments, attributes (but ``socket``) and close/flush guarantees; its own thread
    encodes, compresses and sends without the interpreter lock. ``native=False`` keeps this
    pure-Python publisher; ``native=True`` insists on the Rust one. The pure one is also used
    for what only it does: ``bind=True``, a shared ``context``, and socket kinds other than
    PUSH and PUB.
    """

    def __new__(cls, *args: Any, native: Optional[bool] = None, **kwargs: Any) -> Any:
        """The Rust publisher when the native core is built and the arguments allow it (see
        the class documentation), else a pure-Python one."""
        if cls is Publisher and native is not False:
            from . import native as core
            unfit = _native_unfit(args, kwargs)
            if native is True:
                if not core.AVAILABLE:
                    raise ImportError("native=True: ndbridge._native is not built (install the "
                                      "package with a Rust toolchain; see python/README)")
                if unfit:
                    raise ValueError(f"native=True: the Rust publisher does not support {unfit}")
            if core.AVAILABLE and not unfit:
                return core.Publisher(*args, **kwargs)
        return super().__new__(cls)

    def __init__(self, endpoint: str, source: Optional[str] = None, codec: str = "auto",
                 bind: bool = False, kind: int = zmq.PUSH, *, level: int = 1,
                 shuffle: Optional[bool] = None, link: Optional[str] = None,
                 timeout: Optional[float] = DEFAULT_TIMEOUT,
                 queue_bytes: int = DEFAULT_QUEUE_BYTES, limits: Optional[Limits] = DEFAULT_LIMITS,
                 copy_threshold: Optional[int] = COPY_THRESHOLD,
                 context: Optional[zmq.Context] = None, native: Optional[bool] = None,
                 curve_server: Optional[KeySource] = None,
                 curve_secret: Optional[PathLike] = None, delivery: str = "fire-and-forget",
                 window_bytes: int = DEFAULT_WINDOW_BYTES, spool_dir: Optional[PathLike] = None,
                 spool_bytes: int = DEFAULT_SPOOL_BYTES, chunking: str = "auto") -> None:
        if chunking not in CHUNKINGS:
            raise ValueError(f"chunking: expected one of {list(CHUNKINGS)}, found {chunking!r}")
        if chunking == "always":
            raise ValueError("chunking='always': parallel chunks (zstd-chunks) are compressed by "
                             "the native core, which this publisher does not use")
        if kind not in (zmq.PUSH, zmq.PUB, zmq.XPUB, zmq.DEALER, zmq.PAIR):
            raise ValueError(f"kind: expected zmq.PUSH, zmq.PUB, zmq.XPUB, zmq.DEALER or "
                             f"zmq.PAIR, found {kind!r}")
        if codec not in CODECS:
            raise ValueError(f"codec: expected one of {list(CODECS)}, found {codec!r}")
        if codec != "raw":
            check_level(level)
        if link is None:
            link = "local" if is_local(endpoint) else "network"
        elif link not in LINKS:
            raise ValueError(f"link: expected None, 'local' or 'network', found {link!r}")
        if timeout is not None and not timeout >= 0:
            raise ValueError(f"timeout: expected seconds >= 0 or None, found {timeout!r}")
        if not isinstance(queue_bytes, int) or queue_bytes < 1:
            raise ValueError(f"queue_bytes: expected a positive integer, found {queue_bytes!r}")
        acked = _check_acked(delivery, window_bytes, kind, bind)
        spool = check_spool(spool_dir, spool_bytes, delivery)
        curve = load_curve(curve_server, curve_secret)
        self._curve = curve is not None
        self.delivery = delivery
        self.source = default_source() if source is None else source
        self.session = new_session()
        self.seq = 0
        self.codec = codec
        self.level = level
        self.shuffle = shuffle
        self.link = link
        self.timeout = timeout
        self.queue_bytes = queue_bytes
        self.limits = limits
        self.copy_threshold = copy_threshold
        # "auto" on a local link: bytes move at memory speed, compressing never pays. On a
        # network it compresses while the link is slow enough for that to pay (Pacing).
        self._wire_codec = "raw" if codec == "auto" and link == "local" else codec
        self._pacing: Optional[Pacing] = Pacing() if self._wire_codec == "auto" else None
        self._untimed_bytes = 0
        self._queue: Deque[_Queued] = deque()
        self._queued_bytes = 0
        self._tail: Deque[int] = deque()
        # The session's end once sent (by a close that may have been interrupted since).
        self._end: Optional[_Queued] = None
        # Acked delivery: the window, the acknowledgements, resending.
        self._acked: Optional[_AckedLink] = None
        self._own_context = context is None
        self._context = zmq.Context() if context is None else context
        self._closed = False
        self._last_stats: Optional[Dict[str, int]] = None
        try:
            self.socket = self._context.socket(zmq.DEALER if acked else kind)
            if acked:
                self._acked = _AckedLink(self.socket, self.source, self.session, window_bytes,
                                         copy_threshold, spool, spool_bytes)
            _attach(self.socket, endpoint, bind, curve)
            self._endpoint = self.endpoint
            if self._acked is not None:
                self._acked.pump()  # what an earlier publisher left in the spool goes first
        except BaseException:
            if self._acked is not None:
                self._acked.close()
            sock = getattr(self, "socket", None)
            if sock is not None and not sock.closed:
                sock.close(linger=0)
            if self._own_context:
                self._context.term()
            raise
        lifetime.track(self)

    @property
    def endpoint(self) -> str:
        """The endpoint last bound or connected, with the real port if it was ``*``."""
        if self._closed:
            return self._endpoint
        return self.socket.getsockopt_string(zmq.LAST_ENDPOINT)

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has run."""
        return self._closed

    @property
    def pending(self) -> int:
        """Records sent that ZeroMQ has not yet handed to a peer; in acked delivery, records
        sent that the collector has not acknowledged."""
        link = self._acked
        if link is not None:
            if not self._closed:
                link.pump()
            return link.unacknowledged(self.seq)
        self._release()
        return sum(1 for q in self._queue if not q.tracker.done)

    def send(self, name: str, arrays: ArraysLike, attrs: Optional[Mapping[str, Any]] = None) -> int:
        """Sends one record; returns the sequence number it carried.

        Raises ``TypeError`` for values that would not arrive as they are (masked arrays,
        object arrays, text) and ``ValueError`` for a record over :attr:`limits`; nothing is
        sent then. Waits while more than `queue_bytes` are queued. In acked delivery, waits
        while the window is full, and raises :class:`~ndbridge.DeliveryError` if it stays
        full for `timeout` (the record is not sent).
        """
        if self._closed or self._end is not None or (self._acked is not None and
                                                     self._acked.ended):
            raise ValueError(f"send: the publisher to {self._endpoint} is closed")
        seq = self.seq
        codec, raw_bytes = self._choose_codec(arrays)
        started = _time.perf_counter()
        frames: List[Any] = list(encode(
            name, arrays, codec=codec, level=self.level, shuffle=self.shuffle,
            attrs=attrs, source=self.source, session=self.session, seq=seq,
            limits=self.limits))
        if self._pacing is not None and codec != "raw":
            took = _time.perf_counter() - started
            self._pacing.observe_compress(raw_bytes, sum(len(f) for f in frames[1:]), took)
        if self.socket.type in _TOPIC_SENDERS:
            frames.insert(0, name.encode("utf-8"))
        nbytes = sum(len(f) for f in frames)
        self._send_timed(frames, nbytes)
        self.seq = seq + 1
        return seq

    def _choose_codec(self, arrays: ArraysLike) -> Tuple[str, int]:
        """The codec of the next record, and its raw size when the automatic codec weighs the
        link (else 0): ``"auto"`` (compress, keep what saves 10%) while compressing pays,
        ``"raw"`` otherwise; the compressor is measured on a sample when its figures are old."""
        pacing = self._pacing
        if pacing is None:
            return self._wire_codec, 0
        try:
            values = [np.asarray(a) for a in (arrays.values() if isinstance(arrays, Mapping)
                                              else [arrays])]
        except (TypeError, ValueError):
            return "raw", 0  # not arrays: encode raises the precise error
        raw_bytes = sum(a.nbytes for a in values)
        if pacing.wants_sample(raw_bytes):
            self._measure_sample(values)
        return ("auto" if pacing.should_compress() else "raw"), raw_bytes

    def _measure_sample(self, values: List[np.ndarray]) -> None:
        """Times shuffle + zstd of up to 256 KiB from the middle of the largest array."""
        assert self._pacing is not None
        largest = max(values, key=lambda a: a.nbytes, default=None)
        if largest is None or largest.dtype.kind not in "biufcmM" or largest.nbytes == 0:
            return
        itemsize = largest.dtype.itemsize
        data = np.ascontiguousarray(largest).reshape(-1).view(np.uint8)
        length = min(data.size, SAMPLE_BYTES) // itemsize * itemsize
        start = (data.size - length) // 2 // itemsize * itemsize
        started = _time.perf_counter()
        _, _, frame = encode_buffer(data[start:start + length], itemsize, "zstd", self.level,
                                    self.shuffle)
        self._pacing.observe_compress(length, len(frame), _time.perf_counter() - started)

    def _send_timed(self, frames: List[Any], nbytes: int) -> None:
        """Waits for room and sends; for the automatic codec on a network, times the wait and
        the send when they bring the bytes since the last timed one to 64 KiB (the link's
        speed shows in how long they block)."""
        pacing = self._pacing
        timed = pacing is not None and self._untimed_bytes + nbytes >= TIME_SENDS_EVERY_BYTES
        started = _time.perf_counter() if timed else 0.0
        if self._acked is None:
            self._wait_for_room(nbytes)
            self._send_frames(frames, nbytes)
        else:
            self._send_acked(frames, nbytes)
        if timed and pacing is not None:
            pacing.observe_send(nbytes, _time.perf_counter() - started)
            self._untimed_bytes = 0
        else:
            self._untimed_bytes += nbytes

    def _send_frames(self, frames: List[Any], nbytes: int) -> None:
        """Sends one record's frames; the last one always without a copy and tracked, so that
        its release by ZeroMQ tells that the record has gone out."""
        sock = self.socket
        threshold = self.copy_threshold
        buffers: List[Any] = []
        last = len(frames) - 1
        self._wait_for_peer()
        for frame in frames[:last]:
            if threshold is not None and len(frame) >= threshold:
                sock.send(zmq.Frame(frame, copy=False), zmq.SNDMORE, copy=False)
                buffers.append(frame)
            else:
                sock.send(frame, zmq.SNDMORE, copy=True)
        frame = frames[last]
        if threshold is None or len(frame) < threshold:
            frame = bytes(frame)  # a copy (none for a bytes frame): the caller's array is free
        # The Frame object must not outlive the send: its own reference would keep the
        # message from being released.
        tracker = sock.send(zmq.Frame(frame, copy=False, track=True), 0, copy=False, track=True)
        buffers.append(frame)
        self._queue.append(_Queued(tracker, buffers, nbytes))
        self._queued_bytes += nbytes
        # The records that may have bytes in ZeroMQ's output buffer once it has released them
        # all: those in the last OUT_BATCH_BYTES of the stream.
        tail = self._tail
        tail.append(nbytes + _FRAME_OVERHEAD * len(frames))
        while len(tail) > 1 and sum(tail) - tail[0] >= _OUT_BATCH_BYTES:
            tail.popleft()

    def _send_acked(self, frames: List[Any], nbytes: int) -> None:
        """Acked delivery: waits (at most `timeout`) for room in the window, sends the record
        and keeps it there until acknowledged."""
        link = self._acked
        assert link is not None
        deadline = self._deadline(self.timeout)
        if link.spool is not None:
            if not link.spool_and_send(self.seq, link.keep(frames), nbytes, False, deadline):
                if link.spool_error is not None:
                    detail = (f"send waited {self.timeout:g} s for the spool {link.spool_dir} "
                              f"to write record {self.seq} ({link.spool_error}): it was not "
                              f"sent")
                else:
                    detail = (f"send waited {self.timeout:g} s for room in the spool "
                              f"{link.spool_dir}: record {self.seq} was not sent")
                raise self._acked_error(self.timeout, dropped=False, detail=detail)
        elif not link.send(self.seq, link.keep(frames), nbytes, deadline):
            raise self._acked_error(self.timeout, dropped=False,
                                    detail=f"send waited {self.timeout:g} s for room in the "
                                           f"window: record {self.seq} was not sent")

    def _acked_error(self, timeout: Optional[float], dropped: bool,
                     detail: Optional[str] = None) -> DeliveryError:
        """The :class:`~ndbridge.DeliveryError` for the records not acknowledged now, and those
        refused."""
        link = self._acked
        assert link is not None
        unacknowledged = link.unacknowledged(self.seq)
        # Closing with a spool drops nothing: what is not acknowledged stays there.
        kept = link.spool_dir if dropped and unacknowledged else None
        # Messages the spool could not give back were never sent: not delivered either.
        unsent = unacknowledged + link.failed
        if link.failed:
            lost = (f"{link.failed} could not be read back from the spool {link.spool_dir} "
                    f"and were not sent (see the log)")
            detail = lost if detail is None else f"{detail}; {lost}"
        return DeliveryError(self._endpoint, unsent, self.seq + link.recovered_total,
                             timeout or 0.0, dropped=dropped, curve=self._curve,
                             refused=link.window.refused, acked=True,
                             connected=link.connected, detail=detail, kept=kept)

    def _release(self) -> None:
        """Drops the references to records ZeroMQ has released, oldest first."""
        queue = self._queue
        while queue and queue[0].tracker.done:
            self._queued_bytes -= queue.popleft().nbytes

    def _wait_for_peer(self) -> None:
        """Before the first record: returns once ZeroMQ can take a message, at once in the
        usual case (a socket that connects queues messages before its peer is there). A socket
        left without a peer (its connection refused for good, as a CURVE server does with a
        key it does not admit) would make the send block forever: after `timeout` this raises
        :class:`~ndbridge.DeliveryError` instead, and nothing of the record is sent. Later
        records block while ZeroMQ's queue is full, as a slow collector makes them."""
        sock = self.socket
        if self.seq > 0 or sock.poll(0, zmq.POLLOUT):
            return
        deadline = self._deadline(self.timeout)
        while not sock.poll(_ACK_POLL_MS, zmq.POLLOUT):
            if deadline is not None and _time.monotonic() >= deadline:
                raise DeliveryError(self._endpoint, 1, self.seq + 1, self.timeout or 0.0,
                                    dropped=True, curve=self._curve,
                                    detail="no peer could take it: the record was not sent")

    def _wait_for_room(self, nbytes: int) -> None:
        self._release()
        while self._queue and self._queued_bytes + nbytes > self.queue_bytes:
            _wait(self._queue[0].tracker, None)
            self._release()

    def _drain(self, deadline: Optional[float]) -> int:
        """Waits until every record is out or `deadline` passes; returns how many are not."""
        for queued in list(self._queue):
            if not _wait(queued.tracker, deadline):
                break
        self._release()
        return sum(1 for q in self._queue if not q.tracker.done)

    def _deadline(self, timeout: Optional[float], start: Optional[float] = None) -> Optional[float]:
        if timeout is None:
            return None
        if not timeout >= 0:
            raise ValueError(f"timeout: expected seconds >= 0 or None, found {timeout!r}")
        return (_time.monotonic() if start is None else start) + timeout

    def flush(self, timeout: Optional[float] = _DEFAULT) -> None:
        """Waits until every record sent so far has been handed to the operating system for a
        peer.

        Args:
            timeout: Longest wait in seconds (default the constructor's); ``None`` waits
                forever.

        In acked delivery, waits until the collector has acknowledged every record sent so far
        (stored, or refused: :meth:`close` reports those).

        Raises:
            DeliveryError: Records did not go out (were not acknowledged) in time. They stay
                queued: a later ``flush`` or ``close`` waits for them again.
        """
        if self._closed:
            raise ValueError(f"flush: the publisher to {self._endpoint} is closed")
        timeout = self.timeout if timeout is _DEFAULT else timeout
        if self._acked is not None:
            if not self._acked.settle(self._deadline(timeout)):
                raise self._acked_error(timeout, dropped=False)
            return
        unsent = self._drain(self._deadline(timeout))
        if unsent:
            raise DeliveryError(self._endpoint, unsent, self.seq, timeout, dropped=False,
                                curve=self._curve)

    def close(self, timeout: Optional[float] = _DEFAULT) -> None:
        """Waits until every record has been handed to the operating system for a peer, sends
        the message that ends the session (PUSH sockets; best effort, see :attr:`seq`), then
        closes the socket (and terminates the publisher's own context). Closing twice is
        harmless.

        In acked delivery it waits until the collector has acknowledged every record, then
        sends the end and waits for it to be acknowledged too, within the same `timeout`.

        Args:
            timeout: Longest wait in seconds (default the constructor's); ``None`` waits
                forever.

        Raises:
            DeliveryError: Records did not go out in time; they are dropped, and the publisher
                is closed all the same. In acked delivery: records the collector did not
                acknowledge in time (it may not have them), or refused for good (its log says
                why); the error counts both. With a spool, the records not acknowledged stay
                in it for the next publisher on it, and the error's ``kept`` names it. If the wait is interrupted (``KeyboardInterrupt``), the
                publisher stays open and the exit hook tries again.
        """
        if self._closed:
            return
        timeout = self.timeout if timeout is _DEFAULT else timeout
        self._close_by(timeout, self._deadline(timeout))

    def _close_from(self, start: float) -> None:
        """:meth:`close` with the constructor's timeout counted from `start` (the exit hook)."""
        if not self._closed:
            self._close_by(self.timeout, self._deadline(self.timeout, start))

    def _close_by(self, timeout: Optional[float], deadline: Optional[float]) -> None:
        if self._acked is not None:
            self._close_acked(timeout, deadline)
            return
        unsent = self._drain(deadline)
        sent = self.seq
        if unsent:
            self._shutdown(linger_ms=0)
            raise DeliveryError(self._endpoint, unsent, sent, timeout or 0.0, dropped=True,
                                curve=self._curve)
        if not self._end_session(deadline):
            # The end is still in ZeroMQ's queue: nothing moved for the whole wait. Discard
            # it, without an error: it is no record, and the collector reports the session
            # as not ended.
            self._shutdown(linger_ms=0)
            return
        # ZeroMQ has taken every record off its queue; the last few kilobytes may still wait in
        # its output buffer for the kernel. The context's termination waits for them, for at
        # most the linger time: if it took that long, they may have been dropped.
        linger_ms = -1
        if deadline is not None:
            linger_ms = max(0, int((deadline - _time.monotonic()) * 1000)) + _CLOSE_GRACE_MS
        start = _time.monotonic()
        self._shutdown(linger_ms)
        took_ms = (_time.monotonic() - start) * 1000
        if self._tail and self._own_context and linger_ms >= 0 and took_ms >= linger_ms:
            raise DeliveryError(self._endpoint, len(self._tail), sent, timeout or 0.0,
                                dropped=True, at_most=True, curve=self._curve)

    def _close_acked(self, timeout: Optional[float], deadline: Optional[float]) -> None:
        """Acked delivery's close: waits for every record to be acknowledged, then ends the
        session (if it sent any record) and waits for the end to be acknowledged too; closes
        at once, and raises for what was not acknowledged or was refused."""
        link = self._acked
        assert link is not None
        if link.settle(deadline) and self.seq > 0:
            # The end is no record: if it is not settled in time, the collector reports the
            # session as not ended, and close does not fail for it.
            link.end(encode_end(self.source, self.session, self.seq), self.seq, deadline)
        error = self._acked_error(timeout, dropped=True)
        if link.spool_dir is not None and not link.settled():
            _log.warning("ndbridge: %d messages not acknowledged stay in the spool %s: the "
                         "next publisher on it sends them",
                         sum(len(lane.window) for lane in link.lanes) + len(link.pending),
                         link.spool_dir)
        self._shutdown(linger_ms=0)
        if error.unsent or error.refused:
            raise error

    def _end_session(self, deadline: Optional[float]) -> bool:
        """Sends the message that ends the session (on a PUSH socket, once every record, at
        least one, is released) and waits until `deadline` (plus the output buffer's grace) for
        ZeroMQ to release it. False if ZeroMQ still holds it then; True if it is out or was not
        sent."""
        if self.socket.type != zmq.PUSH:
            return True  # only a stream to a collector ends (no end to PUB subscribers, as in Rust)
        if self.seq == 0:
            # No receiver has heard of a session without records, and without a collector its
            # end would wait out the deadline: it sends none (docs/wire-format.md).
            return True
        if self._end is None:  # else: sent by a close that was interrupted
            frame = encode_end(self.source, self.session, self.seq)
            try:
                tracker = self.socket.send(zmq.Frame(frame, copy=False, track=True), zmq.NOBLOCK,
                                           copy=False, track=True)
            except zmq.ZMQError:
                return True  # no room or no peer: not sent, the session shows as not ended
            self._end = _Queued(tracker, [frame], 0)
        grace = None if deadline is None else deadline + _CLOSE_GRACE_MS / 1000
        return _wait(self._end.tracker, grace)

    def _abandon(self) -> List[BaseException]:
        """Closes at once, dropping what is queued; returns the error that says so, if any."""
        if self._closed:
            return []
        if self._acked is not None:
            error = self._acked_error(0.0, dropped=True)
            self._shutdown(linger_ms=0)
            return [error] if error.unsent else []
        self._release()
        unsent = sum(1 for q in self._queue if not q.tracker.done)
        self._shutdown(linger_ms=0)
        if unsent:
            return [DeliveryError(self._endpoint, unsent, self.seq, 0.0, dropped=True,
                                  curve=self._curve)]
        return []

    def _shutdown(self, linger_ms: int) -> None:
        """Closes the socket and, if it is the publisher's own, terminates the context: that
        returns once ZeroMQ's threads have stopped and released every message."""
        if not self._closed:
            self._last_stats = self._stats(pump=False)
        self._closed = True
        lifetime.forget(self)
        if self._acked is not None:
            self._acked.close()
        self.socket.close(linger=linger_ms)
        if self._own_context:
            self._context.term()
            self._queue.clear()
        else:
            # A shared context stays up: keep the buffers of dropped messages alive until
            # ZeroMQ releases them.
            _orphans.extend(self._queue)
            if self._end is not None:
                _orphans.append(self._end)
            self._queue.clear()
            _orphans[:] = [q for q in _orphans if not q.tracker.done]
        self._queued_bytes = 0

    def stats(self) -> Dict[str, int]:
        """The publisher's counters, the native publisher's that this one keeps: ``sent``
        (records sent), ``delivered`` (handed to a peer; in acked delivery, acknowledged as
        stored), ``refused`` (acked delivery: acknowledged as refused for good), ``resent``
        (acked delivery: messages sent again after a reconnect), ``recovered`` (acked delivery
        with a spool: messages of earlier publishers' sessions sent from the spool, not counted
        in ``sent``), ``failed`` (messages the spool could not give back). After
        :meth:`close`, the final ones."""
        if self._closed:
            return dict(self._last_stats or {})
        return self._stats()

    def _stats(self, pump: bool = True) -> Dict[str, int]:
        """The counters now; `pump` reads the acknowledgements waiting first."""
        link = self._acked
        if link is None:
            return {"sent": self.seq, "delivered": self.seq - self.pending, "refused": 0,
                    "resent": 0, "recovered": 0, "failed": 0}
        if pump:
            link.pump()
        refused = link.window.refused
        return {"sent": self.seq,
                "delivered": max(0, self.seq - link.unacknowledged(self.seq) - refused),
                "refused": refused, "resent": link.resent, "recovered": link.recovered,
                "failed": link.failed}

    def __enter__(self) -> "Publisher":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{self.pending} pending"
        return f"<ndbridge.Publisher to {self._endpoint} seq={self.seq} {state}>"


def _check_acked(delivery: Any, window_bytes: Any, kind: int, bind: bool) -> bool:
    """Checks `delivery` and `window_bytes` (``ValueError``); true for acked delivery, which
    takes a PUSH publisher that connects."""
    acked = check_delivery(delivery) == "acked"
    check_window_bytes(window_bytes)
    if acked and kind != zmq.PUSH:
        raise ValueError(f"delivery='acked': expected kind=zmq.PUSH (the default; the "
                         f"publisher then connects a DEALER to the collector's ROUTER), found "
                         f"{_kind_name(kind)}")
    if acked and bind:
        raise ValueError("delivery='acked': expected an endpoint to connect to (a collector "
                         "binds), found bind=True")
    return acked


def _kind_name(kind: Any) -> str:
    """A socket type constant as pyzmq names it (``zmq.PUB``), else its repr."""
    try:
        return f"zmq.{zmq.SocketType(kind).name}"
    except (AttributeError, ValueError):  # pyzmq before 23 has no SocketType
        return repr(kind)


def _native_unfit(args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Optional[str]:
    """What in a ``Publisher(...)`` call only the pure-Python publisher does, or ``None``."""
    try:
        given = inspect.signature(Publisher.__init__).bind(None, *args, **kwargs).arguments
    except TypeError:
        return "these arguments"  # the pure-Python publisher raises the precise error
    if not isinstance(given.get("endpoint"), str):
        return "this endpoint"
    if given.get("context") is not None:
        return "a shared context (context=...)"
    if given.get("bind"):
        return "bind=True"
    if given.get("kind", zmq.PUSH) not in (zmq.PUSH, zmq.PUB):
        return "socket kinds other than zmq.PUSH and zmq.PUB"
    return None


# Records dropped by publishers on a shared context, until ZeroMQ releases their buffers.
_orphans: List[_Queued] = []


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
        decoder: ``"auto"`` (default: the Rust decoder when the native core is built),
            ``"rust"`` or ``"python"``; see :data:`DECODERS`.
        context: The ZeroMQ context; default the process-wide one.
        curve_server: Receive with CURVE (encrypted and authenticated): the publishing server's
            public key, as the path of its certificate ``NAME.key`` or as 40 characters of Z85.
            Give `curve_secret` too.
        curve_secret: With `curve_server`: the path of this subscriber's secret certificate
            ``NAME.key_secret``, whose public key the server must admit (else nothing arrives).

    A malformed message raises :class:`~ndbridge.WireError` from :meth:`recv` (and from the
    iteration); the message is consumed and the next call receives the next one.
    """

    def __init__(self, endpoint: str, names: Union[str, Iterable[str], None] = None, *,
                 timeout_ms: Optional[int] = None, bind: bool = False,
                 limits: Limits = DEFAULT_LIMITS, native: bool = False, decoder: str = "auto",
                 context: Optional[zmq.Context] = None,
                 curve_server: Optional[KeySource] = None,
                 curve_secret: Optional[PathLike] = None) -> None:
        self._decode = _decoder(decoder)
        curve = load_curve(curve_server, curve_secret)
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
        _attach(self.socket, endpoint, bind, curve)

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
            return self._decode(rest, limits=self.limits, native=self.native, topic=topic)

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

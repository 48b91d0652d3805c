"""Acked delivery, the pure part: the collector's acknowledgements (:func:`parse_ack`) and the
publisher's window of messages sent and not yet acknowledged (:class:`Window`). No sockets:
:mod:`ndbridge.net` reads the acknowledgements and resends from the window.

In acked delivery (``Publisher(..., delivery="acked")``, a collector started with
``ndbridge collect --delivery acked``) a publisher's DEALER socket sends the usual messages to
the collector's ROUTER socket, and the collector answers, once it has stored them durably, with
one-frame acknowledgements::

    {"v":1,"session":"6f1c2a9e0b3d4c5f","through":120,"refused":1}

Every message of the session whose ``seq`` is below ``through`` is settled: stored, or refused
for good (``refused`` of them). Acknowledgements are cumulative, so a lost, repeated or out of
date one does no harm. The session's end is settled like a record, at its own ``seq`` (the
number of records). The contract is ``docs/wire-format.md``, "Acknowledged delivery"; the Rust
publisher's counterparts are ``ndbridge::wire::Ack`` and its window (``src/delivery.rs``).

>>> ack = parse_ack(b'{"v":1,"session":"ab12","through":3,"refused":1,"later":true}')
>>> ack
Ack(session='ab12', through=3, refused=1)
>>> window = Window(limit_bytes=1 << 20)
>>> for seq in range(5):
...     window.push(seq, [b"header", b"data"])
>>> window.acknowledge(ack), len(window), window.first_seq
(3, 2, 3)
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass
from typing import Any, Deque, List, Optional, Sequence, Tuple

from .errors import VersionError, WireError, describe
from .header import FORMAT_VERSION

__all__ = ["DELIVERIES", "DEFAULT_WINDOW_BYTES", "MAX_UNACKED", "PER_MESSAGE_BYTES",
           "HEARTBEAT_IVL_MS", "HEARTBEAT_TIMEOUT_MS", "Ack",
           "parse_ack", "check_delivery", "check_window_bytes", "Window"]

#: What ``Publisher(delivery=...)`` accepts: ``"fire-and-forget"`` (the default: PUSH to a
#: collector's PULL, nothing comes back) and ``"acked"`` (DEALER to a collector's ROUTER, which
#: acknowledges what it stored).
DELIVERIES = ("fire-and-forget", "acked")

#: The default bound of the window, in bytes (``Publisher(window_bytes=...)``).
DEFAULT_WINDOW_BYTES = 512 << 20

#: Most messages a publisher keeps unacknowledged, whatever their bytes: the collector relies
#: on it (it refuses messages more than 131,072 ahead of the first one it lacks).
MAX_UNACKED = 65_536

#: What a message counts for in the window besides its frames' bytes (as in Rust).
PER_MESSAGE_BYTES = 256

#: ZeroMQ heartbeats on an acked publisher's socket: a ping every HEARTBEAT_IVL_MS, and a
#: connection that stays silent for HEARTBEAT_TIMEOUT_MS is closed and made again (then what is
#: unacknowledged is sent again).
HEARTBEAT_IVL_MS = 1000
HEARTBEAT_TIMEOUT_MS = 5000

_U64 = 1 << 64


@dataclass(frozen=True)
class Ack:
    """A collector's acknowledgement of one publisher session.

    Attributes:
        session: The publisher session acknowledged.
        through: Every message of the session whose ``seq`` is below this is settled.
        refused: How many of the settled messages the collector refused for good (it could not
            decode or store them); the others are stored. At most `through`.
    """

    session: str
    through: int
    refused: int


def _no_repeats(pairs: List[Tuple[str, Any]]) -> dict:
    """A JSON object's members as a dict; a key given twice is an error (as in Rust)."""
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise WireError(f"ack.{key}", "expected each field once, found it again")
        out[key] = value
    return out


def _count(obj: dict, key: str) -> int:
    """Field `key` of an acknowledgement: an integer in ``0 .. 2**64 - 1``."""
    if key not in obj:
        raise WireError(f"ack.{key}", "missing")
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < _U64:
        raise WireError(f"ack.{key}",
                        f"expected an integer from 0 to 2**64 - 1, found {describe(value)}")
    return value


def parse_ack(frame: Any) -> Ack:
    """Reads an acknowledgement's frame (``bytes`` or any buffer); fields it does not know are
    ignored (later versions may add some).

    Raises:
        VersionError: ``v`` is not 1.
        WireError: Anything else wrong: not a JSON object, a field missing, of the wrong type
            or repeated, ``refused`` above ``through``. Its ``field`` says which
            (``"ack"``, ``"ack.through"``, ...).
    """
    try:
        obj = json.loads(bytes(frame), object_pairs_hook=_no_repeats)
    except WireError:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise WireError("ack", f"expected a JSON object, found bytes that do not parse ({e})") \
            from None
    if not isinstance(obj, dict):
        raise WireError("ack", f"expected a JSON object, found {describe(obj)}")
    version = _count(obj, "v")
    if version != FORMAT_VERSION:
        raise VersionError("ack.v", f"acknowledgement version {version} is not supported; this "
                           f"reader understands version {FORMAT_VERSION}", version)
    session = obj.get("session")
    if not isinstance(session, str):
        raise WireError("ack.session", "missing" if "session" not in obj
                        else f"expected a string, found {describe(session)}")
    through, refused = _count(obj, "through"), _count(obj, "refused")
    if refused > through:
        raise WireError("ack.refused", f"expected at most `through`, found {refused} "
                        f"(through {through})")
    return Ack(session, through, refused)


def check_delivery(delivery: Any) -> str:
    """`delivery` if it is one of :data:`DELIVERIES`, else ``ValueError``."""
    if not isinstance(delivery, str) or delivery not in DELIVERIES:
        raise ValueError(f"delivery: expected one of {list(DELIVERIES)}, found {delivery!r}")
    return delivery


def check_window_bytes(window_bytes: Any) -> int:
    """`window_bytes` if it is a positive integer below 2**64, else ``ValueError``."""
    if isinstance(window_bytes, bool) or not isinstance(window_bytes, int) \
            or not 0 < window_bytes < _U64:
        raise ValueError(f"window_bytes: expected a positive integer (bytes), found "
                         f"{window_bytes!r}")
    return window_bytes


class _Unacked:
    """One message sent and not acknowledged: its `seq`, its frames and its weight."""

    __slots__ = ("seq", "frames", "weight")

    def __init__(self, seq: int, frames: List[Any], weight: int) -> None:
        self.seq = seq
        self.frames = frames
        self.weight = weight


class Window:
    """The messages of one session sent and not yet acknowledged, in ``seq`` order, kept for
    resending until an acknowledgement settles them.

    It holds at most `limit_bytes` of frames (each message counting
    :data:`PER_MESSAGE_BYTES` more) and at most `max_messages`; a message larger than the
    window still goes, alone. It also remembers what the acknowledgements said: :attr:`through`
    and :attr:`refused`.
    """

    def __init__(self, limit_bytes: int = DEFAULT_WINDOW_BYTES,
                 max_messages: int = MAX_UNACKED) -> None:
        self.limit_bytes = limit_bytes
        self.max_messages = max_messages
        self._unacked: Deque[_Unacked] = deque()
        self._bytes = 0
        #: Every ``seq`` below this is acknowledged (the highest ``through`` seen).
        self.through = 0
        #: Messages the collector refused, as the latest acknowledgement says (never less than
        #: an earlier one said: a restarted collector counts its refusals anew).
        self.refused = 0

    def __len__(self) -> int:
        return len(self._unacked)

    @property
    def bytes(self) -> int:
        """The weight of the messages held: their frames' bytes plus
        :data:`PER_MESSAGE_BYTES` each."""
        return self._bytes

    @property
    def first_seq(self) -> Optional[int]:
        """The ``seq`` of the oldest unacknowledged message (``None``: none)."""
        return self._unacked[0].seq if self._unacked else None

    def has_room(self, nbytes: int) -> bool:
        """Whether a message of `nbytes` (its frames) may be sent now: there is room for it,
        or the window is empty."""
        return not self._unacked or (len(self._unacked) < self.max_messages and
                                     self._bytes + nbytes + PER_MESSAGE_BYTES <= self.limit_bytes)

    def push(self, seq: int, frames: Sequence[Any], nbytes: Optional[int] = None) -> None:
        """Keeps a sent message, whose `seq` follows the last one's, until it is acknowledged;
        `nbytes` is its frames' length (computed when not given)."""
        if nbytes is None:
            nbytes = sum(len(f) for f in frames)
        weight = nbytes + PER_MESSAGE_BYTES
        self._unacked.append(_Unacked(seq, list(frames), weight))
        self._bytes += weight

    def acknowledge(self, ack: Ack) -> int:
        """Applies an acknowledgement (of this window's session: the caller checks): the
        messages it settles leave the window. Returns how many left; an older or repeated
        acknowledgement settles nothing."""
        self.refused = max(self.refused, ack.refused)
        if ack.through <= self.through:
            return 0
        self.through = ack.through
        settled = 0
        unacked = self._unacked
        while unacked and unacked[0].seq < ack.through:
            self._bytes -= unacked.popleft().weight
            settled += 1
        return settled

    def frames(self, seq: int) -> Optional[List[Any]]:
        """The frames of the unacknowledged message `seq`, for resending (``None``: not in the
        window, acknowledged or never sent). The window's ``seq`` s are consecutive."""
        first = self.first_seq
        if first is None or not first <= seq < first + len(self._unacked):
            return None
        return self._unacked[seq - first].frames

    def messages(self) -> List[Tuple[int, List[Any]]]:
        """The unacknowledged messages as ``(seq, frames)``, oldest first (for resending)."""
        return [(m.seq, m.frames) for m in self._unacked]

    def count_below(self, seq: int) -> int:
        """How many unacknowledged messages have a ``seq`` below `seq` (the records, when
        `seq` is the session's end)."""
        count = 0
        for message in self._unacked:
            if message.seq >= seq:
                break
            count += 1
        return count

    def clear(self) -> None:
        """Forgets every message (the publisher closed)."""
        self._unacked.clear()
        self._bytes = 0

"""The errors ndbridge raises: :class:`WireError` and one subclass per kind of fault in a
received message, and :class:`DeliveryError` for records a publisher could not send.

A :class:`WireError` always means the peer sent something that does not follow the wire format
(or exceeds this reader's limits). Mistakes in the caller's own arguments (an unsupported dtype
passed to ``encode``, an empty record name, an array over the limits) raise ``TypeError`` or
``ValueError`` instead, so the two are never confused.
"""

from __future__ import annotations

import json
from typing import Optional

__all__ = [
    "WireError",
    "HeaderError",
    "VersionError",
    "FrameError",
    "CodecError",
    "LimitError",
    "DeliveryError",
    "describe",
]


class WireError(ValueError):
    """A message that does not follow the ndbridge wire format.

    ``str(err)`` reads ``"<field>: <what was expected and what was found>"``, for example
    ``"arrays[0].nbytes: 80000 declared, shape and dtype give 79992"``.

    Attributes:
        field: Where the fault is: a header path such as ``"arrays[0].nbytes"``, or ``"header"``,
            ``"frames"``, ``"topic"``.
        detail: The message without the field prefix.
    """

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(f"{field}: {detail}")
        self.field = field
        self.detail = detail


class HeaderError(WireError):
    """The header frame is not valid JSON, not an object, or a field is missing or wrong."""


class VersionError(HeaderError):
    """The header's format version ``v`` is not one this reader understands.

    Attributes:
        version: The version the header declared.
    """

    def __init__(self, field: str, detail: str, version: object) -> None:
        super().__init__(field, detail)
        self.version = version


class FrameError(WireError):
    """The frames do not match the header: wrong frame count or wrong buffer length."""


class CodecError(WireError):
    """A buffer frame cannot be decoded: not a zstd frame, wrong content size, corrupt data,
    or (codec ``zstd-chunks``) a chunk table that does not describe the array."""


class LimitError(WireError):
    """The message claims more than this reader's :class:`~ndbridge.Limits` allow.

    Attributes:
        limit: The name of the limit, e.g. ``"max_array_bytes"``.
        value: What the message claimed.
        maximum: The limit's value.
    """

    def __init__(self, field: str, limit: str, value: int, maximum: int,
                 what: Optional[str] = None) -> None:
        what = what or "value"
        super().__init__(field, f"{what} {value} exceeds the limit {limit}={maximum}")
        self.limit = limit
        self.value = value
        self.maximum = maximum


class DeliveryError(TimeoutError):
    """Records a :class:`~ndbridge.Publisher` did not hand to a peer within the time allowed,
    or, in acked delivery, that the collector did not acknowledge or refused.

    Raised by :meth:`~ndbridge.Publisher.flush` (the records stay queued and may still go out)
    and by :meth:`~ndbridge.Publisher.close` (the records are dropped). ``str(err)`` names the
    endpoint, how many records did not go out and what became of them.

    Attributes:
        endpoint: The publisher's endpoint.
        unsent: Records not handed to a peer (counted on the safe side: the first of them may
            have been on its way out, and may arrive whole); in acked delivery, records no
            acknowledgement settled (the collector may not have them).
        sent: Records the publisher sent in all.
        timeout: The wait that ran out, in seconds.
        dropped: True when the records were dropped (``close``), False when they are still
            queued (``flush``).
        at_most: True when `unsent` is an upper bound: ZeroMQ had released every record, but
            the last bytes (of at most `unsent` records) had not reached the operating system
            when the time ran out.
        refused: Acked delivery: records the collector acknowledged as refused for good (it
            could not decode or store them; its log says why). 0 otherwise.
        acked: True for a publisher in acked delivery (``delivery="acked"``).
        connected: False when, in acked delivery, no collector ever connected.
        kept: Acked delivery with a spool (``Publisher(..., spool_dir=...)``): the spool
            directory where the records not acknowledged stay (``close`` does not drop them);
            the next publisher started on it, Python or Rust, sends them first. ``None``
            otherwise, or when no record is left unacknowledged.

    `detail`, when given, is added to the message (what the call that raised did).

    With ``curve=True`` (a publisher with CURVE keys) the message also asks whether the server
    admits the key: a CURVE server that refuses a key lets nothing through and says nothing.
    """

    def __init__(self, endpoint: str, unsent: int, sent: int, timeout: float,
                 dropped: bool, at_most: bool = False, curve: bool = False, *,
                 refused: int = 0, acked: bool = False, connected: bool = True,
                 detail: Optional[str] = None, kept: Optional[str] = None) -> None:
        hint = ("is the collector running and reachable, does it admit this publisher's CURVE "
                "key (its NAME.key in the collector's --allow directory), and is curve_server "
                "the collector's public key?") if curve else \
            "is the collector running and reachable?"
        if acked:
            message = _unacknowledged(unsent, sent, timeout, dropped, refused, connected, curve,
                                      kept)
        else:
            fate = "they are dropped" if dropped else "they are still queued"
            count = f"up to {unsent} (the last) of {sent}" if at_most else f"{unsent} of {sent}"
            message = (f"{count} records did not go out to a peer within {timeout:g} s; {fate} "
                       f"({hint})")
        if detail:
            message = f"{message}; {detail}" if message else detail
        super().__init__(f"{endpoint}: {message}")
        self.endpoint = endpoint
        self.unsent = unsent
        self.sent = sent
        self.timeout = timeout
        self.dropped = dropped
        self.at_most = at_most
        self.refused = refused
        self.acked = acked
        self.connected = connected
        self.kept = kept


def _records(count: int) -> str:
    return f"{count} record" if count == 1 else f"{count} records"


def _unacknowledged(unsent: int, sent: int, timeout: float, dropped: bool, refused: int,
                    connected: bool, curve: bool, kept: Optional[str] = None) -> str:
    """The message of a :class:`DeliveryError` in acked delivery (the wording of Rust's
    ``Error::Unacknowledged`` and ``Error::NoPeer``)."""
    they = "it is" if unsent == 1 else "they are"
    fate = f"{they} dropped" if dropped else f"{they} still in the window"
    if kept is not None and unsent:
        fate = (f"{they} kept in the spool {kept}: the next publisher on the spool sends "
                f"{'it' if unsent == 1 else 'them'}")
    if not connected:
        key = (" Does it admit this publisher's CURVE key (--allow), and is curve_server its "
               "public key?") if curve else ""
        return (f"no collector took any of {_records(unsent)} within {timeout:g} s; {fate} "
                f"(is a collector running there with --delivery acked, and reachable?{key})")
    parts = []
    if unsent:
        them = "it" if unsent == 1 else "them"
        fate = (f"dropped: the collector may not have {them}" if dropped else
                "still in the window, sent again after a reconnect")
        if kept is not None:
            fate = f"kept in the spool {kept}: the next publisher on the spool sends {them}"
        parts.append(f"{_records(unsent)} of {sent} not acknowledged by the collector within "
                     f"{timeout:g} s ({fate})")
    if refused:
        parts.append(f"{_records(refused)} refused by the collector (see its log)")
    return "; ".join(parts)


def describe(value: object) -> str:
    """A parsed JSON value for an error message: its JSON type, then the value, shortened."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        kind = "boolean"
    elif isinstance(value, (int, float)):
        kind = "number"
    elif isinstance(value, str):
        kind = "string"
    elif isinstance(value, list):
        kind = "list"
    elif isinstance(value, dict):
        kind = "object"
    else:
        kind = type(value).__name__
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    if len(text) > 64:
        text = text[:61] + "..."
    return f"{kind} {text}"

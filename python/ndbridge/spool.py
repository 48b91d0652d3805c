"""Acked delivery's spool: the files where a publisher keeps every message it accepted until the
collector acknowledges it, byte for byte the spool of the Rust publisher
(``src/publisher/spool.rs``; the contract is ``docs/wire-format.md``, "Acknowledged delivery",
"The spool"). A Python publisher's spool is read by a Rust one, and the reverse.

A message is written to the spool before it is sent, so a publisher killed, or closed before
the collector took everything, leaves in its spool what the collector may lack; the next
publisher that opens the directory sends those messages again, under their own session and
``seq``, and ends their sessions. The collector drops what it already has, so each record is
stored once.

A spool is a directory of the publisher's own: a ``lock`` file (an exclusive ``flock``: one
publisher at a time) and segments named ``{id:016x}.spool``, numbered in the order they were
written. A segment holds messages of one session, in ``seq`` order::

    segment = "NDBSPOL1" | u32 length | source | u32 length | session | record*
    record  = u64 body length | u32 CRC-32 of body | body
    body    = u64 seq | u8 flags (1: the session's end) | u32 frames | u64 length * frames | frames

Integers are little-endian; the CRC is zlib's ``crc32``. A record cut short, or whose CRC does
not match, ends its segment (the publisher was killed while writing it, before sending it): a
reader cuts the file there. A write that fails (a full disk) is cut off at once, so the record
is not spooled; a segment where that fails too takes no more records. Reading a record back
checks its CRC. The spool is written without ``fsync``: it survives the publisher's process, not
a power cut of its machine.

The format's pure part (:func:`segment_head`, :func:`encode_record`, :func:`parse_body`,
:func:`parse_segment`) works on bytes; :class:`Spool` holds the directory.

>>> head = segment_head("w1", "ab12")
>>> head
b'NDBSPOL1\\x02\\x00\\x00\\x00w1\\x04\\x00\\x00\\x00ab12'
>>> record = encode_record(7, False, [b"{}", b"xyz"])
>>> record[:12].hex(" ")                     # body length 34, then the body's CRC-32
'22 00 00 00 00 00 00 00 ac 5a 0e 74'
>>> parse_body(record[12:])
(7, False, [b'{}', b'xyz'])
>>> segment = parse_segment(head + record + record[:-1])   # the last record torn
>>> segment.source, segment.session, [(r.seq, r.end) for r in segment.records], segment.whole
('w1', 'ab12', [(7, False)], 68)
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import struct
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple, Union

__all__ = ["MAGIC", "SEGMENT_BYTES", "DEFAULT_SPOOL_BYTES", "Spooled", "Recovered", "Segment",
           "segment_head", "encode_record", "parse_body", "parse_segment", "check_spool_bytes",
           "check_spool",
           "Spool"]

#: A segment's first bytes.
MAGIC = b"NDBSPOL1"

#: A segment takes new records until it is this long.
SEGMENT_BYTES = 64 << 20

#: The default of ``Publisher(spool_bytes=...)``: the most bytes a spool holds before sending
#: waits for acknowledgements.
DEFAULT_SPOOL_BYTES = 16 << 30

# A record's head: the body's length and its CRC.
_RECORD_HEAD = struct.Struct("<QI")
# The body's fixed part: seq, flags and frame count.
_BODY_HEAD = struct.Struct("<QBI")
# Flag of a record that ends its session.
_END = 1
# Most frames a spooled message may claim (a header and a few hundred arrays), as in Rust.
_MAX_FRAMES = 1 << 16
# Longest source or session in a segment's head, as in Rust.
_MAX_TEXT = 4096
# Records below this are written with one write call (as in Rust).
_ONE_WRITE_BYTES = 64 << 10

_log = logging.getLogger("ndbridge")


@dataclass(frozen=True)
class Spooled:
    """Where a spooled message lies, and its ``seq``.

    Attributes:
        seq: The message's ``seq`` in its session.
        segment: The id of its segment.
        offset: Offset of the record's body in its segment.
        len: The body's length: what the message weighs.
    """

    seq: int
    segment: int
    offset: int
    len: int


@dataclass
class Recovered:
    """The messages of an earlier publisher's session found in the spool.

    Attributes:
        source: The session's publisher id.
        session: The session id.
        messages: Its messages, in ``seq`` order.
        end: The ``seq`` of the session's end, if it is among them.
    """

    source: str
    session: str
    messages: List[Spooled] = field(default_factory=list)
    end: Optional[int] = None


@dataclass(frozen=True)
class SegmentRecord:
    """A whole record of a segment read by :func:`parse_segment`.

    Attributes:
        seq: The message's ``seq``.
        end: True for the session's end.
        offset: Offset of the record's body in the segment.
        len: The body's length.
    """

    seq: int
    end: bool
    offset: int
    len: int


@dataclass(frozen=True)
class Segment:
    """What :func:`parse_segment` read from a segment's bytes.

    Attributes:
        source: The publisher id of the segment's session.
        session: The session id.
        records: Every whole record, in order.
        whole: Bytes up to the end of the last whole record: what follows is torn or damaged.
    """

    source: str
    session: str
    records: List[SegmentRecord]
    whole: int


def segment_head(source: str, session: str) -> bytes:
    """A segment's first bytes: the magic, then `source` and `session`, each after its UTF-8
    length."""
    head = bytearray(MAGIC)
    for text in (source, session):
        data = text.encode("utf-8")
        head += struct.pack("<I", len(data)) + data
    return bytes(head)


def _record_head(seq: int, end: bool, frames: Sequence[Any]) -> Tuple[bytes, int]:
    """A record's head (body length, CRC) and its body's head, and the body's length."""
    body_head = _BODY_HEAD.pack(seq, _END if end else 0, len(frames)) + \
        b"".join(struct.pack("<Q", len(f)) for f in frames)
    crc = zlib.crc32(body_head)
    for frame in frames:
        crc = zlib.crc32(frame, crc)
    body_len = len(body_head) + sum(len(f) for f in frames)
    return _RECORD_HEAD.pack(body_len, crc) + body_head, body_len


def encode_record(seq: int, end: bool, frames: Sequence[Any]) -> bytes:
    """One record of a segment: message `seq` (`end`: the session's end) of `frames` (bytes or
    any buffers)."""
    head, _ = _record_head(seq, end, frames)
    return head + b"".join(bytes(f) for f in frames)


def parse_body(body: Any) -> Optional[Tuple[int, bool, List[bytes]]]:
    """A record body's ``seq``, end flag and frames; ``None`` when it is malformed (shorter or
    longer than its frame lengths say, or claiming more than 65,536 frames)."""
    view = memoryview(body).cast("B")
    if len(view) < _BODY_HEAD.size:
        return None
    seq, flags, count = _BODY_HEAD.unpack_from(view)
    if count > _MAX_FRAMES:
        return None
    at = _BODY_HEAD.size + 8 * count
    if at > len(view):
        return None
    frames = []
    for length, in struct.iter_unpack("<Q", view[_BODY_HEAD.size:at]):
        stop = at + length
        if stop > len(view):
            return None
        frames.append(bytes(view[at:stop]))
        at = stop
    if at != len(view):
        return None
    return seq, bool(flags & _END), frames


def _read_text(data: memoryview, at: int) -> Optional[Tuple[str, int]]:
    """A length-prefixed text of a segment's head at `at`, and the offset after it."""
    if at + 4 > len(data):
        return None
    length, = struct.unpack_from("<I", data, at)
    at += 4
    if length > _MAX_TEXT or at + length > len(data):
        return None
    try:
        return bytes(data[at:at + length]).decode("utf-8"), at + length
    except UnicodeDecodeError:
        return None


def parse_segment(data: Any) -> Optional[Segment]:
    """Reads a segment's bytes: its head and every whole record, up to the first one cut short
    or damaged (wrong CRC, malformed body). ``None`` when the head is not a segment's."""
    view = memoryview(data).cast("B")
    if bytes(view[:len(MAGIC)]) != MAGIC:
        return None
    source = _read_text(view, len(MAGIC))
    if source is None:
        return None
    session = _read_text(view, source[1])
    if session is None:
        return None
    at = session[1]
    records = []
    while at + _RECORD_HEAD.size <= len(view):
        length, crc = _RECORD_HEAD.unpack_from(view, at)
        offset = at + _RECORD_HEAD.size
        if length > len(view) - offset:
            break
        body = view[offset:offset + length]
        if zlib.crc32(body) != crc:
            break
        parsed = parse_body(body)
        if parsed is None:
            break
        records.append(SegmentRecord(parsed[0], parsed[1], offset, length))
        at = offset + length
    return Segment(source[0], session[0], records, at)


def _head_cut_short(data: Any) -> bool:
    """True when `data` is the start of a segment's head, cut short: its publisher was killed
    as it created the segment, which then holds no record (as in Rust)."""
    view = memoryview(data).cast("B")
    if len(view) < len(MAGIC):
        return MAGIC.startswith(bytes(view))
    if bytes(view[:len(MAGIC)]) != MAGIC:
        return False
    at = len(MAGIC)
    for _ in range(2):  # the source, then the session
        if at + 4 > len(view):
            return True
        length, = struct.unpack_from("<I", view, at)
        if length > _MAX_TEXT:
            return False
        at += 4 + length
        if at > len(view):
            return True
    return False


def check_spool_bytes(spool_bytes: Any) -> int:
    """`spool_bytes` if it is a positive integer below 2**64, else ``ValueError``."""
    if isinstance(spool_bytes, bool) or not isinstance(spool_bytes, int) \
            or not 0 < spool_bytes < 1 << 64:
        raise ValueError(f"spool_bytes: expected a positive integer (bytes), found "
                         f"{spool_bytes!r}")
    return spool_bytes


def check_spool(spool_dir: Any, spool_bytes: Any, delivery: str) -> Optional[str]:
    """Checks ``Publisher(spool_dir=..., spool_bytes=...)`` (``ValueError``, ``TypeError``):
    the directory as a ``str``, or ``None`` without a spool. A spool takes acked delivery: only
    acknowledgements tell what to keep."""
    check_spool_bytes(spool_bytes)
    if spool_dir is None:
        return None
    if not isinstance(spool_dir, (str, os.PathLike)):
        raise TypeError(f"spool_dir: expected a directory's path (str or os.PathLike) or None, "
                        f"found {type(spool_dir).__name__}")
    if delivery != "acked":
        raise ValueError(f"spool_dir: expected delivery='acked' (only acknowledgements tell "
                         f"what to keep), found delivery={delivery!r}")
    path = os.fspath(spool_dir)
    if not isinstance(path, str) or not path:
        raise ValueError(f"spool_dir: expected a directory's path, found {spool_dir!r}")
    return path


class _File:
    """One live segment file, open for appending and reading."""

    __slots__ = ("id", "source", "session", "fd", "path", "len", "last_seq", "retired")

    def __init__(self, id: int, source: str, session: str, fd: int, path: Path, len: int,
                 last_seq: Optional[int]) -> None:
        self.id = id
        self.source = source
        self.session = session
        self.fd = fd
        self.path = path
        #: Bytes up to the end of its last whole record.
        self.len = len
        self.last_seq = last_seq
        #: A failed write left bytes after :attr:`len` that could not be cut off: it takes no
        #: more records (a reader cuts the file at :attr:`len`).
        self.retired = False


def _segment_files(directory: Path) -> List[Tuple[int, Path]]:
    """The segment files in `directory` with their ids, in id order."""
    files = []
    for entry in os.scandir(directory):
        stem, dot, ext = entry.name.partition(".")
        if dot and ext == "spool":
            try:
                files.append((int(stem, 16), Path(entry.path)))
            except ValueError:
                continue
    files.sort()
    return files


#: How long a lock held by someone else is waited for before the spool counts as another
#: publisher's: a child process forked meanwhile shares the lock's open file until it runs its
#: program (or for its life, with multiprocessing's fork), and holds the lock that long.
_LOCK_WAIT_S = 0.25


def _lock_for_good(fd: int) -> None:
    """Takes the exclusive lock on `fd`, waiting out :data:`_LOCK_WAIT_S`;
    ``BlockingIOError`` if it stays held."""
    deadline = time.monotonic() + _LOCK_WAIT_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.005)


def _write_all(fd: int, data: Any) -> None:
    """Writes every byte of `data` (``os.write`` may write fewer)."""
    view = memoryview(data).cast("B")
    while view:
        view = view[os.write(fd, view):]


class Spool:
    """An open spool directory, locked for this publisher: what :meth:`open` returns.

    >>> import tempfile
    >>> directory = tempfile.mkdtemp()
    >>> spool, recovered = Spool.open(directory)
    >>> spooled = [spool.append("w1", "ab12", seq, False, [b"{}", b"data"]) for seq in range(3)]
    >>> spool.read(spooled[1]), recovered
    ([b'{}', b'data'], [])
    >>> spool.close()
    >>> spool, recovered = Spool.open(directory)     # the next publisher finds them
    >>> [(r.session, [m.seq for m in r.messages], r.end) for r in recovered]
    [('ab12', [0, 1, 2], None)]
    >>> spool.forget("ab12"); spool.close(); sorted(os.listdir(directory))
    ['lock']
    """

    def __init__(self, directory: Path, lock_fd: int) -> None:
        """Use :meth:`open`."""
        self._dir = directory
        self._lock_fd: Optional[int] = lock_fd
        self._segments: List[_File] = []
        self._next_id = 0
        self._bytes = 0
        #: A segment takes new records until it is this long (see :meth:`set_limit`).
        self._segment_bytes = SEGMENT_BYTES

    def set_limit(self, limit: int) -> None:
        """Sizes the segments for a spool of at most `limit` bytes: at most a quarter of it,
        so that acknowledged segments can go while the spool is full (a session's last segment
        stays until the session ends), as in Rust."""
        self._segment_bytes = min(max(limit // 4, 4096), SEGMENT_BYTES)

    @classmethod
    def open(cls, directory: Union[str, "os.PathLike[str]"]) -> Tuple["Spool", List[Recovered]]:
        """Opens (creating it if needed) and locks the spool `directory`, and reads what
        earlier publishers left there, session by session in the order they wrote it. Torn
        records at the end of a segment are cut off.

        Raises:
            BlockingIOError: Another publisher (Python or Rust) has the spool open.
            OSError: The directory or a file in it cannot be made, read or written, or a file
                named like a segment does not start as one.
        """
        directory = Path(directory)
        os.makedirs(directory, exist_ok=True)
        lock_fd = os.open(directory / "lock", os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            _lock_for_good(lock_fd)
        except BlockingIOError:
            os.close(lock_fd)
            raise BlockingIOError(errno.EWOULDBLOCK, f"spool {directory}: {directory} is the "
                                  f"spool of another publisher (it holds the lock "
                                  f"{directory / 'lock'})") from None
        except BaseException:
            os.close(lock_fd)
            raise
        spool = cls(directory, lock_fd)
        try:
            return spool, spool._recover()
        except BaseException:
            spool.close()
            raise

    def _recover(self) -> List[Recovered]:
        """Reads the segments left in the directory into :attr:`_segments`; returns their
        sessions. Empty segments are removed."""
        recovered: List[Recovered] = []
        for id, path in _segment_files(self._dir):
            self._next_id = max(self._next_id, id + 1)
            fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CLOEXEC)
            try:
                with open(fd, "rb", closefd=False) as f:
                    data = f.read()
                segment = parse_segment(data)
                if segment is None and _head_cut_short(data):
                    _log.warning("ndbridge: %s: a segment cut short in its head removed", path)
                    os.close(fd)
                    os.remove(path)
                    continue
                if segment is None:
                    raise OSError(errno.EINVAL, f"spool {self._dir}: {path.name}: expected "
                                  f"an ndbridge spool segment (starting {MAGIC.decode()}, "
                                  f"then its source and session), found {data[:24]!r}")
                if segment.whole < len(data):
                    _log.warning("ndbridge: %s: %d bytes after the last whole record cut off",
                                 path, len(data) - segment.whole)
                    os.ftruncate(fd, segment.whole)
                if not segment.records:
                    os.close(fd)
                    os.remove(path)
                    continue
            except BaseException:
                os.close(fd)
                raise
            found = next((r for r in recovered if r.session == segment.session), None)
            if found is None:
                found = Recovered(segment.source, segment.session)
                recovered.append(found)
            if found.end is None:
                found.end = next((r.seq for r in segment.records if r.end), None)
            found.messages.extend(Spooled(r.seq, id, r.offset, r.len) for r in segment.records)
            self._segments.append(_File(id, segment.source, segment.session, fd, path,
                                        segment.whole, segment.records[-1].seq))
            self._bytes += segment.whole
        return recovered

    @property
    def dir(self) -> Path:
        """The spool's directory."""
        return self._dir

    @property
    def bytes(self) -> int:
        """Bytes of the segments not yet removed."""
        return self._bytes

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has run."""
        return self._lock_fd is None

    def append(self, source: str, session: str, seq: int, end: bool,
               frames: Sequence[Any]) -> Spooled:
        """Writes message `seq` of `session` (from `source`; `end`: the session's end) to the
        session's last segment, or to a new one once that holds 64 MiB (or a quarter of the
        limit, :meth:`set_limit`).

        Raises:
            OSError: The record could not be written (the disk is full, say): it is not in the
                spool. Its bytes written so far are cut off; if they cannot be, the segment
                takes no more records.
        """
        segment = next((s for s in reversed(self._segments) if s.session == session), None)
        if segment is None or segment.retired or segment.len >= self._segment_bytes:
            segment = self._create(source, session)
        head, body_len = _record_head(seq, end, frames)
        try:
            if body_len < _ONE_WRITE_BYTES:
                _write_all(segment.fd, head + b"".join(bytes(f) for f in frames))
            else:
                _write_all(segment.fd, head)
                for frame in frames:
                    _write_all(segment.fd, frame)
        except BaseException:
            self._cut_back(segment)
            raise
        offset = segment.len + _RECORD_HEAD.size
        written = _RECORD_HEAD.size + body_len
        segment.len += written
        segment.last_seq = seq
        self._bytes += written
        return Spooled(seq, segment.id, offset, body_len)

    def _cut_back(self, segment: _File) -> None:
        """A write to `segment` failed, perhaps partway: cuts the file back to its last whole
        record, or, if that fails too, retires it (the next record goes to a new segment)."""
        try:
            os.ftruncate(segment.fd, segment.len)
        except OSError as e:
            segment.retired = True
            _log.warning("ndbridge: %s: a failed write could not be cut off (%s): the segment "
                         "takes no more records", segment.path, e)

    def read(self, message: Spooled) -> List[bytes]:
        """Reads a spooled message's frames back, checking the record's length and CRC.

        Raises:
            OSError: Its segment is gone, or it reads back damaged or malformed.
        """
        segment = next((s for s in self._segments if s.id == message.segment), None)
        if segment is None:
            raise OSError(f"spool {self._dir}: the segment {message.segment:016x} of message "
                          f"{message.seq} is gone")
        start = message.offset - _RECORD_HEAD.size
        data = os.pread(segment.fd, _RECORD_HEAD.size + message.len, start)
        where = f"spool {self._dir}: message {message.seq} at {start} in {segment.path}"
        if len(data) != _RECORD_HEAD.size + message.len:
            raise OSError(errno.EIO, f"{where}: expected a record of "
                          f"{_RECORD_HEAD.size + message.len} bytes, found {len(data)}")
        length, crc = _RECORD_HEAD.unpack_from(data)
        body = memoryview(data)[_RECORD_HEAD.size:]
        if length != message.len:
            raise OSError(errno.EIO, f"{where}: expected a body of {message.len} bytes, the "
                          f"record says {length}")
        found = zlib.crc32(body)
        if found != crc:
            raise OSError(errno.EIO, f"{where}: expected CRC-32 {crc:08x}, the body has "
                          f"{found:08x}")
        parsed = parse_body(body)
        if parsed is None:
            raise OSError(errno.EIO, f"{where}: its body of {message.len} bytes is malformed")
        return parsed[2]

    def settle(self, session: str, through: int) -> None:
        """Removes the segments of `session` whose messages all lie below `through`, but its
        last one: it tells the next publisher where the session stopped."""
        last = next((s for s in reversed(self._segments) if s.session == session), None)
        self._remove(lambda s: s.session == session and s is not last and
                     s.last_seq is not None and s.last_seq < through)

    def forget(self, session: str) -> None:
        """Removes every segment of `session`: all of it, its end included, is
        acknowledged."""
        self._remove(lambda s: s.session == session)

    def _remove(self, remove: Any) -> None:
        kept = []
        error: Optional[OSError] = None
        for segment in self._segments:
            if not remove(segment):
                kept.append(segment)
                continue
            self._bytes -= segment.len
            os.close(segment.fd)
            try:
                os.remove(segment.path)
            except OSError as e:
                error = e
        self._segments = kept
        if error is not None:
            raise error

    def _create(self, source: str, session: str) -> _File:
        """A new, empty segment of `session`, appended to :attr:`_segments`."""
        id = self._next_id
        self._next_id += 1
        path = self._dir / f"{id:016x}.spool"
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                     0o644)
        head = segment_head(source, session)
        try:
            _write_all(fd, head)
        except BaseException:
            os.close(fd)
            try:
                os.remove(path)
            except OSError:
                pass  # a head cut short: the next opener removes it
            raise
        segment = _File(id, source, session, fd, path, len(head), None)
        self._segments.append(segment)
        self._bytes += len(head)
        return segment

    def close(self) -> None:
        """Closes the segment files and releases the lock; the files stay. Closing twice is
        harmless."""
        for segment in self._segments:
            os.close(segment.fd)
        self._segments = []
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{len(self._segments)} segments, {self._bytes} bytes"
        return f"<ndbridge.spool.Spool {self._dir} {state}>"

"""Acked delivery's spool (``Publisher(..., delivery="acked", spool_dir=...)``), with the
pure-Python publisher and the native core's: records no collector acknowledged stay in the
spool and ``close`` says where; the next publisher on the spool, with a collector up, sends them
and ends their session, and leaves the spool with only its lock; a publisher killed while the
collector is away loses nothing; a spool written by one implementation (pure Python, the native
core, the Rust worker example) is recovered by the others. Then the file format itself
(:mod:`ndbridge.spool`): literal bytes, torn and damaged tails, the lock, segment rotation and
removal.

The contract is docs/wire-format.md, "Acknowledged delivery", "The spool"; the Rust side is
src/publisher/spool.rs.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import resource
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import time
import zlib
from pathlib import Path
from typing import Any, Dict, Iterator, List

import numpy as np
import pytest

import ndbridge
from ndbridge import DeliveryError, native, spool
from ndbridge.spool import MAGIC, SEGMENT_BYTES, Spool, encode_record, parse_body, \
    parse_segment, segment_head
from collector_proc import Collector
from golden_io import REPO, TARGET_DIR
# `collector`: the acked collector fixture, shared with test_acked.
from test_acked import NATIVE, NATIVE_IDS, check_stored_once, collector, free_endpoint  # noqa: F401

#: The Rust worker example (``cargo build --examples``).
WORKER = TARGET_DIR / "debug" / "examples" / "worker"

#: The longest wait for anything in these tests, in seconds.
WAIT_S = 20.0

needs_native = pytest.mark.skipif(not native.AVAILABLE, reason="the native core is not built")


def publisher(endpoint: str, use_native: bool, spool_dir: Path, **options: Any) -> Any:
    """An acked publisher with a spool: the Rust one (`use_native`) or the pure-Python one."""
    options.setdefault("timeout", WAIT_S)
    return ndbridge.Publisher(endpoint, delivery="acked", native=use_native,
                              spool_dir=spool_dir, **options)


def field(step: int) -> np.ndarray:
    """The array of record `step`: 1000 float64 values, different for every step."""
    return np.arange(1000, dtype=np.float64) * 0.5 + step


def leave_in_spool(spool_dir: Path, use_native: bool, count: int, source: str) -> str:
    """Sends `count` records with no collector there, closes (which must say they are kept in
    the spool); returns the session."""
    pub = publisher(free_endpoint(), use_native, spool_dir, timeout=0.5, source=source)
    for step in range(count):
        assert pub.send("u", field(step), attrs={"step": step}) == step
    with pytest.raises(DeliveryError) as raised:
        pub.close()
    e = raised.value
    assert (e.unsent, e.sent, e.kept) == (count, count, str(spool_dir)), str(e)
    assert f"kept in the spool {spool_dir}" in str(e), str(e)
    assert "the next publisher on the spool sends them" in str(e), str(e)
    return pub.session


def spooled(spool_dir: Path) -> Dict[str, List[int]]:
    """What the spool holds, as each session's seqs (read without locking it)."""
    found: Dict[str, List[int]] = {}
    for path in sorted(spool_dir.glob("*.spool")):
        segment = parse_segment(path.read_bytes())
        assert segment is not None, path
        found.setdefault(segment.session, []).extend(r.seq for r in segment.records)
    return found


@contextlib.contextmanager
def files_limited_to(size: int, lift_after: float) -> Iterator[None]:
    """For `lift_after` seconds, writes past `size` bytes of any file of this process fail
    (``EFBIG``, after a short write), as on a full disk: the publisher's spool, Python's or
    Rust's, cannot take a record. Started collectors are other processes, not limited."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, hard))
    lift = threading.Timer(lift_after, resource.setrlimit, (resource.RLIMIT_FSIZE, (soft, hard)))
    lift.start()
    try:
        yield
    finally:
        lift.join()
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)


def wait_spooled(spool_dir: Path, session: str, seqs: List[int]) -> None:
    """Waits until the spool holds `seqs` of `session` (the native publisher spools on its own
    thread)."""
    deadline = time.monotonic() + WAIT_S
    while spooled(spool_dir).get(session) != seqs:
        assert time.monotonic() < deadline, spooled(spool_dir)
        time.sleep(0.01)


# ---------------------------------------------------------------------------------------------
# Publishers against the Rust collector


@pytest.mark.parametrize("use_native", NATIVE, ids=NATIVE_IDS)
def test_without_a_collector_the_records_stay_in_the_spool(tmp_path: Path,
                                                           use_native: bool) -> None:
    spool_dir = tmp_path / "spool"
    session = leave_in_spool(spool_dir, use_native, 5, "left")
    # Every record, and no end: the session was not ended.
    assert spooled(spool_dir) == {session: [0, 1, 2, 3, 4]}
    opened, recovered = Spool.open(spool_dir)
    try:
        assert [(r.source, r.session, r.end) for r in recovered] == [("left", session, None)]
        frames = opened.read(recovered[0].messages[3])
        assert ndbridge.decode(frames)["u"].tolist() == field(3).tolist()
    finally:
        opened.close()


@pytest.mark.parametrize("use_native", NATIVE, ids=NATIVE_IDS)
def test_a_publisher_that_only_found_records_in_the_spool_says_they_stay_there(
        tmp_path: Path, use_native: bool) -> None:
    spool_dir = tmp_path / "spool"
    session = leave_in_spool(spool_dir, use_native, 3, "left")
    idle = publisher(free_endpoint(), use_native, spool_dir, timeout=0.3, source="idle")
    with pytest.raises(DeliveryError) as raised:
        idle.close()
    # The three records, and the end this publisher gave their session.
    e = raised.value
    assert (e.unsent, e.kept) == (4, str(spool_dir)), str(e)
    assert spooled(spool_dir) == {session: [0, 1, 2, 3]}


@pytest.mark.parametrize("use_native", NATIVE, ids=NATIVE_IDS)
def test_a_small_spool_fills_and_empties_as_the_collector_acknowledges(
        tmp_path: Path, collector: Collector, use_native: bool) -> None:
    # 300 records of 8 KB through a spool of 64 KiB: sending waits, again and again, for
    # acknowledged segments (of a quarter of the limit) to go.
    spool_dir = tmp_path / "spool"
    with publisher(collector.input, use_native, spool_dir, source="small",
                   spool_bytes=64 << 10, codec="raw") as pub:
        for step in range(300):
            pub.send("u", field(step))
    check_stored_once(collector.manifest(), collector.ends(), pub.session, 300)
    assert sorted(os.listdir(spool_dir)) == ["lock"]


@pytest.mark.parametrize("use_native", NATIVE, ids=NATIVE_IDS)
def test_a_send_while_the_spool_cannot_write_waits_for_it_and_nothing_is_lost(
        tmp_path: Path, collector: Collector, use_native: bool) -> None:
    # No collector at first: every record must be in the spool for the next publisher. For
    # 0.3 s the spool's segment cannot grow by a record (a full disk); the record sent then
    # waits for it, is spooled whole, and is not sent without the spool.
    spool_dir = tmp_path / "spool"
    pub = publisher(free_endpoint(), use_native, spool_dir, timeout=3, source="full",
                    codec="raw")
    for step in range(3):
        pub.send("u", field(step))
    wait_spooled(spool_dir, pub.session, [0, 1, 2])
    (segment,) = spool_dir.glob("*.spool")
    with files_limited_to(segment.stat().st_size + 1000, lift_after=0.3):
        assert pub.send("u", field(3)) == 3
    pub.send("u", field(4))
    with pytest.raises(DeliveryError) as raised:
        pub.close(timeout=0.2)
    assert (raised.value.unsent, raised.value.kept) == (5, str(spool_dir)), str(raised.value)
    assert spooled(spool_dir) == {pub.session: [0, 1, 2, 3, 4]}
    with publisher(collector.input, use_native, spool_dir, source="next"):
        pass
    check_stored_once(collector.manifest(), collector.ends(), pub.session, 5)
    stored = {x["seq"]: x for x in collector.manifest() if x["session"] == pub.session}
    assert np.array_equal(np.load(collector.out / stored[3]["path"]), field(3))
    assert sorted(os.listdir(spool_dir)) == ["lock"]


@pytest.mark.parametrize("use_native", NATIVE, ids=NATIVE_IDS)
def test_a_record_larger_than_the_spool_goes_once_the_spool_is_settled(
        tmp_path: Path, collector: Collector, use_native: bool) -> None:
    # 100 KB records through a spool of 64 KiB: each holds the session's last segment, which
    # stays until the session's end; the next record goes once it is acknowledged.
    spool_dir = tmp_path / "spool"
    big = np.arange(12_500, dtype=np.float64)
    with publisher(collector.input, use_native, spool_dir, source="big", timeout=3,
                   spool_bytes=64 << 10, codec="raw") as pub:
        for step in range(3):
            assert pub.send("u", big + step) == step
    check_stored_once(collector.manifest(), collector.ends(), pub.session, 3)
    assert sorted(os.listdir(spool_dir)) == ["lock"]


def test_close_counts_a_message_the_spool_could_not_give_back(
        tmp_path: Path, collector: Collector, monkeypatch: pytest.MonkeyPatch) -> None:
    # The end synthesized for the session left in the spool cannot be read back: it is never
    # sent, and close must not report success.
    spool_dir = tmp_path / "spool"
    leave_in_spool(spool_dir, False, 3, "left")
    read = Spool.read

    def read_but_ends(self: Spool, message: spool.Spooled) -> List[bytes]:
        if message.seq == 3:
            raise OSError(errno.EIO, "damaged")
        return read(self, message)

    monkeypatch.setattr(Spool, "read", read_but_ends)
    pub = publisher(collector.input, False, spool_dir, timeout=3)
    with pytest.raises(DeliveryError) as raised:
        pub.close()
    assert raised.value.unsent == 1, str(raised.value)
    assert "1 could not be read back from the spool" in str(raised.value), str(raised.value)
    assert pub.stats()["failed"] == 1


@pytest.mark.parametrize("use_native", NATIVE, ids=NATIVE_IDS)
def test_the_next_publisher_sends_what_the_last_one_left_and_ends_its_session(
        tmp_path: Path, collector: Collector, use_native: bool) -> None:
    spool_dir = tmp_path / "spool"
    first = leave_in_spool(spool_dir, use_native, 6, "first")
    with publisher(collector.input, use_native, spool_dir, source="second") as pub:
        for step in range(4):
            pub.send("u", field(100 + step))
        pub.flush()
        stats = pub.stats()
    # The first session's six records and its end (synthesized at seq 6) were sent again.
    assert stats["recovered"] == 7, stats
    assert stats["sent"] == 4, stats
    lines, ends = collector.manifest(), collector.ends()
    check_stored_once(lines, ends, first, 6)
    check_stored_once(lines, ends, pub.session, 4)
    stored = {(x["session"], x["seq"]): x for x in lines}
    assert np.array_equal(np.load(collector.out / stored[first, 5]["path"]), field(5))
    # Everything acknowledged, the ends too: the segments are gone.
    assert sorted(os.listdir(spool_dir)) == ["lock"]
    stats = collector.stop()["stats"]
    assert (stats["stored"], stats["sessions_not_ended"]) == (10, 0), stats


@pytest.mark.parametrize("use_native", NATIVE, ids=NATIVE_IDS)
def test_a_publisher_that_sends_nothing_of_its_own_still_delivers_the_spool(
        tmp_path: Path, collector: Collector, use_native: bool) -> None:
    spool_dir = tmp_path / "spool"
    first = leave_in_spool(spool_dir, use_native, 3, "first")
    pub = publisher(collector.input, use_native, spool_dir)
    pub.close()
    check_stored_once(collector.manifest(), collector.ends(), first, 3)
    assert sorted(os.listdir(spool_dir)) == ["lock"]


KILLED = textwrap.dedent("""
    import sys, time
    import numpy as np
    import ndbridge
    endpoint, spool_dir, use_native, count = sys.argv[1], sys.argv[2], sys.argv[3] == "1", \\
        int(sys.argv[4])
    pub = ndbridge.Publisher(endpoint, delivery="acked", native=use_native, spool_dir=spool_dir,
                             source="killed")
    for step in range(count):
        pub.send("u", np.arange(1000, dtype=np.float64) * 0.5 + step, attrs={"step": step})
    while pub.stats()["sent"] < count:   # the native publisher spools on its own thread
        time.sleep(0.01)
    print(pub.session, flush=True)
    time.sleep(60)
""")


@pytest.mark.parametrize("use_native", NATIVE, ids=NATIVE_IDS)
def test_a_publisher_killed_while_the_collector_is_away_loses_nothing(
        tmp_path: Path, use_native: bool) -> None:
    spool_dir = tmp_path / "spool"
    count = 40
    proc = subprocess.Popen([sys.executable, "-c", KILLED, free_endpoint(), str(spool_dir),
                             "1" if use_native else "0", str(count)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        session = proc.stdout.readline().strip()
        assert session, f"the publisher printed no session: {proc.stderr.read()}"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=WAIT_S)
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert spooled(spool_dir) == {session: list(range(count))}
    c = Collector(tmp_path / "out", forward=False, delivery="acked")
    try:
        with publisher(c.input, use_native, spool_dir) as pub:
            pub.send("u", field(0))
        check_stored_once(c.manifest(), c.ends(), session, count)
        check_stored_once(c.manifest(), c.ends(), pub.session, 1)
        stats = c.stop()["stats"]
        assert (stats["stored"], stats["sessions_not_ended"]) == (count + 1, 0), stats
    finally:
        c.kill()
    assert sorted(os.listdir(spool_dir)) == ["lock"]


@needs_native
@pytest.mark.parametrize("writer", [False, True], ids=["pure-to-native", "native-to-pure"])
def test_a_spool_written_by_one_python_path_is_recovered_by_the_other(
        tmp_path: Path, collector: Collector, writer: bool) -> None:
    spool_dir = tmp_path / "spool"
    first = leave_in_spool(spool_dir, writer, 5, "writer")
    with publisher(collector.input, not writer, spool_dir) as pub:
        pub.send("u", field(0))
        pub.flush()
        assert pub.stats()["recovered"] == 6
    check_stored_once(collector.manifest(), collector.ends(), first, 5)
    check_stored_once(collector.manifest(), collector.ends(), pub.session, 1)
    assert sorted(os.listdir(spool_dir)) == ["lock"]


def run_worker(endpoint: str, spool_dir: Path, steps: int, timeout: float) -> Any:
    """Runs the Rust worker example, acked with `spool_dir`; returns the finished process."""
    if not WORKER.exists():
        pytest.fail(f"{WORKER} is missing: run `cargo build --examples` in {REPO} first",
                    pytrace=False)
    return subprocess.run([str(WORKER), endpoint, "--acked", "--spool", str(spool_dir),
                           "--steps", str(steps), "--size", "8", "--source", "rust-worker",
                           "--timeout", str(timeout)],
                          capture_output=True, text=True, timeout=60)


def test_the_rust_worker_recovers_a_spool_written_by_python(tmp_path: Path,
                                                            collector: Collector) -> None:
    spool_dir = tmp_path / "spool"
    first = leave_in_spool(spool_dir, False, 5, "python")
    done = run_worker(collector.input, spool_dir, 2, WAIT_S)
    assert done.returncode == 0, done.stderr
    assert "6 recovered from the spool" in done.stdout, done.stdout
    check_stored_once(collector.manifest(), collector.ends(), first, 5)
    worker = [x for x in collector.manifest() if x["source"] == "rust-worker"]
    assert len(worker) == 2 * 2 + 1, worker  # two records a step, a `state` record at step 0
    check_stored_once(collector.manifest(), collector.ends(), worker[0]["session"], 5)
    assert sorted(os.listdir(spool_dir)) == ["lock"]


@pytest.mark.parametrize("use_native", NATIVE, ids=NATIVE_IDS)
def test_python_recovers_a_spool_written_by_the_rust_worker(tmp_path: Path, collector: Collector,
                                                            use_native: bool) -> None:
    spool_dir = tmp_path / "spool"
    done = run_worker(free_endpoint(), spool_dir, 2, 0.5)
    assert done.returncode != 0, "no collector: the worker's close must fail"
    assert "kept in the spool" in done.stderr, done.stderr
    (session, seqs), = spooled(spool_dir).items()
    assert seqs == [0, 1, 2, 3, 4]
    with publisher(collector.input, use_native, spool_dir) as pub:
        pub.flush()
        assert pub.stats()["recovered"] == 6
    check_stored_once(collector.manifest(), collector.ends(), session, 5)
    assert {x["source"] for x in collector.manifest()} == {"rust-worker"}
    assert sorted(os.listdir(spool_dir)) == ["lock"]


@pytest.mark.parametrize("holder", NATIVE, ids=NATIVE_IDS)
@pytest.mark.parametrize("second", NATIVE, ids=NATIVE_IDS)
def test_a_second_publisher_on_a_spool_in_use_is_refused(tmp_path: Path, holder: bool,
                                                         second: bool) -> None:
    spool_dir = tmp_path / "spool"
    first = publisher(free_endpoint(), holder, spool_dir, timeout=0)
    try:
        with pytest.raises(BlockingIOError, match="is the spool of another publisher"):
            publisher(free_endpoint(), second, spool_dir)
    finally:
        first.close()
    # Released by close: the next one opens it.
    publisher(free_endpoint(), second, spool_dir, timeout=0).close()


@pytest.mark.parametrize("use_native", NATIVE, ids=NATIVE_IDS)
@pytest.mark.parametrize("options, text", [
    ({"spool_dir": "x"}, "spool_dir: expected delivery='acked'"),
    ({"spool_dir": "x", "delivery": "acked", "spool_bytes": 0},
     "spool_bytes: expected a positive integer"),
    ({"delivery": "acked", "spool_bytes": -1}, "spool_bytes: expected a positive integer"),
])
def test_bad_spool_arguments_raise_value_error(tmp_path: Path, use_native: bool,
                                               options: Dict[str, Any], text: str) -> None:
    with pytest.raises(ValueError, match=text):
        ndbridge.Publisher("tcp://127.0.0.1:5555", native=use_native, **options)
    assert not (Path.cwd() / "x").exists()


@pytest.mark.parametrize("use_native", NATIVE, ids=NATIVE_IDS)
@pytest.mark.parametrize("delivery", ["fire-and-forget", "acked"])
def test_stats_count_recovered_messages_without_a_spool_too(use_native: bool,
                                                            delivery: str) -> None:
    with ndbridge.Publisher(free_endpoint(), delivery=delivery, native=use_native,
                            timeout=0) as pub:
        assert pub.stats()["recovered"] == 0


# ---------------------------------------------------------------------------------------------
# The file format


def test_a_segment_is_the_specified_bytes() -> None:
    body = (struct.pack("<QBI", 7, 0, 2) + struct.pack("<QQ", 2, 3) + b"{}" + b"xyz")
    assert body == (b"\x07\x00\x00\x00\x00\x00\x00\x00" b"\x00" b"\x02\x00\x00\x00"
                    b"\x02\x00\x00\x00\x00\x00\x00\x00" b"\x03\x00\x00\x00\x00\x00\x00\x00"
                    b"{}xyz")
    record = struct.pack("<QI", len(body), zlib.crc32(body)) + body
    assert encode_record(7, False, [b"{}", memoryview(b"xyz")]) == record
    head = b"NDBSPOL1" b"\x02\x00\x00\x00" b"w1" b"\x04\x00\x00\x00" b"ab12"
    assert segment_head("w1", "ab12") == head
    end = encode_record(8, True, [b"{}"])
    assert end[12 + 8] == 1, "flags: 1 for the session's end"
    segment = parse_segment(head + record + end)
    assert segment is not None
    assert [(r.seq, r.end, r.offset, r.len) for r in segment.records] == \
        [(7, False, len(head) + 12, len(body)), (8, True, len(head + record) + 12, 23)]
    assert segment.whole == len(head + record + end)
    assert MAGIC == b"NDBSPOL1" and SEGMENT_BYTES == 64 << 20


@pytest.mark.parametrize("body", [
    b"",                                                        # shorter than its fixed part
    struct.pack("<QBI", 0, 0, 1) + struct.pack("<Q", 5) + b"abcd",   # a frame cut short
    struct.pack("<QBI", 0, 0, 1) + struct.pack("<Q", 3) + b"abcd",   # a byte too many
    struct.pack("<QBI", 0, 0, 1 << 17),                         # claims too many frames
])
def test_a_malformed_body_is_refused(body: bytes) -> None:
    assert parse_body(body) is None


def write_three(directory: Path) -> Path:
    """A spool holding records 0, 1, 2 of session "s1"; returns its segment's path."""
    opened, _ = Spool.open(directory)
    try:
        for seq in range(3):
            opened.append("src", "s1", seq, False, [b'{"seq":%d}' % seq, bytes([seq]) * 100])
    finally:
        opened.close()
    (path,) = directory.glob("*.spool")
    assert path.name == "0000000000000000.spool"
    return path


def recovered_seqs(directory: Path) -> List[int]:
    opened, recovered = Spool.open(directory)
    opened.close()
    return [m.seq for r in recovered for m in r.messages]


def test_a_torn_record_ends_its_segment_and_is_cut_off(tmp_path: Path) -> None:
    path = write_three(tmp_path)
    whole = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(whole - 5)
    assert recovered_seqs(tmp_path) == [0, 1]
    record = 12 + 13 + 16 + len(b'{"seq":2}') + 100
    assert path.stat().st_size == whole - record, "the file is cut after the last whole record"


def test_a_record_with_a_wrong_crc_ends_its_segment(tmp_path: Path) -> None:
    path = write_three(tmp_path)
    data = bytearray(path.read_bytes())
    second = len(segment_head("src", "s1")) + (12 + 13 + 16 + len(b'{"seq":0}') + 100)
    data[second + 12 + 30] ^= 0xFF   # a byte of the second record's body
    path.write_bytes(bytes(data))
    assert recovered_seqs(tmp_path) == [0]
    assert path.stat().st_size == second


def test_a_segment_without_whole_records_is_removed(tmp_path: Path) -> None:
    path = write_three(tmp_path)
    with open(path, "r+b") as f:
        f.truncate(len(segment_head("src", "s1")) + 7)
    assert recovered_seqs(tmp_path) == []
    assert sorted(os.listdir(tmp_path)) == ["lock"]


@pytest.mark.parametrize("cut", [0, 5, 8, 10, 15])
def test_a_segment_cut_short_in_its_head_is_removed(tmp_path: Path, cut: int) -> None:
    # A publisher killed as it created the segment: "NDBSPOL1", the source's length and text.
    head = segment_head("src", "s1")
    assert len(head) > 15
    (tmp_path / "0000000000000001.spool").write_bytes(head[:cut])
    assert recovered_seqs(tmp_path) == []
    assert sorted(os.listdir(tmp_path)) == ["lock"]


def test_a_file_named_like_a_segment_that_is_not_one_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "0000000000000003.spool").write_bytes(b"NOTASPOOL")
    with pytest.raises(OSError, match="expected an ndbridge spool segment"):
        Spool.open(tmp_path)
    # The failed open released the lock.
    fd = os.open(tmp_path / "lock", os.O_WRONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(fd)


def test_one_spool_opener_at_a_time(tmp_path: Path) -> None:
    first, _ = Spool.open(tmp_path)
    with pytest.raises(BlockingIOError, match="is the spool of another publisher"):
        Spool.open(tmp_path)
    first.close()
    Spool.open(tmp_path)[0].close()


def test_segments_rotate_and_settle_but_a_session_keeps_its_last(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spool, "SEGMENT_BYTES", 1000)
    opened, _ = Spool.open(tmp_path)
    half = [bytes(500)]
    for seq in range(5):
        opened.append("src", "s1", seq, False, half)
    opened.append("src", "s2", 0, True, [b"{}"])
    names = sorted(p.name for p in tmp_path.glob("*.spool"))
    assert len(names) == 4, f"two records of half a segment fill one: {names}"
    opened.settle("s1", 5)
    assert len(list(tmp_path.glob("*.spool"))) == 2, "s1's last segment and s2's stay"
    opened.forget("s1")
    opened.close()
    reopened, recovered = Spool.open(tmp_path)
    reopened.close()
    assert [(r.session, r.end) for r in recovered] == [("s2", 0)]
    assert reopened.bytes == len(segment_head("src", "s2")) + len(encode_record(0, True, [b"{}"]))


def test_a_write_that_fails_partway_leaves_the_segment_whole(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    opened, _ = Spool.open(tmp_path)
    for seq in range(2):
        opened.append("src", "s1", seq, False, [b"{}", bytes(100)])
    (path,) = tmp_path.glob("*.spool")
    whole = path.stat().st_size
    write = os.write

    def full_disk(fd: int, data: Any) -> int:
        if os.fstat(fd).st_size == whole:   # half of the record goes, then the disk is full
            return write(fd, memoryview(data)[:len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(os, "write", full_disk)
        with pytest.raises(OSError, match="No space left"):
            opened.append("src", "s1", 2, False, [b"{}", bytes(100)])
    assert path.stat().st_size == whole, "the bytes written are cut off"
    assert opened.bytes == whole
    # The next record goes to the same segment, after the last whole one.
    later = opened.append("src", "s1", 2, False, [b"{}", b"later"])
    assert opened.read(later) == [b"{}", b"later"]
    assert len(list(tmp_path.glob("*.spool"))) == 1
    opened.close()
    assert recovered_seqs(tmp_path) == [0, 1, 2]


def test_a_segment_whose_failed_write_cannot_be_cut_off_takes_no_more_records(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    opened, _ = Spool.open(tmp_path)
    opened.append("src", "s1", 0, False, [b"{}", bytes(100)])
    (first,) = tmp_path.glob("*.spool")
    write = os.write

    def torn(fd: int, data: Any) -> int:
        write(fd, memoryview(data)[:10])
        raise OSError(errno.EIO, "Input/output error")

    def refused(fd: int, length: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    with monkeypatch.context() as patch:
        patch.setattr(os, "write", torn)
        patch.setattr(os, "ftruncate", refused)
        with pytest.raises(OSError, match="Input/output error"):
            opened.append("src", "s1", 1, False, [b"{}", bytes(100)])
    # The torn bytes stay in the first segment; the record goes to a new one.
    later = opened.append("src", "s1", 1, False, [b"{}", b"later"])
    assert later.segment == 1
    assert opened.read(later) == [b"{}", b"later"]
    opened.close()
    assert recovered_seqs(tmp_path) == [0, 1]
    assert parse_segment(first.read_bytes()).records[-1].seq == 0


def test_reading_back_a_damaged_record_raises(tmp_path: Path) -> None:
    path = write_three(tmp_path)
    opened, recovered = Spool.open(tmp_path)
    try:
        second = recovered[0].messages[1]
        assert opened.read(second) == [b'{"seq":1}', bytes([1]) * 100]
        data = bytearray(path.read_bytes())
        data[second.offset + second.len - 1] ^= 0xFF   # the last byte of its array
        path.write_bytes(bytes(data))
        with pytest.raises(OSError, match="expected CRC-32"):
            opened.read(second)
        shorter = spool.Spooled(second.seq, second.segment, second.offset, second.len - 1)
        with pytest.raises(OSError, match=f"expected a body of {second.len - 1} bytes"):
            opened.read(shorter)
        assert opened.read(recovered[0].messages[0]) == [b'{"seq":0}', bytes(100)]
    finally:
        opened.close()

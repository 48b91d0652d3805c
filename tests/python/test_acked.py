"""Acked delivery (``Publisher(..., delivery="acked")``), with the native core's publisher and
the pure-Python one: against a real ``ndbridge collect --delivery acked`` every record is stored
once and acknowledged, a record the collector refuses is reported, a missing collector is
reported, and a collector killed with SIGKILL and restarted on the same ``--out`` and port loses
nothing and stores nothing twice. Then the protocol's parts: the acknowledgement parser and the
window (:mod:`ndbridge.acked`), and the publishers against a pyzmq ROUTER playing the collector
(window full, acknowledgements of other sessions or malformed, resending after a reconnect).

The contract is docs/wire-format.md, "Acknowledged delivery".
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np
import pytest
import zmq

import ndbridge
from ndbridge import DeliveryError, VersionError, WireError, native
from ndbridge.acked import (DEFAULT_WINDOW_BYTES, MAX_UNACKED, PER_MESSAGE_BYTES, Ack, Window,
                            parse_ack)
from collector_proc import Collector, restart_endpoint
from golden_io import bind_loopback, socket

#: The publishers under test: the pure-Python one always, the Rust one when the core is built.
NATIVE = [False] + ([True] if native.AVAILABLE else [])
NATIVE_IDS = ["pure", "native"][:len(NATIVE)]

#: The longest wait for anything in these tests, in seconds.
WAIT_S = 20.0


def publisher(endpoint: str, use_native: bool, **options: Any) -> Any:
    """An acked publisher to `endpoint`: the Rust one (`use_native`) or the pure-Python one."""
    options.setdefault("timeout", WAIT_S)
    options.setdefault("source", "acked")
    return ndbridge.Publisher(endpoint, delivery="acked", native=use_native, **options)


def field(step: int) -> np.ndarray:
    """The array of record `step`: 1000 float64 values, different for every step."""
    return np.arange(1000, dtype=np.float64) * 0.5 + step


def check_stored_once(lines: List[Dict[str, Any]], ends: List[Dict[str, Any]], session: str,
                      count: int) -> None:
    """The manifest's `lines` hold each of the session's seqs 0..count-1 exactly once, and
    `ends` its end, once, at seq `count`."""
    seqs = sorted(x["seq"] for x in lines if x["session"] == session)
    assert seqs == list(range(count)), \
        f"stored seqs: {len(seqs)} lines, missing {sorted(set(range(count)) - set(seqs))[:10]}, " \
        f"twice {sorted({s for s in seqs if seqs.count(s) > 1})[:10]}"
    ended = [e for e in ends if e["session"] == session]
    assert [e["seq"] for e in ended] == [count], ended


def free_endpoint() -> str:
    """A loopback endpoint nobody listens at: a port just bound and released."""
    ctx = zmq.Context()
    try:
        sock = ctx.socket(zmq.ROUTER)
        endpoint = bind_loopback(sock)
        sock.close(linger=0)
    finally:
        ctx.term()
    return endpoint


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[Collector]:
    c = Collector(tmp_path / "out", forward=False, delivery="acked")
    try:
        yield c
    finally:
        c.kill()


# ---------------------------------------------------------------------------------------------
# Against the Rust collector


@pytest.mark.parametrize("use_native", NATIVE, ids=NATIVE_IDS)
def test_every_record_is_stored_once_and_acknowledged(collector: Collector,
                                                      use_native: bool) -> None:
    count = 200
    with publisher(collector.input, use_native) as pub:
        for step in range(count):
            assert pub.send("u", field(step), attrs={"step": step}) == step
        pub.flush()
        assert pub.pending == 0, "flush returns once every record is acknowledged"
        # Acknowledged means stored: the manifest has every record now.
        assert sorted(x["seq"] for x in collector.manifest()) == list(range(count))
    assert pub.closed and pub.pending == 0
    if use_native:
        stats = pub.stats()
        assert (stats["sent"], stats["delivered"], stats["refused"]) == (count, count, 0), stats
    # close returned: the end is acknowledged too, so it is in the manifest already.
    check_stored_once(collector.manifest(), collector.ends(), pub.session, count)
    for line in collector.manifest()[::50]:
        stored = np.load(collector.out / line["path"])
        assert np.array_equal(stored, field(line["seq"])), line
    stats = collector.stop()["stats"]
    assert (stats["stored"], stats["rejected"], stats["sessions_not_ended"]) == (count, 0, 0), \
        stats


@pytest.mark.parametrize("use_native", NATIVE, ids=NATIVE_IDS)
def test_a_record_over_the_collectors_limit_is_refused_and_reported(
        tmp_path: Path, use_native: bool) -> None:
    c = Collector(tmp_path / "out", ["--max-array-mib", "1"], forward=False, delivery="acked")
    try:
        pub = publisher(c.input, use_native)
        for step in range(3):
            pub.send("u", field(step))
        pub.send("big", np.zeros(300_000))  # 2.4 MB: over --max-array-mib 1
        for step in range(4, 6):
            pub.send("u", field(step))
        with pytest.raises(DeliveryError, match=r"\b1 record refused by the collector") as info:
            pub.close()
        assert pub.closed
        err = info.value
        assert (err.acked, err.refused, err.unsent, err.sent) == (True, 1, 0, 6), str(err)
        assert "not acknowledged" not in str(err)
        # The others are stored, and the session ended (its end settled after the refusal).
        lines = c.manifest()
        assert sorted(x["seq"] for x in lines) == [0, 1, 2, 4, 5]
        # The refusal is kept, for a collector restarted on the same store.
        assert [(x["seq"], x["refused"]) for x in c.refusals()] == [(3, "array_too_large")]
        assert [e["seq"] for e in c.ends()] == [6]
        stats = c.stop()["stats"]
        assert stats["rejected"] == 1, stats
    finally:
        c.kill()


@pytest.mark.parametrize("use_native", NATIVE, ids=NATIVE_IDS)
def test_without_a_collector_close_says_so(use_native: bool) -> None:
    pub = publisher(free_endpoint(), use_native, timeout=1)
    for step in range(3):
        pub.send("u", field(step))
    start = time.monotonic()
    with pytest.raises(DeliveryError, match="no collector") as info:
        pub.close()
    assert 0.9 < time.monotonic() - start < 10
    err = info.value
    assert (err.acked, err.connected, err.unsent, err.refused, err.dropped) == \
        (True, False, 3, 0, True), str(err)
    assert pub.closed


@pytest.mark.parametrize("use_native", NATIVE, ids=NATIVE_IDS)
def test_a_fire_and_forget_collector_takes_nothing_from_an_acked_publisher(
        tmp_path: Path, use_native: bool) -> None:
    """ZeroMQ refuses a DEALER at a PULL socket: both ends must use the same mode."""
    c = Collector(tmp_path / "out", forward=False)
    try:
        pub = publisher(c.input, use_native, timeout=1)
        pub.send("u", field(0))
        with pytest.raises(DeliveryError, match="no collector.*--delivery acked"):
            pub.close()
        assert c.manifest() == []
    finally:
        c.kill()


@pytest.mark.parametrize("use_native", NATIVE, ids=NATIVE_IDS)
def test_a_collector_killed_and_restarted_loses_nothing(tmp_path: Path,
                                                        use_native: bool) -> None:
    out = tmp_path / "out"
    count, kill_at, restart_at = 600, 200, 400
    first = Collector(out, forward=False, delivery="acked", bind=restart_endpoint())
    second: Optional[Collector] = None
    try:
        with publisher(first.input, use_native, timeout=30) as pub:
            for step in range(count):
                if step == kill_at:
                    # Mid-stream: some records are stored, others on their way or waiting for
                    # the group commit; the kill loses those.
                    first.wait_records("acked", 50)
                    first.kill()
                if step == restart_at:
                    second = Collector(out, forward=False, delivery="acked", bind=first.input)
                pub.send("u", field(step), attrs={"step": step})
            assert second is not None
        # close returned without an error: every record and the end are acknowledged.
        check_stored_once(second.manifest(), second.ends(), pub.session, count)
        if use_native:
            stats = pub.stats()
            assert (stats["delivered"], stats["refused"]) == (count, 0), stats
        stats = second.stop()["stats"]
        assert stats["rejected"] == 0, stats
        for line in second.manifest()[::100]:
            assert np.array_equal(np.load(out / line["path"]), field(line["seq"])), line
    finally:
        first.kill()
        if second is not None:
            second.kill()


@pytest.mark.parametrize("use_native", NATIVE, ids=NATIVE_IDS)
@pytest.mark.parametrize("options, message", [
    ({"delivery": "ack"}, r"delivery: expected one of \['fire-and-forget', 'acked'\], found 'ack'"),
    ({"delivery": None}, "delivery: expected one of"),
    ({"delivery": "acked", "window_bytes": 0}, "window_bytes: expected a positive integer"),
    ({"delivery": "acked", "window_bytes": -1}, "window_bytes: expected a positive integer"),
    ({"delivery": "acked", "window_bytes": 1.5}, "window_bytes: expected a positive integer"),
    ({"delivery": "acked", "window_bytes": True}, "window_bytes: expected a positive integer"),
    ({"delivery": "acked", "kind": zmq.PUB}, "delivery='acked': expected kind=zmq.PUSH"),
    ({"delivery": "acked", "bind": True}, "bind=True"),
])
def test_bad_arguments_raise_value_error(use_native: bool, options: Dict[str, Any],
                                         message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ndbridge.Publisher("tcp://127.0.0.1:5555", native=use_native, **options)


@pytest.mark.skipif(not native.AVAILABLE, reason="the native core is not built")
def test_the_rust_publisher_takes_one_collector_in_acked_delivery() -> None:
    with pytest.raises(ValueError, match="delivery='acked': expected one collector's endpoint"):
        native.Publisher(["tcp://127.0.0.1:5555", "tcp://127.0.0.1:5556"], delivery="acked")


# ---------------------------------------------------------------------------------------------
# Acknowledgements


def test_an_ack_reads_and_ignores_fields_it_does_not_know() -> None:
    assert parse_ack(b'{"v":1,"session":"6f1c2a9e0b3d4c5f","through":120,"refused":1}') == \
        Ack("6f1c2a9e0b3d4c5f", 120, 1)
    later = b'{"credit":100,"refused":0,"through":2,"session":"a","v":1,"more":{"x":[1]}}'
    assert parse_ack(later) == Ack("a", 2, 0)
    assert parse_ack(memoryview(b'{"v":1,"session":"","through":0,"refused":0}')) == \
        Ack("", 0, 0)
    top = 2**64 - 1
    assert parse_ack(json.dumps({"v": 1, "session": "s", "through": top, "refused": top})
                     .encode()).through == top


@pytest.mark.parametrize("frame, where, text", [
    (b"", "ack", "expected a JSON object"),
    (b"\xff", "ack", "expected a JSON object"),
    (b"{", "ack", "expected a JSON object"),
    (b"[1]", "ack", "found list"),
    (b"{}", "ack.v", "missing"),
    (b'{"v":1,"through":1,"refused":0}', "ack.session", "missing"),
    (b'{"v":1,"session":7,"through":1,"refused":0}', "ack.session", "expected a string"),
    (b'{"v":1,"session":"a","refused":0}', "ack.through", "missing"),
    (b'{"v":1,"session":"a","through":1}', "ack.refused", "missing"),
    (b'{"v":1,"session":"a","through":-1,"refused":0}', "ack.through", "found number -1"),
    (b'{"v":1,"session":"a","through":1.5,"refused":0}', "ack.through", "found number 1.5"),
    (b'{"v":1,"session":"a","through":"1","refused":0}', "ack.through", "found string"),
    (b'{"v":1,"session":"a","through":true,"refused":0}', "ack.through", "found boolean"),
    (b'{"v":1,"session":"a","through":18446744073709551616,"refused":0}', "ack.through",
     "expected an integer from 0 to 2\\*\\*64 - 1"),
    (b'{"v":1,"session":"a","through":1,"refused":2}', "ack.refused",
     "expected at most `through`, found 2 \\(through 1\\)"),
    (b'{"v":1,"session":"a","through":1,"through":2,"refused":0}', "ack.through",
     "expected each field once"),
])
def test_a_malformed_ack_says_what_is_wrong(frame: bytes, where: str, text: str) -> None:
    with pytest.raises(WireError, match=text) as info:
        parse_ack(frame)
    assert info.value.field == where


def test_an_ack_of_another_version_is_refused() -> None:
    with pytest.raises(VersionError, match="acknowledgement version 2 is not supported") as info:
        parse_ack(b'{"v":2,"session":"a","through":1,"refused":0}')
    assert (info.value.field, info.value.version) == ("ack.v", 2)


# ---------------------------------------------------------------------------------------------
# The window


def ack(through: int, refused: int = 0) -> Ack:
    return Ack("s", through, refused)


def test_a_full_window_waits_for_acknowledgements() -> None:
    window = Window(limit_bytes=3000)
    assert window.has_room(10_000), "an empty window takes any message"
    window.push(0, [b"{}", bytes(1000)])
    window.push(1, [b"{}", bytes(1000)])
    assert window.bytes == 2 * (1002 + PER_MESSAGE_BYTES)
    assert not window.has_room(1002)
    assert window.has_room(3000 - window.bytes - PER_MESSAGE_BYTES)
    assert window.acknowledge(ack(1)) == 1
    assert window.has_room(1002)
    assert (len(window), window.first_seq, window.through) == (1, 1, 1)
    assert window.frames(1) == [b"{}", bytes(1000)]
    assert window.frames(0) is None and window.frames(2) is None


def test_old_or_repeated_acknowledgements_settle_nothing() -> None:
    window = Window()
    for seq in range(5):
        window.push(seq, [b"x" * 10])
    assert window.acknowledge(ack(3, 1)) == 3
    assert window.acknowledge(ack(3, 1)) == 0
    assert window.acknowledge(ack(2, 0)) == 0
    assert (len(window), window.through, window.refused) == (2, 3, 1)
    assert window.count_below(5) == 2 and window.count_below(4) == 1
    # The session's end settles at its seq, one past the last record.
    window.push(5, [b"end"])
    assert window.count_below(5) == 2, "the end is no record"
    assert window.acknowledge(ack(6, 1)) == 3
    assert len(window) == 0 and window.bytes == 0 and window.first_seq is None


def test_the_window_holds_at_most_its_message_count() -> None:
    assert MAX_UNACKED == 65_536 and DEFAULT_WINDOW_BYTES == 512 << 20
    window = Window(limit_bytes=2**63)
    for seq in range(MAX_UNACKED - 1):
        window.push(seq, [])
    assert window.has_room(0)
    window.push(MAX_UNACKED - 1, [])
    assert not window.has_room(0)
    assert window.acknowledge(ack(1)) == 1 and window.has_room(0)


# ---------------------------------------------------------------------------------------------
# The publishers against a ROUTER that plays the collector


class FakeCollector:
    """A ROUTER socket on `endpoint` (default a free loopback port) that receives messages and
    sends acknowledgements as the test tells it."""

    def __init__(self, ctx: zmq.Context, endpoint: str = "tcp://127.0.0.1:*") -> None:
        self.sock = socket(ctx, zmq.ROUTER)
        deadline = time.monotonic() + WAIT_S
        while True:
            try:
                self.sock.bind(endpoint)
                break
            except zmq.ZMQError as e:
                # ZeroMQ closes a socket's listener after close() returns: the port of a
                # collector just closed may still be taken for a moment.
                if e.errno != zmq.EADDRINUSE or time.monotonic() > deadline:
                    self.sock.close(linger=0)
                    raise
                time.sleep(0.02)
        self.endpoint = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.peer: Optional[bytes] = None

    def recv(self, count: int) -> List[Tuple[int, bool]]:
        """The next `count` messages as ``(seq, end)``, each decoded."""
        got = []
        for _ in range(count):
            assert self.sock.poll(int(WAIT_S * 1000), zmq.POLLIN), f"only {got} came"
            peer, *frames = self.sock.recv_multipart()
            self.peer = peer
            rec = ndbridge.decode(frames)
            got.append((rec.seq, rec.end))
        return got

    def recv_until(self, run: List[int]) -> List[int]:
        """The seqs of the messages received until the last ones are `run`."""
        got: List[int] = []
        while got[-len(run):] != run:
            got += [seq for seq, _ in self.recv(1)]
        return got

    def quiet(self, ms: int = 300) -> bool:
        """True when nothing comes for `ms`."""
        return not self.sock.poll(ms, zmq.POLLIN)

    def ack(self, frame: bytes) -> None:
        assert self.peer is not None
        self.sock.send_multipart([self.peer, frame])

    def ack_through(self, session: str, through: int, refused: int = 0) -> None:
        self.ack(json.dumps({"v": 1, "session": session, "through": through,
                             "refused": refused}).encode())

    def close(self) -> None:
        self.sock.close(linger=0)


def test_a_full_window_stops_send_until_acknowledged(ctx: zmq.Context) -> None:
    fake = FakeCollector(ctx)
    # Room for two records of 8000 bytes (and their headers), not three.
    pub = publisher(fake.endpoint, False, window_bytes=20_000, timeout=0.5)
    try:
        pub.send("u", field(0))
        pub.send("u", field(1))
        assert fake.recv(2) == [(0, False), (1, False)]
        start = time.monotonic()
        with pytest.raises(DeliveryError, match="record 2 was not sent") as info:
            pub.send("u", field(2))
        assert time.monotonic() - start >= 0.45
        assert (info.value.unsent, info.value.dropped, pub.seq, pub.pending) == (2, False, 2, 2)
        assert fake.quiet()
        fake.ack_through(pub.session, 1)
        assert pub.send("u", field(2)) == 2, "an acknowledgement gives room back"
        assert fake.recv(1) == [(2, False)]
        assert pub.pending == 2
        fake.ack_through(pub.session, 3)
        pub.flush(timeout=5)
        assert pub.pending == 0
    finally:
        pub._abandon()
        fake.close()


@pytest.mark.parametrize("use_native", NATIVE, ids=NATIVE_IDS)
def test_only_valid_acknowledgements_of_the_session_count(ctx: zmq.Context,
                                                          use_native: bool) -> None:
    fake = FakeCollector(ctx)
    pub = publisher(fake.endpoint, use_native, timeout=0.5)
    try:
        for step in range(3):
            pub.send("u", field(step))
        assert fake.recv(3) == [(0, False), (1, False), (2, False)]
        session = pub.session
        for frame in (b"not json", b'{"v":2,"session":"%s","through":3,"refused":0}' % session
                      .encode(), b'{"v":1,"session":"%s","through":3,"refused":4}' % session
                      .encode()):
            fake.ack(frame)
        fake.ack_through("0000000000000000", 3)  # another session's
        fake.ack_through(session, 1)
        with pytest.raises(DeliveryError, match="2 records of 3 not acknowledged") as info:
            pub.flush()
        assert (info.value.unsent, info.value.dropped) == (2, False)
        fake.ack_through(session, 3, refused=1)
        pub.flush(timeout=5)
        # close: the end, at seq 3, is settled by through 4.
        with pytest.raises(DeliveryError, match="1 record refused") as info:
            _close_answering(pub, fake, through=4, refused=1)
        assert (info.value.unsent, info.value.refused) == (0, 1)
    finally:
        pub._abandon()
        fake.close()


@pytest.mark.parametrize("use_native", NATIVE, ids=NATIVE_IDS)
def test_an_out_of_date_acknowledgement_does_no_harm(ctx: zmq.Context, use_native: bool) -> None:
    fake = FakeCollector(ctx)
    pub = publisher(fake.endpoint, use_native, timeout=2)
    try:
        for step in range(3):
            pub.send("u", field(step))
        assert fake.recv(3) == [(0, False), (1, False), (2, False)]
        fake.ack_through(pub.session, 3, refused=1)
        fake.ack_through(pub.session, 2)  # out of date (and counting fewer refused)
        fake.ack_through(pub.session, 1)
        wait_pending(pub, 0, timeout_s=3)
        pub.flush()
        with pytest.raises(DeliveryError, match="1 record refused") as info:
            _close_answering(pub, fake, through=4, refused=1)
        assert (info.value.unsent, info.value.refused) == (0, 1)
    finally:
        pub._abandon()
        fake.close()


def wait_pending(pub: Any, count: int, timeout_s: float = WAIT_S) -> None:
    """Waits until `pub` has read the acknowledgements that leave `count` records pending."""
    deadline = time.monotonic() + timeout_s
    while pub.pending != count:
        assert time.monotonic() < deadline, f"pending {pub.pending}, expected {count}"
        time.sleep(0.01)


def _close_answering(pub: Any, fake: FakeCollector, through: int, refused: int) -> None:
    """Closes `pub` while `fake` acknowledges its session's end (`through`, `refused`): close
    blocks this thread, so the end is answered from a thread of its own."""
    def answer() -> None:
        fake.recv(1)
        fake.ack_through(pub.session, through, refused)

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    try:
        pub.close()
    finally:
        thread.join(WAIT_S)


@pytest.mark.parametrize("use_native", NATIVE, ids=NATIVE_IDS)
def test_a_new_connection_gets_the_window_again_oldest_first(ctx: zmq.Context,
                                                             use_native: bool) -> None:
    fake = FakeCollector(ctx)
    endpoint = fake.endpoint
    pub = publisher(endpoint, use_native, timeout=1)
    try:
        for step in range(5):
            pub.send("u", field(step))
        assert fake.recv(5) == [(step, False) for step in range(5)]
        fake.ack_through(pub.session, 2)
        wait_pending(pub, 3)
        # The collector goes; another comes on the same port.
        fake.close()
        fake = FakeCollector(ctx, endpoint)
        # The publisher notices the new connection while it waits for acknowledgements.
        with pytest.raises(DeliveryError, match="3 records of 5 not acknowledged"):
            pub.flush()
        # What is not acknowledged comes again, oldest first; nothing acknowledged does. (A
        # connection made to the old socket while ZeroMQ closed it may have carried part of a
        # first pass, which then comes too: a collector drops what it has.)
        got = fake.recv_until([2, 3, 4])
        assert min(got) == 2, got
        fake.ack_through(pub.session, 5)
        pub.send("u", field(5))
        got = fake.recv_until([5])
        assert set(got[:-1]) <= {2, 3, 4}, got
        fake.ack_through(pub.session, 6)
        pub.flush(timeout=5)
        _close_answering(pub, fake, through=7, refused=0)
    finally:
        pub._abandon()
        fake.close()

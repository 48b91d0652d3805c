"""The end of a publisher session: the message a pure-Python publisher sends when it closes
(after its records, its ``seq`` the number of records, counted nowhere as a record), its
canonical header bytes, and what the decoders accept and refuse in the ``end`` field."""

from __future__ import annotations

import json
import time
from typing import Any, Callable, List

import numpy as np
import pytest
import zmq

import ndbridge
from ndbridge import HeaderError, native, net
from golden_io import bind_loopback, socket

#: The end message of docs/wire-format.md, byte for byte as ndbridge writes it.
CANONICAL = (b'{"v":1,"name":"end","source":"w1","session":"ab12","seq":7,"time":1.5,'
             b'"arrays":[],"end":true}')

#: The header's keys in the order ndbridge writes them for an end message.
END_KEYS = ["v", "name", "source", "session", "seq", "time", "arrays", "end"]

#: One array entry, for an end message that wrongly carries an array.
ENTRY = {"name": "u", "dtype": "<f8", "shape": [1], "order": "C", "codec": "raw", "nbytes": 8}

#: The decoders that must agree: the pure one, and the Rust one when it is built.
DECODERS = [ndbridge.decode] + ([native.decode] if native.AVAILABLE else [])
DECODER_IDS = ["python", "rust"][:len(DECODERS)]

Decode = Callable[..., ndbridge.Record]


def drain(pull: zmq.Socket, quiet_ms: int = 300) -> List[ndbridge.Record]:
    """Every message `pull` receives until none comes for `quiet_ms`, decoded."""
    got = []
    while pull.poll(quiet_ms, zmq.POLLIN):
        got.append(ndbridge.recv(pull))
    return got


def raw_messages(pull: zmq.Socket, quiet_ms: int = 300) -> List[List[bytes]]:
    """Every message `pull` receives until none comes for `quiet_ms`, as frame bytes."""
    got = []
    while pull.poll(quiet_ms, zmq.POLLIN):
        got.append(pull.recv_multipart())
    return got


def pure_publisher(endpoint: str, timeout: float = 10, **options: Any) -> net.Publisher:
    """The pure-Python publisher, whether or not the native core is built."""
    return ndbridge.Publisher(endpoint, source="w1", timeout=timeout, native=False, **options)


# ---------------------------------------------------------------------------------------------
# The publisher sends it


@pytest.mark.parametrize("count", [1, 5])
def test_a_publisher_ends_its_session_after_its_records(ctx: zmq.Context, count: int) -> None:
    pull = socket(ctx, zmq.PULL)
    with pure_publisher(bind_loopback(pull)) as pub:
        for i in range(count):
            assert pub.send("u", np.full(3, float(i)), attrs={"i": i}) == i
        pub.flush()
        assert (pub.seq, pub.pending) == (count, 0)
    # The end is no record: the counts stay those of the records.
    assert (pub.closed, pub.seq, pub.pending) == (True, count, 0)
    got = drain(pull)
    assert [(r.name, r.seq, r.end) for r in got] == \
        [("u", i, False) for i in range(count)] + [("end", count, True)]
    assert {(r.source, r.session) for r in got} == {("w1", pub.session)}
    end = got[-1]
    assert (end.arrays, end.attrs, "attrs" in end.header) == ({}, {}, False)
    for i, rec in enumerate(got[:-1]):
        assert np.array_equal(rec["u"], np.full(3, float(i))) and rec.attrs == {"i": i}


def test_the_end_header_is_written_in_canonical_form(ctx: zmq.Context) -> None:
    pull = socket(ctx, zmq.PULL)
    before = time.time()
    with pure_publisher(bind_loopback(pull)) as pub:
        pub.send("u", np.zeros(2))
        pub.send("u", np.ones(2))
    messages = raw_messages(pull)
    assert len(messages) == 3
    end = messages[-1]
    assert len(end) == 1, "an end message is its header alone: no buffer frames"
    keys = json.loads(end[0], object_pairs_hook=lambda pairs: [k for k, _ in pairs])
    assert keys == END_KEYS
    t = json.loads(end[0])["time"]
    assert before <= t <= time.time()
    # The example of the format with this session's values put in: the same bytes.
    expected = CANONICAL.replace(b'"session":"ab12","seq":7,"time":1.5',
                                 f'"session":"{pub.session}","seq":2,"time":{json.dumps(t)}'
                                 .encode())
    assert end[0] == expected
    assert ndbridge.encode_end("w1", pub.session, 2, time=t) == expected


def test_encode_end_writes_the_canonical_example() -> None:
    assert ndbridge.encode_end("w1", "ab12", 7, time=1.5) == CANONICAL
    for bad in (-1, 2**64, 1.0, True):
        with pytest.raises(ValueError, match="seq: expected a non-negative integer below 2"):
            ndbridge.encode_end("w1", "ab12", bad)  # type: ignore[arg-type]


def test_an_ordinary_record_writes_no_end() -> None:
    frames = ndbridge.encode("u", np.arange(3.0), source="w1", session="ab12", seq=7, time=1.5)
    assert "end" not in json.loads(bytes(frames[0]))
    assert ndbridge.decode(frames).end is False


def test_a_publisher_without_records_sends_no_end(ctx: zmq.Context) -> None:
    """No receiver has heard of a session without records (docs/wire-format.md)."""
    pull = socket(ctx, zmq.PULL)
    with pure_publisher(bind_loopback(pull)) as pub:
        pass
    assert (pub.closed, pub.seq, pub.pending) == (True, 0, 0)
    assert drain(pull) == []


def test_a_publisher_without_records_closes_at_once_without_a_collector() -> None:
    # A port just bound and released: nobody listens, and an end would wait out the timeout.
    probe = zmq.Context()
    try:
        pull = probe.socket(zmq.PULL)
        endpoint = bind_loopback(pull)
        pull.close(linger=0)
    finally:
        probe.term()
    pub = pure_publisher(endpoint, timeout=10)
    start = time.monotonic()
    pub.close()
    assert pub.closed and pub.seq == 0
    assert time.monotonic() - start < 2


def test_an_end_after_the_collector_left_is_dropped_without_an_error(ctx: zmq.Context) -> None:
    pull = socket(ctx, zmq.PULL)
    pub = pure_publisher(bind_loopback(pull), timeout=0.5)
    for i in range(3):
        pub.send("u", np.full(4, float(i)))
    assert [r.seq for r in (ndbridge.recv(pull) for _ in range(3))] == [0, 1, 2]
    pull.close(linger=0)  # the collector goes away once it has every record
    pub.close()  # the records went out: nothing to report, whatever became of the end
    assert pub.closed and pub.seq == 3


def test_a_close_interrupted_while_ending_sends_one_end(ctx: zmq.Context,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    pull = socket(ctx, zmq.PULL)
    pub = pure_publisher(bind_loopback(pull))
    pub.send("u", np.zeros(3))
    wait = net._wait
    interrupted: List[object] = []

    def wait_interrupted_once(tracker: zmq.MessageTracker, deadline: Any) -> bool:
        if pub._end is not None and tracker is pub._end.tracker and not interrupted:
            interrupted.append(tracker)
            raise KeyboardInterrupt
        return wait(tracker, deadline)

    monkeypatch.setattr(net, "_wait", wait_interrupted_once)
    with pytest.raises(KeyboardInterrupt):
        pub.close()
    assert interrupted and not pub.closed
    with pytest.raises(ValueError, match="is closed"):
        pub.send("u", np.zeros(3))  # nothing may follow the end
    pub.close()  # as the exit hook would: the same end, not a second one
    assert [(r.name, r.seq, r.end) for r in drain(pull)] == [("u", 0, False), ("end", 1, True)]


def test_a_pub_socket_sends_no_end(ctx: zmq.Context) -> None:
    """Subscribers of a PUB socket get no end (as from the Rust publisher): only a stream to
    a collector ends."""
    sub = ndbridge.Subscriber("tcp://127.0.0.1:*", bind=True, context=ctx)
    try:
        with pure_publisher(sub.endpoint, kind=zmq.PUB) as pub:
            deadline = time.monotonic() + 10
            while True:  # until the subscription has reached the publisher
                pub.send("u", np.zeros(1))
                try:
                    sub.recv(timeout_ms=50)
                    break
                except TimeoutError:
                    assert time.monotonic() < deadline, "the subscription never took effect"
        rest: List[ndbridge.Record] = []
        while True:
            try:
                rest.append(sub.recv(timeout_ms=300))
            except TimeoutError:
                break
    finally:
        sub.close()
    assert all(not r.end and r.name == "u" for r in rest), rest


# ---------------------------------------------------------------------------------------------
# Decoders read it, and refuse what the format does not allow


@pytest.mark.parametrize("decode", DECODERS, ids=DECODER_IDS)
def test_the_canonical_end_decodes(decode: Decode) -> None:
    rec = decode([CANONICAL])
    assert (rec.end, rec.name, rec.source, rec.session, rec.seq, rec.time) == \
        (True, "end", "w1", "ab12", 7, 1.5)
    assert (rec.arrays, rec.attrs, rec.header["end"]) == ({}, {}, True)


@pytest.mark.parametrize("decode", DECODERS, ids=DECODER_IDS)
@pytest.mark.parametrize("value, found", [(b"1", "number 1"), (b'"yes"', 'string "yes"'),
                                          (b"null", "null"), (b"0", "number 0"),
                                          (b'"true"', 'string "true"')])
def test_an_end_that_is_not_a_boolean_is_refused(decode: Decode, value: bytes,
                                                 found: str) -> None:
    header = CANONICAL.replace(b'"end":true', b'"end":' + value)
    with pytest.raises(HeaderError) as info:
        decode([header])
    assert info.value.field == "end"
    assert str(info.value) == f"end: expected true or false, found {found}"


@pytest.mark.parametrize("decode", DECODERS, ids=DECODER_IDS)
@pytest.mark.parametrize("with_buffer", [True, False], ids=["buffer", "no-buffer"])
def test_an_end_with_arrays_is_refused(decode: Decode, with_buffer: bool) -> None:
    header = json.loads(CANONICAL)
    header["arrays"] = [ENTRY]
    frames = [json.dumps(header).encode()] + ([np.zeros(1).tobytes()] if with_buffer else [])
    with pytest.raises(HeaderError) as info:
        decode(frames)
    assert info.value.field == "end"
    assert str(info.value) == "end: expected no arrays (an end message carries none), found 1 " \
                              "array entry"


@pytest.mark.parametrize("decode", DECODERS, ids=DECODER_IDS)
def test_end_false_is_an_ordinary_record(decode: Decode) -> None:
    frames = ndbridge.encode("u", np.arange(3.0), codec="raw", source="w1", session="ab12",
                             seq=7, time=1.5)
    header = json.loads(bytes(frames[0]))
    header["end"] = False
    rec = decode([json.dumps(header).encode()] + [bytes(f) for f in frames[1:]])
    assert (rec.end, rec.name, rec.seq, rec.header["end"]) == (False, "u", 7, False)
    assert np.array_equal(rec["u"], np.arange(3.0))


def test_a_subscriber_receives_an_end(ctx: zmq.Context) -> None:
    pub = socket(ctx, zmq.PUB)
    endpoint = bind_loopback(pub)
    with ndbridge.Subscriber(endpoint, context=ctx) as sub:
        deadline = time.monotonic() + 10
        while True:  # until the subscription has reached the PUB socket
            pub.send_multipart([b"end", CANONICAL])
            try:
                rec = sub.recv(timeout_ms=50)
                break
            except TimeoutError:
                assert time.monotonic() < deadline, "the subscription never took effect"
    assert (rec.end, rec.name, rec.seq, rec.arrays) == (True, "end", 7, {})

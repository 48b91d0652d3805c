"""send/recv, Publisher and Subscriber over real sockets on ephemeral loopback ports."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import zmq

import ndbridge
from golden_io import (GOLDEN, RECV_TIMEOUT_MS, bind_loopback, check_case, load_manifest,
                       push_pull, read_frames, socket, spec_recv_arrays, sync_pub_sub)

FIELD = np.add.outer(np.linspace(0, 1, 300), np.linspace(0, 2, 200))  # smooth: compresses


def test_publisher_to_pull(ctx: zmq.Context) -> None:
    pull = socket(ctx, zmq.PULL)
    endpoint = bind_loopback(pull)
    small = np.arange(10, dtype="<i4")
    with ndbridge.Publisher(endpoint, source="sim:1", codec="zstd", context=ctx) as pub:
        assert len(pub.session) == 16 and int(pub.session, 16) >= 0
        assert pub.send("u", FIELD, attrs={"step": 0}) == 0
        assert pub.send("state", {"u": FIELD, "n": small}) == 1
        assert pub.send("u", np.asfortranarray(FIELD)) == 2
        assert pub.seq == 3
    records = [ndbridge.recv(pull) for _ in range(3)]
    assert [r.seq for r in records] == [0, 1, 2]
    assert {r.session for r in records} == {pub.session}
    assert {r.source for r in records} == {"sim:1"}
    assert records[0].attrs == {"step": 0}
    assert records[0].header["arrays"][0]["codec"] == "zstd"
    assert records[0].header["arrays"][0]["filters"] == ["shuffle"]  # zstd shuffles by default
    assert np.array_equal(records[1]["n"], small)
    for r in (records[0], records[1], records[2]):
        assert np.array_equal(r["u"], FIELD)
    assert records[2].header["arrays"][0]["order"] == "F"


def test_publisher_defaults(ctx: zmq.Context) -> None:
    pull = socket(ctx, zmq.PULL)
    pub = ndbridge.Publisher(bind_loopback(pull), context=ctx)
    try:
        assert pub.socket.type == zmq.PUSH and pub.codec == "auto"
        pub.send("x", np.float32(1.5))
        rec = ndbridge.recv(pull)
    finally:
        pub.close()
    assert rec.source == ndbridge.default_source() and rec["x"] == np.float32(1.5)
    assert pub.socket.closed
    pub.close()  # closing twice is harmless
    other = ndbridge.Publisher("tcp://127.0.0.1:1", context=ctx)
    assert other.session != pub.session
    other.close(timeout=0)


def test_publisher_binds_and_spec_snippet_reads_it(ctx: zmq.Context) -> None:
    recv_arrays = spec_recv_arrays()
    with ndbridge.Publisher("tcp://127.0.0.1:*", bind=True, codec="zstd", context=ctx) as pub:
        pull = socket(ctx, zmq.PULL)
        pull.connect(pub.endpoint)
        pub.send("u", FIELD)
        header, arrays = recv_arrays(pull)
    assert header["seq"] == 0 and header["arrays"][0]["filters"] == ["shuffle"]
    assert np.array_equal(arrays["u"], FIELD)


def test_send_on_pub_prepends_the_topic(ctx: zmq.Context) -> None:
    sub = socket(ctx, zmq.SUB)
    pub = socket(ctx, zmq.PUB)
    sub.setsockopt(zmq.SUBSCRIBE, "température".encode())
    pub.connect(bind_loopback(sub))
    sync_pub_sub(pub, sub)  # subscriptions arrive in order: this one is active too
    ndbridge.send(pub, "température", np.arange(4.0), codec="raw")
    frames = sub.recv_multipart()
    assert frames[0] == "température".encode() and len(frames) == 3
    assert ndbridge.decode(frames[1:], topic=frames[0].decode()).name == "température"


def test_send_without_topic_on_push_and_copy_settings(ctx: zmq.Context) -> None:
    push, pull = push_pull(ctx)
    big = np.arange(100_000, dtype="<f8")  # 800 kB: sent without a copy
    for threshold in (ndbridge.net.COPY_THRESHOLD, None, 0):
        ndbridge.send(push, "big", big, codec="raw", copy_threshold=threshold)
        frames = pull.recv_multipart(copy=False)
        assert len(frames) == 2
        rec = ndbridge.decode(frames)
        assert np.array_equal(rec["big"], big)
        # The received array is a view on the received frame.
        assert rec["big"].ctypes.data == np.frombuffer(frames[1].buffer, np.uint8).ctypes.data


def test_recv_on_sub_checks_topic(ctx: zmq.Context) -> None:
    sub = socket(ctx, zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    pub = socket(ctx, zmq.PUB)
    pub.connect(bind_loopback(sub))
    sync_pub_sub(pub, sub)
    pub.send_multipart([b"v"] + ndbridge.encode("u", np.arange(3)))
    with pytest.raises(ndbridge.WireError, match="topic: expected the record name 'u', found 'v'"):
        ndbridge.recv(sub)
    ndbridge.send(pub, "u", np.arange(3))
    assert ndbridge.recv(sub).name == "u"


def test_pub_to_subscriber_filters_exact_names(ctx: zmq.Context) -> None:
    pub = socket(ctx, zmq.PUB)
    endpoint = bind_loopback(pub)
    with ndbridge.Subscriber(endpoint, names=["temp", "p"], timeout_ms=RECV_TIMEOUT_MS,
                             context=ctx) as sub:
        sync_pub_sub(pub, sub.socket)
        for i in range(3):
            ndbridge.send(pub, "temperature", np.arange(3), seq=i)  # shares the prefix "temp"
            ndbridge.send(pub, "pressure", np.arange(3), seq=i)     # shares the prefix "p"
            ndbridge.send(pub, "temp", np.full(2, i), seq=i)
            ndbridge.send(pub, "p", np.full(2, -i), seq=i)
        got = [(r.name, r.seq) for r in (sub.recv() for _ in range(6))]
        assert got == [("temp", 0), ("p", 0), ("temp", 1), ("p", 1), ("temp", 2), ("p", 2)]
        with pytest.raises(TimeoutError, match="no record within 100 ms"):
            sub.recv(timeout_ms=100)


def test_publisher_pub_to_subscriber_iterates_until_idle(ctx: zmq.Context) -> None:
    with ndbridge.Subscriber("tcp://127.0.0.1:*", bind=True, timeout_ms=300,
                             context=ctx) as sub, \
            ndbridge.Publisher(sub.endpoint, kind=zmq.PUB, context=ctx) as pub:
        sync_pub_sub(pub.socket, sub.socket)
        for step in range(5):
            pub.send("u", FIELD + step, attrs={"step": step})
        start = time.monotonic()
        records = list(sub)  # ends after 300 ms without a record
        assert time.monotonic() - start < 5
    assert [r.attrs["step"] for r in records] == list(range(5))
    assert [r.seq for r in records] == list(range(5))
    assert all(np.array_equal(r["u"], FIELD + i) for i, r in enumerate(records))


def test_subscriber_single_name_and_golden_vectors(ctx: zmq.Context) -> None:
    cases = [c for c in load_manifest(GOLDEN) if c["name"] in ("f8_F_zstd_shuffle",
                                                               "multi_array_attrs")]
    pub = socket(ctx, zmq.PUB)
    endpoint = bind_loopback(pub)
    with ndbridge.Subscriber(endpoint, names="state", timeout_ms=RECV_TIMEOUT_MS,
                             context=ctx) as sub:
        sync_pub_sub(pub, sub.socket)
        for case in cases:
            frames = read_frames(GOLDEN / case["file"])
            pub.send_multipart([json.loads(frames[0])["name"].encode()] + frames)
        rec = sub.recv()
        assert rec.name == "state"
        check_case(GOLDEN, cases[1], rec.arrays)


def test_subscriber_raises_wire_error_and_continues(ctx: zmq.Context) -> None:
    pub = socket(ctx, zmq.PUB)
    with ndbridge.Subscriber(bind_loopback(pub), timeout_ms=RECV_TIMEOUT_MS, context=ctx) as sub:
        sync_pub_sub(pub, sub.socket)
        pub.send_multipart([b"u", b"{not json"])
        ndbridge.send(pub, "u", np.arange(3))
        with pytest.raises(ndbridge.HeaderError, match="header: expected a JSON object"):
            sub.recv()
        assert np.array_equal(sub.recv()["u"], np.arange(3))


def test_bad_socket_arguments(ctx: zmq.Context) -> None:
    with pytest.raises(ValueError, match="kind: expected zmq.PUSH"):
        ndbridge.Publisher("tcp://127.0.0.1:1", kind=zmq.PULL, context=ctx)
    with pytest.raises(zmq.ZMQError):
        ndbridge.Publisher("not-an-endpoint", context=ctx)
    with pytest.raises(TypeError, match="names: expected record names as strings"):
        ndbridge.Subscriber("tcp://127.0.0.1:1", names=[b"u"], context=ctx)

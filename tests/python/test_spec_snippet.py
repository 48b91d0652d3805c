"""The reader snippet in docs/wire-format.md, run verbatim from the document, decodes every
golden vector sent through real pyzmq sockets: PUSH -> PULL, and PUB -> SUB with a topic frame."""

from __future__ import annotations

import json

import zmq

from golden_io import (GOLDEN, bind_loopback, check_case, load_manifest, push_pull, read_frames,
                       socket, spec_recv_arrays, spec_snippet_source, sync_pub_sub)

CASES = load_manifest(GOLDEN)


def test_snippet_is_the_documented_reader() -> None:
    source = spec_snippet_source()
    assert source.startswith("import json, numpy as np, zmq, zstandard\n")
    assert "def recv_arrays(sock):" in source


def test_snippet_push_pull(ctx: zmq.Context) -> None:
    recv_arrays = spec_recv_arrays()
    push, pull = push_pull(ctx)
    for case in CASES:
        frames = read_frames(GOLDEN / case["file"])
        push.send_multipart(frames)
        header, arrays = recv_arrays(pull)
        assert header == json.loads(frames[0])
        check_case(GOLDEN, case, arrays)


def test_snippet_pub_sub_with_topic(ctx: zmq.Context) -> None:
    recv_arrays = spec_recv_arrays()
    sub = socket(ctx, zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    pub = socket(ctx, zmq.PUB)
    pub.sndhwm = 0  # queue everything: the test sends all cases before reading any
    sub.rcvhwm = 0
    pub.connect(bind_loopback(sub))
    sync_pub_sub(pub, sub)
    sent = []
    for case in CASES:
        frames = read_frames(GOLDEN / case["file"])
        topic = json.loads(frames[0])["name"].encode("utf-8")
        pub.send_multipart([topic] + frames)
        sent.append(case)
    for case in sent:
        header, arrays = recv_arrays(sub)
        check_case(GOLDEN, case, arrays)


def test_snippet_reads_null_filters_as_none(ctx: zmq.Context) -> None:
    """`"filters": null` means absent (the spec's table): the snippet reads such headers too."""
    recv_arrays = spec_recv_arrays()
    push, pull = push_pull(ctx)
    nulled = 0
    for case in CASES:
        frames = read_frames(GOLDEN / case["file"])
        header = json.loads(frames[0])
        for meta in header["arrays"]:
            if not meta.get("filters"):
                meta["filters"] = None
                nulled += 1
        push.send_multipart([json.dumps(header).encode()] + frames[1:])
        got, arrays = recv_arrays(pull)
        assert got == header
        check_case(GOLDEN, case, arrays)
    assert nulled > 0

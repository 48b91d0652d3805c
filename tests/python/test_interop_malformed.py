"""Malformed messages from Python into a real `ndbridge collect` process: each class is
rejected and counted by kind in the final statistics, the collector keeps running, every valid
message around the bad ones is stored, and nothing malformed reaches a subscriber. The Python
decoder rejects the same messages, so both sides agree on what is malformed."""

from __future__ import annotations

import collections
import json
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple, Type

import numpy as np
import pytest
import zmq
import zstandard

import ndbridge
from collector_proc import PROBE, Collector, bit_exact, recv_records, wait_subscribed
from golden_io import socket
from ndbridge import CodecError, FrameError, HeaderError, LimitError, VersionError

U = np.arange(12, dtype="<f8").reshape(3, 4)


def base_header() -> Dict[str, Any]:
    return {"v": 1, "name": "bad", "source": "bad", "session": "0bad", "seq": 0, "time": 1.5,
            "arrays": [{"name": "u", "dtype": "<f8", "shape": [3, 4], "order": "C",
                        "codec": "raw", "nbytes": 96}]}


def with_entry(**changes: Any) -> Dict[str, Any]:
    h = base_header()
    h["arrays"][0].update(changes)
    return h


def without(path: str) -> Dict[str, Any]:
    h = base_header()
    node: Any = h
    *parents, last = path.split(".")
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    del node[last]
    return h


def js(header: Any) -> bytes:
    return json.dumps(header).encode()


def zstd(data: bytes, content_size: bool = True) -> bytes:
    return zstandard.ZstdCompressor(write_content_size=content_size,
                                    write_checksum=True).compress(data)


def corrupt(frame: bytes) -> bytes:
    """A zstd frame whose last byte (part of the content checksum) is flipped."""
    return frame[:-1] + bytes([frame[-1] ^ 0xFF])


def too_many_arrays() -> List[bytes]:
    h = base_header()
    entry = dict(h["arrays"][0], shape=[0], nbytes=0)
    h["arrays"] = [dict(entry, name=f"a{i}") for i in range(4097)]
    return [js(h)] + [b""] * 4097


GOOD = U.tobytes()
ZSTD_U = zstd(GOOD)

#: (label, frames, the collector's error kind, the Python decoder's error class).
MALFORMED: List[Tuple[str, List[bytes], str, Type[ndbridge.WireError]]] = [
    ("not_json", [b"{not json", GOOD], "not_json", HeaderError),
    ("empty_header", [b""], "not_json", HeaderError),
    ("not_an_object", [b"[1, 2]"], "not_an_object", HeaderError),
    ("missing_seq", [js(without("seq")), GOOD], "missing_field", HeaderError),
    ("missing_dtype", [js(without("arrays.0.dtype")), GOOD], "missing_field", HeaderError),
    ("unknown_version", [js(dict(base_header(), v=2)), GOOD], "unsupported_version",
     VersionError),
    ("bad_dtype", [js(with_entry(dtype="<f16")), GOOD], "bad_dtype", HeaderError),
    ("object_dtype", [js(with_entry(dtype="|O8")), GOOD], "bad_dtype", HeaderError),
    ("negative_shape", [js(with_entry(shape=[3, -4])), GOOD], "invalid_field", HeaderError),
    ("bad_order", [js(with_entry(order="A")), GOOD], "invalid_field", HeaderError),
    ("bad_codec", [js(with_entry(codec="lz4")), GOOD], "invalid_field", HeaderError),
    ("repeated_filter", [js(with_entry(filters=["shuffle", "shuffle"])), GOOD],
     "invalid_field", HeaderError),
    ("repeated_array_name", [js(dict(base_header(), arrays=base_header()["arrays"] * 2)),
                             GOOD, GOOD], "invalid_field", HeaderError),
    ("missing_buffer", [js(base_header())], "frame_count", FrameError),
    ("extra_frame", [js(base_header()), GOOD, GOOD], "frame_count", FrameError),
    ("nbytes_mismatch", [js(with_entry(nbytes=80)), GOOD[:80]], "nbytes_mismatch",
     HeaderError),
    ("short_buffer", [js(base_header()), GOOD[:95]], "buffer_length", FrameError),
    ("long_buffer", [js(base_header()), GOOD + b"\0"], "buffer_length", FrameError),
    ("zstd_garbage", [js(with_entry(codec="zstd")), b"garbage!" * 4], "zstd", CodecError),
    ("zstd_corrupt", [js(with_entry(codec="zstd")), corrupt(ZSTD_U)], "zstd", CodecError),
    ("zstd_size_mismatch", [js(with_entry(codec="zstd")), zstd(bytes(100))],
     "zstd_content_size", CodecError),
    ("zstd_size_missing", [js(with_entry(codec="zstd")), zstd(GOOD, content_size=False)],
     "zstd_content_size", CodecError),
    ("huge_nbytes", [js(with_entry(shape=[1 << 30], nbytes=8 << 30, codec="zstd")),
                     zstd(b"x")], "array_too_large", LimitError),
    ("header_too_large", [js(dict(base_header(), attrs={"pad": "x" * (1 << 20)})), GOOD],
     "header_too_large", LimitError),
    ("too_many_arrays", too_many_arrays(), "too_many_arrays", LimitError),
]


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[Collector]:
    c = Collector(tmp_path / "out")
    try:
        yield c
    finally:
        c.kill()  # a no-op once the test has stopped it


@pytest.mark.parametrize("label, frames, kind, error", MALFORMED,
                         ids=[m[0] for m in MALFORMED])
def test_python_decoder_rejects_the_same(label: str, frames: List[bytes], kind: str,
                                         error: Type[ndbridge.WireError]) -> None:
    with pytest.raises(error):
        ndbridge.decode(frames)


def test_collector_counts_each_rejection_and_stores_every_valid_message(
        collector: Collector, ctx: zmq.Context) -> None:
    valid = [np.arange(i + 1, dtype="<i4") * (i + 1) for i in range(len(MALFORMED) + 1)]
    with ndbridge.Subscriber(collector.forward, timeout_ms=10_000, context=ctx) as sub:
        wait_subscribed(sub, collector)
        push = socket(ctx, zmq.PUSH)
        push.connect(collector.input)
        for seq, array in enumerate(valid):
            ndbridge.send(push, "good", array, source="good", session="900d", seq=seq,
                          codec="zstd" if seq % 2 else "raw")
            if seq < len(MALFORMED):
                push.send_multipart(MALFORMED[seq][1])
        # Only the valid records come out of the forward socket, in order.
        forwarded = recv_records(sub, range(len(valid)), key=lambda rec: rec.seq)
        assert all(rec.name == "good" for rec in forwarded.values())
        for seq, array in enumerate(valid):
            bit_exact(forwarded[seq]["good"], array)
        with pytest.raises(TimeoutError):
            while sub.recv(timeout_ms=200).name == PROBE:
                pass
    lines = collector.wait_records("good", len(valid))
    probes = len(collector.wait_records("probe", 1))
    stats = collector.stop()["stats"]

    expected_kinds = collections.Counter(kind for _, _, kind, _ in MALFORMED)
    assert stats["errors"] == dict(expected_kinds)
    assert stats["rejected"] == len(MALFORMED)
    assert stats["stored"] == len(valid) + probes
    ended = stats["session_ends"]  # the probes' session
    assert stats["received"] == len(valid) + len(MALFORMED) + probes + ended
    good = stats["sources"]["good"]
    assert (good["messages"], good["gaps"], good["errors"]) == (len(valid), 0, {})
    # Rejections are counted under the header's source when it can be read, else under "?".
    by_source = sum(sum(s["errors"].values()) for s in stats["sources"].values())
    assert by_source == len(MALFORMED)
    assert set(stats["sources"]) <= {"good", "probe", "bad", "?"}

    assert sorted(line["seq"] for line in lines) == list(range(len(valid)))
    for line in lines:
        bit_exact(np.load(collector.out / line["path"]), valid[line["seq"]])


def test_collector_array_limit_is_configurable(tmp_path: Path, ctx: zmq.Context) -> None:
    c = Collector(tmp_path / "out", ["--max-array-mib", "1"])
    try:
        push = socket(ctx, zmq.PUSH)
        push.connect(c.input)
        ndbridge.send(push, "big", np.zeros((1 << 20) // 8 + 1), source="w", seq=0, codec="raw")
        ndbridge.send(push, "fits", np.zeros((1 << 20) // 8), source="w", seq=1, codec="raw")
        c.wait_records("w", 1)
        stats = c.stop()["stats"]
    finally:
        c.kill()
    assert stats["errors"] == {"array_too_large": 1} and stats["stored"] == 1
    # The Python decoder applies the same limit when told to.
    frames = ndbridge.encode("big", np.zeros((1 << 20) // 8 + 1), codec="raw")
    with pytest.raises(LimitError, match="max_array_bytes=1048576"):
        ndbridge.decode(frames, limits=ndbridge.Limits(max_array_bytes=1 << 20))


def test_invalid_boolean_bytes_are_rejected_by_both(collector: Collector,
                                                    ctx: zmq.Context) -> None:
    header = with_entry(dtype="|b1", shape=[4], nbytes=4)
    frames = [js(header), b"\x00\x01\x02\x01"]
    with pytest.raises(ndbridge.WireError, match="boolean elements must be bytes 0 or 1"):
        ndbridge.decode(frames)
    push = socket(ctx, zmq.PUSH)
    push.connect(collector.input)
    push.send_multipart(frames)
    ndbridge.send(push, "after", np.arange(3), source="good", seq=0)
    collector.wait_records("good", 1)
    stats = collector.stop()["stats"]
    assert stats["rejected"] == 1, stats

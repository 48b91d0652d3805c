"""The pure-Python publisher's automatic codec: its decisions, fixed in tests/data/pacing_cases.json."""

import json
import threading
import time
from pathlib import Path
from typing import List, Optional

import numpy as np
import pytest
import zmq

import ndbridge
from golden_io import bind_loopback
from ndbridge.pacing import Pacing

CASES = json.loads((Path(__file__).parents[1] / "data" / "pacing_cases.json").read_text())["cases"]


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_shared_case(case):
    p = Pacing()
    for step in case["steps"]:
        kind, args = step[0], step[1:]
        if kind == "send":
            p.observe_send(*args)
        elif kind == "compress":
            p.observe_compress(*args)
        elif kind == "compress?":
            assert p.should_compress() is args[0], step
        elif kind == "link_limited?":
            assert p.link_limited() is args[0], step
        elif kind == "sample?":
            assert p.wants_sample(args[0]) is args[1], step
        elif kind == "samples":
            calls, raw, expected = args
            assert sum(p.wants_sample(raw) for _ in range(calls)) == expected, step
        else:
            pytest.fail(f"unknown step {kind}")


def test_cases_cover_every_decision():
    kinds = {step[0] for case in CASES for step in case["steps"]}
    assert kinds == {"send", "compress", "compress?", "link_limited?", "sample?", "samples"}


# The pure-Python publisher on real sockets (the Rust publisher, which the native core gives
# Python, is tested in tests/integration/pacing.rs, with a slow link and a slow receiver told
# apart): on a network link, raw while the receiver keeps up, compressed once a slow receiver
# makes sends block (this rule cannot tell it from a slow link), raw for data that does not
# compress; on a local link, always raw.

SMOOTH = np.add.outer(np.linspace(0, 1, 250), np.sin(np.linspace(0, 9, 500)))  # 1 MB float64
NOISE = np.random.default_rng(3).integers(0, 1 << 62, 125_000, dtype=np.int64)


def codecs_seen(delay: float, records: int, link: Optional[str], array: np.ndarray) -> List[str]:
    """The codec of each of `records` records sent by a pure-Python publisher, told to be on
    `link`, to a receiver that takes `delay` seconds per record."""
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pull.rcvhwm = 2
    pull.rcvtimeo = 30_000
    endpoint = bind_loopback(pull)
    seen: List[str] = []

    def receive() -> None:
        for _ in range(records):
            rec = ndbridge.recv(pull)
            assert np.array_equal(rec["field"], array)
            seen.append(rec.header["arrays"][0]["codec"])
            time.sleep(delay)

    receiver = threading.Thread(target=receive)
    receiver.start()
    try:
        with ndbridge.Publisher(endpoint, link=link, queue_bytes=2 << 20, timeout=60,
                                native=False) as pub:
            for _ in range(records):
                pub.send("field", {"field": array})
        receiver.join(60)
        assert not receiver.is_alive(), "the receiver did not get every record"
    finally:
        pull.close(linger=0)
        ctx.term()
    assert len(seen) == records
    return seen


def test_a_fast_receiver_gets_raw_arrays():
    seen = codecs_seen(0.0, 30, "network", SMOOTH)
    assert seen == ["raw"] * 30, seen


def test_a_slow_receiver_gets_compressed_arrays():
    # 1 MB per 100 ms is 10 MB/s: far slower than shuffle + zstd saves time at. The first
    # records fill the socket buffers without blocking: the publisher learns the link then.
    seen = codecs_seen(0.1, 60, "network", SMOOTH)
    assert seen[0] == "raw", "nothing is known at the start"
    late = seen[-20:]
    assert late.count("zstd") >= 18, f"once sends block, arrays go compressed: {seen}"


def test_noise_goes_raw_even_to_a_slow_receiver():
    seen = codecs_seen(0.05, 40, "network", NOISE)
    assert seen == ["raw"] * 40, seen


def test_a_local_link_gets_raw_arrays_even_from_a_slow_receiver():
    seen = codecs_seen(0.02, 40, None, SMOOTH)
    assert seen == ["raw"] * 40, seen

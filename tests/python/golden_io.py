"""Test helpers: reading golden vector directories, extracting the spec's Python snippet, and
ZeroMQ socket pairs on ephemeral loopback ports that cannot hang."""

from __future__ import annotations

import json
import os
import re
import struct
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import numpy as np
import zmq

REPO = Path(__file__).resolve().parents[2]

#: Cargo's build directory: ``$NDBRIDGE_TARGET_DIR`` (scripts/test-all sets it from
#: ``cargo metadata``, so that a ``CARGO_TARGET_DIR`` elsewhere is honoured), else ``target``.
TARGET_DIR = Path(os.environ.get("NDBRIDGE_TARGET_DIR") or REPO / "target")
GOLDEN = REPO / "tests" / "data" / "golden"
SPEC = REPO / "docs" / "wire-format.md"

#: Receive timeout for every test socket, in milliseconds.
RECV_TIMEOUT_MS = 5000


# ---------------------------------------------------------------------------------------------
# Golden vector directories: manifest.json, <case>.frames, <case>.<array>.bin


def read_frames(path: Path) -> List[bytes]:
    """The frames of a ``.frames`` file: 8-byte little-endian length, then the bytes, repeated."""
    data = path.read_bytes()
    frames, pos = [], 0
    while pos < len(data):
        if pos + 8 > len(data):
            raise AssertionError(f"{path.name}: {len(data) - pos} stray bytes at the end")
        (n,) = struct.unpack_from("<Q", data, pos)
        pos += 8
        if pos + n > len(data):
            raise AssertionError(f"{path.name}: frame of {n} bytes runs past the end")
        frames.append(data[pos:pos + n])
        pos += n
    return frames


def load_manifest(directory: Path) -> List[Dict[str, Any]]:
    """The cases of a golden directory's manifest, each checked for the required keys."""
    manifest = json.loads((directory / "manifest.json").read_text(encoding="utf-8"))
    cases = manifest["cases"]
    for case in cases:
        assert {"name", "file", "arrays"} <= case.keys(), case
        for entry in case["arrays"]:
            assert {"name", "dtype", "shape", "expected"} <= entry.keys(), entry
    return cases


def le_bytes(array: np.ndarray) -> bytes:
    """An array's values as the ``.bin`` files hold them: C order, little-endian."""
    return np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()


def check_case(directory: Path, case: Dict[str, Any], arrays: Dict[str, np.ndarray]) -> None:
    """Asserts that decoded `arrays` match the case bit for bit: names, dtype, shape, values."""
    expected_names = [entry["name"] for entry in case["arrays"]]
    assert list(arrays) == expected_names, f"{case['name']}: array names"
    for entry in case["arrays"]:
        got = arrays[entry["name"]]
        where = f"{case['name']}.{entry['name']}"
        assert got.dtype == np.dtype(entry["dtype"]), f"{where}: dtype {got.dtype.str}"
        assert list(got.shape) == entry["shape"], f"{where}: shape {got.shape}"
        expected = (directory / entry["expected"]).read_bytes()
        assert le_bytes(got) == expected, f"{where}: values differ"


# ---------------------------------------------------------------------------------------------
# The spec's reader snippet, verbatim.


def spec_snippet_source() -> str:
    """The first ```python block of docs/wire-format.md, exactly as written."""
    text = SPEC.read_text(encoding="utf-8")
    match = re.search(r"^```python\n(.*?)^```", text, re.S | re.M)
    assert match, f"{SPEC}: no ```python block"
    return match.group(1)


def spec_recv_arrays() -> Callable[[zmq.Socket], Tuple[dict, Dict[str, np.ndarray]]]:
    """The spec snippet's ``recv_arrays``, executed from the document's text."""
    namespace: Dict[str, Any] = {"__name__": "wire_format_snippet"}
    exec(compile(spec_snippet_source(), str(SPEC), "exec"), namespace)
    return namespace["recv_arrays"]


# ---------------------------------------------------------------------------------------------
# Sockets.


def socket(ctx: zmq.Context, kind: int) -> zmq.Socket:
    """A socket that never blocks a test: receive and send timeouts, no linger."""
    sock = ctx.socket(kind)
    sock.linger = 0
    sock.rcvtimeo = RECV_TIMEOUT_MS
    sock.sndtimeo = RECV_TIMEOUT_MS
    return sock


def bind_loopback(sock: zmq.Socket) -> str:
    """Binds `sock` to a free loopback port; returns the endpoint it got."""
    sock.bind("tcp://127.0.0.1:*")
    return sock.getsockopt_string(zmq.LAST_ENDPOINT)


def push_pull(ctx: zmq.Context) -> Tuple[zmq.Socket, zmq.Socket]:
    """A connected (PUSH, PULL) pair on an ephemeral loopback port."""
    pull = socket(ctx, zmq.PULL)
    push = socket(ctx, zmq.PUSH)
    push.connect(bind_loopback(pull))
    return push, pull


SYNC_TOPIC = b"__sync__"


def sync_pub_sub(pub: zmq.Socket, sub: zmq.Socket, timeout_s: float = 5.0) -> None:
    """Waits until `sub` receives what `pub` sends, so no message after this is dropped.

    A SUB socket's subscription reaches the publisher some time after connecting; until then
    PUB drops messages. Probes go out under a topic of their own until one arrives, then a
    marker shows the last probe has been drained.
    """
    sub.setsockopt(zmq.SUBSCRIBE, SYNC_TOPIC)
    deadline = time.monotonic() + timeout_s
    while True:
        pub.send_multipart([SYNC_TOPIC, b"probe"])
        if sub.poll(20, zmq.POLLIN):
            break
        assert time.monotonic() < deadline, "SUB socket never received from PUB"
    pub.send_multipart([SYNC_TOPIC, b"done"])
    while True:
        assert sub.poll(int(timeout_s * 1000), zmq.POLLIN), "sync marker never arrived"
        if sub.recv_multipart() == [SYNC_TOPIC, b"done"]:
            break
    sub.setsockopt(zmq.UNSUBSCRIBE, SYNC_TOPIC)

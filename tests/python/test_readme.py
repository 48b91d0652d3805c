"""The code in python/README.md runs: the ``>>>`` blocks as doctests, the subscribe and
publish blocks, as written apart from the ports, against a live collector, the acked block
against a live collector in acked delivery, and the CURVE block,
as written apart from its endpoint and key directory, against a pyzmq CURVE server that admits
its key."""

from __future__ import annotations

import doctest
import re
import threading
import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import pytest
import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

import ndbridge
from collector_proc import Collector
from golden_io import REPO

README = REPO / "python" / "README.md"
INPUT, FORWARD = "tcp://127.0.0.1:5555", "tcp://127.0.0.1:5556"
CURVE_INPUT, CURVE_KEYS = "tcp://head-node:5555", '"keys/'


def blocks(doctests: bool) -> List[str]:
    """The README's ```python blocks: the ``>>>`` ones, or the programs."""
    found = re.findall(r"^```python\n(.*?)^```", README.read_text(encoding="utf-8"), re.S | re.M)
    return [b for b in found if (">>>" in b) == doctests]


def python_blocks() -> List[str]:
    """The README's ```python blocks that are programs (not doctests)."""
    return blocks(doctests=False)


ACKED = 'delivery="acked"'


def block_using(endpoint: str, acked: bool = False) -> str:
    """The one program block that uses `endpoint` (in acked delivery, or not)."""
    found = [b for b in python_blocks() if endpoint in b and (ACKED in b) == acked]
    assert len(found) == 1, f"expected one README block using {endpoint}, found {len(found)}"
    return found[0]


def test_readme_doctests() -> None:
    # The >>> blocks run in order in one namespace, as a reader would type them.
    text = "\n".join(blocks(doctests=True))
    test = doctest.DocTestParser().get_doctest(text, {}, "README.md", str(README), 0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    result = runner.run(test)
    assert result.attempted >= 5 and result.failed == 0


def test_readme_documents_the_essentials() -> None:
    text = README.read_text(encoding="utf-8")
    for needle in (".copy()", "read-only", "WireError", "HeaderError", "FrameError",
                   "CodecError", "LimitError", "examples/publish.py", "examples/subscribe.py",
                   "--count", "copy_threshold", "timeout_ms", "DeliveryError", "flush",
                   'link="network"', "os._exit", "queue_bytes", "ndbridge keygen",
                   "--curve-secret", "--allow", "curve_server", "curve_secret", ACKED,
                   "--delivery acked", "window_bytes", "refused", "spool_dir",
                   "BlockingIOError", "recovered"):
        assert needle in text, needle
    # Subscribe, publish, acked, CURVE; and reading a store (run by test_store_docs.py).
    assert len(python_blocks()) == 5


def test_readme_subscribe_and_publish_blocks(tmp_path: Path) -> None:
    c = Collector(tmp_path / "out")
    try:
        subscribe = block_using(FORWARD).replace(FORWARD, c.forward)
        publish = block_using(INPUT).replace(INPUT, c.input)
        printed: List[tuple] = []
        failures: List[BaseException] = []

        def run_subscriber() -> None:
            namespace: Dict[str, Any] = {"__name__": "readme_subscribe",
                                         "print": lambda *args: printed.append(args)}
            try:
                exec(compile(subscribe, str(README), "exec"), namespace)
            except BaseException as e:  # reported by the test thread
                failures.append(e)

        thread = threading.Thread(target=run_subscriber, daemon=True)
        thread.start()
        # The subscriber misses records published before its subscription is live: warm up
        # with records of another source until one is printed.
        with ndbridge.Publisher(c.input, source="warmup") as warm:
            deadline = time.monotonic() + 10
            while not printed and thread.is_alive():
                assert time.monotonic() < deadline, "the subscribe block printed nothing"
                warm.send("u", np.zeros((2, 2)), attrs={"warmup": True})
                time.sleep(0.02)
        exec(compile(publish, str(README), "exec"), {"__name__": "readme_publish"})
        thread.join(timeout=30)  # the block's loop ends 5 s after the last record
        assert not thread.is_alive(), "the subscribe block did not end"
        assert not failures, failures
        c.wait_records("warmup", 1)
        stats = c.stop()["stats"]
    finally:
        c.kill()
    assert stats["rejected"] == 0
    # Each printed line: name, source, seq, attrs, shape, mean. Several decode workers in the
    # collector may forward records out of order; seq tells the order.
    published = sorted((args for args in printed if "step" in args[3]), key=lambda a: a[2])
    assert [args[2] for args in published] == list(range(100))
    assert [args[3]["step"] for args in published] == list(range(100))
    assert all(args[0] == "u" and args[4] == (256, 256) for args in published)
    assert len({args[1] for args in published}) == 1
    x = np.linspace(0, 2 * np.pi, 256)
    for args in published[::33]:
        step = args[3]["step"]
        assert args[5] == pytest.approx((np.sin(x[:, None] + 0.1 * step) * np.cos(x)).mean())


def test_readme_acked_block(tmp_path: Path) -> None:
    c = Collector(tmp_path / "out", forward=False, delivery="acked")
    try:
        block = block_using(INPUT, acked=True).replace(INPUT, c.input)
        exec(compile(block, str(README), "exec"), {"__name__": "readme_acked"})
        # The block's close returned: every record and the session's end are acknowledged,
        # which the collector does once they are stored.
        lines, ends = c.manifest(), c.ends()
        assert sorted(x["seq"] for x in lines) == list(range(100))
        assert [x["attrs"]["step"] for x in sorted(lines, key=lambda x: x["seq"])] == \
            list(range(100))
        assert [e["seq"] for e in ends] == [100]
        stats = c.stop()["stats"]
    finally:
        c.kill()
    assert (stats["stored"], stats["rejected"], stats["sessions_not_ended"]) == (100, 0, 0)


def test_readme_curve_block(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    _, server_secret = ndbridge.keygen(keys, "collector")
    ndbridge.keygen(keys, "worker-1")
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "worker-1.key").write_bytes((keys / "worker-1.key").read_bytes())
    ctx = zmq.Context()
    auth = ThreadAuthenticator(ctx)
    auth.start()
    try:
        auth.configure_curve(domain="*", location=str(allowed))
        pull = ctx.socket(zmq.PULL)
        pull.linger = 0
        pull.curve_publickey, pull.curve_secretkey = zmq.auth.load_certificate(server_secret)
        pull.curve_server = True
        pull.bind("tcp://127.0.0.1:*")
        block = block_using(CURVE_INPUT)
        assert block.count(CURVE_KEYS) == 2, block
        code = block.replace(CURVE_INPUT, pull.getsockopt_string(zmq.LAST_ENDPOINT)) \
                    .replace(CURVE_KEYS, f'"{keys}/')
        exec(compile(code, str(README), "exec"), {"__name__": "readme_curve"})
        assert pull.poll(10_000, zmq.POLLIN), "the CURVE block's record did not arrive"
        frames = pull.recv_multipart(copy=False)
        worker_key = zmq.auth.load_certificate(keys / "worker-1.key")[0].decode()
        assert frames[0].get("User-Id") == worker_key
        rec = ndbridge.decode(frames)
        assert rec.name == "u" and rec.attrs == {"step": 0}
        assert rec["u"].shape == (256, 256) and (rec["u"] == 1).all()
    finally:
        auth.stop()
        ctx.destroy(linger=0)

"""Test helpers: the Rust `ndbridge` binary as a subprocess (a collector on ephemeral loopback
ports, `ndbridge send`), waiting for its output, and live subscriptions to its forward socket.

The binary is ``debug/ndbridge`` in cargo's build directory (``cargo build``; see
``golden_io.TARGET_DIR``). A missing binary fails the tests that
need it, unless NDBRIDGE_ALLOW_MISSING_RUST=1 is set: then they skip.
"""

from __future__ import annotations

import json
import os
import random
import select
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Union

import numpy as np
import pytest
import zmq

import ndbridge
from golden_io import REPO, TARGET_DIR

BINARY = TARGET_DIR / "debug" / "ndbridge"

#: Longest wait for the collector to start, to store a record, or to stop, in seconds.
WAIT_S = 30.0

#: Record name of the probes that show a subscription is live; tests skip such records.
PROBE = "__probe__"


def require_binary() -> Path:
    """The path of the `ndbridge` binary; fails (or skips, see the module doc) if it is missing."""
    if BINARY.exists():
        return BINARY
    if os.environ.get("NDBRIDGE_ALLOW_MISSING_RUST") == "1":
        pytest.skip(f"{BINARY} is not built and NDBRIDGE_ALLOW_MISSING_RUST=1 allows that")
    pytest.fail(f"{BINARY} is missing: run `cargo build` in {REPO} first (or set "
                f"NDBRIDGE_ALLOW_MISSING_RUST=1 to skip these tests)", pytrace=False)
    raise AssertionError("unreachable")


def restart_endpoint() -> str:
    """A loopback endpoint for collectors restarted on it: a port free now and below Linux's
    ephemeral range (32768 and up), so that no outgoing connection takes it as its own port while
    nothing listens there (a client reconnecting to a port in that range can be given that very
    port, connect to itself, and make the restarted collector's bind fail)."""
    start = random.randrange(10_000)
    for i in range(10_000):
        port = 30_000 + (start + i) % 2_700
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        return f"tcp://127.0.0.1:{port}"
    raise AssertionError("no free loopback port between 30000 and 32699")


class Collector:
    """A running ``ndbridge collect`` process on ephemeral loopback ports.

    `bind` is the input endpoint (default an ephemeral loopback port; a restarted collector
    binds the port of the one before, ``bind=old.input``); `delivery` is ``--delivery`` (default
    the collector's, fire-and-forget); `format` is ``--format`` (``npy`` here by default, for the
    manifest); `log` is where its stderr goes (default beside `out`, and its stats JSON beside
    that). The log is appended to, so that a collector restarted on the same `out` keeps the log
    of the runs before.

    Attributes:
        input: The endpoint publishers connect to (the collector's PULL socket; its ROUTER
            socket with ``delivery="acked"``).
        forward: The endpoint of the forwarding PUB socket (``None`` with ``forward=False``).
        out: The output directory (``manifest.jsonl`` and the stored files).
        stats: The final statistics JSON, once :meth:`stop` has run.
    """

    def __init__(self, out: Path, extra_args: Sequence[str] = (), forward: bool = True,
                 bind: str = "tcp://127.0.0.1:*", delivery: Optional[str] = None,
                 format: str = "npy", log: Optional[Path] = None,
                 stats_every: str = "0") -> None:
        binary = require_binary()
        self.out = out
        self.log_path = log if log is not None else out.parent / f"{out.name}-collector.log"
        self.stats_path = (log.with_suffix(".stats.json") if log is not None
                           else out.parent / f"{out.name}-stats.json")
        self.stats: Optional[Dict[str, Any]] = None
        args = [str(binary), "collect", "--bind", bind,
                *(["--forward", "tcp://127.0.0.1:*"] if forward else []),
                *(["--delivery", delivery] if delivery else []),
                "--format", format, "--out", str(out), "--print-endpoints",
                "--stats-json", str(self.stats_path), "--stats-every", stats_every, *extra_args]
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self._log, cwd=REPO)
        try:
            endpoints = json.loads(self._read_line(WAIT_S))
        except BaseException:
            self.kill()
            raise
        self.input: str = endpoints["input"][0]
        self.forward: Optional[str] = endpoints["forward"]

    def _read_line(self, timeout_s: float) -> str:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout_s)
        if not ready:
            raise AssertionError(f"the collector printed no endpoints within {timeout_s} s; "
                                 f"log:\n{self.log()}")
        line = self.proc.stdout.readline().decode()
        if not line:
            self.proc.wait(timeout=WAIT_S)
            raise AssertionError(f"the collector exited with {self.proc.returncode} before "
                                 f"listening; log:\n{self.log()}")
        return line

    def log(self) -> str:
        """What the collector wrote to stderr so far."""
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def manifest(self) -> List[Dict[str, Any]]:
        """The complete record lines of ``manifest.jsonl`` so far (one per stored record)."""
        return [line for line in self._lines() if "path" in line]

    def refusals(self) -> List[Dict[str, Any]]:
        """The lines of ``manifest.jsonl`` so far of records refused for good (acked
        delivery: ``"refused": reason``)."""
        return [line for line in self._lines() if "refused" in line]

    def ends(self) -> List[Dict[str, Any]]:
        """The lines of ``manifest.jsonl`` so far that end a session (``"end": true``)."""
        return [line for line in self._lines() if line.get("end")]

    def _lines(self) -> List[Dict[str, Any]]:
        path = self.out / "manifest.jsonl"
        if not path.exists():
            return []
        text = path.read_text(encoding="utf-8")
        return [json.loads(line) for line in text.splitlines(keepends=True)
                if line.endswith("\n")]

    def wait_stored(self, predicate, what: str, timeout_s: float = WAIT_S) -> List[Dict[str, Any]]:
        """Polls the manifest until ``predicate(lines)`` is true; returns the lines."""
        deadline = time.monotonic() + timeout_s
        while True:
            lines = self.manifest()
            if predicate(lines):
                return lines
            if self.proc.poll() is not None:
                raise AssertionError(f"the collector exited with {self.proc.returncode} while "
                                     f"waiting for {what}; log:\n{self.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not in the manifest after {timeout_s} s "
                                     f"({len(lines)} lines); log:\n{self.log()}")
            time.sleep(0.02)

    def wait_records(self, source: str, count: int,
                     timeout_s: float = WAIT_S) -> List[Dict[str, Any]]:
        """Waits until `count` records from `source` are stored; returns their manifest lines."""
        lines = self.wait_stored(lambda ls: sum(1 for x in ls if x["source"] == source) >= count,
                                 f"{count} records from {source!r}", timeout_s)
        return [x for x in lines if x["source"] == source]

    def stop(self) -> Dict[str, Any]:
        """Stops the collector with SIGTERM; checks it exits 0 and returns the stats JSON."""
        if self.stats is not None:
            return self.stats
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=WAIT_S)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"the collector did not stop within {WAIT_S} s of SIGTERM; "
                                 f"log:\n{self.log()}") from None
        self._close_files()
        assert code == 0, f"the collector exited with {code}; log:\n{self.log()}"
        self.stats = json.loads(self.stats_path.read_text(encoding="utf-8"))
        return self.stats

    def kill(self) -> None:
        """Ends the process at once (cleanup after a failure)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=WAIT_S)
        self._close_files()

    def _close_files(self) -> None:
        if self.proc.stdout is not None and not self.proc.stdout.closed:
            self.proc.stdout.close()
        if not self._log.closed:
            self._log.close()


def rust_send(files: Iterable[Path], to: str, *args: str) -> str:
    """Runs ``ndbridge send FILES --to TO ARGS``; returns its stderr (it must exit 0)."""
    cmd = [str(require_binary()), "send", *map(str, files), "--to", to, "--timeout", "30", *args]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=50, cwd=REPO)
    assert result.returncode == 0, f"{' '.join(cmd)} exited with {result.returncode}:\n" \
                                   f"{result.stdout}\n{result.stderr}"
    return result.stderr


def wait_subscribed(sub: Union[ndbridge.Subscriber, zmq.Socket], collector: Collector,
                    timeout_s: float = 10.0, **publisher_args: Any) -> None:
    """Returns once `sub` (an :class:`ndbridge.Subscriber` or a SUB socket, subscribed to
    :data:`PROBE` or to everything) receives from the collector's forward socket.

    A SUB socket's subscription reaches the PUB socket some time after connecting, and PUB drops
    what it publishes before that. So probe records go into the collector until one comes out
    of `sub`. Subscriptions take effect in order: every one made before is live too. Later
    probes may still arrive; readers skip records named :data:`PROBE`. On a plain socket the
    first probe is left queued for the reader to skip. `publisher_args` go to the probes'
    :class:`ndbridge.Publisher` (``curve_server=``, ``curve_secret=`` for a CURVE collector).
    """
    if isinstance(sub, ndbridge.Subscriber):
        def arrived() -> bool:
            try:
                while sub.recv(timeout_ms=50).name != PROBE:
                    pass
                return True
            except TimeoutError:
                return False
    else:
        def arrived() -> bool:
            return bool(sub.poll(50, zmq.POLLIN))
    deadline = time.monotonic() + timeout_s
    with ndbridge.Publisher(collector.input, source="probe", timeout=10,
                            **publisher_args) as pub:
        while True:
            pub.send(PROBE, np.zeros(1, np.uint8), attrs={"probe": pub.seq})
            if arrived():
                return
            assert time.monotonic() < deadline, \
                f"no probe came back from {collector.forward} within {timeout_s} s"


def recv_records(sub: ndbridge.Subscriber, keys: Iterable[Any], key=lambda rec: rec.name,
                 timeout_s: float = WAIT_S) -> Dict[Any, ndbridge.Record]:
    """Receives until a record for every key in `keys` has come (probes skipped); returns them."""
    wanted = set(keys)
    got: Dict[Any, ndbridge.Record] = {}
    deadline = time.monotonic() + timeout_s
    while wanted - got.keys():
        remaining_ms = int((deadline - time.monotonic()) * 1000)
        if remaining_ms <= 0:
            raise AssertionError(f"records never came: {sorted(map(str, wanted - got.keys()))}")
        try:
            rec = sub.recv(timeout_ms=remaining_ms)
        except TimeoutError:
            continue
        if rec.name == PROBE:
            continue
        k = key(rec)
        assert k not in got, f"record {k!r} came twice"
        got[k] = rec
    return got


def bit_exact(got: np.ndarray, expected: np.ndarray) -> None:
    """Asserts equal dtype (byte order included), shape and bytes, element by element."""
    assert got.dtype.str == expected.dtype.str, f"dtype {got.dtype.str} != {expected.dtype.str}"
    assert got.shape == expected.shape, f"shape {got.shape} != {expected.shape}"
    assert np.ascontiguousarray(got).tobytes() == np.ascontiguousarray(expected).tobytes(), \
        "values differ"

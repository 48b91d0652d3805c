"""A collector in acked delivery killed with SIGKILL at random moments and restarted on the same
``--out`` and port, 10 times, while four publishers send mixed records: two Python publishers
(the pure-Python one, and the native core's when it is built) and two Rust workers
(``examples/worker.rs --acked``). Afterwards ``ndbridge verify`` finds every record of every
session exactly once, and every session ended.
"""

from __future__ import annotations

import random
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import pytest

import ndbridge
from ndbridge import native
from collector_proc import Collector, require_binary, restart_endpoint
from golden_io import TARGET_DIR

#: The Rust worker example, built by ``cargo build --all-targets``.
WORKER = TARGET_DIR / "debug" / "examples" / "worker"

#: Records each Python publisher sends; steps of each Rust worker (two records a step, and a
#: `state` record every tenth).
PY_RECORDS = 400
WORKER_STEPS = 150

KILLS = 10


def mixed(step: int) -> Dict[str, Any]:
    """Record `step` of a Python publisher: one array or several, of different dtypes, orders
    and sizes, some with attributes."""
    kind = step % 3
    if kind == 0:
        return {"name": "u", "arrays": np.full(64, step, dtype=np.float64)}
    if kind == 1:
        return {"name": "field",
                "arrays": np.asfortranarray(np.linspace(0, step, 20_000, dtype=np.float32)
                                            .reshape(100, 200))}
    return {"name": "state",
            "arrays": {"a": np.full(10, step, dtype=np.int32), "b": np.arange(3, dtype=np.uint8)},
            "attrs": {"step": step}}


def python_publisher(endpoint: str, use_native: bool, source: str,
                     results: Dict[str, Any]) -> None:
    """Sends PY_RECORDS mixed records, acked, then closes; keeps the outcome in `results`."""
    try:
        with ndbridge.Publisher(endpoint, source=source, delivery="acked", native=use_native,
                                codec="zstd" if use_native else "raw", timeout=120) as pub:
            for step in range(PY_RECORDS):
                record = mixed(step)
                pub.send(record["name"], record["arrays"], attrs=record.get("attrs"))
                time.sleep(0.015)
        results[source] = "ok"
    except BaseException as e:  # reported by the test
        results[source] = e


def test_killed_collectors_lose_nothing_from_rust_and_python_publishers(tmp_path: Path) -> None:
    binary = require_binary()
    if not WORKER.exists():
        pytest.fail(f"{WORKER} is missing: run `cargo build --all-targets` first", pytrace=False)
    out = tmp_path / "run"
    seed = random.randrange(1 << 32)
    print(f"kill schedule seed {seed}", file=sys.stderr)
    rng = random.Random(seed)
    collector = Collector(out, forward=False, delivery="acked", bind=restart_endpoint())
    endpoint = collector.input
    results: Dict[str, Any] = {}
    threads = [threading.Thread(target=python_publisher, args=(endpoint, n, f"py-{i}", results))
               for i, n in enumerate([False, native.AVAILABLE])]
    workers = [subprocess.Popen([str(WORKER), endpoint, "--acked", "--steps", str(WORKER_STEPS),
                                 "--size", "32", "--interval-ms", "30", "--source", f"rust-{i}",
                                 "--timeout", "120"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
               for i in range(2)]
    for t in threads:
        t.start()
    collectors: List[Collector] = [collector]
    try:
        for _ in range(KILLS):
            time.sleep(rng.uniform(0.1, 0.8))
            collector.kill()
            time.sleep(rng.uniform(0.0, 0.4))
            collector = Collector(out, forward=False, delivery="acked", bind=endpoint)
            collectors.append(collector)
        for t in threads:
            t.join(timeout=180)
            assert not t.is_alive(), "a Python publisher did not finish"
        assert results == {"py-0": "ok", "py-1": "ok"}, results
        resent = 0
        for w in workers:
            stdout, stderr = w.communicate(timeout=180)
            assert w.returncode == 0, stderr.decode()
            # "...; N delivered, M resent"
            resent += int(stdout.decode().split()[-2])
        # The kills cut the workers' streams: what was not acknowledged went again.
        assert resent > 0
        collector.stop()
    finally:
        for c in collectors:
            c.kill()
        for w in workers:
            if w.poll() is None:
                w.kill()

    verify = subprocess.run([str(binary), "verify", str(out)], capture_output=True, text=True,
                            timeout=60)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    rows = {line.split()[0]: line.split() for line in verify.stdout.splitlines()
            if line.split() and line.split()[0].startswith(("py-", "rust-"))}
    # source session records missing duplicated files-gone ended
    per_worker = 2 * WORKER_STEPS + WORKER_STEPS // 10
    expected = {"py-0": PY_RECORDS, "py-1": PY_RECORDS, "rust-0": per_worker,
                "rust-1": per_worker}
    assert {s: (int(r[2]), r[3:]) for s, r in rows.items()} == \
        {s: (n, ["0", "0", "0", "yes"]) for s, n in expected.items()}, verify.stdout

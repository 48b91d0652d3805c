"""The documented ways to read a run store work as written: the Python blocks of README.md,
python/README.md and docs/store.md that open a store, and the two lines the demo prints, run
against a store a real collector wrote (only the store's path replaced)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest

import ndbridge
from collector_proc import require_binary
from golden_io import REPO

pytest.importorskip("zarr")
pytest.importorskip("xarray")

DOCS = [REPO / "README.md", REPO / "python" / "README.md", REPO / "docs" / "store.md"]


def store_blocks():
    """(document, block) for each ```python block that opens a store."""
    found = []
    for doc in DOCS:
        for block in re.findall(r"^```python\n(.*?)^```", doc.read_text(), re.S | re.M):
            if "open_store" in block:
                found.append((doc.relative_to(REPO).as_posix(), block))
    return found


@pytest.fixture(scope="module")
def run_store(tmp_path_factory):
    """A store with 20 records of `temperature` from sim-0, attrs {"step": i}."""
    root = tmp_path_factory.mktemp("store") / "run.zarr"
    proc = subprocess.Popen(
        [str(require_binary()), "collect", "--bind", "tcp://127.0.0.1:*", "--print-endpoints",
         "--stats-every", "0", "--delivery", "acked", "--out", str(root)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        endpoint = json.loads(proc.stdout.readline())["input"][0]
        with ndbridge.Publisher(endpoint, source="sim-0", delivery="acked") as pub:
            for i in range(20):
                pub.send("temperature", np.full((4, 3), 280.0 + i), attrs={"step": i})
    finally:
        proc.send_signal(2)
        assert proc.wait(timeout=30) == 0
    return root


def test_each_document_shows_a_store_being_opened():
    docs = [doc for doc, _ in store_blocks()]
    assert docs == ["README.md", "python/README.md", "docs/store.md"]


@pytest.mark.parametrize("doc,block", store_blocks(), ids=[d for d, _ in store_blocks()])
def test_each_documented_block_runs(run_store, doc, block, capsys):
    assert '"run.zarr"' in block
    namespace = {}
    exec(compile(block.replace('"run.zarr"', repr(str(run_store))), doc, "exec"), namespace)
    # What the block reads is the store's: 20 records of sim-0's temperature.
    ds = namespace.get("ds")
    assert ds is not None and ds.sizes["record"] == 20
    # Records are stored in the order they were decoded: find seq 5 by its coordinate.
    at = ds.seq.values.tolist().index(5)
    assert ds.temperature.values[at, 0, 0] == 285.0
    if "print(" in block:
        assert capsys.readouterr().out.strip()


def test_the_demo_s_two_lines_open_its_store(tmp_path):
    demo = subprocess.run(
        [str(require_binary()), "demo", "--workers", "1", "--seconds", "1", "--rate", "10",
         "--size", "16", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=120, check=True)
    lines = demo.stdout.splitlines()
    first = lines.index("  import xarray as xr")
    snippet = "\n".join(line.strip() for line in lines[first:first + 2])
    run = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    assert "temperature" in run.stdout

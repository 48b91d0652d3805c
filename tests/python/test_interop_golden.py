"""The golden vectors (tests/data/golden, written by NumPy) sent from Python through a PUSH socket
to a real `ndbridge collect` process: the files it stores hold exactly the expected values, and
its manifest describes each record as its header does. (Decoding the vectors in each language
alone is tested by tests/integration/golden.rs and test_golden.py.)"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np
import pytest
import zmq

import ndbridge
from collector_proc import Collector
from golden_io import GOLDEN, check_case, load_manifest, read_frames, socket

CASES = load_manifest(GOLDEN)

#: The case whose header carries seq 2**64 - 1 in the same session as every other case.

#: The source every golden header names.
GOLDEN_SOURCE = json.loads(read_frames(GOLDEN / CASES[0]["file"])[0])["source"]


def store_through_collector(out: Path, cases: List[Dict[str, Any]], ctx: zmq.Context
                            ) -> Tuple[Collector, List[Dict[str, Any]], Dict[str, Any]]:
    """Sends `cases` through a PUSH socket to a new collector, waits until all are stored and
    stops it; returns the collector, its manifest lines and its final statistics."""
    c = Collector(out)
    try:
        push = socket(ctx, zmq.PUSH)
        push.connect(c.input)
        for case in cases:
            push.send_multipart(read_frames(GOLDEN / case["file"]))
        lines = c.wait_records(GOLDEN_SOURCE, len(cases))
        stats = c.stop()["stats"]
    finally:
        c.kill()
    return c, lines, stats


def test_golden_vectors_through_the_collector(tmp_path: Path, ctx: zmq.Context) -> None:
    # Every vector in one session, seq 2**64 - 1 included: the collector's gap counting
    # saturates instead of overflowing.
    cases = CASES
    headers: Dict[int, Dict[str, Any]] = {}
    by_seq: Dict[int, Dict[str, Any]] = {}
    for case in cases:
        header = json.loads(read_frames(GOLDEN / case["file"])[0])
        assert header["source"] == GOLDEN_SOURCE
        assert header["seq"] not in headers, "golden seq numbers are unique"
        headers[header["seq"]], by_seq[header["seq"]] = header, case
    c, lines, stats = store_through_collector(tmp_path / "out", cases, ctx)
    assert (stats["received"], stats["stored"], stats["rejected"]) == (len(cases),) * 2 + (0,)

    assert sorted(line["seq"] for line in lines) == sorted(headers)
    for line in lines:
        header, case = headers[line["seq"]], by_seq[line["seq"]]
        where = case["name"]
        assert (line["name"], line["session"], line["time"]) == \
            (header["name"], header["session"], header["time"]), where
        assert line["attrs"] == header.get("attrs"), where
        assert [a["name"] for a in line["arrays"]] == [a["name"] for a in header["arrays"]]
        for entry, meta in zip(line["arrays"], header["arrays"]):
            assert (entry["shape"], entry["order"], entry["codec"], entry["raw_bytes"]) == \
                (meta["shape"], meta["order"], meta["codec"], meta["nbytes"]), where
            assert np.dtype(entry["dtype"]) == np.dtype(meta["dtype"]), where
            assert entry["shuffle"] == ("shuffle" in (meta.get("filters") or [])), where
        path = c.out / line["path"]
        if len(header["arrays"]) == 1:
            assert path.suffix == ".npy", where
            arrays = {header["arrays"][0]["name"]: np.load(path)}
        else:
            # Several arrays, or none (a heartbeat record): an .npz archive with one member each.
            assert path.suffix == ".npz", where
            with np.load(path) as npz:
                arrays = {name: npz[name] for name in npz.files}
        check_case(GOLDEN, case, arrays)
        for array, meta in zip(arrays.values(), header["arrays"]):
            if meta["order"] == "F" and array.ndim > 1 and array.size:
                assert array.flags.f_contiguous, f"{where}: stored in C order"


def test_seq_jump_to_the_maximum(tmp_path: Path, ctx: zmq.Context) -> None:
    c = Collector(tmp_path / "out")
    try:
        push = socket(ctx, zmq.PUSH)
        push.connect(c.input)
        for seq in (0, 10, 2**64 - 1):
            ndbridge.send(push, "jump", np.arange(3), source="jumper", session="5e55", seq=seq)
        ndbridge.send(push, "after", np.arange(3), source="other", seq=0)
        c.wait_records("other", 1, timeout_s=3)
        assert len(c.wait_records("jumper", 3, timeout_s=3)) == 3
        stats = c.stop()["stats"]
    finally:
        c.kill()
    assert stats["stored"] == 4 and stats["sources"]["other"]["gaps"] == 0

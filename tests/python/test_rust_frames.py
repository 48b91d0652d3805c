"""Messages encoded by ndbridge's Rust side decode bit-exactly in Python.

``debug/examples/write_frames OUTDIR`` in cargo's build directory (built with ``cargo build --example write_frames``)
writes Rust-encoded messages in the golden format of tests/data/make_golden.py. Each case is
decoded (a) by the ``ndbridge`` package and (b) by the reader snippet of docs/wire-format.md,
through a real PUSH -> PULL pair, and compared with the ``.bin`` files.

A missing binary fails the test, unless NDBRIDGE_ALLOW_MISSING_RUST=1 is set: then it skips.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any, Dict, List

import pytest
import zmq

import ndbridge
from golden_io import REPO, TARGET_DIR, check_case, load_manifest, push_pull, read_frames, spec_recv_arrays

BINARY = TARGET_DIR / "debug" / "examples" / "write_frames"


@pytest.fixture(scope="module")
def rust_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory of Rust-written vectors, made once for this module."""
    if not BINARY.exists():
        if os.environ.get("NDBRIDGE_ALLOW_MISSING_RUST") == "1":
            pytest.skip(f"{BINARY} is not built and "
                        f"NDBRIDGE_ALLOW_MISSING_RUST=1 allows that")
        pytest.fail(f"{BINARY} is missing: build it with "
                    f"`cargo build --example write_frames` (or set NDBRIDGE_ALLOW_MISSING_RUST=1 "
                    f"to skip these tests)", pytrace=False)
    out = tmp_path_factory.mktemp("rust_frames")
    result = subprocess.run([str(BINARY), str(out)], cwd=REPO, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, (f"write_frames exited with {result.returncode}:\n"
                                    f"{result.stdout}\n{result.stderr}")
    return out


@pytest.fixture(scope="module")
def rust_cases(rust_dir: Path) -> List[Dict[str, Any]]:
    cases = load_manifest(rust_dir)
    assert cases, "write_frames wrote no cases"
    return cases


def test_rust_frames_decode_with_the_package(rust_dir: Path,
                                             rust_cases: List[Dict[str, Any]]) -> None:
    for case in rust_cases:
        frames = read_frames(rust_dir / case["file"])
        try:
            rec = ndbridge.decode(frames)
        except ndbridge.WireError as e:
            raise AssertionError(f"{case['name']}: {e}") from None
        check_case(rust_dir, case, rec.arrays)
        header = json.loads(frames[0])
        assert header["v"] == 1 and rec.seq == header["seq"], case["name"]


def test_rust_frames_decode_with_the_spec_snippet(rust_dir: Path,
                                                  rust_cases: List[Dict[str, Any]],
                                                  ctx: zmq.Context) -> None:
    recv_arrays = spec_recv_arrays()
    push, pull = push_pull(ctx)
    for case in rust_cases:
        push.send_multipart(read_frames(rust_dir / case["file"]))
        _, arrays = recv_arrays(pull)
        check_case(rust_dir, case, arrays)


def test_rust_frames_include_every_codec(rust_dir: Path, rust_cases: List[Dict[str, Any]]) -> None:
    """The cases above cover each codec the Rust encoder writes, `zstd-chunks` included."""
    codecs = {meta["codec"] for case in rust_cases
              for meta in json.loads(read_frames(rust_dir / case["file"])[0])["arrays"]}
    assert codecs == {"raw", "zstd", "zstd-chunks"}

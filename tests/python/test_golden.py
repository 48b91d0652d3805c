"""The golden vectors of tests/data/golden (written by tests/data/make_golden.py from NumPy and
zstandard alone) decode bit-exactly with the package, and are what the generator writes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import ndbridge
from golden_io import GOLDEN, REPO, check_case, load_manifest, read_frames

CASES = load_manifest(GOLDEN)


def test_golden_covers_the_spec() -> None:
    dtypes = {entry["dtype"] for case in CASES for entry in case["arrays"]}
    spec = ["|b1", "|i1", "|u1", "<i2", "<i4", "<i8", "<u2", "<u4", "<u8", "<f2", "<f4", "<f8",
            "<c8", "<c16"]
    big = [">" + d[1:] for d in spec if d[0] == "<"]
    assert set(spec + big) <= dtypes
    names = {case["name"] for case in CASES}
    for d in spec:
        tag = d[1:]
        for order in "CF":
            for suffix in ("raw", "raw_shuffle", "zstd", "zstd_shuffle"):
                assert f"{tag}_{order}_{suffix}" in names
    for d in big:
        assert {f"be_{d[1:]}_C_raw", f"be_{d[1:]}_C_zstd_shuffle"} <= names
    sizes = sum(p.stat().st_size for p in GOLDEN.iterdir())
    assert sizes < 1 << 20


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_golden_decodes_bit_exactly(case) -> None:
    frames = read_frames(GOLDEN / case["file"])
    rec = ndbridge.decode(frames)
    check_case(GOLDEN, case, rec.arrays)
    header = json.loads(frames[0])
    assert (rec.name, rec.source, rec.session, rec.seq) == \
        (header["name"], header["source"], header["session"], header["seq"])
    assert rec.time == float(header["time"])
    assert rec.attrs == header.get("attrs", {})
    assert all(not a.flags.writeable for a in rec.arrays.values())


def test_golden_big_endian_decodes_to_native_on_request() -> None:
    case = next(c for c in CASES if c["name"] == "be_f8_C_zstd_shuffle")
    rec = ndbridge.decode(read_frames(GOLDEN / case["file"]), native=True)
    a = rec.arrays[case["arrays"][0]["name"]]
    assert a.dtype.isnative
    expected = np.frombuffer((GOLDEN / case["arrays"][0]["expected"]).read_bytes(), "<f8")
    assert a.astype("<f8").tobytes() == expected.tobytes()


def test_golden_special_cases() -> None:
    by_name = {c["name"]: c for c in CASES}
    multi = ndbridge.decode(read_frames(GOLDEN / by_name["multi_array_attrs"]["file"]))
    assert multi.attrs["units"] == "K" and multi.attrs["nested"]["text"] == "µ° ☃"
    assert multi["count"].shape == () and multi["mask"].dtype == np.bool_
    unknown = ndbridge.decode(read_frames(GOLDEN / by_name["unknown_fields"]["file"]))
    assert "trace_id" in unknown.header
    assert ndbridge.decode(read_frames(GOLDEN / by_name["seq_u64_max"]["file"])).seq == 2**64 - 1
    assert ndbridge.decode(read_frames(GOLDEN / by_name["no_arrays"]["file"])).arrays == {}
    assert ndbridge.decode(read_frames(GOLDEN / by_name["empty_zstd_shuffle"]["file"]))[
        "empty"].shape == (0, 3)


def test_generator_reproduces_the_committed_vectors(tmp_path: Path) -> None:
    """make_golden.py writes what is committed. zstd output may differ between zstd versions,
    so compressed buffer frames are compared by what they decode to (above), the rest exactly."""
    out = tmp_path / "golden"
    subprocess.run([sys.executable, str(REPO / "tests" / "data" / "make_golden.py"), str(out)],
                   check=True, capture_output=True, timeout=120)
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in GOLDEN.iterdir())
    for path in sorted(out.iterdir()):
        committed = GOLDEN / path.name
        if path.suffix != ".frames":
            assert path.read_bytes() == committed.read_bytes(), path.name
            continue
        new, old = read_frames(path), read_frames(committed)
        assert len(new) == len(old) and new[0] == old[0], path.name
        header = json.loads(new[0])
        for entry, a, b in zip(header["arrays"], new[1:], old[1:]):
            if entry["codec"] == "raw":
                assert a == b, f"{path.name}: {entry['name']}"

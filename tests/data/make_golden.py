#!/usr/bin/env python3
"""Writes the golden wire-format vectors in tests/data/golden/ from NumPy and zstandard alone.

This script is a reference encoder of docs/wire-format.md written straight from the spec: it
uses numpy, zstandard, json and struct, and deliberately not the ``ndbridge`` package, so the
vectors check every decoder (Rust, the Python package, the spec's own snippet) against an
implementation that shares no code with them.

Usage, from the repository root (with numpy and zstandard installed)::

    python tests/data/make_golden.py            # rewrites tests/data/golden/
    python tests/data/make_golden.py OUTDIR     # writes the same files somewhere else

Output, one entry per case (message):

- ``<case>.frames``: the message's frames ``[header, buf_0, ...]`` (no topic frame), each
  written as an 8-byte little-endian unsigned length followed by the frame's bytes.
- ``<case>.<array>.bin``: the values each array must decode to, in C (row-major) order and
  little-endian byte order (booleans as 0/1 bytes), whatever the order and byte order on the
  wire.
- ``manifest.json``: ``{"cases": [{"name", "file", "arrays": [{"name", "dtype", "shape",
  "expected"}]}]}`` where ``dtype`` is the type string exactly as the header spells it.

The output is deterministic: a seeded RNG and fixed ``time``, ``session`` and ``source``. zstd
output can differ between zstd library versions; any such output is still a valid vector.
"""

from __future__ import annotations

import json
import shutil
import struct
import sys
from pathlib import Path
from typing import Any

import numpy as np
import zstandard

TIME = 1764095045.125
SESSION = "9f0c3a5e2b7d4c11"
SOURCE = "golden:4242"
SHAPE = (3, 5)
SEED = 20251125

# The spec's type strings, one-byte types first.
ONE_BYTE = ["|b1", "|i1", "|u1"]
MULTI_BYTE = ["<i2", "<i4", "<i8", "<u2", "<u4", "<u8", "<f2", "<f4", "<f8", "<c8", "<c16"]
ALL_DTYPES = ONE_BYTE + MULTI_BYTE


def tag(dtype: str) -> str:
    """The case-name spelling of a type string: ``<f8`` -> ``f8``, ``>f8`` -> ``be_f8``."""
    return ("be_" if dtype[0] == ">" else "") + dtype[1:]


# ---------------------------------------------------------------------------------------------
# Values that exercise each type.


def sample(dtype: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """An array of `shape` and `dtype` whose first elements are the type's awkward values."""
    dt = np.dtype(dtype)
    n = int(np.prod(shape, dtype=np.int64))
    if dt.kind == "b":
        flat = rng.integers(0, 2, size=n).astype(bool)
    elif dt.kind in "iu":
        info = np.iinfo(dt)
        flat = rng.integers(int(info.min), int(info.max), size=n, endpoint=True,
                            dtype=dt.newbyteorder("="))
        special = [info.min, info.max, 0, 1]
        if dt.kind == "i":
            special += [-1, info.min + 1, info.max - 1]
        else:
            special += [info.max - 1, 1 << (8 * dt.itemsize - 1)]
        k = min(n, len(special))
        flat[:k] = np.array(special[:k], dtype=flat.dtype)
    elif dt.kind == "f":
        info = np.finfo(dt)
        flat = (rng.standard_normal(n) * 100).astype(dt.newbyteorder("="))
        special = [np.nan, np.inf, -np.inf, -0.0, info.tiny, info.max, -info.max,
                   info.smallest_subnormal, info.eps]
        k = min(n, len(special))
        flat[:k] = np.array(special[:k], dtype=flat.dtype)
    elif dt.kind == "c":
        part = np.dtype(f"f{dt.itemsize // 2}")
        re = (rng.standard_normal(n) * 10).astype(part)
        im = (rng.standard_normal(n) * 10).astype(part)
        flat = np.empty(n, dtype=dt.newbyteorder("="))
        flat.real, flat.imag = re, im
        special = [complex(np.nan, 1.0), complex(1.0, np.inf), complex(-np.inf, -0.0),
                   complex(0.0, np.nan), complex(np.finfo(part).max, -np.finfo(part).tiny)]
        k = min(n, len(special))
        flat[:k] = np.array(special[:k], dtype=flat.dtype)
    else:
        raise ValueError(f"dtype: expected one of the spec's types, found {dtype!r}")
    return flat.reshape(shape).astype(dt)


def smooth_field(shape: tuple[int, int]) -> np.ndarray:
    """A smooth 2-D float64 field, the kind of data shuffle + zstd is made for."""
    y, x = np.meshgrid(np.linspace(0, 3, shape[0]), np.linspace(0, 5, shape[1]), indexing="ij")
    return 300.0 + 5.0 * np.sin(x) * np.cos(y) + 0.01 * x * y


# ---------------------------------------------------------------------------------------------
# The reference encoder, written from the spec's text.


def shuffle(data: bytes, itemsize: int) -> bytes:
    """The spec's byte shuffle: ``shuffled[j * n + i] = decoded[i * itemsize + j]``."""
    n = len(data) // itemsize
    src = np.frombuffer(data, dtype=np.uint8)
    out = np.empty(len(data), dtype=np.uint8)
    for j in range(itemsize):
        out[j * n:(j + 1) * n] = src[j::itemsize]
    return out.tobytes()


def zstd_frame(data: bytes, level: int = 3, checksum: bool = False) -> bytes:
    """One zstd frame that declares its content size."""
    cctx = zstandard.ZstdCompressor(level=level, write_content_size=True, write_checksum=checksum)
    frame = cctx.compress(data)
    assert zstandard.frame_content_size(frame) == len(data)
    return frame


class Spec:
    """One array as a case wants it on the wire."""

    def __init__(self, name: str, array: np.ndarray, order: str = "C", codec: str = "raw",
                 shuffled: bool = False, dtype_str: str | None = None,
                 explicit_filters: bool = False, extra: dict[str, Any] | None = None,
                 checksum: bool = False, chunk: int = 0) -> None:
        self.name = name
        self.chunk = chunk  # zstd-chunks: elements per chunk
        self.array = array
        self.order = order
        self.codec = codec
        self.shuffled = shuffled
        self.dtype_str = dtype_str or array.dtype.str
        self.explicit_filters = explicit_filters
        self.extra = extra or {}
        self.checksum = checksum

    def encode(self) -> tuple[dict[str, Any], bytes]:
        """The header entry and the buffer frame."""
        a = self.array
        decoded = a.tobytes(order=self.order)  # element order as the header says
        assert len(decoded) == a.size * a.dtype.itemsize
        body = shuffle(decoded, a.dtype.itemsize) if self.shuffled else decoded
        if self.codec == "zstd":
            body = zstd_frame(body, checksum=self.checksum)
        elif self.codec == "zstd-chunks":
            # The table (elements per chunk, each chunk's frame length), then the frames; each
            # chunk is its own elements, shuffled on their own.
            step = self.chunk * a.dtype.itemsize
            pieces = [decoded[at:at + step] for at in range(0, len(decoded), step)]
            frames = [zstd_frame(shuffle(p, a.dtype.itemsize) if self.shuffled else p)
                      for p in pieces]
            table = struct.pack(f"<{len(frames) + 1}Q", self.chunk, *map(len, frames))
            body = table + b"".join(frames)
        entry: dict[str, Any] = {
            "name": self.name,
            "dtype": self.dtype_str,
            "shape": list(a.shape),
            "order": self.order,
            "codec": self.codec,
        }
        if self.shuffled:
            entry["filters"] = ["shuffle"]
        elif self.explicit_filters:
            entry["filters"] = []
        entry["nbytes"] = len(decoded)
        entry.update(self.extra)
        return entry, body


class Case:
    """One message: a record name, its arrays and header details."""

    def __init__(self, name: str, record: str, arrays: list[Spec], seq: int | None = None,
                 attrs: dict[str, Any] | None = None, header_extra: dict[str, Any] | None = None,
                 time: float | int = TIME, indent: int | None = None) -> None:
        self.name = name
        self.record = record
        self.arrays = arrays
        self.seq = seq
        self.attrs = attrs
        self.header_extra = header_extra or {}
        self.time = time
        self.indent = indent

    def frames(self) -> list[bytes]:
        entries, bodies = [], []
        for spec in self.arrays:
            entry, body = spec.encode()
            entries.append(entry)
            bodies.append(body)
        header: dict[str, Any] = {
            "v": 1,
            "name": self.record,
            "source": SOURCE,
            "session": SESSION,
            "seq": self.seq,
            "time": self.time,
            "arrays": entries,
        }
        if self.attrs is not None:
            header["attrs"] = self.attrs
        header.update(self.header_extra)
        text = json.dumps(header, indent=self.indent, ensure_ascii=False, allow_nan=False)
        return [text.encode("utf-8")] + bodies


def expected_bytes(a: np.ndarray) -> bytes:
    """The .bin content: C order, little-endian, booleans as 0/1 bytes."""
    return np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<")).tobytes()


# ---------------------------------------------------------------------------------------------
# The cases.


def build_cases() -> list[Case]:
    rng = np.random.default_rng(SEED)
    cases: list[Case] = []
    seq = 0

    def add(case: Case) -> None:
        nonlocal seq
        if case.seq is None:
            case.seq = seq
        seq += 1
        cases.append(case)

    # Every dtype x order x codec x shuffle.
    for dtype in ALL_DTYPES:
        base = sample(dtype, SHAPE, rng)
        for order in ("C", "F"):
            a = np.asfortranarray(base) if order == "F" else base
            for codec in ("raw", "zstd"):
                for shuffled in (False, True):
                    name = f"{tag(dtype)}_{order}_{codec}" + ("_shuffle" if shuffled else "")
                    add(Case(name, tag(dtype), [Spec(tag(dtype), a, order, codec, shuffled)]))

    # Big-endian versions of every multi-byte dtype.
    for little in MULTI_BYTE:
        big = ">" + little[1:]
        a = sample(little, SHAPE, rng).astype(big)
        assert a.dtype.str == big
        for order, codec, shuffled in (("C", "raw", False), ("F", "raw", False),
                                       ("C", "zstd", True), ("F", "zstd", False)):
            arr = np.asfortranarray(a) if order == "F" else a
            name = f"{tag(big)}_{order}_{codec}" + ("_shuffle" if shuffled else "")
            add(Case(name, tag(big), [Spec(tag(big), arr, order, codec, shuffled)]))

    # One-byte types written with an explicit byte order, which readers accept.
    add(Case("onebyte_explicit_order", "onebyte", [
        Spec("u", sample("|u1", SHAPE, rng), dtype_str="<u1"),
        Spec("i", sample("|i1", SHAPE, rng), dtype_str=">i1", codec="zstd", shuffled=True),
        Spec("b", sample("|b1", SHAPE, rng), dtype_str=">b1", order="F"),
    ]))

    # 0-d arrays.
    add(Case("zero_d_f8_raw", "scalar", [Spec("scalar", np.array(-2.75, dtype="<f8"))]))
    add(Case("zero_d_c16_zstd_shuffle", "scalar", [
        Spec("scalar", np.array(1.5 - 2.25j, dtype="<c16"), codec="zstd", shuffled=True)]))
    add(Case("zero_d_be_i4_raw", "scalar", [Spec("scalar", np.array(-123456, dtype=">i4"))]))

    # Empty arrays: shape [0, 3].
    empty = np.zeros((0, 3), dtype="<f4")
    add(Case("empty_raw", "empty", [Spec("empty", empty)]))
    add(Case("empty_F_raw", "empty", [Spec("empty", np.asfortranarray(empty), order="F")]))
    add(Case("empty_zstd_shuffle", "empty", [Spec("empty", empty, codec="zstd", shuffled=True)]))

    # A record with no arrays at all.
    add(Case("no_arrays", "heartbeat", [], attrs={"alive": True}))

    # A multi-array record with attrs; one frame carries a checksum, which readers verify.
    field = smooth_field((4, 6))
    add(Case("multi_array_attrs", "state", [
        Spec("u", field, codec="zstd", shuffled=True, checksum=True),
        Spec("mask", np.asfortranarray(field > 302.0), order="F"),
        Spec("count", np.array(41, dtype="<i8")),
        Spec("spectrum", sample("<c8", (4, 3, 2), rng), codec="zstd"),
        Spec("ids", sample("<u2", (7,), rng), codec="raw", explicit_filters=True),
    ], attrs={"step": 41, "units": "K", "dt": 0.125, "tags": ["a", "b"],
              "nested": {"list": [1, 2.5, None, True], "text": "µ° ☃"}, "empty": {}}))

    # Unknown fields at the top level and in an entry, which every reader must ignore.
    add(Case("unknown_fields", "future", [
        Spec("future", sample("<f4", (4, 3, 2), rng), codec="zstd", shuffled=True,
             extra={"checksum": "xxh64:0123", "units": "m/s", "chunks": [[4, 3, 2]]}),
        Spec("raw3d", np.asfortranarray(sample("<i2", (4, 3, 2), rng)), order="F",
             extra={"compressor_hint": None}),
    ], header_extra={"host_info": {"cpu": "x", "cores": 8}, "trace_id": "abc", "v_minor": 3,
                     "priority": None}, indent=2))

    # Header details: integer time, a seq beyond 2**53, a non-ASCII record name.
    add(Case("time_integer", "tick", [Spec("tick", np.arange(6, dtype="<u4"))],
             time=1764095045))
    add(Case("seq_u64_max", "counter", [Spec("counter", np.arange(4, dtype="<i8"))],
             seq=2**64 - 1))
    add(Case("unicode_name", "température", [
        Spec("température", sample("<f8", (2, 2), rng), codec="zstd", shuffled=True)]))

    # A larger smooth field: more than one zstd block, where shuffle pays.
    add(Case("smooth_field_zstd_shuffle", "field", [
        Spec("field", smooth_field((130, 130)), codec="zstd", shuffled=True)]))

    # zstd-chunks: three chunks of 8192 float64 (64 KiB, the smallest allowed), the last
    # short, shuffled; and two chunks of a float32 field in F order.
    add(Case("smooth_field_zstd_chunks_shuffle", "field", [
        Spec("field", smooth_field((100, 200)), codec="zstd-chunks", shuffled=True, chunk=8192)]))
    add(Case("f4_F_zstd_chunks", "f4", [
        Spec("f4", smooth_field((200, 100)).astype("<f4"), "F", codec="zstd-chunks",
             chunk=16384)]))

    names = [c.name for c in cases]
    assert len(names) == len(set(names)), "case names must be unique"
    return cases


# ---------------------------------------------------------------------------------------------
# Writing.


def write(out: Path) -> int:
    """Writes every case into `out` (emptied first); returns the number of cases."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    manifest: dict[str, Any] = {"cases": []}
    for case in build_cases():
        frames = case.frames()
        with open(out / f"{case.name}.frames", "wb") as f:
            for frame in frames:
                f.write(struct.pack("<Q", len(frame)))
                f.write(frame)
        arrays = []
        for spec in case.arrays:
            expected = f"{case.name}.{spec.name}.bin"
            (out / expected).write_bytes(expected_bytes(spec.array))
            arrays.append({
                "name": spec.name,
                "dtype": spec.dtype_str,
                "shape": list(spec.array.shape),
                "expected": expected,
            })
        manifest["cases"].append({"name": case.name, "file": f"{case.name}.frames",
                                  "arrays": arrays})
    # One case per line, so a change to the vectors reads well in a diff.
    lines = [json.dumps(c, ensure_ascii=False) for c in manifest["cases"]]
    text = '{"cases": [\n' + ",\n".join(lines) + "\n]}\n"
    assert json.loads(text) == manifest
    (out / "manifest.json").write_text(text, encoding="utf-8")
    return len(manifest["cases"])


def main(argv: list[str]) -> int:
    if len(argv) > 2:
        print(f"usage: {argv[0]} [OUTDIR]", file=sys.stderr)
        return 2
    out = Path(argv[1]) if len(argv) == 2 else Path(__file__).resolve().parent / "golden"
    count = write(out)
    size = sum(p.stat().st_size for p in out.iterdir())
    print(f"wrote {count} cases, {size} bytes, to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

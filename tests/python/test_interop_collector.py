"""Python and Rust through a real `ndbridge collect` process on loopback.

- Rust publisher (``ndbridge send`` on .npy/.npz files) -> collector -> forward PUB -> Python
  :class:`ndbridge.Subscriber`: every dtype, both orders, every codec, 0-d, empty, big-endian and
  a 64 MiB array arrive bit-exactly, and the collector's stored files load equal with numpy.
- Python :class:`ndbridge.Publisher` -> collector: the same matrix, non-contiguous views and
  numpy scalars land on disk with the dtype sent (byte order included), described in
  ``manifest.jsonl``.
- The reader snippet of docs/wire-format.md, run verbatim, decodes the forward stream.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import numpy as np
import pytest
import zmq

import ndbridge
from collector_proc import (PROBE, Collector, bit_exact, recv_records, rust_send,
                            wait_subscribed)
from golden_io import socket, spec_recv_arrays
from samples import BIG_ENDIAN, DTYPES, sample

#: ``ndbridge send`` codec flags, by the name used in record sources.
RUST_CODECS = {
    "raw": ["--codec", "raw"],
    "zstd": ["--codec", "zstd"],                      # byte shuffle + zstd
    "zstd-noshuffle": ["--codec", "zstd", "--no-shuffle"],
}

#: Python Publisher settings, by the name used in record sources.
PY_CODECS = {
    "raw": {"codec": "raw"},
    "zstd": {"codec": "zstd"},
    "zstd-noshuffle": {"codec": "zstd", "shuffle": False},
    "auto": {"codec": "auto"},
    "auto-network": {"codec": "auto", "link": "network"},
}

BIG_BYTES = 64 << 20


def matrix() -> Dict[str, np.ndarray]:
    """The arrays every direction carries, by record name: each dtype in C and F order, the
    big-endian types, 0-d and empty arrays."""
    cases: Dict[str, np.ndarray] = {}
    for seed, dtype in enumerate(DTYPES + BIG_ENDIAN):
        tag = ("be_" if dtype[0] == ">" else "") + dtype[1:]
        a = sample(dtype, (5, 4, 3), seed=seed)
        cases[f"{tag}_C"] = np.ascontiguousarray(a)
        cases[f"{tag}_F"] = np.asfortranarray(a)
    cases.update({
        "zero_d_f8": np.array(-2.5),
        "zero_d_be_i4": np.array(-7, dtype=">i4"),
        "zero_d_c16": np.array(1.5 - 2j, dtype="<c16"),
        "zero_d_b1": np.array(True),
        "empty_C": np.zeros((0, 3), "<f4"),
        "empty_F": np.zeros((3, 0, 2), ">i8", order="F"),
        "empty_1d_u1": np.zeros(0, "|u1"),
    })
    for name, a in cases.items():
        if name.endswith("_F") and a.ndim > 1 and a.size > 0:
            assert a.flags.f_contiguous and not a.flags.c_contiguous, name
    return cases


MATRIX = matrix()

#: A multi-array record (an .npz file on the Rust side, a mapping on the Python side).
MULTI = {"u": sample("<f8", (6, 7), seed=40), "mask": sample("|b1", (6, 7), seed=41),
         "ids": np.asfortranarray(sample(">u4", (3, 5), seed=42)), "t": np.array(12.5)}


def big_array() -> np.ndarray:
    """64 MiB of float64: a smooth field with noise in the low bits, so every codec works."""
    rows, cols = 4096, BIG_BYTES // 8 // 4096
    smooth = np.add.outer(np.sin(np.linspace(0, 3, rows)), np.cos(np.linspace(0, 5, cols)))
    noise = np.random.default_rng(5).integers(0, 1 << 12, smooth.shape).astype(np.float64)
    return smooth + noise * 1e-12


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Collector]:
    """One collector for the module; it must reject nothing and exit cleanly."""
    c = Collector(tmp_path_factory.mktemp("interop") / "out")
    try:
        yield c
        # A publisher's end goes out when it closes, just after its last record: let the
        # collector read every session's end before it stops.
        c.wait_stored(lambda _: {(x["source"], x["session"]) for x in c.manifest()}
                      <= {(x["source"], x["session"]) for x in c.ends()},
                      "every session's end")
        stats = c.stop()["stats"]
    finally:
        c.kill()  # a no-op once stopped
    assert stats["rejected"] == 0 and stats["errors"] == {}, stats
    # Every message received is stored, but the ends of the publishers' sessions.
    ended = stats["session_ends"]
    assert stats["sink_errors"] == {} and stats["stored"] + ended == stats["received"], stats
    assert stats["sessions_not_ended"] == 0, stats


@pytest.fixture(scope="module")
def npy_files(tmp_path_factory: pytest.TempPathFactory) -> List[Path]:
    """MATRIX as .npy files written by numpy (named after the records), and MULTI as multi.npz."""
    d = tmp_path_factory.mktemp("npy")
    paths = []
    for name, a in MATRIX.items():
        np.save(d / f"{name}.npy", a)
        paths.append(d / f"{name}.npy")
    np.savez(d / "multi.npz", **MULTI)
    return paths + [d / "multi.npz"]


def expected_arrays(record_name: str) -> Dict[str, np.ndarray]:
    if record_name == "multi":
        return MULTI
    return {record_name: MATRIX[record_name]}


def check_entry(entry: Dict[str, Any], a: np.ndarray, codec: str, shuffled: bool) -> None:
    """A header entry (or the manifest's description of one) says what was sent."""
    assert entry["dtype"] == a.dtype.str and list(entry["shape"]) == list(a.shape)
    assert entry["codec"] == codec
    multibyte = a.dtype.itemsize > 1
    filters = entry["filters"] if "filters" in entry else (["shuffle"] if entry.get("shuffle")
                                                           else [])
    if multibyte:
        assert filters == (["shuffle"] if shuffled else []), entry
    else:
        assert filters in ([], ["shuffle"]), entry
    if a.ndim > 1 and a.size and not a.flags.c_contiguous:
        assert entry["order"] == "F", entry


def check_stored(collector: Collector, lines: List[Dict[str, Any]],
                 expected: Dict[str, Dict[str, np.ndarray]]) -> None:
    """Every record in `expected` (record name -> arrays) is stored once and loads equal."""
    by_name = {line["name"]: line for line in lines}
    assert sorted(by_name) == sorted(expected) and len(lines) == len(expected)
    for name, arrays in expected.items():
        line = by_name[name]
        path = collector.out / line["path"]
        assert path.name == f"{line['seq']}.{'npy' if len(arrays) == 1 else 'npz'}", line["path"]
        assert [e["name"] for e in line["arrays"]] == list(arrays), name
        if len(arrays) == 1:
            (array_name, a), = arrays.items()
            loaded = {array_name: np.load(path)}
        else:
            with np.load(path) as npz:
                assert npz.files == list(arrays), name
                loaded = {k: npz[k] for k in npz.files}
        for (array_name, a), entry in zip(arrays.items(), line["arrays"]):
            got = loaded[array_name]
            try:
                bit_exact(got, a)
            except AssertionError as e:
                raise AssertionError(f"{line['path']}: {array_name}: {e}") from None
            if a.ndim > 1 and a.size and a.flags.f_contiguous and not a.flags.c_contiguous:
                assert got.flags.f_contiguous, f"{line['path']}: stored in C order"
            assert entry["raw_bytes"] == a.nbytes and entry["dtype"] == a.dtype.str


# ---------------------------------------------------------------------------------------------
# Rust publisher -> collector -> Python Subscriber


@pytest.mark.parametrize("codec", list(RUST_CODECS))
def test_rust_send_to_python_subscriber(collector: Collector, npy_files: List[Path],
                                        ctx: zmq.Context, codec: str) -> None:
    source = f"rust-{codec}"
    with ndbridge.Subscriber(collector.forward, timeout_ms=10_000, context=ctx) as sub:
        wait_subscribed(sub, collector)  # before sending: PUB drops what nobody subscribed to
        log = rust_send(npy_files, collector.input, "--source", source, *RUST_CODECS[codec])
        assert f"delivered {len(npy_files)} messages" in log, log
        records = recv_records(sub, [p.stem for p in npy_files])
    sessions = {rec.session for rec in records.values()}
    assert len(sessions) == 1
    assert sorted(rec.seq for rec in records.values()) == list(range(len(npy_files)))
    for name, rec in records.items():
        assert rec.source == source and rec.attrs == {}
        expected = expected_arrays(name)
        assert list(rec.arrays) == list(expected), name
        for (array_name, a), entry in zip(expected.items(), rec.header["arrays"]):
            got = rec[array_name]
            try:
                bit_exact(got, a)
                check_entry(entry, a, "raw" if codec == "raw" else "zstd", codec == "zstd")
            except AssertionError as e:
                raise AssertionError(f"{name}.{array_name}: {e}") from None
            assert not got.flags.writeable
            if a.ndim > 1 and a.size and not a.flags.c_contiguous:
                assert got.flags.f_contiguous, f"{name}: F order not kept"
    lines = collector.wait_records(source, len(npy_files))
    check_stored(collector, lines, {p.stem: expected_arrays(p.stem) for p in npy_files})


@pytest.mark.parametrize("codec", ["raw", "zstd"])
def test_rust_send_large_array(collector: Collector, tmp_path: Path, ctx: zmq.Context,
                               codec: str) -> None:
    big = big_array()
    assert big.nbytes >= BIG_BYTES
    path = tmp_path / "field.npy"
    np.save(path, big)
    source = f"rust-big-{codec}"
    with ndbridge.Subscriber(collector.forward, names=["big", PROBE], timeout_ms=20_000,
                             context=ctx) as sub:
        wait_subscribed(sub, collector)
        rust_send([path], collector.input, "--name", "big", "--source", source,
                  *RUST_CODECS[codec])
        rec = recv_records(sub, ["big"])["big"]
    entry = rec.header["arrays"][0]
    assert (rec.source, entry["name"], entry["codec"]) == (source, "big", codec)
    if codec == "zstd":
        assert entry["filters"] == ["shuffle"]
    bit_exact(rec["big"], big)
    del rec
    line, = collector.wait_records(source, 1)
    assert line["arrays"][0]["raw_bytes"] == big.nbytes
    bit_exact(np.load(collector.out / line["path"]), big)


# ---------------------------------------------------------------------------------------------
# Python Publisher -> collector -> disk


def python_extras() -> Dict[str, Tuple[Any, np.ndarray]]:
    """Values that are not plain contiguous arrays, with the array the collector must store."""
    base = sample("<f8", (6, 8), seed=50)
    be = sample(">i2", (6, 8), seed=51)
    values: Dict[str, Any] = {
        "view_strided": base[::2, 1::3],
        "view_reversed_transpose": base.T[::-1],
        "view_column": base[:, 3],
        "view_broadcast": np.broadcast_to(base[0], (3, 8)),
        "view_big_endian": be[1::2, ::-3],
        "view_bool": sample("|b1", (5, 6), seed=52)[::2, ::2],
        "scalar_f8": np.float64(-2.5),
        "scalar_f2": np.float16(0.1),
        "scalar_i2": np.int16(-7),
        "scalar_u8": np.uint64(2**64 - 1),
        "scalar_b1": np.bool_(True),
        "scalar_c8": np.complex64(1 - 2j),
        "python_float": 4.25,
        "python_list": [[1, 2, 3], [4, 5, 6]],
    }
    out = {}
    for name, value in values.items():
        if isinstance(value, np.ndarray):
            assert not value.flags.c_contiguous and not value.flags.f_contiguous, name
        out[name] = (value, np.array(value, order="C"))
    return out


@pytest.mark.parametrize("codec", list(PY_CODECS))
def test_python_publisher_to_collector_disk(collector: Collector, codec: str) -> None:
    source = f"py-{codec}"
    extras = python_extras()
    expected: Dict[str, Dict[str, np.ndarray]] = {}
    with ndbridge.Publisher(collector.input, source=source, timeout=30,
                            **PY_CODECS[codec]) as pub:
        for name, a in MATRIX.items():
            pub.send(name, a, attrs={"case": name})
            expected[name] = {name: a}
        for name, (value, stored) in extras.items():
            pub.send(name, value, attrs={"case": name})
            expected[name] = {name: stored}
        pub.send("multi", MULTI, attrs={"case": "multi", "nested": {"units": "K", "n": [1, 2]}})
        expected["multi"] = MULTI
        session, sent = pub.session, pub.seq
    assert sent == len(expected)
    lines = collector.wait_records(source, sent)
    check_stored(collector, lines, expected)
    for seq, line in enumerate(sorted(lines, key=lambda x: x["seq"])):
        assert line["seq"] == seq and line["session"] == session and line["source"] == source
        ext = "npz" if line["name"] == "multi" else "npy"
        assert line["path"] == f"{source}/{line['name']}/{seq}.{ext}"
        assert line["attrs"]["case"] == line["name"]
        for entry, a in zip(line["arrays"], expected[line["name"]].values()):
            assert entry["order"] in ("C", "F") and entry["wire_bytes"] >= 0
            if codec == "raw":
                assert entry["codec"] == "raw" and entry["wire_bytes"] == a.nbytes
                assert entry["shuffle"] is False
            elif codec == "auto":  # a local link: raw
                assert entry["codec"] == "raw" and entry["shuffle"] is False
            elif codec == "auto-network":
                assert entry["codec"] in ("raw", "zstd")
            else:
                check_entry(entry, a, "zstd", codec == "zstd")
    multi = next(line for line in lines if line["name"] == "multi")
    assert multi["attrs"] == {"case": "multi", "nested": {"units": "K", "n": [1, 2]}}


def test_python_publisher_large_array(collector: Collector) -> None:
    big = big_array()
    with ndbridge.Publisher(collector.input, source="py-big", codec="raw",
                            timeout=30) as pub:
        pub.send("big", big)
    line, = collector.wait_records("py-big", 1)
    assert line["arrays"][0]["wire_bytes"] == big.nbytes
    bit_exact(np.load(collector.out / line["path"]), big)


# ---------------------------------------------------------------------------------------------
# The spec's snippet on the forward stream


def test_spec_snippet_reads_the_rust_forward_stream(collector: Collector, npy_files: List[Path],
                                                    ctx: zmq.Context) -> None:
    recv_arrays = spec_recv_arrays()  # extracted from docs/wire-format.md and executed
    sub = socket(ctx, zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(collector.forward)
    wait_subscribed(sub, collector)
    sources = {f"snippet-{codec}": flags for codec, flags in RUST_CODECS.items()}
    for source, flags in sources.items():
        rust_send(npy_files, collector.input, "--source", source, *flags)
    wanted = {(s, p.stem) for s in sources for p in npy_files}
    seen = set()
    while wanted - seen:
        header, arrays = recv_arrays(sub)  # the socket's receive timeout bounds the wait
        if header["name"] == PROBE:
            continue
        key = (header["source"], header["name"])
        assert key in wanted and key not in seen, key
        seen.add(key)
        expected = expected_arrays(header["name"])
        assert list(arrays) == list(expected)
        for array_name, a in expected.items():
            try:
                bit_exact(arrays[array_name], a)
            except AssertionError as e:
                raise AssertionError(f"{key}.{array_name}: {e}") from None

"""The run store (``ndbridge collect --out run.zarr``, the default ``--format zarr``) read back
from Python with zarr-python 3, xarray and :func:`ndbridge.open_store`, through a real
collector process on loopback.

- Every wire dtype, both byte orders, C and F order, 0-d and empty arrays, sent raw, zstd and
  shuffle + zstd (Rust and pure-Python publishers) read back bit-exactly with plain zarr,
  ``xr.open_zarr`` and ``open_store``; the index columns hold each record's seq, session,
  time and attrs; compressed frames are stored as they came (the bytes on disk are the
  wire's).
- A stream whose array changes shape, dtype, byte order or order mid-run keeps every record:
  each segment (``name~2``, ...) holds its own records and reads as fill elsewhere.
- A reader opening the store while a publisher sends sees whole records only, and a group
  whose arrays and columns all have the same length.
- ``kill -9`` of an acked collector loses no acknowledged record; a collector restarted on
  the store continues it, the earlier records untouched.
- Hostile source, record and array names write nothing outside the store and read back under
  their own names.

Skips when zarr 3 or xarray is not installed.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Set, Tuple

import numpy as np
import pytest

zarr = pytest.importorskip("zarr", minversion="3")
xr = pytest.importorskip("xarray")

import ndbridge  # noqa: E402
from collector_proc import WAIT_S, Collector  # noqa: E402
from samples import BIG_ENDIAN, DTYPES, sample  # noqa: E402

pytestmark = [
    # zarr warns that the journal is not a Zarr node and that numcodecs.shuffle is not in the
    # Zarr v3 specification: both are as the store documents them.
    pytest.mark.filterwarnings("ignore:Object at .* is not recognized:UserWarning"),
    pytest.mark.filterwarnings("ignore:Numcodecs codecs are not in the Zarr:UserWarning"),
]

#: The index columns of every record group.
COLUMNS = ("seq", "session", "time", "received", "attrs")

#: Characters a node name may hold: the escaped name's, and ``~`` of a suffix.
NODE_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.:+=@,%~")


# ---------------------------------------------------------------------------------------------
# A collector writing a store, and reading the store's metadata


class StoreCollector(Collector):
    """A running ``ndbridge collect --format zarr`` process writing the store `out`, its stderr
    to `log` (see :class:`collector_proc.Collector`). It commits every 500 ms and before each
    stats line (every 0.2 s)."""

    def __init__(self, out: Path, log: Path, bind: str = "tcp://127.0.0.1:*",
                 delivery: Optional[str] = None, extra_args: Sequence[str] = ()) -> None:
        super().__init__(out, extra_args, forward=False, bind=bind, delivery=delivery,
                         format="zarr", log=log, stats_every="0.2")

    def wait_committed(self, key: Tuple[str, str], count: int) -> None:
        """Waits until the store shows `count` records of group `key` (source, record)."""
        deadline = time.monotonic() + WAIT_S
        while committed(self.out).get(key, 0) < count:
            if self.proc.poll() is not None:
                raise AssertionError(f"the collector exited with {self.proc.returncode} while "
                                     f"waiting for {count} records of {key}; log:\n{self.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{key}: {committed(self.out).get(key, 0)} of {count} "
                                     f"records committed after {WAIT_S} s; log:\n{self.log()}")
            time.sleep(0.02)


@pytest.fixture
def collectors() -> Iterator[List[StoreCollector]]:
    """A list the test appends its collectors to; those still running are killed afterwards."""
    started: List[StoreCollector] = []
    yield started
    for c in started:
        c.kill()


def start(collectors: List[StoreCollector], out: Path, log_dir: Path,
          **kwargs: Any) -> StoreCollector:
    """Starts a collector on the store `out` (its log in `log_dir`) and keeps it for cleanup."""
    log_dir.mkdir(parents=True, exist_ok=True)
    c = StoreCollector(out, log_dir / f"collector-{len(collectors)}.log", **kwargs)
    collectors.append(c)
    return c


def committed(store: Path) -> Dict[Tuple[str, str], int]:
    """Records each group shows, by (source, record): the least length of its nodes as the
    group's ``zarr.json`` lists them in its consolidated metadata (each commit replaces that
    file at once), read from the files alone (no zarr, no ndbridge)."""
    found: Dict[Tuple[str, str], int] = {}
    for meta_path in store.glob("*/*/zarr.json"):
        try:
            meta = json.loads(meta_path.read_text())
            names = meta["attributes"]["ndbridge"]
            nodes = meta["consolidated_metadata"]["metadata"]
            lengths = [node["shape"][0] for node in nodes.values()]
        except (OSError, ValueError, KeyError):
            continue  # a node being created
        if lengths:
            found[(names["source"], names["record"])] = min(lengths)
    return found


def group_nodes(store: Path) -> Dict[Tuple[str, str], str]:
    """Each record group's node path (``<source node>/<record node>``), by its original names,
    as plain zarr lists them: the group attributes ``ndbridge.source`` / ``ndbridge.record``."""
    root = zarr.open_group(store, mode="r")
    assert root.attrs["ndbridge"] == {"store": 1}, dict(root.attrs)
    nodes: Dict[Tuple[str, str], str] = {}
    for source_node, source_group in root.groups():
        assert "source" in source_group.attrs["ndbridge"], source_node
        for record_node, group in source_group.groups():
            names = group.attrs["ndbridge"]
            assert names["source"] == source_group.attrs["ndbridge"]["source"], names
            key = (names["source"], names["record"])
            assert key not in nodes, f"{key} in two groups"
            nodes[key] = f"{source_node}/{record_node}"
    return nodes


def segments(group: Any) -> Dict[str, Any]:
    """A zarr group's record arrays (not the index columns), by node name."""
    return {name: a for name, a in group.arrays() if name not in COLUMNS}


# ---------------------------------------------------------------------------------------------
# Comparing values


def native(a: np.ndarray) -> np.ndarray:
    """`a` in native byte order, C-contiguous (the same bits, byte-swapped if needed)."""
    return np.ascontiguousarray(a.astype(a.dtype.newbyteorder("="), copy=False))


def same_bits(got: Any, expected: np.ndarray) -> Optional[str]:
    """Why `got` does not hold `expected`'s values bit for bit (byte order aside: a reader
    may hand out native order), or None. NaN, infinities and -0.0 compare by their bits."""
    got = np.asarray(got)
    if (got.dtype.kind, got.dtype.itemsize) != (expected.dtype.kind, expected.dtype.itemsize):
        return f"dtype {got.dtype.str}, expected {expected.dtype.str}"
    if got.shape != expected.shape:
        return f"shape {got.shape}, expected {expected.shape}"
    if native(got).tobytes() != native(expected).tobytes():
        return f"values {got.ravel()[:6]}..., expected {expected.ravel()[:6]}..."
    return None


def rows_by_seq(seqs: Any) -> Dict[int, int]:
    """Row of each seq (each seq once: asserted)."""
    seqs = [int(s) for s in np.asarray(seqs).tolist()]
    assert len(set(seqs)) == len(seqs), f"a seq stored twice: {sorted(seqs)}"
    return {s: i for i, s in enumerate(seqs)}


def is_fill(row: np.ndarray) -> bool:
    """True when `row` is all the fill value: NaN for floating types, else 0 (False)."""
    row = np.asarray(row)
    if row.dtype.kind in "fc":
        return bool(np.all(np.isnan(row)))
    return bool(np.all(row == 0))


# ---------------------------------------------------------------------------------------------
# 1. Every dtype, both orders, 0-d, every codec

#: Array layouts: shape and numpy order.
LAYOUTS = {"0d": ((), "C"), "C": ((2, 3, 4), "C"), "F": ((2, 3, 4), "F"), "F2": ((3, 5), "F"),
           "empty": ((0, 3), "C")}

#: Publisher settings, by source name.
ENCODINGS = {
    "raw": {"codec": "raw"},
    "zstd": {"codec": "zstd", "shuffle": False},
    "shuffle-zstd": {"codec": "zstd", "shuffle": True},
    "py-shuffle-zstd": {"codec": "zstd", "shuffle": True, "native": False},
}

#: Each record's attrs, by seq (seq 1 is sent without attrs).
ATTRS: Dict[int, Optional[Dict[str, Any]]] = {
    0: {"seq": 0, "text": "Grüße, 温度", "nested": {"list": [1, 2.5, None, True]}},
    1: None,
    2: {"seq": 2, "big": -1.5e300, "max": 2 ** 64 - 1},
}

#: A compressible array (512 KiB of zeros): its bytes on disk tell whether frames were stored
#: as they came.
ZEROS = np.zeros(1 << 16, "<f8")


def dtype_tag(dtype: str) -> str:
    """``f8`` / ``be_f8`` / ``b1``: a dtype in an array name."""
    return ("be_" if dtype[0] == ">" else "") + dtype[1:]


def dtype_record(seq: int) -> Dict[str, np.ndarray]:
    """Record `seq` of the dtype matrix: each dtype in each layout, values varying by seq."""
    arrays: Dict[str, np.ndarray] = {}
    for i, dtype in enumerate(DTYPES + BIG_ENDIAN):
        for layout, (shape, order) in LAYOUTS.items():
            seed = 1000 * seq + 10 * i + len(arrays) % 10
            if 0 in shape:
                a = np.zeros(shape, dtype)
            elif shape == ():
                # One of the extremes / NaN / infinities of the sample, a different one per seq.
                a = np.array(sample(dtype, (8,), seed=seed)[seq * 3 % 8], dtype=dtype)
            else:
                a = sample(dtype, shape, seed=seed)
                a = np.asfortranarray(a) if order == "F" else np.ascontiguousarray(a)
            arrays[f"{dtype_tag(dtype)}_{layout}"] = a
    arrays["zeros"] = ZEROS
    return arrays


def test_every_dtype_order_and_codec_reads_back_bit_exactly(tmp_path: Path,
                                                            collectors) -> None:
    """Shows that each wire dtype (bool, int8..int64, uint8..uint64, float16/32/64,
    complex64/128, little- and big-endian), in C and F order, 0-d and empty, sent raw, zstd
    and shuffle + zstd by the Rust and the pure-Python publisher, reads back bit-exactly (NaN,
    infinities and -0.0 included) with plain zarr, ``xr.open_zarr`` and ``open_store``, in the
    dtype sent (big-endian arrays stored big-endian, F order stored with a transpose codec);
    that the index columns hold each record's seq, session, attrs and a time within the run;
    and that compressed frames are stored as they came: no array decoded or re-encoded, a
    512 KiB array of zeros takes a few hundred bytes on disk."""
    store = tmp_path / "run.zarr"
    c = start(collectors, store, tmp_path / "logs")
    records = {seq: dtype_record(seq) for seq in ATTRS}
    sessions: Dict[str, str] = {}
    began = time.time()
    for source, settings in ENCODINGS.items():
        with ndbridge.Publisher(c.input, source=source, timeout=20, **settings) as pub:
            for seq, attrs in ATTRS.items():
                assert pub.send("all", records[seq], attrs=attrs) == seq
            sessions[source] = pub.session
    for source in ENCODINGS:
        c.wait_committed((source, "all"), len(ATTRS))
    stats = c.stop()
    ended = time.time()

    # Stored as they came: every non-empty array's frame is its inner chunk.
    store_stats = stats["sinks"]["store"]
    non_empty = sum(1 for a in records[0].values() if a.size > 0)
    assert store_stats["records"] == len(ENCODINGS) * len(ATTRS), store_stats
    assert store_stats["arrays_as_they_came"] == len(ENCODINGS) * len(ATTRS) * non_empty, \
        store_stats
    assert store_stats["arrays_decoded"] == store_stats["arrays_encoded"] == 0, store_stats

    nodes = group_nodes(store)
    assert sorted(nodes) == sorted((s, "all") for s in ENCODINGS)
    opened = ndbridge.open_store(store)
    assert sorted(opened) == sorted(nodes)
    problems: List[str] = []
    for source, settings in ENCODINGS.items():
        node = nodes[source, "all"]
        group = zarr.open_group(store, mode="r", path=node)
        assert group.attrs["ndbridge"] == {"source": source, "record": "all"}

        # The index columns, with plain zarr.
        seq = group["seq"][:]
        assert seq.dtype == np.uint64, seq.dtype
        rows = rows_by_seq(seq)
        assert sorted(rows) == sorted(ATTRS), f"{source}: seqs {sorted(rows)}"
        assert group["session"][:].tolist() == [sessions[source]] * len(ATTRS), source
        for s, row in rows.items():
            text = group["attrs"][row]
            text = str(text.item() if hasattr(text, "item") else text)
            assert (json.loads(text) if text else None) == ATTRS[s], (source, s, text)
        for column in ("time", "received"):
            values = group[column][:]
            assert values.dtype == np.float64, (column, values.dtype)
            assert np.all((values >= began - 1) & (values <= ended + 1)), (column, values)

        # Every array with plain zarr, then with xr.open_zarr and open_store.
        arrays = segments(group)
        assert sorted(arrays) == sorted(records[0]), f"{source}: nodes {sorted(arrays)}"
        via_xr = xr.open_zarr(store / node, chunks=None)
        ds = opened[source, "all"]
        assert ds.sizes["record"] == len(ATTRS)
        for reader, seqs in (("xr.open_zarr", via_xr["seq"].values), ("open_store", ds.seq.values)):
            assert rows_by_seq(seqs) == rows, f"{source} {reader}: seq column {seqs}"
        assert ds.session.values.tolist() == [sessions[source]] * len(ATTRS)
        assert {int(s): a for s, a in zip(ds.seq.values, ndbridge.record_attrs(ds))} == ATTRS
        assert np.issubdtype(ds.time.dtype, np.datetime64), ds.time.dtype
        assert np.issubdtype(ds.received.dtype, np.datetime64), ds.received.dtype
        for name, array in arrays.items():
            sent = records[0][name]
            ours = array.attrs["ndbridge"]
            expected_dtype = np.dtype(sent.dtype).str
            if ours["dtype"] != expected_dtype:
                problems.append(f"{source}/{name}: stored as {ours['dtype']}, sent "
                                f"{expected_dtype}")
            wire_order = "F" if sent.ndim > 1 and sent.size and not sent.flags.c_contiguous \
                else "C"
            if ours["order"] != wire_order:
                problems.append(f"{source}/{name}: order {ours['order']}, sent {wire_order}")
            if array.shape != (len(ATTRS), *sent.shape):
                problems.append(f"{source}/{name}: shape {array.shape}")
                continue
            got_zarr = array[:]
            got_xr = via_xr[name].values
            got_store = ds[name].values
            for s, row in rows.items():
                expected = records[s][name]
                for reader, got in (("zarr", got_zarr), ("xr.open_zarr", got_xr),
                                    ("open_store", got_store)):
                    why = same_bits(got[row], expected)
                    if why:
                        problems.append(f"{source}/{name} seq {s} via {reader}: {why}")

        # The zeros: a few hundred bytes on disk when they came compressed.
        shard_bytes = sum(p.stat().st_size for p in (store / node / "zeros").rglob("*")
                          if p.is_file() and p.name != "zarr.json")
        if settings["codec"] == "raw":
            assert shard_bytes >= len(ATTRS) * ZEROS.nbytes, (source, shard_bytes)
        else:
            assert shard_bytes < 16 << 10, (source, shard_bytes)
        def inner_codecs(array: str) -> List[Dict[str, Any]]:
            meta = json.loads((store / node / array / "zarr.json").read_text())
            assert meta["codecs"][0]["name"] == "sharding_indexed", meta["codecs"]
            assert meta["codecs"][0]["configuration"]["index_location"] == "start"
            return meta["codecs"][0]["configuration"]["codecs"]

        # Big-endian arrays stored big-endian; F order through a transpose codec.
        for array, endian in (("be_f8_C", "big"), ("f8_C", "little"), ("be_c16_F", "big")):
            found = [c["configuration"]["endian"] for c in inner_codecs(array)
                     if c["name"] == "bytes"]
            assert found == [endian], (source, array, found)
        assert [c["configuration"]["order"] for c in inner_codecs("i4_F")
                if c["name"] == "transpose"] == [[0, 3, 2, 1]], (source, inner_codecs("i4_F"))
        assert not [c for c in inner_codecs("i4_C") if c["name"] == "transpose"], source
        codecs = [c["name"] for c in inner_codecs("f8_C")]
        if settings["codec"] == "raw":
            expected_codecs = ["bytes"]
        elif settings["shuffle"]:
            expected_codecs = ["bytes", "numcodecs.shuffle", "zstd"]
        else:
            expected_codecs = ["bytes", "zstd"]
        assert codecs == expected_codecs, (source, codecs)
    assert not problems, f"{len(problems)} arrays differ:\n" + "\n".join(problems[:40])


# ---------------------------------------------------------------------------------------------
# 2. An array whose shape, dtype, byte order or order changes mid-run


def x_value(seq: int, dtype: str, shape: Tuple[int, ...], order: str) -> np.ndarray:
    """Array ``x`` of record `seq`: values from seq, in the type, shape and order given."""
    n = int(np.prod(shape))
    a = (np.arange(n) + 10 * seq + 1).reshape(shape).astype(dtype)
    return np.asfortranarray(a) if order == "F" else np.ascontiguousarray(a)


#: The stream's ``x`` by seq: (dtype, shape, order), or None for a record without ``x``.
X_PLAN: Dict[int, Optional[Tuple[str, Tuple[int, ...], str]]] = {
    0: ("<f8", (3,), "C"), 1: ("<f8", (3,), "C"), 2: ("<f8", (3,), "C"),
    3: ("<f8", (4,), "C"), 4: ("<f8", (4,), "C"),                          # shape
    5: ("<i4", (4,), "C"), 6: ("<i4", (4,), "C"),                          # dtype
    7: ("<f8", (2, 3), "C"),
    8: ("<f8", (2, 3), "F"), 9: ("<f8", (2, 3), "F"),                      # order
    10: (">f8", (4,), "C"),                                                # byte order
    11: ("<f8", (3,), "C"), 12: ("<f8", (3,), "C"),                        # back to the first
    13: None,                                                              # no x at all
    14: ("<i4", (4,), "C"),
}


def test_a_stream_whose_array_changes_keeps_every_record_in_segments(tmp_path: Path,
                                                                     collectors) -> None:
    """Shows that when array ``x`` of a stream changes shape, dtype, order or byte order, no
    record is dropped: each distinct (dtype, shape, order) is one segment array (``x``,
    ``x~2``, ...), which holds exactly the records sent with it (a change back goes into the
    earlier segment) and reads as fill (NaN, or 0 for integers) in every other row; array
    ``y``, unchanged, holds every record, and ``z``, sent by the first records only, reads as
    NaN after them. Then that ``open_store`` opens the group, every segment a variable."""
    store = tmp_path / "run.zarr"
    c = start(collectors, store, tmp_path / "logs")
    sent: Dict[int, Dict[str, np.ndarray]] = {}
    with ndbridge.Publisher(c.input, source="w0", timeout=20) as pub:
        for seq, plan in X_PLAN.items():
            arrays = {"y": np.array(seq, "<i8")}
            if plan is not None:
                arrays["x"] = x_value(seq, *plan)
            if seq < 5:
                arrays["z"] = np.full(2, seq + 0.5, "<f4")
            sent[seq] = arrays
            assert pub.send("s", arrays) == seq
    c.wait_committed(("w0", "s"), len(X_PLAN))
    c.stop()

    n = len(X_PLAN)
    node = group_nodes(store)["w0", "s"]
    group = zarr.open_group(store, mode="r", path=node)
    rows = rows_by_seq(group["seq"][:])
    assert sorted(rows) == sorted(X_PLAN), f"records lost: {sorted(set(X_PLAN) - set(rows))}"
    arrays = segments(group)
    for name, a in arrays.items():
        assert a.shape[0] == n, f"{name}: {a.shape[0]} records, the group has {n}"

    kinds = {plan for plan in X_PLAN.values() if plan is not None}
    x_nodes = {name: a for name, a in arrays.items() if a.attrs["ndbridge"]["array"] == "x"}
    assert sorted(x_nodes) == ["x"] + [f"x~{i}" for i in range(2, len(kinds) + 1)], \
        sorted(x_nodes)
    by_kind: Dict[Tuple[str, Tuple[int, ...], str], str] = {}
    for name, a in x_nodes.items():
        ours = a.attrs["ndbridge"]
        kind = (ours["dtype"], tuple(a.shape[1:]), ours["order"])
        assert kind in kinds, f"{name}: a segment of {kind}, never sent"
        assert kind not in by_kind, f"{kind} in two segments: {by_kind[kind]} and {name}"
        by_kind[kind] = name
    assert set(by_kind) == kinds
    for kind, name in by_kind.items():
        values = x_nodes[name][:]
        for seq, plan in X_PLAN.items():
            row = values[rows[seq]]
            if plan == kind:
                why = same_bits(row, sent[seq]["x"])
                assert why is None, f"{name} seq {seq}: {why}"
            else:
                assert is_fill(row), f"{name} seq {seq} (sent as {plan}): {row}, not fill"
    y = arrays["y"][:]
    assert [int(y[rows[s]]) for s in X_PLAN] == list(X_PLAN)
    z = arrays["z"][:]
    for seq in X_PLAN:
        if seq < 5:
            assert same_bits(z[rows[seq]], sent[seq]["z"]) is None, seq
        else:
            assert is_fill(z[rows[seq]]), (seq, z[rows[seq]])

    # open_store: every segment a variable of one Dataset.
    try:
        ds = ndbridge.open_store(store)["w0", "s"]
        error = None
    except ValueError as e:
        error = str(e)
    assert error is None, f"open_store cannot open a group whose array changed shape: {error}"
    assert ds.sizes["record"] == n
    store_rows = rows_by_seq(ds.seq.values)
    for kind, name in by_kind.items():
        var = "x" if name == "x" else name
        values = ds[var].values
        for seq, plan in X_PLAN.items():
            if plan == kind:
                assert same_bits(values[store_rows[seq]], sent[seq]["x"]) is None, (var, seq)
            else:
                assert is_fill(values[store_rows[seq]]), (var, seq)


# ---------------------------------------------------------------------------------------------
# 3. Reading while the collector writes

#: Records the publisher sends during the live-reading test, and its pace.
LIVE_RECORDS = 480
LIVE_RATE_HZ = 120


def live_record(seq: int) -> Dict[str, np.ndarray]:
    """Record `seq` of the live stream: every value derived from seq."""
    return {
        "v": np.full(8, seq, "<f8"),
        "m": np.asfortranarray((np.arange(12).reshape(3, 4) + 100 * seq).astype(">i4")),
        "s": np.array(seq / 2, "<f4"),
    }


def check_live_group(group: Any) -> Tuple[int, List[str]]:
    """Reads a record group with plain zarr as it is now, up to the shortest of its nodes: that
    length, and each record whose arrays are not what was sent with its seq."""
    arrays = dict(group.arrays())
    problems = []
    n = min(a.shape[0] for a in arrays.values())
    seqs = arrays["seq"][:n]
    for name in ("v", "m", "s"):
        if name not in arrays:
            continue
        values = arrays[name][:n]
        for row, seq in enumerate(seqs.tolist()):
            why = same_bits(values[row], live_record(seq)[name])
            if why:
                problems.append(f"zarr: record {row} (seq {seq}) {name}: {why}")
    return n, problems


def check_live_dataset(store: Path) -> Tuple[int, List[str]]:
    """Opens the store with ``open_store`` as it is now and loads the live group: its length
    and what is wrong."""
    try:
        ds = ndbridge.open_store(store)["live", "r"].load()
    except KeyError:
        return 0, []  # not yet created
    except ValueError as e:
        return 0, [f"open_store: {e}"]
    problems = []
    seqs = ds.seq.values.tolist()
    for name in ("v", "m", "s"):
        if name not in ds:
            continue
        values = ds[name].values
        for row, seq in enumerate(seqs):
            why = same_bits(values[row], live_record(seq)[name])
            if why:
                problems.append(f"open_store: record {row} (seq {seq}) {name}: {why}")
    attrs = ndbridge.record_attrs(ds)
    for seq, a in zip(seqs, attrs):
        if a != {"seq": seq}:
            problems.append(f"open_store: record seq {seq} attrs {a}")
    return len(seqs), problems


@pytest.mark.parametrize("delivery", ["fire-and-forget", "acked"])
def test_a_reader_during_the_run_sees_whole_records_and_equal_lengths(tmp_path: Path,
                                                                     collectors,
                                                                     delivery: str) -> None:
    """Shows that a reader opening the store while a publisher sends (about 120 records a
    second for 4 s; with acked delivery the collector commits every few milliseconds) sees,
    at every open: arrays and index columns of one length (what xarray needs to open the
    group: the readers open it hundreds of times, reading only the metadata), whole records
    only (every few opens, each array of each visible record holds what was sent with its
    seq, its attrs too, with plain zarr and ``open_store``), and the records of earlier opens
    still there in the same rows; and, after the collector stops, every record."""
    store = tmp_path / "run.zarr"
    c = start(collectors, store, tmp_path / "logs", delivery=delivery)
    failure: List[BaseException] = []
    done = threading.Event()

    def publish() -> None:
        try:
            with ndbridge.Publisher(c.input, source="live", delivery=delivery,
                                    timeout=20) as pub:
                period = 1 / LIVE_RATE_HZ
                next_at = time.monotonic()
                for seq in range(LIVE_RECORDS):
                    pub.send("r", live_record(seq), attrs={"seq": seq})
                    next_at += period
                    time.sleep(max(0.0, next_at - time.monotonic()))
        except BaseException as e:  # re-raised by the test
            failure.append(e)
        finally:
            done.set()

    thread = threading.Thread(target=publish, name="live-publisher")
    thread.start()
    problems: List[str] = []
    unequal: List[Dict[str, int]] = []  # the lengths seen by each open where they differ
    seen: List[int] = []  # the seq column at the longest open so far
    opens = full_checks = mid_run_opens = 0
    last_full = 0.0
    try:
        while ("live", "r") not in committed(store) and not done.is_set():
            time.sleep(0.01)
        node = group_nodes(store)["live", "r"]
        while not done.is_set():
            group = zarr.open_group(store, mode="r", path=node)
            lengths = {name: a.shape[0] for name, a in group.arrays()}
            opens += 1
            if len(set(lengths.values())) > 1:
                unequal.append(lengths)
            n = min(lengths.values())
            mid_run_opens += 0 < n < LIVE_RECORDS
            if time.monotonic() - last_full < 0.5:
                continue
            # Every half second: the records' values, with zarr and open_store.
            full_checks += 1
            _, found = check_live_group(group)
            problems.extend(f"open {opens}: {p}" for p in found)
            seqs = group["seq"][:n].tolist()
            if seqs[:len(seen)] != seen[:len(seqs)]:
                problems.append(f"open {opens}: the rows changed: {seen[:8]}... then "
                                f"{seqs[:8]}...")
            seen = seqs if len(seqs) > len(seen) else seen
            _, found = check_live_dataset(store)
            problems.extend(f"open {opens}: {p}" for p in found)
            last_full = time.monotonic()
    finally:
        thread.join(timeout=WAIT_S)
    if failure:
        raise failure[0]
    c.wait_committed(("live", "r"), LIVE_RECORDS)
    c.stop()
    n, found = check_live_dataset(store)
    assert not found and n == LIVE_RECORDS, (n, found[:5])
    assert sorted(ndbridge.open_store(store)["live", "r"].seq.values.tolist()) == \
        list(range(LIVE_RECORDS))
    assert mid_run_opens >= 3, f"only {mid_run_opens} opens during the run"
    if unequal:
        problems.insert(0, f"{len(unequal)} of {opens} opens saw nodes of different lengths, "
                           f"e.g. {unequal[0]}")
    assert not problems, (f"{len(problems)} problems in {opens} opens during the run "
                          f"({full_checks} reading the values):\n" + "\n".join(problems[:12]))


# ---------------------------------------------------------------------------------------------
# 4. kill -9 with acked delivery, and a restart on the same store


def acked_record(seq: int, offset: int = 0) -> Dict[str, np.ndarray]:
    """A record of the crash test: values from seq (and `offset`)."""
    return {"v": np.full(6, seq + offset, "<i8"),
            "w": np.asfortranarray(np.arange(6.0).reshape(2, 3) * (seq + offset))}


def check_acked_group(store: Path, source: str, offsets: Dict[str, int],
                      problems: List[str], when: str) -> List[Tuple[str, int]]:
    """Reads group (source, "r") with plain zarr (up to the shortest of its nodes) and with
    ``open_store``; checks every record's arrays against its (session, seq) (`offsets`: each
    session's value offset); returns the (session, seq) of each row, each once (asserted).
    Nodes of different lengths, and ``open_store`` failing, go to `problems`."""
    nodes = group_nodes(store)
    group = zarr.open_group(store, mode="r", path=nodes[source, "r"])
    lengths = {name: a.shape[0] for name, a in group.arrays()}
    if len(set(lengths.values())) > 1:
        problems.append(f"{when}: group {source!r}: nodes of different lengths {lengths}")
    n = min(lengths.values())
    keys = list(zip(group["session"][:n].tolist(), group["seq"][:n].tolist()))
    assert len(set(keys)) == len(keys), f"{when}: {source}: a record stored twice"
    readers = [("zarr", group["v"][:n], group["w"][:n])]
    try:
        ds = ndbridge.open_store(store)[source, "r"]
    except ValueError as e:
        problems.append(f"{when}: open_store({source!r}, 'r'): {e}")
    else:
        assert list(zip(ds.session.values.tolist(), ds.seq.values.tolist())) == keys, when
        readers.append(("open_store", ds["v"].values, ds["w"].values))
    for reader, v, w in readers:
        for row, (session, seq) in enumerate(keys):
            assert session in offsets, f"{when}: {source}: a record of unknown session {session}"
            expected = acked_record(seq, offsets[session])
            assert same_bits(v[row], expected["v"]) is None, (when, reader, source, session, seq)
            assert same_bits(w[row], expected["w"]) is None, (when, reader, source, session, seq)
    return keys


#: Times the crash test kills the collector and restarts it.
KILLS = 8


def test_kill_9_keeps_every_acknowledged_record_and_a_restart_continues(tmp_path: Path,
                                                                         collectors) -> None:
    """Shows, with acked delivery, that after ``kill -9`` of the collector while a publisher
    is sending (eight times, each time restarted on the same store and port), the store opens
    with zarr and ``open_store`` (its nodes of one length) and holds, intact, every record
    acknowledged before the kill: all of a publisher closed before the first, and at least as
    many of the running publisher's as it counted ``delivered``; that each restarted collector
    continues the store: the rows stored before a crash are unchanged, the running
    publisher's unacknowledged records are resent and stored once, a new session is appended;
    and that the journal ends each session with its record count."""
    store = tmp_path / "run.zarr"
    logs = tmp_path / "logs"
    problems: List[str] = []
    c = start(collectors, store, logs, delivery="acked")
    before = 40
    with ndbridge.Publisher(c.input, source="closed", delivery="acked", timeout=20) as p1:
        for seq in range(before):
            p1.send("r", acked_record(seq), attrs={"seq": seq})
        first_session = p1.session
    assert p1.stats()["delivered"] == before

    # A publisher sending while the collector is killed: its counts, taken after each send.
    counts: Dict[str, Any] = {"delivered": 0}
    stop = threading.Event()
    failure: List[BaseException] = []

    def run() -> None:
        try:
            with ndbridge.Publisher(c.input, source="running", delivery="acked",
                                    timeout=15) as pub:
                counts["session"] = pub.session
                while not stop.is_set():
                    pub.send("r", acked_record(pub.seq, 1000))
                    counts["delivered"] = pub.stats()["delivered"]
                    counts["sent"] = pub.seq
                    time.sleep(0.004)
            counts["final"] = pub.stats()
        except BaseException as e:
            failure.append(e)

    def wait_delivered(count: int) -> None:
        deadline = time.monotonic() + WAIT_S
        while counts["delivered"] < count and not failure:
            assert time.monotonic() < deadline, \
                f"{count} acknowledgements never came: {counts}; log:\n{collectors[-1].log()}"
            time.sleep(0.01)

    thread = threading.Thread(target=run, name="acked-publisher")
    thread.start()
    running_before: List[Tuple[str, int]] = []
    try:
        for kill in range(1, KILLS + 1):
            wait_delivered(counts["delivered"] + 40)
            acknowledged = counts["delivered"]  # acknowledged before the kill: a lower bound
            c.kill()
            when = f"after kill {kill}"
            offsets = {first_session: 0, counts["session"]: 1000}
            keys = check_acked_group(store, "closed", offsets, problems, when)
            assert sorted(keys) == [(first_session, s) for s in range(before)], when
            running = check_acked_group(store, "running", offsets, problems, when)
            assert len(running) >= acknowledged, \
                f"{when}: {acknowledged} acknowledged, {len(running)} in the store"
            assert running[:len(running_before)] == running_before, \
                f"{when}: the rows stored before kill {kill - 1} changed"
            running_before = running
            # Restart on the same store and port: the publisher resends what is not
            # acknowledged.
            c = start(collectors, store, logs, bind=c.input, delivery="acked")
        wait_delivered(counts["delivered"] + 40)
    finally:
        stop.set()
        thread.join(timeout=WAIT_S)
    if failure:
        raise failure[0]
    final = counts["final"]
    assert final["delivered"] == final["sent"] == counts["sent"], final
    after = 15
    with ndbridge.Publisher(c.input, source="closed", delivery="acked", timeout=20) as p3:
        for seq in range(after):
            p3.send("r", acked_record(seq, 500))
        third_session = p3.session
    c.stop()

    offsets[third_session] = 500
    keys = check_acked_group(store, "closed", offsets, problems, "at the end")
    assert keys[:before] == [k for k in keys if k[0] == first_session], \
        "the rows stored before the crashes moved"
    assert sorted(keys) == sorted([(first_session, s) for s in range(before)] +
                                  [(third_session, s) for s in range(after)])
    running = check_acked_group(store, "running", offsets, problems, "at the end")
    assert running[:len(running_before)] == running_before, \
        "the running publisher's rows stored before the last crash changed"
    assert sorted(running) == [(counts["session"], s) for s in range(counts["sent"])], \
        f"the running publisher's records, each once: {len(running)} of {counts['sent']}"
    ends = {(e["source"], e["session"]): e["end"]
            for e in ndbridge.open_store(store).journal() if "end" in e}
    assert ends == {("closed", first_session): before, ("closed", third_session): after,
                    ("running", counts["session"]): counts["sent"]}, ends
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems)


# ---------------------------------------------------------------------------------------------
# 5. Hostile names

#: Names that are paths, Zarr's or the store's own file names, index column names, names
#: that escape alike or to long nodes, and unicode.
HOSTILE = [
    "../../etc", "/abs", "zarr.json", "seq", "attrs", "__x", "a/b", "a%2Fb", "sessions.jsonl",
    ".", "..", ".hidden", "c", "seq~2", "record",
    "L" * 250, "L" * 249 + "M",        # long: the same first 120 bytes
    "Grüße/温度 \t\n", "é" * 128,       # unicode (256 bytes of UTF-8: the longest name)
]


def test_a_group_a_crash_left_half_created_is_skipped_and_then_removed(tmp_path: Path,
                                                                       collectors) -> None:
    """Shows that groups whose creation a killed collector cut short (directories without
    their ``zarr.json``, which is written last) are skipped by ``open_store`` and plain zarr,
    and removed by the next collector on the store, which then creates those groups whole."""
    store = tmp_path / "run.zarr"
    c = start(collectors, store, tmp_path / "logs")
    with ndbridge.Publisher(c.input, source="w", timeout=20) as pub:
        pub.send("r", {"v": np.arange(4.0)})
    c.wait_committed(("w", "r"), 1)
    c.stop()
    # A record group with its columns but not its own zarr.json, and an empty source group.
    half = [store / "w" / "state", store / "v"]
    (half[0] / "seq").mkdir(parents=True)
    meta = json.loads((store / "w" / "r" / "seq" / "zarr.json").read_text())
    (half[0] / "seq" / "zarr.json").write_text(json.dumps(meta))
    half[1].mkdir()

    assert list(ndbridge.open_store(store)) == [("w", "r")]
    assert sorted(group_nodes(store)) == [("w", "r")]
    c = start(collectors, store, tmp_path / "logs")
    for source in ("w", "v"):
        with ndbridge.Publisher(c.input, source=source, timeout=20) as pub:
            pub.send("state", {"v": np.arange(3.0)})
    for source in ("w", "v"):
        c.wait_committed((source, "state"), 1)
    c.stop()
    assert (half[0] / "zarr.json").exists() and (half[1] / "zarr.json").exists()
    opened = ndbridge.open_store(store)
    assert sorted(opened) == [("v", "state"), ("w", "r"), ("w", "state")]
    np.testing.assert_array_equal(opened["v", "state"]["v"].values, [np.arange(3.0)])


def hostile_arrays(offset: int) -> Dict[str, np.ndarray]:
    """One array per hostile name, values distinct by name and `offset`."""
    return {name: np.arange(2, dtype="<i8") + 10 * i + 1000 * offset
            for i, name in enumerate(HOSTILE)}


def walk(root: Path) -> Set[Path]:
    """Every file and directory below `root`."""
    found = set()
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            found.add(Path(directory) / name)
    return found


def test_hostile_names_stay_inside_the_store_and_read_back_under_their_names(
        tmp_path: Path, collectors) -> None:
    """Shows that source, record and array names such as ``../../etc``, ``/abs``,
    ``zarr.json``, ``seq``, ``__x``, ``a/b``, ``sessions.jsonl``, 250-byte and unicode names
    create nothing outside the store directory and no node that is a dot name or Zarr's
    ``__`` prefix; that the store's own files are intact; that plain zarr finds each group
    by its original names (group attributes) and each array by its (array attribute); and
    that ``open_store`` gives each record under its original (source, record) and each array
    as the variable of its own name, unless that name is an index column's (then its
    variable names the array in its attributes), a variable of a name never holding another
    array."""
    store = tmp_path / "deep" / "er" / "run.zarr"
    logs = tmp_path / "logs"
    logs.mkdir()
    store.parent.mkdir(parents=True)
    before = walk(tmp_path)
    abs_existed = Path("/abs").exists()
    c = start(collectors, store, logs)
    expected: Dict[Tuple[str, str], Dict[str, np.ndarray]] = {}
    for i, name in enumerate(HOSTILE):
        with ndbridge.Publisher(c.input, source=name, timeout=20) as pub:
            expected[name, "r"] = hostile_arrays(i)
            pub.send("r", expected[name, "r"], attrs={"name": name})
    with ndbridge.Publisher(c.input, source="w0", timeout=20) as pub:
        for i, name in enumerate(HOSTILE):
            expected["w0", name] = hostile_arrays(100 + i)
            pub.send(name, expected["w0", name], attrs={"name": name})
    for key in expected:
        c.wait_committed(key, 1)
    c.stop()

    # Nothing outside the store (but the collector's logs), no dot or "__" node.
    created = walk(tmp_path) - before
    outside = sorted(str(p) for p in created if store not in p.parents and p != store
                     and logs not in p.parents)
    assert not outside, f"written outside the store: {outside}"
    assert Path("/abs").exists() == abs_existed
    for path in walk(store):
        part = path.name
        assert not part.startswith(".") and not part.startswith("__"), path
        assert set(part) <= NODE_CHARS, f"node name with unsafe characters: {part!r}"
        assert len(part.encode()) <= 255, path
    root_meta = json.loads((store / "zarr.json").read_text())
    assert root_meta["node_type"] == "group" and root_meta["attributes"] == \
        {"ndbridge": {"store": 1}}, root_meta
    assert (store / "sessions.jsonl").is_file()
    journal = [json.loads(line) for line in
               (store / "sessions.jsonl").read_text(encoding="utf-8").splitlines()]
    assert {e["source"] for e in journal} == set(HOSTILE) | {"w0"}, journal

    # Plain zarr: groups by their attributes, arrays by theirs.
    nodes = group_nodes(store)
    assert sorted(nodes) == sorted(expected), sorted(set(nodes) ^ set(expected))
    for key, node in nodes.items():
        group = zarr.open_group(store, mode="r", path=node)
        texts = group["attrs"][:].tolist()
        assert [json.loads(t) for t in texts] == [{"name": key[0] if key[1] == "r"
                                                   else key[1]}], (key, texts)
        by_name = {}
        for node_name, a in segments(group).items():
            array_name = a.attrs["ndbridge"]["array"]
            assert array_name not in by_name, f"{key}: {array_name!r} in two nodes"
            by_name[array_name] = a[:]
        assert sorted(by_name) == sorted(expected[key]), key
        for name, values in by_name.items():
            assert same_bits(values[0], expected[key][name]) is None, (key, name)

    # open_store: under the original names.
    opened = ndbridge.open_store(store)
    assert sorted(opened) == sorted(expected)
    problems: List[str] = []
    for key, arrays in expected.items():
        ds = opened[key]
        assert ndbridge.record_attrs(ds) == [{"name": key[0] if key[1] == "r" else key[1]}]
        for name, sent in arrays.items():
            holders = [v for v in ds.variables
                       if ds[v].attrs.get("ndbridge", {}).get("array") == name]
            if len(holders) != 1:
                problems.append(f"{key}: array {name!r} in variables {holders}")
                continue
            if same_bits(ds[holders[0]].values[0], sent) is not None:
                problems.append(f"{key}: variable {holders[0]!r} (array {name!r}) differs")
            if name in COLUMNS:
                continue  # its variable cannot take the name of an index column
            if holders[0] != name:
                shown = ds[name].attrs.get("ndbridge", {}).get("array") if name in ds.variables \
                    else None
                problems.append(f"{key}: array {name!r} is variable {holders[0]!r}; variable "
                                f"{name!r} is " + (f"array {shown!r}" if name in ds.variables
                                                   else "missing"))
    assert not problems, f"{len(problems)} arrays not under their names:\n" + \
        "\n".join(problems[:12])

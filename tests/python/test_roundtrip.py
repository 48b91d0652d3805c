"""encode -> decode round trips: every dtype, order, codec and shuffle setting, the odd shapes,
the zero-copy claims, and the caller errors encode raises."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import ndbridge
from ndbridge.codec import shuffle, unshuffle
from golden_io import le_bytes
from samples import BIG_ENDIAN, DTYPES, sample


def same(a: np.ndarray, b: np.ndarray) -> bool:
    """Bit-exact equality of values, dtypes (byte order included) and shapes."""
    return a.dtype == b.dtype and a.shape == b.shape and le_bytes(a) == le_bytes(b)


def header_of(frames) -> dict:
    return json.loads(bytes(frames[0]))


@pytest.mark.parametrize("shuffle_on", [False, True], ids=["noshuffle", "shuffle"])
@pytest.mark.parametrize("codec", ["raw", "zstd", "auto"])
@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_round_trip(dtype: str, order: str, codec: str, shuffle_on: bool) -> None:
    a = sample(dtype)
    a = np.asfortranarray(a) if order == "F" else np.ascontiguousarray(a)
    frames = ndbridge.encode("x", a, codec=codec, shuffle=shuffle_on)
    entry = header_of(frames)["arrays"][0]
    assert entry["order"] == order
    assert entry["dtype"] == dtype
    assert entry["nbytes"] == a.nbytes
    if codec != "auto":
        assert entry["codec"] == codec
    assert entry.get("filters", []) == (["shuffle"] if shuffle_on else [])
    rec = ndbridge.decode(frames)
    assert same(rec["x"], a)
    assert not rec["x"].flags.writeable


@pytest.mark.parametrize("codec", ["raw", "zstd"])
@pytest.mark.parametrize("dtype", BIG_ENDIAN)
def test_big_endian_keeps_its_byte_order(dtype: str, codec: str) -> None:
    a = sample(dtype)
    assert a.dtype.str == dtype
    frames = ndbridge.encode("be", a, codec=codec)
    assert header_of(frames)["arrays"][0]["dtype"] == dtype
    got = ndbridge.decode(frames)["be"]
    assert got.dtype.str == dtype and same(got, a)
    native = ndbridge.decode(frames, native=True)["be"]
    assert native.dtype.isnative and not native.flags.writeable
    assert le_bytes(native) == le_bytes(a)


def test_default_shuffle_applies_only_to_compressed_multibyte_arrays() -> None:
    smooth = np.linspace(0.0, 1.0, 4096)
    entries = {c: header_of(ndbridge.encode("s", smooth, codec=c))["arrays"][0]
               for c in ("raw", "zstd", "auto")}
    assert "filters" not in entries["raw"]
    assert entries["zstd"]["filters"] == ["shuffle"]
    assert entries["auto"]["codec"] == "zstd" and entries["auto"]["filters"] == ["shuffle"]
    one_byte = header_of(ndbridge.encode("b", np.zeros(4096, np.uint8), codec="zstd"))
    assert "filters" not in one_byte["arrays"][0]


def test_auto_keeps_zstd_only_when_it_pays() -> None:
    noise = np.random.default_rng(1).integers(0, 256, 100_000, dtype=np.uint8)
    entry = header_of(ndbridge.encode("n", noise, codec="auto"))["arrays"][0]
    assert entry["codec"] == "raw" and "filters" not in entry
    zeros = np.zeros(100_000)
    entry = header_of(ndbridge.encode("z", zeros, codec="auto"))["arrays"][0]
    assert entry["codec"] == "zstd"
    empty = header_of(ndbridge.encode("e", np.zeros((0, 3)), codec="auto"))["arrays"][0]
    assert empty["codec"] == "raw"


def test_zero_d_and_numpy_scalars() -> None:
    for value in (np.float64(-2.5), np.int16(-7), np.bool_(True), np.complex64(1 - 2j),
                  np.array(3, dtype=">u4"), 4.25):
        for codec in ("raw", "zstd"):
            frames = ndbridge.encode("s", value, codec=codec)
            assert header_of(frames)["arrays"][0]["shape"] == []
            got = ndbridge.decode(frames)["s"]
            assert got.shape == () and same(got, np.asarray(value))


@pytest.mark.parametrize("codec", ["raw", "zstd", "auto"])
def test_empty_arrays(codec: str) -> None:
    for a in (np.zeros((0, 3), "<f4"), np.zeros((3, 0), ">i8", order="F"), np.zeros(0, bool)):
        frames = ndbridge.encode("e", a, codec=codec, shuffle=True)
        got = ndbridge.decode(frames)["e"]
        assert same(got, a)


def test_non_contiguous_views_are_made_contiguous_once() -> None:
    base = sample("<f8", (6, 8))
    for view in (base[::2, 1::3], base.T[::-1], base[:, 3], np.broadcast_to(base[0], (3, 8))):
        assert not view.flags.c_contiguous and not view.flags.f_contiguous
        got = ndbridge.decode(ndbridge.encode("v", view, codec="raw"))["v"]
        assert np.array_equal(got, view, equal_nan=True) and got.dtype == view.dtype


def test_f_contiguous_array_goes_as_order_f_without_copy() -> None:
    a = np.asfortranarray(sample("<i4", (5, 7)))
    frames = ndbridge.encode("f", a, codec="raw")
    assert header_of(frames)["arrays"][0]["order"] == "F"
    assert np.frombuffer(frames[1], np.uint8).ctypes.data == a.ctypes.data


def test_raw_encode_and_decode_do_not_copy() -> None:
    a = sample("<f8", (100, 100))
    frames = ndbridge.encode("u", a, codec="raw")
    assert isinstance(frames[1], memoryview)
    assert np.frombuffer(frames[1], np.uint8).ctypes.data == a.ctypes.data
    wire = [bytes(f) for f in frames]
    got = ndbridge.decode(wire)["u"]
    assert got.ctypes.data == np.frombuffer(wire[1], np.uint8).ctypes.data
    assert not got.flags.writeable and got.copy().flags.writeable


def test_decode_accepts_memoryview_bytearray_and_misaligned_buffers() -> None:
    a = sample("<c16", (3, 4))
    frames = [bytes(f) for f in ndbridge.encode("m", a, codec="raw")]
    # A buffer frame that starts one byte past an aligned address.
    backing = bytearray(len(frames[1]) + 1)
    backing[1:] = frames[1]
    misaligned = memoryview(backing)[1:]
    got = ndbridge.decode([memoryview(frames[0]), misaligned])["m"]
    assert got.ctypes.data % 16 != 0
    assert same(got, a) and not got.flags.writeable
    assert same(ndbridge.decode([bytearray(frames[0]), bytearray(frames[1])])["m"], a)


def test_multi_array_record_with_attrs_and_header_fields() -> None:
    arrays = {"u": sample("<f8", (4, 5)), "mask": np.asfortranarray(sample("|b1", (4, 5))),
              "n": np.int64(41), "spec": sample(">c8", (3,))}
    attrs = {"step": 41, "units": "K", "nested": {"x": [1, 2.5, None, True]}, "np": np.float32(2)}
    frames = ndbridge.encode("state", arrays, codec="auto", attrs=attrs, source="w1:9",
                             session="abcd", seq=12, time=1764095045.125)
    rec = ndbridge.decode(frames)
    assert (rec.name, rec.source, rec.session, rec.seq, rec.time) == \
        ("state", "w1:9", "abcd", 12, 1764095045.125)
    assert rec.attrs == {**attrs, "np": 2.0}
    assert rec.header["v"] == 1 and rec.header["attrs"] == rec.attrs
    assert list(rec.arrays) == list(arrays)
    for name, a in arrays.items():
        assert same(rec[name], np.asarray(a))


def test_record_without_arrays_and_defaults() -> None:
    rec = ndbridge.decode(ndbridge.encode("beat", {}))
    assert rec.arrays == {} and rec.attrs == {}
    assert rec.source == ndbridge.default_source()
    assert len(rec.session) == 16 and int(rec.session, 16) >= 0
    assert math.isfinite(rec.time) and rec.seq == 0


def test_unicode_names() -> None:
    rec = ndbridge.decode(ndbridge.encode("température", {"µ": np.arange(3)}))
    assert rec.name == "température" and np.array_equal(rec["µ"], np.arange(3))


def test_forced_shuffle_on_raw_and_one_byte_types() -> None:
    for dtype in ("|u1", "<f4"):
        a = sample(dtype, (9,))
        frames = ndbridge.encode("r", a, codec="raw", shuffle=True)
        entry = header_of(frames)["arrays"][0]
        assert entry["codec"] == "raw" and entry["filters"] == ["shuffle"]
        assert same(ndbridge.decode(frames)["r"], a)


def test_shuffle_layout_matches_the_spec_formula() -> None:
    data = np.arange(24, dtype=np.uint8).tobytes()  # 6 elements of 4 bytes
    n, itemsize = 6, 4
    shuffled = shuffle(data, itemsize)
    for i in range(n):
        for j in range(itemsize):
            assert shuffled[j * n + i] == data[i * itemsize + j]
    assert unshuffle(shuffled, itemsize).tobytes() == data


def test_strip_topic() -> None:
    frames = ndbridge.encode("température", np.arange(3.0))
    topic, rest = ndbridge.strip_topic(["température".encode()] + frames)
    assert topic == "température"
    assert ndbridge.decode(rest, topic=topic).name == "température"


@pytest.mark.parametrize("value, error, text", [
    (np.array(["a", "b"]), TypeError, "arrays['x'].dtype: expected bool"),
    (np.array([object()]), TypeError, "found object"),
    (np.zeros(2, dtype=[("a", "<f4")]), TypeError, "dtype"),
    (np.array(["2025-01-01"], dtype="datetime64[D]"), TypeError, "datetime64"),
    (np.ma.array([1.0, 2.0], mask=[False, True]), TypeError,
     "arrays['x']: expected a plain array, found a masked array (numpy.ma)"),
    (np.ma.array([1.0, 2.0]), TypeError, "found a masked array"),  # even with nothing masked
    (np.ma.masked, TypeError, "found a masked array"),
    ([1.0, "a", None], TypeError, "arrays['x'].dtype: expected numbers, found object (list"),
    ([[1, 2], [3]], TypeError, "arrays['x']: expected an array of numbers, found list that "
                               "numpy cannot make into one"),
    ({1, 2}, TypeError, "found object (set holding Python objects)"),
    ("text", TypeError, "arrays['x'].dtype: expected bool"),
])
def test_encode_rejects_types_the_format_cannot_carry(value, error, text) -> None:
    with pytest.raises(error, match=text.replace("[", r"\[").replace("]", r"\]")
                       .replace("(", r"\(").replace(")", r"\)")):
        ndbridge.encode("x", {"x": value})


# A 5 GiB array that takes no memory: every element is the same one.
HUGE = np.broadcast_to(np.float64(0), (5 << 27,))


@pytest.mark.parametrize("arrays, limits, text", [
    (HUGE, ndbridge.DEFAULT_LIMITS,
     "arrays['x']: nbytes 5368709120 exceeds the limit max_array_bytes=4294967296"),
    (np.zeros(129, np.uint8), ndbridge.Limits(max_array_bytes=128),
     "arrays['x']: nbytes 129 exceeds the limit max_array_bytes=128"),
    ({"a": np.zeros(100, np.uint8), "b": np.zeros(100, np.uint8)},
     ndbridge.Limits(max_message_bytes=150),
     "arrays: nbytes summed over the message 200 exceeds the limit max_message_bytes=150"),
    ({f"a{i}": np.zeros(1) for i in range(4)}, ndbridge.Limits(max_arrays=3),
     "arrays: count 4 exceeds the limit max_arrays=3"),
    (np.zeros((1,) * 4), ndbridge.Limits(max_ndim=3),
     "arrays['x']: ndim 4 exceeds the limit max_ndim=3"),
])
def test_encode_rejects_messages_over_the_limits(arrays, limits, text) -> None:
    with pytest.raises(ValueError, match=text.replace("[", r"\[").replace("]", r"\]")):
        ndbridge.encode("x", arrays, limits=limits)


def test_expansion_limit_on_arrays_over_64_mib() -> None:
    zeros = np.zeros(9 << 20)  # 72 MiB of one value: zstd makes it about 30,000 times smaller
    with pytest.raises(ValueError, match=r"arrays\['x'\]: decoded/compressed size ratio \d+ "
                                         r"exceeds the limit max_expansion=1024"):
        ndbridge.encode("x", zeros, codec="zstd")
    frames = ndbridge.encode("x", zeros, codec="auto")  # the reader would refuse it compressed
    assert header_of(frames)["arrays"][0]["codec"] == "raw" and len(frames[1]) == zeros.nbytes
    unlimited = ndbridge.Limits(max_expansion=2**64)
    frames = ndbridge.encode("x", zeros, codec="zstd", limits=unlimited)
    assert len(frames[1]) < zeros.nbytes // 1024
    with pytest.raises(ndbridge.LimitError, match=r"arrays\[0\]: decoded/compressed size ratio "
                                                  r"\d+ exceeds the limit max_expansion=1024"):
        ndbridge.decode(frames)
    assert same(ndbridge.decode(frames, limits=unlimited)["x"], zeros)
    small = np.zeros(8 << 20)  # 64 MiB: not held to the limit
    assert header_of(ndbridge.encode("x", small, codec="zstd"))["arrays"][0]["codec"] == "zstd"


def test_encode_checks_the_header_size_and_can_skip_the_checks() -> None:
    attrs = {"note": "x" * (1 << 20)}
    with pytest.raises(ValueError, match="header: bytes .* exceeds the limit "
                                         "max_header_bytes=1048576"):
        ndbridge.encode("x", np.zeros(1), attrs=attrs)
    frames = ndbridge.encode("x", np.zeros(1), attrs=attrs, limits=None)
    assert len(frames[0]) > 1 << 20
    with pytest.raises(ndbridge.LimitError, match="max_header_bytes"):
        ndbridge.decode(frames)  # what a reader with the default limits does with it


@pytest.mark.parametrize("kwargs, text", [
    ({"name": ""}, "name: expected a non-empty name"),
    ({"name": "a\0b"}, "name: expected a name without NUL"),
    ({"name": "x" * 257}, "name: expected at most 256 bytes"),
    ({"codec": "lz4"}, "codec: expected one of"),
    ({"codec": "zstd", "level": 99}, "level: expected an integer zstd level"),
    ({"shuffle": "yes"}, "shuffle: expected True, False or None"),
    ({"seq": -1}, "seq: expected a non-negative integer"),
    ({"attrs": {"bad": float("nan")}}, "attrs: expected JSON-serializable"),
    ({"attrs": {"bad": object()}}, "attrs: expected JSON-serializable"),
    ({"time": float("inf")}, "time: expected finite seconds"),
])
def test_encode_rejects_bad_arguments(kwargs, text) -> None:
    args = {"name": "x", "arrays": np.arange(3.0)}
    args.update(kwargs)
    with pytest.raises(ValueError, match=text):
        ndbridge.encode(args.pop("name"), args.pop("arrays"), **args)


def test_encode_rejects_bad_array_names_and_attrs_type() -> None:
    with pytest.raises(ValueError, match="arrays\\[''\\]: name expected a non-empty name"):
        ndbridge.encode("x", {"": np.arange(2)})
    with pytest.raises(TypeError, match="attrs: expected a mapping"):
        ndbridge.encode("x", np.arange(2), attrs=[1, 2])

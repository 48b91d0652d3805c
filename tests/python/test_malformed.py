"""Every kind of malformed message raises a WireError subclass whose message names the field,
what was expected and what was found; limits are enforced before anything is allocated."""

from __future__ import annotations

import copy
import json
import re
from typing import Any, Dict, List

import numpy as np
import pytest
import zstandard

import ndbridge
from ndbridge import native
import ndbridge.codec
from ndbridge import (CodecError, FrameError, HeaderError, LimitError, Limits, VersionError,
                      WireError)

U = np.arange(12, dtype="<f8").reshape(3, 4)


def base_header() -> Dict[str, Any]:
    return {"v": 1, "name": "u", "source": "t:1", "session": "00ff", "seq": 3, "time": 1.5,
            "arrays": [{"name": "u", "dtype": "<f8", "shape": [3, 4], "order": "C",
                        "codec": "raw", "nbytes": 96}],
            "attrs": {"k": 1}}


def message(header: Dict[str, Any], *buffers: bytes) -> List[bytes]:
    return [json.dumps(header).encode()] + list(buffers)


def zstd_header(**entry: Any) -> Dict[str, Any]:
    h = base_header()
    h["arrays"][0].update(codec="zstd", **entry)
    return h


def edit(path: str, value: Any = None, delete: bool = False) -> List[bytes]:
    """The valid raw message with one header field set (or deleted): path like 'arrays.0.dtype'."""
    h = copy.deepcopy(base_header())
    *parents, last = path.split(".")
    node: Any = h
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    key = int(last) if isinstance(node, list) else last
    if delete:
        del node[key]
    else:
        node[key] = value
    return message(h, U.tobytes())


def raises(frames, error: type, text: str, **kwargs: Any) -> WireError:
    """Checks that decoding `frames` raises `error` saying `text`, and that the Rust decoder of
    the native core (when built) raises the very same error."""
    with pytest.raises(error) as info:
        ndbridge.decode(frames, **kwargs)
    assert isinstance(info.value, WireError) and isinstance(info.value, ValueError)
    assert text in str(info.value), str(info.value)
    if native.AVAILABLE:
        with pytest.raises(type(info.value)) as rust:
            native.decode(frames, **kwargs)
        assert str(rust.value) == str(info.value)
    return info.value


def test_the_base_message_is_valid() -> None:
    rec = ndbridge.decode(message(base_header(), U.tobytes()))
    assert np.array_equal(rec["u"], U) and rec.attrs == {"k": 1}


# --- The header frame as a whole ------------------------------------------------------------

@pytest.mark.parametrize("header, text", [
    (b"{not json", "header: expected a JSON object, found text that is not JSON"),
    (b"", "header: expected a JSON object, found text that is not JSON"),
    (b"\xff\xfe{}", "header: expected UTF-8 JSON, found invalid UTF-8 at byte 0"),
    (b'{"v": 1, "time": NaN}', "NaN is not valid JSON"),
    (b"[1, 2]", "header: expected a JSON object, found list [1, 2]"),
    (b'"state"', 'header: expected a JSON object, found string "state"'),
    (b"[" * 100_000, "header: expected a JSON object"),
])
def test_header_not_a_json_object(header: bytes, text: str) -> None:
    raises([header], HeaderError, text)


@pytest.mark.parametrize("field", ["v", "name", "source", "session", "seq", "time", "arrays"])
def test_missing_header_field(field: str) -> None:
    raises(edit(field, delete=True), HeaderError, f"{field}: required field is missing")


@pytest.mark.parametrize("field", ["name", "dtype", "shape", "order", "codec", "nbytes"])
def test_missing_array_field(field: str) -> None:
    raises(edit(f"arrays.0.{field}", delete=True), HeaderError,
           f"arrays[0].{field}: required field is missing")


@pytest.mark.parametrize("version", [0, 2, 100])
def test_unknown_version(version: int) -> None:
    err = raises(edit("v", version), VersionError, f"v: format version {version} is not supported")
    assert err.version == version


@pytest.mark.parametrize("path, value, text", [
    ("v", "1", 'v: expected the integer 1, found string "1"'),
    ("v", True, "v: expected the integer 1, found boolean true"),
    ("v", 1.0, "v: expected the integer 1, found number 1.0"),
    ("name", "", 'name: expected a non-empty name, found ""'),
    ("name", "a\0b", "name: expected a name without NUL"),
    ("name", "é" * 129, "name: expected at most 256 bytes of UTF-8, found 258 bytes"),
    ("name", 5, "name: expected a string, found number 5"),
    ("source", None, "source: expected a string, found null"),
    ("session", ["x"], 'session: expected a string, found list ["x"]'),
    ("seq", -1, "seq: expected a non-negative integer below 2**64, found number -1"),
    ("seq", 1.5, "seq: expected a non-negative integer below 2**64, found number 1.5"),
    ("seq", False, "seq: expected a non-negative integer below 2**64, found boolean false"),
    ("seq", 2 ** 64, "seq: expected a non-negative integer below 2**64, found number "
                     "18446744073709551616"),
    ("time", "now", 'time: expected a number, found string "now"'),
    ("time", 10 ** 400, "time: expected seconds since the Unix epoch"),
    ("attrs", [1], "attrs: expected a JSON object, found list [1]"),
    ("attrs", "x", 'attrs: expected a JSON object, found string "x"'),
    ("arrays", {}, "arrays: expected a list, found object {}"),
    ("arrays.0", 7, "arrays[0]: expected a JSON object, found number 7"),
    ("arrays.0.name", "", 'arrays[0].name: expected a non-empty name, found ""'),
    ("arrays.0.shape", 12, "arrays[0].shape: expected a list of non-negative integers, found "
                           "number 12"),
    ("arrays.0.shape", [3, -4], "arrays[0].shape[1]: expected a non-negative integer, found "
                                "number -4"),
    ("arrays.0.shape", [3, 4.0], "arrays[0].shape[1]: expected a non-negative integer, found "
                                 "number 4.0"),
    ("arrays.0.shape", ["3", 4], 'arrays[0].shape[0]: expected a non-negative integer, found '
                                 'string "3"'),
    ("arrays.0.shape", [True, 12], "arrays[0].shape[0]: expected a non-negative integer, found "
                                   "boolean true"),
    ("arrays.0.shape", [0, 2 ** 62], "arrays[0].shape: expected axes whose non-zero lengths"),
    ("arrays.0.order", "A", 'arrays[0].order: expected "C" or "F", found \'A\''),
    ("arrays.0.codec", "lz4", 'arrays[0].codec: expected "raw", "zstd" or "zstd-chunks", found \'lz4\''),
    ("arrays.0.filters", ["delta"], 'arrays[0].filters[0]: expected one of [\'shuffle\'], '
                                    'found string "delta"'),
    ("arrays.0.filters", "shuffle", 'arrays[0].filters: expected a list of filter names'),
    ("arrays.0.filters", ["shuffle", "shuffle"], 'arrays[0].filters[1]: expected each filter at '
                                                 'most once, found string "shuffle" again (first '
                                                 'at filters[0])'),
    ("arrays.0.filters", ["shuffle", "delta"], "arrays[0].filters[1]: expected one of"),
    ("arrays.0.nbytes", -96, "arrays[0].nbytes: expected a non-negative integer below 2**64, "
                             "found number -96"),
    ("arrays.0.nbytes", "96", 'arrays[0].nbytes: expected a non-negative integer below 2**64, '
                              'found string'),
])
def test_bad_field(path: str, value: Any, text: str) -> None:
    raises(edit(path, value), HeaderError, text)


@pytest.mark.parametrize("dtype", ["<f16", "|f8", "<U4", "O", "f8", "|i2", "<b2", ">c32", "<f1",
                                   "<i02", "=f8", "<M8", "<f8 ", "", "<V8"])
def test_bad_dtype(dtype: str) -> None:
    err = raises(edit("arrays.0.dtype", dtype), HeaderError, "arrays[0].dtype: expected")
    assert repr(dtype.strip()[:32]) in str(err) or repr(dtype) in str(err)


def test_bad_dtype_type() -> None:
    raises(edit("arrays.0.dtype", 8), HeaderError,
           'arrays[0].dtype: expected a type string such as "<f8", found number 8')


@pytest.mark.parametrize("dtype", ["<u1", ">u1", "<i1", ">b1"])
def test_one_byte_types_accept_any_byte_order(dtype: str) -> None:
    h = base_header()
    h["arrays"][0].update(dtype=dtype, shape=[2], nbytes=2)
    got = ndbridge.decode(message(h, b"\x00\x01"))["u"]
    assert got.dtype == np.dtype(dtype) and got.tolist() in ([0, 1], [False, True])


def test_nbytes_mismatch_names_both_sizes() -> None:
    h = base_header()
    h["arrays"][0].update(shape=[9999], nbytes=80000)
    err = raises(message(h, bytes(80000)), HeaderError, "")
    assert str(err) == "arrays[0].nbytes: 80000 declared, shape and dtype give 79992"
    assert err.field == "arrays[0].nbytes"


def test_duplicate_array_names() -> None:
    h = base_header()
    h["arrays"].append(dict(h["arrays"][0]))
    raises(message(h, U.tobytes(), U.tobytes()), HeaderError,
           "arrays[1].name: expected a name unique in the record, found 'u' again (first at "
           "arrays[0])")


def test_unknown_fields_are_ignored() -> None:
    h = base_header()
    h["future"] = {"x": [1, 2]}
    h["arrays"][0]["checksum"] = "abc"
    assert np.array_equal(ndbridge.decode(message(h, U.tobytes()))["u"], U)


def test_attrs_null_is_no_attrs() -> None:
    assert ndbridge.decode(edit("attrs", None)).attrs == {}


# --- Frames ---------------------------------------------------------------------------------

def test_no_frames() -> None:
    raises([], FrameError, "frames: expected a header frame, found no frames")


@pytest.mark.parametrize("buffers", [[], [U.tobytes(), b""]])
def test_frame_count(buffers: List[bytes]) -> None:
    raises(message(base_header(), *buffers), FrameError,
           f"frames: expected 2 frames (the header and 1 buffer(s)), found {len(buffers) + 1}")


@pytest.mark.parametrize("size", [95, 97, 0])
def test_raw_buffer_length(size: int) -> None:
    raises(message(base_header(), bytes(size)), FrameError,
           f"arrays[0]: raw buffer frame holds {size} bytes, nbytes declares 96")


def test_raw_shuffled_buffer_length() -> None:
    raises(message(base_header(), bytes(100)), FrameError, "holds 100 bytes")


def test_invalid_boolean_bytes() -> None:
    h = base_header()
    h["arrays"][0].update(dtype="|b1", shape=[4], nbytes=4)
    raises(message(h, b"\x00\x01\x02\x01"), WireError,
           "arrays[0]: boolean elements must be bytes 0 or 1, found 2 at element 2")


def test_topic_must_be_the_record_name() -> None:
    raises(message(base_header(), U.tobytes()), WireError,
           "topic: expected the record name 'u', found 'uv'", topic="uv")
    with pytest.raises(FrameError, match="topic"):
        ndbridge.strip_topic([b"\xff", b"{}"])
    with pytest.raises(FrameError, match="frames: expected a topic frame and a header frame"):
        ndbridge.strip_topic([b"u"])


def test_frames_must_be_buffers() -> None:
    with pytest.raises(TypeError, match=r"frames\[1\]: expected bytes, zmq.Frame"):
        ndbridge.decode([json.dumps(base_header()).encode(), 12345])


# --- zstd -----------------------------------------------------------------------------------

def zstd(data: bytes, content_size: bool = True) -> bytes:
    return zstandard.ZstdCompressor(write_content_size=content_size).compress(data)


def test_zstd_valid() -> None:
    got = ndbridge.decode(message(zstd_header(), zstd(U.tobytes())))["u"]
    assert np.array_equal(got, U)


@pytest.mark.parametrize("frame, text", [
    (b"garbage!" * 4, "arrays[0]: expected a zstd frame, found 32 bytes starting 6761726261676521"),
    (b"", "arrays[0]: expected a zstd frame, found 0 bytes starting (empty)"),
    (zstd(U.tobytes())[:5], "arrays[0]: expected a zstd frame"),
])
def test_zstd_not_a_frame(frame: bytes, text: str) -> None:
    raises(message(zstd_header(), frame), CodecError, text)


def test_zstd_content_size_missing() -> None:
    raises(message(zstd_header(), zstd(U.tobytes(), content_size=False)), CodecError,
           "arrays[0]: zstd frame does not declare its content size; expected 96 (nbytes)")


def test_zstd_content_size_mismatch() -> None:
    raises(message(zstd_header(), zstd(bytes(100))), CodecError,
           "arrays[0]: zstd content size 100 declared, nbytes declares 96")


@pytest.mark.parametrize("mangle", ["truncate", "corrupt", "trailing", "two_frames"])
def test_zstd_corrupt(mangle: str) -> None:
    good = zstd(U.tobytes())
    if mangle == "truncate":
        frame = good[:-3]
    elif mangle == "corrupt":
        frame = good[:8] + bytes(b ^ 0x5A for b in good[8:])
    elif mangle == "trailing":
        frame = good + b"\x00"
    else:
        frame = good + good
    raises(message(zstd_header(), frame), CodecError, "arrays[0]: ")


@pytest.mark.parametrize("extra", [b"zz", None])
def test_zstd_empty_frame_must_be_exactly_one_frame(extra) -> None:
    h = zstd_header()
    h["arrays"][0].update(shape=[0, 3], nbytes=0)
    empty = zstd(b"")
    assert ndbridge.decode(message(h, empty))["u"].shape == (0, 3)
    frame = empty + extra if extra else empty[:-1]
    raises(message(h, frame), CodecError, "expected exactly one complete zstd frame")


class NoDecompressor:
    """Stands in for the zstd context: any use fails the test."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError("decompression started before the sizes were checked")


@pytest.fixture
def no_decompress(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ndbridge.codec, "_decompressor", lambda: NoDecompressor())


def test_content_size_checked_before_decompressing(no_decompress: None) -> None:
    h = zstd_header()
    # A small frame (zeros compress well) that decompresses to far more than nbytes.
    raises(message(h, zstd(bytes(1 << 20))), CodecError,
           "zstd content size 1048576 declared, nbytes declares 96")
    raises(message(h, zstd(b"x", content_size=False)), CodecError, "does not declare")


def test_nbytes_limit_checked_before_anything(no_decompress: None) -> None:
    h = zstd_header()
    h["arrays"][0].update(shape=[1 << 30], nbytes=8 << 30)  # 8 GiB claimed, default limit 4 GiB
    err = raises(message(h, zstd(b"x")), LimitError,
                 "arrays[0].nbytes: decoded size 8589934592 exceeds the limit "
                 "max_array_bytes=4294967296")
    assert (err.limit, err.value, err.maximum) == ("max_array_bytes", 8 << 30, 4 << 30)


# --- Limits ---------------------------------------------------------------------------------

def test_header_size_limit() -> None:
    h = base_header()
    h["attrs"] = {"pad": "x" * (1 << 20)}
    raises(message(h, U.tobytes()), LimitError, "header: size in bytes")
    raises(message(base_header(), U.tobytes()), LimitError,
           "exceeds the limit max_header_bytes=100", limits=Limits(max_header_bytes=100))


def test_array_count_limit() -> None:
    h = base_header()
    entry = h["arrays"][0]
    h["arrays"] = [dict(entry, name=f"a{i}", shape=[0], nbytes=0) for i in range(4097)]
    raises(message(h, *[b""] * 4097), LimitError,
           "arrays: array count 4097 exceeds the limit max_arrays=4096")
    h["arrays"] = h["arrays"][:3]
    raises(message(h, b"", b"", b""), LimitError, "max_arrays=2", limits=Limits(max_arrays=2))


def test_ndim_limit() -> None:
    h = base_header()
    h["arrays"][0].update(shape=[1] * 65, nbytes=8)
    raises(message(h, bytes(8)), LimitError,
           "arrays[0].shape: dimension count 65 exceeds the limit max_ndim=64")
    h["arrays"][0].update(shape=[1] * 3)
    raises(message(h, bytes(8)), LimitError, "max_ndim=2", limits=Limits(max_ndim=2))


def test_array_size_limit_is_configurable() -> None:
    frames = message(base_header(), U.tobytes())
    raises(frames, LimitError, "decoded size 96 exceeds the limit max_array_bytes=64",
           limits=Limits(max_array_bytes=64))
    assert ndbridge.decode(frames, limits=Limits(max_array_bytes=96))["u"].shape == (3, 4)


# --- Nothing but WireError, whatever the bytes ----------------------------------------------

def test_mutated_messages_raise_only_wire_errors() -> None:
    rng = np.random.default_rng(3)
    header = base_header()
    header["arrays"].append({"name": "z", "dtype": ">i4", "shape": [2, 3], "order": "F",
                             "codec": "zstd", "filters": ["shuffle"], "nbytes": 24})
    originals = [json.dumps(header).encode(), U.tobytes(),
                 zstd(ndbridge.codec.shuffle(np.arange(6, dtype=">i4").tobytes(), 4).tobytes())]
    ndbridge.decode(originals)
    outcomes = {"ok": 0, "error": 0}
    for _ in range(3000):
        frames = [bytearray(f) for f in originals]
        k = int(rng.integers(0, len(frames)))
        f = frames[k]
        action = rng.integers(0, 4)
        if action == 0 and f:
            f[int(rng.integers(0, len(f)))] ^= 1 << int(rng.integers(0, 8))
        elif action == 1 and f:
            del f[int(rng.integers(0, len(f))):]
        elif action == 2:
            f.insert(int(rng.integers(0, len(f) + 1)), int(rng.integers(0, 256)))
        else:
            frames = frames[:int(rng.integers(0, len(frames) + 1))]
        try:
            ndbridge.decode([bytes(x) for x in frames])
            outcomes["ok"] += 1
        except WireError:
            outcomes["error"] += 1
    assert outcomes["error"] > 1000 and outcomes["ok"] > 0


def test_messages_name_the_field_for_every_header_path() -> None:
    # A structural check on the messages: "<field>: <detail>", field the path that was wrong.
    err = raises(edit("arrays.0.codec", "lz4"), HeaderError, "")
    assert re.fullmatch(r"arrays\[0\]\.codec: .+", str(err)) and err.field == "arrays[0].codec"


def test_total_decoded_size_of_a_message_is_limited(no_decompress: None) -> None:
    # Three small zstd frames claiming 96 bytes each: 288 in all, over a limit of 200. Refused
    # from the header alone, as the Rust decoder does.
    h = zstd_header()
    entry = h["arrays"][0]
    h["arrays"] = [dict(entry, name=n) for n in ("a", "b", "c")]
    err = raises(message(h, *[zstd(bytes(96))] * 3), LimitError, "exceeds the limit max_message_bytes=200",
                 limits=Limits(max_message_bytes=200))
    assert (err.limit, err.value, err.maximum) == ("max_message_bytes", 288, 200)


def chunks_message(per: int, lengths: List[int], body: bytes, n: int = 16384) -> List[bytes]:
    """A float64 array of `n` elements as ``zstd-chunks``: the table, then `body`."""
    h = base_header()
    h["arrays"][0].update(shape=[n], codec="zstd-chunks", nbytes=n * 8)
    table = np.array([per] + lengths, "<u8").tobytes()
    return message(h, table + body)


def test_zstd_chunks_decode_and_bad_tables_are_refused_naming_what_is_wrong() -> None:
    field = np.sin(np.arange(16384) * 0.01)
    parts = [zstandard.ZstdCompressor(write_content_size=True).compress(p.tobytes())
             for p in (field[:8192], field[8192:])]
    good = chunks_message(8192, [len(p) for p in parts], b"".join(parts))
    for decode in (ndbridge.decode,) + ((native.decode,) if native.AVAILABLE else ()):
        np.testing.assert_array_equal(decode(good)["u"], field)
    lengths, body = [len(p) for p in parts], b"".join(parts)
    raises(chunks_message(0, lengths, body), CodecError, "0 elements per chunk")
    raises(chunks_message(16, [1] * 1024, b"\0" * 1024), CodecError, "allowed only alone")
    raises(chunks_message(8192, lengths[:1], body), CodecError, "runs past")
    raises(chunks_message(8192, [lengths[0], lengths[1] + 5], body), CodecError, "runs past")
    raises(chunks_message(8192, lengths, body + b"\0"), CodecError, "end at byte")
    # Each chunk's frame must declare the chunk's own size.
    raises(chunks_message(16384, [len(parts[0])], parts[0]), CodecError,
           "content size 65536 declared, nbytes declares 131072")

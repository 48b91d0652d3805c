"""The native core (``ndbridge._native``, the Rust crate as an extension module): its encoder
writes the pure-Python encoder's bytes, its decoder reads what the pure one reads, and its
publisher (the Rust publisher) delivers every record to a collector, also from a script that
ends without closing, and releases every numpy array it held.

Skipped as a whole when the package was installed without the native module (no Rust
toolchain, or ``NDBRIDGE_NATIVE=0``).
"""

from __future__ import annotations

import gc
import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import pytest
import zmq

import ndbridge
from ndbridge import native
from collector_proc import Collector
from golden_io import REPO

pytestmark = pytest.mark.skipif(not native.AVAILABLE,
                                reason="ndbridge._native is not built (pure-Python install)")

#: Fields that would otherwise differ between two encodes.
FIXED = dict(source="w1", session="0123456789abcdef", seq=41, time=1700000000.25)

DTYPES = ["|b1", "|u1", "|i1", "<i2", "<u2", "<i4", "<u4", "<i8", "<u8", "<f2", "<f4", "<f8",
          ">f8", ">i4", "<c8", "<c16"]
SHAPES = [(0,), (7,), (3, 4), (5, 6, 7)]


def sample(dtype: str, shape: tuple, seed: int = 0) -> np.ndarray:
    """A smooth field (compressible, with noisy low-order bytes) of `dtype` and `shape`."""
    n = int(np.prod(shape))
    x = np.sin(np.linspace(0.0, 8.0, n) + seed) * 1000
    dt = np.dtype(dtype)
    if dt.kind == "b":
        values = x > 0
    elif dt.kind == "c":
        values = x + 1j * np.cos(x)
    elif dt.kind in "iu":
        values = np.abs(x) if dt.kind == "u" else x
    else:
        values = x
    return np.asarray(values).astype(dt).reshape(shape)


def variants(array: np.ndarray) -> Dict[str, np.ndarray]:
    """The array as C-contiguous, F-contiguous and strided (neither)."""
    out = {"C": np.ascontiguousarray(array), "F": np.asfortranarray(array)}
    if array.ndim >= 1 and array.shape[0] >= 2:
        out["strided"] = np.concatenate([array, array])[::2]
    return out


def as_bytes(frames: List[Any]) -> List[bytes]:
    return [bytes(memoryview(f)) for f in frames]


CODECS = [("raw", None), ("raw", True), ("raw", False), ("zstd", None), ("zstd", True),
          ("zstd", False), ("auto", None), ("auto", True)]


@pytest.mark.parametrize("codec, shuffle", CODECS,
                         ids=[f"{c}-shuffle{s}" for c, s in CODECS])
def test_native_encode_writes_the_pure_encoders_bytes(codec: str, shuffle: Any) -> None:
    cases = 0
    for dtype in DTYPES:
        for shape in SHAPES:
            for order, array in variants(sample(dtype, shape)).items():
                kwargs = dict(codec=codec, shuffle=shuffle, level=1,
                              attrs={"step": 3, "dt": 0.5, "label": "ü"}, **FIXED)
                pure = as_bytes(ndbridge.encode("u", array, **kwargs))
                fast = as_bytes(native.encode("u", array, **kwargs))
                assert fast == pure, f"{dtype} {shape} {order}"
                cases += 1
    assert cases == len(DTYPES) * len(SHAPES) * 3 - len(DTYPES)  # no strided (0,) case


def test_native_encode_of_a_multi_array_record_writes_the_pure_encoders_bytes() -> None:
    record = {"rho": sample("<f4", (64, 64)), "flags": sample("|u1", (100,)),
              "step": np.int64(12), "v": sample(">f8", (8, 3, 2)).T}
    for codec in ("raw", "zstd", "auto"):
        pure = as_bytes(ndbridge.encode("state", record, codec=codec, **FIXED))
        fast = as_bytes(native.encode("state", record, codec=codec, **FIXED))
        assert fast == pure, codec


def test_large_shuffled_zstd_frames_have_the_same_header_and_decode_alike() -> None:
    """Above 64 KiB per byte stream, the Rust encoder stores a shuffled array's noisy byte
    streams as raw zstd blocks without running the compressor over them: a standard zstd frame
    that may differ in its bytes from the pure encoder's; both decoders read both."""
    field = sample("<f8", (512, 512))
    pure = ndbridge.encode("u", field, codec="zstd", **FIXED)
    fast = native.encode("u", field, codec="zstd", **FIXED)
    assert bytes(fast[0]) == bytes(pure[0])
    for frames in (pure, fast):
        for decode in (ndbridge.decode, native.decode):
            assert np.array_equal(decode(frames)["u"], field)


def test_native_decode_reads_what_the_pure_decoder_reads() -> None:
    messages = []
    for dtype in DTYPES:
        for shape in SHAPES:
            for codec, shuffle in CODECS:
                array = variants(sample(dtype, shape))["F"]
                messages.append(ndbridge.encode("u", {"a": array, "b": array[..., ::-1]},
                                                codec=codec, shuffle=shuffle,
                                                attrs={"k": [1, 2]}, **FIXED))
    for frames in messages:
        pure, fast = ndbridge.decode(frames), native.decode(frames)
        assert (fast.name, fast.source, fast.session, fast.seq, fast.time, fast.attrs) == \
            (pure.name, pure.source, pure.session, pure.seq, pure.time, pure.attrs)
        assert fast.header == pure.header
        assert list(fast.arrays) == list(pure.arrays)
        for name, expected in pure.arrays.items():
            got = fast.arrays[name]
            assert got.dtype.str == expected.dtype.str and got.shape == expected.shape
            assert got.flags.f_contiguous == expected.flags.f_contiguous
            assert np.array_equal(got, expected)
            assert not got.flags.writeable


def test_native_decode_of_a_raw_frame_views_the_received_frame() -> None:
    field = sample("<f8", (256, 256))
    frames = [bytes(f) for f in ndbridge.encode("u", field, codec="raw", **FIXED)]
    rec = native.decode(frames)
    assert np.shares_memory(rec["u"], np.frombuffer(frames[1], np.uint8))
    assert np.array_equal(rec["u"], field)


def test_native_decode_refuses_malformed_messages_naming_what_came() -> None:
    frames = as_bytes(ndbridge.encode("u", np.zeros(4), codec="raw", **FIXED))
    with pytest.raises(ndbridge.WireError, match="32"):
        native.decode([frames[0], frames[1][:31]])
    with pytest.raises(ndbridge.WireError):
        native.decode([b"{not json"])


def test_native_send_refuses_what_would_not_arrive_as_it_is(ctx: zmq.Context) -> None:
    with native.Publisher("tcp://127.0.0.1:1", timeout=0.5) as pub:
        with pytest.raises(TypeError, match="masked"):
            pub.send("u", np.ma.masked_array([1.0, 2.0], mask=[0, 1]))
        with pytest.raises(TypeError, match="dtype"):
            pub.send("u", np.array([object(), 1]))
        with pytest.raises(ValueError, match="max_array_bytes"):
            pub.send("u", np.broadcast_to(np.zeros(1, np.uint8), (5 << 30,)))
        assert pub.stats()["sent"] == 0


@pytest.fixture
def collector(tmp_path: Path):
    c = Collector(tmp_path / "out")
    try:
        yield c
    finally:
        c.kill()


RECORDS = 100
RECORD_BYTES = 2 << 20


def check_arrived(collector: Collector, source: str) -> None:
    lines = collector.wait_records(source, RECORDS, timeout_s=30)
    assert sorted(x["seq"] for x in lines) == list(range(RECORDS))
    stats = collector.stop()["stats"]
    assert stats["rejected"] == 0 and stats["errors"] == {}, stats
    s = stats["sources"][source]
    assert (s["messages"], s["gaps"], s["raw_bytes"]) == (RECORDS, 0, RECORDS * RECORD_BYTES)


@pytest.mark.parametrize("codec", ["raw", "auto", "zstd"])
def test_native_publisher_delivers_every_record_to_a_collector(collector: Collector,
                                                               codec: str) -> None:
    source = f"native-{codec}"
    x = np.linspace(0.0, 1.0, 512)
    with native.Publisher(collector.input, source=source, codec=codec, timeout=30) as pub:
        for step in range(RECORDS):
            assert pub.send("u", np.sin(x[:, None] * (step + 1)) * np.cos(x),
                            attrs={"step": step}) == step
    stats = pub.stats()
    assert (stats["sent"], stats["delivered"], stats["dropped"], stats["failed"]) == \
        (RECORDS, RECORDS, 0, 0)
    assert pub.seq == RECORDS and pub.pending == 0
    if codec == "zstd":
        assert stats["wire_bytes"] < stats["raw_bytes"]
    check_arrived(collector, source)


SCRIPT = '''
import sys
import numpy as np
from ndbridge import native
endpoint, codec, source = sys.argv[1:]
pub = native.Publisher(endpoint, codec=codec, source=source, timeout=30)
x = np.linspace(0.0, 1.0, 512)
for step in range(100):
    pub.send("u", np.sin(x[:, None] * (step + 1)) * np.cos(x), attrs={"step": step})
'''


@pytest.mark.parametrize("codec", ["raw", "auto"])
def test_a_script_that_ends_without_close_delivers_every_record(collector: Collector,
                                                                tmp_path: Path,
                                                                codec: str) -> None:
    path = tmp_path / "worker.py"
    path.write_text(SCRIPT, encoding="utf-8")
    source = f"native-script-{codec}"
    result = subprocess.run([sys.executable, str(path), collector.input, codec, source],
                            cwd=REPO, capture_output=True, text=True, timeout=50)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    check_arrived(collector, source)


def test_an_unreachable_collector_makes_close_raise_within_its_timeout(ctx: zmq.Context) -> None:
    # A port whose listener never answers ZeroMQ's handshake: no message can go out. (A ZeroMQ
    # socket bound and closed at once would do only once libzmq has really closed it, which it
    # does in the background: a publisher quick enough could still hand it messages.)
    silent = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)
    port = silent.getsockname()[1]
    pub = native.Publisher(f"tcp://127.0.0.1:{port}", timeout=1.0)
    for _ in range(3):
        pub.send("u", np.zeros(1 << 18))
    start = time.monotonic()
    with pytest.raises(ndbridge.DeliveryError, match="3 of 3 records") as info:
        pub.close()
    assert info.value.dropped and info.value.unsent == 3
    assert time.monotonic() - start < 5.0
    assert pub.closed
    silent.close()


def test_arrays_are_released_after_close(ctx: zmq.Context) -> None:
    """A zero-copy array is referenced by the Rust side until ZeroMQ has sent it, and not after:
    its reference count is back to where it started once the publisher is closed."""
    pull = ctx.socket(zmq.PULL)
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    field = np.arange(RECORD_BYTES // 8, dtype=np.float64)
    small = np.arange(10, dtype=np.float64)
    gc.collect()
    start, small_start = sys.getrefcount(field), sys.getrefcount(small)
    pub = native.Publisher(f"tcp://127.0.0.1:{port}", codec="raw", timeout=10)
    for _ in range(5):
        pub.send("u", {"field": field, "small": small})
    for _ in range(5):
        frames = pull.recv_multipart(copy=False)
        assert native.decode(frames)["field"][-1] == field[-1]
    pub.close()
    gc.collect()
    assert sys.getrefcount(field) == start
    assert sys.getrefcount(small) == small_start


def test_ndbridge_publisher_is_the_rust_one_unless_told_or_needed_otherwise(
        ctx: zmq.Context) -> None:
    from ndbridge.net import Publisher as PurePublisher
    endpoint = "tcp://127.0.0.1:1"
    with ndbridge.Publisher(endpoint, timeout=0) as pub:
        assert isinstance(pub, native.Publisher)
        assert len(pub.session) == 16 and int(pub.session, 16) >= 0
        assert pub.link == "local" and pub.seq == 0
    with ndbridge.Publisher(endpoint, timeout=0, native=False) as pub:
        assert isinstance(pub, PurePublisher)
    # What only the pure-Python publisher does: binding, a shared context, other socket kinds.
    with ndbridge.Publisher("tcp://127.0.0.1:*", bind=True, timeout=0) as pub:
        assert isinstance(pub, PurePublisher)
    with ndbridge.Publisher(endpoint, context=ctx, timeout=0) as pub:
        assert isinstance(pub, PurePublisher)
    with pytest.raises(ValueError, match="native=True: the Rust publisher does not support "
                                         "bind=True"):
        ndbridge.Publisher("tcp://127.0.0.1:*", bind=True, native=True)


def test_the_session_and_seq_in_the_stored_records_are_the_publishers(
        collector: Collector) -> None:
    with ndbridge.Publisher(collector.input, source="native-session", timeout=30) as pub:
        for step in range(3):
            pub.send("u", np.full(1000, step), attrs={"step": step})
    lines = collector.wait_records("native-session", 3)
    assert {x["session"] for x in lines} == {pub.session}
    assert sorted(x["seq"] for x in lines) == [0, 1, 2] == [x["attrs"]["step"] for x in
                                                            sorted(lines, key=lambda x: x["seq"])]


def test_subscribers_decode_with_the_rust_decoder_unless_told_otherwise(ctx: zmq.Context) -> None:
    from ndbridge import net
    assert net._decoder("auto") is native.decode
    assert net._decoder("rust") is native.decode
    assert net._decoder("python") is ndbridge.decode
    with pytest.raises(ValueError, match="decoder: expected one of"):
        ndbridge.Subscriber("tcp://127.0.0.1:1", decoder="numpy")
    field = sample("<f8", (64, 64))
    frames = ndbridge.encode("u", {"u": field}, codec="zstd", **FIXED)
    pub = ctx.socket(zmq.PUB)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    subs = [ndbridge.Subscriber(f"tcp://127.0.0.1:{port}", "u", timeout_ms=200, decoder=d,
                                context=ctx) for d in ("rust", "python")]
    try:
        got: List[ndbridge.Record] = []
        deadline = time.monotonic() + 10
        while len(got) < 2 and time.monotonic() < deadline:  # until both have joined
            pub.send_multipart([b"u"] + list(frames))
            got = []
            for sub in subs:
                try:
                    got.append(sub.recv())
                except TimeoutError:
                    break
        assert len(got) == 2, "both subscribers receive the record"
        for rec in got:
            assert rec.header == got[0].header and np.array_equal(rec["u"], field)
    finally:
        for sub in subs:
            sub.close()
        pub.close(linger=0)


@pytest.mark.parametrize("chunking, codec", [("always", "zstd-chunks"), ("never", "zstd")])
def test_chunking_always_sends_parallel_chunks_that_every_decoder_reads(
        ctx: zmq.Context, chunking: str, codec: str) -> None:
    pull = ctx.socket(zmq.PULL)
    pull.rcvtimeo = 20000
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    field = sample("<f8", (600, 700))  # 3.2 MiB: four chunks
    with native.Publisher(f"tcp://127.0.0.1:{port}", codec="zstd", chunking=chunking,
                          timeout=10) as pub:
        pub.send("u", field)
    frames = pull.recv_multipart()
    pull.close(0)
    assert json.loads(frames[0])["arrays"][0]["codec"] == codec
    for decode in (ndbridge.wire.decode, native.decode):  # the pure decoder, the Rust one
        np.testing.assert_array_equal(decode(frames)["u"], field)


def test_chunking_is_checked_and_the_pure_publisher_refuses_always() -> None:
    with pytest.raises(ValueError, match="chunking: expected one of"):
        native.Publisher("tcp://127.0.0.1:1", chunking="sometimes")
    with pytest.raises(ValueError, match="native core"):
        ndbridge.Publisher("tcp://127.0.0.1:1", chunking="always", native=False)

"""Publisher delivery: every record reaches the collector from workers that end as scripts do
(no close: the end of a script, multiprocessing children with fork and spawn), a worker whose
collector is unreachable fails within its timeout and says so, and close/flush keep their word.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import pytest
import zmq

import ndbridge
from collector_proc import Collector
from golden_io import REPO, bind_loopback

#: Records each worker sends, of RECORD_BYTES each (a 512 x 512 float64 field).
RECORDS = 100
RECORD_BYTES = 2 << 20

#: The body every worker runs: a new smooth field per step, sent, and no close at the end.
WORK = '''
def work(endpoint, codec, link, source, count, timeout):
    import numpy as np
    import ndbridge
    pub = ndbridge.Publisher(endpoint, codec=codec, link=link, source=source, timeout=timeout)
    x = np.linspace(0.0, 1.0, 512)
    for step in range(count):
        pub.send("u", np.sin(x[:, None] * (step + 1)) * np.cos(x), attrs={"step": step})
'''

#: A plain script: `python script.py ENDPOINT CODEC LINK SOURCE COUNT TIMEOUT`.
SCRIPT = WORK + '''
import sys
endpoint, codec, link, source, count, timeout = sys.argv[1:]
work(endpoint, codec, None if link == "detect" else link, source, int(count), float(timeout))
'''

#: A driver that starts WORKERS multiprocessing children and prints their exit codes as JSON:
#: `python driver.py METHOD WORKERS ENDPOINT CODEC LINK SOURCE COUNT TIMEOUT`.
DRIVER = WORK + '''
import json, multiprocessing, sys

if __name__ == "__main__":
    method, workers, endpoint, codec, link, source, count, timeout = sys.argv[1:]
    mp = multiprocessing.get_context(method)
    procs = [mp.Process(target=work, args=(endpoint, codec, None if link == "detect" else link,
                                           f"{source}-{i}", int(count), float(timeout)))
             for i in range(int(workers))]
    for p in procs:
        p.start()
    for p in procs:
        p.join(100)
    print(json.dumps([p.exitcode for p in procs]))
'''

#: Longest run of one worker process, in seconds.
RUN_S = 50


def run(path: Path, text: str, *args: object) -> subprocess.CompletedProcess:
    path.write_text(text, encoding="utf-8")
    return subprocess.run([sys.executable, str(path), *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=RUN_S)


@pytest.fixture
def collector(tmp_path: Path):
    c = Collector(tmp_path / "out")
    try:
        yield c
    finally:
        c.kill()


def wait_ended(collector: Collector, sources: List[str], timeout_s: float = 30) -> None:
    """Waits until the session of each source has ended (its end is in the manifest) and
    checks that each end counts RECORDS records."""
    deadline = time.monotonic() + timeout_s
    while True:
        ends = {e["source"]: e for e in collector.ends() if e["source"] in sources}
        if len(ends) == len(sources):
            break
        assert time.monotonic() < deadline, f"ends of {sources}: only {sorted(ends)} came"
        time.sleep(0.02)
    assert all(e["seq"] == RECORDS for e in ends.values()), ends


def check_arrived(collector: Collector, sources: List[str]) -> None:
    """Waits for RECORDS records from each source and for its session's end, then checks the
    collector's final stats: every record received and stored, in order, none rejected, and
    every session ended (the exit hook sends the end when it closes the publisher)."""
    for source in sources:
        lines = collector.wait_records(source, RECORDS, timeout_s=30)
        assert sorted(x["seq"] for x in lines) == list(range(RECORDS)), source
    wait_ended(collector, sources)
    stats = collector.stop()["stats"]
    assert stats["rejected"] == 0 and stats["errors"] == {}, stats
    assert stats["stored"] == RECORDS * len(sources), stats
    assert stats["received"] == stats["stored"] + len(sources), stats  # and one end each
    assert stats["sessions_not_ended"] == 0, stats
    for source in sources:
        s = stats["sources"][source]
        assert (s["messages"], s["gaps"], s["raw_bytes"], s["sessions_ended"]) == \
            (RECORDS, 0, RECORDS * RECORD_BYTES, 1), s


CODECS = [("raw", "detect"), ("auto", "detect"), ("auto", "network")]
CODEC_IDS = ["raw", "auto", "auto-network"]


@pytest.mark.parametrize("codec, link", CODECS, ids=CODEC_IDS)
def test_script_that_ends_without_close_delivers_every_record(
        collector: Collector, tmp_path: Path, codec: str, link: str) -> None:
    source = f"script-{codec}-{link}"
    result = run(tmp_path / "worker.py", SCRIPT, collector.input, codec, link, source, RECORDS,
                 30)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    check_arrived(collector, [source])


@pytest.mark.parametrize("method", ["fork", "spawn"])
@pytest.mark.parametrize("codec, link", CODECS, ids=CODEC_IDS)
def test_multiprocessing_children_deliver_every_record(
        collector: Collector, tmp_path: Path, method: str, codec: str, link: str) -> None:
    source = f"{method}-{codec}-{link}"
    result = run(tmp_path / "driver.py", DRIVER, method, 2, collector.input, codec, link, source,
                 RECORDS, 30)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [0, 0], result.stderr
    check_arrived(collector, [f"{source}-0", f"{source}-1"])


def unreachable_endpoint() -> str:
    """A loopback endpoint nobody listens on (a port just bound and released)."""
    ctx = zmq.Context()
    try:
        sock = ctx.socket(zmq.PULL)
        endpoint = bind_loopback(sock)
        sock.close(linger=0)
    finally:
        ctx.term()
    return endpoint


def test_script_with_an_unreachable_collector_fails_within_its_timeout(tmp_path: Path) -> None:
    endpoint = unreachable_endpoint()
    start = time.monotonic()
    result = run(tmp_path / "worker.py", SCRIPT, endpoint, "raw", "detect", "lost", 5, 2)
    took = time.monotonic() - start
    assert result.returncode == 1, result.stderr
    assert f"ndbridge: at exit: {endpoint}: 5 of 5 records did not go out to a peer within 2 s; " \
           f"they are dropped" in result.stderr
    assert 2 <= took < 2 + 20, took


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_child_with_an_unreachable_collector_exits_1(tmp_path: Path, method: str) -> None:
    endpoint = unreachable_endpoint()
    start = time.monotonic()
    result = run(tmp_path / "driver.py", DRIVER, method, 1, endpoint, "auto", "detect", "lost", 3,
                 1.5)
    took = time.monotonic() - start
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [1], result.stderr
    assert "3 of 3 records did not go out to a peer within 1.5 s" in result.stderr
    assert took < 1.5 + 20, took


def test_close_raises_naming_the_records_that_did_not_go_out() -> None:
    endpoint = unreachable_endpoint()
    start = time.monotonic()
    with pytest.raises(ndbridge.DeliveryError) as info:
        with ndbridge.Publisher(endpoint, timeout=0.5) as pub:
            for _ in range(3):
                pub.send("u", np.zeros(1000))
    took = time.monotonic() - start
    err = info.value
    assert (err.unsent, err.sent, err.dropped, err.at_most) == (3, 3, True, False)
    assert str(err) == f"{endpoint}: 3 of 3 records did not go out to a peer within 0.5 s; " \
                       f"they are dropped (is the collector running and reachable?)"
    assert 0.5 <= took < 5, took
    assert pub.closed and pub not in ndbridge.lifetime.open_publishers()
    pub.close()  # closing again is harmless


def slow_pull(ctx: zmq.Context) -> zmq.Socket:
    """A PULL socket that takes one message at a time from a small kernel buffer, so that what
    its reader does not take stays with the sender."""
    pull = ctx.socket(zmq.PULL)
    pull.rcvhwm = 1
    pull.setsockopt(zmq.RCVBUF, 64 << 10)
    pull.linger = 0
    pull.rcvtimeo = 10_000
    return pull


def test_flush_waits_for_a_peer_and_keeps_the_records_until_then(ctx: zmq.Context) -> None:
    endpoint = unreachable_endpoint()
    pub = ndbridge.Publisher(endpoint, codec="raw", timeout=0.3)
    try:
        sent = [np.full(50_000, float(i)) for i in range(4)]
        for a in sent:
            pub.send("u", a)
        with pytest.raises(ndbridge.DeliveryError, match="4 of 4 records .* still queued") as info:
            pub.flush()
        assert (info.value.unsent, info.value.dropped) == (4, False)
        assert pub.pending == 4 and not pub.closed
        pull = ctx.socket(zmq.PULL)
        pull.rcvtimeo = 10_000
        pull.bind(endpoint)  # the collector comes up late: the records go out now
        pub.flush(timeout=10)
        assert pub.pending == 0
        got = [ndbridge.recv(pull) for _ in sent]
    finally:
        pub.close(timeout=0)
    assert [r.seq for r in got] == [0, 1, 2, 3]
    assert all(np.array_equal(r["u"], a) for r, a in zip(got, sent))


def test_close_waits_for_queued_records_and_they_all_arrive(ctx: zmq.Context) -> None:
    pull = slow_pull(ctx)
    count = 40
    received: List[int] = []

    def read() -> None:
        for _ in range(count):
            time.sleep(0.005)
            received.append(ndbridge.recv(pull)["u"][0, 0])

    pub = ndbridge.Publisher(bind_loopback(pull), codec="raw", timeout=30)
    for i in range(count):
        pub.send("u", np.full((512, 512), float(i)))  # 2 MiB each, 80 MiB in all
    assert pub.pending > 0  # more than the kernel's buffers hold: ZeroMQ has some of them
    reader = threading.Thread(target=read)
    reader.start()
    pub.close()
    assert pub.pending == 0
    reader.join(30)
    assert received == [float(i) for i in range(count)]


def test_close_against_a_peer_that_stops_reading(ctx: zmq.Context) -> None:
    pull = slow_pull(ctx)
    count = 20
    pub = ndbridge.Publisher(bind_loopback(pull), codec="raw", timeout=0.5)
    for i in range(count):
        pub.send("u", np.full((512, 512), float(i)))
    start = time.monotonic()
    with pytest.raises(ndbridge.DeliveryError) as info:
        pub.close()
    assert 0.5 <= time.monotonic() - start < 5
    unsent = info.value.unsent
    assert 0 < unsent < count and info.value.dropped
    # What close did not report as lost arrives when the peer reads again, and at most the one
    # record that was on its way out when the time ran out besides.
    got = []
    pull.rcvtimeo = 2000
    while True:
        try:
            got.append(ndbridge.recv(pull).seq)
        except zmq.Again:
            break
    assert got[:count - unsent] == list(range(count - unsent)), (got, unsent)
    assert len(got) <= count - unsent + 1, (got, unsent)


@pytest.mark.parametrize("sizes, bound", [
    ([100, 100, 100], 3),
    ([100, 1 << 20], 1),
    ([1 << 20, 3000, 3000, 3000], 3),  # with headers, more than 8 KiB: the large one is out
    ([1 << 20, 2000, 2000, 2000], 4),  # less: the end of the large one may be in the buffer
])
def test_close_reports_the_last_records_when_zeromq_lingers_to_the_end(
        ctx: zmq.Context, monkeypatch: pytest.MonkeyPatch, sizes: List[int], bound: int) -> None:
    """ZeroMQ has released every record, but terminating the context takes the whole linger
    time, so the last kilobytes may not have reached the kernel: close reports the records
    they can belong to (those in the last 8 KiB sent) as possibly lost."""
    pull = ctx.socket(zmq.PULL)
    pull.rcvtimeo = 10_000
    shutdown = ndbridge.Publisher._shutdown

    def slow_shutdown(self: ndbridge.Publisher, linger_ms: int) -> None:
        shutdown(self, linger_ms)
        time.sleep(linger_ms / 1000)  # as if the linger timer had fired

    monkeypatch.setattr(ndbridge.Publisher, "_shutdown", slow_shutdown)
    # The pure-Python publisher's own close path (the Rust one waits for the kernel itself).
    pub = ndbridge.Publisher(bind_loopback(pull), codec="raw", timeout=0.2, native=False)
    for n in sizes:
        pub.send("u", np.zeros(n, np.uint8))
    pub.flush()
    with pytest.raises(ndbridge.DeliveryError) as info:
        pub.close()
    assert (info.value.unsent, info.value.at_most, info.value.sent) == (bound, True, len(sizes))
    assert f"up to {bound} (the last) of {len(sizes)} records did not go out" in str(info.value)


def test_zero_copy_buffers_live_until_zeromq_is_done(ctx: zmq.Context) -> None:
    pull = slow_pull(ctx)
    pub = ndbridge.Publisher(bind_loopback(pull), codec="raw", timeout=30)
    try:
        for i in range(12):
            pub.send("u", np.random.default_rng(i).random(1 << 18))  # no reference kept here
        assert pub.pending > 0
        gc.collect()
        scribble = [np.full(1 << 18, -1.0) for _ in range(24)]  # reuses any memory freed
        got = [ndbridge.recv(pull) for _ in range(12)]
        pub.flush()
    finally:
        pub.close(timeout=0)
    del scribble
    for i, rec in enumerate(got):
        assert np.array_equal(rec["u"], np.random.default_rng(i).random(1 << 18)), i


def test_records_sent_before_an_exception_still_go_out(ctx: zmq.Context) -> None:
    pull = ctx.socket(zmq.PULL)
    pull.rcvtimeo = 10_000
    with pytest.raises(RuntimeError, match="the simulation failed"):
        with ndbridge.Publisher(bind_loopback(pull), timeout=10) as pub:
            pub.send("u", np.arange(3.0))
            raise RuntimeError("the simulation failed")
    assert np.array_equal(ndbridge.recv(pull)["u"], np.arange(3.0))


def test_pub_without_subscribers_closes_at_once() -> None:
    pub = ndbridge.Publisher("tcp://127.0.0.1:*", bind=True, kind=zmq.PUB, timeout=10)
    pub.send("u", np.zeros((512, 512)))  # dropped by ZeroMQ: nobody subscribes
    start = time.monotonic()
    pub.close()
    assert time.monotonic() - start < 2


@pytest.mark.parametrize("value, text", [
    (np.ma.array(np.arange(4.0), mask=[0, 1, 0, 0]), "found a masked array"),
    (np.array([{"a": 1}], dtype=object), "found object"),
])
def test_send_refuses_what_would_not_arrive_as_it_is(ctx: zmq.Context, value, text) -> None:
    pull = ctx.socket(zmq.PULL)
    pull.rcvtimeo = 10_000
    with ndbridge.Publisher(bind_loopback(pull), timeout=10) as pub:
        with pytest.raises(TypeError, match=text):
            pub.send("bad", value)
        with pytest.raises(TypeError, match=text):
            pub.send("state", {"ok": np.zeros(2), "bad": value})
        assert pub.seq == 0
        pub.send("good", np.arange(2.0))
    rec = ndbridge.recv(pull)
    assert (rec.name, rec.seq) == ("good", 0)  # nothing of the refused records went out


def test_send_refuses_a_record_over_the_collectors_limits(ctx: zmq.Context) -> None:
    pull = ctx.socket(zmq.PULL)
    pull.rcvtimeo = 10_000
    huge = np.broadcast_to(np.float64(0), (5 << 27,))  # 5 GiB, no memory behind it
    with ndbridge.Publisher(bind_loopback(pull), timeout=10) as pub:
        with pytest.raises(ValueError, match="nbytes 5368709120 exceeds the limit "
                                             "max_array_bytes=4294967296"):
            pub.send("huge", huge)
        small = ndbridge.Publisher(pub.endpoint, limits=ndbridge.Limits(max_array_bytes=1000))
        with small, pytest.raises(ValueError, match="nbytes 8000 exceeds the limit "
                                                    "max_array_bytes=1000"):
            small.send("u", np.zeros(1000))
        pub.send("good", np.arange(2.0))
    got = []
    while pull.poll(200):
        got.append(ndbridge.recv(pull))
    # Nothing of the refused records went out: one record, and its session's end (`small`
    # sent no record, so it sends no end).
    assert [(r.name, r.seq, r.session, r.end) for r in got] == \
        [("good", 0, pub.session, False), ("end", 1, pub.session, True)]


def test_collector_drops_what_send_refuses(collector: Collector) -> None:
    """The limits send checks are the collector's: records just over them, sent with the checks
    off, are refused by the collector; with the checks on, "auto" sends the constant array raw
    and it is stored."""
    zeros = np.zeros(9 << 20)  # 72 MiB that zstd makes about 30,000 times smaller
    with ndbridge.Publisher(collector.input, source="unchecked", codec="zstd", limits=None,
                            timeout=10) as pub:
        pub.send("u", np.zeros(10), attrs={"note": "x" * (1 << 20)})  # header over 1 MiB
        pub.send("zeros", zeros)  # over the expansion limit
        pub.send("ok", np.zeros(10))
    with ndbridge.Publisher(collector.input, source="checked", link="network",
                            timeout=10) as pub:
        pub.send("zeros", zeros)
    collector.wait_records("unchecked", 1)
    line, = collector.wait_records("checked", 1)
    assert line["arrays"][0]["codec"] == "raw"
    stats = collector.stop()["stats"]
    assert stats["rejected"] == 2 and stats["stored"] == 2, stats
    assert stats["errors"] == {"header_too_large": 1, "expansion": 1}, stats


# ---------------------------------------------------------------------------------------------
# codec="auto": the link decides first, then the data


@pytest.mark.parametrize("endpoint, local", [
    ("tcp://127.0.0.1:5555", True),
    ("tcp://127.1.2.3:5555", True),
    ("tcp://localhost:*", True),
    ("tcp://[::1]:5555", True),
    ("ipc:///tmp/ndbridge.sock", True),
    ("inproc://workers", True),
    ("tcp://head-node:5555", False),
    ("tcp://0.0.0.0:5555", False),
    ("tcp://10.0.0.2:5555", False),
    ("tcp://eth0;10.0.0.2:5555", False),
    ("tcp://10.0.0.1;127.0.0.1:5555", True),
    ("tcp://12.0.0.1:5555", False),
])
def test_is_local_follows_the_rust_rule(endpoint: str, local: bool) -> None:
    assert ndbridge.is_local(endpoint) is local


def auto_codecs(ctx: zmq.Context, link: Optional[str], arrays: Dict[str, np.ndarray]) -> dict:
    pull = ctx.socket(zmq.PULL)
    pull.rcvtimeo = 10_000
    # The pure-Python publisher (its decisions on a network link: test_pacing.py).
    with ndbridge.Publisher(bind_loopback(pull), link=link, timeout=10, native=False) as pub:
        pub.send("state", arrays)
    rec = ndbridge.recv(pull)
    for name, a in arrays.items():
        assert np.array_equal(rec[name], a)
    return {e["name"]: (e["codec"], e.get("filters", [])) for e in rec.header["arrays"]}


SMOOTH = np.add.outer(np.linspace(0, 1, 300), np.linspace(0, 2, 200))
NOISE = np.random.default_rng(7).integers(0, 256, 100_000, dtype=np.uint8)


def test_auto_sends_raw_on_a_local_link(ctx: zmq.Context) -> None:
    assert auto_codecs(ctx, None, {"smooth": SMOOTH, "noise": NOISE}) == \
        {"smooth": ("raw", []), "noise": ("raw", [])}


def test_link_detection_and_override() -> None:
    for endpoint, link, expected in [("tcp://127.0.0.1:1", None, "local"),
                                     ("tcp://192.0.2.1:1", None, "network"),
                                     ("tcp://127.0.0.1:1", "network", "network"),
                                     ("tcp://192.0.2.1:1", "local", "local")]:
        with ndbridge.Publisher(endpoint, link=link, timeout=0) as pub:
            assert pub.link == expected, (endpoint, link)
    with pytest.raises(ValueError, match="link: expected None, 'local' or 'network', found 'lan'"):
        ndbridge.Publisher("tcp://127.0.0.1:1", link="lan")

"""examples/publish.py and examples/subscribe.py, run as scripts against a real collector."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import time
from types import ModuleType
from typing import Iterator

import numpy as np
import pytest

import ndbridge
from collector_proc import Collector, bit_exact
from golden_io import REPO

EXAMPLES = REPO / "examples"


def load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_example(name: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(EXAMPLES / f"{name}.py"), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Collector]:
    c = Collector(tmp_path_factory.mktemp("examples") / "out")
    try:
        yield c
        stats = c.stop()["stats"]
    finally:
        c.kill()  # a no-op once stopped
    assert stats["rejected"] == 0, stats


@pytest.mark.parametrize("name, options", [
    ("publish", ["--to", "--steps", "--rate", "--size", "--codec", "--source"]),
    ("subscribe", ["--from", "--name", "--field", "--count", "--timeout"]),
])
def test_help(name: str, options: list) -> None:
    result = run_example(name, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: {name}.py")
    for option in options:
        assert option in result.stdout


def test_publish_sends_the_evolving_field(collector: Collector) -> None:
    steps, size, seed = 6, 24, 3
    result = run_example("publish", "--to", collector.input, "--steps", str(steps), "--rate", "0",
                         "--size", str(size), "--seed", str(seed), "--codec", "zstd",
                         "--source", "py-example")
    assert result.returncode == 0, result.stderr
    assert f"sent {steps} records" in result.stderr
    lines = collector.wait_records("py-example", steps)
    simulation = load_example("publish").simulate(size, seed)
    previous = None
    for line, (step, t, u) in zip(sorted(lines, key=lambda x: x["seq"]), simulation):
        assert (line["name"], line["seq"], line["attrs"]) == ("state", step, {"step": step})
        assert [a["name"] for a in line["arrays"]] == ["u", "t"]
        assert line["arrays"][0]["codec"] == "zstd"
        with np.load(collector.out / line["path"]) as npz:
            bit_exact(npz["u"], u)
            bit_exact(npz["t"], np.array(t))
            if previous is not None:
                assert not np.array_equal(npz["u"], previous), "the field does not evolve"
            previous = npz["u"]


STAT = r"mean=(\S+) min=(\S+) max=(\S+)"
LINE = re.compile(rf"^state py-sub seq=(\d+) u:<f8\[4, 4\]/\w+ t:<i8\[\]/raw "
                  rf"\| u: {STAT} \| all: n=(\d+) {STAT}$")


def test_subscribe_prints_records_and_a_running_statistic(collector: Collector) -> None:
    count = 3
    proc = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "subscribe.py"), "--from", collector.forward,
         "--count", str(count), "--name", "state", "--field", "u", "--timeout", "30"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # The subscriber misses what is published before its subscription is live: publish
        # until it has seen enough and exits.
        with ndbridge.Publisher(collector.input, source="py-sub") as pub:
            deadline = time.monotonic() + 30
            while proc.poll() is None:
                assert time.monotonic() < deadline, "subscribe.py did not exit"
                seq = pub.seq  # the seq the next record carries
                pub.send("state", {"u": np.full((4, 4), float(seq)), "t": np.int64(seq)})
                pub.send("other", np.arange(3))  # filtered out by --name
                time.sleep(0.05)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    lines = out.splitlines()
    assert len(lines) == count, out
    seen = []
    for i, line in enumerate(lines, 1):
        match = LINE.match(line)
        assert match, line
        seq = int(match.group(1))
        seen.append(float(seq))
        this = [float(x) for x in match.group(2, 3, 4)]
        assert this == [seq, seq, seq], line
        n, mean, lo, hi = int(match.group(5)), *(float(x) for x in match.group(6, 7, 8))
        assert n == 16 * i, line
        assert (mean, lo, hi) == pytest.approx((np.mean(seen), min(seen), max(seen))), line
    assert len(set(seen)) == count  # any order: the collector's workers may reorder records


def test_subscribe_times_out_without_records(collector: Collector) -> None:
    result = run_example("subscribe", "--from", collector.forward, "--name", "nothing",
                         "--timeout", "0.3")
    assert result.returncode == 1 and result.stdout == ""
    assert "no record for 0.3 s" in result.stderr

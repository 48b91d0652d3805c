"""Python simulation workers into a store on disk: ndbridge against pickle 5 and np.save + zlib.

Usage (from the repository root; `benches/python_workers/run` builds and installs first):

    .venv/bin/python benches/python_workers/workers.py [--records 60] [--workers 2]

Two worker processes each send `--records` records of a simulation state: density (float64,
512 x 512), velocity (float32, 2 x 512 x 512), particle ids (int64, 65,536), a cell mask
(uint8, 512 x 512) and the step number: 5.0 MB per record, smooth fields with a little noise.
Each way of moving them is timed from the moment both workers start sending (they build their
states before that) until the receiver has stored every record on disk:

- ndbridge's native publisher (the Rust publisher, from ``pip install ./python`` with a Rust
  toolchain) into ``ndbridge collect --format npy --out DIR`` (one file per record, as the
  Python receivers write them): the default codec (``auto``) and ``raw``;
- ndbridge's pure-Python publisher, default codec, into the same collector;
- pickle protocol 5 with out-of-band buffers over pyzmq (``copy=False``) into a Python receiver
  that saves each record with ``np.savez``;
- each array as ``np.save`` into ``io.BytesIO`` + ``zlib.compress`` over pyzmq, into a Python
  receiver that decompresses and writes the ``.npy`` bytes to a file.

Then the codec: shuffle + zstd level 1 of the density field, called from Python through the
native module, against the Rust codec itself (``ndbridge-bench codec``) on the same bytes.
Prints records/s per way (the median of `--repeats` rounds, each of which runs every way once;
np.save + zlib, far slower, runs once),
the ratios the targets name, and the codec speeds.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import zmq

ROOT = Path(__file__).resolve().parents[2]
RELEASE = ROOT / "target" / "release"

#: Seconds from starting the workers to the moment they all start sending (they build their
#: states meanwhile).
START_DELAY_S = 2.0
#: Longest wait for one run, in seconds.
RUN_TIMEOUT_S = 300.0


def state(seed: int) -> Dict[str, np.ndarray]:
    """One simulation state: a few arrays of different dtypes and sizes, 5.0 MB in all."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:512, 0:512] / 512.0
    phase = seed * 0.1
    rho = (1.0 + 0.3 * np.sin(6 * x + phase) * np.cos(4 * y) + 0.05 * np.sin(31 * (x + y))
           + 1e-4 * rng.standard_normal((512, 512)))
    vel = np.stack([np.cos(5 * y + phase) * np.sin(3 * x), np.sin(5 * x - phase) * np.cos(2 * y)])
    vel = (vel + 1e-3 * rng.standard_normal(vel.shape)).astype(np.float32)
    ids = np.sort(rng.choice(1 << 24, size=65536, replace=False)).astype(np.int64)
    mask = (rho > 1.1).astype(np.uint8)
    return {"rho": rho, "vel": vel, "ids": ids, "mask": mask,
            "step": np.array(seed, dtype=np.int64)}


def record_bytes() -> int:
    return sum(a.nbytes for a in state(0).values())


# ----------------------------------------------------------------------------- workers


def worker(way: str, endpoint: str, source: str, records: int, start_at: float) -> None:
    """Sends `records` states the way `way` says, starting at `start_at` (time.time())."""
    states = [state(seed) for seed in range(4)]
    if way.startswith("ndbridge"):
        import ndbridge
        from ndbridge import native
        _, impl, codec = way.split("-")
        if impl == "native":
            pub: Any = native.Publisher(endpoint, source=source, codec=codec, timeout=120)
        else:
            pub = ndbridge.Publisher(endpoint, source=source, codec=codec, timeout=120)
        time.sleep(max(0.0, start_at - time.time()))
        for i in range(records):
            s = states[i % len(states)]
            pub.send("state", s, attrs={"step": i})
        pub.close()
        return
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.SNDHWM, 16)
    sock.connect(endpoint)
    time.sleep(max(0.0, start_at - time.time()))
    for i in range(records):
        s = states[i % len(states)]
        if way == "pickle5":
            buffers: List[pickle.PickleBuffer] = []
            head = pickle.dumps({"source": source, "step": i, "arrays": s}, protocol=5,
                                buffer_callback=buffers.append)
            sock.send_multipart([head, *[b.raw() for b in buffers]], copy=False)
        else:  # npsave-zlib
            frames = [json.dumps({"source": source, "step": i, "names": list(s)}).encode()]
            for a in s.values():
                out = io.BytesIO()
                np.save(out, a)
                frames.append(zlib.compress(out.getbuffer()))
            sock.send_multipart(frames)
    sock.close(linger=-1)
    ctx.term()


def receiver(way: str, endpoint: str, out: str, expected: int) -> None:
    """Receives `expected` records and stores each one under `out`; prints the time.time()
    at which the last one was stored."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PULL)
    sock.setsockopt(zmq.RCVHWM, 16)
    sock.bind(endpoint)
    print("ready", flush=True)
    for n in range(expected):
        frames = sock.recv_multipart(copy=False)
        if way == "pickle5":
            rec = pickle.loads(frames[0].buffer, buffers=[f.buffer for f in frames[1:]])
            np.savez(os.path.join(out, f"{rec['source']}-{rec['step']:06d}.npz"),
                     **rec["arrays"])
        else:
            head = json.loads(frames[0].bytes)
            folder = os.path.join(out, f"{head['source']}-{head['step']:06d}")
            os.mkdir(folder)
            for name, frame in zip(head["names"], frames[1:]):
                with open(os.path.join(folder, f"{name}.npy"), "wb") as f:
                    f.write(zlib.decompress(frame.buffer))
    print(time.time(), flush=True)
    sock.close(linger=0)
    ctx.term()


# ----------------------------------------------------------------------------- driver


def start_workers(way: str, endpoint: str, workers: int, records: int) -> tuple:
    # The previous run's files go to disk now, not while this one is timed.
    os.sync()
    start_at = time.time() + START_DELAY_S
    procs = [subprocess.Popen([sys.executable, __file__, "--worker", way, endpoint,
                               f"w{i}", str(records), repr(start_at)])
             for i in range(workers)]
    return procs, start_at


def wait_all(procs: List[subprocess.Popen]) -> None:
    for p in procs:
        code = p.wait(timeout=RUN_TIMEOUT_S)
        if code != 0:
            raise RuntimeError(f"a worker exited with {code}")


def run_collector_way(way: str, workers: int, records: int, tmp: str) -> float:
    """Seconds from the start of sending until the collector has stored every record."""
    out = tempfile.mkdtemp(dir=tmp)
    binary = RELEASE / "ndbridge"
    collector = subprocess.Popen([str(binary), "collect", "--bind", "tcp://127.0.0.1:*",
                                  "--format", "npy", "--out", out, "--print-endpoints",
                                  "--stats-every", "0"],
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert collector.stdout is not None
        endpoint = json.loads(collector.stdout.readline())["input"][0]
        procs, start_at = start_workers(way, endpoint, workers, records)
        manifest = Path(out) / "manifest.jsonl"
        expected = workers * records
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while True:
            if manifest.exists():
                with open(manifest, "rb") as f:
                    if f.read().count(b"\n") >= expected:
                        done = time.time()
                        break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{way}: the collector did not store {expected} records")
            time.sleep(0.005)
        wait_all(procs)
        return done - start_at
    finally:
        collector.terminate()
        collector.wait(timeout=30)


def run_python_way(way: str, workers: int, records: int, tmp: str) -> float:
    """Seconds from the start of sending until the Python receiver has stored every record."""
    out = tempfile.mkdtemp(dir=tmp)
    ctx = zmq.Context()
    probe = ctx.socket(zmq.PULL)
    port = probe.bind_to_random_port("tcp://127.0.0.1")
    probe.close(linger=0)
    ctx.term()
    endpoint = f"tcp://127.0.0.1:{port}"
    recv = subprocess.Popen([sys.executable, __file__, "--receiver", way, endpoint, out,
                             str(workers * records)], stdout=subprocess.PIPE, text=True)
    try:
        assert recv.stdout is not None
        assert recv.stdout.readline().strip() == "ready"
        procs, start_at = start_workers(way, endpoint, workers, records)
        wait_all(procs)
        done = float(recv.stdout.readline())
        recv.wait(timeout=RUN_TIMEOUT_S)
        return done - start_at
    finally:
        if recv.poll() is None:
            recv.kill()


def codec_speeds(tmp: str, repeats: int) -> Dict[str, float]:
    """GB/s of shuffle + zstd 1 on the density field: the Rust codec from Python (native
    module), the Rust codec itself (ndbridge-bench), and the pure-Python codec."""
    from ndbridge import codec as pure_codec
    from ndbridge import native
    rho = state(0)["rho"]
    speeds: Dict[str, List[float]] = {"native": [], "pure": []}
    for _ in range(3):  # warm-up
        native.compress(rho, 8)
    for _ in range(repeats):
        t = time.perf_counter()
        native.compress(rho, 8)
        speeds["native"].append(rho.nbytes / (time.perf_counter() - t) / 1e9)
        t = time.perf_counter()
        pure_codec.compress(pure_codec.shuffle(rho.view(np.uint8).ravel(), 8), 1)
        speeds["pure"].append(rho.nbytes / (time.perf_counter() - t) / 1e9)
    path = os.path.join(tmp, "rho.npy")
    np.save(path, rho)
    harness = RELEASE / "examples" / "ndbridge-bench"
    res = subprocess.run([str(harness), "codec", "--input", path, "--codec", "shuffle-zstd1",
                          "--repeats", str(repeats)], capture_output=True, text=True, check=True)
    rust = json.loads(res.stdout)["encode_runs"]
    return {"native": statistics.median(speeds["native"]), "rust": statistics.median(rust),
            "pure": statistics.median(speeds["pure"])}


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        way, endpoint, source, records, start_at = sys.argv[2:]
        worker(way, endpoint, source, int(records), float(start_at))
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "--receiver":
        way, endpoint, out, expected = sys.argv[2:]
        receiver(way, endpoint, out, int(expected))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=60, help="records per worker")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=8, help="rounds of the fast ways")
    parser.add_argument("--codec-repeats", type=int, default=20)
    args = parser.parse_args()
    from ndbridge import native
    if not native.AVAILABLE:
        print("ndbridge._native is not built: install ./python with a Rust toolchain",
              file=sys.stderr)
        return 2
    total = args.workers * args.records
    mb = record_bytes() / 1e6
    print(f"{args.workers} workers x {args.records} records of {mb:.1f} MB "
          f"(rho f8 512x512, vel f4 2x512x512, ids i8 65536, mask u1 512x512, step)")
    ways = ["ndbridge-native-auto", "ndbridge-native-raw", "ndbridge-pure-auto", "pickle5",
            "npsave-zlib"]
    rates: Dict[str, float] = {}
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
        # Rounds: each round runs every fast way once, so that the ratios compare runs taken
        # side by side on a machine whose load changes, and each round starts with the next way
        # (the way run first in a round measured up to a quarter slower, whichever it was).
        # np.save + zlib runs once, at the end.
        runs: Dict[str, List[float]] = {way: [] for way in ways}
        fast = ways[:-1]
        for r in range(max(1, args.repeats)):
            for way in fast[r % len(fast):] + fast[:r % len(fast)]:
                if way.startswith("ndbridge"):
                    seconds = run_collector_way(way, args.workers, args.records, tmp)
                else:
                    seconds = run_python_way(way, args.workers, args.records, tmp)
                runs[way].append(total / seconds)
        runs["npsave-zlib"].append(total / run_python_way("npsave-zlib", args.workers,
                                                          args.records, tmp))
        for way in ways:
            rates[way] = statistics.median(runs[way])
            print(f"  {way:22} {rates[way]:8.1f} records/s  {rates[way] * mb:8.1f} MB/s  "
                  f"[{min(runs[way]):.1f}-{max(runs[way]):.1f}, {len(runs[way])} runs]")
        speeds = codec_speeds(tmp, args.codec_repeats)
    print("ratios (targets: default >= 1.5x pickle 5, >= 0.95x raw; codec >= 0.9x Rust)")
    print(f"  ndbridge default / pickle 5 OOB:   "
          f"{rates['ndbridge-native-auto'] / rates['pickle5']:.2f}")
    print(f"  ndbridge default / ndbridge raw:   "
          f"{rates['ndbridge-native-auto'] / rates['ndbridge-native-raw']:.2f}")
    print(f"  ndbridge default / np.save + zlib: "
          f"{rates['ndbridge-native-auto'] / rates['npsave-zlib']:.2f}")
    print(f"  native / pure-Python publisher:    "
          f"{rates['ndbridge-native-auto'] / rates['ndbridge-pure-auto']:.2f}")
    print(f"shuffle + zstd 1 encode of rho (2 MiB f8), GB/s: from Python (native) "
          f"{speeds['native']:.2f}, Rust codec {speeds['rust']:.2f} "
          f"(ratio {speeds['native'] / speeds['rust']:.2f}); pure Python {speeds['pure']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

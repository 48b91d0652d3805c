"""The automatic codec on shaped links: see benches/link/run.

A worker process in a network namespace sends bursts of records through a veth pair shaped
with ``tc qdisc ... tbf`` to a receiver in the root namespace. Each case is timed from the
worker's first send to the receiver's last record; the receiver only counts frames (it does not
decode), so the figures are the link's and the publisher's. Fields: smooth float64 and float32
1024 x 1024 fields (a sum of sines plus 1e-3 noise, as ``src/synth.rs`` makes them); float64
noise (uniform in [-1, 1]: its mantissas are random, its exponent bytes are not, so shuffle +
zstd still saves about 15%); and random bytes (8 MiB of uint8, which no codec shrinks).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from typing import Dict, List

NS = f"ndb-link-{os.getpid()}"
HOST_DEV, NS_DEV = f"ndbh{os.getpid() % 100000}", f"ndbw{os.getpid() % 100000}"
HOST_IP, NS_IP = "10.203.0.1", "10.203.0.2"
SIDE = 1024


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=check, capture_output=True, text=True)


def setup() -> None:
    sh("ip", "netns", "add", NS)
    sh("ip", "link", "add", HOST_DEV, "type", "veth", "peer", "name", NS_DEV)
    sh("ip", "link", "set", NS_DEV, "netns", NS)
    sh("ip", "addr", "add", f"{HOST_IP}/30", "dev", HOST_DEV)
    sh("ip", "link", "set", HOST_DEV, "up")
    sh("ip", "netns", "exec", NS, "ip", "addr", "add", f"{NS_IP}/30", "dev", NS_DEV)
    sh("ip", "netns", "exec", NS, "ip", "link", "set", NS_DEV, "up")
    sh("ip", "netns", "exec", NS, "ip", "link", "set", "lo", "up")


def shape(rate: str) -> None:
    """Shapes what the worker sends: its side of the veth pair."""
    sh("ip", "netns", "exec", NS, "tc", "qdisc", "del", "dev", NS_DEV, "root", check=False)
    burst = "512kb" if rate.endswith("gbit") and int(rate[:-4]) <= 1 else "4mb"
    sh("ip", "netns", "exec", NS, "tc", "qdisc", "add", "dev", NS_DEV, "root", "tbf", "rate",
       rate, "burst", burst, "latency", "20ms")


def teardown() -> None:
    sh("ip", "link", "del", HOST_DEV, check=False)
    sh("ip", "netns", "del", NS, check=False)


WORKER = r'''
import json, sys, time
import numpy as np
import ndbridge
endpoint, codec, field, count, publisher = sys.argv[1:6]
side = %d
def smooth(t, dtype):
    y = (np.arange(side) / side)[:, None]
    x = (np.arange(side) / side)[None, :]
    v = (np.sin(6 * y + 0.7 * t) + 0.5 * np.cos(13 * y - 0.3 * t)
         + np.sin(9 * x + t) * np.cos(4 * y) + 0.25 * np.sin(31 * (x + y)))
    v = v + 1e-3 * np.random.default_rng(int(t * 10)).uniform(-1, 1, v.shape)
    return v.astype(dtype)
rng = np.random.default_rng(1)
if field == "noise":
    arrays = [rng.uniform(-1, 1, (side, side)) for _ in range(4)]
elif field == "bytes":
    arrays = [rng.integers(0, 256, (side, 8 * side), dtype=np.uint8) for _ in range(4)]
else:
    arrays = [smooth(0.1 * k, "<f8" if field == "f8" else "<f4") for k in range(4)]
wire, chunking = {"zstd": ("zstd", "never"), "raw": ("raw", "never"), "auto": ("auto", "auto"),
                  "chunks": ("zstd", "always")}[codec]
pub = ndbridge.Publisher(endpoint, codec=wire, link="network", timeout=600, chunking=chunking,
                         native={"native": True, "pure": False}[publisher])
start = time.time()
for i in range(int(count)):
    pub.send("field", {"u": arrays[i %% 4]})
pub.close()
print(json.dumps({"start": start, "closed": time.time()}))
''' % SIDE

RECEIVER = r'''
import json, sys, time
import zmq
endpoint, count = sys.argv[1], int(sys.argv[2])
ctx = zmq.Context()
pull = ctx.socket(zmq.PULL)
pull.rcvhwm = 64
pull.bind(endpoint)
print("ready", flush=True)
raw = wire = records = 0
while True:
    frames = pull.recv_multipart(copy=False)
    header = json.loads(frames[0].bytes)
    if header.get("end"):
        break  # the session's end, after the last record: the worker's close returns at once
    raw += sum(a["nbytes"] for a in header["arrays"])
    wire += sum(len(f) for f in frames[1:])
    records += 1
    if records == count:
        last = time.time()
print(json.dumps({"end": last, "raw": raw, "wire": wire}))
'''


def run_case(field: str, count: int, codec: str, publisher: str, port: int) -> Dict[str, float]:
    endpoint = f"tcp://{HOST_IP}:{port}"
    receiver = subprocess.Popen([sys.executable, "-c", RECEIVER, endpoint, str(count)],
                                stdout=subprocess.PIPE, text=True)
    assert receiver.stdout is not None
    if receiver.stdout.readline().strip() != "ready":
        raise RuntimeError("the receiver did not start")
    worker = subprocess.run(["ip", "netns", "exec", NS, sys.executable, "-c", WORKER, endpoint,
                             codec, field, str(count), publisher],
                            capture_output=True, text=True, timeout=900)
    if worker.returncode != 0:
        receiver.kill()
        raise RuntimeError(f"worker failed: {worker.stderr}")
    out, _ = receiver.communicate(timeout=900)
    sent, got = json.loads(worker.stdout), json.loads(out)
    seconds = got["end"] - sent["start"]
    return {"seconds": seconds, "gbps": got["raw"] / seconds / 1e9,
            "wire_ratio": got["wire"] / got["raw"]}


def main() -> None:
    # A SIGTERM ends the run through the `finally` below, which removes the namespace and veth.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", default="1gbit,10gbit")
    ap.add_argument("--bursts", default="30,300")
    ap.add_argument("--fields", default="f8,f4,noise,bytes",
                    help="f8, f4: smooth fields; noise: float64 noise; bytes: random bytes")
    ap.add_argument("--codecs", default="raw,zstd,chunks,auto",
                    help="raw; zstd (shuffle + zstd 1, one frame per array); chunks (the same "
                         "in parallel chunks, native only); auto")
    ap.add_argument("--repeats", type=int, default=1, help="runs per case; medians reported")
    ap.add_argument("--publisher", choices=["native", "pure"], default="native",
                    help="the Rust publisher through the native core, or pure Python")
    args = ap.parse_args()
    codecs = args.codecs.split(",")
    setup()
    rows: List[str] = []
    port = 20000 + os.getpid() % 20000
    try:
        for rate in args.rates.split(","):
            shape(rate)
            for field in args.fields.split(","):
                for count in map(int, args.bursts.split(",")):
                    results: Dict[str, List[Dict[str, float]]] = {c: [] for c in codecs}
                    for _ in range(args.repeats):
                        for codec in codecs:  # interleaved: one of each per round
                            port += 1
                            results[codec].append(run_case(field, count, codec,
                                                           args.publisher, port))
                    med = {c: {k: statistics.median(r[k] for r in rs) for k in rs[0]}
                           for c, rs in results.items()}
                    for c in codecs:
                        m = med[c]
                        print(f"{rate:>7} {field:>5} x{count:<4} {c:>6}: {m['seconds']:7.2f} s "
                              f"{m['gbps']:6.3f} GB/s  wire {m['wire_ratio']:.2f}", flush=True)
                    if {"raw", "zstd", "auto"} <= set(codecs):
                        rows.append(table_row(rate, field, count, med))
    finally:
        teardown()
    if rows:
        print("\n| link | field | records | raw s | zstd s (wire) | chunks s (wire) "
              "| auto s (wire) | auto GB/s | auto / better of raw, zstd | auto / best |")
        print("|" + " --- |" * 10)
        print("\n".join(rows))


def table_row(rate: str, field: str, count: int, med: Dict[str, Dict[str, float]]) -> str:
    """One Markdown row: each codec's median seconds (and wire ratio), auto's throughput, and
    auto against the better of raw and zstd, and against the best of all (chunks included)."""
    def cell(c: str) -> str:
        if c not in med:
            return "-"
        return f"{med[c]['seconds']:.2f}" + ("" if c == "raw" else
                                              f" ({med[c]['wire_ratio']:.2f})")
    fixed = min(med["raw"]["seconds"], med["zstd"]["seconds"])
    best = min(m["seconds"] for c, m in med.items() if c != "auto")
    auto = med["auto"]["seconds"]
    return (f"| {rate} | {field} | {count} | {cell('raw')} | {cell('zstd')} | {cell('chunks')} "
            f"| {cell('auto')} | {med['auto']['gbps']:.2f} | {fixed / auto:.2f} "
            f"| {best / auto:.2f} |")


if __name__ == "__main__":
    main()

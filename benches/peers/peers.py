"""ndbridge against the ways arrays are moved today, side by side in one run.

Usage (from the repository root; `benches/peers/run` sets up the venv and builds first):

    .venv/bin/python benches/peers/peers.py [--repeats 3] [--quick] [--json FILE]

Every end-to-end figure is measured the same way: a sender process and a receiver process on
tcp loopback; the receiver times from the first message received to the last one decoded into
a numpy array. Peers:

- pickle protocol 0 + zlib (`zlib.compress(pickle.dumps(a, 0))`), the method ndbridge replaces
- `np.save` into `io.BytesIO` + zlib
- pickle protocol 5 with out-of-band buffers over pyzmq (`copy=False`)
- pyzmq's `send_array` / `recv_array` recipe (JSON metadata + `copy=False` buffer)
- pyzmq bare frames: a pre-built header and payload (the libzmq ceiling from Python)
- raw loopback TCP with `socket.sendall` / `recv_into` (the physical ceiling)

ndbridge's own figures come from `target/release/examples/ndbridge-bench` (the harness in
benches/ndbridge-bench/: publisher and collector in separate processes, and bare libzmq through
the same library). The codec comparison runs python-blosc2 (shuffle + zstd level 1, one thread)
and ndbridge's codec on the same bytes. The table reports medians over the repeats with min-max,
and the ratios the targets name.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import pickle
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
import zmq

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "target" / "release" / "examples" / "ndbridge-bench"
LARGE = 1 << 20  # float64 elements: 8 MiB
SMALL_SHAPE = (10, 10)  # 800 bytes


def smooth_field(n: int, seed: int = 7, dtype=np.float64) -> np.ndarray:
    """A smooth field (sum of sines) plus small uniform noise: simulation-like data."""
    cols = min(n, 1000)
    rows = -(-n // cols)
    y = (np.arange(rows) / rows)[:, None]
    x = (np.arange(cols) / cols)[None, :]
    v = (np.sin(6 * y) + 0.5 * np.cos(13 * y) + np.sin(9 * x) * np.cos(4 * y)
         + 0.25 * np.sin(31 * (x + y)))
    v = v + 1e-3 * np.random.default_rng(seed).uniform(-1, 1, v.shape)
    return v.ravel()[:n].astype(dtype)


# --- peers: how one array becomes frames, and back -------------------------------------------

def enc_pickle0_zlib(a):
    return [zlib.compress(pickle.dumps(a, protocol=0))]


def dec_pickle0_zlib(frames):
    return pickle.loads(zlib.decompress(frames[0].buffer))


def enc_npsave_zlib(a):
    buf = io.BytesIO()
    np.save(buf, a)
    return [zlib.compress(buf.getbuffer())]


def dec_npsave_zlib(frames):
    return np.load(io.BytesIO(zlib.decompress(frames[0].buffer)))


def enc_pickle5(a):
    buffers = []
    head = pickle.dumps(a, protocol=5, buffer_callback=buffers.append)
    return [head] + [b.raw() for b in buffers]


def dec_pickle5(frames):
    return pickle.loads(frames[0].buffer, buffers=[f.buffer for f in frames[1:]])


def enc_send_array(a):
    md = json.dumps({"dtype": str(a.dtype), "shape": a.shape}).encode()
    return [md, a]


def dec_send_array(frames):
    md = json.loads(frames[0].bytes)
    return np.frombuffer(frames[1].buffer, dtype=md["dtype"]).reshape(md["shape"])


PEERS = {
    "pickle0+zlib": (enc_pickle0_zlib, dec_pickle0_zlib),
    "np.save+zlib": (enc_npsave_zlib, dec_npsave_zlib),
    "pickle5": (enc_pickle5, dec_pickle5),
    "send_array": (enc_send_array, dec_send_array),
    "bare-frames": (None, None),
}


def array_for(size: str) -> np.ndarray:
    if size == "large":
        return smooth_field(LARGE)
    return smooth_field(100).reshape(SMALL_SHAPE)


# --- the two processes of one end-to-end case ------------------------------------------------

def role_recv(peer: str, size: str, count: int) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PULL)
    sock.rcvtimeo = 120_000
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    print(port, flush=True)
    decoder = PEERS[peer][1]
    nbytes = 0
    first = None
    for _ in range(count):
        frames = sock.recv_multipart(copy=False)
        if first is None:
            first = time.perf_counter()
        if decoder is None:
            nbytes += len(frames[-1].buffer)
        else:
            nbytes += decoder(frames).nbytes
    seconds = time.perf_counter() - first
    print(json.dumps({"messages": count, "bytes": nbytes, "seconds": seconds}), flush=True)


def role_send(peer: str, size: str, count: int, port: int) -> None:
    a = array_for(size)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUSH)
    sock.sndtimeo = 120_000
    sock.connect(f"tcp://127.0.0.1:{port}")
    encoder = PEERS[peer][0]
    if encoder is None:
        prebuilt = [json.dumps({"dtype": "<f8", "shape": a.shape}).encode(), a.tobytes()]
    for _ in range(count):
        frames = prebuilt if encoder is None else encoder(a)
        if peer == "send_array":
            # The recipe from pyzmq's documentation, as written.
            sock.send(frames[0], zmq.SNDMORE)
            sock.send(frames[1], copy=False)
        else:
            # pyzmq's advice: zero-copy only pays for large frames.
            sock.send_multipart(frames, copy=memoryview(frames[-1]).nbytes < 65536)
    sock.close(linger=120_000)
    ctx.term()


def role_tcp_recv(size: str, count: int) -> None:
    nbytes = array_for(size).nbytes
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    print(srv.getsockname()[1], flush=True)
    conn, _ = srv.accept()
    buf = bytearray(nbytes)
    view = memoryview(buf)
    total = nbytes * count
    got = 0
    first = None
    while got < total:
        n = conn.recv_into(view[: min(nbytes, total - got)])
        if n == 0:
            break
        if first is None:
            first = time.perf_counter()
        got += n
    seconds = time.perf_counter() - first
    print(json.dumps({"messages": count, "bytes": got, "seconds": seconds}), flush=True)


def role_tcp_send(size: str, count: int, port: int) -> None:
    data = array_for(size).tobytes()
    s = socket.create_connection(("127.0.0.1", port))
    for _ in range(count):
        s.sendall(data)
    s.close()


def run_pair(peer: str, size: str, count: int) -> dict:
    me = [sys.executable, __file__]
    if peer == "raw-tcp":
        recv_args, send_args = ["--role", "tcp-recv"], ["--role", "tcp-send"]
    else:
        recv_args, send_args = ["--role", "recv"], ["--role", "send"]
    common = ["--peer", peer, "--size", size, "--count", str(count)]
    receiver = subprocess.Popen(me + recv_args + common, stdout=subprocess.PIPE, text=True)
    port = receiver.stdout.readline().strip()
    sender = subprocess.Popen(me + send_args + common + ["--port", port])
    sender.wait(timeout=600)
    line = receiver.stdout.readline()
    receiver.wait(timeout=600)
    if sender.returncode or receiver.returncode or not line:
        raise RuntimeError(f"{peer}/{size}: sender {sender.returncode}, receiver {receiver.returncode}")
    return json.loads(line)


def summarize(runs: list[dict]) -> dict:
    gbs = [r["bytes"] / r["seconds"] / 1e9 for r in runs]
    mps = [r["messages"] / r["seconds"] for r in runs]
    return {"gbps": statistics.median(gbs), "gbps_min": min(gbs), "gbps_max": max(gbs),
            "msgs": statistics.median(mps), "msgs_min": min(mps), "msgs_max": max(mps)}


# --- ndbridge's side, from the Rust bench binary ---------------------------------------------

def ndbridge_cases(repeats: int, quick: bool) -> dict:
    out = {}
    plans = [
        ("large", ["--sizes", "8388608", "--publishers", "1", "--codecs", "raw,auto", "--baseline"]),
        ("small", ["--sizes", "800", "--publishers", "1", "--codecs", "raw", "--baseline",
                   "--max-messages", "100000" if not quick else "30000"]),
    ]
    if not quick:
        plans.append(("fanin", ["--sizes", "8388608", "--publishers", "1,16", "--codecs", "raw",
                                "--baseline"]))
        plans.append(("disk", ["--sizes", "8388608", "--publishers", "1", "--codecs", "raw",
                               "--disk", "--baseline"]))
    for key, args in plans:
        cmd = [str(BENCH), "--json", "--transport", "tcp", "--repeats", str(repeats)] + args
        if quick:
            cmd += ["--bytes-per-case", str(256 << 20)]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        if res.returncode:
            raise RuntimeError(f"ndbridge-bench failed: {res.stderr}")
        out[key] = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    return out


def codec_cases(repeats: int) -> list[dict]:
    """blosc2 and ndbridge on the same bytes, one thread each, in alternating rounds of five
    timed runs (after five untimed runs each), so that the machine's slow spells fall on both."""
    import blosc2

    blosc2.set_nthreads(1)
    ndbridge_codecs = ["shuffle-zstd1", "zstd1"]

    def blosc2_round(a, runs):
        enc, dec, c, d = [], [], None, None
        for _ in range(runs):
            t = time.perf_counter()
            c = blosc2.compress2(a, codec=blosc2.Codec.ZSTD, clevel=1,
                                 filters=[blosc2.Filter.SHUFFLE], typesize=a.itemsize,
                                 nthreads=1)
            enc.append(a.nbytes / (time.perf_counter() - t) / 1e9)
            t = time.perf_counter()
            d = blosc2.decompress2(c)
            dec.append(a.nbytes / (time.perf_counter() - t) / 1e9)
        assert np.array_equal(np.frombuffer(d, a.dtype), a)
        return enc, dec, len(c) / a.nbytes

    def ndbridge_round(path, codec, runs):
        res = subprocess.run([str(BENCH), "codec", "--input", path, "--codec", codec,
                              "--repeats", str(runs)], capture_output=True, text=True, check=True)
        r = json.loads(res.stdout)
        return r["encode_runs"], r["decode_runs"], r["ratio"]

    def row(who, dtype, enc, dec, ratio):
        return {"who": who, "dtype": dtype, "ratio": ratio,
                "encode_gbps": statistics.median(enc), "encode_min": min(enc),
                "encode_max": max(enc), "decode_gbps": statistics.median(dec),
                "decode_min": min(dec), "decode_max": max(dec)}

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for dtype, n in [(np.float64, LARGE), (np.float32, 2 * LARGE)]:
            a = smooth_field(n, dtype=dtype)
            path = os.path.join(tmp, "field.npy")
            np.save(path, a)
            blosc2_round(a, 5)  # untimed, as the ndbridge codec role's five warm-up rounds
            runs = {who: ([], [], 0.0) for who in ["blosc2"] + ndbridge_codecs}
            for _ in range(repeats):
                for who in runs:
                    enc, dec, ratio = (blosc2_round(a, 5) if who == "blosc2"
                                       else ndbridge_round(path, who, 5))
                    runs[who][0].extend(enc)
                    runs[who][1].extend(dec)
                    runs[who] = (runs[who][0], runs[who][1], ratio)
            for who, (enc, dec, ratio) in runs.items():
                name = "blosc2 shuffle+zstd1" if who == "blosc2" else f"ndbridge {who}"
                rows.append(row(name, str(a.dtype), enc, dec, ratio))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3, help="runs per case (median, min-max)")
    ap.add_argument("--quick", action="store_true", help="smaller cases, for a smoke run")
    ap.add_argument("--json", help="also write every figure to this JSON file")
    ap.add_argument("--role", help=argparse.SUPPRESS)
    ap.add_argument("--peer", help=argparse.SUPPRESS)
    ap.add_argument("--size", help=argparse.SUPPRESS)
    ap.add_argument("--count", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.role == "recv":
        return role_recv(args.peer, args.size, args.count)
    if args.role == "send":
        return role_send(args.peer, args.size, args.count, args.port)
    if args.role == "tcp-recv":
        return role_tcp_recv(args.size, args.count)
    if args.role == "tcp-send":
        return role_tcp_send(args.size, args.count, args.port)

    if not BENCH.exists():
        sys.exit(f"{BENCH} is missing: run "
                 "`cargo build --release --example ndbridge-bench` first")
    counts = {
        ("large", "pickle0+zlib"): 3 if args.quick else 6,
        ("large", "np.save+zlib"): 6 if args.quick else 20,
        ("small", "pickle0+zlib"): 5000 if args.quick else 20000,
    }
    default_count = {"large": 50 if args.quick else 200, "small": 20000 if args.quick else 100000}
    peers = {}
    for size in ["large", "small"]:
        for peer in list(PEERS) + ["raw-tcp"]:
            count = counts.get((size, peer), default_count[size])
            runs = [run_pair(peer, size, count) for _ in range(args.repeats)]
            peers[(size, peer)] = summarize(runs)
            p = peers[(size, peer)]
            print(f"  measured {size:5} {peer:14} {p['gbps']:8.3f} GB/s {p['msgs']:10.0f} msg/s",
                  file=sys.stderr, flush=True)
    nd = ndbridge_cases(args.repeats, args.quick)
    codecs = codec_cases(args.repeats)

    def row(cases, mode, codec="raw", publishers=1, sink="-"):
        for c in cases:
            if (c["mode"], c["codec"], c["publishers"], c["sink"]) == (mode, codec, publishers, sink):
                return c
        raise KeyError((mode, codec, publishers, sink))

    large, small = nd["large"], nd["small"]
    nd_large, zmq_large = row(large, "ndbridge"), row(large, "libzmq")
    nd_small, zmq_small = row(small, "ndbridge"), row(small, "libzmq")
    print()
    print("End to end, tcp loopback, one sender (median [min-max] over repeats); "
          "x: ndbridge's median over this one's")
    print(f"{'who':<26} {'8 MiB f64 GB/s':>24} {'x':>7} {'10x10 f64 msgs/s':>30} {'x':>7}")

    def line(name, big, sml, gkey="gbps", mkey="msgs"):
        big_x = nd_large["gb_per_s"] / big[gkey]
        sml_x = nd_small["msgs_per_s"] / sml[mkey]
        print(f"{name:<26} {big[gkey]:>8.3f} [{big[gkey + '_min']:.3f}-{big[gkey + '_max']:.3f}]"
              f" {big_x:>7.2f}"
              f" {sml[mkey]:>12.0f} [{sml[mkey + '_min']:.0f}-{sml[mkey + '_max']:.0f}]"
              f" {sml_x:>7.2f}")

    line("ndbridge (raw)", nd_large, nd_small, "gb_per_s", "msgs_per_s")
    line("libzmq bare, same build", zmq_large, zmq_small, "gb_per_s", "msgs_per_s")
    for peer in list(PEERS) + ["raw-tcp"]:
        line(peer, peers[("large", peer)], peers[("small", peer)])
    print()
    print("Codec, one thread, same bytes (smooth field: sum of sines + 1e-3 noise)")
    print(f"{'who':<26} {'dtype':<8} {'size':>6} {'encode GB/s':>22} {'decode GB/s':>22}")
    for c in codecs:
        print(f"{c['who']:<26} {c['dtype']:<8} {c['ratio']:>6.1%} "
              f"{c['encode_gbps']:>7.2f} [{c['encode_min']:.2f}-{c['encode_max']:.2f}] "
              f"{c['decode_gbps']:>7.2f} [{c['decode_min']:.2f}-{c['decode_max']:.2f}]")
    print()
    print("Targets (ratios from this run)")
    ratios = []

    def target(name, value, goal, fmt="{:.2f}"):
        ok = value >= goal
        ratios.append({"target": name, "value": value, "goal": goal, "met": ok})
        print(f"  {'MET ' if ok else 'MISS'} {name}: {fmt.format(value)} (goal >= {fmt.format(goal)})")

    target("large: ndbridge / bare libzmq throughput", nd_large["gb_per_s"] / zmq_large["gb_per_s"], 0.9)
    target("small: ndbridge / bare libzmq msgs/s", nd_small["msgs_per_s"] / zmq_small["msgs_per_s"], 0.5)
    target("small: ndbridge / pyzmq send_array msgs/s",
           nd_small["msgs_per_s"] / peers[("small", "send_array")]["msgs"], 5.0)
    target("large: ndbridge / pickle0+zlib throughput",
           nd_large["gb_per_s"] / peers[("large", "pickle0+zlib")]["gbps"], 100.0, "{:.0f}")
    auto = row(large, "ndbridge", "auto")
    target("auto / raw end-to-end throughput (8 MiB)", auto["gb_per_s"] / nd_large["gb_per_s"], 1.0)
    print(f"       auto's wire/raw bytes {auto['compression_ratio']:.2f} (1.00: every message sent "
          f"raw); raw's own repeats span {nd_large['gb_per_s_min'] / nd_large['gb_per_s']:.2f}-"
          f"{nd_large['gb_per_s_max'] / nd_large['gb_per_s']:.2f} of its median")
    for dtype in ["float64", "float32"]:
        b = next(c for c in codecs if c["who"].startswith("blosc2") and c["dtype"] == dtype)
        n = next(c for c in codecs if c["who"] == "ndbridge shuffle-zstd1" and c["dtype"] == dtype)
        target(f"codec {dtype}: encode speed vs blosc2", n["encode_gbps"] / b["encode_gbps"], 1.2)
        target(f"codec {dtype}: decode speed vs blosc2", n["decode_gbps"] / b["decode_gbps"], 1.0)
        target(f"codec {dtype}: blosc2 size / ndbridge size", b["ratio"] / n["ratio"], 1.0)
    if "fanin" in nd:
        one, sixteen = row(nd["fanin"], "ndbridge"), row(nd["fanin"], "ndbridge", publishers=16)
        target("16 publishers / 1 publisher throughput", sixteen["gb_per_s"] / one["gb_per_s"], 0.9)
        print(f"       16 publishers: gaps {sixteen['gaps']}, collector peak RSS "
              f"{sixteen['collector_peak_rss_mb']:.0f} MB (cap 1024 MiB in flight)")
        bare_one = row(nd["fanin"], "libzmq")
        bare_sixteen = row(nd["fanin"], "libzmq", publishers=16)
        print(f"       the same for bare libzmq: "
              f"{bare_sixteen['gb_per_s'] / bare_one['gb_per_s']:.2f}")
    if "disk" in nd:
        nodisk, store = row(nd["disk"], "ndbridge"), row(nd["disk"], "ndbridge", sink="zarr")
        npy = row(nd["disk"], "ndbridge", sink="npy")
        bare_files = row(nd["disk"], "libzmq", sink="files")
        target("store / bare libzmq writing a file per payload (8 MiB)",
               store["gb_per_s"] / bare_files["gb_per_s"], 0.8)
        print(f"       store / no sink: {store['gb_per_s'] / nodisk['gb_per_s']:.2f}; "
              f"--format npy / no sink: {npy['gb_per_s'] / nodisk['gb_per_s']:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "peers": {f"{k[0]}/{k[1]}": v for k, v in peers.items()},
            "ndbridge": nd, "codec": codecs, "targets": ratios}, indent=1))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""A simulation worker in Python: evolves a 2-D temperature field by diffusion and sends every
step to an ndbridge collector as the record ``state`` with the arrays ``u`` (the field) and
``t`` (the simulated time, a 0-d array), and the step number in ``attrs``.

Run a collector first, then the worker (and, to watch, examples/subscribe.py)::

    cargo run --release -- collect --forward tcp://127.0.0.1:5556
    python examples/publish.py --to tcp://127.0.0.1:5555 --steps 200
    python examples/subscribe.py --from tcp://127.0.0.1:5556 --field u

Needs numpy, pyzmq, zstandard and the ndbridge package (``pip install ./python``).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Iterator, Optional, Sequence, Tuple

import numpy as np

import ndbridge

#: Diffusion number of the explicit scheme (stable below 0.25).
ALPHA = 0.2


def simulate(size: int, seed: int = 0,
             dt: float = 0.01) -> Iterator[Tuple[int, float, np.ndarray]]:
    """Yields ``(step, time, u)`` forever: a field of hot spots diffusing on a periodic square,
    warmed by a steady source in its middle. Every step is a new array (never updated in place),
    so a frame handed to ZeroMQ without a copy stays valid until it is sent."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    u = np.zeros((size, size))
    for cx, cy, width in rng.uniform([0, 0, 0.03], [1, 1, 0.1], (4, 3)):
        u = u + np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * width ** 2))
    source = 0.05 * np.exp(-((x - 0.5) ** 2 + (y - 0.5) ** 2) / 0.005)
    step = 0
    while True:
        yield step, step * dt, u
        laplacian = (np.roll(u, 1, 0) + np.roll(u, -1, 0) + np.roll(u, 1, 1)
                     + np.roll(u, -1, 1) - 4 * u)
        u = u + ALPHA * laplacian + source * dt
        step += 1


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Send an evolving 2-D field to an ndbridge collector (PUSH), one record per "
                    "simulation step.")
    parser.add_argument("--to", default="tcp://127.0.0.1:5555", metavar="ENDPOINT",
                        help="the collector's input address (default: %(default)s)")
    parser.add_argument("--name", default="state", help="record name (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=100,
                        help="steps to send; 0 runs until interrupted (default: %(default)s)")
    parser.add_argument("--rate", type=float, default=10.0,
                        help="steps per second; 0 sends as fast as possible "
                             "(default: %(default)s)")
    parser.add_argument("--size", type=int, default=128,
                        help="side of the square field, float64 (default: %(default)s)")
    parser.add_argument("--codec", choices=["auto", "zstd", "raw"], default="auto",
                        help="auto: raw on this machine, otherwise compressed when that saves "
                             "at least 10%% (default: %(default)s)")
    parser.add_argument("--source", default=None,
                        help="publisher id sent with every record (default: host:pid)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the initial field (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS",
                        help="at the end, how long to wait for the records to go out before "
                             "failing (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.steps < 0 or args.rate < 0 or args.size < 1 or args.timeout < 0:
        parser.error("--steps, --rate and --timeout must be >= 0 and --size >= 1")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    period = 1.0 / args.rate if args.rate else 0.0
    sent = 0
    start = time.monotonic()
    # Leaving the block waits until every record has gone out, or fails after --timeout.
    try:
        with ndbridge.Publisher(args.to, source=args.source, codec=args.codec,
                                timeout=args.timeout) as pub:
            print(f"sending {args.name!r} ({args.size}x{args.size} float64) to {args.to} as "
                  f"{pub.source}, session {pub.session}", file=sys.stderr)
            try:
                for step, t, u in simulate(args.size, args.seed):
                    if args.steps and step >= args.steps:
                        break
                    pub.send(args.name, {"u": u, "t": np.float64(t)}, attrs={"step": step})
                    sent += 1
                    if period:
                        time.sleep(max(0.0, start + sent * period - time.monotonic()))
            except KeyboardInterrupt:
                pass
    except ndbridge.DeliveryError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    elapsed = time.monotonic() - start
    print(f"sent {sent} records in {elapsed:.2f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

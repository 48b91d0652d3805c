#!/usr/bin/env python3
"""A live subscriber: connects to a collector's forward socket, prints one line per record and
keeps a running statistic (count, mean, min, max over every element seen) of one array.

    cargo run --release -- collect --forward tcp://127.0.0.1:5556
    python examples/publish.py --steps 0 &
    python examples/subscribe.py --from tcp://127.0.0.1:5556 --name state --field u

Each line shows the record (name, source, seq, each array as ``name:dtype[shape]/codec``), the
statistic of the chosen array in this record, and the running one over all records so far::

    state host:4242 seq=17 u:<f8[64, 64]/zstd t:<f8[]/raw | u: mean=0.104 min=0 max=0.98 | all: ...

Needs numpy, pyzmq, zstandard and the ndbridge package (``pip install ./python``).
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

import numpy as np

import ndbridge


class RunningStats:
    """Count, mean, min and max over every element of every array added (complex values by
    magnitude). The mean is accumulated in float64."""

    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0
        self.min = np.inf
        self.max = -np.inf

    def add(self, values: np.ndarray) -> None:
        if values.size == 0:
            return
        values = np.abs(values) if values.dtype.kind == "c" else values
        self.count += values.size
        self.total += float(values.sum(dtype=np.float64))
        self.min = min(self.min, float(values.min()))
        self.max = max(self.max, float(values.max()))

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else float("nan")

    def text(self, count: bool = True) -> str:
        """``n=.. mean=.. min=.. max=..`` (without ``n`` when `count` is false)."""
        if not self.count:
            return "n=0" if count else "empty"
        values = f"mean={self.mean:.6g} min={self.min:.6g} max={self.max:.6g}"
        return f"n={self.count} {values}" if count else values


def describe(rec: ndbridge.Record) -> str:
    """``name:dtype[shape]/codec`` for each array of the record."""
    parts = []
    for entry in rec.header["arrays"]:
        parts.append(f"{entry['name']}:{entry['dtype']}{entry['shape']}/{entry['codec']}")
    return " ".join(parts) or "(no arrays)"


def record_line(rec: ndbridge.Record, field: Optional[str], running: RunningStats) -> str:
    """The line printed for one record; adds the chosen array to `running`."""
    line = f"{rec.name} {rec.source} seq={rec.seq} {describe(rec)}"
    field = field or next(iter(rec.arrays), None)
    if field in rec.arrays:
        values = rec[field]  # read-only and possibly a view on the message: used, not kept
        this = RunningStats()
        this.add(values)
        running.add(values)
        line += f" | {field}: {this.text(count=False)} | all: {running.text()}"
    return line


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Print the records published by an ndbridge collector (its --forward "
                    "socket) or any PUB publisher, with a running statistic of one array.")
    parser.add_argument("--from", dest="endpoint", default="tcp://127.0.0.1:5556",
                        metavar="ENDPOINT", help="the PUB socket to connect to "
                                                 "(default: %(default)s)")
    parser.add_argument("--name", action="append", default=None,
                        help="only records with this name (repeatable; default: all)")
    parser.add_argument("--field", default=None, metavar="ARRAY",
                        help="the array to keep statistics of (default: each record's first)")
    parser.add_argument("--count", type=int, default=None, metavar="N",
                        help="exit after N records (default: run until interrupted)")
    parser.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                        help="exit with status 1 after this long without a record")
    args = parser.parse_args(argv)
    if args.count is not None and args.count < 1:
        parser.error("--count must be at least 1")
    if args.timeout is not None and args.timeout <= 0:
        parser.error("--timeout must be positive")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    timeout_ms = None if args.timeout is None else int(args.timeout * 1000)
    running = RunningStats()
    seen = 0
    with ndbridge.Subscriber(args.endpoint, names=args.name, timeout_ms=timeout_ms) as sub:
        try:
            while args.count is None or seen < args.count:
                try:
                    rec = sub.recv()
                except TimeoutError:
                    print(f"no record for {args.timeout} s on {args.endpoint}", file=sys.stderr)
                    return 1
                except ndbridge.WireError as e:  # a malformed message: report it, go on
                    print(f"bad message: {e}", file=sys.stderr)
                    continue
                seen += 1
                print(record_line(rec, args.field, running), flush=True)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())

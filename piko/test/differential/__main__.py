"""
``python -m piko.test.differential``: the long differential run, or a replay.

Examples::

    python -m piko.test.differential --duration 1200 --seed 7
    python -m piko.test.differential --replay 123456 --only 3 --topology ours

It prints one line per round, then the exchanges run, the mismatches (hangs
among them), the resource problems and the seeds to replay; it exits 1 if
anything failed, 2 if the Go binary is absent.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from collections.abc import Iterator

from piko.test.differential.runner import run
from piko.test.differential.spec import batch_seeds
from piko.test.differential.topology import TOPOLOGIES, go_binary


def _seeds(master: int) -> Iterator[int]:
    rnd = random.Random(master)
    while True:
        yield rnd.randrange(1, 2**31)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m piko.test.differential", description=__doc__)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds to run (default 60)")
    parser.add_argument("--seed", type=int, default=None, help="master seed (default: random)")
    parser.add_argument(
        "--topology",
        action="append",
        choices=sorted(TOPOLOGIES),
        help="topology to test (repeatable; default all but the go-twin calibrations); "
        "its all-Go reference always runs",
    )
    parser.add_argument("--replay", type=int, action="append", help="run this batch seed only")
    parser.add_argument("--only", type=int, default=None, help="with --replay: one exchange")
    parser.add_argument("--size", type=int, default=None, help="force the exchanges per batch")
    parser.add_argument("--small", action="store_true", help="bodies up to 600 KiB, not 16 MiB")
    args = parser.parse_args(argv)
    if go_binary() is None:
        print("the Go Piko binary is absent: set PIKO_GO_BINARY", file=sys.stderr)
        return 2
    names = args.topology or [n for n in TOPOLOGIES if "twin" not in n]
    if args.replay:
        seeds: Iterator[int] | list[int] = args.replay
        deadline = None
    else:
        master = args.seed if args.seed is not None else random.randrange(2**31)
        print(f"master seed {master} (first batch seeds: {batch_seeds(master, 3)})")
        seeds = _seeds(master)
        deadline = time.monotonic() + args.duration
    report = asyncio.run(
        run(
            names,
            seeds,
            deadline=deadline,
            only=args.only,
            big=not args.small,
            sizes=[args.size] if args.size else None,
            log=lambda line: print(line, flush=True),
        )
    )
    print(report.text())
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

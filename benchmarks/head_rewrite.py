"""
CPU cost of one large request head through the HTTP head path, in process.

For each shape of head, the best of ``--reps`` runs of: parsing it (``RequestReader``), the
server's rewrite onto the stream (``rewrite_request(close=True)``), and the agent's parse of
that and rewrite to the local service (``close=False``), in ms per head and µs per KB.
Shapes (``--headers`` names, 59,000 by default: about 770 KB):

``sorted``
    distinct lower-case names ``x-h00000: v`` ... in order (what ``large_heads.py`` sends);
``shuffled``
    the same names in random order (the sort by key does real work);
``awkward``
    names with letters after digits (``x-1a00000``) and values holding colons and trailing
    blanks, which take the slower, still linear, paths.

The cost must grow linearly with the head (``--scale`` runs a quarter and half as many headers
too).  Before the head path was made linear and cheap this was about 360 ms per rewrite of the
``sorted`` head; run an older checkout with ``PYTHONPATH=/path/to/it`` to compare::

    python benchmarks/head_rewrite.py
    PYTHONPATH=/path/to/older/checkout python benchmarks/head_rewrite.py --shapes sorted
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.append(str(Path(__file__).resolve().parents[1]))

from benchmarks._bench import table
from piko.http.parser import HeadEvent, RequestReader
from piko.http.rewrite import rewrite_request


def make_head(shape: str, headers: int, seed: int = 1) -> bytes:
    if shape == "awkward":
        lines = [b"x-%da%05d: a:b  " % (i % 10, i) for i in range(headers)]
    else:
        lines = [b"x-h%05d: v" % i for i in range(headers)]
    if shape == "shuffled":
        random.Random(seed).shuffle(lines)
    return (
        b"GET /large HTTP/1.1\r\nHost: 127.0.0.1\r\nx-piko-endpoint: bench\r\n"
        + b"\r\n".join(lines)
        + b"\r\n\r\n"
    )


def parse(raw: bytes) -> HeadEvent:
    reader = RequestReader(max_header_bytes=4 << 20)  # cost, not limits, is measured here
    reader.feed(raw)
    ev = reader.next_event()
    assert isinstance(ev, HeadEvent)
    return ev


def best(reps: int, fn: object) -> float:
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return min(times)


def measure(raw: bytes, reps: int) -> list[float]:
    ev = parse(raw)
    server = rewrite_request(ev.head, ev.framing, "127.0.0.1", close=True)
    ev2 = parse(server)
    parse_s = best(reps, lambda: parse(raw))
    server_s = best(reps, lambda: rewrite_request(ev.head, ev.framing, "127.0.0.1", close=True))
    agent_s = best(
        reps,
        lambda: rewrite_request(parse(server).head, ev2.framing, "127.0.0.1", close=False),
    )
    return [parse_s, server_s, agent_s]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--headers", type=int, default=59_000)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument(
        "--shapes", default="sorted,shuffled,awkward", help="comma-separated shapes"
    )
    parser.add_argument("--scale", action="store_true", help="also 1/4 and 1/2 the headers")
    args = parser.parse_args()
    counts = [args.headers // 4, args.headers // 2, args.headers] if args.scale else [args.headers]
    rows = []
    for shape in args.shapes.split(","):
        for count in counts:
            raw = make_head(shape, count)
            parse_s, server_s, agent_s = measure(raw, args.reps)
            kb = len(raw) / 1000
            rows.append(
                [
                    shape,
                    count,
                    round(kb),
                    parse_s * 1e3,
                    server_s * 1e3,
                    agent_s * 1e3,
                    (server_s + agent_s) * 1e6 / kb,
                ]
            )
    print(
        table(
            [
                "shape",
                "headers",
                "KB",
                "parse ms",
                "server rewrite ms",
                "agent parse+rewrite ms",
                "rewrites µs/KB",
            ],
            rows,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""
Many concurrent requests with very large heads through a Piko server and agent, from outside.

Real processes on 127.0.0.1 (as :mod:`benchmarks.agent_bodies` starts them): a Piko server
(ours, or Go's binary with ``--server go``), a Piko agent (ours, or Go's with ``--agent go``)
and a local HTTP/1.1 service that answers how many header lines it received.  ``--requests``
clients (50) each send at once a ``GET`` whose head carries ``--headers`` (59,000) distinct
lower-case header names, ``x-h00000: v`` ..., about 770 KB, under the 1 MiB head limit.

Every request must come back ``200`` with every header delivered.  Before the head path was
made cheap, each head cost our processes about half a second of CPU, so 50 of them kept the
reactor busy long enough for the yamux keepalive to time out and the session to be torn down:
502 for most requests.

Prints ok/failed, wall time (and per-request p50 / max), the peak RSS (``VmHWM``) of the
server and the agent next to their RSS at start, and their CPU seconds.  Exit status 1 if any
request failed::

    python benchmarks/large_heads.py
    python benchmarks/large_heads.py --server go --agent go   # the oracle
    python benchmarks/large_heads.py --code /path/to/older/checkout   # before/after
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import agent_bodies
from benchmarks._bench import percentile, proc_cpu_seconds, table

ENDPOINT = agent_bodies.ENDPOINT


# ----------------------------------------------------------------------------
# the local service: counts header lines, answers with the count
# ----------------------------------------------------------------------------


async def _serve_one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            try:
                raw = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            count = raw.count(b"\r\n") - 2  # less the request line and the blank line
            out = b"got %d headers\n" % count
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                b"Content-Length: %d\r\n\r\n" % len(out) + out
            )
            await writer.drain()
    except (asyncio.LimitOverrunError, ConnectionError):
        pass
    finally:
        writer.close()


def run_service(port_file: str) -> None:
    """Child role: serve on an ephemeral port, write it to ``port_file``, run until killed."""

    async def main() -> None:
        server = await asyncio.start_server(_serve_one, "127.0.0.1", 0, limit=4 << 20)
        Path(port_file).write_text(str(server.sockets[0].getsockname()[1]))
        await server.serve_forever()

    signal.alarm(3600)
    asyncio.run(main())


# ----------------------------------------------------------------------------
# clients
# ----------------------------------------------------------------------------


def make_head(headers: int) -> bytes:
    """A GET to the endpoint with ``headers`` distinct lower-case ``x-hNNNNN: v`` headers."""
    lines = b"".join(b"x-h%05d: v\r\n" % i for i in range(headers))
    return (
        b"GET /large HTTP/1.1\r\nHost: 127.0.0.1\r\nx-piko-endpoint: %s\r\n" % ENDPOINT.encode()
        + lines
        + b"\r\n"
    )


async def one_request(port: int, head: bytes, want: bytes, timeout: float) -> tuple[str, float]:
    """One request on its own connection: (``ok`` or what went wrong, seconds taken)."""
    start = time.monotonic()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError as e:
        return f"connect: {e}", 0.0
    try:
        writer.write(head)
        await writer.drain()
        status, got = await asyncio.wait_for(agent_bodies.read_response(reader), timeout)
        took = time.monotonic() - start
        if status == 200 and got.startswith(want):
            return "ok", took
        return f"{status}: {got[:60]!r}", took
    except TimeoutError:
        return f"client timeout ({timeout:.0f}s)", time.monotonic() - start
    except (agent_bodies.Lost, OSError) as e:
        return f"{type(e).__name__}: {e}", time.monotonic() - start
    finally:
        writer.close()


async def burst(
    port: int, n: int, head: bytes, want: bytes, timeout: float
) -> list[tuple[str, float]]:
    return list(await asyncio.gather(*(one_request(port, head, want, timeout) for _ in range(n))))


# ----------------------------------------------------------------------------
# measuring the processes
# ----------------------------------------------------------------------------


def _status_kb(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def rss_mb(pid: int) -> float:
    return _status_kb(pid, "VmRSS") / 1024


def peak_rss_mb(pid: int) -> float:
    return _status_kb(pid, "VmHWM") / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--role", default="main", choices=["main", "service"])
    parser.add_argument("--port-file")
    parser.add_argument("--server", choices=["ours", "go"], default="ours")
    parser.add_argument("--agent", choices=["ours", "go"], default="ours")
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--headers", type=int, default=59_000)
    parser.add_argument("--rounds", type=int, default=1, help="bursts on the same stack")
    parser.add_argument("--agent-timeout", type=float, default=60.0)
    parser.add_argument("--server-timeout", type=float, default=60.0)
    parser.add_argument(
        "--code",
        default=str(agent_bodies.ROOT),
        help="checkout whose piko package runs (default: this one)",
    )
    args = parser.parse_args()
    if args.role == "service":
        run_service(args.port_file)
        return 0
    agent_bodies.CODE = Path(args.code).resolve()
    agent_bodies.ENDPOINT = ENDPOINT
    if "go" in (args.server, args.agent) and not agent_bodies.GO_PIKO.exists():
        print(f"Go Piko not found at {agent_bodies.GO_PIKO}", file=sys.stderr)
        return 2
    log_dir = Path(os.environ.get("TMPDIR", "/tmp")) / f"large_heads.{os.getpid()}"
    log_dir.mkdir(parents=True, exist_ok=True)
    port_file = log_dir / "service.port"
    service = subprocess.Popen(
        [sys.executable, __file__, "--role", "service", "--port-file", str(port_file)],
        env=agent_bodies._env(),
    )
    head = make_head(args.headers)
    # The agent adds X-Forwarded-For and X-Piko-Forward; Host, x-piko-endpoint and ours reach
    # the service.
    want = b"got %d headers" % (args.headers + 4)
    failures = 0
    try:
        deadline = time.monotonic() + 10
        while not port_file.exists() or not port_file.read_text():
            if time.monotonic() > deadline:
                raise RuntimeError("service did not start")
            time.sleep(0.05)
        service_port = int(port_file.read_text())
        stack = agent_bodies.Stack(args, service_port, log_dir)
        try:
            server, agent = stack.procs
            start_rss = {"server": rss_mb(server.pid), "agent": rss_mb(agent.pid)}
            start_cpu = {
                "server": proc_cpu_seconds(server.pid),
                "agent": proc_cpu_seconds(agent.pid),
            }
            print(
                f"server={args.server} agent={args.agent} code={agent_bodies.CODE}: "
                f"{args.requests} concurrent requests, {args.headers} headers, "
                f"{len(head) / 1000:.0f} KB head (logs in {log_dir})"
            )
            timeout = args.agent_timeout + args.server_timeout + 30
            for round_ in range(args.rounds):
                t0 = time.monotonic()
                results = asyncio.run(burst(stack.proxy, args.requests, head, want, timeout))
                wall = time.monotonic() - t0
                outcomes = [r for r, _ in results]
                times = [t for _, t in results]
                bad = [r for r in outcomes if r != "ok"]
                failures += len(bad)
                print(
                    f"round {round_ + 1}: ok {len(outcomes) - len(bad)}, failed {len(bad)}, "
                    f"wall {wall:.1f}s, per request p50 {percentile(times, 50):.1f}s "
                    f"max {max(times):.1f}s"
                )
                for text in sorted(set(bad))[:5]:
                    print(f"    {bad.count(text)} x {text}")
            rows = []
            for name, proc in (("server", server), ("agent", agent)):
                if proc.poll() is not None:
                    rows.append([name, start_rss[name], None, None, None])
                    continue
                rows.append(
                    [
                        name,
                        start_rss[name],
                        peak_rss_mb(proc.pid),
                        rss_mb(proc.pid),
                        proc_cpu_seconds(proc.pid) - start_cpu[name],
                    ]
                )
            print(table(["process", "RSS start MB", "RSS peak MB", "RSS end MB", "CPU s"], rows))
        finally:
            stack.stop()
    finally:
        service.terminate()
        service.wait(5)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

"""
What the request inspector costs the agent: requests/s with it on and off, and memory.

Real processes on 127.0.0.1: one Piko server, a local HTTP/1.1 service (asyncio, keep-alive),
and two ``piko agent http`` processes in front of it, one with ``--inspect=false`` (endpoint
``off``) and one with the inspector on (endpoint ``on``, its inspector on a free port).  Both
are up for the whole run, so they share the machine's noise.

Throughput (default): ``--connections`` keep-alive clients (asyncio, in this process) send
``GET /bytes/1024`` and 1 KiB ``POST``s, alternating, through the server's proxy port to one
endpoint for ``--duration`` seconds, then to the other; ``--reps`` pairs, in alternating order.
Prints req/s and the agent's CPU µs per request for each, and the ratio on/off (the goal: at
least 0.95).

Memory (``--requests N``): N ``GET /bytes/<--body-size>`` (1 MiB by default) through the
inspecting agent; its RSS is sampled every second, and the inspector's ``/api/status``
(records, bytes held, evictions) read at the end.  The RSS must stay near the start's plus
the budget (``--db-size``, 50 MB by default), however many requests pass::

    python benchmarks/inspector_overhead.py                      # on vs off, req/s
    python benchmarks/inspector_overhead.py --requests 100000    # RSS after 100,000 x 1 MiB
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._bench import child_env, proc_cpu_seconds, table

ROOT = Path(__file__).resolve().parents[1]
MiB = 1024 * 1024
BLOB = os.urandom(MiB)


# -- the local service (child role)


async def _serve_one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            line, _, rest = head.partition(b"\r\n")
            method, target, _ = line.split(b" ", 2)
            length = 0
            for header in rest.split(b"\r\n"):
                name, _, value = header.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if length:
                await reader.readexactly(length)
            if method == b"GET" and target.startswith(b"/bytes/"):
                size = int(target[7:])
                body = BLOB[:size] if size <= len(BLOB) else BLOB * (size // len(BLOB) + 1)
                body = body[:size]
            else:
                body = b'{"got": %d}' % length
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                b"Content-Length: %d\r\n\r\n" % len(body)
            )
            writer.write(body)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, ValueError):
        pass
    finally:
        writer.close()


def run_service(port_file: str) -> None:
    async def main() -> None:
        server = await asyncio.start_server(_serve_one, "127.0.0.1", 0)
        Path(port_file).write_text(str(server.sockets[0].getsockname()[1]))
        await server.serve_forever()

    signal.alarm(7200)
    asyncio.run(main())


# -- processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def get(url: str) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            data: bytes = r.read()
            return data
    except OSError:
        return None


class Stack:
    """The server, the service and both agents; stopped by their handles."""

    def __init__(self, args: argparse.Namespace, log_dir: Path) -> None:
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.log_dir = log_dir
        self.proxy, upstream, self.admin, gossip = (free_port() for _ in range(4))
        self.inspector = free_port()
        port_file = log_dir / "service.port"
        self.start("service", [__file__, "--role", "service", "--port-file", str(port_file)])
        self.wait(lambda: port_file.exists() and port_file.read_text())
        service = port_file.read_text()
        piko = ["-m", "piko"]
        self.start(
            "server",
            [
                *piko,
                "server",
                f"--proxy.bind-addr=127.0.0.1:{self.proxy}",
                f"--upstream.bind-addr=127.0.0.1:{upstream}",
                f"--admin.bind-addr=127.0.0.1:{self.admin}",
                f"--cluster.gossip.bind-addr=127.0.0.1:{gossip}",
                "--log.level=warn",
                "--proxy.access-log.disable",
            ],
        )
        self.wait(lambda: get(f"http://127.0.0.1:{self.admin}/status/upstream/endpoints"))
        common = [
            f"--connect.url=http://127.0.0.1:{upstream}",
            "--log.level=warn",
            "--access-log.disable",
            "--timeout=60s",
        ]
        self.start("off", [*piko, "agent", "http", "off", service, *common, "--inspect=false"])
        self.start(
            "on",
            [
                *piko,
                "agent",
                "http",
                "on",
                service,
                *common,
                f"--inspect.bind-addr=127.0.0.1:{self.inspector}",
                f"--inspect.db-size={args.db_size}",
            ],
        )
        self.wait(self.registered)

    def start(self, name: str, argv: list[str]) -> None:
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115
        self.procs[name] = subprocess.Popen(
            [sys.executable, *argv], stdout=log, stderr=log, env=child_env(), cwd=str(ROOT)
        )

    def registered(self) -> bool:
        body = get(f"http://127.0.0.1:{self.admin}/status/upstream/endpoints")
        return bool(body) and {"on", "off"} <= set(json.loads(body or b"{}"))

    def wait(self, ready: object, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready():  # type: ignore[operator]
                return
            if any(p.poll() is not None for p in self.procs.values()):
                break
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the stack did not come up; see the logs in {self.log_dir}")

    def rss(self, name: str) -> int:
        """Resident set size of a child, in bytes."""
        with open(f"/proc/{self.procs[name].pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.terminate()
        for p in self.procs.values():
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)


# -- the load


async def _response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    remaining = length
    while remaining:
        chunk = await reader.read(min(remaining, 1 << 20))
        if not chunk:
            raise ConnectionError("cut short")
        remaining -= len(chunk)
    return status


async def load(
    port: int,
    endpoint: str,
    connections: int,
    *,
    duration: float | None = None,
    requests: int | None = None,
    body_size: int = 1024,
    mixed: bool = True,
) -> tuple[int, int, float]:
    """``(answered, failed, seconds)`` of keep-alive clients for a time or a count."""
    get_request = (
        f"GET /bytes/{body_size} HTTP/1.1\r\nHost: bench\r\nx-piko-endpoint: {endpoint}\r\n\r\n"
    ).encode()
    post_request = (
        f"POST /hook HTTP/1.1\r\nHost: bench\r\nx-piko-endpoint: {endpoint}\r\n"
        "Content-Type: application/json\r\nContent-Length: 1024\r\n\r\n"
    ).encode() + b"x" * 1024
    done = failed = 0
    started = time.monotonic()
    deadline = started + duration if duration is not None else None

    async def client() -> None:
        nonlocal done, failed
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        n = 0
        try:
            while True:
                if deadline is not None and time.monotonic() >= deadline:
                    return
                if requests is not None and done + failed >= requests:
                    return
                writer.write(post_request if mixed and n % 2 else get_request)
                n += 1
                status = await asyncio.wait_for(_response(reader), 60)
                if status == 200:
                    done += 1
                else:
                    failed += 1
        finally:
            writer.close()

    await asyncio.gather(*(client() for _ in range(connections)))
    return done, failed, time.monotonic() - started


def throughput(args: argparse.Namespace, stack: Stack) -> None:
    asyncio.run(load(stack.proxy, "off", args.connections, duration=1.0))  # warm both pools
    asyncio.run(load(stack.proxy, "on", args.connections, duration=1.0))
    rows = []
    totals: dict[str, list[float]] = {"off": [0, 0, 0], "on": [0, 0, 0]}
    for rep in range(args.reps):
        for name in ("off", "on") if rep % 2 == 0 else ("on", "off"):
            cpu = proc_cpu_seconds(stack.procs[name].pid)
            done, failed, seconds = asyncio.run(
                load(stack.proxy, name, args.connections, duration=args.duration)
            )
            cpu = proc_cpu_seconds(stack.procs[name].pid) - cpu
            totals[name][0] += done
            totals[name][1] += seconds
            totals[name][2] += cpu
            rows.append([rep + 1, name, f"{done / seconds:.0f}", failed, f"{1e6 * cpu / done:.0f}"])
    print(table(["rep", "inspector", "req/s", "failed", "agent CPU µs/req"], rows))
    off = totals["off"][0] / totals["off"][1]
    on = totals["on"][0] / totals["on"][1]
    cpu_off = 1e6 * totals["off"][2] / totals["off"][0]
    cpu_on = 1e6 * totals["on"][2] / totals["on"][0]
    print(
        f"\nall reps: off {off:.0f} req/s, on {on:.0f} req/s: on/off = {on / off:.3f} "
        f"({100 * (1 - on / off):+.1f}% fewer with it on; goal < 5%)\n"
        f"agent CPU per request: off {cpu_off:.0f} µs, on {cpu_on:.0f} µs "
        f"({100 * (cpu_on / cpu_off - 1):+.1f}%)"
    )
    status = json.loads(get(f"http://127.0.0.1:{stack.inspector}/api/status") or b"{}")
    print(f"inspector: {status}")


def memory(args: argparse.Namespace, stack: Stack) -> None:
    asyncio.run(load(stack.proxy, "on", 4, requests=200, body_size=args.body_size, mixed=False))
    start = stack.rss("on")
    peak = start
    sent = 200
    began = time.monotonic()
    print(
        f"RSS after 200 warm-up requests: {start / MiB:.1f} MiB "
        f"(budget {args.db_size / 1e6:.0f} MB)"
    )
    while sent < args.requests:
        batch = min(args.batch, args.requests - sent)
        done, failed, _ = asyncio.run(
            load(
                stack.proxy,
                "on",
                args.connections,
                requests=batch,
                body_size=args.body_size,
                mixed=False,
            )
        )
        sent += done + failed
        rss = stack.rss("on")
        peak = max(peak, rss)
        if failed:
            print(f"  {failed} failed in the last batch")
        print(
            f"  {sent:>7} requests, {sent * args.body_size / MiB / 1024:7.1f} GiB: RSS "
            f"{rss / MiB:6.1f} MiB (peak {peak / MiB:.1f}) after {time.monotonic() - began:.0f}s",
            flush=True,
        )
    status = json.loads(get(f"http://127.0.0.1:{stack.inspector}/api/status") or b"{}")
    final = stack.rss("on")
    print(
        f"\n{sent} requests of {args.body_size} bytes: RSS start {start / MiB:.1f} MiB, "
        f"peak {peak / MiB:.1f} MiB, end {final / MiB:.1f} MiB; growth "
        f"{(peak - start) / MiB:.1f} MiB against a budget of {args.db_size / MiB:.1f} MiB\n"
        f"inspector: {status}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--role", default="main")
    parser.add_argument("--port-file")
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--reps", type=int, default=4)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--requests", type=int, default=0, help="memory mode: this many")
    parser.add_argument("--body-size", type=int, default=MiB)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--db-size", type=int, default=50 * 1000 * 1000)
    args = parser.parse_args()
    if args.role == "service":
        run_service(args.port_file)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        stack = Stack(args, Path(tmp))
        try:
            if args.requests:
                memory(args, stack)
            else:
                throughput(args, stack)
        finally:
            stack.stop()
            with contextlib.suppress(OSError):
                for name in ("server", "on", "off"):
                    text = (Path(tmp) / f"{name}.log").read_text()
                    if "Traceback" in text:
                        print(f"--- {name}.log ---\n{text[-3000:]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

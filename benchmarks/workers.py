"""
``piko server --workers N`` with K agents: req/s and CPU per request.

Runs the real ``piko`` command line (``python -m piko server --workers N`` and
``python -m piko agent http ...``) in front of a small keep-alive HTTP service
(an asyncio child answering 1 KiB), loads the proxy port with ``wrk`` and
prints, for each ``workers x agents`` configuration, the tunnel req/s, its
ratio to the service measured directly in the same run, errors, and the CPU
microseconds per request of all server processes together and of all agents
together.  Requests that land on a worker without a local upstream take one
forwarding hop to the worker that has one, as between cluster nodes.

Usage (from the repo root, ``wrk`` installed)::

    python benchmarks/workers.py --configs 1x1,1x2,2x1,2x2 --duration 8

Everything binds 127.0.0.1; every child is killed when the script ends.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import contextlib

from benchmarks._bench import (
    Child,
    arm_watchdog,
    child_env,
    emit,
    proc_cpu_seconds,
    table,
)

ENDPOINT = "bench"
BODY = b"x" * 1024


def serve(args: argparse.Namespace) -> None:
    """The local service: HTTP/1.1 keep-alive, 1 KiB answer to every request."""
    arm_watchdog(args.max_seconds)
    response = (
        b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nContent-Type: text/plain\r\n\r\n" % len(BODY)
        + BODY
    )

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                match = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
                if match:
                    await reader.readexactly(int(match.group(1)))
                writer.write(response)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        emit("PORT", server.sockets[0].getsockname()[1])
        await server.serve_forever()

    asyncio.run(main())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_wrk(port: int, args: argparse.Namespace) -> dict:
    argv = [
        "wrk",
        "-t",
        str(args.threads),
        "-c",
        str(args.connections),
        "-d",
        f"{args.duration:g}s",
        "--timeout",
        "5s",
        "-H",
        f"x-piko-endpoint: {ENDPOINT}",
        f"http://127.0.0.1:{port}/",
    ]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=args.duration + 30).stdout
    rps = float(re.search(r"Requests/sec:\s*([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = 0
    non2xx = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", out)
    if non2xx:
        errors += int(non2xx.group(1))
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if sock:
        errors += sum(int(n) for n in sock.groups())
    return {"rps": rps, "requests": total, "errors": errors}


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (from /proc)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
        parents.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo.extend(parents.get(current, []))
    return out


def cpu_of(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            total += proc_cpu_seconds(pid)
    return total


def wait_routed(port: int, timeout: float) -> None:
    """Until a request through the proxy port gets a 200 (the agents registered)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/", headers={"x-piko-endpoint": ENDPOINT})
            if conn.getresponse().status == 200:
                conn.close()
                return
            conn.close()
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError("the endpoint never became routable")


def measure(workers: int, agents: int, service_port: int, args: argparse.Namespace) -> list:
    ports = {name: free_port() for name in ("proxy", "upstream", "admin", "gossip")}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "piko",
            "server",
            "--workers",
            str(workers),
            "--cluster.node-id",
            "bench",
            "--proxy.bind-addr",
            f"127.0.0.1:{ports['proxy']}",
            "--upstream.bind-addr",
            f"127.0.0.1:{ports['upstream']}",
            "--admin.bind-addr",
            f"127.0.0.1:{ports['admin']}",
            "--cluster.gossip.bind-addr",
            f"127.0.0.1:{ports['gossip']}",
            "--log.level",
            "error",
        ],
        env=child_env(),
    )
    agent_procs = []
    try:
        time.sleep(0.5)
        for _ in range(agents):
            agent_procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "piko",
                        "agent",
                        "http",
                        ENDPOINT,
                        f"127.0.0.1:{service_port}",
                        "--connect.url",
                        f"http://127.0.0.1:{ports['upstream']}",
                        "--log.level",
                        "error",
                    ],
                    env=child_env(),
                )
            )
        wait_routed(ports["proxy"], 30)
        time.sleep(1.0)  # let every agent connect and the workers' gossip settle
        server_pids = descendants(server.pid)
        agent_pids = [p.pid for p in agent_procs]
        s0, a0 = cpu_of(server_pids), cpu_of(agent_pids)
        result = run_wrk(ports["proxy"], args)
        s1, a1 = cpu_of(server_pids), cpu_of(agent_pids)
        n = max(1, result["requests"])
        return [
            f"{workers} x {agents}",
            result["rps"],
            None,
            result["errors"],
            (s1 - s0) / n * 1e6,
            (a1 - a0) / n * 1e6,
        ]
    finally:
        for proc in [*agent_procs, server]:
            proc.send_signal(signal.SIGTERM)
        for proc in [*agent_procs, server]:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def orchestrate(args: argparse.Namespace) -> None:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed: apt-get install -y wrk")
    life = str(args.duration * 20 + 300)
    service = Child([__file__, "--role", "service", "--max-seconds", life], "service")
    service_port = service.port()
    rows = []
    for rep in range(args.reps):
        direct = run_wrk(service_port, args)
        for config in args.configs.split(","):
            workers, agents = (int(x) for x in config.split("x"))
            row = measure(workers, agents, service_port, args)
            row[2] = row[1] / direct["rps"]
            rows.append([f"rep {rep + 1}", *row])
        rows.append([f"rep {rep + 1}", "direct", direct["rps"], 1.0, direct["errors"], None, None])
    print(
        table(
            [
                "rep",
                "workers x agents",
                "req/s",
                "/direct",
                "errors",
                "server µs/req",
                "agents µs/req",
            ],
            rows,
        )
    )
    load = f"wrk -t{args.threads} -c{args.connections}, {args.duration:g} s"
    print(f"\n(cores: {os.cpu_count()}; {load})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--configs", default="1x1,1x2,2x1,2x2", help="workers x agents, comma-separated"
    )
    ap.add_argument("--duration", type=float, default=8.0, help="seconds per wrk run")
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--role", choices=("service",), help=argparse.SUPPRESS)
    ap.add_argument("--max-seconds", type=float, default=600, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.role == "service":
        serve(args)
    else:
        orchestrate(args)


if __name__ == "__main__":
    main()

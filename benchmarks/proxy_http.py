"""
HTTP requests/s and latency through the Piko proxy port, with the direct figure in the same run.

Three processes (plus the orchestrator, which only waits):

* the Piko server (``make_server_service`` on ephemeral loopback ports);
* the upstream: a minimal keep-alive HTTP/1.1 echo protocol, served both on a
  plain TCP port (the direct path) and through the SDK,
  ``piko.client.Upstream(...).listen("bench", factory)`` (the tunnel);
* the load generator: ``wrk`` (keep-alive, ``--connections`` connections, 1
  thread, like pikobench's http-wrk), or a Python asyncio keep-alive client if
  wrk is not installed (``apt-get install -y wrk``).

Measured, tunnel and direct back to back: GET (the echo answers ``--size``
bytes) and POST of ``--size`` bytes echoed back, for ``--duration`` seconds
each; then sequential keep-alive GETs with ``http.client`` (interleaved
blocks, as pikobench's http-latency) for p50/p99 at low load.  Ratios:
tunnel/direct req/s (Go v0.9.0: GET 0.037, POST 0.033, with nginx as the
service) and tunnel/direct p50 latency (Go: 4.98).

    python benchmarks/proxy_http.py                       # ~40 s
    python benchmarks/proxy_http.py --duration 10 --latency-requests 2000
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._bench import (
    Child,
    arm_watchdog,
    emit,
    patch_nodelay,
    percentile,
    proc_cpu_seconds,
    run_piko_server,
    table,
)

ENDPOINT = "bench"
GO = {"GET": 0.037, "POST": 0.033, "latency_p50": 4.98}


# ----------------------------------------------------------------------------
# the upstream: echo service, direct and through the SDK
# ----------------------------------------------------------------------------


def run_echo(args: argparse.Namespace) -> None:
    from twisted.internet import reactor
    from twisted.internet.defer import inlineCallbacks
    from twisted.internet.endpoints import TCP4ServerEndpoint
    from twisted.internet.protocol import Factory, Protocol

    from piko.client import Upstream

    arm_watchdog(args.max_seconds)
    if args.patch_nodelay:
        patch_nodelay()
    get_body = b"x" * args.size
    head_fmt = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n"
    )

    class Echo(Protocol):
        """Minimal HTTP/1.1 server: Content-Length bodies, keep-alive, pipelining."""

        buf = b""
        need = -1  # body bytes still wanted for the current request; -1: reading a head
        close_after = False

        def dataReceived(self, data: bytes) -> None:
            buf = self.buf + data if self.buf else data
            while True:
                if self.need < 0:
                    end = buf.find(b"\r\n\r\n")
                    if end < 0:
                        break
                    head = buf[:end].lower()
                    buf = buf[end + 4 :]
                    self.method_get = head.startswith(b"get") or head.startswith(b"head")
                    m = re.search(rb"\r\ncontent-length:\s*(\d+)", head)
                    if b"\r\ntransfer-encoding:" in head:
                        self.transport.write(
                            b"HTTP/1.1 501 Not Implemented\r\nContent-Length: 0\r\n"
                            b"Connection: close\r\n\r\n"
                        )
                        self.transport.loseConnection()
                        return
                    self.need = int(m.group(1)) if m else 0
                    self.close_after = b"\r\nconnection: close" in head or head.split(b"\r\n", 1)[
                        0
                    ].endswith(b"http/1.0")
                if len(buf) < self.need:
                    break
                body, buf = buf[: self.need], buf[self.need :]
                self.need = -1
                out = get_body if self.method_get else body
                self.transport.write(head_fmt % len(out) + out)
                if self.close_after:
                    self.transport.loseConnection()
                    return
            self.buf = buf

    factory = Factory.forProtocol(Echo)

    @inlineCallbacks
    def main():
        lp = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
        yield Upstream(reactor, f"http://127.0.0.1:{args.upstream_port}").listen(ENDPOINT, factory)
        emit("RESULT", {"direct": lp.getHost().port})

    def failed(f):
        sys.stderr.write(f.getTraceback())
        reactor.stop()

    reactor.callWhenRunning(lambda: main().addErrback(failed))
    reactor.run()


# ----------------------------------------------------------------------------
# load generators
# ----------------------------------------------------------------------------

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s|m)$", text.strip())
    return float(m.group(1)) * _UNITS[m.group(2)] if m else float("nan")


def run_wrk(port: int, method: str, args, script_dir: str) -> dict:
    script = os.path.join(script_dir, f"{method}.lua")
    with open(script, "w") as f:
        if method == "POST":
            f.write(
                f'wrk.method = "POST"\nwrk.body = string.rep("x", {args.size})\n'
                'wrk.headers["Content-Type"] = "application/octet-stream"\n'
            )
    argv = [
        "wrk",
        "-t",
        "1",
        "-c",
        str(args.connections),
        "-d",
        f"{args.duration:g}s",
        "--timeout",
        "5s",
        "--latency",
        "-H",
        f"x-piko-endpoint: {ENDPOINT}",
        "-s",
        script,
        f"http://127.0.0.1:{port}/",
    ]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=args.duration + 30).stdout
    rps = float(re.search(r"Requests/sec:\s*([\d.]+)", out).group(1))
    lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.M))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    total = re.search(r"(\d+) requests in", out)
    errors = (int(non2xx.group(1)) if non2xx else 0) + (sum(map(int, sock.groups())) if sock else 0)
    requests = int(total.group(1)) if total else 0
    ok_rps = rps * (requests - errors) / requests if requests else 0.0
    return {
        "rps": ok_rps,
        "p50": _ms(lat.get("50", "nan")),
        "p99": _ms(lat.get("99", "nan")),
        "errors": errors,
        "requests": requests,
    }


async def _py_load(port: int, method: str, args) -> dict:
    body = b"x" * args.size
    if method == "POST":
        req = (
            f"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nx-piko-endpoint: {ENDPOINT}\r\n"
            f"Content-Type: application/octet-stream\r\nContent-Length: {args.size}\r\n\r\n"
        ).encode() + body
    else:
        req = f"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nx-piko-endpoint: {ENDPOINT}\r\n\r\n".encode()
    lat: list[float] = []
    errors = 0
    stop = time.monotonic() + args.duration

    async def worker():
        nonlocal errors
        r, w = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.monotonic() < stop:
                t0 = time.perf_counter()
                w.write(req)
                head = await r.readuntil(b"\r\n\r\n")
                n = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))
                await r.readexactly(n)
                if not head.startswith(b"HTTP/1.1 200"):
                    errors += 1
                else:
                    lat.append((time.perf_counter() - t0) * 1e3)
        finally:
            w.close()

    t0 = time.monotonic()
    await asyncio.wait_for(
        asyncio.gather(*(worker() for _ in range(args.connections))), args.duration + 20
    )
    dt = time.monotonic() - t0
    return {
        "rps": len(lat) / dt,
        "p50": percentile(lat, 50),
        "p99": percentile(lat, 99),
        "errors": errors,
        "requests": len(lat) + errors,
    }


def load(port: int, method: str, args, script_dir: str) -> dict:
    if args.loadgen == "wrk":
        return run_wrk(port, method, args, script_dir)
    return asyncio.run(_py_load(port, method, args))


def check(port: int, method: str, size: int) -> str | None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        body = b"y" * size if method == "POST" else None
        conn.request(method, "/", body=body, headers={"x-piko-endpoint": ENDPOINT})
        r = conn.getresponse()
        got = r.read()
        want = body if body is not None else b"x" * size
        if r.status != 200 or got != want:
            return f"{method}: status {r.status}, {len(got)} bytes: {got[:100]!r}"
        return None
    except Exception as e:
        return f"{method}: {type(e).__name__}: {e}"
    finally:
        conn.close()


def sequential(port: int, n: int) -> list[float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    hdr = {"x-piko-endpoint": ENDPOINT}
    lat = []
    deadline = time.monotonic() + 60
    for _ in range(n):
        if time.monotonic() > deadline:
            break
        t0 = time.perf_counter()
        conn.request("GET", "/", headers=hdr)
        r = conn.getresponse()
        r.read()
        lat.append((time.perf_counter() - t0) * 1e3)
        if r.status != 200:
            raise RuntimeError(f"sequential GET via {port}: status {r.status}")
    conn.close()
    return lat


# ----------------------------------------------------------------------------
# orchestrator
# ----------------------------------------------------------------------------


def orchestrate(args: argparse.Namespace) -> None:
    if args.loadgen == "auto":
        args.loadgen = "wrk" if shutil.which("wrk") else "python"
    script_dir = tempfile.mkdtemp(prefix="piko-bench-")
    life = str(args.duration * 6 + 120)
    extra = ["--patch-nodelay"] if args.patch_nodelay else []
    server = Child([__file__, "--role", "server", "--max-seconds", life, *extra], "server")
    echo = None
    try:
        ports = server.result(30)
        echo = Child(
            [
                __file__,
                "--role",
                "echo",
                "--upstream-port",
                str(ports["upstream"]),
                "--size",
                str(args.size),
                "--max-seconds",
                life,
                *extra,
            ],
            "echo",
        )
        direct = echo.result(30)["direct"]
        proxy = ports["proxy"]
        for method in ("GET", "POST"):
            for port in (direct, proxy):
                err = None
                for _ in range(50):  # the endpoint may take a moment to register
                    err = check(port, method, args.size)
                    if err is None:
                        break
                    time.sleep(0.1)
                if err:
                    sys.exit(f"correctness check via port {port} failed: {err}")
        print(
            f"proxy_http: load generator {args.loadgen}, {args.connections} connections, "
            f"{args.duration:g}s per run, body {args.size} B, {os.cpu_count()} CPUs"
            + (", EXPERIMENT --patch-nodelay" if args.patch_nodelay else "")
        )
        rows = []
        for method in ("GET", "POST"):
            load(proxy, method, args, script_dir) if args.warmup else None  # warm-up
            c0 = proc_cpu_seconds(server.proc.pid), proc_cpu_seconds(echo.proc.pid)
            t = load(proxy, method, args, script_dir)
            c1 = proc_cpu_seconds(server.proc.pid), proc_cpu_seconds(echo.proc.pid)
            d = load(direct, method, args, script_dir)
            good = max(1, t["requests"] - t["errors"])
            rows.append(
                [
                    method,
                    t["rps"],
                    d["rps"],
                    t["rps"] / d["rps"],
                    GO[method],
                    t["p50"],
                    t["p99"],
                    d["p50"],
                    t["errors"],
                    (c1[0] - c0[0]) / good * 1e6,
                    (c1[1] - c0[1]) / good * 1e6,
                ]
            )
            print(
                f"  {method}: tunnel {t['rps']:.0f} req/s, direct {d['rps']:.0f} req/s", flush=True
            )
        print()
        print(
            "== throughput under load (tunnel = wrk -> proxy port -> yamux -> SDK upstream -> echo)"
        )
        print(
            table(
                [
                    "method",
                    "tunnel req/s",
                    "direct req/s",
                    "ratio",
                    "Go ratio",
                    "tun p50 ms",
                    "tun p99 ms",
                    "dir p50 ms",
                    "tun errors",
                    "server us/req",
                    "upstream us/req",
                ],
                rows,
            )
        )
        # latency at low load: sequential keep-alive GETs, interleaved blocks
        sequential(direct, 100), sequential(proxy, 100)  # warm-up
        dl, tl = [], []
        per = max(1, args.latency_requests // 4)
        for _ in range(4):
            dl += sequential(direct, per)
            tl += sequential(proxy, per)
        rows = [
            [name, percentile(x, 50), percentile(x, 90), percentile(x, 99), len(x)]
            for name, x in (("tunnel", tl), ("direct", dl))
        ]
        r50 = percentile(tl, 50) / percentile(dl, 50)
        r99 = percentile(tl, 99) / percentile(dl, 99)
        print()
        print(f"== sequential GET latency (http.client, keep-alive, {len(tl)} requests per path)")
        print(table(["path", "p50 ms", "p90 ms", "p99 ms", "n"], rows))
        print(
            f"tunnel/direct p50 ratio {r50:.2f} (Go v0.9.0: {GO['latency_p50']}; lower is better), "
            f"p99 ratio {r99:.2f} (Go: 8.45)"
        )
    finally:
        if echo is not None:
            echo.stop()
        server.stop()
        shutil.rmtree(script_dir, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per load run")
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument(
        "--size", type=int, default=1024, help="response (GET) / echo (POST) body bytes"
    )
    ap.add_argument(
        "--latency-requests", type=int, default=2000, help="sequential requests per path"
    )
    ap.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto")
    ap.add_argument(
        "--warmup", type=int, default=0, help="1: one unmeasured tunnel run per method first"
    )
    ap.add_argument(
        "--patch-nodelay",
        action="store_true",
        help="EXPERIMENT: monkeypatch TCP_NODELAY onto piko's sockets (proposed fix)",
    )
    ap.add_argument("--role", choices=("server", "echo"), help=argparse.SUPPRESS)
    ap.add_argument("--upstream-port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--max-seconds", type=float, default=300, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.role == "server":
        run_piko_server(args.max_seconds, args.patch_nodelay)
    elif args.role == "echo":
        run_echo(args)
    else:
        orchestrate(args)


if __name__ == "__main__":
    main()

"""
The cost of traffic policies: proxy requests/s with 10 policies loaded against none, in one run.

One Piko server, one SDK upstream (the keep-alive echo of ``proxy_http.py``) and the
``proxy_http.py`` load generator (``wrk`` if installed, else its asyncio client), http-wrk
style.  The server reads its policies from a file; the rounds alternate between an empty
``policies:`` and ten policies (nine for other endpoints, globs and exact names, and one for
the benchmarked endpoint with every cheap action: an IP allow list, a per-IP rate limit too
high to refuse, header rules both ways, a body limit and a concurrency cap), swapped by
``POST /policy/reload`` on the admin port, so both see the same warm processes.  The figure is
the median of the rounds; the goal is under 3 % fewer requests per second.

Then, in a child process, the memory of a per-IP limit under 1,000,000 distinct client
addresses (the hostile case): RSS before and after, with the store's hard cap.

    python benchmarks/policy_overhead.py                      # ~60 s
    python benchmarks/policy_overhead.py --rounds 3 --duration 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._bench import Child, arm_watchdog, emit, proc_cpu_seconds, table
from benchmarks.proxy_http import ENDPOINT, check, load

NONE = "policies: []\n"


def ten_policies() -> str:
    """Nine policies for other endpoints, then the one that matches the benchmarked endpoint."""
    lines = ["policies:"]
    for i in range(9):
        pattern = f"other-{i}-*" if i % 2 else f"exact-{i}"
        lines += [
            f"  - name: other-{i}",
            f'    endpoints: ["{pattern}"]',
            "    rate_limit: {requests: 10, period: 1s}",
            "    ip: {deny: [203.0.113.0/24]}",
        ]
    lines += [
        "  - name: bench",
        f"    endpoints: [{ENDPOINT}]",
        "    ip: {allow: [127.0.0.0/8, '::1/128']}",
        "    rate_limit: {requests: 10000000, period: 1s}",
        "    headers:",
        "      request: {set: ['X-Env: bench'], remove: [Cookie]}",
        "      response: {set: ['Cache-Control: no-store']}",
        "    limits: {max_body_bytes: 10485760, max_concurrent: 100000}",
    ]
    return "\n".join(lines) + "\n"


def run_server(args: argparse.Namespace) -> None:
    """In a child: a server on ephemeral ports whose policies reload from ``--policy-file``."""
    from attrs import evolve
    from twisted.internet import reactor
    from twisted.internet.defer import inlineCallbacks

    from piko.config import LoadConfig, ServerConfig
    from piko.server.service import make_server_service

    arm_watchdog(args.max_seconds)

    @inlineCallbacks
    def main():
        cfg = ServerConfig()
        cfg = evolve(
            cfg,
            proxy=evolve(cfg.proxy, bind_addr="127.0.0.1:0"),
            upstream=evolve(cfg.upstream, bind_addr="127.0.0.1:0"),
            admin=evolve(cfg.admin, bind_addr="127.0.0.1:0"),
            cluster=evolve(cfg.cluster, node_id="bench"),
        )
        svc = make_server_service(cfg, reactor, policy_source=LoadConfig(path=args.policy_file))
        svc.startService()
        yield svc.started
        emit("RESULT", {k: svc.ports[k].getHost().port for k in ("proxy", "upstream", "admin")})

    reactor.callWhenRunning(main)
    reactor.run()


def run_store(args: argparse.Namespace) -> None:
    """In a child: RSS of a per-IP rate limit fed 1,000,000 distinct client addresses."""
    import ipaddress

    from piko.policy.buckets import TokenBucketStore

    def rss_kib() -> int:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    clock = [0.0]
    store = TokenBucketStore(lambda: clock[0], rate=5.0, burst=5, max_keys=args.max_keys)
    before = rss_kib()
    start = time.perf_counter()
    base = int(ipaddress.IPv4Address("11.0.0.0"))
    peak = before
    for i in range(args.keys):
        # The handler keys a per-IP limit by str(address), as here.
        store.take(str(ipaddress.IPv4Address(base + i)))
        clock[0] += 0.00001
        if i % 100_000 == 0:
            peak = max(peak, rss_kib())
    elapsed = time.perf_counter() - start
    peak = max(peak, rss_kib())
    emit(
        "RESULT",
        {
            "keys": args.keys,
            "held": len(store),
            "evicted": store.evicted,
            "rss_before_kib": before,
            "rss_peak_kib": peak,
            "us_per_take": elapsed / args.keys * 1e6,
        },
    )


def run_micro(args: argparse.Namespace) -> None:
    """
    In a child: the policy layer's own cost per request, without sockets: requests through
    :class:`~piko.http.server.HTTPServerProtocol` over a ``StringTransport`` to a handler that
    answers at once, with no policy handler, with one and no policies, and with the ten
    policies.  Best of several alternating runs (the minimum is what the code costs; the rest
    is other load on the machine).
    """
    from twisted.internet.address import IPv4Address
    from twisted.internet.task import Clock
    from twisted.internet.testing import StringTransport

    from piko.config import ServerConfig, apply_yaml
    from piko.http.server import HTTPServerProtocol
    from piko.policy.config import compile_policies
    from piko.policy.handler import PolicyHandler

    class Answer:
        def request_received(self, exchange):
            exchange.start_response(200, ((b"Content-Length", b"2"),))
            exchange.write(b"ok")
            exchange.finish()

    clock = Clock()
    request = f"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nx-piko-endpoint: {ENDPOINT}\r\n\r\n"

    def per_request(handler, n=20_000) -> float:
        proto = HTTPServerProtocol(handler, clock, date=lambda: b"D")
        transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
        proto.makeConnection(transport)
        data = request.encode()
        start = time.process_time()
        for _ in range(n):
            proto.dataReceived(data)
            transport.clear()
        return (time.process_time() - start) / n * 1e6

    ten = apply_yaml(ServerConfig(), ten_policies(), "ten").policies
    variants = {
        "bare": Answer(),
        "handler, no policies": PolicyHandler(Answer(), clock),
        "10 policies": PolicyHandler(Answer(), clock, compile_policies(ten, clock.seconds)),
    }
    best = {name: float("inf") for name in variants}
    for _ in range(args.rounds * 2):
        for name, handler in variants.items():
            best[name] = min(best[name], per_request(handler))
    emit("RESULT", best)


def reload(admin: int) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{admin}/policy/reload", data=b"", method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def orchestrate(args: argparse.Namespace) -> None:
    if args.loadgen == "auto":
        args.loadgen = "wrk" if shutil.which("wrk") else "python"
    work = tempfile.mkdtemp(prefix="piko-policy-bench-")
    policy_file = os.path.join(work, "policies.yaml")
    Path(policy_file).write_text(NONE)
    life = str(args.duration * args.rounds * 3 + 120)
    server = Child(
        [__file__, "--role", "server", "--policy-file", policy_file, "--max-seconds", life],
        "server",
    )
    echo = None
    try:
        ports = server.result(30)
        echo = Child(
            [
                str(Path(__file__).with_name("proxy_http.py")),
                "--role",
                "echo",
                "--upstream-port",
                str(ports["upstream"]),
                "--size",
                str(args.size),
                "--max-seconds",
                life,
            ],
            "echo",
        )
        echo.result(30)
        for _ in range(50):  # the endpoint may take a moment to register
            if check(ports["proxy"], "GET", args.size) is None:
                break
            time.sleep(0.1)
        print(
            f"policy_overhead: load generator {args.loadgen}, {args.connections} connections, "
            f"{args.duration:g}s per run, {args.rounds} rounds each, GET {args.size} B, "
            f"{os.cpu_count()} CPUs"
        )
        load(ports["proxy"], "GET", args, work)  # warm-up
        figures: dict[str, list[float]] = {"none": [], "10 policies": []}
        errors = {"none": 0, "10 policies": 0}
        #: server CPU microseconds per request: steadier than req/s on a shared machine
        cpu: dict[str, list[float]] = {"none": [], "10 policies": []}
        for _ in range(args.rounds):
            for name, text in (("none", NONE), ("10 policies", ten_policies())):
                Path(policy_file).write_text(text)
                answer = reload(ports["admin"])
                assert answer["ok"], answer
                c0 = proc_cpu_seconds(server.proc.pid)
                result = load(ports["proxy"], "GET", args, work)
                c1 = proc_cpu_seconds(server.proc.pid)
                cpu[name].append((c1 - c0) / max(1, result["requests"]) * 1e6)
                figures[name].append(result["rps"])
                errors[name] += result["errors"]
                print(f"  {name}: {result['rps']:.0f} req/s", flush=True)
        base = statistics.median(figures["none"])
        base_cpu = statistics.median(cpu["none"])
        rows = [
            [
                name,
                statistics.median(xs),
                min(xs),
                max(xs),
                errors[name],
                1 - statistics.median(xs) / base,
                statistics.median(cpu[name]),
                statistics.median(cpu[name]) / base_cpu - 1,
            ]
            for name, xs in figures.items()
        ]
        headers = ["policies", "median req/s", "min", "max", "errors", "fewer req/s"]
        print()
        print(table([*headers, "server us/req", "more CPU/req"], rows))
        cost = 1 - statistics.median(figures["10 policies"]) / base
        cpu_cost = statistics.median(cpu["10 policies"]) / base_cpu - 1
        print(
            f"10 policies cost {cost * 100:.1f} % of requests/s and {cpu_cost * 100:.1f} % more "
            "server CPU per request (goal: under 3 % fewer requests/s)"
        )
    finally:
        if echo is not None:
            echo.stop()
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    micro = Child([__file__, "--role", "micro", "--rounds", str(args.rounds)], "micro")
    try:
        m = micro.result(600)
    finally:
        micro.stop()
    print()
    print("== the policy layer alone (HTTP server over StringTransport, best of runs)")
    print(table(["handler", "CPU us/request"], [[k, v] for k, v in m.items()]))
    print(
        f"10 policies add {m['10 policies'] - m['bare']:.1f} us per request "
        f"(an empty policy set {m['handler, no policies'] - m['bare']:.1f} us)"
    )
    store = Child(
        [__file__, "--role", "store", "--keys", str(args.keys), "--max-keys", str(args.max_keys)],
        "store",
    )
    try:
        r = store.result(600)
    finally:
        store.stop()
    print()
    print(
        f"per-IP limit, {r['keys']:,} distinct addresses, max_keys {args.max_keys:,}: "
        f"{r['held']:,} buckets held, {r['evicted']:,} evicted, "
        f"RSS {r['rss_before_kib'] / 1024:.1f} -> {r['rss_peak_kib'] / 1024:.1f} MiB, "
        f"{r['us_per_take']:.2f} us per request"
    )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per load run")
    ap.add_argument("--rounds", type=int, default=5, help="runs of each, alternating")
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--size", type=int, default=1024, help="GET body bytes")
    ap.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto")
    ap.add_argument("--keys", type=int, default=1_000_000, help="distinct client addresses")
    ap.add_argument("--max-keys", type=int, default=100_000, help="the store's hard cap")
    ap.add_argument("--role", choices=("server", "store", "micro"), help=argparse.SUPPRESS)
    ap.add_argument("--policy-file", help=argparse.SUPPRESS)
    ap.add_argument("--max-seconds", type=float, default=600, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.role == "server":
        run_server(args)
    elif args.role == "store":
        run_store(args)
    elif args.role == "micro":
        run_micro(args)
    else:
        orchestrate(args)


if __name__ == "__main__":
    main()

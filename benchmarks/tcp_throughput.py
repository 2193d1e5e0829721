"""
Bulk TCP throughput through Piko, with a direct loopback figure in the same run.

Processes (the orchestrator only waits):

* the Piko server (``make_server_service`` on ephemeral loopback ports);
* the sink: counts bytes; serves a plain TCP port (direct path) and is
  registered through the SDK, ``piko.client.Upstream(...).listen("tput", sink)``;
* the sender: ``piko.client.Dialer(proxy).dial("tput", ...)`` (a WebSocket to
  ``/_piko/v1/tcp/tput``, which the server splices onto a yamux stream to the
  sink's session) or a plain TCP connection for the direct path; it writes
  ``--size`` chunks as fast as backpressure allows, over 1 and ``--parallel``
  connections.

The sink measures the bytes it receives during ``--duration`` seconds after
``--warmup`` seconds.  Ratios are tunnel/direct for the same number of
connections (Go v0.9.0: 0.026 for 1 connection, 0.021 for 4; Go's direct
figure is a blocking-socket Python pusher into a blocking sink, ours is the
same Twisted sender and sink as the tunnel, see README.md).

    python benchmarks/tcp_throughput.py                 # ~35 s
    python benchmarks/tcp_throughput.py --duration 5 --parallel 4
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._bench import (
    Child,
    MiB,
    arm_watchdog,
    emit,
    patch_nodelay,
    proc_cpu_seconds,
    run_piko_server,
    table,
)

ENDPOINT = "tput"
GO = {1: 0.026, 4: 0.021}


def run_sink(args: argparse.Namespace) -> None:
    from twisted.internet import reactor
    from twisted.internet.defer import inlineCallbacks
    from twisted.internet.endpoints import TCP4ServerEndpoint
    from twisted.internet.protocol import Factory, Protocol

    from piko.client import Upstream

    arm_watchdog(args.max_seconds)
    if args.patch_nodelay:
        patch_nodelay()
    state = {"bytes": 0, "armed": True, "active": 0}

    def window() -> None:
        snap = {}

        def begin() -> None:
            snap.update(t=time.monotonic(), b=state["bytes"])

        def end() -> None:
            dt = time.monotonic() - snap["t"]
            emit("RESULT", {"mib_s": (state["bytes"] - snap["b"]) / MiB / dt})

        reactor.callLater(args.warmup, begin)
        reactor.callLater(args.warmup + args.duration, end)

    class Sink(Protocol):
        def connectionMade(self) -> None:
            state["active"] += 1

        def dataReceived(self, data: bytes) -> None:
            if state["armed"]:
                state["armed"] = False
                window()
            state["bytes"] += len(data)

        def connectionLost(self, reason=None) -> None:
            state["active"] -= 1
            if state["active"] == 0:
                state["armed"] = True  # the next case's first byte starts its window

    factory = Factory.forProtocol(Sink)

    @inlineCallbacks
    def main():
        lp = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
        yield Upstream(reactor, f"http://127.0.0.1:{args.upstream_port}").listen(ENDPOINT, factory)
        emit("PORT", lp.getHost().port)

    reactor.callWhenRunning(
        lambda: main().addErrback(lambda f: (sys.stderr.write(f.getTraceback()), reactor.stop()))
    )
    reactor.run()


def run_sender(args: argparse.Namespace) -> None:
    from twisted.internet import reactor
    from twisted.internet.defer import gatherResults, inlineCallbacks
    from twisted.internet.endpoints import TCP4ClientEndpoint
    from twisted.internet.protocol import Factory, Protocol

    from piko.client import Dialer

    arm_watchdog(args.warmup + args.duration + 30)
    if args.patch_nodelay:
        patch_nodelay()
    chunk = os.urandom(args.size)
    stop_at = time.monotonic() + args.warmup + args.duration + 3

    class Pusher:
        def __init__(self, transport) -> None:
            self.transport, self.paused, self.done = transport, False, False

        def resumeProducing(self) -> None:
            self.paused = False
            while not self.paused and not self.done:
                if time.monotonic() > stop_at:
                    self.done = True
                    self.transport.unregisterProducer()
                    self.transport.loseConnection()
                    return
                self.transport.write(chunk)

        def kick(self) -> None:
            if not self.paused:
                self.resumeProducing()

        def pauseProducing(self) -> None:
            self.paused = True

        def stopProducing(self) -> None:
            self.done = True

    @inlineCallbacks
    def main():
        if args.target == "tunnel":
            dialer = Dialer(reactor, f"http://127.0.0.1:{args.port}", timeout=10)
            connect = lambda: dialer.dial(ENDPOINT, Factory.forProtocol(Protocol))  # noqa: E731
        else:
            ep = TCP4ClientEndpoint(reactor, "127.0.0.1", args.port)
            connect = lambda: ep.connect(Factory.forProtocol(Protocol))  # noqa: E731
        protos = yield gatherResults([connect() for _ in range(args.conns)])
        for p in protos:
            pusher = Pusher(p.transport)
            p.transport.registerProducer(pusher, True)
            reactor.callLater(0, pusher.kick)
        reactor.callLater(args.warmup + args.duration + 4, reactor.stop)

    reactor.callWhenRunning(
        lambda: main().addErrback(lambda f: (sys.stderr.write(f.getTraceback()), reactor.stop()))
    )
    reactor.run()


def orchestrate(args: argparse.Namespace) -> None:
    life = str(8 * (args.warmup + args.duration + 8) + 60)
    extra = ["--patch-nodelay"] if args.patch_nodelay else []
    common = [
        "--duration",
        str(args.duration),
        "--warmup",
        str(args.warmup),
        "--size",
        str(args.size),
        *extra,
    ]
    server = Child([__file__, "--role", "server", "--max-seconds", life, *extra], "server")
    sink = None
    try:
        ports = server.result(30)
        sink = Child(
            [
                __file__,
                "--role",
                "sink",
                "--upstream-port",
                str(ports["upstream"]),
                "--max-seconds",
                life,
                *common,
            ],
            "sink",
        )
        direct = sink.port(30)
        print(
            f"tcp_throughput: {args.duration:g}s per case after {args.warmup:g}s warm-up, "
            f"writes of {args.size // 1024} KiB, {os.cpu_count()} CPUs"
            + (", EXPERIMENT --patch-nodelay" if args.patch_nodelay else "")
        )
        res: dict = {}
        for conns in (1, args.parallel):
            for target, port in (("direct", direct), ("tunnel", ports["proxy"])):
                c0 = proc_cpu_seconds(server.proc.pid), proc_cpu_seconds(sink.proc.pid)
                sender = Child(
                    [
                        __file__,
                        "--role",
                        "send",
                        "--target",
                        target,
                        "--port",
                        str(port),
                        "--conns",
                        str(conns),
                        *common,
                    ],
                    f"send-{target}",
                )
                try:
                    r = sink.result(args.warmup + args.duration + 30)
                    c1 = proc_cpu_seconds(server.proc.pid), proc_cpu_seconds(sink.proc.pid)
                    scpu = proc_cpu_seconds(sender.proc.pid)
                finally:
                    sender.stop()
                res[(conns, target)] = r["mib_s"]
                print(
                    f"  {conns} conn {target:<6} {r['mib_s']:8.1f} MiB/s  (CPU s whole case: "
                    f"server {c1[0] - c0[0]:.1f}, sink {c1[1] - c0[1]:.1f}, sender {scpu:.1f})",
                    flush=True,
                )
                time.sleep(1.0)  # let the previous connections close (the sink re-arms at 0)
        rows = [
            [
                f"{n} conn",
                res[(n, "tunnel")],
                res[(n, "direct")],
                res[(n, "tunnel")] / res[(n, "direct")],
                GO.get(n),
            ]
            for n in (1, args.parallel)
        ]
        print()
        print("== MiB/s (tunnel = Dialer -> proxy /_piko/v1/tcp -> yamux -> SDK upstream -> sink)")
        print(table(["case", "tunnel MiB/s", "direct MiB/s", "ratio", "Go ratio"], rows))
    finally:
        if sink is not None:
            sink.stop()
        server.stop()


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--duration", type=float, default=3.0, help="measured seconds per case")
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--size", type=int, default=65536, help="bytes per write")
    ap.add_argument("--parallel", type=int, default=4, help="connections in the parallel case")
    ap.add_argument(
        "--patch-nodelay",
        action="store_true",
        help="EXPERIMENT: monkeypatch TCP_NODELAY onto piko's sockets (proposed fix)",
    )
    ap.add_argument("--role", choices=("server", "sink", "send"), help=argparse.SUPPRESS)
    ap.add_argument("--target", choices=("tunnel", "direct"), help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--conns", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--upstream-port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--max-seconds", type=float, default=300, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.role == "server":
        run_piko_server(args.max_seconds, args.patch_nodelay)
    elif args.role == "sink":
        run_sink(args)
    elif args.role == "send":
        run_sender(args)
    else:
        orchestrate(args)


if __name__ == "__main__":
    main()

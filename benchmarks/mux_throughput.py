"""
Bulk throughput of yamux (piko.mux) over WebSocket (piko.ws), with in-run baselines.

Cases, each a sender and a receiver over 127.0.0.1 (the sender is the
WebSocket client, so its frames are masked, as an agent's are):

* ``tcp``      raw Twisted TCP, 64 KiB writes (the ceiling of the reactor);
* ``autobahn`` plain autobahn binary messages of ``--size`` bytes (``sendMessage``);
* ``mux1``     piko.ws client + server adapters carrying a piko.mux Session pair;
               the sender opens 1 stream and writes ``--size`` chunks as fast as
               the yamux window and the transport's backpressure allow;
* ``mux8``     the same with 8 concurrent streams.

By default the sender and the receiver are separate processes (as the Piko
server and agent are), so both cores are used; ``--single`` also measures
everything with both ends in one process.  The receiver measures the bytes it
gets during ``--duration`` seconds after ``--warmup`` seconds.  Reported:
MiB/s, its ratio to the autobahn figure of the same run (the target is >= 0.80),
and CPU microseconds per MiB on each side during the window.

    python benchmarks/mux_throughput.py                    # ~40 s
    python benchmarks/mux_throughput.py --duration 5 --single --reps 2
    python benchmarks/mux_throughput.py --cases mux1 --profile /tmp/muxprof
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
    Profiler,
    arm_watchdog,
    cpu_seconds,
    emit,
    table,
)

CASES = ("tcp", "autobahn", "mux1", "mux8")


# ----------------------------------------------------------------------------
# child side (runs a reactor)
# ----------------------------------------------------------------------------


def _child(args: argparse.Namespace) -> None:
    from twisted.internet import reactor
    from twisted.internet.defer import Deferred, inlineCallbacks
    from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
    from twisted.internet.protocol import Factory, Protocol

    arm_watchdog(args.warmup + args.duration + 30)
    case = args.case
    streams = 8 if case == "mux8" else 1
    size = args.size
    window = args.window

    def session_config():
        from piko.mux import SessionConfig

        kw = {"keepalive_interval": None}
        if args.frame:
            kw["max_frame_payload"] = args.frame
        if window:
            kw["max_stream_window"] = window
        return SessionConfig(**kw)

    # -- receiver ---------------------------------------------------------

    class Counter:
        received = 0
        first: float | None = None

    def on_first_byte() -> None:
        Counter.first = time.monotonic()
        prof = Profiler(args.profile and f"{args.profile}/{case}-recv.prof")
        snap: dict = {}

        def begin() -> None:
            snap.update(t=time.monotonic(), b=Counter.received, c=cpu_seconds())
            prof.start()

        def end() -> None:
            prof.stop()
            t, b, c = time.monotonic(), Counter.received, cpu_seconds()
            nbytes = b - snap["b"]
            emit(
                "RESULT",
                {
                    "mib_s": nbytes / MiB / (t - snap["t"]),
                    "bytes": nbytes,
                    "cpu_us_per_mib": (c - snap["c"]) * 1e6 / max(1, nbytes / MiB),
                },
            )
            reactor.callLater(0.05, reactor.stop)

        reactor.callLater(args.warmup, begin)
        reactor.callLater(args.warmup + args.duration, end)

    class Sink(Protocol):
        def dataReceived(self, data: bytes) -> None:
            if Counter.first is None:
                on_first_byte()
            Counter.received += len(data)

    def receiver_factory():
        if case == "tcp":
            return Factory.forProtocol(Sink)
        if case == "autobahn":
            from autobahn.twisted.websocket import (
                WebSocketServerFactory,
                WebSocketServerProtocol,
            )

            class AbServer(WebSocketServerProtocol):
                def onMessage(self, payload: bytes, isBinary: bool) -> None:
                    if Counter.first is None:
                        on_first_byte()
                    Counter.received += len(payload)

            f = WebSocketServerFactory(reactor=reactor)
            f.protocol = AbServer
            f.setProtocolOptions(autoFragmentSize=0, maxMessagePayloadSize=0, maxFramePayloadSize=0)
            return f
        # piko.ws server adapter (as the upstream port uses it) + yamux server side
        from piko.mux import Session
        from piko.ws import WebSocketAcceptor

        acceptor = WebSocketAcceptor(reactor)
        sink_factory = Factory.forProtocol(Sink)

        def on_handshake(request):
            session = Session(reactor, client=False, config=session_config())
            session.listen(sink_factory)
            return session

        class FrontEnd(Protocol):
            def __init__(self) -> None:
                self.buffer, self.ws = b"", None

            def dataReceived(self, data: bytes) -> None:
                if self.ws is not None:
                    self.ws.dataReceived(data)
                    return
                self.buffer += data
                if b"\r\n\r\n" in self.buffer:
                    self.ws = acceptor.accept(self.transport, self.buffer, on_handshake)

            def connectionLost(self, reason=None) -> None:
                if self.ws is not None:
                    self.ws.connectionLost(reason)

        return Factory.forProtocol(FrontEnd)

    # -- sender -----------------------------------------------------------

    chunk = os.urandom(size)
    stop_at = [float("inf")]

    class Pusher:
        """Push producer: write ``chunk`` until paused, until the deadline."""

        def __init__(self, consumer, write) -> None:
            self.consumer, self.write = consumer, write
            self.paused = False
            self.done = False
            self.sent = 0

        def resumeProducing(self) -> None:
            self.paused = False
            while not self.paused and not self.done:
                if time.monotonic() > stop_at[0]:
                    self.done = True
                    self.consumer.unregisterProducer()
                    return
                self.write(chunk)
                self.sent += size

        def pauseProducing(self) -> None:
            self.paused = True

        def stopProducing(self) -> None:
            self.done = True

        def kick(self) -> None:
            # Start writing unless the consumer already paused us: calling
            # resumeProducing behind a paused consumer's back would make the
            # yamux Stream buffer without bound (it pauses a producer only once).
            if not self.paused:
                self.resumeProducing()

    pushers: list[Pusher] = []

    def start_pushing(targets) -> None:
        """targets: (consumer, write) pairs."""
        t0 = time.monotonic()
        stop_at[0] = t0 + args.warmup + args.duration + 2.0
        prof = Profiler(args.profile and args.role == "send" and f"{args.profile}/{case}-send.prof")
        snap: dict = {}

        def begin() -> None:
            snap.update(c=cpu_seconds(), b=sum(p.sent for p in pushers))
            prof.start()

        def end() -> None:
            prof.stop()
            nbytes = sum(p.sent for p in pushers) - snap["b"]
            if args.role == "send":
                emit(
                    "RESULT",
                    {
                        "sent_bytes": nbytes,
                        "cpu_us_per_mib": (cpu_seconds() - snap["c"]) * 1e6 / max(1, nbytes / MiB),
                    },
                )

        reactor.callLater(args.warmup, begin)
        reactor.callLater(args.warmup + args.duration, end)
        if args.role == "send":
            reactor.callLater(args.warmup + args.duration + 2.5, reactor.stop)
        for consumer, write in targets:
            p = Pusher(consumer, write)
            pushers.append(p)
            consumer.registerProducer(p, True)
        for p in pushers:
            reactor.callLater(0, p.kick)

    @inlineCallbacks
    def send(port: int):
        if case == "tcp":
            proto = yield TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(
                Factory.forProtocol(Protocol)
            )
            start_pushing([(proto.transport, proto.transport.write)])
        elif case == "autobahn":
            from autobahn.twisted.websocket import (
                WebSocketClientFactory,
                WebSocketClientProtocol,
            )

            opened: Deferred = Deferred()

            class AbClient(WebSocketClientProtocol):
                def onOpen(self) -> None:
                    opened.callback(self)

            f = WebSocketClientFactory(f"ws://127.0.0.1:{port}/", reactor=reactor)
            f.protocol = AbClient
            f.setProtocolOptions(autoFragmentSize=0)
            TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(f)
            proto = yield opened
            start_pushing([(proto.transport, lambda data: proto.sendMessage(data, isBinary=True))])
        else:
            from piko.mux import Session
            from piko.ws import connect

            session = yield connect(
                reactor,
                f"ws://127.0.0.1:{port}/",
                Factory.forProtocol(lambda: Session(reactor, client=True, config=session_config())),
                timeout=10,
            )
            protos = []
            for _ in range(streams):
                p = Protocol()
                session.open_stream(p)
                protos.append(p)
            start_pushing([(p.transport, p.transport.write) for p in protos])

    @inlineCallbacks
    def main():
        if args.role == "recv":
            lp = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
                receiver_factory()
            )
            emit("PORT", lp.getHost().port)
        elif args.role == "send":
            yield send(args.port)
        else:  # both ends in this process
            lp = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
                receiver_factory()
            )
            yield send(lp.getHost().port)

    def failed(f):
        sys.stderr.write(f.getTraceback())
        reactor.stop()

    reactor.callWhenRunning(lambda: main().addErrback(failed))
    reactor.run()


# ----------------------------------------------------------------------------
# orchestrator (no reactor)
# ----------------------------------------------------------------------------


def _child_argv(args: argparse.Namespace, role: str, case: str, port: int = 0) -> list[str]:
    argv = [
        __file__,
        "--role",
        role,
        "--case",
        case,
        "--port",
        str(port),
        "--duration",
        str(args.duration),
        "--warmup",
        str(args.warmup),
        "--size",
        str(args.size),
        "--frame",
        str(args.frame),
        "--window",
        str(args.window),
    ]
    if args.profile:
        argv += ["--profile", args.profile]
    return argv


def run_pair(args, case: str) -> dict:
    timeout = args.warmup + args.duration + 25
    recv = Child(_child_argv(args, "recv", case), f"recv-{case}")
    try:
        port = recv.port()
        send = Child(_child_argv(args, "send", case, port), f"send-{case}")
        try:
            r = recv.result(timeout)
            s = send.result(10)
        finally:
            send.stop()
    finally:
        recv.stop()
    return {"mib_s": r["mib_s"], "recv_cpu": r["cpu_us_per_mib"], "send_cpu": s["cpu_us_per_mib"]}


def run_single(args, case: str) -> dict:
    child = Child(_child_argv(args, "both", case), f"both-{case}")
    try:
        r = child.result(args.warmup + args.duration + 25)
    finally:
        child.stop()
    return {"mib_s": r["mib_s"], "recv_cpu": r["cpu_us_per_mib"], "send_cpu": None}


def orchestrate(args: argparse.Namespace) -> None:
    cases = [c for c in args.cases.split(",") if c]
    for c in cases:
        if c not in CASES:
            sys.exit(f"unknown case {c!r}; choose from {', '.join(CASES)}")
    if args.profile:
        os.makedirs(args.profile, exist_ok=True)
    modes = [("2 procs", run_pair)] + ([("1 proc", run_single)] if args.single else [])
    print(
        f"mux_throughput: {args.duration:g}s per case after {args.warmup:g}s warm-up, "
        f"writes of {args.size // 1024} KiB, frame cap {args.frame or 'default'}, "
        f"window {args.window or 'default'}, reps {args.reps}, {os.cpu_count()} CPUs"
    )
    results: dict = {}
    for rep in range(args.reps):
        for mode, fn in modes:
            for case in cases:
                r = fn(args, case)
                results.setdefault((mode, case), []).append(r)
                print(f"  rep {rep + 1} {mode:<7} {case:<9} {r['mib_s']:8.1f} MiB/s", flush=True)

    def med(xs):
        xs = sorted(x for x in xs if x is not None)
        if not xs:
            return None
        mid = len(xs) // 2
        return xs[mid] if len(xs) % 2 else (xs[mid - 1] + xs[mid]) / 2

    for mode, _ in modes:
        rows = []
        base = med([r["mib_s"] for r in results.get((mode, "autobahn"), [])])
        for case in cases:
            rs = results[(mode, case)]
            mib = med([r["mib_s"] for r in rs])
            rows.append(
                [
                    case,
                    mib,
                    (mib / base) if base else None,
                    med([r["send_cpu"] for r in rs]),
                    med([r["recv_cpu"] for r in rs]),
                ]
            )
        print()
        print(
            f"== {mode} (median of {args.reps}); ratio = case / autobahn of the same run; "
            f"target mux >= 0.80"
        )
        print(table(["case", "MiB/s", "ratio", "send CPU us/MiB", "recv CPU us/MiB"], rows))


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--duration", type=float, default=3.0, help="measured seconds per case")
    ap.add_argument("--warmup", type=float, default=1.0, help="seconds before measuring")
    ap.add_argument("--size", type=int, default=65536, help="bytes per write / message")
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--single", action="store_true", help="also run both ends in one process")
    ap.add_argument("--frame", type=int, default=0, help="yamux max_frame_payload (0: default)")
    ap.add_argument("--window", type=int, default=0, help="yamux max_stream_window (0: default)")
    ap.add_argument("--profile", default="", help="directory for cProfile dumps of the window")
    ap.add_argument("--role", choices=("recv", "send", "both"), help=argparse.SUPPRESS)
    ap.add_argument("--case", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.role:
        _child(args)
    else:
        orchestrate(args)


if __name__ == "__main__":
    main()

"""
Chaos under steady load: rolling restarts, a SIGKILLed node, agents SIGKILLed mid-transfer.

Runs a 3-node cluster of the real ``piko`` command line (``python -m piko
server`` from this checkout by default; ``--impl`` picks another command, for
instance Go's binary), agents (``piko agent start`` with a YAML config) in
front of a local demo HTTP service, and, inside this script, two L4 TCP load
balancers: one in front of the three proxy ports (the clients') and one in
front of the three upstream ports (the agents').  The balancers go round robin
over their backends per connection and skip a backend whose connect fails,
as a real L4 balancer whose only health check is the connect.

A bounded number of keep-alive HTTP clients (``--clients``, paced to
``--rate`` requests/s in total) send ``GET /`` for endpoint ``chaos``, served
by every agent, through the proxy balancer for the whole run.  A request is
counted in the phase in which it ended and ends as one of:

``ok``
    a 200 with the whole body;
``refused``
    the balancer found no backend accepting connections (no node running);
``killed``
    its connection went to a node this script SIGKILLed while it was in flight;
``failed``
    anything else (another status, a reset, a timeout): it reached a running
    node and failed.  These are the ones that count; the goal is 0.  Those in
    flight when something was SIGKILLed are marked so among the failure kinds
    (a request the killed node was forwarding for another node, for one).

Like common HTTP clients (Go's ``net/http``, urllib3, Twisted's ``Agent``), a
client retries a request once on a fresh connection when a *reused* keep-alive
connection closes before any byte of the answer (the server closed it while
idle); those are counted as ``retried``, not failed.

Each scenario runs on a fresh cluster (nodes and agents started anew, same
ids and ports; the load paused and not counted meanwhile), so that one
scenario's damage does not spill into the next; ``--no-fresh`` runs them back
to back on one cluster instead.  Phases, in order (``--scenarios`` picks among
``a,b,c``):

``steady``
    ``--steady`` seconds with nothing happening: the control.
(a) rolling restart
    for each node in turn: SIGTERM, wait for its exit (its drain), start it
    again with the same ``--cluster.node-id`` and ports, joining the other
    two, wait for admin ``/ready``, settle ``--settle`` seconds, next.
(b) SIGKILL of the node holding the agents
    first every agent is restarted one at a time with the upstream balancer
    pointing only at node 1, so all the agents sit there (its own row: a
    rolling restart of the agents); then node 1 is SIGKILLed, and the figure is
    the time until every agent's own endpoint (``chaos-a<i>``) answers
    ``--streak`` fresh requests in a row through the proxy balancer (goal:
    under 5 s).  Then node 1 starts again with the same id (its own row).
(c) SIGKILL of an agent mid-upload and mid-download
    a dedicated agent serves ``chaos-c``; a client streams a large POST body
    (or reads a large, slowly served GET answer) through the proxy balancer
    and the agent is SIGKILLed midway.  The client must get a clean 502 or a
    closed/reset connection within ``--hang-timeout`` (not hang).  With the
    load paused before and after, the sum over the nodes of ``process_open_fds``
    and ``piko_proxy_requests_in_flight`` (admin ``/metrics``) must come back to
    the baseline.

Scenario (b)'s and (c)'s time to serve again, and the start of the agents, are
timed through the proxy balancer: ``--streak`` fresh connections in a row, so
through every live node, must get a 200.  The figures include the process start
(Python imports: seconds on a loaded machine).

Run from the repo root::

    python benchmarks/chaos.py [--scenarios a,b,c] [--clients 8] [--rate 100]
        [--impl "/work/shared/tools/go-piko/piko"]

It takes three to six minutes (``--scenarios``, ``--steady`` and ``--settle``
shorten it).  Every wait is bounded; a watchdog kills every child and exits
after ``--max-seconds``; children also die with this process
(``PR_SET_PDEATHSIG``).  The nodes' and agents' logs go to a temporary
directory, printed at the start (``--log-level info`` for more).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import ctypes
import os
import re
import resource
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure

from benchmarks._bench import ROOT, Child, MiB, child_env, cpu_seconds, emit, percentile, table

ENDPOINT = "chaos"
IN_FLIGHT = "piko_proxy_requests_in_flight"
#: Go v0.9.0's registry has no process collector: ``nan`` there, and left out.
OPEN_FDS = "process_open_fds"


def grew(before: dict[str, float], after: dict[str, float]) -> bool:
    """Whether any figure (of those the server exports) is above its baseline."""
    return any(after[k] > before[k] for k in before if before[k] == before[k])


BODY = b"x" * 1024

# -- the demo service (a child: python chaos.py --role service) -------------------


def serve(args: argparse.Namespace) -> None:
    """
    The local HTTP service behind the agents (Twisted Web, keep-alive).

    ``GET /`` answers 1 KiB; ``GET /download`` answers ``--download-mib`` MiB,
    64 KiB every 20 ms, so that a transfer is surely in progress when the
    agent dies; ``POST /upload`` answers the number of body bytes once the
    whole body arrived.
    """
    from twisted.internet import reactor
    from twisted.internet.task import LoopingCall
    from twisted.web import resource, server

    from benchmarks._bench import arm_watchdog

    arm_watchdog(args.max_seconds)
    chunk = b"d" * 65536
    total = args.download_mib * MiB

    class Root(resource.Resource):
        isLeaf = True

        def render_GET(self, request: Any) -> Any:
            if request.path != b"/download":
                request.setHeader(b"content-type", b"text/plain")
                return BODY
            request.setHeader(b"content-length", b"%d" % total)
            sent = [0]

            def tick() -> None:
                request.write(chunk)
                sent[0] += len(chunk)
                if sent[0] >= total:
                    loop.stop()
                    request.finish()

            loop = LoopingCall(tick)
            loop.start(0.02)

            def lost(_: Any) -> None:
                if loop.running:
                    loop.stop()

            request.notifyFinish().addErrback(lost)
            return server.NOT_DONE_YET

        def render_POST(self, request: Any) -> bytes:
            return b"%d" % len(request.content.read())

    port = reactor.listenTCP(0, server.Site(Root()), interface="127.0.0.1")  # type: ignore[attr-defined]
    emit("PORT", port.getHost().port)
    reactor.run()  # type: ignore[attr-defined]


# -- an L4 load balancer ----------------------------------------------------------


class Balancer:
    """
    A round-robin TCP balancer on 127.0.0.1: each accepted connection is
    spliced to the next backend port that accepts a connect (backpressure both
    ways); when none does, the connection is aborted and counted as refused.

    :ivar backends: the backend ports, changeable at any time.
    :ivar backend_of: for each accepted connection, by the client's port, the
        backend it was spliced to, or ``None`` when refused.
    """

    def __init__(self, reactor: Any, backends: list[int]) -> None:
        self.reactor = reactor
        self.backends = list(backends)
        self.backend_of: dict[int, int | None] = {}
        self.refused = 0
        self._next = 0
        self.port = 0

    def listen(self) -> int:
        balancer = self

        class Front(_Splice):
            def connectionMade(self) -> None:
                self.transport.pauseProducing()
                balancer._connect(self, list(balancer.backends), 0)

        listening = self.reactor.listenTCP(0, Factory.forProtocol(Front), interface="127.0.0.1")
        self.port = listening.getHost().port
        return self.port

    def _connect(self, front: _Splice, order: list[int], tried: int) -> None:
        from twisted.internet.endpoints import TCP4ClientEndpoint

        client_port = front.transport.getPeer().port
        if tried >= len(order) or front.closed:
            self.backend_of[client_port] = None
            self.refused += 1
            front.transport.abortConnection()
            return
        backend = order[(self._next + tried) % len(order)]
        endpoint = TCP4ClientEndpoint(self.reactor, "127.0.0.1", backend, timeout=2)
        connecting = endpoint.connect(Factory.forProtocol(_Splice))

        def connected(back: _Splice) -> None:
            self._next = (self._next + tried + 1) % max(1, len(order))
            self.backend_of[client_port] = backend
            if front.closed:
                back.transport.abortConnection()
                return
            front.join(back)
            front.transport.resumeProducing()

        def failed(_: Any) -> None:
            self._connect(front, order, tried + 1)

        connecting.addCallbacks(connected, failed)


class _Splice(Protocol):
    """One side of a balancer's splice: what it reads, the peer writes."""

    peer: _Splice | None = None
    closed = False

    def __init__(self) -> None:
        self.pending: list[bytes] = []

    def join(self, peer: _Splice) -> None:
        self.peer, peer.peer = peer, self
        # Whoever cannot write fast enough pauses the other side's reading.
        self.transport.registerProducer(peer.transport, True)
        peer.transport.registerProducer(self.transport, True)
        if self.pending:
            peer.transport.write(b"".join(self.pending))
            self.pending.clear()

    def dataReceived(self, data: bytes) -> None:
        if self.peer is None:
            self.pending.append(data)
        else:
            self.peer.transport.write(data)

    def connectionLost(self, reason: Any) -> None:
        self.closed = True
        peer = self.peer
        if peer is not None and not peer.closed:
            if reason.check(ConnectionDone):
                peer.transport.loseConnection()
            else:  # a reset travels on as a reset
                peer.transport.abortConnection()


# -- a minimal HTTP/1.1 client ----------------------------------------------------


class Closed(Exception):
    """The connection closed (or was reset) before the answer was complete."""

    def __init__(self, received: int, reset: bool) -> None:
        super().__init__(f"{'reset' if reset else 'closed'} after {received} bytes")
        self.received = received
        self.reset = reset


class HTTPConnection(Protocol):
    """
    One keep-alive connection, one request at a time; answers framed by
    Content-Length, chunked encoding or the close.  ``on_head`` and
    ``on_body`` let the transfer tests watch an answer as it comes.
    """

    def __init__(self) -> None:
        self.buf = bytearray()
        self.waiting: Any = None
        self.received = 0
        self.usable = True
        self.connected_ = True
        self.status = 0
        self.head_done = False
        self.length: int | None = None
        self.chunked = False
        self.body = 0
        self.error_body = bytearray()
        self.on_head: Callable[[int], None] | None = None
        self.on_body: Callable[[int], None] | None = None

    def request(self, head: bytes, body: bytes = b"") -> Any:
        def cancel(_: Deferred[int]) -> None:
            # Timed out: forget it (connectionLost must not fire it again) and drop the line.
            self.waiting = None
            self.transport.abortConnection()

        self.waiting = Deferred(cancel)
        self.buf.clear()
        self.received = self.body = self.status = 0
        self.error_body = bytearray()
        self.head_done, self.length, self.chunked = False, None, False
        self.transport.write(head + body)
        return self.waiting

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)
        self.buf += data
        if not self.head_done:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end]).decode("latin-1")
            del self.buf[: end + 4]
            lines = head.split("\r\n")
            self.status = int(lines[0].split(" ", 2)[1])
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip().lower()
            if "content-length" in headers:
                self.length = int(headers["content-length"])
            self.chunked = "chunked" in headers.get("transfer-encoding", "")
            if headers.get("connection") == "close":
                self.usable = False
            self.head_done = True
            if self.on_head is not None:
                self.on_head(self.status)
        self._body()

    def _body(self) -> None:
        if self.chunked:
            while True:
                end = self.buf.find(b"\r\n")
                if end < 0:
                    return
                size = int(bytes(self.buf[:end]).split(b";")[0], 16)
                if len(self.buf) < end + 2 + size + 2:
                    return
                del self.buf[: end + 2 + size + 2]
                self.body += size
                if size == 0:
                    return self._done()
        if self.status != 200 and len(self.error_body) < 200:
            self.error_body += self.buf[: 200 - len(self.error_body)]
        self.body += len(self.buf)
        self.buf.clear()
        if self.on_body is not None:
            self.on_body(self.body)
        if self.length is not None and self.body >= self.length:
            self._done()

    def _done(self) -> None:
        waiting, self.waiting = self.waiting, None
        if waiting is not None:
            waiting.callback(self.status)

    def connectionLost(self, reason: Any) -> None:
        self.connected_ = self.usable = False
        waiting, self.waiting = self.waiting, None
        if waiting is None:
            return
        if self.head_done and self.length is None and not self.chunked:
            waiting.callback(self.status)  # framed by the close
        else:
            waiting.errback(Closed(self.received, not reason.check(ConnectionDone)))


def request_head(method: str, path: str, endpoint: str, extra: str = "") -> bytes:
    return (
        f"{method} {path} HTTP/1.1\r\nHost: {endpoint}\r\nx-piko-endpoint: {endpoint}\r\n"
        f"{extra}\r\n"
    ).encode()


async def connect(reactor: Any, port: int) -> HTTPConnection:
    from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=5)
    return await connectProtocol(endpoint, HTTPConnection())


async def fetch(reactor: Any, port: int, path: str, timeout: float, endpoint: str = "") -> Any:
    """One request on a fresh connection: ``(status, body bytes)``, or raises."""
    conn = await connect(reactor, port)
    chunks: list[bytes] = []
    original = conn.dataReceived

    def keep(data: bytes) -> None:
        chunks.append(data)
        original(data)

    conn.dataReceived = keep
    head = (
        f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
        + (f"x-piko-endpoint: {endpoint}\r\n" if endpoint else "")
        + "\r\n"
    ).encode()
    try:
        status = await conn.request(head).addTimeout(timeout, reactor)
    finally:
        conn.transport.abortConnection()
    raw = b"".join(chunks)
    return status, raw.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in raw else b""


# -- processes --------------------------------------------------------------------

_procs: list[subprocess.Popen] = []


def _die_with_parent() -> None:
    """In a child before exec: get SIGKILL when this script dies, however it dies."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


@atexit.register
def _kill_all() -> None:
    for proc in _procs:
        if proc.poll() is None:
            proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(2)


def start(argv: list[str], log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=child_env(),
            cwd=str(ROOT),
            preexec_fn=_die_with_parent,
        )
    _procs.append(proc)
    return proc


async def sleep(reactor: Any, seconds: float) -> None:
    from twisted.internet.task import deferLater

    await deferLater(reactor, seconds, lambda: None)


async def wait_exit(reactor: Any, proc: subprocess.Popen, timeout: float) -> bool:
    """Whether ``proc`` exited within ``timeout`` (polled every 20 ms)."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        if time.monotonic() > deadline:
            return False
        await sleep(reactor, 0.02)
    return True


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Node:
    """One server node: fixed id and ports, so that it restarts as itself."""

    def __init__(
        self, impl: list[str], name: str, logdir: Path, grace: float, log_level: str
    ) -> None:
        self.impl, self.name, self.logdir, self.grace = impl, name, logdir, grace
        self.log_level = log_level
        self.ports = {k: free_port() for k in ("proxy", "upstream", "admin", "gossip")}
        self.proc: subprocess.Popen | None = None

    def start(self, join: list[Node]) -> None:
        p = self.ports
        argv = [
            *self.impl,
            "server",
            "--cluster.node-id",
            self.name,
            "--proxy.bind-addr",
            f"127.0.0.1:{p['proxy']}",
            "--upstream.bind-addr",
            f"127.0.0.1:{p['upstream']}",
            "--admin.bind-addr",
            f"127.0.0.1:{p['admin']}",
            "--cluster.gossip.bind-addr",
            f"127.0.0.1:{p['gossip']}",
            "--grace-period",
            f"{self.grace:g}s",
            "--log.level",
            self.log_level,
        ]
        if join:
            argv += ["--cluster.join", ",".join(f"127.0.0.1:{n.ports['gossip']}" for n in join)]
        self.proc = start(argv, self.logdir / f"{self.name}.log")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    async def wait_ready(self, reactor: Any, timeout: float) -> float | None:
        """Seconds until admin ``/ready`` answers 200, or ``None``."""
        began = time.monotonic()
        while time.monotonic() - began < timeout and self.running:
            with contextlib.suppress(Exception):
                status, _ = await fetch(reactor, self.ports["admin"], "/ready", 1.0)
                if status == 200:
                    return time.monotonic() - began
            await sleep(reactor, 0.05)
        return None

    async def metrics(self, reactor: Any) -> dict[str, float]:
        """``process_open_fds`` and ``piko_proxy_requests_in_flight`` from admin /metrics."""
        _, body = await fetch(reactor, self.ports["admin"], "/metrics", 3.0)
        out = {}
        for name in (OPEN_FDS, IN_FLIGHT):
            found = re.search(rb"(?m)^" + name.encode() + rb"(?:\{[^}]*\})? (\S+)$", body)
            out[name] = float(found.group(1)) if found else float("nan")
        return out


class Agent:
    """One ``piko agent start`` process serving the shared endpoint and its own."""

    def __init__(
        self,
        impl: list[str],
        name: str,
        endpoints: list[str],
        service: int,
        upstream: int,
        log_level: str,
    ) -> None:
        self.impl, self.name, self.endpoints = impl, name, endpoints
        self.log_level = log_level
        self.proc: subprocess.Popen | None = None
        self.stopped = False  # by this script
        self.config = LOGDIR / f"{name}.yaml"
        listeners = "".join(
            f"  - endpoint_id: {e}\n    addr: 127.0.0.1:{service}\n"
            "    protocol: http\n    timeout: 10s\n"
            for e in endpoints
        )
        self.config.write_text(
            f"connect:\n  url: http://127.0.0.1:{upstream}\nlisteners:\n{listeners}"
        )

    def start(self) -> None:
        self.stopped = False
        argv = [*self.impl, "agent", "start", "--config.path", str(self.config)]
        self.proc = start([*argv, "--log.level", self.log_level], LOGDIR / f"{self.name}.log")

    def tail(self) -> str:
        """The end of its log, for an error message."""
        log = (LOGDIR / f"{self.name}.log").read_text(errors="replace")
        return f"exit code {self.proc and self.proc.poll()}; log: {log[-500:]!r}"

    async def stop(self, reactor: Any, timeout: float) -> bool:
        """SIGTERM and wait; SIGKILL after ``timeout``.  Whether it exited by itself."""
        assert self.proc is not None
        self.stopped = True
        self.proc.terminate()
        if await wait_exit(reactor, self.proc, timeout):
            return True
        self.proc.kill()
        await wait_exit(reactor, self.proc, 5)
        return False


LOGDIR = Path(".")

# -- the steady load --------------------------------------------------------------


class Stats:
    """Outcomes of the load's requests, by the phase in which each ended."""

    #: The phase of requests not reported (while the cluster is set up or torn down).
    UNCOUNTED = "-"

    def __init__(self) -> None:
        self.phase = self.UNCOUNTED
        self.order: list[str] = []
        self.counts: dict[str, Counter] = {}
        self.kinds: dict[str, Counter] = {}
        self.latency: dict[str, list[float]] = {}
        self.span: dict[str, list[float]] = {}
        self.begin(self.UNCOUNTED)

    def begin(self, phase: str) -> None:
        """From now on, count in ``phase`` (a new one unless it is ``UNCOUNTED``)."""
        now = time.monotonic()
        if self.phase in self.span:
            self.span[self.phase][1] = now
        self.phase = phase
        if phase != self.UNCOUNTED:
            self.order.append(phase)
        self.counts[phase] = Counter()
        self.kinds[phase] = Counter()
        self.latency[phase] = []
        self.span[phase] = [now, now]

    def row(self, phase: str) -> list[object]:
        c, lat = self.counts[phase], self.latency[phase]
        return [
            phase,
            self.span[phase][1] - self.span[phase][0],
            c["total"],
            c["ok"],
            f"{c['failed']}/{c['total']}",
            c["refused"],
            c["killed"],
            c["retried"],
            percentile(lat, 50) * 1000 if lat else None,
            percentile(lat, 99) * 1000 if lat else None,
            max(lat) * 1000 if lat else None,
        ]


class Load:
    """
    ``clients`` keep-alive clients through the proxy balancer, paced to
    ``rate`` requests/s in total; ``pause()`` waits until all are idle.
    """

    def __init__(
        self,
        reactor: Any,
        balancer: Balancer,
        clients: int,
        rate: float,
        timeout: float,
        stats: Stats,
        killed: Callable[[int, float], bool],
        in_flight_at_kill: Callable[[float], bool],
    ) -> None:
        self.reactor, self.balancer, self.stats = reactor, balancer, stats
        self.clients, self.interval, self.timeout = clients, clients / rate, timeout
        self.killed = killed
        self.in_flight_at_kill = in_flight_at_kill
        self.running = True
        self.paused = False
        self.idle = 0
        self.done: list[Any] = []

    def start(self) -> None:
        for i in range(self.clients):
            self.done.append(Deferred.fromCoroutine(self._client(i)))

    async def pause(self) -> None:
        self.paused = True
        deadline = time.monotonic() + self.timeout + 2
        while self.idle < self.clients and time.monotonic() < deadline:
            await sleep(self.reactor, 0.02)

    def resume(self) -> None:
        self.paused = False

    async def _client(self, i: int) -> None:
        await sleep(self.reactor, self.interval * i / self.clients)
        conn: HTTPConnection | None = None
        while self.running:
            if self.paused:
                self.idle += 1
                while self.paused and self.running:
                    await sleep(self.reactor, 0.02)
                self.idle -= 1
                continue
            began = time.monotonic()
            retried = Counter()
            conn, outcome = await self._one(conn, began, retried)
            took = time.monotonic() - began
            # Counted where it ended: a request in flight across a kill belongs to the kill.
            phase = self.stats.phase
            counts = self.stats.counts[phase]
            counts["total"] += 1
            counts.update(retried)
            if outcome not in ("ok", "refused", "killed") and self.in_flight_at_kill(began):
                outcome += " (in flight at the kill)"
            if outcome == "ok":
                counts["ok"] += 1
                self.stats.latency[phase].append(took)
            elif outcome in ("refused", "killed"):
                counts[outcome] += 1
            else:
                counts["failed"] += 1
                self.stats.kinds[phase][outcome] += 1
            await sleep(self.reactor, max(0.0, self.interval - took))
        if conn is not None and conn.connected_:
            conn.transport.loseConnection()

    async def _one(
        self, conn: HTTPConnection | None, began: float, counts: Counter
    ) -> tuple[HTTPConnection | None, str]:
        """One request, retried once on a fresh connection if a reused one closed idle."""
        from twisted.internet.defer import TimeoutError as DeferTimeout

        for attempt in (0, 1):
            reused = conn is not None and conn.usable
            if not reused:
                if conn is not None and conn.connected_:
                    conn.transport.loseConnection()
                try:
                    conn = await connect(self.reactor, self.balancer.port)
                except Exception:
                    return None, "connect error"
            assert conn is not None
            local = conn.transport.getHost().port
            try:
                status = await conn.request(request_head("GET", "/", ENDPOINT)).addTimeout(
                    self.timeout, self.reactor
                )
            except Closed as closed:
                if reused and closed.received == 0 and attempt == 0:
                    counts["retried"] += 1
                    continue
                backend = self.balancer.backend_of.get(local, -1)
                if backend is None:
                    return None, "refused"
                if self.killed(backend, began):
                    return None, "killed"
                return None, str(closed).split(" after")[0] + (
                    " (no answer)" if closed.received == 0 else " (mid-answer)"
                )
            except DeferTimeout:
                conn.transport.abortConnection()
                backend = self.balancer.backend_of.get(local, -1)
                return None, "killed" if self.killed(backend, began) else "timeout"
            if status == 200 and conn.body == len(BODY):
                return conn, "ok"
            return (
                conn,
                f"HTTP {status} {bytes(conn.error_body[:80]).decode(errors='replace').strip()}",
            )
        return conn, "unreachable"


# -- the scenarios ----------------------------------------------------------------


class Chaos:
    def __init__(self, reactor: Any, args: argparse.Namespace, service_port: int) -> None:
        self.reactor, self.args = reactor, args
        impl = shlex.split(args.impl) if args.impl else [sys.executable, "-m", "piko"]
        self.nodes = [
            Node(impl, f"chaos-{i}", LOGDIR, args.grace, args.log_level) for i in (1, 2, 3)
        ]
        self.proxy_lb = Balancer(reactor, [n.ports["proxy"] for n in self.nodes])
        self.upstream_lb = Balancer(reactor, [n.ports["upstream"] for n in self.nodes])
        self.proxy_lb.listen()
        self.upstream_lb.listen()
        self.agents = [
            Agent(
                impl,
                f"agent-{i}",
                [ENDPOINT, f"{ENDPOINT}-a{i}"],
                service_port,
                self.upstream_lb.port,
                args.log_level,
            )
            for i in range(1, args.agents + 1)
        ]
        self.agent_c = Agent(
            impl, "agent-c", [f"{ENDPOINT}-c"], service_port, self.upstream_lb.port, args.log_level
        )
        self.stats = Stats()
        self.kills: dict[int, float] = {}  # proxy port -> when SIGKILLed
        self.all_kills: list[float] = []  # when a node or an agent was SIGKILLed
        self.load = Load(
            reactor,
            self.proxy_lb,
            args.clients,
            args.rate,
            args.request_timeout,
            self.stats,
            self._was_killed,
            self._across_kill,
        )
        self.notes: list[str] = []
        self.scenario = ""
        self.transfers: list[list[object]] = []

    def _was_killed(self, backend: int | None, began: float) -> bool:
        killed_at = self.kills.get(backend) if backend is not None else None
        return killed_at is not None and began <= killed_at

    def _across_kill(self, began: float) -> bool:
        """Whether something was SIGKILLed after ``began`` (the request was then in flight)."""
        return any(began <= at for at in self.all_kills)

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"  {text}", flush=True)

    async def settle(self) -> None:
        await sleep(self.reactor, self.args.settle)

    async def serves(self, endpoint: str, timeout: float = 2.0) -> bool:
        try:
            status, _ = await fetch(self.reactor, self.proxy_lb.port, "/", timeout, endpoint)
        except Exception:
            return False
        return bool(status == 200)

    async def wait_serving(self, endpoint: str, streak: int, timeout: float) -> float | None:
        """
        Seconds until ``endpoint`` answered the first of ``streak`` fresh requests in a row that
        all got a 200, or ``None``.  Counted to the first answer, not to its sending: a
        request that arrives while the endpoint has no upstream may wait for one and then
        succeed (the server's retry), and its wait is part of the time to serve again.
        """
        began = time.monotonic()
        run_began: float | None = None
        run = 0
        while time.monotonic() - began < timeout:
            if await self.serves(endpoint):
                if run == 0:
                    run_began = time.monotonic()
                run += 1
                if run >= streak:
                    assert run_began is not None
                    return run_began - began
            else:
                run = 0
            await sleep(self.reactor, 0.05)
        return None

    async def serving_again(self, agent: Agent) -> float | None:
        """Until ``agent``'s own endpoint answers a streak (``--start-timeout``)."""
        return await self.wait_serving(
            agent.endpoints[-1], self.args.streak, self.args.start_timeout
        )

    def check_agents(self, when: str) -> None:
        """Note the agents that exited by themselves (Go v0.9.0's do when their node goes)."""
        for agent in [*self.agents, self.agent_c]:
            code = agent.proc.poll() if agent.proc is not None else None
            if code is not None and not agent.stopped:
                self.note(f"{agent.name} had exited by itself (code {code}) by the end of {when}")
                agent.stopped = True

    async def run(self) -> None:
        args = self.args
        scenarios = [
            (name, step)
            for name, step in (
                ("a", self.rolling_restart),
                ("b", self.kill_node),
                ("c", self.kill_agent),
            )
            if name in args.scenarios
        ]
        for n, (name, step) in enumerate(scenarios):
            self.scenario = f"({name})"
            if n == 0 or args.fresh:
                await self.up()
            if n == 0:
                self.stats.begin("steady")
                await sleep(self.reactor, args.steady)
            await step()
            self.check_agents(self.scenario)
            if n == len(scenarios) - 1 or args.fresh:
                await self.down()
        self.load.running = False
        await sleep(self.reactor, 0.1)

    async def up(self) -> None:
        """Start the 3 nodes and the agents (fresh, same ids and ports), then the load."""
        self.stats.begin(Stats.UNCOUNTED)
        print("starting 3 nodes and the agents ...", flush=True)
        self.upstream_lb.backends = [n.ports["upstream"] for n in self.nodes]
        for i, node in enumerate(self.nodes):
            node.start(self.nodes[:i][:1])
            if await node.wait_ready(self.reactor, self.args.start_timeout) is None:
                raise RuntimeError(f"{node.name} not ready in time; see {LOGDIR}")
        for agent in self.agents:
            agent.start()
        for agent in self.agents:
            if await self.serving_again(agent) is None:
                raise RuntimeError(f"{agent.name} never served: {agent.tail()}")
        if not self.load.done:
            self.load.start()
        self.load.resume()
        await self.settle()

    async def down(self) -> None:
        """Pause the load; stop every agent, then every node (SIGTERM, bounded)."""
        self.stats.begin(Stats.UNCOUNTED)
        await self.load.pause()
        for agent in [*self.agents, self.agent_c]:
            if agent.proc is not None and agent.proc.poll() is None:
                await agent.stop(self.reactor, 15)
        for node in self.nodes:
            if node.proc is not None and node.running:
                node.proc.terminate()
        for node in self.nodes:
            if node.proc is not None and not await wait_exit(
                self.reactor, node.proc, self.args.grace + 10
            ):
                node.proc.kill()
                await wait_exit(self.reactor, node.proc, 5)

    async def restart(self, node: Node, phase: str) -> None:
        others = [n for n in self.nodes if n is not node and n.running]
        node.start(others)
        ready = await node.wait_ready(self.reactor, self.args.start_timeout)
        self.note(
            f"{phase}: {node.name} ready {ready:.2f} s after start"
            if ready is not None
            else f"{phase}: {node.name} NOT ready within {self.args.start_timeout:g} s"
        )

    async def rolling_restart(self) -> None:
        print("(a) rolling restart of the 3 nodes, same ids", flush=True)
        for node in self.nodes:
            phase = f"(a) restart {node.name}"
            self.stats.begin(phase)
            assert node.proc is not None
            began = time.monotonic()
            node.proc.terminate()
            if await wait_exit(self.reactor, node.proc, self.args.grace + 10):
                self.note(f"{phase}: SIGTERM -> exit {time.monotonic() - began:.2f} s")
            else:
                node.proc.kill()
                await wait_exit(self.reactor, node.proc, 5)
                self.note(f"{phase}: no exit within grace + 10 s: SIGKILLed")
            await self.restart(node, phase)
            await self.settle()

    async def kill_node(self) -> None:
        print("(b) SIGKILL of the node holding the agents", flush=True)
        target = self.nodes[0]
        self.stats.begin(f"(b) agents onto {target.name}")
        self.upstream_lb.backends = [target.ports["upstream"]]
        for agent in self.agents:
            exited = await agent.stop(self.reactor, 15)
            if not exited:
                self.note(f"{agent.name} did not exit within 15 s of SIGTERM: SIGKILLed")
            agent.start()
            if await self.serving_again(agent) is None:
                self.note(f"{agent.name} did not serve again in time")
        self.upstream_lb.backends = [n.ports["upstream"] for n in self.nodes]
        await self.settle()
        with contextlib.suppress(Exception):
            body = (await fetch(self.reactor, target.ports["admin"], "/metrics", 3))[1]
            found = re.search(rb"(?m)^piko_upstreams_connected_upstreams (\S+)$", body)
            if found:
                self.note(f"{target.name} holds {float(found.group(1)):.0f} upstream connections")

        phase = f"(b) SIGKILL {target.name}"
        self.stats.begin(phase)
        assert target.proc is not None
        self.kills[target.ports["proxy"]] = time.monotonic()
        self.all_kills.append(time.monotonic())
        target.proc.kill()
        killed_at = time.monotonic()
        from twisted.internet.defer import gatherResults

        waits = [
            Deferred.fromCoroutine(
                self.wait_serving(a.endpoints[1], self.args.streak, self.args.recover_timeout)
            )
            for a in self.agents
        ]
        times = await gatherResults(waits)
        await wait_exit(self.reactor, target.proc, 5)
        each = ", ".join("-" if t is None else f"{t:.2f}" for t in times)
        worst = None if None in times else max(times)
        verdict = "MISSED" if worst is None or worst >= 5 else "met"
        self.recovery = worst
        self.note(
            f"{phase}: every agent serves again after "
            + (f"{worst:.2f} s" if worst is not None else f"> {self.args.recover_timeout:g} s")
            + f" (each: {each} s; goal < 5 s: {verdict}; "
            f"measured from the kill, {self.args.streak} fresh requests in a row)"
        )
        await sleep(self.reactor, max(0.0, self.args.settle - (time.monotonic() - killed_at)))
        phase = f"(b) restart {target.name}"
        self.stats.begin(phase)
        await self.restart(target, phase)
        await self.settle()

    async def resources(self) -> dict[str, float]:
        """Summed over the running nodes, with the load paused."""
        total: Counter = Counter()
        for node in self.nodes:
            if node.running:
                for key, value in (await node.metrics(self.reactor)).items():
                    total[key] += value
        return dict(total)

    async def kill_agent(self) -> None:
        print("(c) SIGKILL of an agent mid-upload and mid-download", flush=True)
        agent = self.agent_c
        endpoint = agent.endpoints[0]
        self.stats.begin("(c) agent C starts")
        agent.start()
        if await self.serving_again(agent) is None:
            self.note(f"{agent.name} not served through every node in time; going on")
        for kind in ("upload", "download"):
            phase = f"(c) SIGKILL agent mid-{kind}"
            self.stats.begin(phase)
            await self.settle()
            await self.load.pause()
            await sleep(self.reactor, 0.3)
            before = await self.resources()
            self.load.resume()
            outcome = await self.transfer(kind, endpoint)
            agent.start()
            serving = await self.serving_again(agent)
            await self.load.pause()
            began = time.monotonic()
            after = await self.resources()
            while time.monotonic() - began < self.args.hang_timeout and grew(before, after):
                await sleep(self.reactor, 0.2)
                after = await self.resources()
            freed = time.monotonic() - began
            self.load.resume()
            fds = after[OPEN_FDS] - before[OPEN_FDS]
            flight = after[IN_FLIGHT] - before[IN_FLIGHT]
            back = not grew(before, after)
            self.transfers.append(
                [
                    f"mid-{kind}",
                    outcome,
                    f"{before[OPEN_FDS]:.0f} -> {after[OPEN_FDS]:.0f}",
                    f"{before[IN_FLIGHT]:.0f} -> {after[IN_FLIGHT]:.0f}",
                    f"{freed:.1f} s" if back else f"NOT within {self.args.hang_timeout:g} s",
                    "-" if serving is None else f"{serving:.2f} s",
                ]
            )
            self.note(f"{phase}: {outcome}; fds {fds:+.0f}, in flight {flight:+.0f}")
        await agent.stop(self.reactor, 15)

    async def transfer(self, kind: str, endpoint: str) -> str:
        """Start an upload or a download, SIGKILL the agent midway, describe the outcome."""
        from twisted.internet.task import LoopingCall

        agent = self.agent_c
        assert agent.proc is not None
        conn = await connect(self.reactor, self.proxy_lb.port)
        midway: Deferred[None] = Deferred()
        sender: LoopingCall | None = None
        size = self.args.download_mib * MiB
        sent = [0]
        if kind == "upload":
            done = conn.request(
                request_head("POST", "/upload", endpoint, f"Content-Length: {size}\r\n")
            )
            chunk = b"u" * 65536

            def send() -> None:
                if conn.connected_ and sent[0] < size:
                    conn.transport.write(chunk)
                    sent[0] += len(chunk)

            sender = LoopingCall(send)
            sender.start(0.02)
            self.reactor.callLater(1.0, lambda: midway.called or midway.callback(None))
        else:
            done = conn.request(request_head("GET", "/download", endpoint))

            def progress(n: int) -> None:
                if n >= MiB and not midway.called:
                    midway.callback(None)

            conn.on_body = progress
        results: list[Any] = []
        done.addBoth(results.append)
        midway.addTimeout(10, self.reactor)
        try:
            await midway
        except Exception:
            conn.transport.abortConnection()
            if sender is not None and sender.running:
                sender.stop()
            said = bytes(conn.error_body[:80]).decode(errors="replace").strip()
            got = results[0] if results else "no answer"
            return f"never midway ({'HTTP ' if isinstance(got, int) else ''}{got} {said})"
        received = conn.body if kind == "download" else 0
        self.all_kills.append(time.monotonic())
        agent.stopped = True
        agent.proc.kill()
        killed = time.monotonic()
        heard: list[str] = []
        conn.on_head = lambda status: heard.append(f"HTTP {status}")
        deadline = killed + self.args.hang_timeout
        while not results and not heard and time.monotonic() < deadline:
            await sleep(self.reactor, 0.005)
        took = (time.monotonic() - killed) * 1000
        if sender is not None and sender.running:
            sender.stop()
        await wait_exit(self.reactor, agent.proc, 5)
        if heard:
            outcome = f"{heard[0]} {took:.0f} ms after the kill"
        elif results and isinstance(results[0], Failure) and results[0].check(Closed):
            how = "reset" if results[0].value.reset else "closed"
            outcome = f"{how} {took:.0f} ms after the kill"
        elif results and isinstance(results[0], Failure):
            outcome = f"{results[0].value} {took:.0f} ms after the kill"
        elif results:
            outcome = f"complete?! HTTP {results[0]} {took:.0f} ms after the kill"
        else:
            outcome = f"HANG (nothing within {self.args.hang_timeout:g} s)"
        if kind == "download":
            outcome += f" (killed at {received / MiB:.1f} of {size / MiB:.0f} MiB)"
        else:
            outcome += f" (killed at {sent[0] / MiB:.1f} of {size / MiB:.0f} MiB sent)"
        conn.transport.abortConnection()
        return outcome

    def report(self) -> None:
        print()
        headers = [
            "phase",
            "s",
            "total",
            "ok",
            "failed/total",
            "refused",
            "killed",
            "retried",
            "p50 ms",
            "p99 ms",
            "max ms",
        ]
        phases = self.stats.order
        print(table(headers, [self.stats.row(p) for p in phases]))
        for phase in phases:
            for kind, n in self.stats.kinds[phase].most_common():
                print(f"  {phase}: {n} x {kind}")
        failed = sum(self.stats.counts[p]["failed"] for p in phases)
        total = sum(self.stats.counts[p]["total"] for p in phases)
        print(
            f"\nfailed among requests that reached a running node: {failed}/{total} "
            f"(goal 0: {'met' if failed == 0 else 'MISSED'})"
        )
        if self.transfers:
            print()
            print(
                table(
                    [
                        "agent SIGKILLed",
                        "client saw",
                        "fds (sum)",
                        "in flight (sum)",
                        "back to baseline",
                        "agent back",
                    ],
                    self.transfers,
                )
            )
        print("\nfigures:")
        for line in self.notes:
            print(f"  {line}")


def orchestrate(args: argparse.Namespace) -> None:
    global LOGDIR
    LOGDIR = Path(tempfile.mkdtemp(prefix="piko-chaos-"))
    print(f"logs: {LOGDIR}")
    life, mib = str(args.max_seconds + 30), str(args.download_mib)
    role = ["--role", "service", "--max-seconds", life, "--download-mib", mib]
    service = Child([__file__, *role], "service")
    service_port = service.port()

    from twisted.internet import reactor

    chaos = Chaos(reactor, args, service_port)
    outcome: list[Any] = []

    def finished(result: Any) -> None:
        outcome.append(result)
        reactor.stop()  # type: ignore[attr-defined]

    def watchdog(*_: Any) -> None:
        print(f"\nwatchdog: still running after {args.max_seconds:g} s; killing everything")
        _kill_all()
        service.stop()
        os._exit(3)

    signal.signal(signal.SIGALRM, watchdog)
    signal.alarm(int(args.max_seconds))
    reactor.callWhenRunning(  # type: ignore[attr-defined]
        lambda: Deferred.fromCoroutine(chaos.run()).addBoth(finished)
    )
    began = time.monotonic()
    reactor.run()  # type: ignore[attr-defined]
    signal.alarm(0)
    for node in chaos.nodes:
        if node.proc is not None and node.proc.poll() is None:
            node.proc.terminate()
    for agent in [*chaos.agents, chaos.agent_c]:
        if agent.proc is not None and agent.proc.poll() is None:
            agent.proc.terminate()
    for proc in _procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(args.grace + 5)
    service.stop()
    chaos.report()
    impl = args.impl or f"{sys.executable} -m piko (this checkout)"
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(
        f"\n(impl: {impl}; {args.clients} clients, {args.rate:g} req/s; "
        f"cores: {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}; "
        f"{time.monotonic() - began:.0f} s; CPU s: this script (balancers, load) "
        f"{cpu_seconds():.0f}, nodes + agents + service {ru.ru_utime + ru.ru_stime:.0f})"
    )
    if outcome and hasattr(outcome[0], "getTraceback"):
        print(outcome[0].getTraceback(), file=sys.stderr)
        raise SystemExit(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--scenarios", default="a,b,c", help="which of a,b,c to run")
    ap.add_argument(
        "--impl", default="", help="the piko command (default: python -m piko, this checkout)"
    )
    ap.add_argument("--clients", type=int, default=8, help="concurrent keep-alive clients")
    ap.add_argument("--rate", type=float, default=100, help="requests/s, all clients together")
    ap.add_argument("--agents", type=int, default=3)
    ap.add_argument("--steady", type=float, default=5, help="seconds of the control phase")
    ap.add_argument("--settle", type=float, default=2, help="seconds after each step")
    ap.add_argument("--grace", type=float, default=15, help="the nodes' --grace-period (s)")
    ap.add_argument("--streak", type=int, default=4, help="(b) requests in a row that count")
    ap.add_argument("--recover-timeout", type=float, default=30, help="(b) bound (s)")
    ap.add_argument(
        "--start-timeout", type=float, default=60, help="bound on a node or agent start (s)"
    )
    ap.add_argument("--hang-timeout", type=float, default=10, help="(c) bound (s)")
    ap.add_argument("--request-timeout", type=float, default=10, help="load request bound (s)")
    ap.add_argument("--download-mib", type=int, default=256, help="(c) transfer size")
    ap.add_argument("--max-seconds", type=float, default=900, help="watchdog")
    ap.add_argument("--log-level", default="warn", help="the nodes' and agents' --log.level")
    ap.add_argument(
        "--no-fresh",
        dest="fresh",
        action="store_false",
        help="run the scenarios back to back on one cluster (default: a fresh one for each)",
    )
    ap.add_argument("--role", choices=("service",), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.role == "service":
        serve(args)
    else:
        orchestrate(args)


if __name__ == "__main__":
    main()

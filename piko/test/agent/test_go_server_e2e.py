# -*- test-case-name: piko.test.agent.test_go_server_e2e -*-
"""
End to end on loopback, our agent behind the real Go Piko v0.9.0 server.

When its client goes away mid-answer, Go's server closes the stream (a yamux FIN) and reads
from it no more.  Our agent used to go on relaying the answer until the stream's window was
spent and then wait, holding its connection to the local service open until Go's 5-minute
stream close timeout (seed 312822346 of the differential run: a 5.8 MB answer, the client
closing right after its request).  The Go server here is the binary, the agent ours, in
process, the local service a Twisted protocol that sees its connection end.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from attrs import evolve
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, connectProtocol
from twisted.internet.error import ConnectError, ConnectionDone, ProcessDone
from twisted.internet.protocol import Factory, ProcessProtocol, Protocol
from twisted.internet.task import deferLater
from twisted.python.failure import Failure

from piko.agent.service import make_agent_service
from piko.config import AgentConfig, ListenerConfig
from piko.test.differential.topology import free_port
from piko.test.e2e.harness import E2ETestCase, reactor
from piko.test.interop import require_go_piko

ENDPOINT = "leak-ep"
SIZE = 5_806_327
#: Seconds the local connection may stay open after the client left (Go's own agent drops
#: it at once; before the fix it stayed open for minutes).
BOUND = 10.0
#: Bound on the Go server starting and on the endpoint reaching it.
START_BOUND = 20.0


class _GoProcess(ProcessProtocol):
    def __init__(self) -> None:
        self.ended: Deferred[None] = Deferred()
        self.output = bytearray()

    def outReceived(self, data: bytes) -> None:
        self.output = (self.output + data)[-4096:]

    errReceived = outReceived

    def processEnded(self, reason: Failure = Failure(ProcessDone(0))) -> None:  # noqa: B008
        self.ended.callback(None)


class _Service:
    """What the local service saw: its first request answered, its connections lost."""

    def __init__(self) -> None:
        self.answering: Deferred[None] = Deferred()
        self.lost: Deferred[None] = Deferred()
        self.open = 0


class _BigAnswer(Protocol):
    """Answers a request with :data:`SIZE` bytes, all written at once (the kernel paces them)."""

    def __init__(self, service: _Service) -> None:
        self.service = service
        self.buffer = b""

    def connectionMade(self) -> None:
        self.service.open += 1

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        if b"\r\n\r\n" not in self.buffer:
            return
        self.buffer = b""
        self.transport.write(
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: %d\r\n\r\n" % SIZE + b"x" * SIZE
        )
        if not self.service.answering.called:
            self.service.answering.callback(None)

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:  # noqa: B008
        self.service.open -= 1
        if not self.service.lost.called:
            self.service.lost.callback(None)


class _Client(Protocol):
    """A raw client: :attr:`head` fires with the answer's head, :attr:`closed` at the end."""

    def __init__(self) -> None:
        self.head: Deferred[bytes] = Deferred()
        self.closed: Deferred[bytes] = Deferred()
        self.received = b""

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if b"\r\n\r\n" in self.received and not self.head.called:
            self.head.callback(self.received.split(b"\r\n\r\n", 1)[0])

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:  # noqa: B008
        self.closed.callback(self.received)


@inlineCallbacks
def _until(check: Callable[[], Any], bound: float, what: str) -> Any:
    """Poll ``check`` (which may return a Deferred) until true, at most ``bound`` seconds."""
    deadline = reactor.seconds() + bound
    while reactor.seconds() < deadline:
        try:
            if (yield check()):
                return
        except ConnectError:  # not listening yet: try again
            pass
        yield deferLater(reactor, 0.05, lambda: None)
    raise AssertionError(f"{what} not within {bound} s")


class GoServerClientGoneTests(E2ETestCase):
    timeout = 60

    @inlineCallbacks
    def start_go_server(self) -> Any:
        """
        The Go server on free loopback ports, killed at cleanup (and by :attr:`stop_go`,
        which a test adds again to kill it before what it started later). Returns its ports.
        """
        binary = str(require_go_piko())
        ports = {name: free_port() for name in ("proxy", "upstream", "admin", "gossip")}
        argv = [binary, "server"]
        for name in ("proxy", "upstream", "admin"):
            argv += [f"--{name}.bind-addr", f"127.0.0.1:{ports[name]}"]
        argv += ["--cluster.gossip.bind-addr", f"127.0.0.1:{ports['gossip']}"]
        process = _GoProcess()
        transport = reactor.spawnProcess(process, binary, argv, env=dict(os.environ))

        def stop() -> Any:
            if not process.ended.called:
                transport.signalProcess("KILL")
            return process.ended

        self.stop_go = stop
        self.addCleanup(stop)
        yield _until(
            lambda: self.connect(ports["upstream"]).addCallback(
                lambda p: p.transport.loseConnection() or True
            ),
            START_BOUND,
            "the Go server listening",
        )
        return ports

    def connect(self, port: int, protocol: Protocol | None = None) -> Deferred[Any]:
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
        return connectProtocol(endpoint, protocol or Protocol())

    @inlineCallbacks
    def request_head(self, raw: bytes, port: int) -> Any:
        """Send ``raw``; the answer's head once it arrived, and the client."""
        client = _Client()
        yield self.connect(port, client)
        client.transport.write(raw)
        head = yield client.head
        return head, client

    @inlineCallbacks
    def test_client_gone_mid_answer(self) -> Any:
        """
        A client that leaves while a 5.8 MB answer comes: the agent closes its local
        connection within seconds (the server's FIN ends the exchange).
        """
        ports = yield self.start_go_server()
        service = _Service()
        site = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            Factory.forProtocol(lambda: _BigAnswer(service))
        )
        self.addCleanup(site.stopListening)
        agent = make_agent_service(
            AgentConfig(
                connect=evolve(AgentConfig().connect, url=f"http://127.0.0.1:{ports['upstream']}"),
                listeners=(
                    ListenerConfig(endpoint_id=ENDPOINT, addr=f"127.0.0.1:{site.getHost().port}"),
                ),
            ),
            reactor,
            stop_reactor_on_failure=False,
        )
        agent.startService()
        self.addCleanup(agent.stopService)
        # The Go server goes first: an agent stopping with a stream still open would wait.
        self.addCleanup(self.stop_go)
        yield agent.ready
        status = b"GET /status/upstream/endpoints HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"

        @inlineCallbacks
        def registered() -> Any:
            client = _Client()
            yield self.connect(ports["admin"], client)
            client.transport.write(status)
            received = yield client.closed  # Connection: close
            return f'"{ENDPOINT}":1'.encode() in received

        yield _until(registered, START_BOUND, "the endpoint registered at the Go server")

        request = b"GET /big HTTP/1.1\r\nHost: a\r\nx-piko-endpoint: %s\r\n\r\n" % ENDPOINT.encode()
        head, client = yield self.request_head(request, ports["proxy"])
        self.assertTrue(head.startswith(b"HTTP/1.1 503 "), head)
        self.assertEqual(service.open, 1)
        client.transport.abortConnection()
        lost = service.lost
        lost.addTimeout(BOUND, reactor)
        try:
            yield lost
        except Exception:
            self.fail(
                f"the local connection was still open {BOUND} s after the client left "
                f"({service.open} open)"
            )
        self.assertEqual(service.open, 0)

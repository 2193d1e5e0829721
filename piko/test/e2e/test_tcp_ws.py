"""End-to-end raw TCP (SDK Dialer through /_piko/v1/tcp/) and WebSocket passthrough."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHalfCloseableProtocol, IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from zope.interface import implementer

from piko.test.e2e.harness import E2ETestCase
from piko.ws.client import WebSocketDialError


class UpgradingEcho(Protocol):
    """A local service that answers the first request with 101, then echoes upper-cased."""

    upgraded = False

    def dataReceived(self, data: bytes) -> None:
        if not self.upgraded:
            self.upgraded = True
            self.transport.write(
                b"HTTP/1.1 101 Switching Protocols\r\n"
                b"Upgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
            )
            return
        self.transport.write(data.upper())


@implementer(IHalfCloseableProtocol)
class Echo(Protocol):
    """Echoes bytes; answers a half-close by closing."""

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)

    def readConnectionLost(self) -> None:
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass


class Collector(Protocol):
    """Collects bytes and fires when a given amount has arrived or the connection ends."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.wanted: tuple[Any, Deferred[bytes]] | None = None
        self.lost: Deferred[None] = Deferred()

    def wait_for(self, size: int) -> Deferred[bytes]:
        """Fire once at least ``size`` bytes have arrived."""
        return self.wait_until(lambda received: len(received) >= size)

    def wait_until(self, predicate: Any) -> Deferred[bytes]:
        """Fire once ``predicate(received)`` holds."""
        d: Deferred[bytes] = Deferred()
        self.wanted = (predicate, d)
        self._check()
        return d

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        self._check()

    def _check(self) -> None:
        if self.wanted is not None and self.wanted[0](self.received):
            _, d = self.wanted
            self.wanted = None
            d.callback(bytes(self.received))

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:  # noqa: B008
        self.lost.callback(None)


class TCPTests(E2ETestCase):
    @inlineCallbacks
    def test_echo_through_dialer(self) -> Any:
        """Bytes sent through the SDK Dialer come back from an echo served by an SDK listener."""
        yield self.start_server()
        yield self.listen("tcp-ep", Factory.forProtocol(Echo))
        client = yield self.dialer().dial("tcp-ep", Factory.forProtocol(Collector))
        payloads = [b"x" * 11, bytes(range(256)) * 16, b"y" * 1000]
        for payload in payloads:
            client.transport.write(payload)
        echoed = yield client.wait_for(sum(map(len, payloads)))
        self.assertEqual(echoed, b"".join(payloads))
        client.transport.loseConnection()
        yield client.lost

    @inlineCallbacks
    def test_close_reaches_listener(self) -> Any:
        """Closing the dialed connection ends the listener's stream (EOF), as Go's test checks."""
        yield self.start_server()
        ended: Deferred[None] = Deferred()

        @implementer(IHalfCloseableProtocol)
        class Watch(Protocol):
            def readConnectionLost(self) -> None:
                ended.callback(None)

            def writeConnectionLost(self) -> None:
                pass

        yield self.listen("tcp-ep", Factory.forProtocol(Watch))
        client = yield self.dialer().dial("tcp-ep", Factory.forProtocol(Collector))
        client.transport.write(b"hello")
        client.transport.loseConnection()
        yield ended

    @inlineCallbacks
    def test_parallel_bulk_pushes_complete(self) -> Any:
        """Four connections pushing 16 MiB each at full speed through one upstream all finish."""
        yield self.start_server()
        size = 16 * 1024 * 1024

        class Sink(Protocol):
            def connectionMade(self) -> None:
                self.count = 0

            def dataReceived(self, data: bytes) -> None:
                self.count += len(data)
                if self.count == size:
                    self.transport.write(b"ok")

        @implementer(IPushProducer)
        class Push(Collector):
            def connectionMade(self) -> None:
                self.sent = 0
                self.paused = False
                self.transport.registerProducer(self, True)
                self.resumeProducing()

            def pauseProducing(self) -> None:
                self.paused = True

            def resumeProducing(self) -> None:
                self.paused = False
                while not self.paused and self.sent < size:
                    self.transport.write(b"x" * 65536)
                    self.sent += 65536

            def stopProducing(self) -> None:
                self.paused = True

        yield self.listen("sink", Factory.forProtocol(Sink))
        pushes = []
        for _ in range(4):
            push = yield self.dialer().dial("sink", Factory.forProtocol(Push))
            pushes.append(push)

        def close_all() -> Any:
            for push in pushes:
                push.transport.loseConnection()
            return DeferredList([push.lost for push in pushes])

        self.addCleanup(close_all)
        acks = yield DeferredList([push.wait_for(2) for push in pushes], fireOnOneErrback=True)
        self.assertEqual([ack for _, ack in acks], [b"ok"] * 4)

    @inlineCallbacks
    def test_unknown_endpoint_refused(self) -> Any:
        """Dialing an endpoint with no upstream fails with Go's '502: no available upstreams'."""
        yield self.start_server()
        failure = yield self.assertFailure(
            self.dialer().dial("nope", Factory.forProtocol(Collector)), WebSocketDialError
        )
        self.assertEqual(str(failure), "502: no available upstreams")
        self.assertTrue(failure.retryable)


class UpgradeTests(E2ETestCase):
    @inlineCallbacks
    def test_websocket_passthrough_outlives_timeout(self) -> Any:
        """An Upgrade: websocket request is relayed raw after the 101, beyond proxy.timeout."""
        yield self.start_server()
        clock = Clock()
        self.server.proxy_handler.clock = clock

        yield self.listen("ws-ep", Factory.forProtocol(UpgradingEcho))
        from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

        from piko.test.e2e.harness import reactor

        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.port_of("proxy"))
        client = yield connectProtocol(endpoint, Collector())
        self.addCleanup(lambda: client.transport.loseConnection() or client.lost)
        client.transport.write(
            b"GET /chat HTTP/1.1\r\nHost: x\r\nx-piko-endpoint: ws-ep\r\n"
            b"Connection: Upgrade\r\nUpgrade: websocket\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        head = yield client.wait_until(lambda received: b"\r\n\r\n" in received)
        self.assertTrue(head.startswith(b"HTTP/1.1 101 Switching Protocols\r\n"))
        clock.advance(300)
        start = len(client.received)
        client.transport.write(b"still open")
        echoed = yield client.wait_for(start + len(b"STILL OPEN"))
        self.assertEqual(echoed[start:], b"STILL OPEN")

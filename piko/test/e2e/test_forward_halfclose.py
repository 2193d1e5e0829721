# -*- test-case-name: piko.test.e2e.test_forward_halfclose -*-
"""
End-to-end half-close over real loopback sockets: a client that sends its
request and then shuts its write side (``shutdown(SHUT_WR)``, ``nc -N``) still
gets the whole reply, through ``piko forward`` or the SDK Dialer, the proxy
port's ``/_piko/v1/tcp/`` route, a yamux stream and an SDK listener.

Go Piko loses that reply: its forward closes the whole WebSocket on a local
half-close.  We carry it as a WebSocket Close frame while still reading.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol, serverFromString
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IHalfCloseableProtocol,
    IListeningPort,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from piko.config import ForwardConfig, ForwardConnectConfig, PortConfig
from piko.forward.service import make_forward_service
from piko.test.e2e.harness import E2ETestCase, reactor

#: Larger than one yamux window (256 KiB), so the reply needs flow control.
PAYLOAD = bytes(range(256)) * 2048 + b"end"


@implementer(IHalfCloseableProtocol)
class ReverseAfterEOF(Protocol):
    """Reads until the client's EOF, then writes everything back reversed and closes."""

    def __init__(self) -> None:
        self.received = bytearray()

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def readConnectionLost(self) -> None:
        self.transport.write(bytes(reversed(self.received)))
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass


class Requester(Protocol):
    """Sends a request, half-closes, and collects the reply until the connection ends."""

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.received = bytearray()
        self.done: Deferred[bytes] = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.request)
        self.transport.loseWriteConnection()

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:  # noqa: B008
        self.done.callback(bytes(self.received))


@implementer(IHalfCloseableProtocol)
class GreetFirst(Protocol):
    """Writes a greeting and half-closes at once, then collects what comes back."""

    def __init__(self, heard: Deferred[bytes]) -> None:
        self.heard = heard
        self.received = bytearray()

    def connectionMade(self) -> None:
        self.transport.write(b"greeting")
        self.transport.loseConnection()  # a yamux stream's loseConnection is a half-close

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def readConnectionLost(self) -> None:
        pass

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:  # noqa: B008
        self.heard.callback(bytes(self.received))


@implementer(IHalfCloseableProtocol)
class AnswerAfterEOF(Protocol):
    """Collects until the server side half-closes, then answers and closes."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.done: Deferred[bytes] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def readConnectionLost(self) -> None:
        self.transport.write(b"answer to " + bytes(self.received))
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:  # noqa: B008
        self.done.callback(bytes(self.received))


@implementer(IStreamServerEndpoint)
class _RecordingEndpoint:
    """Wraps a server endpoint to report the port it listens on."""

    def __init__(self, endpoint: Any, listening: Deferred[IListeningPort]) -> None:
        self._endpoint = endpoint
        self._listening = listening

    def listen(self, factory: Any) -> Deferred[IListeningPort]:
        d: Deferred[IListeningPort] = self._endpoint.listen(factory)
        return d.addCallback(self._record)

    def _record(self, port: IListeningPort) -> IListeningPort:
        self._listening.callback(port)
        return port


class ForwardHalfCloseTests(E2ETestCase):
    @inlineCallbacks
    def start_forward(self, endpoint_id: str) -> Any:
        """Start ``piko forward`` on an ephemeral loopback port; return that port number."""
        listening: Deferred[IListeningPort] = Deferred()
        config = ForwardConfig(
            ports=(PortConfig("127.0.0.1:0", endpoint_id),),
            connect=ForwardConnectConfig(url=f"http://127.0.0.1:{self.port_of('proxy')}"),
        )
        service = make_forward_service(
            config,
            reactor,
            endpoint_factory=lambda r, d: _RecordingEndpoint(serverFromString(r, d), listening),
        )
        service.startService()
        self.addCleanup(service.stopService)
        port = yield listening
        return port.getHost().port

    @inlineCallbacks
    def test_forward_half_close_gets_reply(self) -> Any:
        """A TCP client that half-closes through ``piko forward`` receives the whole reply."""
        yield self.start_server()
        yield self.listen("rev-ep", Factory.forProtocol(ReverseAfterEOF))
        port = yield self.start_forward("rev-ep")
        client = Requester(PAYLOAD)
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), client)
        reply = yield client.done
        self.assertEqual(len(reply), len(PAYLOAD))
        self.assertEqual(reply, bytes(reversed(PAYLOAD)))

    @inlineCallbacks
    def test_dialer_half_close_gets_reply(self) -> Any:
        """A Dialer client that calls loseWriteConnection receives the whole reply."""
        yield self.start_server()
        yield self.listen("rev-ep", Factory.forProtocol(ReverseAfterEOF))
        client = yield self.dialer().dial("rev-ep", Factory.forProtocol(lambda: Requester(PAYLOAD)))
        reply = yield client.done
        self.assertEqual(reply, bytes(reversed(PAYLOAD)))

    @inlineCallbacks
    def test_forward_many_half_closes(self) -> Any:
        """Several concurrent half-closing clients through one forward port each get their reply."""
        yield self.start_server()
        yield self.listen("rev-ep", Factory.forProtocol(ReverseAfterEOF))
        port = yield self.start_forward("rev-ep")
        clients = [Requester(b"request %d " % i * 100) for i in range(8)]
        for client in clients:
            yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), client)
        for client in clients:
            reply = yield client.done
            self.assertEqual(reply, bytes(reversed(client.request)))

    @inlineCallbacks
    def test_upstream_half_close_reaches_dialer(self) -> Any:
        """
        An upstream that half-closes first reaches a half-closeable Dialer
        client as readConnectionLost, and the client's answer still reaches
        the upstream.
        """
        yield self.start_server()
        heard: Deferred[bytes] = Deferred()
        yield self.listen("greet-ep", Factory.forProtocol(lambda: GreetFirst(heard)))
        client = yield self.dialer().dial("greet-ep", Factory.forProtocol(AnswerAfterEOF))
        received = yield client.done
        self.assertEqual(received, b"greeting")
        answer = yield heard
        self.assertEqual(answer, b"answer to greeting")

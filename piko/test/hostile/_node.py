"""
An in-memory Piko node for hostile-input tests: the real proxy port stack
(``HTTPPortFactory`` + ``ProxyPortHandler``) with real yamux upstream sessions
joined to agent-side sessions by :mod:`twisted.test.iosim`; no sockets.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Factory
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.test import iosim
from zope.interface import implementer

from piko.http.head import ResponseHead
from piko.http.listening import HTTPPortFactory, TrackedHTTPServerProtocol
from piko.http.parser import NEED_DATA, PAUSED, BodyChunk, HeadEvent, MessageEnd, ResponseReader
from piko.http.server import HTTPServerProtocol, IRequestHandler, IServerExchange
from piko.mux.session import Session, SessionConfig
from piko.server.proxy_port import ProxyPortHandler
from piko.server.registry import UpstreamRegistry
from piko.server.upstream_port import UpstreamSession
from piko.ws.server import WebSocketAcceptor

_PEER = IPv4Address("TCP", "127.0.0.1", 40000)


@implementer(IRequestHandler)
class NamedHandler:
    """The agent's side: answers every request with ``<endpoint> <method> <target> <host>``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.seen: list[IServerExchange] = []

    def request_received(self, exchange: IServerExchange) -> None:
        self.seen.append(exchange)
        head = exchange.head
        body = b"%s %s %s %s" % (
            self.name.encode(),
            head.method,
            head.target,
            head.get(b"host") or b"",
        )

        def build(date: bytes, *, close: bool, http11: bool) -> bytes:
            extra = b"Connection: close\r\n" if close else b""
            return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)

        exchange.respond(build)


class Client:
    """One downstream connection to the proxy port, on a StringTransport."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.transport = StringTransport(peerAddress=_PEER)
        self.protocol: TrackedHTTPServerProtocol = node.factory.buildProtocol(_PEER)
        self.protocol.makeConnection(self.transport)
        self.lost = False

    def send(self, data: bytes) -> None:
        self.protocol.dataReceived(data)
        self.node.settle()

    def responses(self, method: bytes = b"GET") -> list[tuple[int, bytes]]:
        """Every whole response written so far, as ``(status, body)``."""
        reader = ResponseReader()
        reader.expect(method)
        reader.feed(self.transport.value())
        if self.closed:
            reader.feed_eof()
        out: list[tuple[int, bytes]] = []
        status, body = 0, b""
        for _ in range(10_000):
            event = reader.next_event()
            if event is NEED_DATA or event is PAUSED:
                if event is PAUSED:
                    reader.start_next()
                    continue
                break
            if isinstance(event, HeadEvent):
                assert isinstance(event.head, ResponseHead)
                status, body = event.head.status, b""
            elif isinstance(event, BodyChunk):
                body += event.data
            elif isinstance(event, MessageEnd):
                out.append((status, body))
        return out

    @property
    def closed(self) -> bool:
        return bool(self.transport.disconnecting or self.lost)


class Node:
    """
    The proxy port of one node with upstreams on named endpoints.

    :ivar clock: drives every timer; :meth:`settle` runs what is due now.
    """

    def __init__(self, *, auth: Any = None, forwarder: Any = None, **factory: Any) -> None:
        self.clock = Clock()
        self.clock.advance(1_790_000_000)
        self.registry: UpstreamRegistry[Any] = UpstreamRegistry()
        self.acceptor = WebSocketAcceptor(self.clock)
        self.handler = ProxyPortHandler(
            self.clock, self.registry, self.acceptor, auth=auth, forwarder=forwarder
        )
        self.factory = HTTPPortFactory(self.handler, self.clock, **factory)
        self.pumps: list[iosim.IOPump] = []
        self.upstreams: dict[str, tuple[UpstreamSession, Session, NamedHandler]] = {}
        self.clients: list[Client] = []

    def add_upstream(self, endpoint_id: str) -> NamedHandler:
        """Connect an upstream (agent-side session serving HTTP) for ``endpoint_id``."""
        handler = NamedHandler(endpoint_id)
        server = UpstreamSession(self.clock, endpoint_id, self.registry)
        agent = Session(self.clock, client=True)
        clock = self.clock
        agent.listen(
            Factory.forProtocol(
                lambda: HTTPServerProtocol(handler, clock, header_timeout=None, idle_timeout=None)
            )
        )
        pump = iosim.connect(
            server,
            iosim.FakeTransport(server, True),
            agent,
            iosim.FakeTransport(agent, False),
            greet=False,
        )
        self.pumps.append(pump)
        self.upstreams[endpoint_id] = (server, agent, handler)
        self.settle()
        return handler

    def client(self) -> Client:
        client = Client(self)
        self.clients.append(client)
        return client

    def settle(self) -> None:
        """Run due timers, move bytes between sessions, deliver closes; bounded."""
        for _ in range(100):
            self.clock.advance(0)
            moved = any([pump.pump() for pump in self.pumps])
            for client in self.clients:
                if client.transport.disconnecting and not client.lost:
                    client.lost = True
                    client.protocol.connectionLost()
                    moved = True
            if not moved and not any(c.getTime() <= self.clock.seconds() for c in self.clock.calls):
                return

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.settle()

    def get(self, endpoint: str, target: bytes = b"/") -> bytes:
        """A well-formed request for ``endpoint``."""
        return b"GET %s HTTP/1.1\r\nHost: %s.example.com\r\n\r\n" % (target, endpoint.encode())

    def good_request_works(self, endpoint: str = "ep1") -> bool:
        """A fresh connection's well-formed request is answered by ``endpoint``'s upstream."""
        client = self.client()
        client.send(self.get(endpoint, b"/good"))
        responses = client.responses()
        return len(responses) == 1 and responses[0] == (
            200,
            b"%s GET /good %s.example.com" % (endpoint.encode(), endpoint.encode()),
        )

    def leaks(self) -> list[str]:
        """
        What is still held once every client is gone: streams, connections, timers.

        A stream's closing FIN may wait up to ``control_delay`` for a frame to ride with
        (when the peer's FIN is already in hand), so that delay passes first.
        """
        self.advance(SessionConfig().control_delay)
        found = []
        for endpoint, (server, agent, _) in self.upstreams.items():
            if server.stream_count or agent.stream_count:
                found.append(f"{endpoint}: {server.stream_count}/{agent.stream_count} streams")
        live = [c for c in self.clients if not c.closed]
        if len(self.factory.connections) != len(live):
            found.append(f"{len(self.factory.connections)} tracked connections")
        if len(self.factory.pending) > len(live):
            found.append(f"{len(self.factory.pending)} pending connections")
        return found

    def close_clients(self) -> None:
        for client in self.clients:
            if not client.lost:
                client.transport.loseConnection()
        self.settle()

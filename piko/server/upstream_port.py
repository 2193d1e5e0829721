# -*- test-case-name: piko.test.server.test_upstream_port -*-
"""
The upstream port: ``GET /piko/v1/upstream/<endpoint>`` upgrades to a WebSocket
that carries a yamux session, the server side of which opens the streams.

An upstream is registered under its endpoint from the moment its session is
connected until it ends; removal is idempotent.  Every other request gets
the answer Go Piko gives (``interop/errors``): 404 ``404 page not found``
for other paths and methods, gorilla's 400 for a non-WebSocket request on
the route, 403 for a foreign ``Origin``.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import unquote, urlsplit

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from piko.http import errors
from piko.http.server import IRequestHandler, IServerExchange
from piko.mux.session import Session, SessionConfig
from piko.server._takeover import WebSocketTakeover
from piko.server.registry import IUpstreamRegistry
from piko.ws.server import HandshakeRequest, WebSocketAcceptor

UPSTREAM_ROUTE = "/piko/v1/upstream/"


def endpoint_from_path(path: str, route: str) -> str | None:
    """
    The endpoint id of ``route + <id>``: one non-empty, unescaped path segment.

    Mirrors gin's ``:endpointID`` parameter, matched on the decoded path.
    """
    if not path.startswith(route):
        return None
    endpoint_id = unquote(path[len(route) :])
    if not endpoint_id or "/" in endpoint_id:
        return None
    return endpoint_id


class UpstreamSession(Session):
    """
    The server side of one upstream's yamux session.

    :ivar endpoint_id: the endpoint it listens on.
    :ivar client_ip: the upstream's address, for logs and status.
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        endpoint_id: str,
        registry: IUpstreamRegistry,
        config: SessionConfig | None = None,
    ) -> None:
        super().__init__(clock, client=False, config=config, on_closed=self._ended)
        self.endpoint_id = endpoint_id
        self.registry = registry
        self.client_ip = ""

    def connectionMade(self) -> None:
        """Register once the WebSocket is open and streams can be opened."""
        super().connectionMade()
        peer = self.transport.getPeer() if self.transport is not None else None
        self.client_ip = getattr(peer, "host", "")
        self.registry.add(self.endpoint_id, self)
        self.log.info(
            "upstream connected: endpoint {endpoint_id} from {client_ip}",
            endpoint_id=self.endpoint_id,
            client_ip=self.client_ip,
        )

    def _ended(self, reason: Failure) -> None:
        if self.registry.remove(self.endpoint_id, self):
            self.log.info(
                "upstream disconnected: endpoint {endpoint_id} from {client_ip}: {reason}",
                endpoint_id=self.endpoint_id,
                client_ip=self.client_ip,
                reason=reason.getErrorMessage(),
            )


@implementer(IRequestHandler)
class UpstreamPortHandler:
    """
    Routes requests on the upstream port.

    :param clock: for the sessions' keepalives and timeouts.
    :param registry: where connected upstreams are registered.
    :param acceptor: runs the WebSocket handshakes.
    :param session_config: yamux tunables.
    :param authorize: checks a request before it is upgraded; returns a
        complete refusal response (bytes builder) or ``None`` to go on.
    """

    def __init__(
        self,
        clock: IReactorTime,
        registry: IUpstreamRegistry,
        acceptor: WebSocketAcceptor,
        session_config: SessionConfig | None = None,
        authorize: Callable[[IServerExchange, str], Callable[..., bytes] | None] | None = None,
    ) -> None:
        self.clock = clock
        self.registry = registry
        self.acceptor = acceptor
        self.session_config = session_config
        self.authorize = authorize
        self.sessions: set[UpstreamSession] = set()

    def request_received(self, exchange: IServerExchange) -> None:
        """Upgrade requests on the upstream route; answer anything else as Go does."""
        head = exchange.head
        path = urlsplit(head.target.decode("latin-1")).path
        endpoint_id = endpoint_from_path(path, UPSTREAM_ROUTE)
        if endpoint_id is None or head.method != b"GET":
            exchange.respond(errors.not_found)
            return
        if self.authorize is not None:
            refusal = self.authorize(exchange, endpoint_id)
            if refusal is not None:
                exchange.respond(refusal)
                return
        if not exchange.upgrade:
            exchange.respond(errors.websocket_bad_request)
            return

        def on_handshake(request: HandshakeRequest) -> UpstreamSession:
            session = UpstreamSession(self.clock, endpoint_id, self.registry, self.session_config)
            self.sessions.add(session)
            session.when_closed().addCallback(lambda _: self.sessions.discard(session))
            return session

        exchange.take_over(WebSocketTakeover(self.acceptor, on_handshake), replay_head=True)

    def close_all(self) -> None:
        """Close every upstream session (at shutdown); upstreams reconnect elsewhere."""
        for session in list(self.sessions):
            session.close()

# -*- test-case-name: piko.test.server.test_proxy_port -*-
"""
The proxy port: downstream HTTP requests, and raw TCP through ``/_piko/v1/tcp/<endpoint>``.

HTTP requests name their endpoint by ``x-piko-endpoint`` or the first label
of ``Host``; each is relayed on a new yamux stream to an upstream chosen
round robin, rewritten as Go's ReverseProxy does; with no local upstream, it goes
to another node that has one (:mod:`piko.server.forwarding`).  A request whose
upstream or node fails before answering is sent again when that is safe, after
waiting for the endpoint to come back if need be (:mod:`piko.server.retry`).

``GET /_piko/v1/tcp/<id>`` opens the stream first (failures are answered with
502 JSON before any upgrade), then upgrades to a WebSocket spliced to the stream.

With auth on, every request is authenticated before routing (Go's
``router.Use``); once the endpoint is known it must be in the token's
``piko.endpoints`` (401 ``endpoint not permitted``), on both routes.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from collections.abc import Set as AbstractSet
from functools import partial
from urllib.parse import urlsplit

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from piko.auth.http import RequestAuthenticator, endpoint_not_permitted
from piko.auth.token import Token
from piko.http import errors
from piko.http.head import RequestHead, endpoint_from_path, endpoint_id_from_request
from piko.http.proxy import EndpointConnector
from piko.http.rewrite import BodyFraming, rewrite_request
from piko.http.server import IRequestHandler, IServerExchange
from piko.mux.endpoints import StreamClientEndpoint
from piko.mux.errors import MuxError, RemoteGoAway
from piko.server._takeover import WebSocketTakeover
from piko.server.forwarding import RemoteForwarder
from piko.server.registry import IUpstreamRegistry
from piko.server.retry import RetryingRelay, Route, UpstreamWaiters
from piko.server.upstream_port import UpstreamSession
from piko.splice import SpliceProtocol, join
from piko.ws.server import HandshakeRequest, WebSocketAcceptor

TCP_ROUTE = "/_piko/v1/tcp/"

#: The grant of a port without auth.
_ALL_ENDPOINTS = Token()


@implementer(IRequestHandler)
class ProxyPortHandler:
    """
    Routes requests on the proxy port.

    :param clock: for the proxy timeout.
    :param registry: the local upstreams.
    :param acceptor: runs the WebSocket handshakes of the TCP route.
    :param timeout: seconds to wait for an upstream's response head
        (``proxy.timeout``); ``None`` or 0 disables it.
    :param auth: authenticates every request before routing; ``None`` when
        the port has no auth.
    :param forwarder: sends requests for endpoints with no local upstream to
        another node of the cluster; ``None`` on a single node.
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        registry: IUpstreamRegistry,
        acceptor: WebSocketAcceptor,
        *,
        timeout: float | None = 30.0,
        auth: RequestAuthenticator | None = None,
        forwarder: RemoteForwarder | None = None,
    ) -> None:
        self.clock = clock
        self.registry = registry
        self.acceptor = acceptor
        self.timeout = timeout or None
        self.auth = auth
        self.forwarder = forwarder
        #: Retried requests waiting for their endpoint to get an upstream again.
        self.waiters = UpstreamWaiters(clock)
        registry.observe(self.waiters.endpoint_changed)
        if forwarder is not None:
            forwarder.cluster.observe(self.waiters.cluster_changed)

    def request_received(self, exchange: IServerExchange) -> None:
        """Send the request to the TCP route or the HTTP proxy."""
        head = exchange.head
        token = _ALL_ENDPOINTS
        if self.auth is not None:
            verified = self.auth.authenticate(head)
            if not isinstance(verified, Token):
                exchange.respond(verified)
                return
            token = verified
        if head.method == b"GET":
            path = urlsplit(head.target.decode("latin-1")).path
            endpoint_id = endpoint_from_path(path, TCP_ROUTE)
            if endpoint_id is not None:
                self._tcp(exchange, endpoint_id, token)
                return
        self._http(exchange, token)

    def _permitted(self, exchange: IServerExchange, endpoint_id: str, token: Token) -> bool:
        if token.endpoint_permitted(endpoint_id):
            return True
        self.log.warn(
            "endpoint not permitted",
            token_endpoints=list(token.endpoints or ()),
            endpoint_id=endpoint_id,
        )
        exchange.respond(endpoint_not_permitted(exchange.head))
        return False

    def _local(self, endpoint_id: str, exclude: AbstractSet[Hashable]) -> UpstreamSession | None:
        """The next local upstream for ``endpoint_id`` that is not leaving nor excluded."""
        upstream: UpstreamSession | None = self.registry.select(endpoint_id)
        skipped = 0
        while upstream is not None and (upstream.remote_go_away or upstream in exclude):
            if upstream.remote_go_away:
                # It is leaving (its GoAway crossed our routing): pick another.
                self.registry.remove(endpoint_id, upstream)
            else:
                skipped += 1
                if skipped >= self.registry.endpoints().get(endpoint_id, 0):
                    return None
            upstream = self.registry.select(endpoint_id)
        return upstream

    def _select(
        self, exchange: IServerExchange, endpoint_id: str, token: Token
    ) -> UpstreamSession | None:
        if not self._permitted(exchange, endpoint_id, token):
            return None
        upstream = self._local(endpoint_id, frozenset())
        # Local upstreams first; else one hop to a node that has one.
        if upstream is None and (
            self.forwarder is None or not self.forwarder.forward(exchange, endpoint_id)
        ):
            self.log.warn("no available upstreams", endpoint_id=endpoint_id)
            exchange.respond(errors.no_available_upstreams)
        return upstream

    # -- HTTP ---------------------------------------------------------------

    def _http(self, exchange: IServerExchange, token: Token) -> None:
        endpoint_id = endpoint_id_from_request(exchange.head.headers)
        if endpoint_id is None:
            self.log.warn("request missing endpoint id")
            exchange.respond(errors.missing_endpoint_id)
            return
        if not self._permitted(exchange, endpoint_id, token):
            return
        pick = partial(self._route, exchange, endpoint_id)
        route = pick(frozenset())
        if route is None:
            self.log.warn("no available upstreams", endpoint_id=endpoint_id)
            exchange.respond(errors.no_available_upstreams)
            return
        relay = RetryingRelay(
            exchange,
            pick,
            self.clock,
            endpoint_id=endpoint_id,
            timeout=self.timeout,
            waiters=self.waiters,
        )
        relay.start(route)

    def _route(
        self, exchange: IServerExchange, endpoint_id: str, exclude: AbstractSet[Hashable]
    ) -> Route | None:
        """
        Where ``exchange`` goes now: a local upstream (round robin), else another node.

        :param exclude: the upstreams and nodes that failed this request already.
        """
        upstream = self._local(endpoint_id, exclude)
        if upstream is not None:
            peer = exchange.transport.getPeer()
            rewrite: Callable[[RequestHead, BodyFraming], bytes] = partial(
                rewrite_request, client_ip=getattr(peer, "host", None), close=True
            )
            return Route(upstream, EndpointConnector(StreamClientEndpoint(upstream)), rewrite)
        if self.forwarder is None:
            return None
        return self.forwarder.route(exchange, endpoint_id, exclude)

    # -- TCP ----------------------------------------------------------------

    def _tcp(self, exchange: IServerExchange, endpoint_id: str, token: Token) -> None:
        upstream = self._select(exchange, endpoint_id, token)
        if upstream is None:
            return
        if not exchange.upgrade:
            exchange.respond(errors.websocket_bad_request)
            return
        stream_end, websocket_end = SpliceProtocol(), SpliceProtocol()
        join(stream_end, websocket_end)
        try:
            stream = upstream.open_stream(stream_end)
        except MuxError as error:
            if isinstance(error, RemoteGoAway):
                self.registry.remove(endpoint_id, upstream)
            self.log.warn(
                "tcp route: upstream unreachable", endpoint_id=endpoint_id, error=str(error)
            )
            exchange.respond(errors.upstream_unreachable)
            return

        def on_handshake(request: HandshakeRequest) -> SpliceProtocol:
            return websocket_end

        def on_lost() -> None:
            if websocket_end.transport is None and not stream.finished:
                stream.abortConnection()

        exchange.take_over(
            WebSocketTakeover(self.acceptor, on_handshake, on_lost), replay_head=True
        )

# -*- test-case-name: piko.test.server.test_upstream_port -*-
"""
The upstream port: ``GET /piko/v1/upstream/<endpoint>`` upgrades to a WebSocket
that carries a yamux session, the server side of which opens the streams.

An upstream is registered under its endpoint from the moment its session is
connected until it ends; removal is idempotent.  Every other request gets
the answer Go Piko gives (``interop/errors``): 404 ``404 page not found``
for other paths and methods, gorilla's 400 for a non-WebSocket request on
the route, 403 for a foreign ``Origin``.  An endpoint id longer than
:data:`~piko.cluster.syncer.MAX_ENDPOINT_ID_BYTES` gets a 400 with a JSON
``error`` (Go has no bound; its gossip then stalls).

With auth on, every request is authenticated first, before routing (Go's
``router.Use``), then the endpoint is checked against the token's
``piko.endpoints``; a session whose token has an expiry is closed when it
passes (``upstream token expired``), so the upstream must reconnect with a
fresh token.

A session can be told to go (:meth:`UpstreamSession.shed`, for rebalancing
and at the start of a drain): it is deregistered at once, so no new request
is routed to it and the gossiped count drops; it is sent yamux GoAway(0),
which our SDK listener takes as "open a replacement connection now"
(Go agents ignore it); it is closed once its in-flight streams finish, or
after ``timeout``.

A drain first only *announces* GoAway(0) (:meth:`UpstreamSession.announce_go_away`)
and keeps the session registered while the upstream moves (see
:mod:`piko.server.service`).  When the upstream answers with its own
GoAway(0) (our SDK listener does, once its replacement connection has been
up for a while), the session is deregistered at once and closed when idle:
the server closes it, so no stream it opens races the upstream's close.
"""

from __future__ import annotations

from functools import partial
from urllib.parse import urlsplit

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from piko.auth.http import RequestAuthenticator, endpoint_not_permitted
from piko.auth.token import Token
from piko.cluster.syncer import MAX_ENDPOINT_ID_BYTES
from piko.http import errors
from piko.http.head import endpoint_from_path
from piko.http.server import IRequestHandler, IServerExchange
from piko.mux.frames import GoAwayCode
from piko.mux.session import Session, SessionConfig
from piko.server._takeover import WebSocketTakeover
from piko.server.registry import IUpstreamRegistry
from piko.ws.server import HandshakeRequest, WebSocketAcceptor

UPSTREAM_ROUTE = "/piko/v1/upstream/"


class UpstreamSession(Session):
    """
    The server side of one upstream's yamux session.

    :ivar endpoint_id: the endpoint it listens on.
    :ivar client_ip: the upstream's address, for logs and status.
    :ivar remote_addr: its ``host:port`` (the dashboard's upstream list).
    :ivar connected_at: when its session connected (``clock.seconds()``), or ``None`` before.
    :ivar expiry: when its token expires (POSIX seconds on ``clock``); the
        session is closed then.  ``None`` never closes it.
    :ivar tenant_id: the tenant that authenticated it, for logs.
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        endpoint_id: str,
        registry: IUpstreamRegistry,
        config: SessionConfig | None = None,
        *,
        expiry: float | None = None,
        tenant_id: str = "",
    ) -> None:
        super().__init__(clock, client=False, config=config, on_closed=self._ended)
        self.endpoint_id = endpoint_id
        self.registry = registry
        self.client_ip = ""
        self.remote_addr = ""
        self.connected_at: float | None = None
        self.expiry = expiry
        self.tenant_id = tenant_id
        self._expiry_timer: IDelayedCall | None = None
        self._shed_timer: IDelayedCall | None = None
        self._going_waiters: list[Deferred[None]] = []
        #: Set once :meth:`shed` was called.
        self.shedding = False

    def connectionMade(self) -> None:
        """Register once the WebSocket is open and streams can be opened."""
        super().connectionMade()
        peer = self.transport.getPeer() if self.transport is not None else None
        self.client_ip = getattr(peer, "host", "")
        port = getattr(peer, "port", None)
        if port is None:
            self.remote_addr = self.client_ip
        elif ":" in self.client_ip:
            self.remote_addr = f"[{self.client_ip}]:{port}"
        else:
            self.remote_addr = f"{self.client_ip}:{port}"
        self.connected_at = self.clock.seconds()
        self.registry.add(self.endpoint_id, self)
        self.log.info(
            "upstream connected",
            endpoint_id=self.endpoint_id,
            client_ip=self.client_ip,
            tenant_id=self.tenant_id,
        )
        if self.expiry is not None and not self.closed:
            delay = max(0.0, self.expiry - self.clock.seconds())
            self._expiry_timer = self.clock.callLater(delay, self._token_expired)

    def _token_expired(self) -> None:
        self._expiry_timer = None
        self.log.info(
            "upstream token expired",
            endpoint_id=self.endpoint_id,
            client_ip=self.client_ip,
        )
        self.close()

    def announce_go_away(self) -> None:
        """
        Send GoAway(0): the upstream should connect elsewhere.

        Unlike :meth:`Session.go_away` this does not stop us opening streams
        to it: requests already routed here still reach it.
        """
        if not self.closed and not self.shedding:
            self._send_go_away(GoAwayCode.NORMAL)

    def shed(self, timeout: float | None = None) -> None:
        """
        Stop routing to this upstream, tell it to go, and close it when idle.

        :param timeout: close it anyway after this many seconds; ``None``
            waits for its streams however long they take (a drain bounds
            that itself).
        """
        if self.closed or self.shedding:
            return
        self.announce_go_away()
        self.shedding = True
        self.registry.remove(self.endpoint_id, self)
        self.log.info(
            "upstream told to go",
            endpoint_id=self.endpoint_id,
            client_ip=self.client_ip,
        )
        self.when_idle().addCallback(lambda _: self.close())
        if timeout is not None and not self.closed:
            self._shed_timer = self.clock.callLater(timeout, self.close)

    def when_going_away(self) -> Deferred[None]:
        """Fire once the upstream sent GoAway(0) or the session ended (at once if so)."""
        d: Deferred[None] = Deferred()
        if self.closed or self.remote_go_away:
            d.callback(None)
        else:
            self._going_waiters.append(d)
        return d

    def _gone(self) -> None:
        waiters, self._going_waiters = self._going_waiters, []
        for d in waiters:
            d.callback(None)

    def _on_go_away(self, code: int) -> None:
        super()._on_go_away(code)
        if code == GoAwayCode.NORMAL and not self.closed:
            if self.registry.remove(self.endpoint_id, self):
                self.log.info(
                    "upstream going away",
                    endpoint_id=self.endpoint_id,
                    client_ip=self.client_ip,
                )
            self.when_idle().addCallback(lambda _: self.close())
            self._gone()

    def handed_off(self, elsewhere: bool) -> bool:
        """
        Whether a drain may stop waiting for this upstream to move.

        :param elsewhere: whether another active node serves its endpoint.
        :return: ``True`` once it is closed or told us it goes (its own
            GoAway), or when it is idle and ``elsewhere``.
        """
        if self.closed or self.remote_go_away:
            return True
        return elsewhere and self.stream_count == 0

    def _ended(self, reason: Failure) -> None:
        for timer in (self._expiry_timer, self._shed_timer):
            if timer is not None and timer.active():
                timer.cancel()
        self._expiry_timer = self._shed_timer = None
        if self.registry.remove(self.endpoint_id, self):
            self.log.info(
                "upstream disconnected",
                endpoint_id=self.endpoint_id,
                client_ip=self.client_ip,
                tenant_id=self.tenant_id,
                reason=reason.getErrorMessage(),
            )
        self._gone()


@implementer(IRequestHandler)
class UpstreamPortHandler:
    """
    Routes requests on the upstream port.

    :param clock: for the sessions' keepalives and timeouts.
    :param registry: where connected upstreams are registered.
    :param acceptor: runs the WebSocket handshakes.
    :param session_config: yamux tunables.
    :param auth: authenticates every request before routing; ``None``
        when the port has no auth.
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        registry: IUpstreamRegistry,
        acceptor: WebSocketAcceptor,
        session_config: SessionConfig | None = None,
        auth: RequestAuthenticator | None = None,
    ) -> None:
        self.clock = clock
        self.registry = registry
        self.acceptor = acceptor
        self.session_config = session_config
        self.auth = auth
        self.sessions: set[UpstreamSession] = set()

    def request_received(self, exchange: IServerExchange) -> None:
        """Upgrade requests on the upstream route; answer anything else as Go does."""
        head = exchange.head
        token = Token()
        if self.auth is not None:
            verified = self.auth.authenticate(head)
            if not isinstance(verified, Token):
                exchange.respond(verified)
                return
            token = verified
        path = urlsplit(head.target.decode("latin-1")).path
        endpoint_id = endpoint_from_path(path, UPSTREAM_ROUTE)
        if endpoint_id is None or head.method != b"GET":
            exchange.respond(errors.not_found)
            return
        size = len(endpoint_id.encode("utf-8", "surrogatepass"))
        if size > MAX_ENDPOINT_ID_BYTES:
            # Bounded so that its gossip entry fits a UDP packet (see MAX_ENDPOINT_ID_BYTES).
            message = f"endpoint id too long: {size} bytes, at most {MAX_ENDPOINT_ID_BYTES}"
            self.log.warn("upstream refused", error=message)
            exchange.respond(partial(errors.gin_json_error, 400, message))
            return
        if not token.endpoint_permitted(endpoint_id):
            self.log.warn(
                "endpoint not permitted",
                token_endpoints=list(token.endpoints or ()),
                endpoint_id=endpoint_id,
            )
            exchange.respond(endpoint_not_permitted(head))
            return
        if not exchange.upgrade:
            exchange.respond(errors.websocket_bad_request)
            return

        def on_handshake(request: HandshakeRequest) -> UpstreamSession:
            session = UpstreamSession(
                self.clock,
                endpoint_id,
                self.registry,
                self.session_config,
                expiry=token.expiry,
                tenant_id=token.tenant_id,
            )
            self.sessions.add(session)
            session.when_closed().addCallback(lambda _: self.sessions.discard(session))
            return session

        exchange.take_over(WebSocketTakeover(self.acceptor, on_handshake), replay_head=True)

    def shed(self, count: int, timeout: float | None = None) -> int:
        """
        Tell ``count`` upstreams to go (rebalancing), from the endpoints with most.

        :return: how many were told.
        """
        registered = [s for s in self.sessions if s.transport is not None and not s.shedding]
        registered = [s for s in registered if not s.closed]
        counts: dict[str, int] = {}
        for session in registered:
            counts[session.endpoint_id] = counts.get(session.endpoint_id, 0) + 1
        registered.sort(key=lambda s: -counts[s.endpoint_id])
        chosen = registered[:count]
        for session in chosen:
            session.shed(timeout)
        return len(chosen)

    def shed_all(self) -> None:
        """Tell every upstream to go (the start of a drain); each closes when idle."""
        for session in list(self.sessions):
            if session.transport is not None:
                session.shed()

    def announce_all(self) -> None:
        """Send GoAway(0) to every upstream, keeping them registered (the start of a drain)."""
        for session in list(self.sessions):
            if session.transport is not None:
                session.announce_go_away()

    def close_all(self) -> None:
        """Close every upstream session (at shutdown); upstreams reconnect elsewhere."""
        for session in list(self.sessions):
            session.close()

# -*- test-case-name: piko.test.server.test_admin -*-
"""
The admin port's request handler: :class:`~piko.server.admin.AdminRoutes` over HTTP.

With auth on, every route is authenticated first, ``/health``, ``/ready``
and ``/metrics`` included, as Go's middleware does (probes need a token).
"""

from __future__ import annotations

from functools import partial
from typing import Any

from twisted.internet.endpoints import HostnameEndpoint
from zope.interface import implementer

from piko.auth.http import RequestAuthenticator
from piko.auth.token import Token
from piko.http.proxy import EndpointConnector, IUpstreamConnector, ProxyExchange
from piko.http.rewrite import go_response_head, rewrite_request
from piko.http.server import IRequestHandler, IServerExchange
from piko.net import split_host_port
from piko.server.admin import EMPTY_NOT_FOUND, AdminResponse, AdminRoutes, ForwardTo

#: Go's admin forwarding timeout.
FORWARD_TIMEOUT = 15.0


def connect_admin(reactor: Any, admin_addr: str) -> IUpstreamConnector:
    """A connector to another node's admin port: plain HTTP, as Go (even with admin TLS)."""
    host, port = split_host_port(admin_addr)
    return EndpointConnector(HostnameEndpoint(reactor, host, int(port), timeout=FORWARD_TIMEOUT))


@implementer(IRequestHandler)
class AdminPortHandler:
    """
    Answers admin requests with Go's exact heads (``Date`` then ``Content-Length``).

    :param auth: authenticates every request before routing, or ``None``.
    """

    def __init__(
        self,
        routes: AdminRoutes,
        auth: RequestAuthenticator | None = None,
        *,
        reactor: Any = None,
        connector: Any = connect_admin,
    ) -> None:
        """
        :param reactor: needed to relay ``?forward=<node>`` requests; without
            one they are answered 404.
        :param connector: ``connector(reactor, admin_addr)`` gives the
            :class:`IUpstreamConnector` to another node's admin port.
        """
        self.routes = routes
        self.auth = auth
        self.reactor = reactor
        self.connector = connector

    def request_received(self, exchange: IServerExchange) -> None:
        """Route and answer at once; admin answers are small."""
        head = exchange.head
        if self.auth is not None:
            verified = self.auth.authenticate(head)
            if not isinstance(verified, Token):
                exchange.respond(verified)
                return
        response = self.routes.handle(head.method, head.target)
        if isinstance(response, ForwardTo):
            if self.reactor is None:
                response = EMPTY_NOT_FOUND
            else:
                self._forward(exchange, response)
                return
        exchange.respond(
            lambda date, **kw: render(response, date, head_only=head.method == b"HEAD", **kw)
        )

    def _forward(self, exchange: IServerExchange, to: ForwardTo) -> None:
        """Reverse-proxy to the node's admin port (same path and query; it serves locally)."""
        peer = exchange.transport.getPeer()
        try:
            connector = self.connector(self.reactor, to.admin_addr)
        except ValueError:
            exchange.respond(lambda date, **kw: render(EMPTY_NOT_FOUND, date, **kw))
            return
        ProxyExchange(
            exchange,
            connector,
            self.reactor,
            partial(rewrite_request, client_ip=getattr(peer, "host", None), close=True),
            timeout=FORWARD_TIMEOUT,
        ).start()


def render(
    response: AdminResponse, date: bytes, *, close: bool, http11: bool, head_only: bool = False
) -> bytes:
    """The whole HTTP response for ``response``."""
    head = go_response_head(
        response.status,
        response.headers,
        date,
        http11=http11,
        close=close,
        content_length=len(response.body),
    )
    return head if head_only else head + response.body

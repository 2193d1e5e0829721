# -*- test-case-name: piko.test.server.test_admin -*-
"""
The admin port's request handler: :class:`~piko.server.admin.AdminRoutes` over HTTP.

With auth on, every route is authenticated first, ``/health``, ``/ready``
and ``/metrics`` included, as Go's middleware does (probes need a token).
"""

from __future__ import annotations

from zope.interface import implementer

from piko.auth.http import RequestAuthenticator
from piko.auth.token import Token
from piko.http.rewrite import go_response_head
from piko.http.server import IRequestHandler, IServerExchange
from piko.server.admin import AdminResponse, AdminRoutes


@implementer(IRequestHandler)
class AdminPortHandler:
    """
    Answers admin requests with Go's exact heads (``Date`` then ``Content-Length``).

    :param auth: authenticates every request before routing, or ``None``.
    """

    def __init__(self, routes: AdminRoutes, auth: RequestAuthenticator | None = None) -> None:
        self.routes = routes
        self.auth = auth

    def request_received(self, exchange: IServerExchange) -> None:
        """Route and answer at once; admin answers are small."""
        head = exchange.head
        if self.auth is not None:
            verified = self.auth.authenticate(head)
            if not isinstance(verified, Token):
                exchange.respond(verified)
                return
        response = self.routes.handle(head.method, head.target)
        exchange.respond(
            lambda date, **kw: render(response, date, head_only=head.method == b"HEAD", **kw)
        )


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

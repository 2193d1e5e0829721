# -*- test-case-name: piko.test.server.test_admin -*-
"""The admin port's request handler: :class:`~piko.server.admin.AdminRoutes` over HTTP."""

from __future__ import annotations

from zope.interface import implementer

from piko.http.rewrite import go_response_head
from piko.http.server import IRequestHandler, IServerExchange
from piko.server.admin import AdminResponse, AdminRoutes


@implementer(IRequestHandler)
class AdminPortHandler:
    """Answers admin requests with Go's exact heads (``Date`` then ``Content-Length``)."""

    def __init__(self, routes: AdminRoutes) -> None:
        self.routes = routes

    def request_received(self, exchange: IServerExchange) -> None:
        """Route and answer at once; admin answers are small."""
        head = exchange.head
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

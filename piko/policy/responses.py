# -*- test-case-name: piko.test.policy.test_handler -*-
"""
The answers of a refusing policy, in the style of Piko's own errors.

Go Piko's errors are ``http.Error`` with a JSON body (see
:func:`piko.http.errors.net_http_json_error`): ``{"error":"..."}`` and a
newline, ``Content-Type: application/json``, ``X-Content-Type-Options:
nosniff``.  A Go client parses the ``error`` field of these as it does of
Piko's own.  Each function returns a builder for
:meth:`~piko.http.server.IServerExchange.respond`.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from piko.http.rewrite import go_response_head

Builder = Callable[..., bytes]

_JSON = ((b"Content-Type", b"application/json"), (b"X-Content-Type-Options", b"nosniff"))


def json_error(status: int, message: str, extra: tuple[tuple[bytes, bytes], ...] = ()) -> Builder:
    """A builder of ``status`` with body ``{"error":message}`` and ``extra`` headers."""
    body = json.dumps({"error": message}, separators=(",", ":")).encode() + b"\n"
    headers = (*_JSON, *extra)

    def build(date: bytes, *, close: bool = False, http11: bool = True) -> bytes:
        head = go_response_head(
            status, headers, date, content_length=len(body), close=close, http11=http11
        )
        return head + body

    return build


FORBIDDEN = json_error(403, "forbidden by policy")
BAD_FORWARDED_FOR = json_error(400, "malformed x-forwarded-for")
TOO_LARGE = json_error(413, "request body too large")
TOO_MANY_CONCURRENT = json_error(503, "too many concurrent requests")


def rate_limited(retry_after: int) -> Builder:
    """429 with ``Retry-After``."""
    return json_error(429, "rate limit exceeded", ((b"Retry-After", b"%d" % retry_after),))


def unauthorized(challenge: bytes) -> Builder:
    """401 with the policy's ``WWW-Authenticate`` challenge."""
    return json_error(401, "unauthorized", ((b"Www-Authenticate", challenge),))

# -*- test-case-name: piko.test.auth.test_http -*-
"""
Go Piko's auth middleware (``pkg/middleware/auth.go``) over our request heads.

The token comes from ``x-piko-authorization`` when that is non-empty (so a
client can keep its own ``Authorization`` for the upstream service), else
from ``Authorization``; the value is split on its first space and the scheme
must be exactly ``Bearer``.  Refusals are gin's ``AbortWithStatusJSON``: 401
with ``{"error":"..."}`` and ``application/json; charset=utf-8``; a verifier
error that is not one of Go's three auth errors is an empty 500.
"""

from __future__ import annotations

from collections.abc import Callable

from attrs import define
from twisted.logger import Logger

from piko.auth.token import AuthError, ExpiredToken, InvalidToken, Token, UnknownTenant
from piko.auth.verifier import MultiTenantVerifier
from piko.http import errors
from piko.http.head import RequestHead
from piko.http.rewrite import go_response_head

#: A whole canned response: ``build(date, close=..., http11=...)``.
Refusal = Callable[..., bytes]


class AuthorizationHeaderError(AuthError):
    """The request carries no usable bearer token; the message is Go's ``error``."""


def extract_token(head: RequestHead) -> str:
    """
    The bearer token of ``head``, as Go's ``parseToken``.

    :raises AuthorizationHeaderError: ``missing authorization``,
        ``invalid authorization`` (no space) or ``unsupported auth type``.
    """
    value = head.get(b"x-piko-authorization") or head.get(b"authorization") or b""
    if not value:
        raise AuthorizationHeaderError("missing authorization")
    scheme, space, token = value.partition(b" ")
    if not space:
        raise AuthorizationHeaderError("invalid authorization")
    if scheme != b"Bearer":
        raise AuthorizationHeaderError("unsupported auth type")
    return token.decode("latin-1")


def _without_body(build: Refusal) -> Refusal:
    def head_only(date: bytes, *, close: bool, http11: bool) -> bytes:
        response = build(date, close=close, http11=http11)
        return response[: response.index(b"\r\n\r\n") + 4]

    return head_only


def unauthorized(message: str, *, head_only: bool = False) -> Refusal:
    """A gin 401 ``{"error": message}`` (head only for a ``HEAD`` request)."""

    def build(date: bytes, *, close: bool = False, http11: bool = True) -> bytes:
        return errors.gin_json_error(401, message, date, close=close, http11=http11)

    return _without_body(build) if head_only else build


def endpoint_not_permitted(head: RequestHead) -> Refusal:
    """The 401 for a token whose ``piko.endpoints`` exclude the requested endpoint."""
    return unauthorized("endpoint not permitted", head_only=head.method == b"HEAD")


def internal_error(date: bytes, *, close: bool = False, http11: bool = True) -> bytes:
    """gin's ``AbortWithStatus(500)``: no body."""
    return go_response_head(500, (), date, http11=http11, close=close, content_length=0)


@define
class RequestAuthenticator:
    """
    Authenticates every request of one port, before routing (gin ``router.Use``).

    :ivar verifier: the port's verifier, with its tenants.
    """

    log = Logger()

    verifier: MultiTenantVerifier

    def authenticate(self, head: RequestHead) -> Token | Refusal:
        """The verified token, or the complete refusal to answer with."""
        head_only = head.method == b"HEAD"
        try:
            token = extract_token(head)
        except AuthorizationHeaderError as e:
            self.log.warn("auth failed", error=str(e))
            return unauthorized(str(e), head_only=head_only)
        tenant = (head.get(b"x-piko-tenant-id") or b"").decode("latin-1")
        try:
            return self.verifier.verify(token, tenant)
        except InvalidToken as e:
            self.log.warn("auth invalid token", error=str(e))
            return unauthorized("invalid token", head_only=head_only)
        except ExpiredToken as e:
            self.log.warn("auth expired token", error=str(e))
            return unauthorized("expired token", head_only=head_only)
        except UnknownTenant:
            self.log.warn("auth unknown tenant", tenant_id=tenant)
            return unauthorized("unknown tenant", head_only=head_only)
        except Exception:
            self.log.failure("unknown verification error")
            return internal_error

    def start(self) -> None:
        """Start background key refreshes (remote JWKS)."""
        self.verifier.start()

    def stop(self) -> None:
        """Stop background key refreshes."""
        self.verifier.stop()

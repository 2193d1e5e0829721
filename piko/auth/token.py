# -*- test-case-name: piko.test.auth.test_verifier -*-
"""
What a verified token grants, the errors verification ends in, and the
:class:`ITokenVerifier` seam the ports depend on.

The error classes map one to one onto Go's ``auth.ErrInvalidToken``,
``ErrExpiredToken`` and ``ErrUnknownTenant``: the HTTP layer answers each
with its own 401 body, and anything else with an empty 500.
"""

from __future__ import annotations

from fnmatch import fnmatchcase

from attrs import frozen
from zope.interface import Interface

from piko.config import ConfigError


class AuthError(Exception):
    """A token or tenant the server refuses; the message is Go's 401 ``error``."""


class InvalidToken(AuthError):
    """Bad signature, algorithm, audience, issuer, claims or encoding."""

    def __init__(self, detail: str = "invalid token") -> None:
        super().__init__(detail)
        self.detail = detail


class ExpiredToken(AuthError):
    """The token's ``exp`` has passed."""


class UnknownTenant(AuthError):
    """The ``x-piko-tenant-id`` names no configured tenant (or tenants require one)."""


class AuthConfigError(ConfigError):
    """
    Configured auth cannot be loaded (a bad PEM, an unreadable JWKS file).

    The server must refuse to start rather than run without the auth its
    operator asked for; the message names the port and the key.  It is a
    :class:`~piko.config.ConfigError`, so ``piko server`` prints it and exits 1.
    """


@frozen
class Token:
    """
    What a verified token grants.

    :ivar expiry: the ``exp`` claim as POSIX seconds, or ``None`` when the
        token never expires or the port disables disconnecting on expiry.
    :ivar endpoints: the ``piko.endpoints`` claim; ``None`` (missing or
        empty) allows every endpoint, as in Go.
    :ivar tenant_id: the tenant whose verifier accepted it, for logs only.
    :ivar owned: the endpoint patterns (ids or globs) its tenant owns, when the
        tenant is configured with ``endpoints`` (not in Go): only these are permitted.
    :ivar foreign: the patterns other tenants own: never permitted.
    """

    expiry: float | None = None
    endpoints: tuple[str, ...] | None = None
    tenant_id: str = ""
    owned: tuple[str, ...] | None = None
    foreign: tuple[str, ...] = ()

    def endpoint_permitted(self, endpoint_id: str) -> bool:
        """Whether the token may listen on or connect to ``endpoint_id``."""
        if self.endpoints is not None and endpoint_id not in self.endpoints:
            return False
        if self.owned is not None and not _matches(self.owned, endpoint_id):
            return False
        return not (self.foreign and _matches(self.foreign, endpoint_id))


def _matches(patterns: tuple[str, ...], endpoint_id: str) -> bool:
    return any(p == endpoint_id or fnmatchcase(endpoint_id, p) for p in patterns)


class ITokenVerifier(Interface):
    """Checks a bearer token for one port (or one tenant of it)."""

    def verify(token: str) -> Token:
        """
        Return what ``token`` grants, or raise :class:`AuthError` (Go's 401s);
        any other exception is answered with an empty 500.
        """

    def start() -> None:
        """Begin any background key refresh (a remote JWKS)."""

    def stop() -> None:
        """Stop the background key refresh."""

# -*- test-case-name: piko.test.auth -*-
"""
JWT authentication for the server's ports, as Go Piko v0.9.0 does it.

The verification core is sans-IO: :class:`JWTVerifier` checks a token
string against keys held in memory and a clock it is given.  Only the
remote JWKS source (:class:`RemoteJWKS`) does I/O, with treq on the reactor.
:mod:`piko.auth.http` turns request headers into a verified
:class:`Token` or one of Go's exact 401 responses.
"""

from piko.auth.http import (
    RequestAuthenticator,
    endpoint_not_permitted,
    extract_token,
)
from piko.auth.jwks import JWKSKeys, RemoteJWKS, parse_jwks
from piko.auth.load import load_port_authenticator, load_verifier
from piko.auth.token import (
    AuthConfigError,
    AuthError,
    ExpiredToken,
    InvalidToken,
    ITokenVerifier,
    Token,
    UnknownTenant,
)
from piko.auth.verifier import JWTVerifier, MultiTenantVerifier, StaticKeys

__all__ = [
    "AuthConfigError",
    "AuthError",
    "ExpiredToken",
    "ITokenVerifier",
    "InvalidToken",
    "JWKSKeys",
    "JWTVerifier",
    "MultiTenantVerifier",
    "RemoteJWKS",
    "RequestAuthenticator",
    "StaticKeys",
    "Token",
    "UnknownTenant",
    "endpoint_not_permitted",
    "extract_token",
    "load_port_authenticator",
    "load_verifier",
    "parse_jwks",
]

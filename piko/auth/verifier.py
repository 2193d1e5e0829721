# -*- test-case-name: piko.test.auth.test_verifier -*-
"""
The sans-IO JWT verifier: Go Piko's ``auth.JWTVerifier`` rules, checked in
memory against an injected clock.

Parsing follows golang-jwt v5 as Go Piko uses it: three unpadded base64url
segments; the signature is checked first, with a key chosen by the header's
``alg`` from the configured family only (HMAC secret for ``HS*``, RSA key
for ``RS*``, ECDSA key for ``ES*``), so ``none`` and algorithm confusion (an
``HS256`` token "signed" with the RSA public key) never verify; then the
claims: ``exp`` and ``nbf`` with no leeway, ``aud`` and ``iss`` only when
configured.  When several claims fail and one is ``exp``, Go reports
"expired", and so do we.

The signature is checked with PyJWT's algorithm objects directly rather than
``jwt.decode``: that keeps the key-per-algorithm choice ours, lets a clock be
injected, and avoids PyJWT's per-call short-key warnings (Go accepts any
HMAC secret length).

RSA keys shorter than :data:`MIN_RSA_BITS` are refused wherever a key is
loaded (:func:`weak_key_reason`): a static key stops the server at start, a
JWKS key is skipped with a warning.  Go is laxer: its ``crypto/rsa`` refuses
keys under 1024 bits only, and only when a token is checked (every RS* token
is answered 401 while the server runs on); 1024 to 2047 bits it accepts.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Mapping
from typing import Any, Protocol

from attrs import define, field
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from jwt.algorithms import Algorithm, ECAlgorithm, HMACAlgorithm, RSAAlgorithm
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from piko.auth.token import ExpiredToken, InvalidToken, ITokenVerifier, Token, UnknownTenant

#: The algorithms a static key of each kind allows, as Go's ``methods``.
HMAC_ALGORITHMS: Mapping[str, Algorithm] = {
    "HS256": HMACAlgorithm(HMACAlgorithm.SHA256),
    "HS384": HMACAlgorithm(HMACAlgorithm.SHA384),
    "HS512": HMACAlgorithm(HMACAlgorithm.SHA512),
}
RSA_ALGORITHMS: Mapping[str, Algorithm] = {
    "RS256": RSAAlgorithm(RSAAlgorithm.SHA256),
    "RS384": RSAAlgorithm(RSAAlgorithm.SHA384),
    "RS512": RSAAlgorithm(RSAAlgorithm.SHA512),
}
ECDSA_ALGORITHMS: Mapping[str, Algorithm] = {
    "ES256": ECAlgorithm(ECAlgorithm.SHA256),
    "ES384": ECAlgorithm(ECAlgorithm.SHA384),
    "ES512": ECAlgorithm(ECAlgorithm.SHA512),
}

#: The smallest RSA modulus, in bits, accepted for token signatures (NIST SP
#: 800-131A; a 512-bit modulus is factored in hours, so its tokens can be forged).
MIN_RSA_BITS = 2048


def weak_key_reason(key: object) -> str | None:
    """
    Why ``key`` is too weak to verify tokens with, or ``None`` when it is fine.

    Only RSA has a size to check: the ECDSA curves a key can be loaded with
    (P-256 and up) are all strong enough.
    """
    if isinstance(key, RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        return f"{key.key_size}-bit RSA key refused: at least {MIN_RSA_BITS} bits are required"
    return None


_B64URL = re.compile(r"\A[A-Za-z0-9_-]*\Z")


class IKeySource(Protocol):
    """Where a verifier finds the key for a token's header."""

    def key_for(self, alg: str, header: Mapping[str, Any]) -> tuple[Algorithm, Any]:
        """The algorithm object and key to check the signature with, or raise InvalidToken."""

    def start(self) -> None:
        """Begin background refresh, if any."""

    def stop(self) -> None:
        """End background refresh, if any."""


@define
class StaticKeys:
    """
    The configured HMAC secret, RSA and ECDSA public keys (any combination).

    Each key allows only its own family of algorithms: that allow-list is
    what stops ``alg: none`` and algorithm confusion.
    """

    hmac: bytes | None = None
    rsa: RSAPublicKey | None = None
    ecdsa: EllipticCurvePublicKey | None = None

    def allowed(self) -> tuple[str, ...]:
        """The algorithms these keys allow, in Go's order."""
        algs: list[str] = []
        if self.hmac:
            algs += HMAC_ALGORITHMS
        if self.rsa is not None:
            algs += RSA_ALGORITHMS
        if self.ecdsa is not None:
            algs += ECDSA_ALGORITHMS
        return tuple(algs)

    def key_for(self, alg: str, header: Mapping[str, Any]) -> tuple[Algorithm, Any]:
        if self.hmac and alg in HMAC_ALGORITHMS:
            return HMAC_ALGORITHMS[alg], self.hmac
        if self.rsa is not None and alg in RSA_ALGORITHMS:
            return RSA_ALGORITHMS[alg], self.rsa
        if self.ecdsa is not None and alg in ECDSA_ALGORITHMS:
            return ECDSA_ALGORITHMS[alg], self.ecdsa
        raise InvalidToken(f"signing method {alg} is invalid")

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


def _segment(segment: str) -> bytes:
    # golang-jwt v5 decodes with base64.RawURLEncoding: no padding, URL alphabet.
    if not _B64URL.match(segment) or len(segment) % 4 == 1:
        raise InvalidToken("token is malformed: illegal base64 data")
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError) as e:
        raise InvalidToken("token is malformed: illegal base64 data") from e


def _json_object(segment: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(_segment(segment))
    except (ValueError, RecursionError) as e:
        raise InvalidToken(f"token is malformed: could not JSON decode {what}") from e
    if not isinstance(value, dict):
        raise InvalidToken(f"token is malformed: {what} is not a JSON object")
    return value


def _numeric_date(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidToken(f"token has invalid claims: {name} is not a number")
    # Go's NumericDate truncates to whole seconds (jwt.TimePrecision).
    return float(math.floor(value))


def _string(claims: Mapping[str, Any], name: str) -> str | None:
    value = claims.get(name)
    if value is not None and not isinstance(value, str):
        raise InvalidToken(f"token has invalid claims: {name} is not a string")
    return value


def _audience(claims: Mapping[str, Any]) -> tuple[str, ...]:
    value = claims.get("aud")
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(a, str) for a in value):
        return tuple(value)
    raise InvalidToken("token has invalid claims: aud is not a string or list of strings")


def _endpoints(claims: Mapping[str, Any]) -> tuple[str, ...] | None:
    piko = claims.get("piko")
    if piko is None:
        return None
    if not isinstance(piko, dict):
        raise InvalidToken("token is malformed: piko claim is not an object")
    endpoints = piko.get("endpoints")
    if endpoints is None:
        return None
    if not isinstance(endpoints, list) or not all(isinstance(e, str) for e in endpoints):
        raise InvalidToken("token is malformed: piko.endpoints is not a list of strings")
    return tuple(endpoints) or None


@implementer(ITokenVerifier)
@define
class JWTVerifier:
    """
    Verifies bearer tokens for one port (or one tenant).

    :ivar keys: the static keys, or a JWKS source.
    :ivar clock: the time ``exp`` and ``nbf`` are checked against.
    :ivar audience: the required ``aud``, or ``""`` to ignore it.
    :ivar issuer: the required ``iss``, or ``""`` to ignore it.
    :ivar disable_disconnect_on_expiry: report no expiry on the token, so
        its session is not closed when it passes (the check at connect
        time still applies).
    """

    keys: IKeySource
    clock: IReactorTime
    audience: str = ""
    issuer: str = ""
    disable_disconnect_on_expiry: bool = False

    def verify(self, token: str) -> Token:
        """
        Check ``token`` and return what it grants.

        :raises InvalidToken: for anything wrong but the expiry.
        :raises ExpiredToken: when the signature is good and ``exp`` has passed.
        """
        parts = token.split(".")
        if len(parts) != 3:
            raise InvalidToken("token is malformed: token contains an invalid number of segments")
        header = _json_object(parts[0], "header")
        claims = _json_object(parts[1], "claims")
        signature = _segment(parts[2])
        alg = header.get("alg")
        if not isinstance(alg, str):
            raise InvalidToken("token is unverifiable: signing method (alg) is unavailable")
        algorithm, key = self.keys.key_for(alg, header)
        try:
            good = algorithm.verify(f"{parts[0]}.{parts[1]}".encode("ascii"), key, signature)
        except Exception as e:
            raise InvalidToken(f"token signature is invalid: {e}") from e
        if not good:
            raise InvalidToken("token signature is invalid")
        return self._claims(claims)

    def _claims(self, claims: Mapping[str, Any]) -> Token:
        exp = _numeric_date(claims, "exp")
        nbf = _numeric_date(claims, "nbf")
        _numeric_date(claims, "iat")
        issuer = _string(claims, "iss")
        _string(claims, "sub")
        _string(claims, "jti")
        audience = _audience(claims)
        endpoints = _endpoints(claims)

        now = self.clock.seconds()
        if exp is not None and not now < exp:
            raise ExpiredToken("token is expired")
        if nbf is not None and now < nbf:
            raise InvalidToken("token is not valid yet")
        if self.audience and self.audience not in audience:
            raise InvalidToken("token has invalid audience")
        if self.issuer and issuer != self.issuer:
            raise InvalidToken("token has invalid issuer")
        expiry = None if self.disable_disconnect_on_expiry else exp
        return Token(expiry=expiry, endpoints=endpoints)

    def start(self) -> None:
        """Start the key source's refresh (a remote JWKS)."""
        self.keys.start()

    def stop(self) -> None:
        """Stop the key source's refresh."""
        self.keys.stop()


@implementer(ITokenVerifier)
@define
class MultiTenantVerifier:
    """
    Go's ``MultiTenantVerifier``: ``x-piko-tenant-id`` picks a tenant's verifier.

    With tenants configured, a request without a tenant id is refused
    (``unknown tenant``); without tenants, any tenant id is refused (a Go
    quirk kept on the proxy and admin ports).  As in Go, tenants do not
    namespace endpoints unless they own some (``owners``, not in Go): a tenant
    that owns patterns may use only endpoints matching them, and no tenant may
    use an endpoint another one owns.

    :ivar default: the port's own verifier, or ``None`` when only tenants are configured.
    :ivar tenants: the tenants' verifiers by id.
    :ivar owners: the endpoint patterns each tenant owns (tenants owning none are absent).
    """

    default: ITokenVerifier | None
    tenants: dict[str, ITokenVerifier] = field(factory=dict)
    owners: dict[str, tuple[str, ...]] = field(factory=dict)

    def verify(self, token: str, tenant_id: str = "") -> Token:
        """Verify ``token`` with the verifier ``tenant_id`` selects."""
        if not tenant_id:
            if self.tenants or self.default is None:
                raise UnknownTenant("unknown tenant")
            return self.default.verify(token)
        verifier = self.tenants.get(tenant_id)
        if verifier is None:
            raise UnknownTenant("unknown tenant")
        verified = verifier.verify(token)
        if not self.owners:
            return Token(verified.expiry, verified.endpoints, tenant_id)
        foreign = tuple(p for t, ps in self.owners.items() if t != tenant_id for p in ps)
        return Token(
            verified.expiry, verified.endpoints, tenant_id, self.owners.get(tenant_id), foreign
        )

    def start(self) -> None:
        """Start every verifier's key refresh."""
        for verifier in self._all():
            verifier.start()

    def stop(self) -> None:
        """Stop every verifier's key refresh."""
        for verifier in self._all():
            verifier.stop()

    def _all(self) -> list[ITokenVerifier]:
        return ([self.default] if self.default is not None else []) + list(self.tenants.values())

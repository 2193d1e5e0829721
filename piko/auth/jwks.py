# -*- test-case-name: piko.test.auth.test_jwks -*-
"""
JSON Web Key Sets: parsed in memory (:func:`parse_jwks`), read once from a
``file://`` path, or fetched with treq from ``http(s)://`` and refreshed on
the injected clock (:class:`RemoteJWKS`), never blocking the reactor.

Key choice mirrors keyfunc v3 / jwkset as Go Piko uses them: the token must
name a ``kid`` found in the set; a key with a ``use`` other than ``sig`` is
not used; a key's ``alg``, when it has one, must equal the token's; and the
token's algorithm must belong to the key's type (``HS*`` for ``oct``,
``RS*``/``PS*`` for ``RSA``, ``ES*`` for ``EC``, ``EdDSA`` for ``OKP``), which
is what keeps ``none`` and HMAC-with-a-public-key from verifying.  An RSA
key under 2048 bits is not used (Go's keyfunc keeps one of 1024 bits or
more): :func:`parse_jwks` leaves it out and says why in
:attr:`JWKSKeys.skipped`, which the loaders log as warnings, and a token
naming it is refused with that reason.

A remote set is fetched at start (a failed first fetch does not stop the
server, as in Go), every ``cache_ttl`` after, and at most once per
:data:`UNKNOWN_KID_REFRESH` when a token names an unknown ``kid``.  Go's
keyfunc waits for that refresh inside the request; we cannot block, so that
token is refused and the refreshed set serves the next one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from attrs import define, field, frozen
from jwt import PyJWK
from jwt.algorithms import Algorithm, get_default_algorithms
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from piko.auth.token import InvalidToken
from piko.auth.verifier import weak_key_reason

#: keyfunc's default refresh interval, used when ``cache_ttl`` is 0.
DEFAULT_CACHE_TTL = 3600.0
#: keyfunc's rate limit on refreshes caused by an unknown ``kid``.
UNKNOWN_KID_REFRESH = 300.0
#: The HTTP timeout when ``jwks.timeout`` is 0.
DEFAULT_TIMEOUT = 10.0

_FAMILY = {
    "oct": ("HS256", "HS384", "HS512"),
    "RSA": ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512"),
    "EC": ("ES256", "ES384", "ES512", "ES256K"),
    "OKP": ("EdDSA",),
}


class JWKSError(Exception):
    """A JWK Set that cannot be parsed."""


class UnknownKid(InvalidToken):
    """The token's ``kid`` is not in the set (which may be stale)."""


@frozen
class JWK:
    """One usable verification key of a set."""

    kty: str
    alg: str | None
    key: Any


@frozen
class JWKSKeys:
    """
    A parsed JWK Set, keyed by ``kid``.

    :ivar keys: the usable keys by ``kid``.
    :ivar skipped: why each refused key (an RSA key under 2048 bits) was
        left out, by ``kid``.
    """

    keys: Mapping[str, JWK] = field(factory=dict)
    skipped: Mapping[str, str] = field(factory=dict)

    def key_for(self, alg: str, header: Mapping[str, Any]) -> tuple[Algorithm, Any]:
        """The algorithm and key for a token, or raise :class:`InvalidToken`."""
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise InvalidToken("could not find kid in JWT header")
        jwk = self.keys.get(kid)
        if jwk is None:
            if kid in self.skipped:
                raise InvalidToken(f"key {kid} not used: {self.skipped[kid]}")
            raise UnknownKid(f"key not found: kid {kid}")
        if jwk.alg and jwk.alg != alg:
            raise InvalidToken(f"JWK alg {jwk.alg} does not match token alg {alg}")
        if alg not in _FAMILY.get(jwk.kty, ()):
            raise InvalidToken(f"signing method {alg} does not fit key type {jwk.kty}")
        algorithm = get_default_algorithms().get(alg)
        if algorithm is None:
            raise InvalidToken(f"signing method {alg} is unavailable")
        return algorithm, jwk.key

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


def parse_jwks(data: bytes) -> JWKSKeys:
    """
    Parse a JWK Set document, keeping the keys usable for signatures.

    Entries that are not signature keys or do not parse are ignored, as
    keyfunc does; a weak key is left out and recorded in
    :attr:`JWKSKeys.skipped`.

    :raises JWKSError: when it is not a JSON object with a ``keys`` list.
    """
    try:
        document = json.loads(data)
    except (ValueError, RecursionError) as e:
        raise JWKSError(f"invalid JWK Set JSON: {e}") from e
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise JWKSError("invalid JWK Set: no keys list")
    keys: dict[str, JWK] = {}
    skipped: dict[str, str] = {}
    for entry in document["keys"]:
        if not isinstance(entry, dict):
            continue
        kid, use, alg = entry.get("kid"), entry.get("use", ""), entry.get("alg")
        if not isinstance(kid, str) or use not in ("", "sig"):
            continue
        if alg is not None and not isinstance(alg, str):
            continue
        try:
            parsed = PyJWK(entry)
        except Exception:
            continue
        weak = weak_key_reason(parsed.key)
        if weak is not None:
            skipped[kid] = weak
            keys.pop(kid, None)
            continue
        skipped.pop(kid, None)
        keys[kid] = JWK(entry["kty"], alg or None, parsed.key)
    return JWKSKeys(keys, skipped)


@define
class RemoteJWKS:
    """
    A JWK Set fetched over HTTP(S) with treq and refreshed on a clock.

    :ivar url: the ``http(s)://`` endpoint.
    :ivar clock: schedules the refreshes.
    :ivar http_client: a treq-like client (``treq`` itself, or
        :class:`treq.testing.StubTreq` in tests).
    :ivar cache_ttl: seconds between refreshes (0 means one hour, as keyfunc).
    :ivar timeout: the HTTP timeout in seconds (0 means ten seconds).
    """

    log = Logger()

    url: str
    clock: IReactorTime
    http_client: Any
    cache_ttl: float = 0.0
    timeout: float = 0.0
    current: JWKSKeys = field(factory=JWKSKeys)
    _timer: IDelayedCall | None = field(default=None, init=False)
    _last_fetch: float | None = field(default=None, init=False)
    _in_flight: Deferred[None] | None = field(default=None, init=False)
    _running: bool = field(default=False, init=False)

    def key_for(self, alg: str, header: Mapping[str, Any]) -> tuple[Algorithm, Any]:
        """Look the ``kid`` up in the current set; an unknown one asks for a refresh."""
        try:
            return self.current.key_for(alg, header)
        except UnknownKid:
            if self._running and (
                self._last_fetch is None
                or self.clock.seconds() - self._last_fetch >= UNKNOWN_KID_REFRESH
            ):
                self.refresh()
            raise

    def start(self) -> None:
        """Fetch now, then every ``cache_ttl``."""
        if self._running:
            return
        self._running = True
        self.refresh()

    def stop(self) -> None:
        """Stop refreshing; a fetch in flight is cancelled."""
        self._running = False
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self._in_flight is not None:
            self._in_flight.cancel()

    def refresh(self) -> Deferred[None]:
        """Fetch the set now (unless a fetch is already running) and reschedule."""
        if self._in_flight is not None:
            return self._in_flight
        self._last_fetch = self.clock.seconds()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        d = Deferred.fromCoroutine(self._fetch())
        self._in_flight = d
        d.addErrback(self._failed)
        d.addBoth(self._done)
        return d

    async def _fetch(self) -> None:
        response = await self.http_client.get(
            self.url,
            timeout=self.timeout or DEFAULT_TIMEOUT,
            headers={b"Accept": [b"application/json"]},
        )
        body = await response.content()
        if response.code != 200:
            raise JWKSError(f"unexpected status {response.code}")
        self.current = parse_jwks(body)
        for kid, reason in self.current.skipped.items():
            self.log.warn("jwks: skipping key", url=self.url, kid=kid, reason=reason)
        self.log.info("jwks: loaded keys", count=len(self.current.keys), url=self.url)

    def _failed(self, failure: Failure) -> None:
        self.log.warn("jwks: failed to fetch", url=self.url, error=failure.getErrorMessage())

    def _done(self, _: object) -> None:
        self._in_flight = None
        if self._running:
            self._timer = self.clock.callLater(self.cache_ttl or DEFAULT_CACHE_TTL, self.refresh)

"""
Tests for :mod:`piko.auth.jwks`: kid lookup, ``file://`` sets, and a remote
set fetched with treq's StubTreq and refreshed on a Clock.
"""

from __future__ import annotations

import json
import os
from typing import Any, cast

from jwt.algorithms import ECAlgorithm, HMACAlgorithm, RSAAlgorithm
from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, LogEvent, LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import Request

from piko.auth import AuthConfigError, InvalidToken, JWTVerifier, load_verifier, parse_jwks
from piko.auth.jwks import DEFAULT_CACHE_TTL, UNKNOWN_KID_REFRESH
from piko.config import AuthConfig, JWKSConfig
from piko.test.auth.keys import (
    EC_KEYS,
    HMAC_SECRET,
    OTHER_RSA_KEY,
    RSA_1024_KEY,
    RSA_KEY,
    RSA_PEM,
    WEAK_RSA_KEY,
    hmac_token,
    sign,
    sign_weak,
    unsigned_token,
)


def jwk(key: Any, kid: str, **extra: Any) -> dict[str, Any]:
    if isinstance(key, str):
        entry = HMACAlgorithm.to_jwk(key.encode(), as_dict=True)
    elif key in EC_KEYS.values():
        entry = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    else:
        entry = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return {**entry, "kid": kid, **extra}


def capture_log(test: SynchronousTestCase) -> list[LogEvent]:
    """The log events emitted until ``test`` ends."""
    events: list[LogEvent] = []
    observer = cast(ILogObserver, events.append)
    globalLogPublisher.addObserver(observer)
    test.addCleanup(globalLogPublisher.removeObserver, observer)
    return events


def jwks(*keys: dict[str, Any]) -> bytes:
    return json.dumps({"keys": list(keys)}).encode()


class KeySetTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.keys = parse_jwks(
            jwks(
                jwk(RSA_KEY, "rsa"),
                jwk(EC_KEYS["ES384"], "ec"),
                jwk(HMAC_SECRET, "oct"),
                jwk(OTHER_RSA_KEY, "rsa-rs512", alg="RS512"),
                jwk(OTHER_RSA_KEY, "enc", use="enc"),
            )
        )
        from piko.auth import JWTVerifier

        self.verifier = JWTVerifier(self.keys, Clock())

    def test_kid_lookup(self) -> None:
        """Each token verifies with the key its ``kid`` names, any alg of the key's type."""
        for alg in ("RS256", "RS384", "RS512"):
            self.verifier.verify(sign({}, alg, kid="rsa"))
        self.verifier.verify(sign({}, "ES384", kid="ec"))
        self.verifier.verify(sign({}, "HS256", kid="oct"))

    def test_unknown_or_missing_kid(self) -> None:
        """A ``kid`` not in the set, or none at all, is invalid."""
        self.assertRaises(InvalidToken, self.verifier.verify, sign({}, "RS256", kid="nope"))
        self.assertRaises(InvalidToken, self.verifier.verify, sign({}, "RS256"))

    def test_wrong_key_for_kid(self) -> None:
        """A token signed by another key than its ``kid``'s is invalid."""
        token = sign({}, "RS256", key=OTHER_RSA_KEY, kid="rsa")
        self.assertRaises(InvalidToken, self.verifier.verify, token)

    def test_jwk_alg_must_match(self) -> None:
        """A key with an ``alg`` only verifies tokens of that alg."""
        self.verifier.verify(sign({}, "RS512", key=OTHER_RSA_KEY, kid="rsa-rs512"))
        token = sign({}, "RS256", key=OTHER_RSA_KEY, kid="rsa-rs512")
        self.assertRaises(InvalidToken, self.verifier.verify, token)

    def test_not_for_signatures(self) -> None:
        """A key with ``use: enc`` is not used."""
        token = sign({}, "RS256", key=OTHER_RSA_KEY, kid="enc")
        self.assertRaises(InvalidToken, self.verifier.verify, token)

    def test_none_and_confusion(self) -> None:
        """``alg: none`` and an HS token signed with the RSA public key are invalid."""
        self.assertRaises(InvalidToken, self.verifier.verify, unsigned_token({}))
        token = hmac_token({}, RSA_PEM.encode(), kid="rsa")
        self.assertRaises(InvalidToken, self.verifier.verify, token)


class WeakKeyTests(SynchronousTestCase):
    def test_weak_rsa_keys_skipped(self) -> None:
        """
        RSA keys under 2048 bits are left out of the set, with the reason, and a
        token naming one is refused saying why; the set's good keys still verify.
        """
        keys = parse_jwks(
            jwks(jwk(WEAK_RSA_KEY, "weak"), jwk(RSA_1024_KEY, "k1024"), jwk(RSA_KEY, "good"))
        )
        self.assertEqual(set(keys.keys), {"good"})
        self.assertEqual(
            dict(keys.skipped),
            {
                "weak": "512-bit RSA key refused: at least 2048 bits are required",
                "k1024": "1024-bit RSA key refused: at least 2048 bits are required",
            },
        )
        verifier = JWTVerifier(keys, Clock())
        error = self.assertRaises(
            InvalidToken, verifier.verify, sign_weak({}, WEAK_RSA_KEY, kid="weak")
        )
        self.assertIn("key weak not used: 512-bit RSA key refused", str(error))
        self.assertRaises(InvalidToken, verifier.verify, sign_weak({}, RSA_1024_KEY, kid="k1024"))
        verifier.verify(sign({}, "RS256", kid="good"))

    def test_later_entry_wins(self) -> None:
        """As for any repeated kid, the last entry counts, weak or not."""
        keys = parse_jwks(jwks(jwk(WEAK_RSA_KEY, "k"), jwk(RSA_KEY, "k")))
        self.assertEqual((set(keys.keys), dict(keys.skipped)), ({"k"}, {}))
        keys = parse_jwks(jwks(jwk(RSA_KEY, "k"), jwk(WEAK_RSA_KEY, "k")))
        self.assertEqual(set(keys.keys), set())
        self.assertEqual(set(keys.skipped), {"k"})


class FileTests(SynchronousTestCase):
    def config(self, path: str) -> AuthConfig:
        return AuthConfig(jwks=JWKSConfig(endpoint=f"file://{path}"))

    def test_file(self) -> None:
        """A ``file://`` set is read at load and verifies tokens by kid."""
        path = os.path.abspath(self.mktemp())
        with open(path, "wb") as f:
            f.write(jwks(jwk(RSA_KEY, "k1")))
        verifier = load_verifier(self.config(path), Clock())
        assert verifier is not None
        verifier.verify(sign({}, "RS256", kid="k1"))

    def test_missing_or_bad_file(self) -> None:
        """A missing file, bad JSON or a set without usable keys refuses to load."""
        path = os.path.abspath(self.mktemp())
        error = self.assertRaises(AuthConfigError, load_verifier, self.config(path), Clock())
        self.assertIn("failed to read local JWKS file", str(error))
        for content in (b"{", b"[]", jwks({"kty": "nope", "kid": "x"})):
            with open(path, "wb") as f:
                f.write(content)
            self.assertRaises(AuthConfigError, load_verifier, self.config(path), Clock())

    def test_weak_keys_in_file(self) -> None:
        """
        A weak key in a ``file://`` set is skipped with a warning naming it; a set
        holding only weak keys refuses to load, saying why.
        """
        path = os.path.abspath(self.mktemp())
        with open(path, "wb") as f:
            f.write(jwks(jwk(WEAK_RSA_KEY, "weak"), jwk(RSA_KEY, "good")))
        events = capture_log(self)
        verifier = load_verifier(self.config(path), Clock(), where="config: proxy: auth")
        assert verifier is not None
        verifier.verify(sign({}, "RS256", kid="good"))
        warnings = [e for e in events if e["log_level"] == LogLevel.warn]
        self.assertEqual(
            [(formatEvent(e), e["where"], e["path"], e["kid"], e["reason"]) for e in warnings],
            [
                (
                    "jwks: skipping key",
                    "config: proxy: auth",
                    path,
                    "weak",
                    "512-bit RSA key refused: at least 2048 bits are required",
                )
            ],
        )
        with open(path, "wb") as f:
            f.write(jwks(jwk(WEAK_RSA_KEY, "weak")))
        error = self.assertRaises(AuthConfigError, load_verifier, self.config(path), Clock())
        self.assertIn(
            "no usable signing keys; key weak: 512-bit RSA key refused: "
            "at least 2048 bits are required",
            str(error),
        )


class JWKSResource(Resource):
    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.body = jwks()
        self.status = 200
        self.requests = 0

    def render_GET(self, request: Request) -> bytes:
        self.requests += 1
        request.setResponseCode(self.status)
        return self.body


class RemoteTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.resource = JWKSResource()
        self.resource.body = jwks(jwk(RSA_KEY, "k1"))
        self.treq = StubTreq(self.resource)
        config = AuthConfig(
            jwks=JWKSConfig(endpoint="https://issuer.example/jwks.json", cache_ttl=60.0)
        )
        verifier = load_verifier(config, self.clock, http_client=self.treq)
        assert verifier is not None
        self.verifier = verifier
        self.verifier.start()
        self.treq.flush()
        self.addCleanup(self.verifier.stop)

    def test_fetched_at_start(self) -> None:
        """The set is fetched at start and verifies tokens."""
        self.assertEqual(self.resource.requests, 1)
        self.verifier.verify(sign({}, "RS256", kid="k1"))

    def test_refresh_every_cache_ttl(self) -> None:
        """A key added to the remote set verifies after ``cache_ttl``."""
        self.resource.body = jwks(jwk(RSA_KEY, "k1"), jwk(OTHER_RSA_KEY, "k2"))
        token = sign({}, "RS256", key=OTHER_RSA_KEY, kid="k2")
        self.assertRaises(InvalidToken, self.verifier.verify, token)
        self.assertEqual(self.resource.requests, 1)  # rate-limited: fetched 0 s ago
        self.clock.advance(60)
        self.treq.flush()
        self.assertEqual(self.resource.requests, 2)
        self.verifier.verify(token)

    def test_unknown_kid_refresh_rate_limited(self) -> None:
        """An unknown kid refreshes at most once per five minutes; that token is refused."""
        resource = JWKSResource()
        resource.body = jwks(jwk(RSA_KEY, "k1"))
        stub = StubTreq(resource)
        config = AuthConfig(jwks=JWKSConfig(endpoint="http://issuer.example/jwks"))
        verifier = load_verifier(config, self.clock, http_client=stub)
        assert verifier is not None
        verifier.start()
        self.addCleanup(verifier.stop)
        stub.flush()
        resource.body = jwks(jwk(RSA_KEY, "k1"), jwk(OTHER_RSA_KEY, "k2"))
        token = sign({}, "RS256", key=OTHER_RSA_KEY, kid="k2")
        self.clock.advance(UNKNOWN_KID_REFRESH - 1)
        self.assertRaises(InvalidToken, verifier.verify, token)
        stub.flush()
        self.assertEqual(resource.requests, 1)
        self.clock.advance(1)
        self.assertRaises(InvalidToken, verifier.verify, token)
        stub.flush()
        self.assertEqual(resource.requests, 2)
        verifier.verify(token)
        self.assertRaises(InvalidToken, verifier.verify, sign({}, "RS256", kid="k3"))
        stub.flush()
        self.assertEqual(resource.requests, 2)
        self.clock.advance(DEFAULT_CACHE_TTL)
        stub.flush()
        self.assertEqual(resource.requests, 3)

    def test_failed_fetch_keeps_keys(self) -> None:
        """A failed refresh keeps the last good set and tries again after ``cache_ttl``."""
        self.resource.status = 500
        self.clock.advance(60)
        self.treq.flush()
        self.assertEqual(self.resource.requests, 2)
        self.verifier.verify(sign({}, "RS256", kid="k1"))
        self.resource.status = 200
        self.resource.body = jwks(jwk(OTHER_RSA_KEY, "k2"))
        self.clock.advance(60)
        self.treq.flush()
        self.assertRaises(InvalidToken, self.verifier.verify, sign({}, "RS256", kid="k1"))

    def test_weak_key_skipped_with_warning(self) -> None:
        """A weak key in a fetched set is skipped, with a warning naming the URL and kid."""
        events = capture_log(self)
        self.resource.body = jwks(jwk(RSA_KEY, "k1"), jwk(WEAK_RSA_KEY, "weak"))
        self.clock.advance(60)
        self.treq.flush()
        self.verifier.verify(sign({}, "RS256", kid="k1"))
        token = sign_weak({}, WEAK_RSA_KEY, kid="weak")
        self.assertRaises(InvalidToken, self.verifier.verify, token)
        warnings = [e for e in events if e["log_level"] == LogLevel.warn]
        self.assertEqual(
            [(formatEvent(e), e["url"], e["kid"], e["reason"]) for e in warnings],
            [
                (
                    "jwks: skipping key",
                    "https://issuer.example/jwks.json",
                    "weak",
                    "512-bit RSA key refused: at least 2048 bits are required",
                )
            ],
        )
        self.assertEqual(self.resource.requests, 2)  # a skipped kid is not "unknown"

    def test_stop(self) -> None:
        """After stop nothing more is fetched."""
        self.verifier.stop()
        self.clock.advance(3600)
        self.treq.flush()
        self.assertEqual(self.resource.requests, 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

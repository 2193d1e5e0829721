"""
Tokens made the way Go Piko's documentation shows work unchanged.

Go Piko's users mint JWTs with their usual tooling: a standard header
(``alg``/``typ``), registered claims (``exp``, ``iat``, ``iss``, ``aud``) and
the custom ``piko`` claim ``{"endpoints": [...]}``.  Such a token, signed
with HS256, RS256 or ES256 by an independent library (PyJWT here, as a Go
user's ``golang-jwt`` would), must be accepted with the same endpoint grant.
"""

from __future__ import annotations

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from piko.auth import InvalidToken, load_verifier
from piko.config import AuthConfig

NOW = 1_790_000_000
ISSUER = "https://auth.example.com"
CLAIMS = {
    "iss": ISSUER,
    "aud": "piko",
    "iat": NOW - 60,
    "exp": NOW + 3600,
    "piko": {"endpoints": ["my-endpoint", "other-endpoint"]},
}


def public_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


class GoDocumentedTokenTests(SynchronousTestCase):
    def check(self, config: AuthConfig, token: str) -> None:
        clock = Clock()
        clock.advance(NOW)
        verifier = load_verifier(config, clock)
        granted = verifier.verify(token)
        self.assertEqual(granted.expiry, NOW + 3600)
        self.assertTrue(granted.endpoint_permitted("my-endpoint"))
        self.assertFalse(granted.endpoint_permitted("not-mine"))

    def test_hs256(self) -> None:
        """An HS256 token with Go's documented claims is accepted with its endpoint grant."""
        token = jwt.encode(CLAIMS, "a-32-byte-long-secret-for-hs256!", algorithm="HS256")
        self.check(
            AuthConfig(
                hmac_secret_key="a-32-byte-long-secret-for-hs256!",
                audience="piko",
                issuer=ISSUER,
            ),
            token,
        )

    def test_rs256(self) -> None:
        """The same claims signed RS256 verify against the PEM public key, as Go configures it."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        token = jwt.encode(CLAIMS, key, algorithm="RS256")
        self.check(AuthConfig(rsa_public_key=public_pem(key)), token)

    def test_es256(self) -> None:
        """The same claims signed ES256 verify against the PEM public key."""
        key = ec.generate_private_key(ec.SECP256R1())
        token = jwt.encode(CLAIMS, key, algorithm="ES256")
        self.check(AuthConfig(ecdsa_public_key=public_pem(key)), token)

    def test_wrong_audience_refused(self) -> None:
        """With an audience configured, a token for another audience is invalid, as in Go."""
        clock = Clock()
        clock.advance(NOW)
        verifier = load_verifier(
            AuthConfig(hmac_secret_key="another-32-byte-long-secret-key!", audience="other"), clock
        )
        self.assertRaises(
            InvalidToken,
            verifier.verify,
            jwt.encode(CLAIMS, "another-32-byte-long-secret-key!", algorithm="HS256"),
        )

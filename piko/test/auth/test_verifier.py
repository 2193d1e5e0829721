"""
Tests for :mod:`piko.auth.verifier`: Go Piko's JWT rules, on a Clock.
"""

from __future__ import annotations

from typing import Any

from attrs import evolve
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from piko.auth import (
    AuthConfigError,
    ExpiredToken,
    InvalidToken,
    ITokenVerifier,
    JWTVerifier,
    MultiTenantVerifier,
    Token,
    UnknownTenant,
    load_verifier,
)
from piko.auth.load import load_port_authenticator
from piko.config import AuthConfig, JWKSConfig, ServerConfig, TenantConfig
from piko.test.auth.keys import (
    EC_KEYS,
    HMAC_SECRET,
    OTHER_RSA_KEY,
    RSA_1024_KEY,
    RSA_PEM,
    WEAK_RSA_KEY,
    hmac_token,
    public_pem,
    sign,
    unsigned_token,
)

NOW = 1_700_000_000


def make(clock: Clock | None = None, **config: Any) -> JWTVerifier:
    if clock is None:
        clock = Clock()
        clock.advance(NOW)
    verifier = load_verifier(AuthConfig(**config), clock)
    assert verifier is not None
    return verifier


ALL_KEYS: dict[str, Any] = {
    "hmac_secret_key": HMAC_SECRET,
    "rsa_public_key": RSA_PEM,
}


class AlgorithmTests(SynchronousTestCase):
    def test_interface(self) -> None:
        """The verifiers provide ITokenVerifier."""
        verifyObject(ITokenVerifier, make(hmac_secret_key=HMAC_SECRET))
        verifyObject(ITokenVerifier, MultiTenantVerifier(None))

    def test_hmac(self) -> None:
        """HS256/384/512 tokens verify with the HMAC secret."""
        verifier = make(hmac_secret_key=HMAC_SECRET)
        for alg in ("HS256", "HS384", "HS512"):
            self.assertEqual(verifier.verify(sign({}, alg)), Token())

    def test_rsa(self) -> None:
        """RS256/384/512 tokens verify with the RSA public key."""
        verifier = make(rsa_public_key=RSA_PEM)
        for alg in ("RS256", "RS384", "RS512"):
            self.assertEqual(verifier.verify(sign({}, alg)), Token())

    def test_ecdsa(self) -> None:
        """ES256/384/512 tokens verify with an ECDSA public key of their curve."""
        for alg, key in EC_KEYS.items():
            verifier = make(ecdsa_public_key=public_pem(key))
            self.assertEqual(verifier.verify(sign({}, alg)), Token())

    def test_wrong_key(self) -> None:
        """A token signed by another key of the right family is invalid."""
        self.assertRaises(InvalidToken, make(hmac_secret_key="other").verify, sign({}, "HS256"))
        self.assertRaises(
            InvalidToken,
            make(rsa_public_key=RSA_PEM).verify,
            sign({}, "RS256", key=OTHER_RSA_KEY),
        )
        self.assertRaises(
            InvalidToken,
            make(ecdsa_public_key=public_pem(EC_KEYS["ES384"])).verify,
            sign({}, "ES256"),
        )

    def test_family_not_configured(self) -> None:
        """Each key allows only its family: an RS token with only an HMAC key is invalid."""
        self.assertRaises(InvalidToken, make(hmac_secret_key=HMAC_SECRET).verify, sign({}, "RS256"))
        self.assertRaises(InvalidToken, make(rsa_public_key=RSA_PEM).verify, sign({}, "HS256"))
        self.assertRaises(InvalidToken, make(rsa_public_key=RSA_PEM).verify, sign({}, "ES256"))

    def test_any_combination(self) -> None:
        """With several keys each family verifies with its own key."""
        verifier = make(
            hmac_secret_key=HMAC_SECRET,
            rsa_public_key=RSA_PEM,
            ecdsa_public_key=public_pem(EC_KEYS["ES256"]),
        )
        for alg in ("HS512", "RS384", "ES256"):
            verifier.verify(sign({}, alg))

    def test_alg_none(self) -> None:
        """An unsigned ``alg: none`` token is invalid whatever keys are configured."""
        configs: list[dict[str, Any]] = [{"hmac_secret_key": HMAC_SECRET}, ALL_KEYS]
        for config in configs:
            self.assertRaises(InvalidToken, make(**config).verify, unsigned_token({}))

    def test_confusion_hmac_with_rsa_public_key(self) -> None:
        """An HS256 token whose secret is the RSA public key PEM is invalid."""
        token = hmac_token({}, RSA_PEM.encode())
        self.assertRaises(InvalidToken, make(rsa_public_key=RSA_PEM).verify, token)
        self.assertRaises(InvalidToken, make(**ALL_KEYS).verify, token)

    def test_malformed(self) -> None:
        """Garbage, wrong segment counts, padded or non-object segments are invalid."""
        verifier = make(hmac_secret_key=HMAC_SECRET)
        good = sign({})
        for token in ("", "abc", "a.b", good + ".x", good + "=", "e30.e30.", "W10.e30.AA"):
            self.assertRaises(InvalidToken, verifier.verify, token)


class ClaimsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)

    def test_expiry(self) -> None:
        """``exp`` is valid strictly before it, expired from it on, with no leeway."""
        verifier = make(self.clock, hmac_secret_key=HMAC_SECRET)
        token = sign({"exp": NOW + 10})
        self.assertEqual(verifier.verify(token).expiry, NOW + 10)
        self.clock.advance(9.999)
        verifier.verify(token)
        self.clock.advance(0.001)
        self.assertRaises(ExpiredToken, verifier.verify, token)

    def test_expired_wins_over_other_claims(self) -> None:
        """An expired token with a wrong audience is expired, as golang-jwt joins errors."""
        verifier = make(self.clock, hmac_secret_key=HMAC_SECRET, audience="a")
        self.assertRaises(ExpiredToken, verifier.verify, sign({"exp": NOW - 1, "aud": "b"}))

    def test_bad_signature_not_reported_expired(self) -> None:
        """An expired token with a bad signature is invalid, not expired."""
        verifier = make(self.clock, hmac_secret_key="other")
        self.assertRaises(InvalidToken, verifier.verify, sign({"exp": NOW - 1}))

    def test_not_before(self) -> None:
        """A token before its ``nbf`` is invalid; valid from ``nbf`` on."""
        verifier = make(self.clock, hmac_secret_key=HMAC_SECRET)
        token = sign({"nbf": NOW + 5})
        self.assertRaises(InvalidToken, verifier.verify, token)
        self.clock.advance(5)
        verifier.verify(token)

    def test_no_expiry(self) -> None:
        """A token without ``exp`` never expires."""
        self.assertIsNone(make(hmac_secret_key=HMAC_SECRET).verify(sign({})).expiry)

    def test_disable_disconnect_on_expiry(self) -> None:
        """The expiry is still checked but not reported when disconnecting is disabled."""
        verifier = make(self.clock, hmac_secret_key=HMAC_SECRET, disable_disconnect_on_expiry=True)
        self.assertIsNone(verifier.verify(sign({"exp": NOW + 10})).expiry)
        self.assertRaises(ExpiredToken, verifier.verify, sign({"exp": NOW}))

    def test_bad_claim_types(self) -> None:
        """Claims of the wrong JSON type are invalid (Go fails to unmarshal them)."""
        verifier = make(hmac_secret_key=HMAC_SECRET)
        bad: list[dict[str, Any]] = [
            {"exp": "soon"},
            {"nbf": True},
            {"iss": 1},
            {"aud": 1},
            {"aud": ["a", 1]},
            {"piko": []},
            {"piko": {"endpoints": "a"}},
        ]
        for claims in bad:
            token = hmac_token(claims, HMAC_SECRET.encode())
            self.assertRaises(InvalidToken, verifier.verify, token)

    def test_audience(self) -> None:
        """A configured audience must be in ``aud`` (string or list); else ``aud`` is ignored."""
        verifier = make(hmac_secret_key=HMAC_SECRET, audience="piko")
        verifier.verify(sign({"aud": "piko"}))
        verifier.verify(sign({"aud": ["x", "piko"]}))
        self.assertRaises(InvalidToken, verifier.verify, sign({"aud": "other"}))
        self.assertRaises(InvalidToken, verifier.verify, sign({}))
        make(hmac_secret_key=HMAC_SECRET).verify(sign({"aud": "anything"}))

    def test_issuer(self) -> None:
        """A configured issuer must equal ``iss``; unconfigured, ``iss`` is ignored."""
        verifier = make(hmac_secret_key=HMAC_SECRET, issuer="me")
        verifier.verify(sign({"iss": "me"}))
        self.assertRaises(InvalidToken, verifier.verify, sign({"iss": "you"}))
        self.assertRaises(InvalidToken, verifier.verify, sign({}))
        make(hmac_secret_key=HMAC_SECRET).verify(sign({"iss": "anyone"}))

    def test_endpoints(self) -> None:
        """``piko.endpoints`` restricts endpoints; missing or empty allows all."""
        verifier = make(hmac_secret_key=HMAC_SECRET)
        token = verifier.verify(sign({"piko": {"endpoints": ["a", "b"]}}))
        self.assertEqual(token.endpoints, ("a", "b"))
        self.assertTrue(token.endpoint_permitted("a"))
        self.assertFalse(token.endpoint_permitted("c"))
        allowing: list[dict[str, Any]] = [
            {},
            {"piko": {}},
            {"piko": {"endpoints": []}},
            {"piko": None},
        ]
        for claims in allowing:
            self.assertTrue(verifier.verify(sign(claims)).endpoint_permitted("c"))


class TenantTests(SynchronousTestCase):
    def test_tenants(self) -> None:
        """``x-piko-tenant-id`` picks the tenant's verifier; without it tenants refuse."""
        tenant = make(hmac_secret_key="t" * 64)
        verifier = MultiTenantVerifier(make(hmac_secret_key=HMAC_SECRET), {"t1": tenant})
        token = sign({}, key="t" * 64)
        self.assertEqual(verifier.verify(token, "t1"), Token(tenant_id="t1"))
        self.assertRaises(UnknownTenant, verifier.verify, token, "")
        self.assertRaises(UnknownTenant, verifier.verify, token, "t2")
        self.assertRaises(InvalidToken, verifier.verify, sign({}), "t1")

    def test_no_tenants(self) -> None:
        """Without tenants, the default verifies and any tenant id is unknown (Go quirk)."""
        verifier = MultiTenantVerifier(make(hmac_secret_key=HMAC_SECRET))
        verifier.verify(sign({}))
        self.assertRaises(UnknownTenant, verifier.verify, sign({}), "t1")


class LoadTests(SynchronousTestCase):
    def test_disabled(self) -> None:
        """No key, no verifier."""
        self.assertIsNone(load_verifier(AuthConfig(audience="a"), Clock()))

    def test_bad_pem(self) -> None:
        """An unparsable key refuses to load, naming the key."""
        for field, name in (("rsa_public_key", "rsa"), ("ecdsa_public_key", "ecdsa")):
            for pem in (
                "not a pem",
                "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
            ):
                error = self.assertRaises(
                    AuthConfigError,
                    load_verifier,
                    AuthConfig(**{field: pem}),  # type: ignore[arg-type]
                    Clock(),
                    where="config: proxy: auth",
                )
                self.assertIn(f"config: proxy: auth: parse {name} public key", str(error))

    def test_wrong_key_type(self) -> None:
        """An EC key given as the RSA key (and the reverse) refuses to load."""
        ec_pem = public_pem(EC_KEYS["ES256"])
        error = self.assertRaises(
            AuthConfigError, load_verifier, AuthConfig(rsa_public_key=ec_pem), Clock()
        )
        self.assertIn("not a valid RSA public key", str(error))
        self.assertRaises(
            AuthConfigError, load_verifier, AuthConfig(ecdsa_public_key=RSA_PEM), Clock()
        )

    def test_jwks_with_static_key(self) -> None:
        """A JWKS endpoint next to a static key is Go's load error."""
        config = AuthConfig(hmac_secret_key="k", jwks=JWKSConfig(endpoint="file:///x"))
        error = self.assertRaises(AuthConfigError, load_verifier, config, Clock())
        self.assertIn("no other verification key can be set when JWKS.Endpoint is set", str(error))

    def test_unsupported_scheme(self) -> None:
        """A JWKS endpoint of another scheme is refused."""
        config = AuthConfig(jwks=JWKSConfig(endpoint="ftp://x/jwks"))
        error = self.assertRaises(AuthConfigError, load_verifier, config, Clock())
        self.assertIn("unsupported scheme: ftp", str(error))

    def test_weak_rsa_key_refused(self) -> None:
        """
        An RSA key under 2048 bits refuses to load, saying its size and the minimum,
        whether given as a public key or in a certificate (Go loads them; see
        docs/compatibility.md).
        """
        for key in (WEAK_RSA_KEY, RSA_1024_KEY):
            error = self.assertRaises(
                AuthConfigError,
                load_verifier,
                AuthConfig(rsa_public_key=public_pem(key)),
                Clock(),
                where="config: proxy: auth",
            )
            self.assertEqual(
                str(error),
                f"config: proxy: auth: rsa public key: {key.key_size}-bit RSA key refused: "
                "at least 2048 bits are required",
            )
        certificate = _self_signed(WEAK_RSA_KEY)
        error = self.assertRaises(
            AuthConfigError, load_verifier, AuthConfig(rsa_public_key=certificate), Clock()
        )
        self.assertIn("512-bit RSA key refused", str(error))

    def test_weak_rsa_key_on_every_port(self) -> None:
        """Every port's auth, and every tenant's, refuses a weak RSA key, naming where."""
        weak = AuthConfig(rsa_public_key=public_pem(WEAK_RSA_KEY))
        for port in ("proxy", "upstream", "admin"):
            config = ServerConfig()
            config = evolve(config, **{port: evolve(getattr(config, port), auth=weak)})
            error = self.assertRaises(
                AuthConfigError, load_port_authenticator, config, port, Clock()
            )
            self.assertIn(f"config: {port}: auth: rsa public key: 512-bit RSA key", str(error))
        config = ServerConfig()
        config = evolve(
            config, upstream=evolve(config.upstream, tenants=(TenantConfig(id="t1", auth=weak),))
        )
        error = self.assertRaises(
            AuthConfigError, load_port_authenticator, config, "upstream", Clock()
        )
        self.assertIn("config: upstream: tenant: t1: auth: rsa public key: 512-bit", str(error))

    def test_2048_bit_key_accepted(self) -> None:
        """The minimum itself is fine: the shared 2048-bit test key verifies."""
        make(rsa_public_key=RSA_PEM).verify(sign({}, "RS256"))


def _self_signed(key: Any) -> str:
    """A PEM certificate carrying ``key``'s public key (Go accepts one as the RSA key)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "weak")])
    now = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM).decode()

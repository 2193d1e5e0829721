# -*- test-case-name: piko.test.auth.test_load -*-
"""
From :class:`~piko.config.AuthConfig` to a verifier, failing closed.

Anything configured but unusable (a PEM that does not parse, an RSA PEM
holding an EC key, an RSA key under 2048 bits, an unreadable or malformed
``file://`` JWKS or one without a usable key, an unsupported JWKS scheme, a
JWKS next to a static key) raises
:class:`AuthConfigError` naming the port and the key, so the server refuses
to start instead of serving without the auth its operator asked for.
Reading a ``file://`` JWKS happens here, once, at start-up, as in Go.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from cryptography.x509 import load_pem_x509_certificate
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from piko.auth.http import RequestAuthenticator
from piko.auth.jwks import JWKSError, RemoteJWKS, parse_jwks
from piko.auth.token import AuthConfigError, ITokenVerifier
from piko.auth.verifier import JWTVerifier, MultiTenantVerifier, StaticKeys, weak_key_reason
from piko.config import AuthConfig, ServerConfig

log = Logger()


def _public_key(pem: str) -> Any:
    data = pem.encode()
    if b"-----BEGIN" not in data:
        raise ValueError("key must be a PEM encoded PKCS1 or PKCS8 key")
    try:
        return load_pem_public_key(data)
    except ValueError:
        # Go's parsers accept a certificate and use its public key.
        try:
            return load_pem_x509_certificate(data).public_key()
        except ValueError as e:
            raise ValueError(f"not a PEM public key or certificate: {e}") from e


def _load_jwks(
    config: AuthConfig, clock: IReactorTime, http_client: Any, where: str
) -> JWTVerifier | None:
    jwks = config.jwks
    if config.hmac_secret_key or config.rsa_public_key or config.ecdsa_public_key:
        raise AuthConfigError(
            f"{where}: no other verification key can be set when JWKS.Endpoint is set"
        )
    url = urlsplit(jwks.endpoint)
    if url.scheme in ("http", "https"):
        if http_client is None:
            import treq

            http_client = treq
        source: Any = RemoteJWKS(
            jwks.endpoint, clock, http_client, cache_ttl=jwks.cache_ttl, timeout=jwks.timeout
        )
    elif url.scheme == "file":
        path = unquote(url.path)
        try:
            with open(path, "rb") as f:
                source = parse_jwks(f.read())
        except OSError as e:
            raise AuthConfigError(
                f"{where}: jwks: failed to read local JWKS file {path}: {e.strerror}"
            ) from e
        except JWKSError as e:
            raise AuthConfigError(f"{where}: jwks: {path}: {e}") from e
        for kid, reason in source.skipped.items():
            log.warn("jwks: skipping key", where=where, path=path, kid=kid, reason=reason)
        if not source.keys:
            skipped = "".join(f"; key {kid}: {why}" for kid, why in source.skipped.items())
            raise AuthConfigError(f"{where}: jwks: {path}: no usable signing keys{skipped}")
    else:
        raise AuthConfigError(f"{where}: jwks: unsupported scheme: {url.scheme}")
    return _verifier(source, config, clock)


def load_verifier(
    config: AuthConfig, clock: IReactorTime, *, http_client: Any = None, where: str = "auth"
) -> JWTVerifier | None:
    """
    The verifier ``config`` describes, or ``None`` when auth is off.

    :param clock: checks ``exp``/``nbf`` and schedules JWKS refreshes.
    :param http_client: fetches a remote JWKS (default: :mod:`treq`).
    :param where: names the port in error messages (``"proxy: auth"``).
    :raises AuthConfigError: when a configured key cannot be used.
    """
    if not config.enabled():
        return None
    if config.jwks.endpoint:
        return _load_jwks(config, clock, http_client, where)
    keys = StaticKeys(hmac=config.hmac_secret_key.encode() or None)
    if config.rsa_public_key:
        keys.rsa = _typed_public_key(config.rsa_public_key, "rsa", RSAPublicKey, where)
    if config.ecdsa_public_key:
        keys.ecdsa = _typed_public_key(
            config.ecdsa_public_key, "ecdsa", EllipticCurvePublicKey, where
        )
    return _verifier(keys, config, clock)


def _typed_public_key(pem: str, kind: str, key_type: type[Any], where: str) -> Any:
    """
    Parse ``pem`` as a public key of ``key_type``, with Go's error for ``kind``.

    :raises AuthConfigError: also for a key too weak to trust (an RSA key under
        2048 bits), which Go would load.
    """
    try:
        key = _public_key(pem)
    except ValueError as e:
        raise AuthConfigError(f"{where}: parse {kind} public key: {e}") from e
    if not isinstance(key, key_type):
        raise AuthConfigError(
            f"{where}: parse {kind} public key: key is not a valid {kind.upper()} public key"
        )
    weak = weak_key_reason(key)
    if weak is not None:
        raise AuthConfigError(f"{where}: {kind} public key: {weak}")
    return key


def _verifier(keys: Any, config: AuthConfig, clock: IReactorTime) -> JWTVerifier:
    """A :class:`JWTVerifier` over ``keys`` with ``config``'s claims checks."""
    return JWTVerifier(
        keys,
        clock,
        audience=config.audience,
        issuer=config.issuer,
        disable_disconnect_on_expiry=config.disable_disconnect_on_expiry,
    )


def load_port_authenticator(
    config: ServerConfig,
    port: str,
    clock: IReactorTime,
    *,
    http_client: Any = None,
) -> RequestAuthenticator | None:
    """
    The authenticator for ``port`` (``"proxy"``, ``"upstream"`` or ``"admin"``), or ``None``.

    Auth is on when the port's auth has a key, or (upstream only) when tenants
    are configured.
    :raises AuthConfigError: when any configured key of the port cannot be used.
    """
    auth: AuthConfig = getattr(config, port).auth
    default: ITokenVerifier | None = load_verifier(
        auth, clock, http_client=http_client, where=f"config: {port}: auth"
    )
    tenants: dict[str, ITokenVerifier] = {}
    owners: dict[str, tuple[str, ...]] = {}
    if port == "upstream":
        for tenant in config.upstream.tenants:
            verifier = load_verifier(
                tenant.auth,
                clock,
                http_client=http_client,
                where=f"config: upstream: tenant: {tenant.id}: auth",
            )
            if verifier is None:
                raise AuthConfigError(
                    f"config: upstream: tenant: {tenant.id}: tenant auth disabled"
                )
            tenants[tenant.id] = verifier
            if tenant.endpoints:
                owners[tenant.id] = tuple(tenant.endpoints)
    if default is None and not tenants:
        return None
    return RequestAuthenticator(MultiTenantVerifier(default, tenants, owners))

"""Keys and token makers shared by the auth tests (generated once per run)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

#: 64 bytes, so PyJWT's short-key warning stays quiet when tests sign.
HMAC_SECRET = "s" * 64
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEYS = {
    "ES256": ec.generate_private_key(ec.SECP256R1()),
    "ES384": ec.generate_private_key(ec.SECP384R1()),
    "ES512": ec.generate_private_key(ec.SECP521R1()),
}


def public_pem(key: Any) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


RSA_PEM = public_pem(RSA_KEY)


def sign(claims: dict[str, Any], alg: str = "HS256", key: Any = None, **headers: Any) -> str:
    """A token signed with the matching test key unless ``key`` is given."""
    if key is None:
        if alg.startswith("HS"):
            key = HMAC_SECRET
        elif alg.startswith("RS"):
            key = RSA_KEY
        else:
            key = EC_KEYS[alg]
    return jwt.encode(claims, key, algorithm=alg, headers=headers or None)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hmac_token(claims: dict[str, Any], secret: bytes, alg: str = "HS256", **headers: Any) -> str:
    """An HMAC token signed by hand, with any secret (PyJWT refuses a PEM as secret)."""
    header = _b64(json.dumps({"alg": alg, "typ": "JWT", **headers}).encode())
    payload = _b64(json.dumps(claims).encode())
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
    signature = hmac.new(secret, f"{header}.{payload}".encode(), digest).digest()
    return f"{header}.{payload}.{_b64(signature)}"


def unsigned_token(claims: dict[str, Any]) -> str:
    """An ``alg: none`` token."""
    header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{header}.{_b64(json.dumps(claims).encode())}."

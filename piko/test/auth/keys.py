"""Keys and token makers shared by the auth tests (generated once per run)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import warnings
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


def _probable_prime(bits: int) -> int:
    """A random ``bits``-bit prime (Miller-Rabin, 32 rounds)."""
    while True:
        n = secrets.randbits(bits) | (3 << (bits - 2)) | 1
        if all(n % p for p in (3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37)) and _miller_rabin(n):
            return n


def _miller_rabin(n: int) -> bool:
    d, s = n - 1, 0
    while d % 2 == 0:
        d, s = d // 2, s + 1
    for _ in range(32):
        x = pow(secrets.randbelow(n - 3) + 2, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


def weak_rsa_key(bits: int = 512) -> rsa.RSAPrivateKey:
    """
    An RSA key of ``bits`` bits, built from primes because ``cryptography``
    will not generate one under 1024 bits: the weak key an attacker could
    factor, for the tests that check it is refused.
    """
    e = 65537
    while True:
        p, q = _probable_prime(bits // 2), _probable_prime(bits // 2)
        phi = (p - 1) * (q - 1)
        if p != q and phi % e and (p * q).bit_length() == bits:
            break
    d = pow(e, -1, phi)
    public = rsa.RSAPublicNumbers(e, p * q)
    return rsa.RSAPrivateNumbers(
        p, q, d, d % (p - 1), d % (q - 1), pow(q, -1, p), public
    ).private_key()


def sign_weak(claims: dict[str, Any], key: rsa.RSAPrivateKey, **headers: Any) -> str:
    """An RS256 token signed with a weak key, without PyJWT's short-key warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return jwt.encode(claims, key, algorithm="RS256", headers=headers or None)


WEAK_RSA_KEY = weak_rsa_key(512)
RSA_1024_KEY = rsa.generate_private_key(public_exponent=65537, key_size=1024)

# -*- test-case-name: piko.test.policy.test_basicauth -*-
"""
HTTP basic auth against bcrypt (or argon2) hashes.

Hashes are checked by maintained libraries (:mod:`bcrypt`; ``argon2-cffi`` if
installed for ``$argon2`` hashes), never by code of ours.  A bcrypt check is
deliberately slow (tens of milliseconds at cost 10) and runs on the reactor,
so:

* an ``Authorization`` value longer than :data:`MAX_AUTHORIZATION` is refused
  before any decoding (a 1 MiB header costs a length check);
* a user/password pair once accepted is remembered (by a SHA-256 of the
  header value, in a bounded LRU) so a client sending the same credentials on
  every request pays the hash once;
* policies check the rate limit before basic auth, so a password-guessing
  client is throttled before it costs a hash each.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
from collections import OrderedDict
from collections.abc import Callable, Mapping

import bcrypt

#: The longest ``Authorization`` value examined (bcrypt reads only 72 bytes of a password).
MAX_AUTHORIZATION = 4096

#: Accepted credentials remembered, per policy.
CACHE_SIZE = 1024

#: Checked for unknown users so they take as long as known ones.
_DUMMY_HASH = bcrypt.hashpw(b"piko-dummy", bcrypt.gensalt(rounds=4))


def _argon2_checker(encoded: str) -> Callable[[bytes], bool]:
    try:
        from argon2 import PasswordHasher
        from argon2.exceptions import VerificationError
    except ImportError:
        raise ValueError("argon2 hashes need the argon2-cffi package installed") from None
    hasher = PasswordHasher()

    def check(password: bytes) -> bool:
        try:
            return bool(hasher.verify(encoded, password))
        except (VerificationError, ValueError):
            return False

    return check


def _bcrypt_checker(encoded: str) -> Callable[[bytes], bool]:
    hashed = encoded.encode("ascii")
    try:
        bcrypt.checkpw(b"", hashed)
    except ValueError:
        raise ValueError("not a valid bcrypt hash") from None

    def check(password: bytes) -> bool:
        try:
            return bool(bcrypt.checkpw(password, hashed))
        except ValueError:
            return False

    return check


def password_checker(encoded: str) -> Callable[[bytes], bool]:
    """
    A checker for one stored hash.

    :raises ValueError: the hash is neither bcrypt (``$2a$``, ``$2b$``, ``$2y$``) nor
        argon2 (``$argon2id$``...), or argon2-cffi is missing.
    """
    if encoded.startswith(("$2a$", "$2b$", "$2y$")):
        return _bcrypt_checker(encoded)
    if encoded.startswith("$argon2"):
        return _argon2_checker(encoded)
    raise ValueError("unsupported hash (want bcrypt $2b$... or argon2 $argon2id$...)")


class BasicAuth:
    """
    The users of one policy.

    :param users: each user's checker (:func:`password_checker`).
    :param realm: named in ``WWW-Authenticate``.
    """

    def __init__(self, users: Mapping[str, Callable[[bytes], bool]], realm: str) -> None:
        self.users = dict(users)
        self.realm = realm
        self.challenge = b'Basic realm="%s", charset="UTF-8"' % realm.replace('"', "").encode()
        self._accepted: OrderedDict[bytes, str] = OrderedDict()
        self._dummy = _bcrypt_checker(_DUMMY_HASH.decode())

    def check(self, authorization: bytes | None) -> str | None:
        """The user that ``authorization`` (the header value) proves, or None."""
        if authorization is None or len(authorization) > MAX_AUTHORIZATION:
            return None
        scheme, _, encoded = authorization.strip().partition(b" ")
        if scheme.lower() != b"basic":
            return None
        digest = hashlib.sha256(encoded.strip()).digest()
        user = self._accepted.get(digest)
        if user is not None:
            self._accepted.move_to_end(digest)
            return user
        try:
            decoded = binascii.a2b_base64(encoded.strip(), strict_mode=True)
        except (binascii.Error, ValueError):
            return None
        name_bytes, colon, password = decoded.partition(b":")
        if not colon:
            return None
        name = name_bytes.decode("utf-8", "replace")
        checker = None
        for known, candidate in self.users.items():
            if hmac.compare_digest(known.encode(), name.encode()):
                checker = candidate
        if checker is None:
            self._dummy(password)
            return None
        if not checker(password):
            return None
        self._accepted[digest] = name
        if len(self._accepted) > CACHE_SIZE:
            self._accepted.popitem(last=False)
        return name

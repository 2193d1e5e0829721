# -*- test-case-name: piko.test.policy.test_ratelimit -*-
"""
The rate-limit action: which bucket a request takes from, and the store.
"""

from __future__ import annotations

from collections.abc import Callable

from attrs import frozen

from piko.policy.buckets import TokenBucketStore

KEY_CLIENT_IP = "client_ip"
KEY_ENDPOINT = "endpoint"
HEADER_PREFIX = "header:"


@frozen
class RateLimitSpec:
    """
    A compiled ``rate_limit``: ``rate`` tokens a second, ``burst`` at most.

    :ivar key: ``client_ip``, ``endpoint`` or ``header:<name>``.
    :ivar header: the header name (lower case) for ``header:`` keys, else ``b""``.
    """

    rate: float
    burst: int
    key: str
    max_keys: int
    header: bytes = b""

    @classmethod
    def parse(
        cls, requests: int, period: float, burst: int, key: str, max_keys: int, where: str
    ) -> RateLimitSpec:
        """:raises ValueError: naming ``where``."""
        if requests < 0:
            raise ValueError(f"{where}: requests must not be negative")
        if period <= 0:
            raise ValueError(f"{where}: period must be positive")
        if burst < 0:
            raise ValueError(f"{where}: burst must not be negative")
        if max_keys < 1:
            raise ValueError(f"{where}: max_keys must be at least 1")
        header = b""
        if key.startswith(HEADER_PREFIX):
            header = key[len(HEADER_PREFIX) :].strip().lower().encode("latin-1", "replace")
            if not header:
                raise ValueError(f"{where}: key header: missing header name")
        elif key not in (KEY_CLIENT_IP, KEY_ENDPOINT):
            raise ValueError(
                f"{where}: key must be client_ip, endpoint or header:<Name>, not {key!r}"
            )
        return cls(requests / period, burst or requests, key, max_keys, header)

    def store(self, seconds: Callable[[], float]) -> TokenBucketStore:
        """A new, empty bucket store for this limit."""
        return TokenBucketStore(seconds, self.rate, self.burst, self.max_keys)

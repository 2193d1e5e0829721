# -*- test-case-name: piko.test.policy.test_engine -*-
"""
Compiled policies, and which one applies to an endpoint.

A :class:`PolicySet` is immutable once built: a reload builds a new one and
swaps it in with one assignment, so every request sees either the old set or
the new one, whole.  Matching is first-match over the policies in file order,
each by exact id or glob; the answer per endpoint id is cached (bounded), so
the globs are run once per endpoint rather than once per request.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from fnmatch import fnmatchcase

from attrs import define, field, frozen

from piko.policy.basicauth import BasicAuth
from piko.policy.buckets import TokenBucketStore
from piko.policy.headers import HeaderOps
from piko.policy.ipfilter import IPNetwork, IPRules
from piko.policy.ratelimit import RateLimitSpec

#: Endpoint ids whose match is remembered.
MATCH_CACHE = 4096

#: Action names, as they appear in metrics and the access log.
ACTION_IP = "ip"
ACTION_BASIC_AUTH = "basic_auth"
ACTION_RATE_LIMIT = "rate_limit"
ACTION_BODY_SIZE = "max_body_bytes"
ACTION_CONCURRENCY = "max_concurrent"
ACTIONS = (ACTION_IP, ACTION_RATE_LIMIT, ACTION_BASIC_AUTH, ACTION_CONCURRENCY, ACTION_BODY_SIZE)


@define(eq=False)
class Policy:
    """
    One compiled policy.

    :ivar buckets: the rate limit's store (``None`` without a rate limit);
        carried over by a reload that keeps the same limit.
    """

    name: str
    patterns: tuple[str, ...]
    trusted_proxies: tuple[IPNetwork, ...] = ()
    ip_rules: IPRules | None = None
    basic_auth: BasicAuth | None = None
    rate_limit: RateLimitSpec | None = None
    request_headers: HeaderOps = field(factory=HeaderOps)
    response_headers: HeaderOps = field(factory=HeaderOps)
    max_body_bytes: int = 0
    max_concurrent: int = 0
    buckets: TokenBucketStore | None = None

    def matches(self, endpoint_id: str) -> bool:
        """Whether this policy covers ``endpoint_id``."""
        return any(p == endpoint_id or fnmatchcase(endpoint_id, p) for p in self.patterns)

    @property
    def needs_client(self) -> bool:
        """Whether the client address is read (IP rules or a per-IP limit)."""
        limit = self.rate_limit
        return self.ip_rules is not None or (limit is not None and limit.key == "client_ip")


@frozen
class PolicySet:
    """The policies of one configuration, in order."""

    policies: tuple[Policy, ...] = ()
    _cache: dict[str, Policy | None] = field(factory=dict, eq=False, repr=False)

    def __bool__(self) -> bool:
        return bool(self.policies)

    def match(self, endpoint_id: str) -> Policy | None:
        """The first policy covering ``endpoint_id``, or None."""
        cache = self._cache
        try:
            return cache[endpoint_id]
        except KeyError:
            pass
        found = None
        for policy in self.policies:
            if policy.matches(endpoint_id):
                found = policy
                break
        if len(cache) >= MATCH_CACHE:
            cache.clear()
        cache[endpoint_id] = found
        return found

    def adopt_buckets(self, old: PolicySet, seconds: Callable[[], float]) -> None:
        """
        Give each rate-limited policy a bucket store: the old set's store of
        the same policy name and the same limit (so a reload does not hand
        every client a fresh burst), else a new one.
        """
        previous = {p.name: p for p in old.policies}
        for policy in self.policies:
            if policy.rate_limit is None:
                continue
            before = previous.get(policy.name)
            if (
                before is not None
                and before.rate_limit == policy.rate_limit
                and before.buckets is not None
            ):
                policy.buckets = before.buckets
            else:
                policy.buckets = policy.rate_limit.store(seconds)


def names(policies: Sequence[Policy]) -> list[str]:
    """The policy names, for logs."""
    return [p.name for p in policies]

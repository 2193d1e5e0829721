# -*- test-case-name: piko.test.policy.test_config -*-
"""
The ``policies:`` section of the server YAML, as frozen attrs models.

These are plain configuration models read by the strict YAML loader
(:mod:`piko.config._load`: unknown keys are errors naming the line), like
every other section; :mod:`piko.policy.config` checks and compiles them into
what the proxy port runs.  The section is an addition to Go Piko's keys: a Go
configuration file has no ``policies:`` and loads unchanged.

This module imports nothing of Piko, so :mod:`piko.config._models` can embed
it without an import cycle.
"""

from __future__ import annotations

from typing import Any

import attrs
from attrs import field, frozen


def _duration(default: float) -> Any:
    # The marker of piko.config._models.duration (not imported: it imports us).
    return field(default=default, metadata={"piko.duration": True})


@frozen
class RateLimitConfig:
    """
    A token bucket per key: ``requests`` per ``period``, bursts up to ``burst``.

    ``key`` is ``client_ip``, ``endpoint``, or ``header:<Name>`` (requests
    without that header share one bucket).  ``requests: 0`` turns it off.
    """

    requests: int = 0
    period: float = _duration(1.0)
    burst: int = 0
    key: str = "client_ip"
    #: The most buckets kept; beyond it the least recently used go first.
    max_keys: int = 100_000


@frozen
class IPRulesConfig:
    """Client address rules by CIDR: ``deny`` first, then (if any) ``allow`` must match."""

    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()


@frozen
class BasicAuthUserConfig:
    """One user: a bcrypt (``$2b$...``) or argon2 (``$argon2id$...``) hash."""

    user: str = ""
    hash: str = ""


@frozen
class BasicAuthConfig:
    """HTTP basic auth; on when ``users`` is not empty."""

    realm: str = "piko"
    users: tuple[BasicAuthUserConfig, ...] = ()


@frozen
class HeaderOpsConfig:
    """Header edits: ``add``/``set`` take ``"Name: value"``, ``remove`` takes names."""

    add: tuple[str, ...] = ()
    set: tuple[str, ...] = ()
    remove: tuple[str, ...] = ()


@frozen
class HeaderRulesConfig:
    """Header edits on the request (before it is forwarded) and on the response."""

    request: HeaderOpsConfig = field(factory=HeaderOpsConfig)
    response: HeaderOpsConfig = field(factory=HeaderOpsConfig)


@frozen
class LimitsConfig:
    """Size and concurrency caps; 0 is no limit."""

    max_body_bytes: int = 0
    max_concurrent: int = 0


@frozen
class PolicyConfig:
    """
    One policy: the endpoints it covers (exact ids or globs; the first policy
    that matches an endpoint is the only one applied) and its actions.
    """

    name: str = ""
    endpoints: tuple[str, ...] = ()
    #: Peers whose ``X-Forwarded-For`` names the client (CIDRs); others are the client.
    trusted_proxies: tuple[str, ...] = ()
    ip: IPRulesConfig = field(factory=IPRulesConfig)
    basic_auth: BasicAuthConfig = field(factory=BasicAuthConfig)
    rate_limit: RateLimitConfig = field(factory=RateLimitConfig)
    headers: HeaderRulesConfig = field(factory=HeaderRulesConfig)
    limits: LimitsConfig = field(factory=LimitsConfig)


for _cls in list(globals().values()):
    if isinstance(_cls, type) and attrs.has(_cls):
        attrs.resolve_types(_cls, globals())
del _cls

# -*- test-case-name: piko.test.policy.test_config -*-
"""
Checking the ``policies:`` section and compiling it into a :class:`PolicySet`.

Every error names the policy (by name, or by its index when unnamed) and the
key, and is a :class:`~piko.config.ConfigValidationError`: at start the server
refuses to run; on a reload the old policies stay and the error is reported.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from piko.config import ConfigValidationError, HeaderOpsConfig, PolicyConfig
from piko.policy.basicauth import BasicAuth, password_checker
from piko.policy.engine import Policy, PolicySet
from piko.policy.headers import HeaderOps
from piko.policy.ipfilter import IPRules, parse_networks
from piko.policy.ratelimit import RateLimitSpec


class PolicyConfigError(ConfigValidationError):
    """The ``policies:`` section cannot be used."""


def _ops(c: HeaderOpsConfig, where: str) -> HeaderOps:
    return HeaderOps.parse(c.add, c.set, c.remove, where)


def compile_policy(c: PolicyConfig, where: str) -> Policy:
    """
    One policy, checked.

    :raises ValueError: naming ``where`` and the key.
    """
    if not c.endpoints:
        raise ValueError(f"{where}: endpoints: at least one endpoint id or glob is needed")
    for pattern in c.endpoints:
        if not pattern:
            raise ValueError(f"{where}: endpoints: empty pattern")
    trusted = parse_networks(c.trusted_proxies, f"{where}: trusted_proxies")
    ip_rules = None
    if c.ip.allow or c.ip.deny:
        ip_rules = IPRules(
            parse_networks(c.ip.allow, f"{where}: ip: allow"),
            parse_networks(c.ip.deny, f"{where}: ip: deny"),
        )
    basic_auth = None
    if c.basic_auth.users:
        users: dict[str, Callable[[bytes], bool]] = {}
        for index, user in enumerate(c.basic_auth.users):
            at = f"{where}: basic_auth: users[{index}]"
            if not user.user or ":" in user.user:
                raise ValueError(f"{at}: user must be non-empty and without ':'")
            if user.user in users:
                raise ValueError(f"{at}: user {user.user!r} listed twice")
            try:
                users[user.user] = password_checker(user.hash)
            except ValueError as e:
                raise ValueError(f"{at}: hash: {e}") from None
        basic_auth = BasicAuth(users, c.basic_auth.realm)
    rate_limit = None
    limit = c.rate_limit
    if limit.requests:
        rate_limit = RateLimitSpec.parse(
            limit.requests,
            limit.period,
            limit.burst,
            limit.key,
            limit.max_keys,
            f"{where}: rate_limit",
        )
    elif limit.requests < 0:
        raise ValueError(f"{where}: rate_limit: requests must not be negative")
    if c.limits.max_body_bytes < 0 or c.limits.max_concurrent < 0:
        raise ValueError(f"{where}: limits: must not be negative")
    return Policy(
        name=c.name,
        patterns=tuple(c.endpoints),
        trusted_proxies=trusted,
        ip_rules=ip_rules,
        basic_auth=basic_auth,
        rate_limit=rate_limit,
        request_headers=_ops(c.headers.request, f"{where}: headers: request"),
        response_headers=_ops(c.headers.response, f"{where}: headers: response"),
        max_body_bytes=c.limits.max_body_bytes,
        max_concurrent=c.limits.max_concurrent,
    )


def compile_policies(
    configs: Sequence[PolicyConfig],
    seconds: Callable[[], float],
    previous: PolicySet | None = None,
) -> PolicySet:
    """
    The policies of a configuration, checked and compiled.

    :param seconds: the clock of the rate limits.
    :param previous: the set being replaced, whose bucket stores are kept where
        a policy's limit did not change.
    :raises PolicyConfigError: ``policies[i] (name): key: reason``.
    """
    compiled = []
    seen: set[str] = set()
    for index, c in enumerate(configs):
        where = f"policies[{index}]" + (f" ({c.name})" if c.name else "")
        if not c.name:
            raise PolicyConfigError(f"{where}: missing name")
        if c.name in seen:
            raise PolicyConfigError(f"{where}: name {c.name!r} used twice")
        seen.add(c.name)
        try:
            compiled.append(compile_policy(c, where))
        except ValueError as e:
            raise PolicyConfigError(str(e)) from None
    result = PolicySet(tuple(compiled))
    result.adopt_buckets(previous or PolicySet(), seconds)
    return result

# -*- test-case-name: piko.test.policy.test_handler -*-
"""
Policy metrics, in the server's registry.

``piko_policy_refused_total{policy,action}``: requests a policy refused, by
the action that refused them (``ip``, ``rate_limit``, ``basic_auth``,
``max_body_bytes``, ``max_concurrent``).  ``piko_policy_reloads_total{result}``:
reloads, ``ok`` or ``error``.  Label sets are bounded by the configuration
(policy names times five actions), not by traffic.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter


class PolicyMetrics:
    """
    The policy counters.

    :param registry: the server's registry.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.refused_total = Counter(
            "piko_policy_refused",
            "Requests refused by a traffic policy.",
            ["policy", "action"],
            registry=registry,
        )
        self.reloads_total = Counter(
            "piko_policy_reloads",
            "Policy reloads by result.",
            ["result"],
            registry=registry,
        )
        self._children: dict[tuple[str, str], Any] = {}

    def refused(self, policy: str, action: str) -> None:
        """Count one refusal."""
        key = (policy, action)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.refused_total.labels(policy=policy, action=action)
        child.inc()

# -*- test-case-name: piko.test.server.test_metrics,piko.test.agent.test_metrics -*-
"""
Prometheus helpers the server's and the agent's metrics share.

Here, below both, so that the agent's metrics need not import the server's.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric

__all__ = ["SIZE_BUCKETS", "WithoutCreated"]


class WithoutCreated:
    """
    A registry's metrics without prometheus_client's ``<name>_created`` samples.

    Go's client has no such series; ours would add one per counter and histogram child.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Metric]:
        """Each metric of the registry, its ``_created`` samples dropped."""
        for metric in self.registry.collect():
            created = metric.name + "_created"
            if any(sample.name == created for sample in metric.samples):
                metric.samples = [s for s in metric.samples if s.name != created]
            yield metric


#: Go's ``prometheus.ExponentialBuckets(256, 4, 8)`` for request and response sizes.
SIZE_BUCKETS = tuple(256 * 4**k for k in range(8))

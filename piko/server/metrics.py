# -*- test-case-name: piko.test.server.test_metrics -*-
"""
The server's Prometheus metrics, with Go Piko's names, types, labels and buckets.

One :class:`~prometheus_client.CollectorRegistry` per node, injected, so that
several nodes (tests, worker processes) never share counters.  It is served
by the admin port's ``/metrics`` from our own resource:
``prometheus_client.twisted`` imports the global reactor and serves from a
thread.

Only Go's series are exposed: prometheus_client's ``*_created`` samples (one per counter,
histogram and label set; Go has none) are left out of the exposition of our registry, without
touching the process-wide switch the agent's registry also reads.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from piko.cluster.nodes import ClusterState, NodeStatus
from piko.cluster.state import GossipState
from piko.http.observe import ExchangeOutcome, ObservedExchange
from piko.http.server import IRequestHandler, IServerExchange
from piko.metrics import SIZE_BUCKETS, WithoutCreated
from piko.server.registry import UpstreamRegistry
from piko.server.traffic import Traffic


class ServerMetrics:
    """The proxy, upstreams, cluster and gossip metrics of one node."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)
        self.requests_in_flight = Gauge(
            "piko_proxy_requests_in_flight",
            "Number of requests currently handled by this server.",
            registry=r,
        )
        self.requests_total = Counter(
            "piko_proxy_requests", "Total requests.", ["status", "method"], registry=r
        )
        self.request_latency = Histogram(
            "piko_proxy_request_latency_seconds",
            "Request latency.",
            ["status", "method"],
            registry=r,
        )
        self.request_size = Histogram(
            "piko_proxy_request_size_bytes", "Request size", buckets=SIZE_BUCKETS, registry=r
        )
        self.response_size = Histogram(
            "piko_proxy_response_size_bytes", "Response size", buckets=SIZE_BUCKETS, registry=r
        )
        self.connected_upstreams = Gauge(
            "piko_upstreams_connected_upstreams",
            "Number of upstreams connected to this node",
            registry=r,
        )
        self.registered_endpoints = Gauge(
            "piko_upstreams_registered_endpoints",
            "Number of endpoints registered to this node",
            registry=r,
        )
        self.upstream_requests_total = Counter(
            "piko_upstreams_upstream_requests",
            "Number of requests sent to an upstream connected to the local node",
            registry=r,
        )
        self.remote_requests_total = Counter(
            "piko_upstreams_remote_requests",
            "Number of requests sent to a remote node",
            ["node_id"],
            registry=r,
        )
        self.cluster_nodes = Gauge(
            "piko_cluster_nodes", "Number of nodes in the cluster state", ["status"], registry=r
        )

        def gossip_counter(name: str, help: str) -> Counter:
            return Counter(f"piko_gossip_{name}", help, registry=r)

        self.gossip_connections_inbound = gossip_counter(
            "connections_inbound", "Total number of incoming stream connections"
        )
        self.gossip_connections_outbound = gossip_counter(
            "connections_outbound", "Total number of outgoing stream connections"
        )
        self.gossip_stream_bytes_inbound = gossip_counter(
            "stream_bytes_inbound", "Total number of bytes received on a stream connection"
        )
        self.gossip_stream_bytes_outbound = gossip_counter(
            "stream_bytes_outbound", "Total number of bytes sent on a stream connection"
        )
        self.gossip_packet_bytes_inbound = gossip_counter(
            "packet_bytes_inbound", "Total number of bytes received on a packet connection"
        )
        self.gossip_packet_bytes_outbound = gossip_counter(
            "packet_bytes_outbound", "Total number of bytes sent on a packet connection"
        )
        self.gossip_digest_entries_inbound = gossip_counter(
            "digest_entries_inbound", "Total number of digest entries received"
        )
        self.gossip_digest_entries_outbound = gossip_counter(
            "digest_entries_outbound", "Total number of digest entries sent"
        )
        self.gossip_delta_entries_inbound = gossip_counter(
            "delta_entries_inbound", "Total number of delta entries received"
        )
        self.gossip_delta_entries_outbound = gossip_counter(
            "delta_entries_outbound", "Total number of delta entries sent"
        )
        self.gossip_entries = Gauge(
            "piko_gossip_entries",
            "Number of entries in the gossip state",
            ["node_id", "deleted", "internal"],
            registry=r,
        )
        self._gossip_state: Callable[[], GossipState | None] | None = None

    def watch(self, upstreams: UpstreamRegistry[Any]) -> None:
        """Keep the upstream gauges equal to ``upstreams``' counts, and count selections."""

        def changed(endpoint_id: str, count: int) -> None:
            self.connected_upstreams.set(upstreams.upstream_count)
            self.registered_endpoints.set(len(upstreams.endpoints()))

        upstreams.observe(changed)
        upstreams.observe_selections(lambda endpoint_id: self.upstream_requests_total.inc())

    def watch_cluster(self, cluster: ClusterState) -> None:
        """Keep ``piko_cluster_nodes{status}`` equal to the node table (this node counts active)."""

        def changed(state: ClusterState) -> None:
            for status in NodeStatus:
                count = sum(1 for node in state.nodes() if node.status is status)
                self.cluster_nodes.labels(status=status.value).set(count)

        cluster.observe(changed)
        changed(cluster)

    def watch_gossip(self, state: Callable[[], GossipState | None]) -> None:
        """Count ``piko_gossip_entries`` from ``state()`` at each scrape."""
        self._gossip_state = state

    def _refresh_gossip_entries(self) -> None:
        state = self._gossip_state() if self._gossip_state is not None else None
        if state is None:
            return
        self.gossip_entries.clear()
        for metadata in state.nodes():
            node = state.node(metadata.id)
            if node is None:
                continue
            counts: dict[tuple[bool, bool], int] = {}
            for entry in node.entries:
                key = (entry.deleted, entry.internal)
                counts[key] = counts.get(key, 0) + 1
            for (deleted, internal), count in counts.items():
                self.gossip_entries.labels(
                    node_id=metadata.id,
                    deleted=str(deleted).lower(),
                    internal=str(internal).lower(),
                ).set(count)

    def render(self) -> tuple[bytes, bytes]:
        """The text exposition: ``(content type, body)``."""
        self._refresh_gossip_entries()
        exposed: Any = WithoutCreated(self.registry)
        return CONTENT_TYPE_LATEST.encode(), generate_latest(exposed)


#: Label combinations whose children a handler keeps at hand.
_MAX_CHILDREN = 256


@implementer(IRequestHandler)
class MeteredHandler:
    """
    Counts every request a wrapped handler answers, as Go's metrics middleware does.

    Status and sizes are taken from what the handler sends through the
    exchange; an upgrade counts as 101 when the connection is handed over.
    """

    def __init__(
        self,
        handler: IRequestHandler,
        metrics: ServerMetrics,
        clock: IReactorTime,
        also: Callable[[ExchangeOutcome], None] | None = None,
        traffic: Traffic | None = None,
    ) -> None:
        self.handler = handler
        self.metrics = metrics
        self.clock = clock
        #: Also told every outcome (the access log): one observing wrapper per request
        #: serves both, instead of one each.
        self.also = also
        #: The dashboard's per-endpoint figures, fed from the same observation.
        self.traffic = traffic
        #: The labelled ``(requests_total, request_latency)`` children by (status, method):
        #: ``labels()`` costs a lock and a dict lookup per call.
        self.children: dict[tuple[int, bytes], tuple[Any, Any]] = {}

    def request_received(self, exchange: IServerExchange) -> None:
        """Count the request in, and observe the exchange to count it out."""
        self.metrics.requests_in_flight.inc()
        traffic = self.traffic
        observed = ObservedExchange(
            exchange, self.clock, self._record, traffic.tunnel if traffic is not None else None
        )
        self.handler.request_received(observed)  # type: ignore[arg-type]

    def _record(self, outcome: ExchangeOutcome) -> None:
        metrics = self.metrics
        metrics.requests_in_flight.dec()
        method = outcome.head.method
        key = (outcome.status, method)
        children = self.children.get(key)
        if children is None:
            labels = {"status": str(outcome.status), "method": method.decode()}
            children = (
                metrics.requests_total.labels(**labels),
                metrics.request_latency.labels(**labels),
            )
            if len(self.children) < _MAX_CHILDREN:
                self.children[key] = children
        children[0].inc()
        children[1].observe(round(outcome.duration, 3))
        metrics.request_size.observe(outcome.request_size)
        metrics.response_size.observe(outcome.sent)
        if self.traffic is not None:
            self.traffic.record(outcome)
        if self.also is not None:
            self.also(outcome)

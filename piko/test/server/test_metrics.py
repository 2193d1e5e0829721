"""Tests for :mod:`piko.server.metrics`: Go's metric names, labels and values."""

from __future__ import annotations

import re
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from piko.http.server import HTTPServerProtocol
from piko.server.metrics import MeteredHandler, ServerMetrics
from piko.server.proxy_port import ProxyPortHandler
from piko.server.registry import UpstreamRegistry
from piko.test.interop import read_bytes
from piko.ws.server import WebSocketAcceptor


def samples(metrics: ServerMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    _, body = metrics.render()
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


class MetricsTests(SynchronousTestCase):
    def test_requests_counted_with_status_and_method(self) -> None:
        """Proxy answers are counted by status and method, with latency and sizes observed."""
        clock = Clock()
        metrics = ServerMetrics()
        registry: UpstreamRegistry[Any] = UpstreamRegistry()
        handler = MeteredHandler(
            ProxyPortHandler(clock, registry, WebSocketAcceptor(clock)), metrics, clock
        )
        protocol = HTTPServerProtocol(handler, clock)
        protocol.makeConnection(StringTransport())
        protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\nx-piko-endpoint: nope\r\n\r\n")
        values = samples(metrics)
        self.assertEqual(
            values[("piko_proxy_requests_total", (("method", "GET"), ("status", "400")))], 1
        )
        self.assertEqual(
            values[("piko_proxy_requests_total", (("method", "GET"), ("status", "502")))], 1
        )
        self.assertEqual(
            values[
                ("piko_proxy_request_latency_seconds_count", (("method", "GET"), ("status", "502")))
            ],
            1,
        )
        self.assertEqual(values[("piko_proxy_requests_in_flight", ())], 0)
        self.assertEqual(values[("piko_proxy_response_size_bytes_count", ())], 2)

    def test_upstream_gauges_and_selections(self) -> None:
        """Connected upstreams, registered endpoints and local selections follow the registry."""
        metrics = ServerMetrics()
        registry: UpstreamRegistry[str] = UpstreamRegistry()
        metrics.watch(registry)
        registry.add("a", "u1")
        registry.add("a", "u2")
        registry.add("b", "u3")
        registry.select("a")
        registry.remove("b", "u3")
        values = samples(metrics)
        self.assertEqual(values[("piko_upstreams_connected_upstreams", ())], 2)
        self.assertEqual(values[("piko_upstreams_registered_endpoints", ())], 1)
        self.assertEqual(values[("piko_upstreams_upstream_requests_total", ())], 1)

    def test_go_metric_names_present(self) -> None:
        """Every piko_proxy_* and piko_upstreams_* name Go exposes is exposed, with Go's labels."""
        recorded = read_bytes("errors/exchanges/admin-metrics.piko-lines.txt").decode()
        go_types = dict(re.findall(r"^# TYPE (piko_(?:proxy|upstreams)_\w+) (\w+)", recorded, re.M))
        metrics = ServerMetrics()
        registry: UpstreamRegistry[str] = UpstreamRegistry()
        metrics.watch(registry)
        metrics.remote_requests_total.labels(node_id="n2").inc()
        _, body = metrics.render()
        ours = dict(re.findall(r"^# TYPE (piko_\w+) (\w+)", body.decode(), re.M))
        for name, kind in go_types.items():
            self.assertEqual(ours.get(name), kind, name)
        go_labels = set(re.findall(r"^piko_proxy_requests_total\{([^}]*)\}", recorded, re.M))
        for labels in go_labels:
            self.assertEqual(
                sorted(k for k, _ in re.findall(r'(\w+)="([^"]*)"', labels)), ["method", "status"]
            )

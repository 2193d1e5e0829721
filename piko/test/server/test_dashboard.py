# -*- test-case-name: piko.test.server.test_dashboard -*-
"""Tests for :mod:`piko.server.dashboard` and its admin routes (the page itself runs in
:mod:`piko.test.e2e.test_dashboard`, in headless Chromium)."""

from __future__ import annotations

import json
import re
from typing import Any

from attrs import define
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from piko.cluster.nodes import ClusterState, Node
from piko.http.server import HTTPServerProtocol
from piko.server.admin import AdminRoutes, ForwardTo, LocalNode
from piko.server.dashboard import PAGE
from piko.server.metrics import MeteredHandler, ServerMetrics
from piko.server.proxy_port import ProxyPortHandler
from piko.server.registry import UpstreamRegistry
from piko.server.traffic import BUCKETS, Traffic
from piko.ws.server import WebSocketAcceptor


def routes() -> AdminRoutes:
    registry: UpstreamRegistry[Any] = UpstreamRegistry()
    return AdminRoutes(LocalNode("n1", "", ""), registry, lambda: True)


class DashboardRouteTests(SynchronousTestCase):
    def test_ui_serves_page(self) -> None:
        """GET /ui answers the page as UTF-8 HTML, never cached."""
        response = routes().handle(b"GET", b"/ui")
        headers = dict(response.headers)
        self.assertEqual(response.status, 200)
        self.assertEqual(headers[b"Content-Type"], b"text/html; charset=utf-8")
        self.assertEqual(headers[b"Cache-Control"], b"no-store")
        self.assertEqual(response.body, PAGE)

    def test_root_redirects(self) -> None:
        """GET / sends the browser to /ui."""
        response = routes().handle(b"GET", b"/")
        self.assertEqual((response.status, dict(response.headers)[b"Location"]), (302, b"/ui"))

    def test_other_methods_not_found(self) -> None:
        """Only GET and HEAD reach the page, as every admin route."""
        self.assertEqual(routes().handle(b"POST", b"/ui").status, 404)

    def test_self_contained(self) -> None:
        """The page loads nothing from anywhere: no src/href URL, and a CSP that forbids it."""
        text = PAGE.decode()
        self.assertIsNone(re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text))
        self.assertNotIn("@import", text)
        csp = dict(routes().handle(b"GET", b"/ui").headers)[b"Content-Security-Policy"]
        self.assertIn(b"default-src 'none'", csp)
        self.assertIn(b"connect-src 'self'", csp)

    def test_polls_status_api(self) -> None:
        """The page polls the node list and each node's dashboard data through this node."""
        text = PAGE.decode()
        for path in ("/status/cluster/nodes", "/status/dashboard/node?forward="):
            self.assertIn(path, text)

    def test_headers_not_upper_cased(self) -> None:
        """Column headers (some are node ids) are shown as written: no text-transform."""
        self.assertNotIn("text-transform", PAGE.decode())

    def test_charts_drawn_by_page(self) -> None:
        """The charts are canvases the page's own script draws on."""
        text = PAGE.decode()
        for chart in ("requests", "errors", "latency", "bytes"):
            self.assertIn(f'<canvas id="chart-{chart}"', text)
        self.assertIn('getContext("2d")', text)

    def test_ids_set_as_text(self) -> None:
        """Endpoint and node ids (untrusted) are never inserted as markup."""
        self.assertNotIn("innerHTML", PAGE.decode())
        self.assertNotIn("insertAdjacentHTML", PAGE.decode())


@define
class FakeSession:
    """What the dashboard reads of an upstream session."""

    remote_addr: str
    connected_at: float
    stream_count: int


T0 = 1_700_000_000.0


class DashboardDataTests(SynchronousTestCase):
    """``/status/dashboard/node``: fed by the proxy port's observer, answered as JSON."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(T0)
        self.registry: UpstreamRegistry[Any] = UpstreamRegistry()
        self.traffic = Traffic(self.clock.seconds)
        self.metrics = ServerMetrics()
        cluster = ClusterState(Node("n1", proxy_addr="127.0.0.1:1", admin_addr="127.0.0.1:2"))
        cluster.add_node(Node("n2", proxy_addr="127.0.0.1:3", admin_addr="127.0.0.1:4"))
        self.routes = AdminRoutes(
            LocalNode("n1", "127.0.0.1:1", "127.0.0.1:2"),
            self.registry,
            lambda: True,
            self.metrics.render,
            cluster,
            traffic=self.traffic,
        )
        handler = MeteredHandler(
            ProxyPortHandler(self.clock, self.registry, WebSocketAcceptor(self.clock)),
            self.metrics,
            self.clock,
            traffic=self.traffic,
        )
        self.proxy = HTTPServerProtocol(handler, self.clock)
        self.proxy.makeConnection(StringTransport())

    def data(self) -> dict[str, Any]:
        response = self.routes.handle(b"GET", b"/status/dashboard/node")
        assert not isinstance(response, ForwardTo)
        self.assertEqual(response.status, 200)
        self.assertEqual(
            dict(response.headers)[b"Content-Type"], b"application/json; charset=utf-8"
        )
        return json.loads(response.body)

    def test_empty(self) -> None:
        """A fresh node: its identity, no endpoint, no upstream, no error."""
        data = self.data()
        self.assertEqual(
            data["node"], {"id": "n1", "proxy_addr": "127.0.0.1:1", "admin_addr": "127.0.0.1:2"}
        )
        self.assertEqual((data["endpoints"], data["upstreams"]), ([], []))
        self.assertEqual(data["recent_errors"], [])
        self.assertEqual((data["bucket_seconds"], data["buckets"]), (10, BUCKETS))
        self.assertEqual(data["time"], T0)

    def test_proxy_requests_counted(self) -> None:
        """Proxy-port requests appear per endpoint, a failure with the reason Go gives."""
        for _ in range(3):
            self.proxy.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\nx-piko-endpoint: <b>\r\n\r\n")
        data = self.data()
        [endpoint] = data["endpoints"]
        self.assertEqual(
            (endpoint["endpoint"], endpoint["kind"], endpoint["requests"], endpoint["errors"]),
            ("<b>", "http", 3, 3),
        )
        self.assertEqual(
            data["recent_errors"][0],
            {
                "time": T0,
                "endpoint": "<b>",
                "kind": "http",
                "status": 502,
                "reason": "no available upstreams",
            },
        )
        # Prometheus counted the same requests: one observer fed both.
        self.assertIn(
            b'piko_proxy_requests_total{method="GET",status="502"} 3.0', self.metrics.render()[1]
        )

    def test_upstreams_listed(self) -> None:
        """Each upstream session with its address, connection time and open streams."""
        self.registry.add("ep", FakeSession("127.0.0.1:5555", T0 - 90, 2))
        self.registry.add("ep", FakeSession("[::1]:6666", T0 - 30, 0))
        self.assertEqual(
            self.data()["upstreams"],
            [
                {
                    "endpoint": "ep",
                    "address": "127.0.0.1:5555",
                    "connected_at": T0 - 90,
                    "connected_since": "2023-11-14T22:11:50Z",
                    "streams": 2,
                },
                {
                    "endpoint": "ep",
                    "address": "[::1]:6666",
                    "connected_at": T0 - 30,
                    "connected_since": "2023-11-14T22:12:50Z",
                    "streams": 0,
                },
            ],
        )

    def test_forwarded_to_other_node(self) -> None:
        """``?forward=<node>`` sends the request to that node's admin port."""
        self.assertEqual(
            self.routes.handle(b"GET", b"/status/dashboard/node?forward=n2"),
            ForwardTo("n2", "127.0.0.1:4"),
        )
        self.assertEqual(
            self.routes.handle(b"GET", b"/status/dashboard/node?forward=n1").status,
            200,
        )

    def test_other_paths_not_found(self) -> None:
        """Only the one route exists under the prefix; Go's 404 otherwise."""
        for target in (b"/status/dashboard/", b"/status/dashboard/nodes"):
            response = self.routes.handle(b"GET", target)
            self.assertEqual(response.status, 404)
        self.assertEqual(self.routes.handle(b"POST", b"/status/dashboard/node").status, 404)

    def test_no_created_series(self) -> None:
        """``/metrics`` has Go's series only: no ``*_created`` sample of prometheus_client."""
        self.proxy.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\nx-piko-endpoint: e\r\n\r\n")
        body = self.metrics.render()[1].decode()
        self.assertNotIn("_created", body)
        self.assertIn("piko_proxy_requests_total", body)
        self.assertIn("piko_proxy_request_latency_seconds_count", body)

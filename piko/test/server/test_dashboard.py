# -*- test-case-name: piko.test.server.test_dashboard -*-
"""Tests for :mod:`piko.server.dashboard` and its admin routes (the page itself runs in
:mod:`piko.test.e2e.test_dashboard`, in headless Chromium)."""

from __future__ import annotations

import re
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from piko.server.admin import AdminRoutes, LocalNode
from piko.server.dashboard import PAGE
from piko.server.registry import UpstreamRegistry


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
        """The page polls the status API and the metrics it shows."""
        text = PAGE.decode()
        for path in ("/status/cluster/nodes", "/metrics", "piko_proxy_requests_total"):
            self.assertIn(path, text)

    def test_ids_set_as_text(self) -> None:
        """Endpoint and node ids (untrusted) are never inserted as markup."""
        self.assertNotIn("innerHTML", PAGE.decode())
        self.assertNotIn("insertAdjacentHTML", PAGE.decode())

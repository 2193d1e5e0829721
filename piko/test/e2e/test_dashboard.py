# -*- test-case-name: piko.test.e2e.test_dashboard -*-
"""
The status dashboard rendered by a real browser: headless Chromium (Debian's ``chromium``)
loads ``/ui`` from a server node on loopback, with an SDK upstream connected.

Without Chromium the test is skipped on a developer's machine, saying how to install it, so
the README's test command passes on a fresh machine; under ``CI=true`` a missing Chromium
fails instead (``.ci/run`` installs it), so CI never passes by skipping.
``--virtual-time-budget`` lets the page's polling run before the DOM is dumped, without
waiting on the wall clock; every process is killed after :data:`CHROMIUM_TIMEOUT` seconds.
The screenshot is kept in the test's directory under ``_trial_temp``.
"""

from __future__ import annotations

import os
import re
import shutil
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.error import ProcessDone
from twisted.internet.protocol import Factory, ProcessProtocol, Protocol
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest
from twisted.web import resource, server

from piko.test.e2e.harness import E2ETestCase, reactor

#: Seconds one Chromium run may take before it is killed.
CHROMIUM_TIMEOUT = 40.0

#: The endpoint the test connects (with a character that must be shown as text, not markup).
ENDPOINT = "dash-ep<b>"


def chromium_path() -> str | None:
    """The Chromium binary: ``$PIKO_CHROMIUM``, else ``chromium`` or ``chromium-browser``."""
    configured = os.environ.get("PIKO_CHROMIUM")
    if configured:
        return configured
    return shutil.which("chromium") or shutil.which("chromium-browser")


class _Collect(ProcessProtocol):
    """Gathers a process's output; ``done`` fires with ``(status, stdout, stderr)``."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.err = bytearray()
        self.done: Deferred[tuple[int | None, bytes, bytes]] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.out += data

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def processEnded(self, reason: Failure) -> None:
        status = 0 if reason.check(ProcessDone) else getattr(reason.value, "exitCode", None)
        self.done.callback((status, bytes(self.out), bytes(self.err)))


class Hello(resource.Resource):
    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        return b"hello"


class DashboardBrowserTests(E2ETestCase):
    timeout = 120

    def chromium(self, *args: str) -> Deferred[tuple[int | None, bytes, bytes]]:
        """Run headless Chromium with ``args``, killed after :data:`CHROMIUM_TIMEOUT`."""
        binary = chromium_path()
        if binary is None:
            reason = (
                "chromium is not installed: the dashboard test needs Debian's chromium "
                "(apt-get install -y chromium; .ci/run installs it)"
            )
            if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
                self.fail(reason)
            raise SkipTest(reason)
        profile = os.path.abspath(self.mktemp())
        os.makedirs(profile)
        argv = [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            f"--user-data-dir={profile}",
            *args,
        ]
        env = dict(os.environ, HOME=profile)
        collect = _Collect()
        process = reactor.spawnProcess(collect, binary, argv, env=env)
        killer = reactor.callLater(CHROMIUM_TIMEOUT, process.signalProcess, "KILL")

        def ended(result: tuple[int | None, bytes, bytes]) -> Any:
            if killer.active():
                killer.cancel()
            return result

        return collect.done.addCallback(ended)

    @inlineCallbacks
    def test_dashboard_shows_connected_endpoint(self) -> Any:
        """
        Rendered in Chromium, /ui shows the node as active and the connected endpoint with its
        upstream count on that node, and the request counter moved; a screenshot is saved.
        """
        yield self.start_server()
        yield self.listen(ENDPOINT, server.Site(Hello()))
        yield self.listen(ENDPOINT, Factory.forProtocol(Protocol))
        self.assertEqual(self.server.registry.endpoints(), {ENDPOINT: 2})
        # One proxied request (no such endpoint: 502) so the request counter is not empty.
        response = yield self.request(
            b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nx-piko-endpoint: nowhere\r\n\r\n"
        )
        self.assertEqual(response.status, 502)
        url = f"http://127.0.0.1:{self.port_of('admin')}/ui?interval=1"

        status, dom, err = yield self.chromium("--virtual-time-budget=5000", "--dump-dom", url)
        text = dom.decode("utf-8", "replace")
        self.assertEqual(status, 0, err.decode("utf-8", "replace")[-2000:])
        self.assertIn('data-loaded="true"', text, text[-3000:])
        row = re.search(r'<tr data-endpoint="([^"]*)">(.*?)</tr>', text, re.S)
        self.assertIsNotNone(row, text[-3000:])
        assert row is not None
        # The id is shown as text: the browser escapes its "<" when serialising.
        self.assertEqual(row.group(1), "dash-ep&lt;b&gt;")
        self.assertIn("<td>dash-ep&lt;b&gt;</td>", row.group(2))
        self.assertIn('<td class="num" data-node="node-e2e">2</td>', row.group(2))
        self.assertIn('<tr data-node="node-e2e"><td>node-e2e</td>', text)
        self.assertIn('<span class="status active">active</span>', text)
        self.assertIn('<div class="value" id="requests-total">1</div>', text)
        # Several polls ran, so a rate was computed from two samples (no traffic since: 0).
        self.assertIn('<div class="value" id="rate-total">0.00</div>', text)
        self.assertIn('<span id="local-node">node-e2e</span>', text)
        self.assertIn('<span id="error" role="alert"></span>', text)

        shots = os.path.abspath(self.mktemp())
        os.makedirs(shots)
        screenshot = os.path.join(shots, "dashboard.png")
        status, _, err = yield self.chromium(
            "--virtual-time-budget=5000",
            "--hide-scrollbars",
            "--window-size=1280,800",
            f"--screenshot={screenshot}",
            url,
        )
        self.assertEqual(status, 0, err.decode("utf-8", "replace")[-2000:])
        with open(screenshot, "rb") as f:
            self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")

# -*- test-case-name: piko.test.e2e.test_dashboard -*-
"""
The status dashboard rendered by a real browser: headless Chromium (Debian's ``chromium``)
loads ``/ui`` from one node of a two-node cluster on loopback (gossip, forwarding and admin
relaying all real), after the test sent known traffic to two HTTP endpoints and a TCP one
through both nodes; the numbers the page shows are checked against that traffic.

Without Chromium the test is skipped on a developer's machine, saying how to install it, so
the README's test command passes on a fresh machine; under ``CI=true`` a missing Chromium
fails instead (``.ci/run`` installs it), so CI never passes by skipping.
``--virtual-time-budget`` lets the page's polling run before the DOM is dumped, without
waiting on the wall clock; every process is killed after :data:`CHROMIUM_TIMEOUT` seconds.
The screenshot is kept in the test's directory under ``_trial_temp``; with
``PIKO_UPDATE_SCREENSHOT=1`` it is also copied to ``docs/_static/dashboard.png`` (the one the
docs show, see ``docs/dashboard.md``).
"""

from __future__ import annotations

import os
import re
import shutil
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.error import ProcessDone
from twisted.internet.protocol import Factory, ProcessProtocol
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest
from twisted.web import resource, server

from piko.client import Dialer
from piko.client.upstream import Upstream
from piko.cluster.nodes import NodeStatus
from piko.server.service import PikoServerService
from piko.test.e2e.harness import E2ETestCase, reactor
from piko.test.e2e.test_gossip_cluster import endpoint_on, status_of, wait_cluster
from piko.test.e2e.test_tcp_ws import Collector
from piko.test.e2e.test_tcp_ws import Echo as TCPEcho

#: Seconds one Chromium run may take before it is killed.
CHROMIUM_TIMEOUT = 40.0

#: The endpoints (one with characters that must be shown as text, not markup).
WEB = "web<b>"
API = "api"
PIPE = "pipe"

#: Where ``PIKO_UPDATE_SCREENSHOT=1`` puts the screenshot.
DOCS_SCREENSHOT = os.path.join(
    os.path.dirname(__file__), "..", "..", "..", "docs", "_static", "dashboard.png"
)


def chromium_path() -> str | None:
    """The Chromium binary: ``$PIKO_CHROMIUM``, else ``chromium`` or ``chromium-browser``."""
    configured = os.environ.get("PIKO_CHROMIUM")
    if configured:
        return configured
    return shutil.which("chromium") or shutil.which("chromium-browser")


def require_chromium(test: str) -> str:
    """
    The Chromium binary for ``test``; skipped without one on a developer's machine, failed
    under ``CI=true`` (``.ci/run`` installs it, so its absence there is a broken check).
    """
    binary = chromium_path()
    if binary is not None:
        return binary
    reason = (
        f"chromium is not installed: the {test} test needs Debian's chromium "
        "(apt-get install -y chromium; .ci/run installs it)"
    )
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        raise AssertionError(reason)
    raise SkipTest(reason)


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


class App(resource.Resource):
    """``/fail`` answers 500, anything else 200 ``hello``."""

    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        if request.path == b"/fail":
            request.setResponseCode(500)
            return b"broken"
        return b"hello"


def get(path: str, endpoint: str) -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nx-piko-endpoint: {endpoint}\r\n\r\n"
    ).encode()


def cell(row: str, name: str) -> str:
    """The ``data-value`` of the cell of class ``name`` in a serialised table row."""
    found = re.search(rf'<td class="num {name}(?: [a-z ]*)?" data-value="([^"]*)"', row)
    assert found is not None, (name, row)
    return found.group(1)


def row_of(text: str, table: str, **attributes: str) -> str:
    """The serialised ``<tr>`` of table ``table`` with these ``data-*`` attributes."""
    section = text[text.index(f'<table id="{table}">') :]
    section = section[: section.index("</table>")]
    for row in re.findall(r"<tr [^>]*>.*?</tr>", section, re.S):
        opening = row[: row.index(">")]
        if all(f'data-{k}="{v}"' in opening for k, v in attributes.items()):
            return str(row)
    raise AssertionError(f"no row {attributes} in {table}: {section}")


class DashboardBrowserTests(E2ETestCase):
    timeout = 120

    def chromium(self, *args: str) -> Deferred[tuple[int | None, bytes, bytes]]:
        """Run headless Chromium with ``args``, killed after :data:`CHROMIUM_TIMEOUT`."""
        binary = require_chromium("dashboard")
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
        env = dict(os.environ, HOME=profile, TZ="UTC")
        collect = _Collect()
        process = reactor.spawnProcess(collect, binary, argv, env=env)
        killer = reactor.callLater(CHROMIUM_TIMEOUT, process.signalProcess, "KILL")

        def ended(result: tuple[int | None, bytes, bytes]) -> Any:
            if killer.active():
                killer.cancel()
            return result

        return collect.done.addCallback(ended)

    @inlineCallbacks
    def start_pair(self) -> Any:
        """Two nodes joined by gossip, each seeing the other active."""
        a = yield self.start_cluster_node("node-a")
        self.server = a
        b = yield self.start_cluster_node("node-b", (a.gossip.addr,))
        yield wait_cluster(a.cluster, status_of("node-b", NodeStatus.ACTIVE))
        yield wait_cluster(b.cluster, status_of("node-a", NodeStatus.ACTIVE))
        return a, b

    @inlineCallbacks
    def listen_on(self, node: PikoServerService, endpoint_id: str, factory: Any) -> Any:
        upstream = Upstream(reactor, f"http://127.0.0.1:{self.port_of('upstream', node)}")
        port = yield upstream.listen(endpoint_id, factory)
        self.addCleanup(port.shutdown)
        return port

    @inlineCallbacks
    def send(self, node: PikoServerService, path: str, endpoint: str, count: int) -> Any:
        """``count`` requests through ``node``'s proxy port; their statuses and sizes."""
        statuses, size = [], 0
        for _ in range(count):
            raw = get(path, endpoint)
            response = yield self.request(raw, self.port_of("proxy", node))
            statuses.append(response.status)
            size += len(raw)
        return statuses, size

    @inlineCallbacks
    def test_dashboard_shows_cluster_traffic(self) -> Any:
        """
        Rendered in Chromium from node A, /ui shows both nodes' traffic summed per endpoint
        (each request counted once, at the node it entered), the errors and their reasons,
        the upstream sessions with their open streams, and the node table; ids are text.
        A screenshot is saved.
        """
        a, b = yield self.start_pair()
        yield self.listen_on(a, WEB, server.Site(App()))
        yield self.listen_on(b, API, server.Site(App()))
        yield self.listen_on(a, PIPE, Factory.forProtocol(TCPEcho))
        yield wait_cluster(b.cluster, endpoint_on("node-a", WEB))
        yield wait_cluster(a.cluster, endpoint_on("node-b", API))

        web_a, web_a_size = yield self.send(a, "/", WEB, 7)
        web_b, web_b_size = yield self.send(b, "/", WEB, 5)  # forwarded to A
        api_ok, api_ok_size = yield self.send(b, "/", API, 4)
        api_fail, _ = yield self.send(a, "/fail", API, 3)  # forwarded to B: 500
        nowhere, _ = yield self.send(a, "/", "nowhere", 1)
        self.assertEqual(web_a + web_b + api_ok, [200] * 16)
        self.assertEqual((api_fail, nowhere), ([500] * 3, [502]))
        # One TCP connection through node A, left open while the page loads.
        dialer = Dialer(reactor, f"http://127.0.0.1:{self.port_of('proxy', a)}")
        pipe = yield dialer.dial(PIPE, Factory.forProtocol(Collector))
        pipe.transport.write(b"ping")
        yield pipe.wait_for(4)

        url = f"http://127.0.0.1:{self.port_of('admin', a)}/ui?interval=1"
        status, dom, err = yield self.chromium("--virtual-time-budget=5000", "--dump-dom", url)
        text = dom.decode("utf-8", "replace")
        self.assertEqual(status, 0, err.decode("utf-8", "replace")[-2000:])
        self.assertIn('data-loaded="true"', text, text[-3000:])
        self.assertIn('<span id="error" role="alert"></span>', text)
        self.assertIn('<span id="local-node">node-a</span>', text)

        # Per endpoint, the whole cluster: what was sent, each request once.
        web = row_of(text, "endpoints", endpoint="web&lt;b&gt;", kind="http")
        self.assertIn('<td class="name">web&lt;b&gt;</td>', web)  # text, not markup
        self.assertEqual((cell(web, "requests"), cell(web, "errors")), ("12", "0"))
        self.assertEqual(cell(web, "bytes-in"), str(web_a_size + web_b_size))
        self.assertEqual(cell(web, "bytes-out"), str(12 * len(b"hello")))
        self.assertEqual(cell(web, "upstreams"), "1")
        self.assertEqual(float(cell(web, "rps")), 12 / 60)
        self.assertIn(cell(web, "p50"), ("0.001", "0.0025", "0.005", "0.01", "0.025", "0.05"))
        api = row_of(text, "endpoints", endpoint="api", kind="http")
        self.assertEqual((cell(api, "requests"), cell(api, "errors")), ("7", "3"))
        self.assertEqual(float(cell(api, "error-ratio")), 100 * 3 / 7)
        tcp = row_of(text, "endpoints", endpoint="pipe", kind="tcp")
        self.assertEqual((cell(tcp, "requests"), cell(tcp, "errors")), ("1", "0"))
        self.assertIn('<span class="kind tcp">TCP</span>', tcp)
        lost = row_of(text, "endpoints", endpoint="nowhere", kind="http")
        self.assertEqual((cell(lost, "requests"), cell(lost, "errors")), ("1", "1"))
        self.assertIn('<div class="value" id="requests-total">21</div>', text)
        self.assertIn('<div class="value" id="errors-total">4</div>', text)
        self.assertIn('<div class="value" id="node-count">2</div>', text)
        self.assertIn('<div class="value" id="upstream-count">3</div>', text)

        # Per node: requests that entered there, and those forwarded in by the other.
        node_a = row_of(text, "nodes", node="node-a")
        self.assertIn("<td>node-a</td>", node_a)
        self.assertIn('<span class="status active">active</span>', node_a)
        self.assertEqual(
            (cell(node_a, "requests"), cell(node_a, "errors"), cell(node_a, "forwarded")),
            ("12", "4", "5"),
        )
        node_b = row_of(text, "nodes", node="node-b")
        self.assertEqual(
            (cell(node_b, "requests"), cell(node_b, "errors"), cell(node_b, "forwarded")),
            ("9", "0", "3"),
        )

        # Upstream sessions: address, connection time, open streams (the TCP connection).
        up_pipe = row_of(text, "upstreams", endpoint="pipe", node="node-a")
        self.assertRegex(up_pipe, r'<td class="address">127\.0\.0\.1:\d+</td>')
        self.assertEqual(cell(up_pipe, "streams"), "1")
        up_api = row_of(text, "upstreams", endpoint="api", node="node-b")
        self.assertEqual(cell(up_api, "streams"), "0")
        self.assertRegex(up_api, r'title="\d{4}-\d\d-\d\dT[\d:.]+Z"')

        # Recent errors, newest first: the unknown endpoint, then the three 500s.
        errors = text[text.index('<table id="errors">') :]
        errors = errors[: errors.index("</table>")]
        reasons = re.findall(
            r'<tr data-endpoint="([^"]*)">.*?data-value="(\d+)".*?<td class="reason">([^<]*)</td>',
            errors,
            re.S,
        )
        self.assertEqual(
            reasons,
            [("nowhere", "502", "no available upstreams")]
            + [("api", "500", "upstream answered 500")] * 3,
        )
        # The charts were drawn (their legends name the endpoints, as text).
        self.assertIn("web&lt;b&gt;</span>", text[text.index('id="legend-requests"') :])

        shots = os.path.abspath(self.mktemp())
        os.makedirs(shots)
        screenshot = os.path.join(shots, "dashboard.png")
        status, _, err = yield self.chromium(
            "--virtual-time-budget=5000",
            "--hide-scrollbars",
            "--window-size=1280,1640",
            f"--screenshot={screenshot}",
            url,
        )
        self.assertEqual(status, 0, err.decode("utf-8", "replace")[-2000:])
        with open(screenshot, "rb") as f:
            self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")
        if os.environ.get("PIKO_UPDATE_SCREENSHOT") == "1":
            shutil.copyfile(screenshot, DOCS_SCREENSHOT)
        pipe.transport.loseConnection()
        yield pipe.lost

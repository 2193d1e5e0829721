# -*- test-case-name: piko.test.e2e.test_inspector -*-
"""
The request inspector in a real browser: a Piko server, an agent (``make_agent_service``, as
``piko agent http`` runs it, its inspector on a free loopback port) and a local service, all on
loopback; headless Chromium (Debian's ``chromium``) opens the inspector page and is driven over
the DevTools protocol (a WebSocket, through autobahn).

Requests sent through the server after the page loaded appear in its list (the live stream);
one is replayed with a header changed (the editor filled and sent as a user would), the page
shows the original and the replay side by side, and the local service is asserted to have
received both.  Every wait is the page's own promise, bounded inside the page and by trial's
timeout; Chromium is killed at cleanup.

Chromium missing skips on a developer's machine and fails under ``CI=true`` (see
:mod:`piko.test.e2e.test_dashboard`).  The screenshot is kept under ``_trial_temp``; with
``PIKO_UPDATE_SCREENSHOT=1`` it is also copied to ``docs/_static/inspector.png`` (the one
``docs/inspector.md`` shows).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
from typing import Any

from attrs import evolve
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.python.failure import Failure
from twisted.web import resource, server

from piko.agent.service import make_agent_service
from piko.config import AgentConfig, ListenerConfig
from piko.test.e2e.harness import E2ETestCase, reactor
from piko.test.e2e.test_dashboard import _Collect, require_chromium

#: Where ``PIKO_UPDATE_SCREENSHOT=1`` puts the screenshot.
DOCS_SCREENSHOT = os.path.join(
    os.path.dirname(__file__), "..", "..", "..", "docs", "_static", "inspector.png"
)
ENDPOINT = "webhooks"


class LocalService(resource.Resource):
    """Records every request it gets; answers JSON (``/fail`` answers 500)."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.received: list[tuple[bytes, bytes, dict[bytes, bytes], bytes]] = []

    def render(self, request: Any) -> bytes:
        body = request.content.read()
        headers = {k.lower(): v[0] for k, v in request.requestHeaders.getAllRawHeaders()}
        self.received.append((request.method, request.uri, headers, body))
        request.setHeader(b"content-type", b"application/json")
        if request.path == b"/fail":
            request.setResponseCode(500)
            return b'{"error": "the handler broke"}'
        seen = headers.get(b"x-signature", b"none").decode()
        return json.dumps({"ok": True, "path": request.uri.decode(), "signature": seen}).encode()


class _DevToolsProcess(_Collect):
    """Chromium's output; ``endpoint`` fires with the DevTools port once it is listening."""

    def __init__(self) -> None:
        super().__init__()
        self.endpoint: Deferred[int] = Deferred()

    def errReceived(self, data: bytes) -> None:
        super().errReceived(data)
        found = re.search(rb"DevTools listening on ws://127\.0\.0\.1:(\d+)/", bytes(self.err))
        if found and not self.endpoint.called:
            self.endpoint.callback(int(found.group(1)))

    def processEnded(self, reason: Failure) -> None:
        if not self.endpoint.called:
            self.endpoint.errback(RuntimeError(bytes(self.err)[-2000:].decode("utf-8", "replace")))
        super().processEnded(reason)


class DevTools(WebSocketClientProtocol):
    """A minimal DevTools protocol client: :meth:`call` a method, get its result."""

    def __init__(self) -> None:
        super().__init__()
        self.pending: dict[int, Deferred[Any]] = {}
        self.next_id = 0
        self.opened: Deferred[DevTools] = Deferred()

    def onOpen(self) -> None:
        self.opened.callback(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        message = json.loads(payload)
        d = self.pending.pop(message.get("id", -1), None)
        if d is None:
            return  # an event
        if "error" in message:
            d.errback(RuntimeError(str(message["error"])))
        else:
            d.callback(message["result"])

    def onClose(self, wasClean: bool, code: int, reason: str) -> None:
        pending, self.pending = self.pending, {}
        for d in pending.values():
            d.errback(RuntimeError(f"devtools closed: {reason}"))

    def call(self, method: str, **params: Any) -> Deferred[Any]:
        self.next_id += 1
        d: Deferred[Any] = Deferred()
        self.pending[self.next_id] = d
        message = {"id": self.next_id, "method": method, "params": params}
        self.sendMessage(json.dumps(message).encode())
        return d

    @inlineCallbacks
    def evaluate(self, expression: str) -> Any:
        """The value of ``expression`` in the page (awaited if it is a promise)."""
        result = yield self.call(
            "Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True
        )
        if "exceptionDetails" in result:
            raise AssertionError(json.dumps(result["exceptionDetails"])[:2000])
        return result["result"].get("value")

    def until(self, condition: str, what: str, timeout_ms: int = 15000) -> Deferred[Any]:
        """
        Resolve once ``condition`` (a JavaScript expression) is truthy in the page; checked on
        every DOM change, failing with ``what`` after ``timeout_ms``.
        """
        return self.evaluate(
            f"""new Promise((resolve, reject) => {{
              const check = () => {{ try {{ return {condition}; }} catch (e) {{ return false; }} }};
              if (check()) return resolve(true);
              const observer = new MutationObserver(() => {{
                if (check()) {{ observer.disconnect(); clearTimeout(timer); resolve(true); }}
              }});
              observer.observe(document, {{subtree: true, childList: true, attributes: true,
                                          characterData: true}});
              const timer = setTimeout(() => {{
                observer.disconnect();
                reject(new Error({json.dumps("timed out waiting for " + what)} + ": " +
                                 document.body.innerText.slice(0, 1500)));
              }}, {timeout_ms});
            }})"""
        )


class InspectorBrowserTests(E2ETestCase):
    timeout = 120

    def require_chromium(self) -> str:
        return require_chromium("inspector")

    @inlineCallbacks
    def start_agent(self, service_port: int) -> Any:
        config = AgentConfig()
        config = evolve(
            config,
            connect=evolve(config.connect, url=f"http://127.0.0.1:{self.port_of('upstream')}"),
            listeners=(
                ListenerConfig(
                    endpoint_id=ENDPOINT, addr=f"127.0.0.1:{service_port}", timeout=10.0
                ),
            ),
            inspect=evolve(config.inspect, bind_addr="127.0.0.1:0"),
            grace_period=2.0,
        )
        agent = make_agent_service(config, reactor, stop_reactor_on_failure=False)
        agent.startService()
        self.addCleanup(agent.stopService)
        yield agent.ready
        assert agent.inspector is not None
        yield agent.inspector.listening
        return agent

    @inlineCallbacks
    def open_browser(self, binary: str, url: str) -> Any:
        """Chromium, and a DevTools connection to its page, navigated to ``url``."""
        profile = os.path.abspath(self.mktemp())
        os.makedirs(profile)
        argv = [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--window-size=1440,1000",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            f"--user-data-dir={profile}",
            "about:blank",
        ]
        process = _DevToolsProcess()
        transport = reactor.spawnProcess(
            process, binary, argv, env=dict(os.environ, HOME=profile, TZ="UTC")
        )

        def kill() -> Any:
            if not process.done.called:
                transport.signalProcess("KILL")
            return process.done

        self.addCleanup(kill)
        port = yield process.endpoint
        # The page's own DevTools WebSocket, from the browser's target list.
        import treq
        from twisted.web.client import HTTPConnectionPool

        pool = HTTPConnectionPool(reactor, persistent=False)
        response = yield treq.get(f"http://127.0.0.1:{port}/json/list", pool=pool)
        targets = yield response.json()
        [page] = [t for t in targets if t["type"] == "page"]
        factory = WebSocketClientFactory(page["webSocketDebuggerUrl"])
        factory.protocol = DevTools
        devtools = yield TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(factory)
        yield devtools.opened
        self.addCleanup(lambda: devtools.transport.loseConnection())
        # Navigate now that we are attached: evaluations run in the inspector page.
        yield devtools.call("Page.navigate", url=url)
        return devtools

    def send(self, method: str, path: str, body: bytes = b"", **headers: str) -> Any:
        lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", f"x-piko-endpoint: {ENDPOINT}"]
        lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
        if body or method == "POST":
            lines.append(f"Content-Length: {len(body)}")
        raw = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
        return self.request(raw, self.port_of("proxy"))

    @inlineCallbacks
    def test_live_list_replay_with_changed_header(self) -> Any:
        """
        Requests through the server appear live in the page; one replayed with a changed
        header reaches the local service again, with that header, and the page compares the
        two responses side by side.
        """
        binary = self.require_chromium()
        yield self.start_server()
        local = LocalService()
        site = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            server.Site(local)
        )
        self.addCleanup(site.stopListening)
        agent = yield self.start_agent(site.getHost().port)
        url = agent.inspector.url
        self.assertRegex(url, r"^http://127\.0\.0\.1:\d+/$")

        devtools = yield self.open_browser(binary, url)
        yield devtools.until(
            "document.body.dataset.loaded === 'true' && "
            "document.getElementById('live').classList.contains('on')",
            "the page to load and its stream to open",
        )

        # Sent after the page loaded: they can only appear through the live stream.
        payload = b'{"event": "invoice.paid", "amount": 4200, "items": [{"sku": "A-1"}]}'
        sent = [
            (yield self.send("GET", "/health")),
            (
                yield self.send(
                    "POST",
                    "/webhooks/stripe?attempt=1",
                    payload,
                    Content_Type="application/json",
                    X_Signature="t=1,v1=old",
                )
            ),
            (yield self.send("GET", "/fail")),
        ]
        self.assertEqual([r.status for r in sent], [200, 200, 500])
        yield devtools.until(
            "document.querySelectorAll('#requests tbody tr').length === 3 && "
            "!document.querySelector('#requests td.pending')",
            "three completed rows",
        )
        rows = yield devtools.evaluate(
            "Array.from(document.querySelectorAll('#requests tbody tr')).map("
            "tr => [tr.children[1].textContent, tr.children[2].textContent, tr.dataset.status])"
        )
        self.assertEqual(
            rows,
            [
                ["GET", "/fail", "500"],
                ["POST", "/webhooks/stripe?attempt=1", "200"],
                ["GET", "/health", "200"],
            ],
        )

        # Filters: status and path, all must match.
        yield devtools.evaluate(
            "(() => { const f = document.getElementById('f-status'); f.value = '5xx';"
            " f.dispatchEvent(new Event('input')); })()"
        )
        shown = yield devtools.evaluate("document.querySelectorAll('#requests tbody tr').length")
        self.assertEqual(shown, 1)
        yield devtools.evaluate(
            "(() => { const f = document.getElementById('f-status'); f.value = '';"
            " f.dispatchEvent(new Event('input'));"
            " const h = document.getElementById('f-header'); h.value = 'x-signature';"
            " h.dispatchEvent(new Event('input')); })()"
        )
        shown = yield devtools.evaluate(
            "Array.from(document.querySelectorAll('#requests tbody tr')).map(tr => tr.dataset.id)"
        )
        self.assertEqual(len(shown), 1)
        [post_id] = shown

        # Open the POST: the JSON body is pretty-printed.
        yield devtools.evaluate(f"document.querySelector('tr[data-id=\"{post_id}\"]').click()")
        yield devtools.until(
            "document.getElementById('d-request').textContent.includes('\"amount\": 4200')",
            "the pretty request body",
        )

        # Replay with a changed header, through the editor.
        yield devtools.evaluate(
            """(() => {
              document.getElementById('modify').click();
              const h = document.getElementById('m-headers');
              h.value = h.value.replace('X-Signature: t=1,v1=old', 'X-Signature: t=2,v1=new');
              document.getElementById('m-send').click();
            })()"""
        )
        yield devtools.until(
            "!document.getElementById('compare').hidden && "
            "document.getElementById('c-right').textContent.includes('t=2,v1=new')",
            "the side-by-side comparison",
        )
        left = yield devtools.evaluate("document.getElementById('c-left').textContent")
        right = yield devtools.evaluate("document.getElementById('c-right').textContent")
        self.assertIn('"signature": "t=1,v1=old"', left)
        self.assertIn('"signature": "t=2,v1=new"', right)
        diffs = yield devtools.evaluate("document.querySelectorAll('#c-right .diff').length")
        self.assertGreaterEqual(diffs, 1)
        yield devtools.evaluate(
            "(() => { const h = document.getElementById('f-header'); h.value = '';"
            " h.dispatchEvent(new Event('input')); })()"
        )
        yield devtools.until(
            "document.querySelectorAll('#requests tbody tr').length === 4 && "
            f"document.querySelector('tr[data-replay-of=\"{post_id}\"]')",
            "the replay in the list",
        )

        # The local service received the original and the replay.
        posts = [r for r in local.received if r[0] == b"POST"]
        self.assertEqual(len(posts), 2)
        (_, uri1, headers1, body1), (_, uri2, headers2, body2) = posts
        self.assertEqual((uri1, uri2), (b"/webhooks/stripe?attempt=1",) * 2)
        self.assertEqual((body1, body2), (payload, payload))
        self.assertEqual(headers1[b"x-signature"], b"t=1,v1=old")
        self.assertEqual(headers2[b"x-signature"], b"t=2,v1=new")
        self.assertEqual(headers2[b"content-type"], b"application/json")

        # The screenshot the docs show: the list, the replay and its comparison.
        yield devtools.call(
            "Emulation.setDeviceMetricsOverride",
            width=1440,
            height=1250,
            deviceScaleFactor=1,
            mobile=False,
        )
        shot = yield devtools.call("Page.captureScreenshot", format="png")
        png = base64.b64decode(shot["data"])
        self.assertEqual(png[:8], b"\x89PNG\r\n\x1a\n")
        shots = os.path.abspath(self.mktemp())
        os.makedirs(shots)
        with open(os.path.join(shots, "inspector.png"), "wb") as f:
            f.write(png)
        if os.environ.get("PIKO_UPDATE_SCREENSHOT") == "1":
            shutil.copyfile(os.path.join(shots, "inspector.png"), DOCS_SCREENSHOT)

        # Export as curl.
        yield devtools.evaluate("document.getElementById('curl').click()")
        yield devtools.until(
            "document.getElementById('curl-text').value.startsWith('curl -X POST')",
            "the curl command",
        )

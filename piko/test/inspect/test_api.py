# -*- test-case-name: piko.test.inspect.test_api -*-
"""
Tests for :mod:`piko.inspect.api`: ngrok's API paths and shapes, replays, the live stream, the
guards (CSRF, Host, auth) and the page, through :class:`treq.testing.StubTreq`; no sockets.
"""

import base64
import json

from treq.testing import StubTreq
from twisted.trial.unittest import SynchronousTestCase

from piko.auth.token import InvalidToken, Token
from piko.inspect import InspectorResource
from piko.inspect.render import curl_command
from piko.test.agent.helpers import take
from piko.test.inspect.test_replay import captured

BASE = "http://127.0.0.1:4040"
JSON = {"Content-Type": ["application/json"]}


def raw_headers(headers):
    """Header names and values as bytes (str ones make twisted.web warn under ``-b``)."""
    return {k.encode(): [v.encode() for v in vs] for k, vs in (headers or {}).items()}


class Verifier:
    """Accepts the token ``good``."""

    def verify(self, token):
        if token != "good":
            raise InvalidToken("bad signature")
        return Token(expiry=None, endpoints=())


class APITests(SynchronousTestCase):
    def setUp(self):
        self.pair, self.endpoint, self.inspector, self.record = captured()
        self.stub = StubTreq(InspectorResource(self.inspector, proxy_url="http://piko:8000"))

    def call(self, method, path, body=None, headers=None, base=BASE):
        """``(status, headers, body bytes)`` of one request, answered in memory."""
        out = []
        kwargs = {"headers": raw_headers(headers)}
        if body is not None:
            kwargs["data"] = json.dumps(body).encode()
        d = self.stub.request(method, base + path, **kwargs)
        d.addCallback(lambda r: self.stub.content(r).addCallback(lambda c: out.append((r, c))))
        self.stub.flush()
        self.pair.pump()
        self.stub.flush()
        [(response, content)] = out
        return response.code, response.headers, content

    def get_json(self, path):
        code, _, content = self.call("GET", path)
        self.assertEqual(code, 200, content)
        return json.loads(content)

    def test_list_ngrok_shape(self):
        """GET /api/requests/http lists exchanges in ngrok's shape, newest first."""
        listing = self.get_json("/api/requests/http")
        self.assertEqual(listing["uri"], "/api/requests/http")
        [item] = listing["requests"]
        self.assertEqual(item["id"], self.record.id)
        self.assertEqual(item["uri"], f"/api/requests/http/{self.record.id}")
        self.assertEqual(item["tunnel_name"], "ep")
        self.assertEqual(item["remote_addr"], "203.0.113.9")
        self.assertEqual(item["start"], "2023-11-14T22:13:20Z")
        self.assertIsInstance(item["duration"], int)
        request, response = item["request"], item["response"]
        self.assertEqual(
            (request["method"], request["uri"], request["proto"]), ("POST", "/hook?x=1", "HTTP/1.1")
        )
        self.assertEqual(request["headers"]["Content-Type"], ["application/json"])
        raw = base64.b64decode(request["raw"])
        self.assertTrue(raw.startswith(b"POST /hook?x=1 HTTP/1.1\r\n"))
        self.assertTrue(raw.endswith(b'\r\n\r\n{"a": 1}\n'))
        self.assertEqual((response["status"], response["status_code"]), ("200 OK", 200))
        self.assertEqual(
            base64.b64decode(response["raw"]), b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        )
        self.assertEqual(request["body"], {"size": 9, "captured": 9, "truncated": False})

    def test_limit(self):
        """``limit`` bounds the list; a bad one is a 400 with why."""
        self.assertEqual(self.get_json("/api/requests/http?limit=0")["requests"], [])
        code, _, content = self.call("GET", "/api/requests/http?limit=x")
        self.assertEqual((code, json.loads(content)), (400, {"error": "limit must be an integer"}))

    def test_get_one_and_404(self):
        """GET /api/requests/http/:id is the record; an unknown id is a 404 JSON error."""
        self.assertEqual(
            self.get_json(f"/api/requests/http/{self.record.id}")["id"], self.record.id
        )
        code, _, content = self.call("GET", "/api/requests/http/req_missing")
        self.assertEqual(code, 404)
        self.assertIn("no such request", json.loads(content)["error"])

    def test_replay_204(self):
        """ngrok's replay: POST {"id"} answers 204, and the request reaches the local service."""
        code, _, content = self.call("POST", "/api/requests/http", {"id": self.record.id}, JSON)
        self.assertEqual((code, content), (204, b""))
        sent = take(self.endpoint.transports[-1])
        self.assertTrue(sent.startswith(b"POST /hook?x=1 HTTP/1.1\r\n"), sent)

    def test_replay_modified_and_wait(self):
        """A modified replay with ``wait`` answers the replay's record once it is answered."""
        out = []
        d = self.stub.post(
            BASE + "/api/requests/http",
            data=json.dumps(
                {
                    "id": self.record.id,
                    "wait": True,
                    "method": "PUT",
                    "path": "/changed",
                    "headers": [["Host", "h"], ["X-Mod", "1"]],
                    "body": "héllo",
                }
            ).encode(),
            headers=raw_headers(JSON),
        )
        d.addCallback(self.stub.content).addCallback(lambda c: out.append(json.loads(c)))
        self.stub.flush()
        self.pair.pump()
        sent = take(self.endpoint.transports[-1])
        self.assertTrue(sent.startswith(b"PUT /changed HTTP/1.1\r\nHost: h\r\n"), sent)
        self.assertIn(b"\r\nX-Mod: 1\r\n", sent)
        self.assertTrue(sent.endswith("\r\n\r\nhéllo".encode()), sent)
        self.assertEqual(out, [])
        self.endpoint.protocols[-1].dataReceived(
            b"HTTP/1.1 418 I'm a teapot\r\nContent-Length: 0\r\n\r\n"
        )
        self.pair.pump()
        self.stub.flush()
        [record] = out
        self.assertEqual(
            (record["replay_of"], record["response"]["status_code"]), (self.record.id, 418)
        )

    def test_replay_errors(self):
        """Unknown ids are 404, invalid changes and bodies 400, each with why."""
        cases = [
            ({"id": "req_missing"}, 404, "no such request"),
            ({"nope": 1}, 400, 'expected {"id"'),
            ({"id": self.record.id, "headers": "X: y"}, 400, "list of [name, value]"),
            ({"id": self.record.id, "path": "no-slash"}, 400, "must start with /"),
            ({"id": self.record.id, "body_base64": "!!"}, 400, "not base64"),
        ]
        for body, status, message in cases:
            code, _, content = self.call("POST", "/api/requests/http", body, JSON)
            self.assertEqual(code, status, body)
            self.assertIn(message, json.loads(content)["error"])
        code, _, content = self.call("POST", "/api/requests/http", None, JSON)
        self.assertEqual(code, 400)

    def test_clear_204(self):
        """DELETE /api/requests/http answers 204 and forgets every exchange."""
        code, _, _ = self.call("DELETE", "/api/requests/http")
        self.assertEqual(code, 204)
        self.assertEqual(self.get_json("/api/requests/http")["requests"], [])

    def test_curl(self):
        """The curl export names the method, URL, headers and body, quoted for a shell."""
        code, headers, content = self.call("GET", f"/api/requests/http/{self.record.id}/curl")
        self.assertEqual(code, 200)
        self.assertEqual(
            content.decode(),
            "curl -X POST 'http://piko:8000/hook?x=1' -H 'Host: h' "
            "-H 'Content-Type: application/json' -H 'X-Forwarded-For: 203.0.113.9' "
            "--data-binary '{\"a\": 1}\n'\n",
        )
        code, _, content = self.call(
            "GET", f"/api/requests/http/{self.record.id}/curl?base=http%3A%2F%2Fx%3A1"
        )
        self.assertIn("'http://x:1/hook?x=1'", content.decode())

    def test_curl_truncated_noted(self):
        """A truncated body is said to be so in the curl export."""
        _, _, _, record = captured(body=b"q" * 40, body_cap=8)
        self.assertTrue(
            curl_command(record, "http://p").endswith("# body truncated: 40 bytes, 8 kept")
        )

    def test_connections(self):
        """GET /api/connections lists connection records (none here), DELETE clears them."""
        self.assertEqual(
            self.get_json("/api/connections"), {"uri": "/api/connections", "connections": []}
        )
        self.assertEqual(self.call("DELETE", "/api/connections")[0], 204)

    def test_status(self):
        """GET /api/status reports the budget, what is used and the body cap."""
        status = self.get_json("/api/status")
        self.assertEqual(status["records"], 1)
        self.assertEqual(status["used"], self.inspector.store.used)
        self.assertEqual(status["body_cap"], 64 * 1024)

    def test_page_and_assets(self):
        """The page and its two assets are served with a CSP that loads nothing external."""
        for path, kind in (
            ("/", "text/html"),
            ("/app.js", "text/javascript"),
            ("/app.css", "text/css"),
        ):
            code, headers, content = self.call("GET", path)
            self.assertEqual(code, 200)
            self.assertTrue(headers.getRawHeaders(b"content-type")[0].startswith(kind.encode()))
            csp = headers.getRawHeaders(b"content-security-policy")[0]
            self.assertIn(b"default-src 'none'", csp)
            self.assertIn(b"frame-ancestors 'none'", csp)
            self.assertNotIn(b"http://", content.replace(b"http://www.w3.org", b""))

    def test_stream(self):
        """GET /api/stream sends an event when an exchange starts and when it completes."""
        chunks = []
        d = self.stub.get(BASE + "/api/stream")
        d.addCallback(lambda r: self.stub.collect(r, chunks.append))
        self.stub.flush()
        self.assertEqual(b"".join(chunks), b": inspector stream\n\n")
        recorder = self.pair.open()
        recorder.transport.write(b"GET /live HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        self.pair.pump()
        self.endpoint.protocols[-1].dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        self.pair.pump()
        self.stub.flush()
        events = b"".join(chunks).split(b"\n\n")[1:-1]
        self.assertEqual(len(events), 2)
        for event, complete in zip(events, (False, True), strict=True):
            name, data = event.split(b"\n")
            self.assertEqual(name, b"event: exchange")
            record = json.loads(data[len(b"data: ") :])
            self.assertEqual((record["request"]["uri"], record["complete"]), ("/live", complete))
            self.assertNotIn("raw", record["request"])

    def test_stream_drops_while_paused(self):
        """A paused (slow) stream reader gets no events, then one resync when it resumes."""
        from piko.inspect.api import _EventStream

        class Request:
            def __init__(self):
                self.written = []
                from twisted.internet.defer import Deferred

                self.finished = Deferred()

            def setHeader(self, name, value):
                pass

            def write(self, data):
                self.written.append(data)

            def registerProducer(self, producer, streaming):
                self.producer = producer

            def notifyFinish(self):
                return self.finished

        request = Request()
        stream = _EventStream(request, self.inspector)
        stream.pauseProducing()
        self.inspector.store.clear()
        self.inspector.store.clear()
        self.assertEqual(len(request.written), 1)
        stream.resumeProducing()
        self.assertEqual(request.written[1:], [b"event: resync\ndata: {}\n\n"])
        request.finished.callback(None)
        self.inspector.store.clear()
        self.assertEqual(len(request.written), 2)


class GuardTests(SynchronousTestCase):
    def setUp(self):
        self.pair, self.endpoint, self.inspector, self.record = captured()

    def call(self, resource, method, path, headers=None, body=None, base=BASE):
        stub = StubTreq(resource)
        out = []
        kwargs = {"headers": raw_headers(headers)}
        if body is not None:
            kwargs["data"] = body
        stub.request(method, base + path, **kwargs).addCallback(out.append)
        stub.flush()
        [response] = out
        return response.code

    def test_form_post_refused(self):
        """A POST a form could send (urlencoded, text/plain, multipart) is refused 415."""
        resource = InspectorResource(self.inspector)
        body = json.dumps({"id": self.record.id}).encode()
        for kind in ("application/x-www-form-urlencoded", "text/plain", "multipart/form-data"):
            code = self.call(resource, "POST", "/api/requests/http", {"Content-Type": [kind]}, body)
            # twisted.web itself refuses a multipart body that is not one (400).
            self.assertIn(code, (400, 415), kind)
        self.assertEqual(len(self.endpoint.transports), 1)  # nothing was replayed

    def test_cross_site_refused(self):
        """Sec-Fetch-Site cross-site or another Origin is refused 403, for POST and DELETE."""
        resource = InspectorResource(self.inspector)
        for headers in (
            {"Sec-Fetch-Site": ["cross-site"]},
            {"Sec-Fetch-Site": ["same-site"]},
            {"Origin": ["http://evil.example"]},
            {"Origin": ["http://127.0.0.1:9999"]},
        ):
            for method in ("POST", "DELETE"):
                code = self.call(resource, method, "/api/requests/http", {**JSON, **headers}, b"{}")
                self.assertEqual(code, 403, (method, headers))
        self.assertEqual(len(list(self.inspector.store.exchanges())), 1)
        same = {**JSON, "Origin": [BASE], "Sec-Fetch-Site": ["same-origin"]}
        self.assertEqual(self.call(resource, "DELETE", "/api/requests/http", same), 204)

    def test_rebound_host_refused(self):
        """On loopback, a Host that is not a loopback name (DNS rebinding) is refused 403."""
        resource = InspectorResource(self.inspector)
        self.assertEqual(
            self.call(resource, "GET", "/api/requests/http", base="http://evil.example:4040"), 403
        )
        for base in ("http://localhost:4040", "http://127.0.0.2:4040"):
            self.assertEqual(self.call(resource, "GET", "/api/requests/http", base=base), 200, base)
        remote = InspectorResource(self.inspector, loopback_only=False)
        self.assertEqual(
            self.call(remote, "GET", "/api/requests/http", base="http://agent.lan:4040"), 200
        )

    def test_auth(self):
        """With a verifier, the API needs a good bearer token; the page itself does not."""
        resource = InspectorResource(self.inspector, verifier=Verifier())
        self.assertEqual(self.call(resource, "GET", "/api/requests/http"), 401)
        bad = {"Authorization": ["Bearer nope"]}
        self.assertEqual(self.call(resource, "GET", "/api/requests/http", bad), 401)
        self.assertEqual(
            self.call(resource, "GET", "/api/requests/http", {"Authorization": ["Basic x"]}), 401
        )
        good = {"Authorization": ["Bearer good"]}
        self.assertEqual(self.call(resource, "GET", "/api/requests/http", good), 200)
        self.assertEqual(self.call(resource, "GET", "/"), 200)

    def test_unknown_routes(self):
        """Unknown paths are 404 and wrong methods 405, as JSON."""
        resource = InspectorResource(self.inspector)
        self.assertEqual(self.call(resource, "GET", "/api/nothing"), 404)
        self.assertEqual(self.call(resource, "GET", "/etc/passwd"), 404)
        self.assertEqual(self.call(resource, "PUT", "/api/requests/http", JSON, b"{}"), 405)
        self.assertEqual(self.call(resource, "POST", "/", JSON, b"{}"), 405)

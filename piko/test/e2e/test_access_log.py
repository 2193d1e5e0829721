# -*- test-case-name: piko.test.e2e.test_access_log -*-
"""The proxy port's access log on a real server node: Go's record, and no credential in any line."""

from __future__ import annotations

import io
import json
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.logger import globalLogPublisher
from twisted.web import resource, server

from piko.logging import go_json_observer
from piko.test.e2e.harness import E2ETestCase

TOKEN = "eyJhbGciOiJIUzI1NiJ9.ZTJlLXNlY3JldA.c2lnbmF0dXJlLWUyZQ"


class Hello(resource.Resource):
    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        return b"hello"


class ProxyAccessLogTests(E2ETestCase):
    @inlineCallbacks
    def test_request_logged_without_secrets(self) -> Any:
        """
        A proxied request carrying tokens is logged once on proxy.access with its status, and
        no log line of the whole exchange holds the token.
        """
        stream = io.StringIO()
        observer = go_json_observer(stream)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        yield self.start_server()
        yield self.listen("logged-ep", server.Site(Hello()))
        response = yield self.request(
            b"GET /hello?x=1 HTTP/1.1\r\nHost: logged-ep.example\r\n"
            b"Authorization: Bearer " + TOKEN.encode() + b"\r\n"
            b"X-Piko-Authorization: Bearer " + TOKEN.encode() + b"\r\n"
            b"Cookie: session=" + TOKEN.encode() + b"\r\n\r\n"
        )
        self.assertEqual(response.status, 200)
        yield self.request(b"GET /_piko/v1/tcp/logged-ep HTTP/1.1\r\nHost: h\r\n\r\n")
        lines = stream.getvalue().splitlines()
        self.assertNotIn(TOKEN, stream.getvalue())
        access = [r for r in map(json.loads, lines) if r.get("subsystem") == "proxy.access"]
        [record] = access
        self.assertEqual(record["msg"], "request")
        self.assertEqual(
            (record["request"]["status"], record["request"]["path"], record["request"]["host"]),
            (200, "/hello", "logged-ep.example"),
        )
        self.assertEqual(record["request"]["request_headers"]["Authorization"], ["[REDACTED]"])

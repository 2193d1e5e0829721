# -*- test-case-name: piko.test.http.test_access_log -*-
"""Tests for :mod:`piko.http.access_log` and :mod:`piko.http.observe`: Go's access log records."""

from __future__ import annotations

import io
import json
from typing import Any

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from piko.config import AccessLogConfig, AccessLogHeaderConfig
from piko.http import errors
from piko.http.access_log import (
    REDACTED,
    AccessLog,
    AccessLoggedHandler,
    HeaderFilter,
    go_duration,
    log_level,
)
from piko.http.server import HTTPServerProtocol, IRequestHandler, IServerExchange
from piko.logging import go_json_observer

TOKEN = "eyJhbGciOiJIUzI1NiJ9.c2VjcmV0LXRva2Vu.c2lnbmF0dXJl"


@implementer(IRequestHandler)
class Answering:
    """Answers every request with a fixed status after ``delay`` seconds of the clock."""

    def __init__(self, clock: Clock, status: int = 200, delay: float = 0.0) -> None:
        self.clock = clock
        self.status = status
        self.delay = delay

    def request_received(self, exchange: IServerExchange) -> None:
        self.clock.advance(self.delay)
        if self.status == 502:
            exchange.respond(errors.upstream_unreachable)
            return
        exchange.start_response(
            self.status,
            ((b"content-type", b"text/plain"), (b"set-cookie", b"session=" + TOKEN.encode())),
        )
        exchange.write(b"hello")
        exchange.finish()


def serve(
    config: AccessLogConfig,
    request: bytes,
    *,
    status: int = 200,
    delay: float = 0.0,
    **kwargs: Any,
) -> list[dict[str, Any]]:
    """Serve ``request`` through an access-logged handler; the records as Go-style JSON."""
    stream = io.StringIO()
    clock = Clock()
    clock.advance(1000)
    access_log = AccessLog(config, "proxy.access", observer=go_json_observer(stream), **kwargs)
    handler = AccessLoggedHandler(Answering(clock, status, delay), access_log, clock)
    protocol = HTTPServerProtocol(handler, clock)
    protocol.makeConnection(StringTransport())
    protocol.dataReceived(request)
    return [json.loads(line) for line in stream.getvalue().splitlines()]


GET = (
    b"GET /a%20b/c?secret=1 HTTP/1.1\r\nHost: ep.example.com\r\nx-custom: one\r\n"
    b"X-Custom: two\r\nAuthorization: Bearer " + TOKEN.encode() + b"\r\n"
    b"x-piko-authorization: Bearer " + TOKEN.encode() + b"\r\n\r\n"
)


class AccessLogRecordTests(SynchronousTestCase):
    def test_record_shape(self) -> None:
        """One ``request`` record carries Go's fields, canonical headers and a Go duration."""
        [record] = serve(AccessLogConfig(), GET, delay=0.0015)
        self.assertEqual(record["level"], "info")
        self.assertEqual(record["subsystem"], "proxy.access")
        self.assertEqual(record["msg"], "request")
        request = record["request"]
        self.assertEqual(
            {k: v for k, v in request.items() if not k.endswith("headers")},
            {
                "proto": "HTTP/1.1",
                "method": "GET",
                "host": "ep.example.com",
                "path": "/a b/c",
                "status": 200,
                "duration": "1.5ms",
            },
        )
        self.assertEqual(request["request_headers"]["X-Custom"], ["one", "two"])
        # As Go's ``http.Request``: the host is ``host``, never a request header.
        self.assertNotIn("Host", request["request_headers"])
        self.assertEqual(request["response_headers"]["Content-Type"], ["text/plain"])

    def test_secrets_redacted_without_block_list(self) -> None:
        """Authorization, x-piko-authorization and cookies are logged redacted, never the token."""
        [record] = serve(AccessLogConfig(), GET)
        headers = record["request"]["request_headers"]
        self.assertEqual(headers["Authorization"], [REDACTED])
        self.assertEqual(headers["X-Piko-Authorization"], [REDACTED])
        self.assertEqual(record["request"]["response_headers"]["Set-Cookie"], [REDACTED])
        self.assertNotIn(TOKEN, json.dumps(record))

    def test_secrets_redacted_even_when_allowed(self) -> None:
        """An allow list naming Authorization still gets only the redacted value."""
        config = AccessLogConfig(
            request_headers=AccessLogHeaderConfig(allow_list=("authorization",))
        )
        [record] = serve(config, GET)
        self.assertEqual(record["request"]["request_headers"], {"Authorization": [REDACTED]})

    def test_allow_list(self) -> None:
        """With an allow list only the named headers are logged, compared canonically."""
        config = AccessLogConfig(
            request_headers=AccessLogHeaderConfig(allow_list=("x-custom",)),
            response_headers=AccessLogHeaderConfig(allow_list=("CONTENT-TYPE",)),
        )
        [record] = serve(config, GET)
        self.assertEqual(record["request"]["request_headers"], {"X-Custom": ["one", "two"]})
        self.assertEqual(record["request"]["response_headers"], {"Content-Type": ["text/plain"]})

    def test_block_list(self) -> None:
        """With a block list every header but the named ones is logged."""
        config = AccessLogConfig(
            request_headers=AccessLogHeaderConfig(block_list=("x-custom", "authorization"))
        )
        [record] = serve(config, GET)
        self.assertEqual(list(record["request"]["request_headers"]), ["X-Piko-Authorization"])

    def test_server_error_escalated_to_warn(self) -> None:
        """A 5xx answer is logged at warn even when the configured level is debug."""
        [record] = serve(AccessLogConfig(level="debug"), GET, status=502)
        self.assertEqual(record["level"], "warn")
        self.assertEqual(record["request"]["status"], 502)
        self.assertEqual(
            record["request"]["response_headers"]["Content-Type"], ["application/json"]
        )

    def test_error_level_kept_for_server_error(self) -> None:
        """Escalation only raises: a configured error level stays error."""
        [record] = serve(AccessLogConfig(level="error"), GET, status=500)
        self.assertEqual(record["level"], "error")

    def test_below_program_level_not_built(self) -> None:
        """Records below the program's log level are skipped; an escalated 5xx still passes."""
        from twisted.logger import LogLevel

        self.assertEqual(serve(AccessLogConfig(), GET, min_level=LogLevel.warn), [])
        [record] = serve(AccessLogConfig(), GET, status=502, min_level=LogLevel.warn)
        self.assertEqual(record["level"], "warn")

    def test_disabled(self) -> None:
        """``access_log.disable`` logs nothing."""
        self.assertEqual(serve(AccessLogConfig(disable=True), GET), [])

    def test_piko_paths_skipped(self) -> None:
        """Paths under the skip prefix (the server's ``/_piko``) are not logged."""
        request = b"GET /_piko/v1/tcp/x HTTP/1.1\r\nHost: h\r\n\r\n"
        self.assertEqual(serve(AccessLogConfig(), request, skip_prefix="/_piko"), [])
        self.assertEqual(len(serve(AccessLogConfig(), GET, skip_prefix="/_piko")), 1)

    def test_extra_fields(self) -> None:
        """Extra fields (the agent's ``endpoint-id``) are on every record."""
        [record] = serve(AccessLogConfig(), GET, fields={"endpoint-id": "my-ep"})
        self.assertEqual(record["endpoint-id"], "my-ep")


class HelperTests(SynchronousTestCase):
    def test_go_duration(self) -> None:
        """Durations print as Go's ``time.Duration.String``."""
        cases = {
            0: "0s",
            850e-9: "850ns",
            12.5e-6: "12.5µs",
            0.001234: "1.234ms",
            2.5: "2.5s",
            90: "1m30s",
            3600: "1h0m0s",
            3723.5: "1h2m3.5s",
        }
        for seconds, text in cases.items():
            self.assertEqual(go_duration(seconds), text)

    def test_log_level(self) -> None:
        """Go level names map to twisted.logger levels, info by default."""
        self.assertEqual(log_level("warn"), LogLevel.warn)
        self.assertEqual(log_level(""), LogLevel.info)

    def test_header_filter_canonicalises(self) -> None:
        """Header names become Go's canonical keys with their values grouped in order."""
        self.assertEqual(
            HeaderFilter().apply([(b"x-a-b", b"1"), (b"X-A-B", b"2")]), {"X-A-B": ["1", "2"]}
        )

"""Byte-exact checks of :mod:`piko.http.errors` against the Go Piko transcripts."""

import re

from twisted.trial.unittest import SynchronousTestCase

from piko.http import errors
from piko.test.interop import read_bytes

CASES = {
    "proxy-no-endpoint": errors.missing_endpoint_id,
    "proxy-host-localhost": errors.missing_endpoint_id,
    "proxy-tcp-path-post": errors.missing_endpoint_id,
    "proxy-unknown-endpoint-header": errors.no_available_upstreams,
    "proxy-unknown-endpoint-header-uppercase": errors.no_available_upstreams,
    "proxy-unknown-endpoint-host": errors.no_available_upstreams,
    "proxy-tcp-path-unknown-ws": errors.no_available_upstreams,
    "proxy-tcp-path-unknown-plain": errors.no_available_upstreams,
    "proxy-upstream-refused": errors.agent_upstream_unreachable_relayed,
    "proxy-upstream-refused-post": errors.agent_upstream_unreachable_relayed,
    "upstream-plain-get": errors.websocket_bad_request,
    "upstream-ws-version-8": errors.websocket_bad_request,
    "upstream-ws-bad-origin": errors.websocket_forbidden,
    "upstream-post": errors.not_found,
    "upstream-root": errors.not_found,
    "upstream-ws-bad-path": errors.not_found,
    "upstream-ws-empty-endpoint": errors.not_found,
    "upstream-ws-two-segments": errors.not_found,
    "admin-not-found": errors.not_found,
}


class ErrorResponseTests(SynchronousTestCase):
    """Piko's own error responses equal Go's bytes apart from the Date value."""

    def test_recorded(self):
        """Every recorded error exchange is reproduced byte for byte."""
        for name, build in CASES.items():
            want = read_bytes(f"errors/exchanges/{name}.response.bin")
            date = re.search(rb"Date: ([^\r]*)\r\n", want).group(1)
            self.assertEqual(build(date), want, name)

    def test_server_timeout_and_unreachable(self):
        """The server's own 502/504 use net/http's header order and a trailing newline."""
        self.assertEqual(
            errors.upstream_timeout(b"D"),
            b"HTTP/1.1 504 Gateway Timeout\r\nContent-Type: application/json\r\n"
            b"X-Content-Type-Options: nosniff\r\n"
            b'Date: D\r\nContent-Length: 29\r\n\r\n{"error":"upstream timeout"}\n',
        )
        self.assertEqual(
            errors.upstream_unreachable(b"D", close=True),
            b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: application/json\r\n"
            b"X-Content-Type-Options: nosniff\r\n"
            b"Date: D\r\nContent-Length: 33\r\nConnection: close\r\n\r\n"
            b'{"error":"upstream unreachable"}\n',
        )

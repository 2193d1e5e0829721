"""
Tests for :mod:`piko.auth.http` and the ports' use of it: Go's header
parsing and its exact 401 responses, through the real handlers over
StringTransport.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from piko.auth import (
    ITokenVerifier,
    MultiTenantVerifier,
    RequestAuthenticator,
    Token,
    extract_token,
    load_verifier,
)
from piko.auth.http import AuthorizationHeaderError
from piko.config import AuthConfig
from piko.http.head import RequestHead
from piko.http.server import HTTPServerProtocol
from piko.server.admin import AdminRoutes, LocalNode
from piko.server.admin_port import AdminPortHandler
from piko.server.proxy_port import ProxyPortHandler
from piko.server.registry import UpstreamRegistry
from piko.server.upstream_port import UpstreamPortHandler, UpstreamSession
from piko.test.auth.keys import HMAC_SECRET, sign
from piko.test.interop import read_bytes, read_json
from piko.ws.server import WebSocketAcceptor

NOW = 1_790_000_000
DATE = b"Sat, 21 Sep 2026 12:26:40 GMT"


def head(*headers: tuple[bytes, bytes], method: bytes = b"GET") -> RequestHead:
    return RequestHead(method=method, target=b"/", version=b"1.1", headers=headers)


def go_401(message: bytes, date: bytes = DATE) -> bytes:
    body = b'{"error":"' + message + b'"}'
    return (
        b"HTTP/1.1 401 Unauthorized\r\n"
        b"Content-Type: application/json; charset=utf-8\r\n"
        b"Date: " + date + b"\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body) + body
    )


class ExtractTests(SynchronousTestCase):
    def test_authorization(self) -> None:
        """``Authorization: Bearer <token>`` gives the token."""
        self.assertEqual(extract_token(head((b"Authorization", b"Bearer abc"))), "abc")

    def test_piko_header_first(self) -> None:
        """A non-empty ``x-piko-authorization`` wins over ``Authorization``."""
        both = head((b"Authorization", b"Basic xyz"), (b"X-Piko-Authorization", b"Bearer p"))
        self.assertEqual(extract_token(both), "p")
        empty = head((b"x-piko-authorization", b""), (b"authorization", b"Bearer a"))
        self.assertEqual(extract_token(empty), "a")

    def test_split_on_first_space(self) -> None:
        """The value is split on its first space only."""
        self.assertEqual(extract_token(head((b"Authorization", b"Bearer a b"))), "a b")
        self.assertEqual(extract_token(head((b"Authorization", b"Bearer "))), "")

    def test_errors(self) -> None:
        """Go's three header errors."""
        for headers, message in (
            ((), "missing authorization"),
            (((b"Authorization", b""),), "missing authorization"),
            (((b"Authorization", b"Bearer"),), "invalid authorization"),
            (((b"Authorization", b"bearer abc"),), "unsupported auth type"),
            (((b"Authorization", b"Basic abc"),), "unsupported auth type"),
        ):
            error = self.assertRaises(AuthorizationHeaderError, extract_token, head(*headers))
            self.assertEqual(str(error), message)


@implementer(ITokenVerifier)
class BrokenVerifier:
    def verify(self, token: str) -> Token:
        raise RuntimeError("boom")

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


class PortTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        verifier = load_verifier(AuthConfig(hmac_secret_key=HMAC_SECRET), self.clock)
        assert verifier is not None
        self.auth = RequestAuthenticator(MultiTenantVerifier(verifier))
        self.registry: UpstreamRegistry[Any] = UpstreamRegistry()
        self.acceptor = WebSocketAcceptor(self.clock)

    def exchange(self, handler: Any, request: bytes) -> bytes:
        transport = StringTransport()
        protocol = HTTPServerProtocol(handler, self.clock, date=lambda: DATE)
        protocol.makeConnection(transport)
        protocol.dataReceived(request)
        self.clock.advance(0)
        return transport.value()

    def proxy(self, request: bytes) -> bytes:
        handler = ProxyPortHandler(self.clock, self.registry, self.acceptor, auth=self.auth)
        return self.exchange(handler, request)

    def test_proxy_header_errors(self) -> None:
        """The proxy port answers header problems with Go's 401 bodies, before routing."""
        for auth, message in (
            (b"", b"missing authorization"),
            (b"Authorization: Bearer\r\n", b"invalid authorization"),
            (b"Authorization: Basic x\r\n", b"unsupported auth type"),
            (b"Authorization: Bearer nope\r\n", b"invalid token"),
            (b"Authorization: Bearer " + sign({"exp": NOW}).encode() + b"\r\n", b"expired token"),
            (
                b"x-piko-tenant-id: t\r\nAuthorization: Bearer " + sign({}).encode() + b"\r\n",
                b"unknown tenant",
            ),
        ):
            # No endpoint named: Go still answers 401 first (auth runs before routing).
            response = self.proxy(b"GET / HTTP/1.1\r\nHost: localhost\r\n" + auth + b"\r\n")
            self.assertEqual(response, go_401(message))

    def test_proxy_endpoint_not_permitted(self) -> None:
        """A token without the endpoint gets 401 ``endpoint not permitted``, on HTTP and TCP."""
        token = sign({"piko": {"endpoints": ["other"]}}).encode()
        response = self.proxy(
            b"GET / HTTP/1.1\r\nHost: localhost\r\nx-piko-endpoint: ep1\r\n"
            b"Authorization: Bearer " + token + b"\r\n\r\n"
        )
        self.assertEqual(response, go_401(b"endpoint not permitted"))
        response = self.proxy(
            b"GET /_piko/v1/tcp/ep1 HTTP/1.1\r\nHost: localhost\r\n"
            b"Authorization: Bearer " + token + b"\r\n\r\n"
        )
        self.assertEqual(response, go_401(b"endpoint not permitted"))

    def test_proxy_permitted_goes_on(self) -> None:
        """A valid token for the endpoint reaches routing (here: no upstream, 502)."""
        token = sign({"piko": {"endpoints": ["ep1"]}}).encode()
        response = self.proxy(
            b"GET / HTTP/1.1\r\nHost: localhost\r\nx-piko-endpoint: ep1\r\n"
            b"x-piko-authorization: Bearer " + token + b"\r\n\r\n"
        )
        self.assertIn(b"502 Bad Gateway", response)
        self.assertIn(b'{"error":"no available upstreams"}', response)

    def test_head_request_no_body(self) -> None:
        """A refused HEAD request gets the 401 head without the body."""
        response = self.proxy(b"HEAD / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        self.assertEqual(
            response, go_401(b"missing authorization").split(b"\r\n\r\n")[0] + b"\r\n\r\n"
        )

    def test_other_verifier_error_500(self) -> None:
        """An unexpected verifier error is an empty 500."""
        self.auth = RequestAuthenticator(MultiTenantVerifier(BrokenVerifier()))
        response = self.proxy(b"GET / HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer x\r\n\r\n")
        self.assertEqual(
            response,
            b"HTTP/1.1 500 Internal Server Error\r\nDate: "
            + DATE
            + b"\r\nContent-Length: 0\r\n\r\n",
        )
        self.flushLoggedErrors(RuntimeError)

    def upstream(self, request: bytes) -> bytes:
        handler = UpstreamPortHandler(self.clock, self.registry, self.acceptor, auth=self.auth)
        return self.exchange(handler, request)

    def test_upstream_refusals(self) -> None:
        """The upstream port authenticates before its 404, then checks the endpoint."""
        self.assertEqual(
            self.upstream(b"GET /nowhere HTTP/1.1\r\nHost: h\r\n\r\n"),
            go_401(b"missing authorization"),
        )
        token = sign({"piko": {"endpoints": ["a"]}}).encode()
        self.assertEqual(
            self.upstream(
                b"GET /piko/v1/upstream/b HTTP/1.1\r\nHost: h\r\n"
                b"Authorization: Bearer " + token + b"\r\n\r\n"
            ),
            go_401(b"endpoint not permitted"),
        )
        self.assertIn(
            b"404 Not Found",
            self.upstream(
                b"GET /nowhere HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer " + token + b"\r\n\r\n"
            ),
        )

    def test_admin_every_route(self) -> None:
        """The admin port needs a token on every route, ``/health`` included."""
        routes = AdminRoutes(LocalNode("n", "", ""), self.registry, lambda: True)
        handler = AdminPortHandler(routes, self.auth)
        self.assertEqual(
            self.exchange(handler, b"GET /health HTTP/1.1\r\nHost: h\r\n\r\n"),
            go_401(b"missing authorization"),
        )
        ok = self.exchange(
            handler,
            b"GET /health HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer "
            + sign({}).encode()
            + b"\r\n\r\n",
        )
        self.assertTrue(ok.startswith(b"HTTP/1.1 200 OK\r\n"), ok)


class ExpiryTests(SynchronousTestCase):
    def handshake(self, token: str) -> bytes:
        """The recorded Go agent's WebSocket handshake, with our token added."""
        base = "upstream-http/upstream-conn/conn1"
        summary = read_json(f"{base}.summary.json")
        raw = read_bytes(f"{base}.agent-to-server.bin")[: summary["request"]["head_len"]]
        line_end = raw.index(b"\r\n") + 2
        return (
            raw[:line_end] + b"Authorization: Bearer " + token.encode() + b"\r\n" + raw[line_end:]
        )

    def connect(
        self, disable: bool = False
    ) -> tuple[Clock, UpstreamRegistry[Any], StringTransport]:
        clock = Clock()
        clock.advance(NOW)
        config = AuthConfig(hmac_secret_key=HMAC_SECRET, disable_disconnect_on_expiry=disable)
        verifier = load_verifier(config, clock)
        assert verifier is not None
        registry: UpstreamRegistry[Any] = UpstreamRegistry()
        handler = UpstreamPortHandler(
            clock,
            registry,
            WebSocketAcceptor(clock),
            auth=RequestAuthenticator(MultiTenantVerifier(verifier)),
        )
        protocol = HTTPServerProtocol(handler, clock)
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(self.handshake(sign({"exp": NOW + 60})))
        clock.advance(0)
        self.assertIn(b"101 Switching Protocols", transport.value())
        self.assertEqual(sum(registry.endpoints().values()), 1)
        return clock, registry, transport

    def test_closed_at_expiry(self) -> None:
        """The upstream session is closed when its token expires, not before."""
        clock, registry, transport = self.connect()
        clock.advance(59)
        self.assertEqual(sum(registry.endpoints().values()), 1)
        clock.advance(1)
        self.assertEqual(sum(registry.endpoints().values()), 0)

    def test_disable_disconnect_on_expiry(self) -> None:
        """With disable_disconnect_on_expiry the session outlives its token."""
        clock, registry, transport = self.connect(disable=True)
        clock.advance(61)
        self.assertEqual(sum(registry.endpoints().values()), 1)

    def test_session_expiry_timer_cancelled(self) -> None:
        """A session that ends before its token leaves no timer behind."""
        clock = Clock()
        registry: UpstreamRegistry[Any] = UpstreamRegistry()
        session = UpstreamSession(clock, "ep", registry, expiry=100.0)
        session.makeConnection(StringTransport())
        session.close()
        clock.advance(0)
        self.assertFalse(
            [c for c in clock.getDelayedCalls() if c.active() and c.getTime() == 100.0]
        )

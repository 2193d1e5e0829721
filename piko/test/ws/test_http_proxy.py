# -*- test-case-name: piko.test.ws.test_http_proxy -*-
"""
Tests for :mod:`piko.ws.http_proxy`: the ``CONNECT`` tunnel behind ``connect.proxy-url``.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import CancelledError, Deferred, inlineCallbacks, succeed
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.interfaces import IProtocol, IProtocolFactory, IStreamClientEndpoint
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import Site
from zope.interface import implementer

from piko.test.e2e.harness import E2ETestCase, reactor, wait_for_count
from piko.ws.http_proxy import HTTPConnectEndpoint, ProxyError, ProxyURL, connect_request


class ProxyURLTests(SynchronousTestCase):
    def test_user_becomes_basic_proxy_authorization(self) -> None:
        """A user and password in the URL become a ``Basic`` credential (percent-decoded)."""
        proxy = ProxyURL.parse("http://al%40ice:s3cret@proxy.example:3128")
        self.assertEqual((proxy.host, proxy.port, proxy.secure), ("proxy.example", 3128, False))
        self.assertEqual(proxy.authorization, "Basic YWxAaWNlOnMzY3JldA==")

    def test_default_ports(self) -> None:
        """``http://`` proxies default to port 80 and ``https://`` ones to 443, over TLS."""
        self.assertEqual(ProxyURL.parse("http://p").port, 80)
        secure = ProxyURL.parse("https://p")
        self.assertEqual((secure.port, secure.secure, secure.authorization), (443, True, None))

    def test_other_schemes_refused(self) -> None:
        """A SOCKS or schemeless proxy URL is an error, not a silent direct connection."""
        self.assertRaises(ValueError, ProxyURL.parse, "socks5://p:1080")
        self.assertRaises(ValueError, ProxyURL.parse, "p:3128")

    def test_connect_request(self) -> None:
        """The request names the server as ``host:port`` (IPv6 in brackets), as Go writes it."""
        self.assertEqual(
            connect_request("::1", 8001, "Basic eA==", "piko-twisted/1"),
            b"CONNECT [::1]:8001 HTTP/1.1\r\nHost: [::1]:8001\r\nUser-Agent: piko-twisted/1\r\n"
            b"Proxy-Authorization: Basic eA==\r\n\r\n",
        )


class _Recorder(Protocol):
    def __init__(self) -> None:
        self.data = b""
        self.lost: Failure | None = None

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:  # noqa: B008
        self.lost = reason


@implementer(IStreamClientEndpoint)
class _StringEndpoint:
    """Connects a factory's protocol to a :class:`StringTransport` at once."""

    def __init__(self) -> None:
        self.transport = StringTransport()
        self.protocol: Any = None

    def connect(self, factory: IProtocolFactory) -> Deferred[IProtocol]:
        self.protocol = factory.buildProtocol(None)  # type: ignore[arg-type]
        self.protocol.makeConnection(self.transport)
        return succeed(self.protocol)


class TunnelTests(SynchronousTestCase):
    def dial(self, url: str = "http://u:p@proxy:3128") -> tuple[_StringEndpoint, Any, _Recorder]:
        fake = _StringEndpoint()
        endpoint = HTTPConnectEndpoint(
            None, ProxyURL.parse(url), "piko.internal", 8001, proxy_endpoint=fake
        )
        inner = _Recorder()
        d = endpoint.connect(Factory.forProtocol(lambda: inner))
        return fake, d, inner

    def test_tunnel_established_on_200(self) -> None:
        """After ``200`` the inner protocol is connected and gets the bytes after the head."""
        fake, d, inner = self.dial()
        self.assertEqual(
            fake.transport.value(),
            b"CONNECT piko.internal:8001 HTTP/1.1\r\nHost: piko.internal:8001\r\n"
            b"Proxy-Authorization: Basic dTpw\r\n\r\n",
        )
        self.assertNoResult(d)
        fake.protocol.dataReceived(b"HTTP/1.1 200 Connection established\r\n")
        self.assertNoResult(d)
        fake.protocol.dataReceived(b"\r\nHTTP/1.1 101 Switching")
        self.assertIs(self.successResultOf(d), inner)
        self.assertEqual(inner.data, b"HTTP/1.1 101 Switching")
        fake.protocol.dataReceived(b" Protocols")
        self.assertEqual(inner.data, b"HTTP/1.1 101 Switching Protocols")
        fake.protocol.connectionLost(Failure(ConnectionError("gone")))
        self.assertIsNotNone(inner.lost)

    def test_refusal_fails_with_status(self) -> None:
        """A ``407`` fails the dial naming the status, and the proxy connection is dropped."""
        fake, d, inner = self.dial()
        fake.protocol.dataReceived(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n")
        failure = self.failureResultOf(d, ProxyError)
        self.assertEqual(
            str(failure.value), "proxy refused CONNECT: 407 Proxy Authentication Required"
        )
        self.assertTrue(fake.transport.disconnecting)
        self.assertIsNone(inner.lost)

    def test_garbage_answer_fails(self) -> None:
        """Something that is not an HTTP answer fails the dial instead of waiting forever."""
        fake, d, _ = self.dial()
        fake.protocol.dataReceived(b"SSH-2.0-OpenSSH\r\n\r\n")
        self.failureResultOf(d, ProxyError)
        fake, d, _ = self.dial()
        fake.protocol.dataReceived(b"x" * (17 * 1024))
        self.failureResultOf(d, ProxyError)

    def test_proxy_closing_before_answer_fails(self) -> None:
        """The proxy hanging up before answering fails the dial."""
        fake, d, _ = self.dial()
        fake.protocol.connectionLost(Failure(ConnectionError("reset")))
        self.assertIn("proxy closed the connection", str(self.failureResultOf(d).value))

    def test_cancel_drops_the_proxy_connection(self) -> None:
        """Cancelling the dial (the agent's timeout) aborts the connection to the proxy."""
        fake, d, _ = self.dial()
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertTrue(fake.transport.disconnecting)


class _ConnectProxy(Protocol):
    """A minimal forward proxy for the end-to-end test: CONNECT to 127.0.0.1 only."""

    def __init__(self, seen: list[bytes]) -> None:
        self.seen = seen
        self.buffer = b""
        self.peer: Protocol | None = None

    def dataReceived(self, data: bytes) -> None:
        if self.peer is not None:
            self.peer.transport.write(data)
            return
        self.buffer += data
        if b"\r\n\r\n" not in self.buffer:
            return
        head, _, rest = self.buffer.partition(b"\r\n\r\n")
        self.seen.append(head)
        if b"Proxy-Authorization: Basic dTpw" not in head:
            self.transport.write(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n")
            self.transport.loseConnection()
            return
        port = int(head.split(b" ")[1].rpartition(b":")[2])
        outer = self

        class Back(Protocol):
            def connectionMade(self) -> None:
                outer.peer = self
                outer.transport.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                if rest:
                    self.transport.write(rest)

            def dataReceived(self, data: bytes) -> None:
                outer.transport.write(data)

            def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:  # noqa: B008
                outer.transport.loseConnection()

        factory = ClientFactory.forProtocol(Back)
        reactor.connectTCP("127.0.0.1", port, factory)

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:  # noqa: B008
        if self.peer is not None:
            self.peer.transport.loseConnection()


class _Hello(Resource):
    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        return b"through the proxy"


class ProxiedUpstreamTests(E2ETestCase):
    @inlineCallbacks
    def test_listener_reaches_server_through_connect_proxy(self) -> Any:
        """An SDK listener with ``proxy_url`` registers through the proxy and serves requests."""
        yield self.start_server()
        seen: list[bytes] = []
        port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            Factory.forProtocol(lambda: _ConnectProxy(seen))
        )
        self.addCleanup(port.stopListening)
        proxy = f"http://u:p@127.0.0.1:{port.getHost().port}"
        listening = self.listen("via-proxy", Site(_Hello()), proxy_url=proxy)
        yield listening
        yield wait_for_count(self.server, "via-proxy", 1)
        self.assertEqual(len(seen), 1)
        self.assertTrue(seen[0].startswith(b"CONNECT 127.0.0.1:%d " % self.port_of("upstream")))
        response = yield self.request(b"GET / HTTP/1.1\r\nHost: via-proxy.example\r\n\r\n")
        self.assertEqual((response.status, response.body), (200, b"through the proxy"))

    @inlineCallbacks
    def test_wrong_proxy_credentials_fail_the_listen(self) -> Any:
        """A proxy's ``407`` reaches the caller as a dial error naming it (within the timeout)."""
        yield self.start_server()
        seen: list[bytes] = []
        port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            Factory.forProtocol(lambda: _ConnectProxy(seen))
        )
        self.addCleanup(port.stopListening)
        proxy = f"http://u:wrong@127.0.0.1:{port.getHost().port}"
        upstream = self.upstream(proxy_url=proxy, connect_timeout=0.5)
        d = upstream.listen("via-proxy", Site(_Hello()))
        failure = yield self.assertFailure(d, Exception)
        self.assertIn("407", str(failure))

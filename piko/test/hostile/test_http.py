# -*- test-case-name: piko.test.hostile.test_http -*-
"""
Hostile HTTP on the proxy port, through the real stack (``HTTPPortFactory``,
``HTTPServerProtocol``, ``ProxyPortHandler``, yamux upstreams) with no sockets.

Every case checks the answer (status and body, or a silent close), that
nothing reached an upstream when it must not, that a good request on a new
connection still works, and that no stream or connection is left behind.
"""

from __future__ import annotations

import random
from typing import Any

from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from piko.auth.http import RequestAuthenticator
from piko.auth.verifier import JWTVerifier, MultiTenantVerifier, StaticKeys
from piko.cluster.nodes import ClusterState
from piko.cluster.nodes import Node as ClusterNode
from piko.server.forwarding import RemoteForwarder
from piko.test.hostile._node import Node
from piko.test.server.test_forwarding import FakePool

_POST = b"POST / HTTP/1.1\r\nHost: ep1.example.com\r\n"

SMUGGLING = {
    "cl-then-te": _POST + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "te-then-cl": _POST + b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
    "duplicate-cl-equal": _POST + b"Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
    "duplicate-cl-conflicting": _POST + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
    "cl-list": _POST + b"Content-Length: 5, 5\r\n\r\nhello",
    "cl-plus": _POST + b"Content-Length: +5\r\n\r\nhello",
    "cl-minus": _POST + b"Content-Length: -5\r\n\r\nhello",
    "cl-hex": _POST + b"Content-Length: 0x5\r\n\r\nhello",
    "cl-alpha": _POST + b"Content-Length: five\r\n\r\nhello",
    "cl-overflow": _POST + b"Content-Length: 99999999999999999999999\r\n\r\nhello",
    "te-not-chunked-last": _POST + b"Transfer-Encoding: chunked, gzip\r\n\r\n",
    "te-unknown": _POST + b"Transfer-Encoding: xchunked\r\n\r\n",
    "te-duplicate": _POST
    + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "te-space-before-colon": _POST + b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
    "obs-fold": b"GET / HTTP/1.1\r\nHost: ep1.example.com\r\nX-A: b\r\n c\r\n\r\n",
    "obs-fold-te": _POST + b"Transfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n",
    "duplicate-host": b"GET / HTTP/1.1\r\nHost: ep1.example.com\r\nHost: ep2.example.com\r\n\r\n",
}

BAD_CHUNKS = {
    "non-hex-size": b"zz\r\nhello\r\n0\r\n\r\n",
    "signed-size": b"-5\r\nhello\r\n0\r\n\r\n",
    "overflowing-size": b"ffffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
    "data-longer-than-size": b"5\r\nhelloXX\r\n0\r\n\r\n",
    "bare-lf": b"5\nhello\n0\n\n",
}

BAD_REQUEST_LINES = {
    "unknown-method": b"FOO / HTTP/1.1\r\nHost: ep1.example.com\r\n\r\n",
    "method-with-symbol": b"G@T / HTTP/1.1\r\nHost: ep1.example.com\r\n\r\n",
    "space-in-target": b"GET /a b HTTP/1.1\r\nHost: ep1.example.com\r\n\r\n",
    "control-in-target": b"GET /a\x01b HTTP/1.1\r\nHost: ep1.example.com\r\n\r\n",
    "bad-version": b"GET / HTTP/1.9\r\nHost: ep1.example.com\r\n\r\n",
    "nul-in-header": b"GET / HTTP/1.1\r\nHost: ep1.example.com\r\nX: a\x00b\r\n\r\n",
    "header-without-colon": b"GET / HTTP/1.1\r\nHost: ep1.example.com\r\nXYZ\r\n\r\n",
    "binary-garbage": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
}


class HostileHTTPTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.node = Node()
        self.ep1 = self.node.add_upstream("ep1")
        self.ep2 = self.node.add_upstream("ep2")

    def assertServingAndClean(self) -> None:
        self.assertTrue(self.node.good_request_works("ep1"))
        self.node.close_clients()
        self.assertEqual(self.node.leaks(), [])

    def assertBadRequest(self, name: str, raw: bytes, reason: bytes = b"") -> None:
        client = self.node.client()
        client.send(raw)
        self.assertEqual(client.responses(), [(400, b"400 Bad Request" + reason)], name)
        self.assertTrue(client.closed, name)

    def test_smuggling_heads_refused(self) -> None:
        """Every ambiguous body framing is a 400 and a close; no upstream sees the request."""
        for name, raw in SMUGGLING.items():
            reason = b": too many Host headers" if name == "duplicate-host" else b""
            self.assertBadRequest(name, raw, reason)
        self.assertEqual((self.ep1.seen, self.ep2.seen), ([], []))
        self.assertServingAndClean()

    def test_bad_chunk_sizes(self) -> None:
        """A bad chunk is a 400 and a close, and the upstream stream it was relayed on ends."""
        for name, chunks in BAD_CHUNKS.items():
            client = self.node.client()
            client.send(_POST + b"Transfer-Encoding: chunked\r\n\r\n" + chunks)
            self.assertTrue(client.closed, name)
            statuses = [status for status, _ in client.responses()]
            self.assertIn(400, statuses, name)
            self.node.settle()
            self.assertEqual(self.node.leaks(), [], name)
        self.assertServingAndClean()

    def test_invalid_methods_and_targets(self) -> None:
        """Bad methods, targets, versions and header lines are a 400 and a close."""
        for name, raw in BAD_REQUEST_LINES.items():
            self.assertBadRequest(name, raw)
        self.assertEqual(self.ep1.seen, [])
        self.assertServingAndClean()

    def test_oversized_request_line(self) -> None:
        """A request line past the header limit is Go's 431 and a close, before it ends."""
        node = self.node
        client = node.client()
        limit = node.factory.max_header_bytes + 4096
        client.send(b"GET /" + b"a" * limit)
        self.assertEqual(client.responses(), [(431, b"431 Request Header Fields Too Large")])
        self.assertTrue(client.closed)
        self.assertServingAndClean()

    def test_oversized_headers(self) -> None:
        """One huge header value, or very many small headers, is a 431 and a close."""
        self.node = Node(max_header_bytes=4096)
        self.node.add_upstream("ep1")
        big = b"GET / HTTP/1.1\r\nHost: ep1.example.com\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n"
        many = b"GET / HTTP/1.1\r\nHost: ep1.example.com\r\n" + b"X-A: b\r\n" * 2000 + b"\r\n"
        for raw in (big, many):
            client = self.node.client()
            client.send(raw)
            self.assertEqual(client.responses(), [(431, b"431 Request Header Fields Too Large")])
            self.assertTrue(client.closed)
        self.assertServingAndClean()

    def test_many_headers_within_limit(self) -> None:
        """Many headers inside the byte limit are fine (Go has no count limit)."""
        client = self.node.client()
        client.send(self.node.get("ep1")[:-2] + b"X-A: b\r\n" * 1000 + b"\r\n")
        self.assertEqual(client.responses(), [(200, b"ep1 GET / ep1.example.com")])
        self.assertServingAndClean()

    def test_slowloris_head(self) -> None:
        """
        A head dripped a byte a second is cut off at the header timeout (the timer is not
        reset by data): unanswered once its request line is complete, with Go's 400 while
        the request line itself is unfinished (as Go's server answers both).
        """
        node = self.node
        raw = node.get("ep1")
        line = raw.index(b"\r\n") + 2
        for prefix, answer in ((raw[:line], b""), (b"", b"HTTP/1.1 400 Bad Request")):
            client = node.client()
            client.send(prefix)
            for second in range(9):
                client.send(raw[len(prefix) + second : len(prefix) + second + 1])
                node.advance(1)
            self.assertFalse(client.closed)
            node.advance(1)
            self.assertTrue(client.closed)
            self.assertEqual(client.transport.value()[: len(answer)], answer)
            if not answer:
                self.assertEqual(client.transport.value(), b"")
        self.assertServingAndClean()

    def test_impossible_heads_refused_at_once(self) -> None:
        """A TLS ClientHello, junk, or bare-LF lines get a 400 at once, not at the timeout."""
        hello = bytes.fromhex("16030100f8010000f40303") + b"\x11" * 64
        for raw in (hello, b"\x00\x01junk", b"GET / HTTP/1.1\nHost: ep1.example.com\n\n"):
            client = self.node.client()
            client.send(raw)
            self.assertEqual(client.responses(), [(400, b"400 Bad Request")], raw)
            self.assertTrue(client.closed)
        self.assertEqual(self.ep1.seen, [])
        self.assertServingAndClean()

    def test_endless_chunk_extension(self) -> None:
        """A chunk-size line that never ends is refused at Go's 4096 bytes, stream reset."""
        client = self.node.client()
        client.send(_POST + b"Transfer-Encoding: chunked\r\n\r\n1;a=")
        sent = 4
        while not client.closed and sent < 100_000:
            client.send(b"b" * 1000)
            sent += 1000
        self.assertTrue(client.closed)
        self.assertLessEqual(sent, 4096 + 1000)
        self.node.settle()
        self.assertEqual(self.node.leaks(), [])
        self.assertServingAndClean()

    def test_idle_connection_times_out(self) -> None:
        """A connection that never sends a byte is closed at the header timeout."""
        client = self.node.client()
        self.node.advance(10)
        self.assertTrue(client.closed)
        self.assertServingAndClean()

    def test_absolute_form_routes_by_url_host(self) -> None:
        """An absolute-form target is routed by its URL's host, which the upstream also sees."""
        client = self.node.client()
        client.send(b"GET http://ep2.example.com/x?y=1 HTTP/1.1\r\nHost: ep1.example.com\r\n\r\n")
        self.assertEqual(client.responses(), [(200, b"ep2 GET /x?y=1 ep2.example.com")])
        self.assertEqual(self.ep1.seen, [])
        self.assertServingAndClean()

    def test_pipelined_requests_routed_each_on_its_own(self) -> None:
        """Pipelined requests for different endpoints on one connection reach each its own."""
        node = self.node
        client = node.client()
        client.send(node.get("ep1", b"/a") + node.get("ep2", b"/b") + node.get("ep1", b"/c"))
        self.assertEqual(
            client.responses(),
            [
                (200, b"ep1 GET /a ep1.example.com"),
                (200, b"ep2 GET /b ep2.example.com"),
                (200, b"ep1 GET /c ep1.example.com"),
            ],
        )
        self.assertFalse(client.closed)
        self.assertServingAndClean()

    def test_pipelined_bad_request_after_good(self) -> None:
        """A malformed request pipelined after a good one gets its 400 after the good answer."""
        node = self.node
        client = node.client()
        client.send(node.get("ep1", b"/a") + SMUGGLING["cl-then-te"])
        self.assertEqual(
            client.responses(), [(200, b"ep1 GET /a ep1.example.com"), (400, b"400 Bad Request")]
        )
        self.assertTrue(client.closed)
        self.assertEqual(len(self.ep1.seen), 1)
        self.assertServingAndClean()


class ForwardHeaderTests(SynchronousTestCase):
    """A client-sent ``x-piko-forward: true`` on the proxy port."""

    def test_takes_at_most_one_more_hop(self) -> None:
        """
        It is taken as a forward from another node: with no local upstream the request goes
        once more to a node that has the endpoint (a sender's stale table), marked
        ``x-piko-hops: 2``, and never further (Go answers 502 here; a loop is impossible).
        """
        cluster = ClusterState(ClusterNode("n1"), random.Random(1))
        cluster.add_node(ClusterNode("n2", proxy_addr="127.0.0.1:9", endpoints={"ep9": 1}))
        pool = FakePool()
        forwarded: list[str] = []
        node = Node(
            forwarder=RemoteForwarder(
                Clock(), cluster, pool_for=lambda _: pool, on_forward=forwarded.append
            )
        )
        node.add_upstream("ep1")
        client = node.client()
        client.send(
            b"GET / HTTP/1.1\r\nHost: ep9.example.com\r\nx-piko-forward: true\r\n"
            b"x-piko-hops: 2\r\n\r\n"
        )
        [(status, body)] = client.responses()
        self.assertEqual(status, 502)
        self.assertIn(b"no available upstreams", body)
        self.assertEqual(forwarded, [])
        node.client().send(
            b"GET / HTTP/1.1\r\nHost: ep9.example.com\r\nx-piko-forward: true\r\n\r\n"
        )
        self.assertEqual(forwarded, ["n2"])
        self.assertIn(b"X-Piko-Hops: 2\r\n", pool.transports[-1].value())
        self.assertTrue(node.good_request_works("ep1"))

    def test_never_skips_auth(self) -> None:
        """With auth on, the header changes nothing about authentication: still a 401."""
        verifier = JWTVerifier(StaticKeys(hmac=b"secret"), Clock())
        node = Node(auth=RequestAuthenticator(MultiTenantVerifier(verifier)))
        node.add_upstream("ep1")
        client = node.client()
        client.send(b"GET / HTTP/1.1\r\nHost: ep1.example.com\r\nx-piko-forward: true\r\n\r\n")
        self.assertEqual(client.responses(), [(401, b'{"error":"missing authorization"}')])
        self.assertEqual(node.upstreams["ep1"][2].seen, [])


class PendingCapTests(SynchronousTestCase):
    """``HTTPPortFactory.max_pending``: connections that have not sent a whole head."""

    def test_cap_drops_new_connections_and_recovers(self) -> None:
        """Past the cap new connections are dropped with one warning; a head frees a slot."""
        events: list[Any] = []
        globalLogPublisher.addObserver(events.append)  # type: ignore[arg-type]
        self.addCleanup(globalLogPublisher.removeObserver, events.append)  # type: ignore[arg-type]
        node = Node(max_pending=2)
        node.add_upstream("ep1")
        first, second = node.client(), node.client()
        third, fourth = node.client(), node.client()
        self.assertEqual((first.closed, second.closed), (False, False))
        self.assertTrue(third.transport.disconnecting and fourth.transport.disconnecting)
        self.assertEqual(node.factory.refused, 2)
        warnings = [e for e in events if "without a request head" in str(e.get("log_format"))]
        self.assertEqual(len(warnings), 1)
        self.assertEqual(warnings[0]["pending"], 2)
        first.send(node.get("ep1"))
        self.assertEqual(first.responses(), [(200, b"ep1 GET / ep1.example.com")])
        self.assertTrue(node.good_request_works("ep1"))
        node.advance(10)
        self.assertTrue(second.closed)
        node.close_clients()
        self.assertEqual(node.leaks(), [])
        self.assertEqual(node.factory.pending, set())

    def test_default_is_generous(self) -> None:
        """The default cap leaves room for thousands of slow clients."""
        node = Node()
        self.assertGreaterEqual(node.factory.max_pending, 1024)

"""End-to-end HTTP through a server node and SDK upstreams, on real loopback sockets."""

from __future__ import annotations

import hashlib
import json
import resource as rusage
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.web import resource, server
from zope.interface import implementer

from piko.test.e2e.harness import E2ETestCase, reactor, wait_for_count


class Echo(resource.Resource):
    """Answers with what it received, as JSON."""

    isLeaf = True

    def __init__(self, name: str = "echo") -> None:
        super().__init__()
        self.name = name

    def render(self, request: Any) -> bytes:
        body = request.content.read()
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(
            {
                "name": self.name,
                "method": request.method.decode(),
                "uri": request.uri.decode(),
                "headers": {
                    k.decode().lower(): [v.decode() for v in vs]
                    for k, vs in request.requestHeaders.getAllRawHeaders()
                },
                "length": len(body),
                "sha256": hashlib.sha256(body).hexdigest(),
            }
        ).encode()


def get(path: bytes, endpoint: bytes = b"my-ep", extra: bytes = b"") -> bytes:
    return b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nx-piko-endpoint: %s\r\n%s\r\n" % (
        path,
        endpoint,
        extra,
    )


#: The most the process may grow while 64 MiB pass through it: windows and
#: socket buffers, far less than the body.
BOUND_MIB = 24


def expected_digest(block: bytes, size: int) -> str:
    digest = hashlib.sha256()
    for _ in range(size // len(block)):
        digest.update(block)
    return digest.hexdigest()


def maxrss_mib() -> float:
    return rusage.getrusage(rusage.RUSAGE_SELF).ru_maxrss / 1024


class ProxyHTTPTests(E2ETestCase):
    @inlineCallbacks
    def test_get_rewritten_as_go(self) -> Any:
        """A GET reaches the upstream with path, query and Host kept, plus Go's forward headers."""
        yield self.start_server()
        yield self.listen("my-ep", server.Site(Echo()))
        response = yield self.request(
            b"GET /hello?name=piko HTTP/1.1\r\nHost: my-ep.example.com\r\nUser-Agent: t\r\n\r\n"
        )
        self.assertEqual(response.status, 200)
        seen = json.loads(response.body)
        self.assertEqual((seen["method"], seen["uri"]), ("GET", "/hello?name=piko"))
        self.assertEqual(seen["headers"]["host"], ["my-ep.example.com"])
        self.assertEqual(seen["headers"]["x-forwarded-for"], ["127.0.0.1"])
        self.assertEqual(seen["headers"]["x-piko-forward"], ["true"])
        self.assertEqual(seen["headers"]["connection"], ["close"])

    @inlineCallbacks
    def test_post_100k(self) -> Any:
        """A 100 KB POST body arrives intact."""
        yield self.start_server()
        yield self.listen("my-ep", server.Site(Echo()))
        body = bytes(i % 256 for i in range(102400))
        response = yield self.request(
            b"POST /upload HTTP/1.1\r\nHost: x\r\nx-piko-endpoint: my-ep\r\n"
            b"Content-Length: 102400\r\n\r\n" + body
        )
        seen = json.loads(response.body)
        self.assertEqual(
            (seen["length"], seen["sha256"]), (102400, hashlib.sha256(body).hexdigest())
        )

    @inlineCallbacks
    def test_keep_alive_and_pipelining(self) -> Any:
        """Pipelined requests on one keep-alive connection each get their answer, in order."""
        yield self.start_server()
        yield self.listen("my-ep", server.Site(Echo()))
        client = yield self.http_client()
        client.transport.write(get(b"/1") + get(b"/2") + get(b"/3"))
        uris = []
        for _ in range(3):
            response = yield client.next_response()
            uris.append(json.loads(response.body)["uri"])
        self.assertEqual(uris, ["/1", "/2", "/3"])

    @inlineCallbacks
    def test_round_robin(self) -> Any:
        """Requests for one endpoint cycle over its three upstreams in connect order."""
        yield self.start_server()
        for name in ("a", "b", "c"):
            yield self.listen("my-ep", server.Site(Echo(name)))
        names = []
        client = yield self.http_client()
        for _ in range(6):
            client.transport.write(get(b"/"))
            response = yield client.next_response()
            names.append(json.loads(response.body)["name"])
        self.assertEqual(names, ["a", "b", "c", "a", "b", "c"])

    @inlineCallbacks
    def test_error_answers(self) -> Any:
        """Missing endpoint is 400, an endpoint without upstream 502, with Go's JSON bodies."""
        yield self.start_server()
        missing = yield self.request(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        self.assertEqual((missing.status, missing.body), (400, b'{"error":"missing endpoint id"}'))
        self.assertEqual(missing.header(b"content-type"), b"application/json; charset=utf-8")
        none = yield self.request(get(b"/", b"nope"))
        self.assertEqual((none.status, none.body), (502, b'{"error":"no available upstreams"}\n'))

    @inlineCallbacks
    def test_timeout_504(self) -> Any:
        """An upstream that does not answer within proxy.timeout gets 504 upstream timeout."""
        yield self.start_server()
        clock = Clock()
        self.server.proxy_handler.clock = clock
        request_seen: Deferred[None] = Deferred()

        class Silent(Protocol):
            def dataReceived(self, data: bytes) -> None:
                if not request_seen.called:
                    request_seen.callback(None)

        yield self.listen("my-ep", Factory.forProtocol(Silent))
        client = yield self.http_client()
        client.transport.write(get(b"/"))
        yield request_seen
        clock.advance(30)
        response = yield client.next_response()
        self.assertEqual((response.status, response.body), (504, b'{"error":"upstream timeout"}\n'))

    @inlineCallbacks
    def test_upstream_gone_502(self) -> Any:
        """An upstream that closes the stream without answering gets 502 upstream unreachable."""
        yield self.start_server()

        class Hangup(Protocol):
            def dataReceived(self, data: bytes) -> None:
                self.transport.loseConnection()

        yield self.listen("my-ep", Factory.forProtocol(Hangup))
        response = yield self.request(get(b"/"))
        self.assertEqual(
            (response.status, response.body), (502, b'{"error":"upstream unreachable"}\n')
        )

    @inlineCallbacks
    def test_chunked_response_arrives_incrementally(self) -> Any:
        """Each chunk of a streamed response reaches the client before the next is produced."""
        yield self.start_server()
        writes: list[Any] = []

        class Streaming(resource.Resource):
            isLeaf = True

            def render_GET(self, request: Any) -> Any:
                request.write(b"first")
                writes.append(request)
                return server.NOT_DONE_YET

        yield self.listen("my-ep", server.Site(Streaming()))
        client = yield self.http_client()
        got_first: Deferred[bytes] = Deferred()

        def on_chunk(data: bytes) -> None:
            if not got_first.called:
                got_first.callback(data)

        client.on_chunk = on_chunk
        client.transport.write(get(b"/"))
        first = yield got_first
        self.assertEqual(first, b"first")
        [request] = writes
        request.write(b"second")
        request.finish()
        response = yield client.next_response()
        self.assertEqual(response.body, b"firstsecond")

    @inlineCallbacks
    def test_64mib_download_bounded(self) -> Any:
        """A 64 MiB response reaches a slow client intact while memory stays bounded."""
        yield self.start_server()
        size = 64 * 1024 * 1024
        block = bytes(range(256)) * 256  # 64 KiB

        @implementer(IPushProducer)
        class Download(Protocol):
            def dataReceived(self, data: bytes) -> None:
                if hasattr(self, "sent"):
                    return
                self.sent = 0
                self.paused = False
                self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
                self.transport.registerProducer(self, True)
                self.resumeProducing()

            def pauseProducing(self) -> None:
                self.paused = True

            def resumeProducing(self) -> None:
                self.paused = False
                while not self.paused and self.sent < size:
                    self.transport.write(block)
                    self.sent += len(block)
                if self.sent >= size:
                    self.transport.unregisterProducer()

            def stopProducing(self) -> None:
                self.paused = True

        yield self.listen("my-ep", Factory.forProtocol(Download))
        before = maxrss_mib()
        client = yield self.http_client()
        received = [0]
        digest = hashlib.sha256()

        def slow(data: bytes) -> None:
            received[0] += len(data)
            digest.update(data)
            if received[0] % (4 * 1024 * 1024) < len(data):
                client.transport.pauseProducing()
                reactor.callLater(0.01, client.transport.resumeProducing)

        client.on_chunk = slow
        client.keep_body = False
        client.transport.write(get(b"/big"))
        response = yield client.next_response()
        self.assertEqual((response.status, received[0]), (200, size))
        self.assertEqual(digest.hexdigest(), expected_digest(block, size))
        self.assertLess(maxrss_mib() - before, BOUND_MIB)

    @inlineCallbacks
    def test_64mib_upload_bounded(self) -> Any:
        """A 64 MiB request body reaches a slow upstream intact while memory stays bounded."""
        yield self.start_server()
        size = 64 * 1024 * 1024
        block = bytes(range(256)) * 256
        done: Deferred[tuple[int, str]] = Deferred()

        class SlowSink(Protocol):
            def connectionMade(self) -> None:
                self.count = 0
                self.digest = hashlib.sha256()
                self.head = b""

            def dataReceived(self, data: bytes) -> None:
                if self.head is not None:
                    self.head += data
                    if b"\r\n\r\n" not in self.head:
                        return
                    head, data = self.head.split(b"\r\n\r\n", 1)
                    self.head = None  # type: ignore[assignment]
                self.count += len(data)
                self.digest.update(data)
                if self.count % (4 * 1024 * 1024) < len(data):
                    self.transport.pauseProducing()
                    reactor.callLater(0.01, self.transport.resumeProducing)
                if self.count >= size:
                    self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    self.transport.loseConnection()
                    done.callback((self.count, self.digest.hexdigest()))

        yield self.listen("my-ep", Factory.forProtocol(SlowSink))
        before = maxrss_mib()
        client = yield self.http_client()

        @implementer(IPushProducer)
        class Upload:
            sent = 0
            paused = False

            def pauseProducing(self) -> None:
                self.paused = True

            def resumeProducing(self) -> None:
                self.paused = False
                while not self.paused and self.sent < size:
                    client.transport.write(block)
                    self.sent += len(block)
                if self.sent >= size:
                    client.transport.unregisterProducer()

            def stopProducing(self) -> None:
                self.paused = True

        client.transport.write(
            b"POST /up HTTP/1.1\r\nHost: x\r\nx-piko-endpoint: my-ep\r\nContent-Length: %d\r\n\r\n"
            % size
        )
        upload = Upload()
        client.transport.registerProducer(upload, True)
        upload.resumeProducing()
        count, digest = yield done
        response = yield client.next_response()
        self.assertEqual((count, response.status), (size, 200))
        self.assertEqual(digest, expected_digest(block, size))
        self.assertLess(maxrss_mib() - before, BOUND_MIB)


class UpstreamLifecycleTests(E2ETestCase):
    @inlineCallbacks
    def test_reconnect_after_server_restart(self) -> Any:
        """An SDK upstream reconnects by itself when the server restarts on the same ports."""
        first = yield self.start_server()
        ports = {name: self.port_of(name) for name in ("proxy", "upstream", "admin")}
        upstream = self.upstream(min_reconnect_backoff=0.05, max_reconnect_backoff=0.2)
        port = yield upstream.listen("my-ep", server.Site(Echo()))
        self.addCleanup(port.shutdown)
        yield first.stopService()
        from attrs import evolve

        from piko.server.service import make_server_service
        from piko.test.e2e.harness import server_config

        config = server_config()
        config = evolve(
            config,
            proxy=evolve(config.proxy, bind_addr=f"127.0.0.1:{ports['proxy']}"),
            upstream=evolve(config.upstream, bind_addr=f"127.0.0.1:{ports['upstream']}"),
            admin=evolve(config.admin, bind_addr=f"127.0.0.1:{ports['admin']}"),
        )
        second = make_server_service(config, reactor)
        second.startService()
        self.addCleanup(lambda: second.stopService() if second.running else None)
        yield second.started
        self.server = second
        yield wait_for_count(second, "my-ep", 1)
        response = yield self.request(get(b"/again"))
        self.assertEqual(json.loads(response.body)["uri"], "/again")
        self.assertEqual(port.connections, 2)

    @inlineCallbacks
    def test_graceful_stop_finishes_in_flight(self) -> Any:
        """Stopping a listener lets its in-flight request finish; new requests are refused 502."""
        yield self.start_server()
        pending: list[Any] = []

        class Slow(resource.Resource):
            isLeaf = True

            def render_GET(self, request: Any) -> Any:
                pending.append(request)
                arrived.callback(None)
                return server.NOT_DONE_YET

        arrived: Deferred[None] = Deferred()
        port = yield self.listen("my-ep", server.Site(Slow()))
        client = yield self.http_client()
        client.transport.write(get(b"/slow"))
        yield arrived
        stopped = port.stopListening()
        self.assertNoResult(stopped)
        refused = yield self.request(get(b"/new"))
        self.assertEqual(refused.status, 502)
        pending[0].write(b"done")
        pending[0].finish()
        response = yield client.next_response()
        self.assertEqual((response.status, response.body), (200, b"done"))
        yield stopped
        yield wait_for_count(self.server, "my-ep", 0)


class MetricsE2ETests(E2ETestCase):
    @inlineCallbacks
    def test_metrics_move_after_traffic(self) -> Any:
        """After a proxied request the admin port's /metrics shows Go's counters moved."""
        yield self.start_server()
        yield self.listen("my-ep", server.Site(Echo()))
        yield self.request(get(b"/"))
        response = yield self.request(
            b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", self.port_of("admin")
        )
        self.assertEqual(response.status, 200)
        self.assertIn(b'piko_proxy_requests_total{method="GET",status="200"} 1.0', response.body)
        self.assertIn(b"piko_upstreams_connected_upstreams 1.0", response.body)
        self.assertIn(b"piko_upstreams_upstream_requests_total 1.0", response.body)

"""
Tests for L{piko.ws.client}: dialling, Go's handshake bytes and error mapping,
and a client/server pair through both adapters over L{twisted.test.iosim}.
"""

from __future__ import annotations

from autobahn.websocket.xormasker import create_xor_masker
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.test.iosim import ConnectionCompleter
from twisted.trial.unittest import SynchronousTestCase

from piko.test.interop import read_bytes, read_json, read_jsonl
from piko.test.ws._helpers import FrontEnd, Recorder
from piko.ws import (
    USER_AGENT,
    WebSocketAcceptor,
    WebSocketDialError,
    WebSocketOptions,
    WebSocketProtocolError,
    WebSocketTarget,
    connect,
)
from piko.ws._frames import binary_frame_header, mask_payload
from piko.ws.client import _ClientProtocol, handshake_request


class RawServer(Protocol):
    """A server that records the request and answers with canned bytes."""

    def __init__(self, answer: bytes, close: bool = True) -> None:
        self.answer = answer
        self.close = close
        self.received = b""

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if b"\r\n\r\n" in self.received and self.answer:
            self.transport.write(self.answer)
            self.answer = b""
            if self.close:
                self.transport.loseConnection()


class ClientTests(SynchronousTestCase):
    """The client adapter, connected to fakes over a memory reactor."""

    def setUp(self):
        self.reactor = MemoryReactorClock()
        self.completer = ConnectionCompleter(self.reactor)
        self.endpoint = TCP4ClientEndpoint(self.reactor, "127.0.0.1", 8001)

    def listen(self, build):
        TCP4ServerEndpoint(self.reactor, 8001).listen(Factory.forProtocol(build))

    def dial(self, url="http://127.0.0.1:8001/piko/v1/upstream/ep1", **kwargs):
        self.inner = Recorder()
        kwargs.setdefault("endpoint", self.endpoint)
        return connect(self.reactor, url, Factory.forProtocol(lambda: self.inner), **kwargs)

    def refused_with(self, response: bytes, close: bool = True) -> WebSocketDialError:
        servers = []

        def build():
            servers.append(RawServer(response, close))
            return servers[0]

        self.listen(build)
        d = self.dial()
        self.completer.succeedOnce().flush()
        return self.failureResultOf(d, WebSocketDialError).value

    def test_request_matches_go(self):
        """Without extra headers the request equals Go's recorded one, except User-Agent."""
        summary = read_json("upstream-http/upstream-conn/conn1.summary.json")
        key = dict(summary["request"]["headers"])["Sec-WebSocket-Key"]
        target = WebSocketTarget.from_url("http://127.0.0.1:31011/piko/v1/upstream/ep1")
        expected = summary["request"]["head"].replace("Go-http-client/1.1", USER_AGENT)
        self.assertEqual(handshake_request(target, key, {}), expected.encode())

    def test_request_header_order(self):
        """Extra headers are canonicalised and sorted among the handshake headers, as Go does."""
        target = WebSocketTarget.from_url("https://example.com/base/piko/v1/upstream/ep?x=1")
        request = handshake_request(
            target, "k", {"Authorization": "Bearer t", "x-piko-tenant-id": "t1"}
        ).decode()
        names = [line.split(":")[0] for line in request.split("\r\n")[1:-2]]
        self.assertEqual(request.split("\r\n")[0], "GET /base/piko/v1/upstream/ep?x=1 HTTP/1.1")
        self.assertEqual(
            names,
            [
                "Host",
                "User-Agent",
                "Authorization",
                "Connection",
                "Sec-WebSocket-Key",
                "Sec-WebSocket-Version",
                "Upgrade",
                "X-Piko-Tenant-Id",
            ],
        )
        self.assertIn("Host: example.com\r\n", request)

    def test_url_schemes(self):
        """http and https map to ws and wss with default ports; other schemes are refused."""
        self.assertEqual(WebSocketTarget.from_url("http://h/p").port, 80)
        self.assertTrue(WebSocketTarget.from_url("https://h/p").secure)
        self.assertEqual(WebSocketTarget.from_url("wss://h:9/p").port, 9)
        self.assertEqual(WebSocketTarget.from_url("ws://[::1]:7").host, "::1")
        self.assertRaises(ValueError, WebSocketTarget.from_url, "ftp://h/")

    def test_sends_key_and_accepts_recorded_101(self):
        """With the recorded key, we send Go's request and accept Go's recorded 101."""
        summary = read_json("upstream-http/upstream-conn/conn1.summary.json")
        key = dict(summary["request"]["headers"])["Sec-WebSocket-Key"]
        self.patch(_ClientProtocol, "_new_key", lambda self: key)
        s2c = read_bytes("upstream-http/upstream-conn/conn1.server-to-agent.bin")
        server = RawServer(s2c[: summary["response"]["head_len"] + 16], close=False)
        self.listen(lambda: server)
        d = self.dial("ws://127.0.0.1:31011/piko/v1/upstream/ep1")
        self.completer.succeedOnce().flush()
        self.assertIs(self.successResultOf(d), self.inner)
        self.assertEqual(
            server.received,
            summary["request"]["head"].replace("Go-http-client/1.1", USER_AGENT).encode(),
        )
        self.assertEqual(self.inner.data, bytes.fromhex("000100010000000200000000"))

    def test_401_json(self):
        """A 401 with a JSON error becomes '401: invalid token', not retryable."""
        error = self.refused_with(
            b"HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json; charset=utf-8\r\n"
            b'Content-Length: 25\r\n\r\n{"error":"invalid token"}',
            close=False,
        )
        self.assertEqual((str(error), error.retryable), ("401: invalid token", False))

    def test_502_recorded(self):
        """Go's recorded 502 for an unknown endpoint is '502: no available upstreams', retryable."""
        response = read_bytes("errors/exchanges/proxy-tcp-path-unknown-ws.response.bin")
        error = self.refused_with(response, close=False)
        self.assertEqual(str(error), "502: no available upstreams")
        self.assertTrue(error.retryable)

    def test_404_text(self):
        """A non-JSON 404 becomes '404: websocket: bad handshake', not retryable."""
        error = self.refused_with(
            b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\n\r\n404 page not found"
        )
        self.assertEqual(str(error), "404: websocket: bad handshake")
        self.assertFalse(error.retryable)

    def test_bad_accept(self):
        """A 101 with a wrong Sec-WebSocket-Accept is a non-retryable bad handshake."""
        error = self.refused_with(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: bogus\r\n\r\n"
        )
        self.assertEqual((str(error), error.retryable), ("101: websocket: bad handshake", False))

    def test_connection_refused(self):
        """A refused TCP connection is a retryable error without status."""
        d = self.dial()
        self.reactor.tcpClients[0][2].clientConnectionFailed(
            None, Failure(ConnectionRefusedError())
        )
        error = self.failureResultOf(d, WebSocketDialError).value
        self.assertIsNone(error.status)
        self.assertTrue(error.retryable)

    def test_timeout(self):
        """A server that never answers makes the dial fail, retryably, at the timeout."""
        self.listen(lambda: RawServer(b""))
        d = self.dial(timeout=5)
        pump = self.completer.succeedOnce()
        pump.flush()
        self.reactor.advance(5)
        pump.flush()
        error = self.failureResultOf(d, WebSocketDialError).value
        self.assertTrue(error.retryable)
        self.assertEqual(self.reactor.getDelayedCalls(), [])


class PairTests(SynchronousTestCase):
    """A real client and server adapter pair over iosim."""

    def setUp(self):
        self.reactor = MemoryReactorClock()
        self.server_inner = Recorder(echo=True)
        acceptor = WebSocketAcceptor(self.reactor, WebSocketOptions(close_timeout=1))
        TCP4ServerEndpoint(self.reactor, 8001).listen(
            Factory.forProtocol(lambda: FrontEnd(acceptor, lambda request: self.server_inner))
        )
        self.client_inner = Recorder()
        d = connect(
            self.reactor,
            "ws://127.0.0.1:8001/_piko/v1/tcp/ep",
            Factory.forProtocol(lambda: self.client_inner),
            endpoint=TCP4ClientEndpoint(self.reactor, "127.0.0.1", 8001),
        )
        self.pump = ConnectionCompleter(self.reactor).succeedOnce()
        self.pump.flush()
        self.assertIs(self.successResultOf(d), self.client_inner)

    def test_echo(self):
        """Bytes written by the client come back through the echoing server, large and small."""
        payload = bytes(range(256)) * 1000
        self.client_inner.transport.write(b"hello")
        self.client_inner.transport.write(payload)
        self.pump.flush()
        self.assertEqual(self.client_inner.data, b"hello" + payload)
        self.assertEqual(self.server_inner.data, b"hello" + payload)

    def test_client_close(self):
        """Client loseConnection ends both inner protocols cleanly."""
        self.client_inner.transport.loseConnection()
        self.pump.flush()
        self.client_inner.lost.trap(ConnectionDone)
        self.server_inner.lost.trap(ConnectionDone)

    def test_server_close(self):
        """Server loseConnection ends both inner protocols cleanly."""
        self.server_inner.transport.loseConnection()
        self.pump.flush()
        self.client_inner.lost.trap(ConnectionDone)
        self.server_inner.lost.trap(ConnectionDone)

    def test_text_from_server(self):
        """A text message from the server fails the client's stream with a protocol error."""
        self.pump.server.websocket.sendMessage(b"hi", isBinary=False)
        self.pump.flush()
        self.client_inner.lost.trap(WebSocketProtocolError)


class FrameTests(SynchronousTestCase):
    """Our frame headers against the Go agent's recorded ones."""

    def test_masked_headers_match_go(self):
        """For every whole binary message from the Go agent, our masked frame is identical."""
        frames = read_jsonl("upstream-http-flow-control/upstream-conn/conn1.ws-frames.jsonl")
        c2s = read_bytes("upstream-http-flow-control/upstream-conn/conn1.agent-to-server.bin")
        checked = 0
        for frame in frames:
            if frame["dir"] != "agent-to-server" or frame["opcode"] != 2 or not frame["fin"]:
                continue
            key = bytes.fromhex(frame["mask_key"])
            header = binary_frame_header(frame["payload_len"], key)
            self.assertEqual(header.hex(), frame["hdr_hex"])
            start = frame["off"] + len(header)
            wire = c2s[start : start + frame["payload_len"]]
            self.assertEqual(mask_payload(key, mask_payload(key, wire)), wire)
            checked += 1
        self.assertGreater(checked, 10)

    def test_mask_matches_autobahn_at_every_size(self):
        """Masking gives autobahn's bytes on both sides of the native-masker threshold."""
        key = bytes([0x12, 0xAB, 0x00, 0xFF])
        for size in (1, 2, 3, 4, 5, 127, 128, 767, 768, 769, 5000):
            payload = bytes((i * 7 + 3) % 256 for i in range(size))
            expected = create_xor_masker(key, size).process(payload)
            self.assertEqual(mask_payload(key, payload), expected, size)
        self.assertEqual(mask_payload(key, b""), b"")


class DialCancelTests(SynchronousTestCase):
    def test_cancel_reaches_attempts_behind_resolution(self) -> None:
        """
        Cancelling a dial whose endpoint Deferred already waits on a chained
        one (HostnameEndpoint after name resolution, attempts under way)
        cancels those attempts too.
        """
        from twisted.internet.defer import Deferred, succeed

        cancelled: list[bool] = []
        attempts: Deferred[Protocol] = Deferred(lambda d: cancelled.append(True))

        class ResolvedEndpoint:
            def connect(self, factory: object) -> Deferred[Protocol]:
                return succeed(None).addCallback(lambda _: attempts)

        reactor = MemoryReactorClock()
        ready = connect(
            reactor,
            "ws://node:8001/piko/v1/upstream/ep",
            Factory.forProtocol(Recorder),
            endpoint=ResolvedEndpoint(),  # type: ignore[arg-type]
        )
        failures: list[Failure] = []
        ready.addErrback(failures.append)
        ready.cancel()
        self.assertEqual(cancelled, [True])
        failures[0].trap(WebSocketDialError)
        self.assertEqual(reactor.getDelayedCalls(), [])

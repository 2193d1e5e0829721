"""
Tests for L{piko.ws.server}: taking over a connection from the HTTP front end.
"""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IConsumer, IPushProducer, ITransport
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from piko.test.ws._helpers import (
    Recorder,
    capture,
    check_yamux_stream,
    expected_stream,
    payload_stream,
)
from piko.ws import (
    HandshakeRejected,
    HandshakeRequest,
    WebSocketAcceptor,
    WebSocketOptions,
    WebSocketProtocolError,
)
from piko.ws.server import accept_value

KEY = "dGhlIHNhbXBsZSBub25jZQ=="
HEAD = (
    "GET /piko/v1/upstream/ep1 HTTP/1.1\r\n"
    "Host: 127.0.0.1:8001\r\n"
    "Connection: Upgrade\r\n"
    f"Sec-WebSocket-Key: {KEY}\r\n"
    "Sec-WebSocket-Version: 13\r\n"
    "Upgrade: websocket\r\n\r\n"
).encode()
RESPONSE_101 = (
    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    f"Sec-WebSocket-Accept: {accept_value(KEY)}\r\n\r\n"
).encode()


def client_frame(opcode: int, payload: bytes, fin: bool = True, key: bytes = b"\x01\x02\x03\x04"):
    """Return one masked client-to-server frame."""
    first = (0x80 if fin else 0) | opcode
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", first, 0x80 | n)
    elif n < 0x10000:
        head = struct.pack("!BBH", first, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", first, 0x80 | 127, n)
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return head + key + masked


class ServerTests(SynchronousTestCase):
    """Server-side takeover over a L{StringTransport}."""

    def setUp(self):
        self.clock = Clock()
        self.transport = StringTransport(
            hostAddress=IPv4Address("TCP", "127.0.0.1", 8001),
            peerAddress=IPv4Address("TCP", "127.0.0.1", 50000),
        )
        self.inner = Recorder()
        self.requests: list[HandshakeRequest] = []

    def accept(self, data=HEAD, on_handshake=None, options=None):
        acceptor = WebSocketAcceptor(self.clock, options or WebSocketOptions(close_timeout=2))

        def default(request):
            self.requests.append(request)
            return self.inner

        self.protocol = acceptor.accept(self.transport, data, on_handshake or default)
        return self.protocol

    def lose(self, reason=None):
        self.protocol.connectionLost(Failure(reason or ConnectionDone()))

    def test_101_matches_go(self):
        """A valid handshake is answered with exactly Go's 101 bytes."""
        self.accept()
        self.assertEqual(self.transport.value(), RESPONSE_101)
        self.assertTrue(self.inner.made)
        self.assertEqual(self.requests[0].path, "/piko/v1/upstream/ep1")

    def test_recorded_go_handshake(self):
        """The recorded Go agent handshake gets the recorded Go server 101, byte for byte."""
        summary, c2s, s2c, _, _ = capture("upstream-http")
        head_len = summary["request"]["head_len"]
        self.accept(c2s[:head_len])
        self.assertEqual(self.transport.value(), s2c[: summary["response"]["head_len"]])

    def test_transport_interfaces(self):
        """The inner protocol's transport provides ITransport, IPushProducer and IConsumer."""
        self.accept()
        for iface in (ITransport, IPushProducer, IConsumer):
            self.assertTrue(verifyObject(iface, self.inner.transport))
        self.assertEqual(self.inner.transport.getPeer(), self.transport.getPeer())
        self.assertEqual(self.inner.transport.getHost(), self.transport.getHost())

    def test_write_is_one_unmasked_frame(self):
        """Each write is one unmasked FIN binary frame; empty writes send nothing."""
        self.accept()
        self.transport.clear()
        self.inner.transport.write(b"x" * 12)
        self.inner.transport.write(b"")
        self.inner.transport.writeSequence([b"a" * 100, b"b" * 200])
        self.inner.transport.write(b"y" * 70000)
        expected = (
            b"\x82\x0c" + b"x" * 12
            + b"\x82\x7e\x01\x2c" + b"a" * 100 + b"b" * 200
            + b"\x82\x7f" + struct.pack("!Q", 70000) + b"y" * 70000
        )  # fmt: skip
        self.assertEqual(self.transport.value(), expected)

    def test_bytes_after_head(self):
        """Frames that arrived in the same read as the head are delivered after the 101."""
        self.accept(HEAD + client_frame(2, b"hello"))
        self.assertEqual(self.inner.data, b"hello")

    def test_fragments_and_boundaries(self):
        """Fragmented and separate messages form one byte stream; empty ones are skipped."""
        self.accept()
        self.protocol.dataReceived(
            client_frame(2, b"ab", fin=False)
            + client_frame(0, b"cd", fin=False)
            + client_frame(0, b"", fin=True)
            + client_frame(2, b"")
            + client_frame(2, b"ef")
        )
        self.assertEqual(self.inner.data, b"abcdef")
        self.assertNotIn(b"", self.inner.received)

    def test_large_read_parsed_in_chunks(self):
        """A read far larger than one parse chunk still yields every message's bytes, in order."""
        self.accept()
        payloads = [bytes([i]) * (10000 + 997 * i) for i in range(40)]
        wire = b"".join(client_frame(2, p, key=bytes([i, 7, 9, i])) for i, p in enumerate(payloads))
        self.assertGreater(len(wire), 4 * 64 * 1024)
        self.protocol.dataReceived(wire)
        self.assertEqual(self.inner.data, b"".join(payloads))

    def test_large_read_stops_after_failure(self):
        """Once a text message fails the connection, the rest of a large read is not delivered."""
        self.accept()
        wire = client_frame(2, b"a" * 70000) + client_frame(1, b"no")
        wire += client_frame(2, b"b" * 70000)
        self.protocol.dataReceived(wire)
        self.assertEqual(self.inner.data, b"a" * 70000)

    def test_ping_answered(self):
        """A ping is answered with a pong carrying the same payload."""
        self.accept()
        self.transport.clear()
        self.protocol.dataReceived(client_frame(9, b"p1"))
        self.assertEqual(self.transport.value(), b"\x8a\x02p1")

    def test_split_masked_control_frame(self):
        """A masked ping cut at every byte is unmasked whole: the pong echoes its payload."""
        self.accept()
        self.transport.clear()
        for byte in client_frame(9, b"ping payload", key=b"\x9a\x17\xe3\x42"):
            self.protocol.dataReceived(bytes([byte]))
        self.assertEqual(self.transport.value(), b"\x8a\x0cping payload")

    def test_text_message_fails(self):
        """A text message closes with 1003 and the inner protocol gets a protocol error."""
        self.accept()
        self.transport.clear()
        self.protocol.dataReceived(client_frame(1, b"hello") + client_frame(2, b"late"))
        value = self.transport.value()
        self.assertEqual((value[0], value[2:4]), (0x88, b"\x03\xeb"))
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.inner.data, b"")
        self.lose()
        self.inner.lost.trap(WebSocketProtocolError)
        self.assertIn("text message", str(self.inner.lost.value))

    def test_oversize_message_fails(self):
        """A message over the configured limit is a protocol error."""
        self.accept(options=WebSocketOptions(max_message_size=10, max_frame_size=10))
        self.protocol.dataReceived(client_frame(2, b"z" * 11))
        self.assertEqual(self.inner.data, b"")
        self.assertTrue(self.transport.disconnected)
        self.lose()
        self.inner.lost.trap(WebSocketProtocolError)

    def test_eof_without_close_is_clean(self):
        """TCP EOF without a Close frame (Go's 1006) ends the stream cleanly."""
        self.accept()
        self.lose()
        self.inner.lost.trap(ConnectionDone)

    def test_peer_close_frame_is_clean(self):
        """A Close frame from the peer is answered and ends the stream cleanly."""
        self.accept()
        self.transport.clear()
        self.protocol.dataReceived(client_frame(8, struct.pack("!H", 1000)))
        self.assertEqual(self.transport.value(), b"\x88\x02\x03\xe8")
        self.assertTrue(self.transport.disconnecting)
        self.lose()
        self.inner.lost.trap(ConnectionDone)

    def test_lose_connection(self):
        """Inner loseConnection sends Close 1000 and drops TCP without waiting for a reply."""
        self.accept()
        self.transport.clear()
        self.inner.transport.loseConnection()
        self.assertEqual(self.transport.value(), b"\x88\x02\x03\xe8")
        self.assertTrue(self.transport.disconnecting)
        self.assertTrue(self.inner.transport.disconnecting)
        self.inner.transport.write(b"ignored")
        self.assertEqual(self.transport.value(), b"\x88\x02\x03\xe8")
        self.lose()
        self.inner.lost.trap(ConnectionDone)

    def test_lose_connection_flush_timeout(self):
        """If the close cannot be flushed within close_timeout, TCP is aborted."""
        self.accept()
        self.inner.transport.loseConnection()
        self.clock.advance(1.9)
        self.assertFalse(self.transport.disconnected)
        self.clock.advance(0.2)
        self.assertTrue(self.transport.disconnected)

    def test_abort_connection(self):
        """Inner abortConnection aborts the TCP connection."""
        self.accept()
        self.inner.transport.abortConnection()
        self.assertTrue(self.transport.disconnected)

    def test_pause_and_resume_reading(self):
        """Pausing the inner transport pauses reading the TCP connection."""
        self.accept()
        self.inner.transport.pauseProducing()
        self.assertEqual(self.transport.producerState, "paused")
        self.inner.transport.resumeProducing()
        self.assertEqual(self.transport.producerState, "producing")

    def test_register_producer_passes_through(self):
        """A producer registered on the inner transport is registered on TCP."""
        self.accept()
        producer = Recorder()
        self.inner.transport.registerProducer(producer, True)
        self.assertIs(self.transport.producer, producer)
        self.assertTrue(self.transport.streaming)
        self.inner.transport.unregisterProducer()
        self.assertIsNone(self.transport.producer)

    def test_decision_deferred(self):
        """Nothing is written until on_handshake's Deferred fires with the inner protocol."""
        decision: Deferred = Deferred()
        self.accept(on_handshake=lambda request: decision)
        self.protocol.dataReceived(client_frame(2, b"early"))
        self.assertEqual(self.transport.value(), b"")
        decision.callback(self.inner)
        self.assertEqual(self.transport.value(), RESPONSE_101)
        self.assertEqual(self.inner.data, b"early")

    def test_rejected(self):
        """HandshakeRejected writes the caller's response and closes the connection."""
        response = b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n"

        def reject(request):
            raise HandshakeRejected(response)

        self.accept(on_handshake=reject)
        self.assertEqual(self.transport.value(), response)
        self.assertTrue(self.transport.disconnecting)

    def test_bad_handshake(self):
        """A request without Sec-WebSocket-Key gets gorilla's 400 and is closed."""
        calls = []
        head = HEAD.replace(f"Sec-WebSocket-Key: {KEY}\r\n".encode(), b"")
        self.accept(head, on_handshake=calls.append)
        value = self.transport.value()
        self.assertTrue(value.startswith(b"HTTP/1.1 400 Bad Request\r\n"), value)
        self.assertIn(b"\r\nSec-Websocket-Version: 13\r\n", value)
        self.assertTrue(value.endswith(b"\r\n\r\nBad Request\n"))
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(calls, [])

    def test_cross_origin(self):
        """An Origin whose host differs from Host is refused with 403, as gorilla does."""
        head = HEAD.replace(
            b"Upgrade: websocket\r\n", b"Upgrade: websocket\r\nOrigin: http://evil\r\n"
        )
        self.accept(head)
        self.assertTrue(self.transport.value().startswith(b"HTTP/1.1 403 Forbidden\r\n"))

    def test_handshake_timeout_cancels_decision(self):
        """An undecided handshake is aborted at the timeout and the decision cancelled."""
        cancelled = []
        decision: Deferred = Deferred(cancelled.append)
        self.accept(
            on_handshake=lambda request: decision,
            options=WebSocketOptions(open_handshake_timeout=10),
        )
        self.clock.advance(10)
        self.assertTrue(self.transport.disconnected)
        self.assertEqual(self.transport.value(), b"")
        self.assertEqual(cancelled, [decision])

    def test_lost_while_deciding_cancels(self):
        """If the connection is lost while the caller decides, the decision is cancelled."""
        cancelled = []
        decision: Deferred = Deferred(cancelled.append)
        self.accept(on_handshake=lambda request: decision)
        self.lose()
        self.assertEqual(cancelled, [decision])
        self.assertEqual(self.transport.value(), b"")
        self.assertEqual(self.clock.getDelayedCalls(), [])


class ReplayTests(SynchronousTestCase):
    """Recorded Go agent traffic replayed into the server adapter."""

    @settings(max_examples=40, deadline=None)
    @given(st.lists(st.integers(min_value=1, max_value=9000), min_size=1, max_size=60))
    def test_any_chunking_same_stream(self, sizes):
        """Fragmented, masked Go agent frames in any chunking yield exactly the yamux stream."""
        summary, c2s, _, frames, yamux = capture("upstream-http-flow-control")
        expected = expected_stream("agent-to-server", "upstream-http-flow-control")
        check_yamux_stream("agent-to-server", expected, yamux)
        head_len = summary["request"]["head_len"]
        inner = Recorder()
        transport = StringTransport()
        protocol = WebSocketAcceptor(Clock()).accept(
            transport, c2s[:head_len], lambda request: inner
        )
        offset, index = head_len, 0
        while offset < len(c2s):
            size = sizes[index % len(sizes)]
            protocol.dataReceived(c2s[offset : offset + size])
            offset += size
            index += 1
        self.assertEqual(inner.data, expected)
        protocol.connectionLost(Failure(ConnectionDone()))
        inner.lost.trap(ConnectionDone)

    def test_small_capture(self):
        """The three-request capture replays into its exact yamux byte stream."""
        summary, c2s, _, frames, yamux = capture("upstream-http")
        expected = payload_stream("agent-to-server", c2s, frames)
        check_yamux_stream("agent-to-server", expected, yamux)
        inner = Recorder()
        protocol = WebSocketAcceptor(Clock()).accept(StringTransport(), c2s, lambda r: inner)
        self.assertEqual(inner.data, expected)
        del protocol

    def test_go_server_frames_match(self):
        """Our server frames for the recorded payloads equal Go's server frames byte for byte."""
        summary, c2s, s2c, frames, _ = capture("upstream-http-flow-control")
        inner = Recorder()
        transport = StringTransport()
        WebSocketAcceptor(Clock()).accept(
            transport, c2s[: summary["request"]["head_len"]], lambda r: inner
        )
        transport.clear()
        stream_start = summary["response"]["head_len"]
        for frame in frames:
            if frame["dir"] != "server-to-agent":
                continue
            start = frame["off"] + len(bytes.fromhex(frame["hdr_hex"]))
            inner.transport.write(s2c[start : start + frame["payload_len"]])
        self.assertEqual(transport.value(), s2c[stream_start:])


class FrameParserTests(SynchronousTestCase):
    """
    The adapter's own data-frame parser (``_receive_frames``): what it rejects
    fails the connection with the status autobahn would use, and control frames
    still reach autobahn whole, wherever they fall.
    """

    def setUp(self):
        self.clock = Clock()
        self.transport = StringTransport(
            hostAddress=IPv4Address("TCP", "127.0.0.1", 8001),
            peerAddress=IPv4Address("TCP", "127.0.0.1", 50000),
        )
        self.inner = Recorder()
        acceptor = WebSocketAcceptor(self.clock, WebSocketOptions(close_timeout=2))
        self.protocol = acceptor.accept(self.transport, HEAD, lambda request: self.inner)
        self.transport.clear()

    def assertFailedWith(self, reason: str) -> None:
        """The connection was dropped (autobahn's fail-by-drop) for ``reason``."""
        self.assertTrue(self.protocol.failedByMe)
        self.assertIn(reason, self.protocol.wasNotCleanReason)
        self.assertTrue(self.transport.disconnected)
        self.protocol.connectionLost(Failure(ConnectionDone()))
        self.inner.lost.trap(WebSocketProtocolError)

    def test_violations(self):
        """Each malformed data frame fails the connection with 1002 and delivers nothing more."""
        cases = {
            "RSV = 4": b"\xc2\x81\x00\x00\x00\x00x",
            "unmasked client-to-server": b"\x82\x01x",
            "continuation data frame outside": client_frame(0, b"x"),
            "non-continuation data frame while inside": (
                client_frame(2, b"a", fin=False) + client_frame(2, b"b")
            ),
            "minimal length": b"\x82\xfe\x00\x05\x00\x00\x00\x00hello",
            "minimal length ": b"\x82\xff" + struct.pack("!Q", 5) + b"\0\0\0\0hello",
            "reserved opcode 3": client_frame(3, b"x"),
            "reserved opcode 11": client_frame(11, b"x"),
            "fragmented control": client_frame(9, b"x", fin=False),
            "payload length > 125": b"\x89\xfe\x00\x7e" + b"\0" * 4 + b"x" * 126,
        }
        for reason, wire in cases.items():
            self.setUp()
            self.protocol.dataReceived(wire + client_frame(2, b"after"))
            self.assertFailedWith(reason.strip())
            self.assertNotIn(b"after", self.inner.data)
            self.assertNotIn(b"b", self.inner.data)

    def test_frame_size_limit(self):
        """A frame over max_frame_size fails with 1009 before its payload arrives."""
        acceptor = WebSocketAcceptor(
            self.clock, WebSocketOptions(max_frame_size=100, max_message_size=1000)
        )
        self.transport.clear()
        self.protocol = acceptor.accept(self.transport, HEAD, lambda request: self.inner)
        self.transport.clear()
        self.protocol.dataReceived(client_frame(2, b"z" * 101)[:8])
        self.assertFailedWith("frame size 101 exceeds")
        self.assertEqual(self.inner.data, b"")

    def test_message_size_limit_across_fragments(self):
        """Fragments are counted together against max_message_size."""
        acceptor = WebSocketAcceptor(
            self.clock, WebSocketOptions(max_frame_size=100, max_message_size=150)
        )
        self.protocol = acceptor.accept(self.transport, HEAD, lambda request: self.inner)
        self.transport.clear()
        self.protocol.dataReceived(client_frame(2, b"a" * 100, fin=False))
        self.protocol.dataReceived(client_frame(0, b"b" * 100))
        self.assertFailedWith("message size 200 exceeds")
        self.assertEqual(self.inner.data, b"a" * 100)

    def test_ping_between_fragments(self):
        """A ping between two fragments of one message is answered; the message continues."""
        self.protocol.dataReceived(
            client_frame(2, b"ab", fin=False)
            + client_frame(9, b"p")
            + client_frame(0, b"cd")
            + client_frame(2, b"ef")
        )
        self.assertEqual(self.transport.value(), b"\x8a\x01p")
        self.assertEqual(self.inner.data, b"abcdef")

    def test_mask_offset_across_reads(self):
        """A masked payload split at odd offsets is unmasked with the key rotated correctly."""
        payload = bytes(range(256)) * 8
        wire = client_frame(2, payload, key=b"\x11\x22\x33\x44")
        for cut in (7, 9, 13, 1000, 1001, 1003):
            self.setUp()
            self.protocol.dataReceived(wire[:cut])
            self.protocol.dataReceived(wire[cut : cut + 5])
            self.protocol.dataReceived(wire[cut + 5 :])
            self.assertEqual(self.inner.data, payload)

    def test_partial_frame_left_by_autobahn(self):
        """
        When the handshake's read ends inside a frame, autobahn finishes that
        frame and the parser takes over at the next frame boundary.
        """
        self.inner = Recorder()
        wire = client_frame(2, b"x" * 300, fin=False) + client_frame(0, b"y" * 10)
        acceptor = WebSocketAcceptor(self.clock, WebSocketOptions(close_timeout=2))
        self.protocol = acceptor.accept(self.transport, HEAD + wire[:50], lambda r: self.inner)
        self.protocol.dataReceived(wire[50:200])
        self.assertFalse(self.protocol._rx_fast)
        self.protocol.dataReceived(wire[200:] + client_frame(0, b"z", fin=True)[:0])
        self.protocol.dataReceived(client_frame(2, b"next"))
        self.assertTrue(self.protocol._rx_fast)
        self.assertEqual(self.inner.data, b"x" * 300 + b"y" * 10 + b"next")

    def test_close_frame_after_data_in_one_read(self):
        """A Close frame right behind data frames goes to autobahn: the stream ends cleanly."""
        self.protocol.dataReceived(client_frame(2, b"last") + client_frame(8, b"\x03\xe8"))
        self.assertEqual(self.inner.data, b"last")
        self.assertTrue(self.transport.disconnecting)
        self.protocol.connectionLost(Failure(ConnectionDone()))
        self.inner.lost.trap(ConnectionDone)

"""
Tests for L{piko.ws._stream}: half-closing a WebSocket byte stream with Close
frames (RFC 6455 section 5.5.1), byte for byte on the server adapter and
end to end through a client/server pair over L{twisted.test.iosim}.
"""

from __future__ import annotations

import struct

from twisted.internet.address import IPv4Address
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.error import ConnectionDone, TimeoutError
from twisted.internet.protocol import Factory
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.test.iosim import ConnectionCompleter
from twisted.trial.unittest import SynchronousTestCase

from piko.test.ws._helpers import FrontEnd, HalfCloseRecorder, Recorder
from piko.test.ws.test_server import HEAD, RESPONSE_101, client_frame
from piko.ws import WebSocketAcceptor, WebSocketOptions, WebSocketProtocolError, connect

CLOSE_1000 = b"\x88\x02\x03\xe8"


def close_from_client(code: int = 1000, reason: bytes = b"") -> bytes:
    """A masked Close frame as a client sends it."""
    return client_frame(8, struct.pack("!H", code) + reason)


class ServerHalfCloseTests(SynchronousTestCase):
    """Half-closes on the server adapter, checked on the wire with a L{StringTransport}."""

    def setUp(self):
        self.clock = Clock()
        self.transport = StringTransport(
            hostAddress=IPv4Address("TCP", "127.0.0.1", 8001),
            peerAddress=IPv4Address("TCP", "127.0.0.1", 50000),
        )

    def accept(self, inner, options=None):
        self.inner = inner
        acceptor = WebSocketAcceptor(self.clock, options or WebSocketOptions(close_timeout=2))
        self.protocol = acceptor.accept(self.transport, HEAD, lambda request: inner)
        self.assertEqual(self.transport.value(), RESPONSE_101)
        self.transport.clear()

    def lose(self):
        self.protocol.connectionLost(Failure(ConnectionDone()))

    def test_lose_write_sends_close_and_keeps_reading(self):
        """loseWriteConnection sends Close 1000 after earlier writes, keeps TCP and still reads."""
        self.accept(Recorder())
        self.inner.transport.write(b"request")
        self.inner.transport.loseWriteConnection()
        self.assertEqual(self.transport.value(), b"\x82\x07request" + CLOSE_1000)
        self.assertFalse(self.transport.disconnecting)
        self.assertFalse(self.inner.transport.disconnecting)
        self.assertTrue(self.inner.transport.connected)
        self.protocol.dataReceived(client_frame(2, b"reply"))
        self.assertEqual(self.inner.data, b"reply")
        self.assertIsNone(self.inner.lost)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_writes_after_lose_write_ignored(self):
        """After loseWriteConnection, writes, a second half-close and pongs send nothing."""
        self.accept(Recorder())
        self.inner.transport.loseWriteConnection()
        self.transport.clear()
        self.inner.transport.write(b"late")
        self.inner.transport.writeSequence([b"la", b"te"])
        self.inner.transport.loseWriteConnection()
        self.protocol.dataReceived(client_frame(9, b"ping"))
        self.assertEqual(self.transport.value(), b"")

    def test_peer_close_after_lose_write_ends_cleanly(self):
        """The peer's Close after our half-close drops TCP gracefully; the stream ends cleanly."""
        self.accept(HalfCloseRecorder())
        self.inner.transport.loseWriteConnection()
        self.transport.clear()
        self.protocol.dataReceived(client_frame(2, b"tail") + close_from_client())
        self.assertEqual(self.inner.data, b"tail")
        self.assertEqual(self.transport.value(), b"")
        self.assertTrue(self.transport.disconnecting)
        self.assertFalse(self.transport.disconnected)
        self.assertFalse(self.inner.read_lost)
        self.lose()
        self.inner.lost.trap(ConnectionDone)

    def test_eof_after_lose_write_is_clean(self):
        """TCP EOF while half-closed ends the stream cleanly."""
        self.accept(Recorder())
        self.inner.transport.loseWriteConnection()
        self.lose()
        self.inner.lost.trap(ConnectionDone)

    def test_lose_connection_after_lose_write(self):
        """loseConnection after a half-close drops TCP without a second Close frame."""
        self.accept(Recorder())
        self.inner.transport.loseWriteConnection()
        self.transport.clear()
        self.inner.transport.loseConnection()
        self.assertEqual(self.transport.value(), b"")
        self.assertTrue(self.transport.disconnecting)
        self.assertTrue(self.inner.transport.disconnecting)

    def test_peer_close_to_half_closeable_inner(self):
        """A peer Close reaches a half-closeable inner as readConnectionLost; it may still write."""
        self.accept(HalfCloseRecorder())
        self.protocol.dataReceived(client_frame(2, b"request") + close_from_client())
        self.assertEqual(self.inner.data, b"request")
        self.assertTrue(self.inner.read_lost)
        self.assertIsNone(self.inner.lost)
        self.assertEqual(self.transport.value(), b"")
        self.assertFalse(self.transport.disconnecting)
        self.inner.transport.write(b"reply")
        self.assertEqual(self.transport.value(), b"\x82\x05reply")
        self.inner.transport.loseConnection()
        self.assertEqual(self.transport.value(), b"\x82\x05reply" + CLOSE_1000)
        self.assertTrue(self.transport.disconnecting)
        self.lose()
        self.inner.lost.trap(ConnectionDone)

    def test_lose_write_after_peer_close_completes_close(self):
        """loseWriteConnection once the peer has half-closed sends our Close and drops TCP."""
        self.accept(HalfCloseRecorder())
        self.protocol.dataReceived(close_from_client())
        self.inner.transport.loseWriteConnection()
        self.assertEqual(self.transport.value(), CLOSE_1000)
        self.assertTrue(self.transport.disconnecting)

    def test_data_after_peer_close_ignored(self):
        """Data and a second Close after the peer's Close (a protocol breach) are ignored."""
        self.accept(HalfCloseRecorder())
        self.protocol.dataReceived(
            close_from_client() + client_frame(2, b"late") + close_from_client()
        )
        self.assertEqual(self.inner.data, b"")
        self.assertEqual(self.transport.value(), b"")
        self.assertFalse(self.transport.disconnecting)

    def test_peer_close_to_plain_inner(self):
        """An inner protocol that is not half-closeable gets the old behaviour: answer and drop."""
        self.accept(Recorder())
        self.protocol.dataReceived(close_from_client())
        self.assertEqual(self.transport.value(), CLOSE_1000)
        self.assertTrue(self.transport.disconnecting)
        self.lose()
        self.inner.lost.trap(ConnectionDone)

    def test_invalid_close_code_fails(self):
        """A half-close with a reserved close code is a protocol error, as autobahn treats it."""
        self.accept(HalfCloseRecorder())
        self.protocol.dataReceived(close_from_client(1005))
        self.assertFalse(self.inner.read_lost)
        self.assertTrue(self.transport.disconnected)
        self.lose()
        self.inner.lost.trap(WebSocketProtocolError)

    def test_invalid_close_reason_fails(self):
        """A half-close answer whose reason is not UTF-8 is a protocol error."""
        self.accept(Recorder())
        self.inner.transport.loseWriteConnection()
        self.protocol.dataReceived(close_from_client(1000, b"\xff"))
        self.assertTrue(self.transport.disconnected)
        self.lose()
        self.inner.lost.trap(WebSocketProtocolError)

    def test_half_close_timeout_after_lose_write(self):
        """With half_close_timeout set, an unanswered half-close is fully closed at the timeout."""
        self.accept(Recorder(), WebSocketOptions(close_timeout=2, half_close_timeout=10))
        self.inner.transport.loseWriteConnection()
        self.clock.advance(9.9)
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(0.1)
        self.assertTrue(self.transport.disconnecting)
        self.lose()
        self.inner.lost.trap(TimeoutError)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_half_close_timeout_after_peer_close(self):
        """With half_close_timeout set, an inner that never finishes its reply is closed for it."""
        self.accept(HalfCloseRecorder(), WebSocketOptions(close_timeout=2, half_close_timeout=10))
        self.protocol.dataReceived(close_from_client())
        self.clock.advance(10)
        self.assertEqual(self.transport.value(), CLOSE_1000)
        self.assertTrue(self.transport.disconnecting)
        self.lose()
        self.inner.lost.trap(TimeoutError)

    def test_half_close_timer_cancelled_by_close(self):
        """Closing in full stops the half-close timer (the close timer bounds the flush)."""
        self.accept(Recorder(), WebSocketOptions(close_timeout=2, half_close_timeout=10))
        self.inner.transport.loseWriteConnection()
        self.protocol.dataReceived(close_from_client())
        self.assertEqual([call.getTime() for call in self.clock.getDelayedCalls()], [2.0])
        self.lose()
        self.inner.lost.trap(ConnectionDone)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class PairHalfCloseTests(SynchronousTestCase):
    """A real client and server adapter pair over iosim, half-closing either way."""

    def connect_pair(self, server_inner, client_inner):
        self.reactor = MemoryReactorClock()
        self.server_inner = server_inner
        self.client_inner = client_inner
        acceptor = WebSocketAcceptor(self.reactor, WebSocketOptions(close_timeout=1))
        TCP4ServerEndpoint(self.reactor, 8001).listen(
            Factory.forProtocol(lambda: FrontEnd(acceptor, lambda request: server_inner))
        )
        d = connect(
            self.reactor,
            "ws://127.0.0.1:8001/_piko/v1/tcp/ep",
            Factory.forProtocol(lambda: client_inner),
            endpoint=TCP4ClientEndpoint(self.reactor, "127.0.0.1", 8001),
        )
        self.pump = ConnectionCompleter(self.reactor).succeedOnce()
        self.pump.flush()
        self.assertIs(self.successResultOf(d), client_inner)

    def assert_tcp_closed(self):
        self.assertTrue(self.pump.clientIO.disconnected)
        self.assertTrue(self.pump.serverIO.disconnected)

    def test_client_half_close_gets_reply(self):
        """
        A client half-close reaches a half-closeable server inner, whose reply
        still reaches the client; its close then ends both ends cleanly.
        """
        self.connect_pair(HalfCloseRecorder(), Recorder())
        self.client_inner.transport.write(b"request")
        self.client_inner.transport.loseWriteConnection()
        self.client_inner.transport.write(b"ignored")
        self.pump.flush()
        self.assertEqual(self.server_inner.data, b"request")
        self.assertTrue(self.server_inner.read_lost)
        self.assertIsNone(self.server_inner.lost)
        self.assertIsNone(self.client_inner.lost)
        payload = bytes(range(256)) * 1000
        self.server_inner.transport.write(b"reply:")
        self.server_inner.transport.write(payload)
        self.pump.flush()
        self.assertEqual(self.client_inner.data, b"reply:" + payload)
        self.server_inner.transport.loseConnection()
        self.pump.flush()
        self.server_inner.lost.trap(ConnectionDone)
        self.client_inner.lost.trap(ConnectionDone)
        self.assert_tcp_closed()

    def test_server_half_close_gets_reply(self):
        """A server half-close reaches a half-closeable client inner, which may still send."""
        self.connect_pair(Recorder(), HalfCloseRecorder())
        self.server_inner.transport.write(b"greeting")
        self.server_inner.transport.loseWriteConnection()
        self.pump.flush()
        self.assertEqual(self.client_inner.data, b"greeting")
        self.assertTrue(self.client_inner.read_lost)
        self.client_inner.transport.write(b"answer")
        self.pump.flush()
        self.assertEqual(self.server_inner.data, b"answer")
        self.client_inner.transport.loseWriteConnection()
        self.pump.flush()
        self.server_inner.lost.trap(ConnectionDone)
        self.client_inner.lost.trap(ConnectionDone)
        self.assert_tcp_closed()

    def test_half_close_to_plain_server_inner(self):
        """If the server inner is not half-closeable, a client half-close closes both ends."""
        self.connect_pair(Recorder(echo=True), Recorder())
        self.client_inner.transport.write(b"request")
        self.client_inner.transport.loseWriteConnection()
        self.pump.flush()
        self.assertEqual(self.server_inner.data, b"request")
        self.server_inner.lost.trap(ConnectionDone)
        self.client_inner.lost.trap(ConnectionDone)
        self.assert_tcp_closed()

    def test_both_half_close_at_once(self):
        """Crossing half-closes deliver everything written before them and end cleanly."""
        self.connect_pair(HalfCloseRecorder(), HalfCloseRecorder())
        self.client_inner.transport.write(b"from client")
        self.client_inner.transport.loseWriteConnection()
        self.server_inner.transport.write(b"from server")
        self.server_inner.transport.loseWriteConnection()
        self.pump.flush()
        self.assertEqual(self.server_inner.data, b"from client")
        self.assertEqual(self.client_inner.data, b"from server")
        self.server_inner.lost.trap(ConnectionDone)
        self.client_inner.lost.trap(ConnectionDone)
        self.assert_tcp_closed()

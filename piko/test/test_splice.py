"""Tests for :mod:`piko.splice`, without sockets."""

from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.protocol import Protocol
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from piko.interfaces import IAbortableTransport, IHalfCloseableTransport
from piko.splice import SpliceProtocol, join
from piko.test.mux.helpers import HalfCloseRecorder, RecorderFactory, SessionPair


@implementer(IHalfCloseableTransport, IAbortableTransport)
class HalfCloseTransport(StringTransport):
    """A StringTransport that records write-half shutdowns like a TCP transport."""

    write_closed = False

    def loseWriteConnection(self) -> None:
        self.write_closed = True


def connected_pair() -> tuple[SpliceProtocol, StringTransport, SpliceProtocol, StringTransport]:
    a, b = SpliceProtocol(), SpliceProtocol()
    ta, tb = HalfCloseTransport(), HalfCloseTransport()
    join(a, b)
    a.makeConnection(ta)
    b.makeConnection(tb)
    return a, ta, b, tb


class SpliceTests(SynchronousTestCase):
    def test_bytes_cross(self) -> None:
        """Bytes read on one end are written on the other, both ways."""
        a, ta, b, tb = connected_pair()
        a.dataReceived(b"ping")
        b.dataReceived(b"pong")
        self.assertEqual((tb.value(), ta.value()), (b"ping", b"pong"))

    def test_each_transport_produces_for_the_other(self) -> None:
        """Each transport is registered as the streaming producer of the other."""
        a, ta, b, tb = connected_pair()
        self.assertIs(ta.producer, tb)
        self.assertIs(tb.producer, ta)
        self.assertTrue(ta.streaming and tb.streaming)

    def test_held_until_peer_connects(self) -> None:
        """Bytes arriving before the other end connects are held, reading paused, then sent."""
        a, b = SpliceProtocol(), SpliceProtocol()
        ta, tb = StringTransport(), StringTransport()
        join(a, b)
        a.makeConnection(ta)
        a.dataReceived(b"early")
        self.assertEqual(ta.producerState, "paused")
        b.makeConnection(tb)
        self.assertEqual(tb.value(), b"early")
        self.assertEqual(ta.producerState, "producing")

    def test_half_close_crosses(self) -> None:
        """EOF on one end shuts the other's write half; EOF on both closes both."""
        a, ta, b, tb = connected_pair()
        a.readConnectionLost()
        assert isinstance(tb, HalfCloseTransport)
        self.assertTrue(tb.write_closed)
        self.assertFalse(ta.disconnecting)
        b.readConnectionLost()
        self.assertTrue(ta.disconnecting and tb.disconnecting)

    def test_no_half_close_closes(self) -> None:
        """A transport without a write half (a WebSocket) is closed instead."""
        a, b = SpliceProtocol(), SpliceProtocol()
        ta, tb = HalfCloseTransport(), StringTransport()
        join(a, b)
        a.makeConnection(ta)
        b.makeConnection(tb)
        a.readConnectionLost()
        self.assertTrue(tb.disconnecting)

    def test_loss_closes_other_end(self) -> None:
        """When one end is lost the other is closed."""
        a, ta, b, tb = connected_pair()
        a.connectionLost()
        self.assertTrue(tb.disconnecting)

    def test_abrupt_loss_resets_other_end(self) -> None:
        """A reset on one end is passed on as a reset (abort), not a graceful close."""
        a, ta, b, tb = connected_pair()
        aborted: list[bool] = []
        tb.abortConnection = lambda: aborted.append(True)  # type: ignore[method-assign]
        a.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(aborted, [True])

    def test_clean_loss_closes_other_end_gracefully(self) -> None:
        """A clean end closes the other end gracefully: what it holds is still sent."""
        a, ta, b, tb = connected_pair()
        aborted: list[bool] = []
        tb.abortConnection = lambda: aborted.append(True)  # type: ignore[method-assign]
        a.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(aborted, [])
        self.assertTrue(tb.disconnecting)

    def test_loss_resumes_a_paused_peer(self) -> None:
        """
        When one end is lost while it had paused the other's reading (its buffer was full),
        the other is read again: nothing else would resume it, and a local service blocked
        writing to it would keep the connection open for ever (the differential run found
        agent connections to a TCP service left open after the client went away).
        """
        a, ta, b, tb = connected_pair()
        tb.pauseProducing()  # a's consumer (the stream) was full: b's reading was paused
        a.connectionLost()
        self.assertEqual(tb.producerState, "producing")
        self.assertTrue(tb.disconnecting)
        b.dataReceived(b"late reply")  # read and dropped: the other end is gone
        self.assertEqual(ta.value(), b"")

    def test_over_yamux_stream_half_close(self) -> None:
        """Spliced to a yamux stream, a local EOF becomes a FIN the remote side reads as EOF."""
        pair = SessionPair()
        remote = RecorderFactory(HalfCloseRecorder)
        pair.client.listen(remote)
        local, stream_end = SpliceProtocol(), SpliceProtocol()
        local_transport = HalfCloseTransport()
        join(local, stream_end)
        local.makeConnection(local_transport)
        pair.server.open_stream(stream_end)
        local.dataReceived(b"abc")
        local.readConnectionLost()
        pair.pump()
        [agent] = remote.built
        assert isinstance(agent, HalfCloseRecorder)
        self.assertEqual(bytes(agent.received), b"abc")
        self.assertTrue(agent.read_closed)
        agent.transport.write(b"reply")
        agent.transport.loseConnection()
        pair.pump()
        self.assertEqual(local_transport.value(), b"reply")
        self.assertTrue(local_transport.disconnecting)

    def test_local_close_keeps_reply_waiting_for_window(self) -> None:
        """
        A local service that writes its reply and closes at once: the stream still sends
        all of it, though the window held part of it back when the local connection was
        lost.

        A TCP transport, when lost, calls ``stopProducing`` on its registered producer
        (``FileDescriptor.connectionLost``), here the yamux stream.  That used to reset the
        stream, discarding the part of the reply waiting for window: the client read a clean
        EOF after a cut at a window boundary (issue 11, found by the differential run with
        TCP half-close through ``forward``).
        """
        pair = SessionPair()
        remote = RecorderFactory(HalfCloseRecorder)
        pair.client.listen(remote)
        local, stream_end = SpliceProtocol(), SpliceProtocol()
        local_transport = TCPLikeTransport(local)
        join(local, stream_end)
        local.makeConnection(local_transport)
        pair.server.open_stream(stream_end)
        local.dataReceived(b"q")
        pair.pump()
        [client] = remote.built
        assert isinstance(client, HalfCloseRecorder)
        client.transport.loseConnection()  # the client half-closes: EOF to the local service
        client.transport.pauseProducing()  # and reads slowly: the window runs out
        pair.pump()
        self.assertTrue(local_transport.write_closed)
        reply = bytes(range(256)) * 4096  # 1 MiB: four windows
        local.dataReceived(reply)
        local.readConnectionLost()  # the local service closed right after its last write
        self.assertTrue(local_transport.lost)
        pair.pump()
        client.transport.resumeProducing()
        pair.pump()
        self.assertEqual(bytes(client.received), b"q" + reply)
        client.lost.trap(ConnectionDone)  # a clean end, no reset


class TCPLikeTransport(HalfCloseTransport):
    """
    Closes as a TCP transport does: once lost it stops its registered producer, then
    tells its protocol (``twisted.internet.abstract.FileDescriptor.connectionLost``).
    """

    lost = False

    def __init__(self, protocol: Protocol) -> None:
        super().__init__()
        self.protocol = protocol

    def loseConnection(self) -> None:
        if self.lost:
            return
        super().loseConnection()
        self.lost = True
        producer, self.producer = self.producer, None
        if producer is not None:
            producer.stopProducing()
        self.protocol.connectionLost(Failure(ConnectionDone()))

    def unregisterProducer(self) -> None:
        # As FileDescriptor's: no error when none is registered.
        self.producer = None

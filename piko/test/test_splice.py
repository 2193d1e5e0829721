"""Tests for :mod:`piko.splice`, without sockets."""

from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from piko.interfaces import IHalfCloseableTransport
from piko.splice import SpliceProtocol, join
from piko.test.mux.helpers import HalfCloseRecorder, RecorderFactory, SessionPair


@implementer(IHalfCloseableTransport)
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

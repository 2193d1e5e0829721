# -*- test-case-name: piko.test.agent.test_tcp_listener -*-
"""Tests for :mod:`piko.agent.tcp_listener` on an in-memory yamux pair."""

from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from piko.agent.tcp_listener import TCPListenerFactory
from piko.test.agent.helpers import FakeEndpoint, ListenerPair, take


def setup(mode="ok"):
    endpoint = FakeEndpoint(mode)
    pair = ListenerPair(TCPListenerFactory(endpoint, "ep-tcp"))
    return pair, endpoint


class TCPListenerTests(SynchronousTestCase):
    def test_splice_both_ways(self):
        """Bytes on the stream reach the local connection and its bytes come back."""
        pair, endpoint = setup()
        recorder = pair.open()
        recorder.transport.write(b"hello")
        pair.pump()
        local = endpoint.transports[0]
        self.assertEqual(take(local), b"hello")
        endpoint.protocols[0].dataReceived(b"world")
        pair.pump()
        self.assertEqual(bytes(recorder.received), b"world")

    def test_half_close_passed_on(self):
        """The server's FIN half-closes the local connection's write side."""
        pair, endpoint = setup()
        recorder = pair.open()
        recorder.transport.loseWriteConnection()
        pair.pump()
        self.assertTrue(endpoint.transports[0].write_closed)

    def test_dial_failure_closes_stream_without_bytes(self):
        """A refused dial closes the stream with no byte written, and warns."""
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        pair, endpoint = setup("refuse")
        recorder = pair.open()
        pair.pump()
        self.assertEqual(bytes(recorder.received), b"")
        self.assertTrue(recorder.read_closed)
        warnings = [e for e in events if e.get("log_format", "").startswith("failed to dial")]
        self.assertEqual(warnings[0]["endpoint_id"], "ep-tcp")

    def test_stream_lost_while_dialling_cancels(self):
        """A stream that ends while the dial is pending cancels the dial."""
        pair, endpoint = setup("hang")
        recorder = pair.open()
        recorder.transport.abortConnection()
        pair.pump()
        self.assertTrue(endpoint.pending[0].called)

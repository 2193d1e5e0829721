"""Tests for :class:`piko.http.proxy.ProxyExchange`, with StringTransports on both sides."""

from functools import partial

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from piko.http.proxy import EndpointConnector, IUpstreamConnector, ProxyExchange
from piko.http.rewrite import rewrite_request
from piko.http.server import HTTPServerProtocol, IRequestHandler
from piko.interfaces import IAbortableTransport, IHalfCloseableTransport
from piko.mux.endpoints import StreamClientEndpoint
from piko.test.mux.helpers import HalfCloseRecorder, RecorderFactory, SessionPair


@implementer(IHalfCloseableTransport)
class HalfCloseTransport(StringTransport):
    """A StringTransport that records loseWriteConnection (like a yamux stream)."""

    write_closed = False

    def loseWriteConnection(self):
        self.write_closed = True


@implementer(IUpstreamConnector)
class FakeConnector:
    """Hands out StringTransports, or fails, or never answers."""

    def __init__(self, mode="ok"):
        self.mode = mode
        self.transports = []
        self.released = []

    def connect(self, protocol):
        if self.mode == "refuse":
            return fail(ConnectionRefusedError())
        if self.mode == "hang":
            return Deferred()
        t = HalfCloseTransport()
        self.transports.append(t)
        protocol.makeConnection(t)
        return succeed(protocol)

    def release(self, protocol, reusable):
        self.released.append(reusable)
        protocol.transport.loseConnection()


@implementer(IRequestHandler)
class ProxyHandler:
    def __init__(self, connector, clock):
        self.connector = connector
        self.clock = clock
        self.proxies = []

    def request_received(self, exchange):
        rewrite = partial(rewrite_request, client_ip="127.0.0.1", close=True)
        p = ProxyExchange(
            exchange, self.connector, self.clock, lambda h, f: rewrite(h, f), timeout=30
        )
        self.proxies.append(p)
        p.start()


def setup(mode="ok"):
    clock = Clock()
    connector = FakeConnector(mode)
    handler = ProxyHandler(connector, clock)
    server = HTTPServerProtocol(handler, clock, date=lambda: b"D")
    down = HalfCloseTransport()
    server.makeConnection(down)
    return server, down, connector, clock, handler


class ProxyTests(SynchronousTestCase):
    """One request relayed to an upstream and back."""

    def test_interface(self):
        """FakeConnector is a faithful IUpstreamConnector."""
        verifyObject(IUpstreamConnector, FakeConnector())

    def test_relay_content_length(self):
        """Request head is rewritten, body streamed, response re-serialised Go-style."""
        server, down, connector, clock, _ = setup()
        server.dataReceived(b"POST /u HTTP/1.1\r\nHost: a.b\r\nContent-Length: 4\r\n\r\nab")
        up = connector.transports[0]
        self.assertEqual(
            up.value(),
            b"POST /u HTTP/1.1\r\nHost: a.b\r\nContent-Length: 4\r\nX-Forwarded-For: 127.0.0.1\r\n"
            b"X-Piko-Forward: true\r\nConnection: close\r\n\r\nab",
        )
        server.dataReceived(b"cd")
        self.assertTrue(up.value().endswith(b"abcd"))
        p = _proxy(server)
        p.dataReceived(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\nX-B: 1\r\n\r\nhi"
        )
        self.assertEqual(
            down.value(), b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-B: 1\r\nDate: D\r\n\r\nhi"
        )
        self.assertEqual(connector.released, [False])
        self.assertFalse(down.disconnecting)

    def test_close_delimited_rechunked(self):
        """A close-delimited upstream body is re-chunked for an HTTP/1.1 client."""
        server, down, connector, clock, _ = setup()
        server.dataReceived(b"GET / HTTP/1.1\r\nHost: a.b\r\n\r\n")
        p = _proxy(server)
        p.dataReceived(b"HTTP/1.1 200 OK\r\n\r\nabc")
        p.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(
            down.value(),
            b"HTTP/1.1 200 OK\r\nDate: D\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n0\r\n\r\n",
        )

    def test_chunked_request_streamed(self):
        """A chunked request body is re-chunked upstream as it arrives."""
        server, down, connector, clock, _ = setup()
        server.dataReceived(
            b"POST / HTTP/1.1\r\nHost: a.b\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"
        )
        up = connector.transports[0]
        self.assertTrue(up.value().endswith(b"\r\n\r\n3\r\nabc\r\n"))
        server.dataReceived(b"0\r\n\r\n")
        self.assertTrue(up.value().endswith(b"3\r\nabc\r\n0\r\n\r\n"))

    def test_unreachable_502(self):
        """A failed connect answers 502 upstream unreachable and keeps the client connection."""
        server, down, *_ = setup("refuse")
        server.dataReceived(b"GET / HTTP/1.1\r\nHost: a.b\r\n\r\n")
        self.assertTrue(down.value().startswith(b"HTTP/1.1 502 Bad Gateway\r\n"))
        self.assertTrue(down.value().endswith(b'{"error":"upstream unreachable"}\n'))
        self.assertFalse(down.disconnecting)

    def test_upstream_lost_before_head_502(self):
        """An upstream that closes before answering gives 502."""
        server, down, connector, clock, _ = setup()
        server.dataReceived(b"GET / HTTP/1.1\r\nHost: a.b\r\n\r\n")
        _proxy(server).connectionLost(Failure(ConnectionDone()))
        self.assertTrue(down.value().startswith(b"HTTP/1.1 502 Bad Gateway\r\n"))

    def test_upstream_lost_after_head_aborts(self):
        """An upstream that breaks mid-body aborts the client connection."""
        server, down, connector, clock, _ = setup()
        server.dataReceived(b"GET / HTTP/1.1\r\nHost: a.b\r\n\r\n")
        p = _proxy(server)
        p.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        p.connectionLost(Failure(ConnectionDone()))
        self.assertTrue(down.disconnecting)

    def test_timeout_504(self):
        """No response head within the timeout answers 504 and closes the upstream."""
        server, down, connector, clock, _ = setup()
        server.dataReceived(b"GET / HTTP/1.1\r\nHost: a.b\r\n\r\n")
        clock.advance(30)
        self.assertTrue(down.value().startswith(b"HTTP/1.1 504 Gateway Timeout\r\n"))
        self.assertTrue(connector.transports[0].disconnecting)

    def test_websocket_no_timeout(self):
        """An Upgrade: websocket request has no proxy timeout."""
        server, down, connector, clock, _ = setup("hang")
        server.dataReceived(
            b"GET / HTTP/1.1\r\nHost: a.b\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
        )
        clock.advance(3600)
        self.assertEqual(down.value(), b"")

    def test_upgrade_relay(self):
        """After a 101 bytes pass both ways unchanged and half-close is passed on."""
        server, down, connector, clock, _ = setup()
        server.dataReceived(
            b"GET / HTTP/1.1\r\nHost: a.b\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
        )
        up = connector.transports[0]
        p = _proxy(server)
        p.dataReceived(
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n"
            b"Connection: Upgrade\r\n\r\nS1"
        )
        self.assertEqual(
            down.value(),
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
            b"Upgrade: websocket\r\n\r\nS1",
        )
        up.clear()
        server.dataReceived(b"C1")
        self.assertEqual(up.value(), b"C1")
        p.dataReceived(b"S2")
        self.assertTrue(down.value().endswith(b"S2"))
        server.readConnectionLost()
        self.assertTrue(up.write_closed)
        p.readConnectionLost()
        self.assertTrue(down.write_closed)

    def test_backpressure_bounded(self):
        """With the client not reading, the upstream is paused, so buffered bytes stay bounded."""
        server, down, connector, clock, _ = setup()
        server.dataReceived(b"GET / HTTP/1.1\r\nHost: a.b\r\n\r\n")
        up = connector.transports[0]
        p = _proxy(server)
        p.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n")
        self.assertIs(down.producer, up)
        down.producer.pauseProducing()  # the client's socket buffer is full
        self.assertEqual(up.producerState, "paused")
        # A paused transport delivers nothing more; what was delivered was written through.
        self.assertEqual(p.reader.buffered, 0)

    def test_request_body_backpressure(self):
        """A full upstream pauses reading the client's request body."""
        server, down, connector, clock, _ = setup()
        server.dataReceived(b"POST / HTTP/1.1\r\nHost: a.b\r\nContent-Length: 100\r\n\r\nab")
        up = connector.transports[0]
        up.producer.pauseProducing()
        self.assertEqual(down.producerState, "paused")
        up.producer.resumeProducing()
        self.assertEqual(down.producerState, "producing")

    def test_client_lost_aborts_upstream(self):
        """The client going away mid-exchange closes the upstream."""
        server, down, connector, clock, _ = setup()
        server.dataReceived(b"POST / HTTP/1.1\r\nHost: a.b\r\nContent-Length: 100\r\n\r\nab")
        server.connectionLost(Failure(ConnectionDone()))
        self.assertTrue(connector.transports[0].disconnecting)


def _proxy(server):
    return server.handler.proxies[-1]


@implementer(IAbortableTransport)
class AbortRecordingTransport(HalfCloseTransport):
    """The client's transport: records an abort (a TCP reset) apart from a clean close."""

    aborted = False

    def abortConnection(self):
        self.aborted = True
        self.loseConnection()


def stream_setup():
    """
    The server side of the relay on a real yamux pair: each request opens a stream, and the
    agent's end of it is a recorder the test answers through.
    """
    pair = SessionPair()
    agent = RecorderFactory(HalfCloseRecorder)
    pair.client.listen(agent)
    handler = ProxyHandler(EndpointConnector(StreamClientEndpoint(pair.server)), pair.clock)
    server = HTTPServerProtocol(handler, pair.clock, date=lambda: b"D")
    down = AbortRecordingTransport()
    server.makeConnection(down)
    return pair, agent, server, down


class UpstreamStreamEndsEarlyTests(SynchronousTestCase):
    """
    A yamux stream that ends (FIN or RST) before the response it carries is complete ends
    the client's response at once, whatever the framing or flow state: the client gets what
    arrived, then the close (Go flushes, then closes), and sees the body cut short.
    """

    def assert_ended(self, down, answer):
        self.assertTrue(down.disconnecting or down.aborted, answer[:40])

    HEADS = (
        b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 5000,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1770\r\n" + b"x" * 5000,
    )

    def _answer(self, pair, agent, server, body=b""):
        server.dataReceived(b"GET / HTTP/1.1\r\nHost: a.b\r\n" + body)
        pair.pump()
        return agent.built[-1].transport

    def test_fin_mid_body(self):
        """A FIN after part of a Content-Length or chunked body ends the client's response."""
        for answer in self.HEADS:
            pair, agent, server, down = stream_setup()
            stream = self._answer(pair, agent, server, b"\r\n")
            stream.write(answer)
            pair.pump()
            self.assertIn(b"x" * 100, down.value())
            self.assertFalse(down.disconnecting)
            stream.loseConnection()
            pair.pump()
            self.assert_ended(down, answer)

    def test_cut_response_keeps_what_was_written(self):
        """
        The client's connection is closed after the bytes already written, not aborted: an
        abort throws away a head still in the socket's write buffer, and the client would
        get a reset instead of the status and the body up to the break (found by the
        differential run: Go's server gives the head and the partial body).
        """
        for answer in self.HEADS:
            pair, agent, server, down = stream_setup()
            stream = self._answer(pair, agent, server, b"\r\n")
            stream.write(answer)
            stream.loseConnection()
            pair.pump()
            self.assertTrue(down.value().startswith(b"HTTP/1.1 200 OK\r\n"))
            self.assertTrue(down.disconnecting)
            self.assertFalse(down.aborted, answer[:40])

    def test_reset_mid_body(self):
        """An RST after part of the body ends the client's response."""
        for answer in self.HEADS:
            pair, agent, server, down = stream_setup()
            stream = self._answer(pair, agent, server, b"\r\n")
            stream.write(answer)
            pair.pump()
            stream.abortConnection()
            pair.pump()
            self.assert_ended(down, answer)

    def test_fin_mid_body_while_client_slow(self):
        """
        A FIN that arrives while the client is not reading (the stream paused) ends the
        client's response as soon as what was held is written, not only when more data comes.
        """
        for answer in self.HEADS:
            pair, agent, server, down = stream_setup()
            stream = self._answer(pair, agent, server, b"\r\n")
            stream.write(answer)
            pair.pump()
            down.producer.pauseProducing()  # the client's socket buffer is full
            stream.write(b"y" * 1000)
            stream.loseConnection()
            pair.pump()
            self.assertFalse(down.disconnecting or down.aborted)
            down.producer.resumeProducing()  # it drained
            pair.pump()
            self.assertIn(b"y" * 1000, down.value())
            self.assert_ended(down, answer)

    def _upload_paused(self):
        """A POST whose body fills the stream's window: the client's reading is paused."""
        pair, agent, server, down = stream_setup()
        stream = self._answer(pair, agent, server, b"Content-Length: 1000000\r\n\r\n")
        stream.pauseProducing()  # the agent does not read the body (yet)
        server.dataReceived(b"b" * 400_000)
        pair.pump()
        self.assertEqual(down.producerState, "paused")
        return pair, stream, down

    def test_fin_mid_body_while_request_body_paused(self):
        """
        A FIN mid-response while the client's request body waits for window (the client
        paused) ends the client's response.
        """
        for answer in self.HEADS:
            pair, stream, down = self._upload_paused()
            stream.write(answer)
            pair.pump()
            self.assertIn(b"x" * 100, down.value())
            stream.loseConnection()
            pair.pump()
            self.assert_ended(down, answer)

    def test_reset_before_head_while_request_body_paused(self):
        """An RST before any response head, while the request body is paused, answers 502."""
        pair, stream, down = self._upload_paused()
        stream.abortConnection()
        pair.pump()
        self.assertTrue(down.value().startswith(b"HTTP/1.1 502 Bad Gateway\r\n"))

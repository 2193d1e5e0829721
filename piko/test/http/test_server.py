"""Tests for :class:`piko.http.server.HTTPServerProtocol`, over StringTransport and a Clock."""

from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from piko.http import errors
from piko.http.server import (
    FREE_HEAD_BYTES,
    LINGER,
    MAX_DISCARD,
    PROCESS_HEAD_BUDGET,
    HeadBudget,
    HTTPServerProtocol,
    IRequestHandler,
    IRequestReceiver,
    IServerExchange,
    service_unavailable,
)
from piko.interfaces import IHalfCloseableTransport


@implementer(IRequestReceiver)
class Receiver:
    def __init__(self):
        self.data = []
        self.ended = False
        self.lost = None

    def body_data(self, data):
        self.data.append(data)

    def body_end(self):
        self.ended = True

    def connection_lost(self, reason):
        self.lost = reason


@implementer(IRequestHandler)
class Handler:
    """Records exchanges; answers 200 'ok' at once unless told to hold them."""

    def __init__(self, auto=True, read_body=False):
        self.exchanges = []
        self.auto = auto
        self.read_body = read_body
        self.receivers = []

    def request_received(self, exchange):
        self.exchanges.append(exchange)
        if self.read_body:
            r = Receiver()
            self.receivers.append(r)
            exchange.set_receiver(r)
        if self.auto:
            exchange.start_response(200, ((b"Content-Length", b"2"),))
            exchange.write(b"ok")
            exchange.finish()


def connect(handler, **kw):
    clock = Clock()
    proto = HTTPServerProtocol(handler, clock, date=lambda: b"D", **kw)
    transport = StringTransport()
    proto.makeConnection(transport)
    return proto, transport, clock


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nDate: D\r\n\r\nok"


class ServerTests(SynchronousTestCase):
    """Connection management of the HTTP server protocol."""

    def test_interfaces(self):
        """The exchange provides IServerExchange."""
        handler = Handler()
        proto, t, _ = connect(handler)
        proto.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        verifyObject(IServerExchange, handler.exchanges[0])

    def test_keep_alive(self):
        """Two requests on one connection get two responses and the connection stays open."""
        handler = Handler()
        proto, t, _ = connect(handler)
        proto.dataReceived(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n")
        proto.dataReceived(b"GET /2 HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual(t.value(), OK * 2)
        self.assertFalse(t.disconnecting)

    def test_pipelining(self):
        """A pipelined request waits, with reading paused, until the first response finishes."""
        handler = Handler(auto=False)
        proto, t, _ = connect(handler)
        proto.dataReceived(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual([e.head.target for e in handler.exchanges], [b"/1"])
        self.assertEqual(t.producerState, "paused")
        handler.exchanges[0].respond(errors.not_found)
        self.assertEqual([e.head.target for e in handler.exchanges], [b"/1", b"/2"])
        self.assertEqual(t.producerState, "producing")
        self.assertEqual(handler.exchanges[1].raw_head, b"GET /2 HTTP/1.1\r\nHost: a\r\n\r\n")

    def test_http10_closes(self):
        """An HTTP/1.0 request gets an HTTP/1.0 answer and the connection closes."""
        handler = Handler()
        proto, t, _ = connect(handler)
        proto.dataReceived(b"GET / HTTP/1.0\r\n\r\n")
        self.assertTrue(t.value().startswith(b"HTTP/1.0 200 OK\r\n"))
        self.assertNotIn(b"Connection", t.value())
        self.assertTrue(t.disconnecting)

    def test_connection_close(self):
        """Connection: close gets Connection: close back and a close."""
        handler = Handler()
        proto, t, _ = connect(handler)
        proto.dataReceived(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
        self.assertIn(b"Connection: close\r\n", t.value())
        self.assertTrue(t.disconnecting)

    def test_expect_continue(self):
        """100 Continue is sent only when the handler asks for the body."""
        handler = Handler(auto=False)
        proto, t, _ = connect(handler)
        proto.dataReceived(b"POST / HTTP/1.1\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
        self.assertEqual(t.value(), b"")
        r = Receiver()
        handler.exchanges[0].set_receiver(r)
        self.assertEqual(t.value(), b"HTTP/1.1 100 Continue\r\n\r\n")
        proto.dataReceived(b"abc")
        self.assertEqual((b"".join(r.data), r.ended), (b"abc", True))

    def test_expect_continue_refused(self):
        """Answering without reading an expected body closes the connection, as Go does."""
        handler = Handler(auto=False)
        proto, t, _ = connect(handler)
        proto.dataReceived(b"POST / HTTP/1.1\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
        handler.exchanges[0].respond(errors.not_found)
        self.assertIn(b"Connection: close\r\n", t.value())
        self.assertTrue(t.disconnecting)

    def test_header_too_large(self):
        """A head over the limit gets Go's 431 and the connection closes."""
        handler = Handler()
        proto, t, _ = connect(handler, max_header_bytes=100)
        proto.dataReceived(b"GET / HTTP/1.1\r\nX: " + b"a" * 5000)
        self.assertTrue(t.value().startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"))
        self.assertTrue(t.disconnecting)
        self.assertEqual(handler.exchanges, [])

    def test_bad_request(self):
        """Garbage gets Go's 400 and a close."""
        proto, t, _ = connect(Handler())
        proto.dataReceived(b"NOT HTTP\r\n\r\n")
        self.assertTrue(t.value().startswith(b"HTTP/1.1 400 Bad Request\r\n"))
        self.assertTrue(t.disconnecting)

    def test_header_timeout(self):
        """A head that does not complete within the header timeout closes the connection."""
        proto, t, clock = connect(Handler(), header_timeout=10)
        proto.dataReceived(b"GET / HTTP/1.1\r\n")
        clock.advance(9)
        self.assertFalse(t.disconnecting)
        clock.advance(1)
        self.assertTrue(t.disconnecting)
        self.assertEqual(t.value(), b"")

    def test_idle_timeout(self):
        """A kept-alive connection with no next request closes after the idle timeout."""
        proto, t, clock = connect(Handler(), idle_timeout=300)
        proto.dataReceived(b"GET / HTTP/1.1\r\n\r\n")
        clock.advance(299)
        self.assertFalse(t.disconnecting)
        clock.advance(1)
        self.assertTrue(t.disconnecting)

    def test_chunked_incremental(self):
        """A chunked body reaches the handler piece by piece as it arrives."""
        handler = Handler(auto=False, read_body=True)
        proto, t, _ = connect(handler)
        proto.dataReceived(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel")
        r = handler.receivers[0]
        self.assertEqual(r.data, [b"hel"])
        proto.dataReceived(b"lo\r\n")
        self.assertEqual(r.data, [b"hel", b"lo"])
        self.assertFalse(r.ended)
        proto.dataReceived(b"0\r\n\r\n")
        self.assertTrue(r.ended)

    def test_streamed_response_chunked(self):
        """A response without Content-Length is chunked to an HTTP/1.1 client."""
        handler = Handler(auto=False)
        proto, t, _ = connect(handler)
        proto.dataReceived(b"GET / HTTP/1.1\r\n\r\n")
        ex = handler.exchanges[0]
        ex.start_response(200, ((b"X-A", b"1"),))
        ex.write(b"hello")
        ex.finish()
        self.assertEqual(
            t.value(),
            b"HTTP/1.1 200 OK\r\nX-A: 1\r\nDate: D\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n0\r\n\r\n",
        )

    def test_upgrade_take_over(self):
        """An upgrade handler gets the raw head and every byte already buffered."""
        from twisted.internet.protocol import Protocol

        class Raw(Protocol):
            def __init__(self):
                self.got = b""

            def dataReceived(self, data):
                self.got += data

        handler = Handler(auto=False)
        proto, t, _ = connect(handler)
        head = b"GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
        proto.dataReceived(head + b"\x81\x05hello")
        ex = handler.exchanges[0]
        self.assertTrue(ex.upgrade)
        raw = Raw()
        ex.take_over(raw, replay_head=True)
        proto.dataReceived(b"more")
        self.assertEqual(raw.got, head + b"\x81\x05hellomore")
        self.assertIs(raw.transport, t)

    def test_body_backpressure(self):
        """Pausing the body pauses the client transport and holds further body bytes."""
        handler = Handler(auto=False, read_body=True)
        proto, t, _ = connect(handler)
        proto.dataReceived(b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n12345")
        ex, r = handler.exchanges[0], handler.receivers[0]
        ex.pause_body()
        self.assertEqual(t.producerState, "paused")
        proto.dataReceived(b"67890")
        self.assertEqual(r.data, [b"12345"])
        ex.resume_body()
        self.assertEqual(r.data, [b"12345", b"67890"])
        self.assertTrue(r.ended)

    def test_client_lost(self):
        """The receiver hears when the client goes away mid-exchange."""
        handler = Handler(auto=False, read_body=True)
        proto, t, _ = connect(handler)
        proto.dataReceived(b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n12")
        proto.connectionLost(Failure(ConnectionDone()))
        self.assertIsNotNone(handler.receivers[0].lost)


class _Producer:
    """A response producer that records flow control."""

    def __init__(self):
        self.state = "producing"

    def pauseProducing(self):
        self.state = "paused"

    def resumeProducing(self):
        self.state = "producing"

    def stopProducing(self):
        self.state = "stopped"


POST_100 = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n"


class HeaderTimeoutAnswerTests(SynchronousTestCase):
    """What the header timeout answers, as Go's server does."""

    def test_unfinished_request_line_gets_400(self):
        """A request line that never ended gets Go's 400 at the timeout, then a close."""
        proto, t, clock = connect(Handler(), header_timeout=10)
        proto.dataReceived(b"GET / HT")
        clock.advance(10)
        self.assertEqual(t.value(), errors.bad_request())
        self.assertTrue(t.disconnecting)

    def test_unfinished_headers_closed_unanswered(self):
        """Once the request line is complete, the timeout closes without answering (Go)."""
        proto, t, clock = connect(Handler(), header_timeout=10)
        proto.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n")
        clock.advance(10)
        self.assertEqual(t.value(), b"")
        self.assertTrue(t.disconnecting)

    def test_impossible_request_line_refused_at_once(self):
        """TLS bytes on a plain port get the 400 at once, not at the timeout."""
        proto, t, clock = connect(Handler(), header_timeout=10)
        proto.dataReceived(bytes.fromhex("16030100f8010000f40303"))
        self.assertEqual(t.value(), errors.bad_request())
        self.assertTrue(t.disconnecting)


class ReadTimeoutTests(SynchronousTestCase):
    """``read_timeout`` drops a request body that stops making progress."""

    def test_dripped_body_dropped(self):
        """A body dripped a byte every 2 s is dropped at the read timeout; its receiver hears."""
        handler = Handler(auto=False, read_body=True)
        proto, t, clock = connect(handler, read_timeout=10)
        proto.dataReceived(POST_100)
        for _ in range(4):
            proto.dataReceived(b"a")
            clock.advance(2)
        self.assertFalse(t.disconnecting)
        clock.advance(2)
        self.assertTrue(t.disconnecting)
        proto.connectionLost(Failure(ConnectionDone()))
        self.assertIsNotNone(handler.receivers[0].lost)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_progressing_body_kept(self):
        """A long upload sending 16 KiB per window is never dropped (unlike Go's deadline)."""
        handler = Handler(auto=False, read_body=True)
        proto, t, clock = connect(handler, read_timeout=10)
        proto.dataReceived(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10000000\r\n\r\n")
        for _ in range(60):
            proto.dataReceived(b"a" * 8192)
            clock.advance(5)
        self.assertFalse(t.disconnecting)

    def test_paused_reading_not_counted(self):
        """While the handler holds the body back, the client is not blamed for silence."""
        handler = Handler(auto=False, read_body=True)
        proto, t, clock = connect(handler, read_timeout=10)
        proto.dataReceived(POST_100)
        handler.exchanges[0].pause_body()
        clock.advance(60)
        self.assertFalse(t.disconnecting)
        handler.exchanges[0].resume_body()
        clock.advance(10)
        self.assertFalse(t.disconnecting)
        clock.advance(10)
        self.assertTrue(t.disconnecting)

    def test_unread_body_not_counted(self):
        """Before the handler asks for the body (``Expect: 100-continue``), no timeout runs."""
        handler = Handler(auto=False)
        proto, t, clock = connect(handler, read_timeout=10)
        proto.dataReceived(POST_100[:-2] + b"Expect: 100-continue\r\n\r\n")
        clock.advance(60)
        self.assertFalse(t.disconnecting)

    def test_finished_body_stops_timer(self):
        """Once the body is complete, a slow response is not a read timeout."""
        handler = Handler(auto=False, read_body=True)
        proto, t, clock = connect(handler, read_timeout=10)
        proto.dataReceived(POST_100 + b"a" * 100)
        self.assertTrue(handler.receivers[0].ended)
        clock.advance(60)
        self.assertFalse(t.disconnecting)

    def test_off_by_default(self):
        """Without ``read_timeout`` a stalled body waits (the agent's streams rely on it)."""
        handler = Handler(auto=False, read_body=True)
        proto, t, clock = connect(handler)
        proto.dataReceived(POST_100)
        clock.advance(600)
        self.assertFalse(t.disconnecting)


class WriteTimeoutTests(SynchronousTestCase):
    """``write_timeout`` drops a client that stops taking the response."""

    def start(self, **kw):
        handler = Handler(auto=False)
        proto, t, clock = connect(handler, **kw)
        proto.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        exchange = handler.exchanges[0]
        exchange.start_response(200, ((b"Content-Length", b"1000000"),))
        producer = _Producer()
        exchange.register_producer(producer)
        return proto, t, clock, producer

    def test_stalled_reader_dropped(self):
        """A client whose write buffer stays full for the write timeout is dropped."""
        proto, t, clock, producer = self.start(write_timeout=10)
        t.producer.pauseProducing()
        self.assertEqual(producer.state, "paused")
        clock.advance(9.9)
        self.assertFalse(t.disconnecting)
        clock.advance(0.1)
        self.assertTrue(t.disconnecting)

    def test_draining_reader_kept(self):
        """A client that keeps draining its buffer, however long the response, stays."""
        proto, t, clock, producer = self.start(write_timeout=10)
        for _ in range(30):
            t.producer.pauseProducing()
            clock.advance(9)
            t.producer.resumeProducing()
            clock.advance(1)
        self.assertFalse(t.disconnecting)
        self.assertEqual(producer.state, "producing")

    def test_finished_response_stops_timer(self):
        """After the response ends, the write timer is gone."""
        proto, t, clock, producer = self.start(write_timeout=10)
        t.producer.pauseProducing()
        handler_exchange = proto.current
        handler_exchange.finish()
        self.assertEqual(clock.getDelayedCalls()[0].func, proto._timed_out)
        clock.advance(11)
        self.assertFalse(t.disconnecting)

    def test_off_by_default(self):
        """Without ``write_timeout`` the producer is registered as given."""
        proto, t, clock, producer = self.start()
        self.assertIs(t.producer, producer)
        t.producer.pauseProducing()
        clock.advance(600)
        self.assertFalse(t.disconnecting)


def _big_head(count):
    lines = b"".join(b"X-H%05d: v\r\n" % i for i in range(count))
    return b"GET / HTTP/1.1\r\nHost: a\r\n" + lines + b"\r\n"


class HeadBudgetTests(SynchronousTestCase):
    """Large heads are charged to a per-process budget and refused with a 503 past it."""

    def test_partial_heads_charged_and_refused(self):
        """A second large partial head past the budget gets a 503; the first is unharmed."""
        budget = HeadBudget(100_000)
        raw = _big_head(6000)  # 78 KB
        a, ta, _ = connect(Handler(auto=False), head_budget=budget)
        a.dataReceived(raw[:70_000])
        self.assertEqual(budget.held, 70_000 - FREE_HEAD_BYTES)
        b, tb, _ = connect(Handler(auto=False), head_budget=budget)
        b.dataReceived(raw[:70_000])
        self.assertEqual(tb.value(), service_unavailable())
        self.assertTrue(tb.disconnecting)
        self.assertEqual((budget.held, budget.refused), (70_000 - FREE_HEAD_BYTES, 1))
        self.assertFalse(ta.disconnecting)

    def test_parsed_head_charged_until_exchange_ends(self):
        """A parsed head stays charged while it is answered, and is released after."""
        budget = HeadBudget(1 << 20)
        handler = Handler(auto=False)
        proto, t, _ = connect(handler, head_budget=budget)
        raw = _big_head(6000)
        proto.dataReceived(raw)
        exchange = handler.exchanges[0]
        self.assertEqual(budget.held, 2 * len(raw) - FREE_HEAD_BYTES)
        exchange.respond(errors.not_found)
        self.assertEqual(budget.held, 0)

    def test_whole_head_past_budget_refused(self):
        """A head that arrives at once and costs more than is left is refused."""
        budget = HeadBudget(100_000)
        handler = Handler()
        proto, t, _ = connect(handler, head_budget=budget)
        proto.dataReceived(_big_head(6000))
        self.assertEqual(handler.exchanges, [])
        self.assertEqual(t.value(), service_unavailable())
        self.assertEqual(budget.held, 0)

    def test_small_heads_never_refused(self):
        """With the budget spent, ordinary heads are still served."""
        budget = HeadBudget(100_000)
        a, ta, _ = connect(Handler(auto=False), head_budget=budget)
        a.dataReceived(_big_head(12000)[: 100_000 + FREE_HEAD_BYTES])
        self.assertEqual(budget.held, 100_000)
        proto, t, _ = connect(Handler(), head_budget=budget)
        proto.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\nX-A: " + b"b" * 8000 + b"\r\n\r\n")
        self.assertEqual(t.value(), OK)

    def test_released_when_connection_lost(self):
        """A client that leaves mid-head gives its charge back."""
        budget = HeadBudget(1 << 20)
        proto, t, _ = connect(Handler(), head_budget=budget)
        proto.dataReceived(_big_head(6000)[:50_000])
        self.assertGreater(budget.held, 0)
        proto.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(budget.held, 0)

    def test_process_budget_by_default(self):
        """Protocols share one budget per process unless given their own."""
        proto, _, _ = connect(Handler())
        self.assertIs(proto.head_budget, PROCESS_HEAD_BUDGET)


class LateParseErrorTests(SynchronousTestCase):
    """A malformed body after the response started cannot be answered with a 400."""

    def test_bad_chunk_after_response_started_aborts(self):
        """The connection is dropped and nothing is appended to the response under way."""
        handler = Handler(auto=False, read_body=True)
        proto, t, _ = connect(handler)
        proto.dataReceived(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
        handler.exchanges[0].start_response(200, ((b"Content-Length", b"5"),))
        sent = t.value()
        proto.dataReceived(b"zz\r\n")
        self.assertEqual(t.value(), sent)
        self.assertTrue(t.disconnecting)


class HeldBytesTransport(StringTransport):
    """
    A transport that, like a yamux stream, holds bytes that arrive while it is paused and
    hands them to the protocol from inside ``resumeProducing``.
    """

    def __init__(self):
        super().__init__()
        self.held = []

    def arrive(self, data):
        if self.producerState == "paused":
            self.held.append(data)
        else:
            self.protocol.dataReceived(data)

    def resumeProducing(self):
        super().resumeProducing()
        while self.held and self.producerState == "producing":
            self.protocol.dataReceived(self.held.pop(0))


class ResumeDeliversAtOnceTests(SynchronousTestCase):
    """Bytes a transport delivers from inside ``resumeProducing`` are processed, not stranded."""

    def setUp(self):
        self.handler = Handler(auto=False)
        self.proto = HTTPServerProtocol(self.handler, Clock(), date=lambda: b"D")
        self.transport = HeldBytesTransport()
        self.transport.protocol = self.proto
        self.proto.makeConnection(self.transport)

    def test_last_chunk_held_until_receiver(self):
        """
        A chunk and the last chunk held while no receiver reads the body both reach it once
        one is set (the agent's chunked POST waiting for its local connection).
        """
        t = self.transport
        t.arrive(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
        t.arrive(b"3\r\nabc\r\n")
        t.arrive(b"0\r\n\r\n")
        self.assertEqual(t.held, [b"0\r\n\r\n"])
        receiver = Receiver()
        self.handler.exchanges[0].set_receiver(receiver)
        self.assertEqual((receiver.data, receiver.ended), ([b"abc"], True))

    def test_body_held_while_paused(self):
        """Body bytes held while the receiver paused the body all arrive when it resumes."""
        t = self.transport
        t.arrive(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9\r\n\r\n")
        receiver = Receiver()
        exchange = self.handler.exchanges[0]
        exchange.set_receiver(receiver)
        t.arrive(b"123")
        exchange.pause_body()
        t.arrive(b"456")
        t.arrive(b"789")
        exchange.resume_body()
        self.assertEqual((b"".join(receiver.data), receiver.ended), (b"123456789", True))


@implementer(IHalfCloseableTransport)
class HalfClosingTransport(StringTransport):
    """A StringTransport that can half-close, as a TCP transport can."""

    write_closed = False

    def loseWriteConnection(self):
        self.write_closed = True


class LingerTests(SynchronousTestCase):
    """
    An answer given before the request body was read whole closes as Go's does: a
    half-close, then the close after LINGER or the peer's own close; an immediate close
    would reset the connection under the answer (seed 1139911386 exchange 29: a Go node in
    front saw ``write: broken pipe`` and answered 502).
    """

    def connect(self, handler):
        clock = Clock()
        proto = HTTPServerProtocol(handler, clock, date=lambda: b"D")
        transport = HalfClosingTransport()
        proto.makeConnection(transport)
        return proto, transport, clock

    def test_close_answer_lingers(self):
        """An answer that closes, body unread: half-close first, close after LINGER."""
        handler = Handler(auto=False)
        proto, t, clock = self.connect(handler)
        proto.dataReceived(b"POST / HTTP/1.1\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n")
        handler.exchanges[0].respond(errors.not_found)
        self.assertIn(b"Connection: close\r\n", t.value())
        self.assertEqual((t.write_closed, t.disconnecting), (True, False))
        self.assertEqual(t.producerState, "producing")
        proto.dataReceived(b"0123456789")
        clock.advance(LINGER - 0.01)
        self.assertFalse(t.disconnecting)
        clock.advance(0.01)
        self.assertTrue(t.disconnecting)

    def test_discard_limit_lingers(self):
        """Past Go's discard limit of an unread body, the close lingers too."""
        handler = Handler(auto=False)
        proto, t, clock = self.connect(handler)
        size = MAX_DISCARD * 4
        proto.dataReceived(b"POST / HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % size)
        exchange = handler.exchanges[0]
        exchange.start_response(500, ((b"Content-Length", b"2"),))
        exchange.write(b"no")
        exchange.finish()
        proto.dataReceived(b"x" * (MAX_DISCARD + 1))
        self.assertEqual((t.write_closed, t.disconnecting), (True, False))
        proto.dataReceived(b"x" * 1000)  # still read, and dropped
        clock.advance(LINGER)
        self.assertTrue(t.disconnecting)

    def test_peer_close_ends_linger(self):
        """The peer's own close ends the linger at once."""
        handler = Handler(auto=False)
        proto, t, clock = self.connect(handler)
        proto.dataReceived(b"POST / HTTP/1.1\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n")
        handler.exchanges[0].respond(errors.not_found)
        proto.readConnectionLost()
        self.assertTrue(t.disconnecting)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_read_body_closes_at_once(self):
        """A body read whole leaves nothing to reset: the close is immediate."""
        handler = Handler(auto=False, read_body=True)
        proto, t, _ = self.connect(handler)
        proto.dataReceived(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx")
        self.assertTrue(handler.receivers[0].ended)
        handler.exchanges[0].respond(errors.not_found)
        self.assertTrue(t.disconnecting)

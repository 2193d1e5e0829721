# -*- test-case-name: piko.test.inspect.test_capture -*-
"""
Tests for :mod:`piko.inspect.capture`: an agent HTTP (and TCP) listener on a yamux pair in
memory, with the inspector on, against a fake local service; no sockets.
"""

from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from piko.agent.http_listener import HTTPListenerFactory, Target
from piko.agent.tcp_listener import TCPListenerFactory
from piko.http.pool import ConnectionPool
from piko.inspect import IListenerInspector, Inspector
from piko.test.agent.helpers import FakeEndpoint, ListenerPair, mask_date, take

WALL = 1_700_000_000.0


def setup(mode="ok", timeout=10.0, inspect=True, body_cap=64 * 1024, budget=10**7):
    endpoint = FakeEndpoint(mode)
    pair = ListenerPair(None)
    pool = ConnectionPool(pair.clock, endpoint)
    inspector = (
        Inspector(pair.clock, wall=lambda: WALL, body_cap=body_cap, budget=budget)
        if inspect
        else None
    )
    factory = HTTPListenerFactory(
        pair.clock,
        pool,
        Target("127.0.0.1", 31080),
        timeout=timeout,
        inspector=inspector,
        endpoint_id="ep",
    )
    pair.client.listen(factory)
    return pair, endpoint, inspector


POST = (
    b"POST /hook?x=1 HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\n"
    b"X-Forwarded-For: 203.0.113.9\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
)


def exchange(inspector):
    [record] = list(inspector.store.exchanges())
    return record


class CaptureTests(SynchronousTestCase):
    def test_provides_interface(self):
        """The inspector is what listeners take."""
        verifyObject(IListenerInspector, Inspector(None))

    def test_exchange_captured(self):
        """Method, target, headers, bodies, status, client and timing of an exchange."""
        pair, endpoint, inspector = setup()
        recorder = pair.open()
        recorder.transport.write(POST % 9 + b'{"a": 1}\n')
        pair.pump()
        local = endpoint.transports[0]
        take(local)
        record = exchange(inspector)
        self.assertFalse(record.complete)
        pair.clock.advance(0.25)
        endpoint.protocols[0].dataReceived(
            b"HTTP/1.1 201 Created\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"
        )
        pair.pump()
        self.assertTrue(record.complete)
        self.assertEqual((record.method, record.target), (b"POST", b"/hook?x=1"))
        self.assertEqual(record.remote_addr, "203.0.113.9")
        self.assertEqual(bytes(record.request_body.data), b'{"a": 1}\n')
        self.assertEqual((record.status, bytes(record.response_body.data)), (201, b"ok"))
        self.assertIn((b"Content-Type", b"text/plain"), record.response_headers)
        self.assertEqual((record.started, record.duration), (WALL, 0.25))
        self.assertEqual(record.error, "")

    def test_relayed_bytes_unchanged(self):
        """With the inspector on, the local service and the client get the same bytes."""
        outputs = []
        for inspect in (False, True):
            pair, endpoint, inspector = setup(inspect=inspect)
            recorder = pair.open()
            recorder.transport.write(POST % 9 + b'{"a": 1}\n')
            pair.pump()
            sent = take(endpoint.transports[0])
            endpoint.protocols[0].dataReceived(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
            )
            pair.pump()
            outputs.append((sent, mask_date(bytes(recorder.received))))
        self.assertEqual(outputs[0], outputs[1])

    def test_large_body_streams_and_is_truncated(self):
        """
        A request body far larger than the cap streams to the local service piece by piece
        as it arrives (nothing waits for the capture), while only the cap is kept.
        """
        pair, endpoint, inspector = setup(body_cap=1000)
        recorder = pair.open()
        size = 200_000
        recorder.transport.write(POST % size)
        pair.pump()
        local = endpoint.transports[0]
        take(local)
        received = 0
        for _ in range(size // 10_000):
            recorder.transport.write(b"x" * 10_000)
            pair.pump()
            received += len(take(local))
            # Each piece is at the local service before the next is sent.
            self.assertEqual(received, (_ + 1) * 10_000)
        endpoint.protocols[0].dataReceived(
            b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size + b"y" * size
        )
        pair.pump()
        record = exchange(inspector)
        self.assertEqual(
            record.request_body.to_json(), {"size": size, "captured": 1000, "truncated": True}
        )
        self.assertEqual(
            record.response_body.to_json(), {"size": size, "captured": 1000, "truncated": True}
        )
        self.assertLess(inspector.store.used, 4000 + len(record.raw_head) * 2)

    def test_unreachable_502_with_why(self):
        """A refused local connection is captured as the agent's 502, with the refusal."""
        pair, endpoint, inspector = setup("refuse")
        recorder = pair.open()
        recorder.transport.write(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        pair.pump()
        record = exchange(inspector)
        self.assertEqual(record.status, 502)
        self.assertIn("upstream unreachable", record.error)
        self.assertIn("refused", record.error)
        self.assertEqual(bytes(record.response_body.data), b'{"error":"upstream unreachable"}\n')

    def test_timeout_504_with_why(self):
        """No head within the listener timeout is captured as 504, saying so."""
        pair, endpoint, inspector = setup("hang", timeout=10)
        recorder = pair.open()
        recorder.transport.write(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        pair.pump()
        pair.clock.advance(10)
        pair.pump()
        record = exchange(inspector)
        self.assertEqual(record.status, 504)
        self.assertEqual(record.error, "upstream timeout: no response head within 10s")

    def test_closed_before_response(self):
        """The local service closing before a head is captured as a 502 with why."""
        pair, endpoint, inspector = setup()
        recorder = pair.open()
        recorder.transport.write(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        pair.pump()
        endpoint.protocols[0].connectionLost(Failure(ConnectionDone()))
        pair.pump()
        record = exchange(inspector)
        self.assertEqual(record.status, 502)
        self.assertIn("closed the connection before a response", record.error)

    def test_client_gone_ends_record(self):
        """A client that goes away before the answer ends the record, saying so."""
        pair, endpoint, inspector = setup()
        recorder = pair.open()
        recorder.transport.write(POST % 100 + b"partial")
        pair.pump()
        recorder.transport.abortConnection()
        pair.pump()
        record = exchange(inspector)
        self.assertTrue(record.complete)
        self.assertEqual(record.error, "the client closed the connection")
        self.assertEqual(record.request_body.size, 7)

    def test_websocket_connection_record(self):
        """An upgrade is an exchange (101) and a WebSocket connection record with byte counts."""
        pair, endpoint, inspector = setup()
        recorder = pair.open()
        recorder.transport.write(
            b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
        )
        pair.pump()
        local = endpoint.transports[0]
        take(local)
        endpoint.protocols[0].dataReceived(
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
        )
        pair.pump()
        record = exchange(inspector)
        self.assertEqual((record.status, record.upgraded), (101, True))
        [conn] = list(inspector.store.connections())
        self.assertEqual(
            (conn.kind, conn.exchange_id, conn.target), ("websocket", record.id, "/ws")
        )
        recorder.transport.write(b"ping!")
        pair.pump()
        self.assertEqual(take(local), b"ping!")
        endpoint.protocols[0].dataReceived(b"pong")
        pair.pump()
        self.assertEqual(inspector.live[conn.id].received, 5)
        self.assertIsNone(conn.ended)
        recorder.transport.loseConnection()
        pair.pump()
        endpoint.protocols[0].connectionLost(Failure(ConnectionDone()))
        pair.pump()
        self.assertIsNotNone(conn.ended)
        self.assertEqual(conn.bytes_in, 5)
        self.assertGreaterEqual(conn.bytes_out, 4)
        self.assertNotIn(conn.id, inspector.live)


class TCPCaptureTests(SynchronousTestCase):
    def test_tcp_connection_record(self):
        """A TCP stream is a connection record with the bytes each way once it closes."""
        endpoint = FakeEndpoint()
        pair = ListenerPair(None)
        inspector = Inspector(pair.clock, wall=lambda: WALL)
        pair.client.listen(
            TCPListenerFactory(endpoint, "db", inspector=inspector, target="localhost:5432")
        )
        recorder = pair.open()
        recorder.transport.write(b"hello")
        pair.pump()
        self.assertEqual(take(endpoint.transports[0]), b"hello")
        endpoint.protocols[0].dataReceived(b"welcome!")
        pair.pump()
        self.assertEqual(bytes(recorder.received), b"welcome!")
        [conn] = list(inspector.store.connections())
        self.assertEqual(
            (conn.kind, conn.endpoint_id, conn.target), ("tcp", "db", "localhost:5432")
        )
        recorder.transport.loseConnection()
        pair.pump()
        endpoint.protocols[0].connectionLost(Failure(ConnectionDone()))
        pair.pump()
        self.assertEqual((conn.bytes_in, conn.bytes_out), (5, 8))

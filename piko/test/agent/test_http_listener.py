# -*- test-case-name: piko.test.agent.test_http_listener -*-
"""
Tests for :mod:`piko.agent.http_listener`: an agent HTTP listener on a yamux pair in memory,
against a fake local service, compared with the Go agent's recorded bytes.
"""

from twisted.internet.error import ConnectionLost
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from piko.agent.http_listener import HTTPListenerFactory, Target, parse_target
from piko.http.pool import ConnectionPool
from piko.mux.frames import Flag, FrameType
from piko.test.agent.helpers import FakeEndpoint, ListenerPair, mask_date, take
from piko.test.interop import read_bytes
from piko.test.mux.helpers import frames_of

STREAMS = "upstream-http/upstream-conn/conn1.streams/"
ERRORS = "errors/upstream-conn/conn1.streams/"


def local_response(agent_answer):
    """
    The local service's answer behind a recorded agent answer: the same headers minus the
    ``Date`` and ``Connection`` the agent's server added, and the same body.
    """
    head, _, body = agent_answer.partition(b"\r\n\r\n")
    lines = [
        line for line in head.split(b"\r\n") if not line.startswith((b"Date:", b"Connection:"))
    ]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def setup(mode="ok", timeout=10.0, target=None):
    endpoint = FakeEndpoint(mode)
    pair = ListenerPair(None)
    pool = ConnectionPool(pair.clock, endpoint)
    factory = HTTPListenerFactory(
        pair.clock, pool, target or Target("127.0.0.1", 31080), timeout=timeout
    )
    pair.client.listen(factory)
    return pair, endpoint, pool


class HTTPListenerInteropTests(SynchronousTestCase):
    def test_recorded_requests(self):
        """
        The three recorded stream requests reach the local service as the Go agent sent them,
        on one kept-alive connection, and the answers on the streams match Go's bytes.
        """
        pair, endpoint, pool = setup()
        for n, stream_id in ((1, 2), (2, 4), (3, 6)):
            request = read_bytes(f"{STREAMS}stream-{stream_id}.server-to-agent.bin")
            answer = read_bytes(f"{STREAMS}stream-{stream_id}.agent-to-server.bin")
            recorder = pair.open()
            recorder.transport.write(request)
            pair.pump()
            self.assertEqual(len(endpoint.transports), 1)
            local = endpoint.transports[0]
            self.assertEqual(take(local), read_bytes(f"upstream-http/local-service/req{n}.bin"))
            endpoint.protocols[0].dataReceived(local_response(answer))
            pair.pump()
            self.assertEqual(mask_date(bytes(recorder.received)), mask_date(answer))
            # The agent FINs the stream after its answer (Connection: close).
            self.assertTrue(recorder.read_closed)
            self.assertFalse(local.disconnecting)

    def test_response_read_at_once_is_one_write(self):
        """
        A whole response read from the local service in one piece goes onto the stream in one
        write: a Data frame carrying the stream's ACK, head and body, then the FIN in a
        WindowUpdate of its own (a FIN on the Data frame makes Go's yamux lose the payload).
        """
        pair, endpoint, pool = setup()
        recorder = pair.open()
        recorder.transport.write(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        pair.pump()
        writes = []
        pair.client_transport.writeSequence = lambda seq: writes.append(b"".join(seq))
        endpoint.protocols[0].dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
        self.assertEqual(pair.take_client_output(), b"")
        [write] = writes
        data, fin = frames_of(write)
        self.assertEqual((data.type, data.flags), (FrameType.DATA, Flag.ACK))
        self.assertTrue(data.payload.startswith(b"HTTP/1.1 200 OK\r\n"), data.payload)
        self.assertTrue(data.payload.endswith(b"\r\n\r\nhello"), data.payload)
        self.assertEqual((fin.type, fin.flags, fin.length), (FrameType.WINDOW_UPDATE, Flag.FIN, 0))

    def test_unreachable_502(self):
        """A refused local connection answers Go's agent 502 on the stream, GET and POST."""
        for stream_id in (2, 4):
            pair, endpoint, pool = setup("refuse")
            recorder = pair.open()
            recorder.transport.write(read_bytes(f"{ERRORS}stream-{stream_id}.server-to-agent.bin"))
            pair.pump()
            expected = read_bytes(f"{ERRORS}stream-{stream_id}.agent-to-server.bin")
            self.assertEqual(mask_date(bytes(recorder.received)), mask_date(expected))
            self.assertTrue(recorder.read_closed)

    def test_timeout_504(self):
        """No response head within the listener timeout answers 504 upstream timeout."""
        pair, endpoint, pool = setup("hang", timeout=10)
        recorder = pair.open()
        recorder.transport.write(read_bytes(f"{ERRORS}stream-2.server-to-agent.bin"))
        pair.pump()
        pair.clock.advance(9)
        pair.pump()
        self.assertEqual(bytes(recorder.received), b"")
        pair.clock.advance(1)
        pair.pump()
        received = bytes(recorder.received)
        self.assertTrue(received.startswith(b"HTTP/1.1 504 Gateway Timeout\r\n"), received)
        self.assertTrue(received.endswith(b'\r\n\r\n{"error":"upstream timeout"}\n'))
        self.assertIn(b"\r\nConnection: close\r\n", received)

    def test_target_prefix_joined(self):
        """The target URL's path prefix and query are joined to the request target."""
        pair, endpoint, pool = setup(target=parse_target("http://localhost:3000/api?k=v"))
        recorder = pair.open()
        recorder.transport.write(b"GET /x?y=1 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        pair.pump()
        self.assertTrue(take(endpoint.transports[0]).startswith(b"GET /api/x?k=v&y=1 HTTP/1.1\r\n"))

    def test_stale_reused_connection_retried(self):
        """A GET on a reused connection that died before any response byte is sent again."""
        pair, endpoint, pool = setup()
        request = read_bytes(f"{STREAMS}stream-2.server-to-agent.bin")
        answer = read_bytes(f"{STREAMS}stream-2.agent-to-server.bin")
        first = pair.open()
        first.transport.write(request)
        pair.pump()
        endpoint.protocols[0].dataReceived(local_response(answer))
        pair.pump()
        second = pair.open()
        second.transport.write(request)
        pair.pump()
        endpoint.protocols[0].connectionLost(Failure(ConnectionLost()))
        pair.pump()
        self.assertEqual(len(endpoint.transports), 2)
        self.assertEqual(
            take(endpoint.transports[1]), read_bytes("upstream-http/local-service/req1.bin")
        )
        endpoint.protocols[1].dataReceived(local_response(answer))
        pair.pump()
        self.assertEqual(mask_date(bytes(second.received)), mask_date(answer))

    def test_post_on_stale_connection_not_retried(self):
        """A POST whose reused connection died gets 502, it is not sent twice."""
        pair, endpoint, pool = setup()
        get = read_bytes(f"{STREAMS}stream-2.server-to-agent.bin")
        answer = read_bytes(f"{STREAMS}stream-2.agent-to-server.bin")
        first = pair.open()
        first.transport.write(get)
        pair.pump()
        endpoint.protocols[0].dataReceived(local_response(answer))
        pair.pump()
        second = pair.open()
        second.transport.write(read_bytes(f"{STREAMS}stream-4.server-to-agent.bin"))
        pair.pump()
        endpoint.protocols[0].connectionLost(Failure(ConnectionLost()))
        pair.pump()
        self.assertEqual(len(endpoint.transports), 1)
        self.assertTrue(bytes(second.received).startswith(b"HTTP/1.1 502 Bad Gateway\r\n"))

    def test_websocket_upgrade_passthrough(self):
        """A 101 from the local service is relayed and bytes then pass both ways untouched."""
        pair, endpoint, pool = setup(timeout=1)
        recorder = pair.open()
        recorder.transport.write(
            b"GET /chat HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            b"Sec-WebSocket-Key: k\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        pair.pump()
        pair.clock.advance(5)  # no timeout for upgrades
        local = endpoint.transports[0]
        self.assertIn(b"\r\nUpgrade: websocket\r\n", take(local))
        endpoint.protocols[0].dataReceived(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: a\r\n\r\nfrom-local"
        )
        pair.pump()
        self.assertTrue(
            bytes(recorder.received).startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
        )
        self.assertTrue(bytes(recorder.received).endswith(b"\r\n\r\nfrom-local"))
        recorder.transport.write(b"to-local")
        pair.pump()
        self.assertEqual(take(local), b"to-local")


def split_request(raw):
    """A request's head and its body, as the local service received them."""
    head, _, body = raw.partition(b"\r\n\r\n")
    return head, body


class ColdAgentBodyTests(SynchronousTestCase):
    """
    Request bodies that arrive on the stream while the agent still connects to the local
    service (no idle pooled connection), or while that connection pushes back, reach the
    service whole.
    """

    def test_chunked_body_before_connect(self):
        """
        A chunked POST whose chunk and last chunk arrive in frames of their own before the
        local connection exists reaches the service with its ``0\\r\\n\\r\\n``.
        """
        pair, endpoint, pool = setup("later")
        recorder = pair.open()
        stream = recorder.transport
        stream.write(
            b"POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
            b"Connection: close\r\n\r\n"
        )
        stream.write(b"3\r\nabc\r\n")
        stream.write(b"0\r\n\r\n")
        pair.pump()
        local = endpoint.complete()
        pair.pump()
        head, body = split_request(take(local))
        self.assertIn(b"\r\nTransfer-Encoding: chunked", head)
        self.assertEqual(body, b"3\r\nabc\r\n0\r\n\r\n")
        endpoint.protocols[0].dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        pair.pump()
        self.assertTrue(bytes(recorder.received).endswith(b"\r\n\r\nok"))

    def test_large_body_before_connect(self):
        """A 200 KB body written in many frames before the local connection exists arrives whole."""
        pair, endpoint, pool = setup("later")
        recorder = pair.open()
        stream = recorder.transport
        payload = bytes(range(256)) * 800  # 204,800 bytes
        stream.write(b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % len(payload))
        for i in range(0, len(payload), 16384):
            stream.write(payload[i : i + 16384])
            pair.pump()
        local = endpoint.complete()
        pair.pump()
        self.assertEqual(split_request(take(local))[1], payload)

    def test_body_resumed_after_local_pushback(self):
        """
        Body frames that arrive while the local connection's buffer is full are delivered
        once it drains, to the last byte (and again across several pauses).
        """
        pair, endpoint, pool = setup("later")
        recorder = pair.open()
        stream = recorder.transport
        payload = bytes(range(256)) * 400
        stream.write(b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % len(payload))
        pair.pump()
        local = endpoint.complete()
        pair.pump()
        received = split_request(take(local))[1]
        for i in range(0, len(payload), 25600):
            local.producer.pauseProducing()  # the local socket's buffer is full
            stream.write(payload[i : i + 12800])
            stream.write(payload[i + 12800 : i + 25600])
            pair.pump()
            received += take(local)
            local.producer.resumeProducing()
            pair.pump()
            received += take(local)
        self.assertEqual(received, payload)


class AbandonedStreamTests(SynchronousTestCase):
    """
    Go's server, when its client goes away mid-answer, closes the stream (FIN) and reads no
    more from it.  The agent drops the answer: it resets the stream and closes the local
    connection; a connection whose response was already complete stays pooled.
    """

    request = b"OPTIONS /x HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
    big_head = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 5806327\r\n\r\n"

    def gone_server(self, pair):
        """Open a stream and send the request as Go's server does; it then reads no more."""
        recorder = pair.open()
        recorder.transport.write(self.request)
        recorder.transport.pauseProducing()  # no window granted from now on
        pair.pump()
        return recorder

    def assert_dropped(self, pair, recorder, local, pool):
        self.assertTrue(local.disconnecting, "the local connection is still open")
        self.assertEqual(list(pool.idle), [])
        self.assertEqual(pair.client.stream_count, 0, "the agent still holds the stream")
        self.assertEqual(pair.server.stream_count, 0, "the server's stream was not reset")

    def test_fin_mid_response_drops_local_connection(self):
        """
        The FIN arrives while a 5.8 MB answer is being relayed and the stream's window is
        spent: the local connection is closed (it was open for good before), the stream reset.
        """
        pair, endpoint, pool = setup()
        recorder = self.gone_server(pair)
        local = endpoint.transports[0]
        endpoint.protocols[0].dataReceived(self.big_head + b"x" * 400_000)
        pair.pump()
        self.assertEqual(local.producerState, "paused")  # the window (256 KiB) is spent
        recorder.transport.loseConnection()
        pair.pump()
        self.assert_dropped(pair, recorder, local, pool)
        self.assertIsNotNone(recorder.lost)

    def test_fin_before_head_drops_local_connection(self):
        """A FIN before the local service answered drops the request too: nothing is relayed."""
        pair, endpoint, pool = setup()
        recorder = self.gone_server(pair)
        local = endpoint.transports[0]
        received = bytes(recorder.received)
        recorder.transport.loseConnection()
        pair.pump()
        self.assert_dropped(pair, recorder, local, pool)
        endpoint.protocols[0].dataReceived(self.big_head + b"x" * 1000)
        pair.pump()
        self.assertEqual(bytes(recorder.received), received)

    def test_fin_before_connect_drops_local_connection(self):
        """A FIN while the agent still connects to the local service closes that connection."""
        pair, endpoint, pool = setup("later")
        recorder = self.gone_server(pair)
        recorder.transport.loseConnection()
        pair.pump()
        local = endpoint.complete()
        pair.pump()
        self.assert_dropped(pair, recorder, local, pool)

    def test_fin_after_complete_response_keeps_connection_pooled(self):
        """
        A response read whole from the local service before the FIN (it fit in the window)
        leaves its connection reusable in the pool; the stream then ends as usual.
        """
        pair, endpoint, pool = setup()
        recorder = self.gone_server(pair)
        local = endpoint.transports[0]
        endpoint.protocols[0].dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
        pair.pump()
        recorder.transport.loseConnection()
        pair.pump()
        self.assertFalse(local.disconnecting)
        self.assertEqual(len(pool.idle), 1)
        self.assertEqual(pair.client.stream_count, 0)


class ParseTargetTests(SynchronousTestCase):
    def test_forms(self):
        """Target URLs split into host, port (defaulted by scheme), TLS, path and query."""
        self.assertEqual(parse_target("http://localhost:3000"), Target("localhost", 3000))
        self.assertEqual(parse_target("https://h/p?q=1"), Target("h", 443, True, b"/p", b"q=1"))
        self.assertRaises(ValueError, parse_target, "ftp://h:1")

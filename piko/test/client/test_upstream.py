"""Tests for :mod:`piko.client.upstream`, :mod:`piko.client.dialer` and the backoff, no sockets."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from piko.client.backoff import Backoff
from piko.client.dialer import Dialer
from piko.client.upstream import PikoListeningPort, Upstream
from piko.mux.frames import Flag, FrameType, encode_frame
from piko.mux.session import Session
from piko.test.mux.helpers import RecorderFactory
from piko.ws.client import WebSocketDialError


class FakeDial:
    """Stands in for :func:`piko.ws.client.connect`, recording each dial."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, reactor: Any, url: str, factory: Factory, **kwargs: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.calls.append({"url": url, "factory": factory, "deferred": d, **kwargs})
        return d

    def succeed(self, index: int = -1) -> tuple[Session, StringTransport]:
        call = self.calls[index]
        protocol = call["factory"].buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        call["deferred"].callback(protocol)
        return protocol, transport

    def fail(self, error: Exception, index: int = -1) -> None:
        self.calls[index]["deferred"].errback(error)


def make_upstream(**kwargs: Any) -> tuple[Upstream, FakeDial, Clock]:
    clock = Clock()
    dial = FakeDial()
    upstream = Upstream(
        clock, "http://piko.test:8001/base", dial=dial, uniform=lambda low, high: high, **kwargs
    )
    return upstream, dial, clock


class BackoffTests(SynchronousTestCase):
    def test_ceiling_doubles_to_maximum(self) -> None:
        """The delay ceiling doubles from the minimum and stops at the maximum."""
        backoff = Backoff(0.1, 1.0, lambda low, high: high)
        self.assertEqual(
            [round(backoff.next_delay(), 3) for _ in range(6)], [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
        )
        backoff.reset()
        self.assertEqual(backoff.next_delay(), 0.1)

    def test_full_jitter(self) -> None:
        """Each delay is drawn between zero and the ceiling."""
        draws: list[tuple[float, float]] = []

        def record(low: float, high: float) -> float:
            draws.append((low, high))
            return 0.0

        backoff = Backoff(0.5, 10.0, record)
        backoff.next_delay()
        backoff.next_delay()
        self.assertEqual(draws, [(0.0, 0.5), (0.0, 1.0)])


class UpstreamListenTests(SynchronousTestCase):
    def test_dials_upstream_route_with_headers(self) -> None:
        """listen dials <url>/piko/v1/upstream/<endpoint> with the token and tenant headers."""
        upstream, dial, _ = make_upstream(token="tok", tenant_id="t1")
        upstream.listen("my endpoint", RecorderFactory())
        [call] = dial.calls
        self.assertEqual(call["url"], "http://piko.test:8001/base/piko/v1/upstream/my%20endpoint")
        self.assertEqual(call["headers"], {"Authorization": "Bearer tok", "x-piko-tenant-id": "t1"})

    def test_serves_factory_on_streams(self) -> None:
        """Once connected, each stream the server opens is served by the user's factory."""
        upstream, dial, _ = make_upstream()
        factory = RecorderFactory()
        d = upstream.listen("ep", factory)
        session, _ = dial.succeed()
        port = self.successResultOf(d)
        self.assertIsInstance(port, PikoListeningPort)
        self.assertEqual(port.getHost().endpoint_id, "ep")
        self.assertTrue(session.client)
        session.dataReceived(encode_frame(FrameType.DATA, Flag.SYN, 2, 2, b"hi"))
        self.assertEqual(bytes(factory.built[0].received), b"hi")

    def test_reconnects_after_disconnection(self) -> None:
        """A session that ends without being asked to reconnects after a backoff delay."""
        upstream, dial, clock = make_upstream()
        d = upstream.listen("ep", RecorderFactory())
        session, _ = dial.succeed()
        port = self.successResultOf(d)
        session.connectionLost()
        self.assertFalse(port.connected)
        self.assertEqual(len(dial.calls), 1)
        clock.advance(0.1)
        self.assertEqual(len(dial.calls), 2)
        dial.fail(WebSocketDialError(None, "connection refused", True))
        clock.advance(0.2)
        self.assertEqual(len(dial.calls), 3)
        dial.succeed()
        self.assertTrue(port.connected)
        self.assertEqual(port.connections, 2)

    def test_reconnect_backoff_resets_after_success(self) -> None:
        """After a successful reconnection the next delay starts from the minimum again."""
        upstream, dial, clock = make_upstream()
        upstream.listen("ep", RecorderFactory())
        session, _ = dial.succeed()
        session.connectionLost()
        clock.advance(0.1)
        session, _ = dial.succeed()
        session.connectionLost()
        clock.advance(0.1)
        self.assertEqual(len(dial.calls), 3)

    def test_first_connect_non_retryable_fails(self) -> None:
        """A non-retryable answer to the first connection fails listen with Go's message."""
        upstream, dial, clock = make_upstream()
        d = upstream.listen("ep", RecorderFactory())
        dial.fail(WebSocketDialError(401, "invalid token", False))
        failure = self.failureResultOf(d, WebSocketDialError)
        self.assertEqual(str(failure.value), "401: invalid token")
        clock.advance(60)
        self.assertEqual(len(dial.calls), 1)

    def test_first_connect_retries_until_timeout(self) -> None:
        """Retryable errors are retried until the connect timeout, then listen fails."""
        upstream, dial, clock = make_upstream(connect_timeout=1.0)
        d = upstream.listen("ep", RecorderFactory())
        for _ in range(10):
            if d.called:
                break
            dial.fail(WebSocketDialError(502, "no available upstreams", True))
            if d.called:
                break
            clock.advance(clock.getDelayedCalls()[0].getTime() - clock.seconds())
        self.failureResultOf(d, WebSocketDialError)
        self.assertEqual(len(dial.calls), 4)  # at 0, 0.1, 0.3, 0.7; the next would pass 1.0

    def test_keep_trying_retries_past_connect_timeout(self) -> None:
        """With ``keep_trying`` retryable errors never fail listen; each attempt is bounded."""
        upstream, dial, clock = make_upstream(connect_timeout=1.0, keep_trying=True)
        d = upstream.listen("ep", RecorderFactory())
        for _ in range(20):
            dial.fail(WebSocketDialError(None, "connection refused", True))
            clock.advance(clock.getDelayedCalls()[0].getTime() - clock.seconds())
        self.assertNoResult(d)
        self.assertEqual(len(dial.calls), 21)
        self.assertEqual({call["timeout"] for call in dial.calls}, {1.0})
        dial.succeed()
        self.assertIsInstance(self.successResultOf(d), PikoListeningPort)

    def test_keep_trying_still_fails_on_non_retryable(self) -> None:
        """``keep_trying`` does not retry an answer retrying cannot change."""
        upstream, dial, clock = make_upstream(keep_trying=True)
        d = upstream.listen("ep", RecorderFactory())
        dial.fail(WebSocketDialError(None, "connection refused", True))
        clock.advance(1)
        dial.fail(WebSocketDialError(401, "invalid token", False))
        self.failureResultOf(d, WebSocketDialError)

    def test_graceful_stop_waits_for_streams(self) -> None:
        """stopListening sends GoAway(0), waits for in-flight streams, closes, never reconnects."""
        upstream, dial, clock = make_upstream()
        factory = RecorderFactory()
        d = upstream.listen("ep", factory)
        dial.succeed()
        port = self.successResultOf(d)
        session = port.session
        assert session is not None
        transport = session.transport
        session.dataReceived(encode_frame(FrameType.DATA, Flag.SYN, 2, 1, b"x"))
        transport.clear()
        stopped = port.stopListening()
        self.assertIn(encode_frame(FrameType.GO_AWAY, 0, 0, 0), transport.value())
        self.assertNoResult(stopped)
        factory.built[0].transport.abortConnection()
        self.assertNoResult(stopped)
        clock.advance(1.0)
        self.successResultOf(stopped)
        self.assertTrue(session.closed)
        clock.advance(60)
        self.assertEqual(len(dial.calls), 1)

    def test_stream_on_its_way_at_stop_is_served(self) -> None:
        """
        A stream the server opened before it heard our GoAway is accepted during the hand-off
        overlap, not refused (that request would get a 502); after it, new streams get RST.
        """
        upstream, dial, clock = make_upstream()
        factory = RecorderFactory()
        d = upstream.listen("ep", factory)
        dial.succeed()
        port = self.successResultOf(d)
        session = port.session
        assert session is not None
        transport = session.transport
        stopped = port.stopListening()
        transport.clear()
        session.dataReceived(encode_frame(FrameType.DATA, Flag.SYN, 2, 3, b"GET"))
        self.assertEqual(len(factory.built), 1)
        self.assertNotIn(encode_frame(FrameType.WINDOW_UPDATE, Flag.RST, 2, 0), transport.value())
        self.assertEqual(transport.value().count(encode_frame(FrameType.GO_AWAY, 0, 0, 0)), 0)
        clock.advance(1.0)
        session.dataReceived(encode_frame(FrameType.DATA, Flag.SYN, 4, 3, b"GET"))
        self.assertEqual(len(factory.built), 1)
        self.assertIn(encode_frame(FrameType.WINDOW_UPDATE, Flag.RST, 4, 0), transport.value())
        self.assertNoResult(stopped)
        factory.built[0].transport.abortConnection()
        self.successResultOf(stopped)

    def test_shutdown_closes_at_once(self) -> None:
        """shutdown closes the session even with streams in flight."""
        upstream, dial, _ = make_upstream()
        d = upstream.listen("ep", RecorderFactory())
        session, _ = dial.succeed()
        port = self.successResultOf(d)
        session.dataReceived(encode_frame(FrameType.DATA, Flag.SYN, 2, 1, b"x"))
        self.successResultOf(port.shutdown())
        self.assertTrue(session.closed)

    def test_stop_during_reconnect_wait(self) -> None:
        """Stopping while waiting to reconnect cancels the reconnection."""
        upstream, dial, clock = make_upstream()
        d = upstream.listen("ep", RecorderFactory())
        session, _ = dial.succeed()
        port = self.successResultOf(d)
        session.connectionLost()
        self.successResultOf(port.stopListening())
        clock.advance(60)
        self.assertEqual(len(dial.calls), 1)


GO_AWAY_NORMAL = encode_frame(FrameType.GO_AWAY, 0, 0, 0)


class ServerGoAwayTests(SynchronousTestCase):
    def connected(self) -> tuple[Any, FakeDial, Clock, PikoListeningPort, RecorderFactory]:
        upstream, dial, clock = make_upstream()
        factory = RecorderFactory()
        d = upstream.listen("ep", factory)
        session, _ = dial.succeed()
        return session, dial, clock, self.successResultOf(d), factory

    def test_first_reconnect_is_prompt(self) -> None:
        """After a connection that worked, the reconnect delay is drawn in [0, 100 ms]."""
        draws: list[tuple[float, float]] = []

        def uniform(low: float, high: float) -> float:
            draws.append((low, high))
            return low

        clock, dial = Clock(), FakeDial()
        upstream = Upstream(clock, "http://piko.test:8001", dial=dial, uniform=uniform)
        upstream.listen("ep", RecorderFactory())
        session, _ = dial.succeed()
        session.connectionLost()
        self.assertEqual(draws, [(0.0, 0.1)])
        clock.advance(0)
        self.assertEqual(len(dial.calls), 2)

    def test_make_before_break(self) -> None:
        """GoAway(0) opens a replacement at once; the old session serves its streams till closed."""
        old, dial, clock, port, factory = self.connected()
        old.dataReceived(encode_frame(FrameType.DATA, Flag.SYN, 2, 1, b"a"))
        old.dataReceived(GO_AWAY_NORMAL)
        self.assertFalse(port.connected)
        self.assertEqual(port.departing, {old})
        clock.advance(0.1)
        self.assertEqual(len(dial.calls), 2)
        new, _ = dial.succeed()
        self.assertIs(port.session, new)
        self.assertEqual(port.connections, 2)
        # The old session still delivers to the stream it had, and is not closed by us.
        old.dataReceived(encode_frame(FrameType.DATA, 0, 2, 1, b"b"))
        self.assertEqual(bytes(factory.built[0].received), b"ab")
        self.assertFalse(old.closed)
        # The server closes it: no further reconnection.
        old.connectionLost()
        self.assertEqual(port.departing, set())
        clock.advance(60)
        self.assertEqual(len(dial.calls), 2)
        self.assertTrue(port.connected)

    def test_replacement_retried_with_backoff(self) -> None:
        """A failed replacement is retried with backoff; the old session's end changes nothing."""
        old, dial, clock, port, _ = self.connected()
        old.dataReceived(GO_AWAY_NORMAL)
        clock.advance(0.1)
        dial.fail(WebSocketDialError(None, "connection refused", True))
        old.connectionLost()
        clock.advance(0.2)
        self.assertEqual(len(dial.calls), 3)
        dial.succeed()
        self.assertTrue(port.connected)

    def test_go_away_twice_one_replacement(self) -> None:
        """A repeated GoAway on the same session opens one replacement only."""
        old, dial, clock, port, _ = self.connected()
        old.dataReceived(GO_AWAY_NORMAL + GO_AWAY_NORMAL)
        clock.advance(1)
        self.assertEqual(len(dial.calls), 2)

    def test_stop_waits_for_departing_session(self) -> None:
        """stopListening waits for the in-flight streams of a departing session too."""
        old, dial, clock, port, factory = self.connected()
        old.dataReceived(encode_frame(FrameType.DATA, Flag.SYN, 2, 1, b"a"))
        old.dataReceived(GO_AWAY_NORMAL)
        clock.advance(0.1)
        new, _ = dial.succeed()
        stopped = port.stopListening()
        clock.advance(1.0)  # the hand-off overlap: streams on their way are still accepted
        self.assertTrue(new.closed)
        self.assertNoResult(stopped)
        factory.built[0].transport.abortConnection()
        self.successResultOf(stopped)
        self.assertTrue(old.closed)
        clock.advance(60)
        self.assertEqual(len(dial.calls), 2)

    def test_shutdown_closes_departing_session(self) -> None:
        """shutdown closes the departing session at once as well."""
        old, dial, clock, port, _ = self.connected()
        old.dataReceived(encode_frame(FrameType.DATA, Flag.SYN, 2, 1, b"a"))
        old.dataReceived(GO_AWAY_NORMAL)
        self.successResultOf(port.shutdown())
        self.assertTrue(old.closed)
        clock.advance(60)
        self.assertEqual(len(dial.calls), 1)


class DialerTests(SynchronousTestCase):
    def test_dials_tcp_route(self) -> None:
        """dial opens <url>/_piko/v1/tcp/<endpoint> with the bearer token."""
        dial = FakeDial()
        dialer = Dialer(Clock(), "https://proxy.test:8000", token="tok", dial=dial)
        factory = RecorderFactory()
        dialer.dial("ep", factory)
        [call] = dial.calls
        self.assertEqual(call["url"], "https://proxy.test:8000/_piko/v1/tcp/ep")
        self.assertEqual(call["headers"], {"Authorization": "Bearer tok"})
        self.assertIs(call["factory"], factory)

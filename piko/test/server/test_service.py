"""
Tests for the drain of :mod:`piko.server.service` and :mod:`piko.http.listening`, without sockets.

A stop must end as soon as nothing is in flight: each wait fires on an event
(a request answered, a connection closed, an upstream answering GoAway or
ending its last stream, gossip changing the node table), not on a poll.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from piko.http import errors
from piko.http.listening import HTTPPortFactory, TrackedHTTPServerProtocol
from piko.http.server import IRequestHandler, IServerExchange
from piko.mux.frames import Flag, FrameType, GoAwayCode, encode_frame
from piko.server.registry import UpstreamRegistry
from piko.server.service import (
    _HandOff,
    _within,
    advertise_addr,
    may_bind_any,
    resolve_own_host,
)
from piko.server.upstream_port import UpstreamSession

GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


@implementer(IRequestHandler)
class HoldingHandler:
    """Keeps every exchange unanswered until the test answers it."""

    def __init__(self) -> None:
        self.exchanges: list[IServerExchange] = []

    def request_received(self, exchange: IServerExchange) -> None:
        self.exchanges.append(exchange)


def connect(factory: HTTPPortFactory) -> tuple[TrackedHTTPServerProtocol, StringTransport]:
    protocol = factory.buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    return protocol, transport


def fired(d: Deferred[Any]) -> list[Any]:
    results: list[Any] = []
    d.addBoth(results.append)
    return results


class PortDrainTests(SynchronousTestCase):
    """:meth:`HTTPPortFactory.drain` closes connections as they turn idle and says when."""

    def setUp(self) -> None:
        self.handler = HoldingHandler()
        self.factory = HTTPPortFactory(self.handler, Clock())

    def test_idle_connection_closed_at_once(self) -> None:
        """A connection with no request in flight is closed at once; the drain fires once it is."""
        protocol, transport = connect(self.factory)
        drained = fired(self.factory.drain())
        self.assertTrue(transport.disconnecting)
        self.assertEqual(drained, [])
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(drained, [None])

    def test_no_connection(self) -> None:
        """With no connection at all the drain fires at once."""
        self.assertEqual(fired(self.factory.drain()), [None])

    def test_waits_for_answer_then_closes(self) -> None:
        """
        A request in flight is waited for; once answered its connection is closed,
        and the drain fires only once it has closed: its response is flushed, not
        aborted with the connections left at the deadline.
        """
        protocol, transport = connect(self.factory)
        protocol.dataReceived(GET)
        drained = fired(self.factory.drain())
        self.assertEqual(drained, [])
        self.assertFalse(transport.disconnecting)
        self.handler.exchanges[0].respond(errors.not_found)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 404 "))
        self.assertTrue(transport.disconnecting)
        self.assertEqual(drained, [])
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(drained, [None])

    def test_taken_over_connection_waited_until_closed(self) -> None:
        """An upgraded connection is in flight until it closes; then the drain fires."""
        protocol, transport = connect(self.factory)
        protocol.dataReceived(GET)
        self.handler.exchanges[0].take_over(Protocol())
        drained = fired(self.factory.drain())
        self.assertEqual(drained, [])
        self.assertFalse(transport.disconnecting)
        protocol.connectionLost(Failure(ConnectionError()))
        self.assertEqual(drained, [None])
        self.assertEqual(self.factory.connections, set())

    def test_when_idle_without_drain_closes_nothing(self) -> None:
        """``when_idle`` only watches: the answered connection stays open for the next request."""
        protocol, transport = connect(self.factory)
        protocol.dataReceived(GET)
        idle = fired(self.factory.when_idle())
        self.handler.exchanges[0].respond(errors.not_found)
        self.assertEqual(idle, [None])
        self.assertFalse(transport.disconnecting)


def upstream_session(clock: Clock, endpoint_id: str = "ep") -> UpstreamSession:
    session = UpstreamSession(clock, endpoint_id, UpstreamRegistry())
    session.makeConnection(StringTransport())
    return session


class HandOffTests(SynchronousTestCase):
    """:class:`_HandOff` fires once every upstream moved, on the events that say so."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.elsewhere: set[str] = set()

    def hand_off(self, *sessions: UpstreamSession) -> tuple[_HandOff, list[Any]]:
        handoff = _HandOff(list(sessions), lambda e: e in self.elsewhere)
        return handoff, fired(handoff.done)

    def test_answering_go_away(self) -> None:
        """An upstream that answers GoAway(0) (our SDK listener) has moved."""
        session = upstream_session(self.clock)
        _, done = self.hand_off(session)
        self.assertEqual(done, [])
        session.dataReceived(encode_frame(FrameType.GO_AWAY, 0, 0, GoAwayCode.NORMAL))
        self.assertEqual(done, [None])

    def test_endpoint_served_elsewhere(self) -> None:
        """An idle upstream whose endpoint another node serves has moved (gossip says so)."""
        session = upstream_session(self.clock)
        handoff, done = self.hand_off(session)
        self.elsewhere.add("ep")
        self.assertEqual(done, [])
        handoff.check_all()
        self.assertEqual(done, [None])

    def test_last_stream_ends(self) -> None:
        """A busy upstream whose endpoint is elsewhere has moved once its last stream ends."""
        session = upstream_session(self.clock)
        stream = session.open_stream(Protocol())
        self.elsewhere.add("ep")
        _, done = self.hand_off(session)
        self.assertEqual(done, [])
        session.dataReceived(encode_frame(FrameType.WINDOW_UPDATE, Flag.RST, stream.stream_id, 0))
        self.assertEqual(session.stream_count, 0)
        self.assertEqual(done, [None])

    def test_closed(self) -> None:
        """An upstream that disconnected has moved; all must have, not just one."""
        first, second = upstream_session(self.clock), upstream_session(self.clock, "other")
        _, done = self.hand_off(first, second)
        first.close()
        self.assertEqual(done, [])
        second.close()
        self.assertEqual(done, [None])

    def test_go_agent_never_moves(self) -> None:
        """An upstream that ignores GoAway (a Go agent) never counts as moved: the drain
        bounds this wait by a short hand-off window (see the end-to-end tests)."""
        session = upstream_session(self.clock)
        handoff, done = self.hand_off(session)
        handoff.check_all()
        self.clock.advance(60)
        self.assertEqual(done, [])


class WithinTests(SynchronousTestCase):
    """:func:`_within` bounds a wait without cancelling what it waits for."""

    def test_fires_true_when_event_first(self) -> None:
        clock = Clock()
        event: Deferred[None] = Deferred()
        result = fired(_within(clock, event, 5))
        event.callback(None)
        self.assertEqual(result, [True])
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_fires_false_at_deadline(self) -> None:
        clock = Clock()
        event: Deferred[None] = Deferred()
        result = fired(_within(clock, event, 5))
        clock.advance(4.9)
        self.assertEqual(result, [])
        clock.advance(0.1)
        self.assertEqual(result, [False])
        event.callback(None)
        self.assertEqual(result, [False])


class OwnHostTests(SynchronousTestCase):
    """The advertised address of a wildcard-bound port, found without blocking the reactor."""

    def test_wildcard_takes_own_host(self) -> None:
        """A port bound to every interface advertises the resolved host; a named one itself."""
        from twisted.internet.address import IPv4Address

        class Port:
            def __init__(self, host: str) -> None:
                self.host = host

            def getHost(self) -> IPv4Address:
                return IPv4Address("TCP", self.host, 8000)

        self.assertEqual(advertise_addr("", Port("0.0.0.0"), "10.1.2.3"), "10.1.2.3:8000")  # type: ignore[arg-type]
        self.assertEqual(advertise_addr("", Port("10.0.0.5"), "10.1.2.3"), "10.0.0.5:8000")  # type: ignore[arg-type]
        self.assertEqual(advertise_addr("a:1", Port("0.0.0.0"), "10.1.2.3"), "a:1")  # type: ignore[arg-type]

    def test_resolved_by_the_reactor(self) -> None:
        """The look-up is the reactor's (asynchronous); ``socket.gethostbyname`` is not called."""
        import socket

        def blocking(name: str) -> str:
            raise AssertionError("blocking look-up")

        self.patch(socket, "gethostbyname", blocking)
        pending: Deferred[str] = Deferred()

        class Reactor:
            def resolve(self, name: str) -> Deferred[str]:
                self.name = name
                return pending

        fake = Reactor()
        d = resolve_own_host(fake)
        self.assertNoResult(d)
        self.assertEqual(fake.name, socket.gethostname())
        pending.callback("10.1.2.3")
        self.assertEqual(self.successResultOf(d), "10.1.2.3")

    def test_unresolvable_is_loopback(self) -> None:
        """A host name that does not resolve advertises loopback, as before."""
        from twisted.internet.defer import fail
        from twisted.internet.error import DNSLookupError

        class Reactor:
            def resolve(self, name: str) -> Deferred[str]:
                return fail(DNSLookupError(name))

        self.assertEqual(self.successResultOf(resolve_own_host(Reactor())), "127.0.0.1")

    def test_may_bind_any(self) -> None:
        """Only an address that names no interface needs this machine's address."""
        for addr in (
            ":8000",
            "0.0.0.0:8000",
            "[::]:8000",
            "tcp:8000",
            "unix:/tmp/s",
            "tcp6:1:interface=\\:\\:",
        ):
            self.assertTrue(may_bind_any(addr), addr)
        for addr in ("127.0.0.1:8000", "[::1]:8000", "tcp:8000:interface=10.0.0.1"):
            self.assertFalse(may_bind_any(addr), addr)

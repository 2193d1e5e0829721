# -*- test-case-name: piko.test.server.test_retry -*-
"""
Tests for :mod:`piko.server.retry`, without sockets: upstreams are StringTransports that
fail before answering, time is a :class:`~twisted.internet.task.Clock`.
"""

from __future__ import annotations

import random
from collections.abc import Hashable
from collections.abc import Set as AbstractSet
from functools import partial
from typing import Any

from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IProtocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from piko.cluster.nodes import ClusterState, Node
from piko.http.rewrite import rewrite_request
from piko.http.server import HTTPServerProtocol
from piko.server.forwarding import RemoteForwarder
from piko.server.proxy_port import ProxyPortHandler
from piko.server.registry import UpstreamRegistry
from piko.server.retry import (
    MAX_ATTEMPTS,
    RETRY_WAIT,
    RetryingRelay,
    Route,
    UpstreamWaiters,
)
from piko.test.server.test_forwarding import FakePool
from piko.ws.server import WebSocketAcceptor

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
UNREACHABLE = b'{"error":"upstream unreachable"}\n'


class FakeConnector(FakePool):
    """:class:`FakePool` whose last connection can drop before the response."""

    def die(self) -> None:
        """The last connection drops before any byte of the response."""
        self.protocols[-1].connectionLost(Failure(ConnectionLost()))

    def written(self) -> bytes:
        return b"".join(t.value() for t in self.transports)


class RelayHandler:
    """Relays every request with a :class:`RetryingRelay` over the routes in ``available``."""

    def __init__(self, clock: Clock, waiters: UpstreamWaiters | None, **relay: Any) -> None:
        self.clock = clock
        self.waiters = waiters
        self.relay = relay
        self.connectors: dict[str, FakeConnector] = {}
        #: The route keys that may be picked now, in order of preference.
        self.available: list[str] = []
        self.picks: list[frozenset[Hashable]] = []

    def add(self, key: str, refuse: bool = False) -> FakeConnector:
        connector = self.connectors[key] = FakeConnector(refuse)
        self.available.append(key)
        return connector

    def pick(self, excluded: AbstractSet[Hashable]) -> Route | None:
        self.picks.append(frozenset(excluded))
        for key in self.available:
            if key not in excluded:
                return Route(
                    key, self.connectors[key], partial(rewrite_request, client_ip=None, close=True)
                )
        return None

    def request_received(self, exchange: Any) -> None:
        relay = RetryingRelay(
            exchange, self.pick, self.clock, endpoint_id="ep", waiters=self.waiters, **self.relay
        )
        route = self.pick(frozenset())
        assert route is not None
        relay.start(route)


class RetryTestCase(SynchronousTestCase):
    def connect(self, **relay: Any) -> RelayHandler:
        """A client connection to a protocol whose requests go through a RetryingRelay."""
        self.clock = Clock()
        self.waiters = UpstreamWaiters(self.clock)
        relay.setdefault("timeout", 30.0)
        self.handler = RelayHandler(self.clock, self.waiters, **relay)
        self.protocol = HTTPServerProtocol(self.handler, self.clock)  # type: ignore[arg-type]
        self.client = StringTransport()
        self.protocol.makeConnection(self.client)
        return self.handler


class WhenToRetryTests(RetryTestCase):
    def test_get_retried_after_upstream_died_before_answering(self) -> None:
        """A GET whose upstream died after the request was written is sent to the next one."""
        handler = self.connect()
        a, b = handler.add("a"), handler.add("b")
        self.protocol.dataReceived(b"GET /x HTTP/1.1\r\nHost: ep.example.com\r\n\r\n")
        self.assertTrue(a.written().startswith(b"GET /x HTTP/1.1\r\n"))
        a.die()
        self.assertEqual(self.client.value(), b"")
        self.clock.advance(0)
        self.assertEqual(handler.picks[-1], {"a"})
        self.assertTrue(b.written().startswith(b"GET /x HTTP/1.1\r\n"))
        b.protocols[0].dataReceived(OK)
        self.assertTrue(self.client.value().startswith(b"HTTP/1.1 200 OK\r\n"))
        self.assertEqual(self.client.value().count(b"HTTP/1.1"), 1)

    def test_never_written_post_retried_with_its_body(self) -> None:
        """A POST whose upstream refused the connection is sent elsewhere, body and all."""
        handler = self.connect()
        handler.add("a", refuse=True)
        b = handler.add("b")
        self.protocol.dataReceived(
            b"POST /x HTTP/1.1\r\nHost: ep.example.com\r\nContent-Length: 5\r\n\r\nhello"
        )
        self.clock.advance(0)
        self.assertTrue(b.written().startswith(b"POST /x HTTP/1.1\r\n"))
        self.assertTrue(b.written().endswith(b"\r\n\r\nhello"))
        b.protocols[0].dataReceived(OK)
        self.assertTrue(self.client.value().startswith(b"HTTP/1.1 200 OK\r\n"))

    def test_written_post_not_retried(self) -> None:
        """A POST written to an upstream that then died may have reached it: 502, as Go."""
        handler = self.connect()
        a, b = handler.add("a"), handler.add("b")
        self.protocol.dataReceived(
            b"POST /x HTTP/1.1\r\nHost: ep.example.com\r\nContent-Length: 5\r\n\r\nhello"
        )
        a.die()
        self.clock.advance(0)
        self.assertIn(b"502 Bad Gateway", self.client.value())
        self.assertTrue(self.client.value().endswith(UNREACHABLE))
        self.assertEqual(b.transports, [])

    def test_bodiless_post_written_not_retried(self) -> None:
        """Even without a body a written POST is not sent twice."""
        handler = self.connect()
        a, b = handler.add("a"), handler.add("b")
        self.protocol.dataReceived(
            b"POST /x HTTP/1.1\r\nHost: ep.example.com\r\nContent-Length: 0\r\n\r\n"
        )
        a.die()
        self.clock.advance(0)
        self.assertIn(b"502 Bad Gateway", self.client.value())
        self.assertEqual(b.transports, [])

    def test_put_body_replayed(self) -> None:
        """A written PUT with a small body is replayed from memory to the next upstream."""
        handler = self.connect()
        a, b = handler.add("a"), handler.add("b")
        self.protocol.dataReceived(
            b"PUT /x HTTP/1.1\r\nHost: ep.example.com\r\nContent-Length: 5\r\n\r\nhello"
        )
        self.assertTrue(a.written().endswith(b"hello"))
        a.die()
        self.clock.advance(0)
        self.assertTrue(b.written().startswith(b"PUT /x HTTP/1.1\r\n"))
        self.assertTrue(b.written().endswith(b"\r\n\r\nhello"))

    def test_chunked_delete_body_replayed_chunked(self) -> None:
        """A chunked idempotent body is replayed chunked, ended by its last chunk."""
        handler = self.connect()
        a, b = handler.add("a"), handler.add("b")
        self.protocol.dataReceived(
            b"DELETE /x HTTP/1.1\r\nHost: ep.example.com\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
        )
        a.die()
        self.clock.advance(0)
        self.assertTrue(b.written().endswith(b"\r\n\r\n5\r\nabcde\r\n0\r\n\r\n"))

    def test_body_arriving_after_the_failure_follows_the_replay(self) -> None:
        """Half a PUT body is replayed; the rest, read after the retry, follows it."""
        handler = self.connect()
        a, b = handler.add("a"), handler.add("b")
        self.protocol.dataReceived(
            b"PUT /x HTTP/1.1\r\nHost: ep.example.com\r\nContent-Length: 10\r\n\r\nhello"
        )
        a.die()
        self.protocol.dataReceived(b"world")
        self.assertFalse(a.written().endswith(b"world"))
        self.clock.advance(0)
        self.assertTrue(b.written().endswith(b"\r\n\r\nhelloworld"))

    def test_body_over_the_limit_not_retried(self) -> None:
        """A written PUT whose body passed the limit is not held, so not retried."""
        handler = self.connect(body_limit=8)
        a, b = handler.add("a"), handler.add("b")
        self.protocol.dataReceived(
            b"PUT /x HTTP/1.1\r\nHost: ep.example.com\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n5\r\nworld\r\n0\r\n\r\n"
        )
        a.die()
        self.clock.advance(0)
        self.assertIn(b"502 Bad Gateway", self.client.value())
        self.assertEqual(b.transports, [])

    def test_not_retried_once_response_bytes_arrived(self) -> None:
        """An upstream that sent part of its head before dying may have acted: 502."""
        handler = self.connect()
        a, b = handler.add("a"), handler.add("b")
        self.protocol.dataReceived(b"GET /x HTTP/1.1\r\nHost: ep.example.com\r\n\r\n")
        a.protocols[0].dataReceived(b"HTTP/1.1 200 OK\r\n")
        a.die()
        self.clock.advance(0)
        self.assertIn(b"502 Bad Gateway", self.client.value())
        self.assertEqual(b.transports, [])

    def test_timeout_not_retried(self) -> None:
        """An upstream that does not answer within proxy.timeout gets the client a 504."""
        handler = self.connect(timeout=3.0)
        handler.add("a")
        b = handler.add("b")
        self.protocol.dataReceived(b"GET /x HTTP/1.1\r\nHost: ep.example.com\r\n\r\n")
        self.clock.advance(3.0)
        self.assertIn(b"504 Gateway Timeout", self.client.value())
        self.clock.advance(0)
        self.assertEqual(b.transports, [])

    def test_attempts_bounded(self) -> None:
        """Upstreams failing one after another are tried MAX_ATTEMPTS times, then 502."""
        handler = self.connect()
        connectors = [handler.add(f"u{i}") for i in range(MAX_ATTEMPTS + 2)]
        self.protocol.dataReceived(b"GET /x HTTP/1.1\r\nHost: ep.example.com\r\n\r\n")
        for connector in connectors[:MAX_ATTEMPTS]:
            self.assertEqual(self.client.value(), b"")
            connector.die()
            self.clock.advance(0)
        self.assertIn(b"502 Bad Gateway", self.client.value())
        self.assertEqual([len(c.transports) for c in connectors], [1] * MAX_ATTEMPTS + [0, 0])


class WaitTests(RetryTestCase):
    def test_waits_for_the_endpoint_to_come_back(self) -> None:
        """With no other upstream, the retry waits for one to register, then goes there."""
        handler = self.connect()
        a = handler.add("a")
        self.protocol.dataReceived(b"GET /x HTTP/1.1\r\nHost: ep.example.com\r\n\r\n")
        a.die()
        self.clock.advance(1.0)
        self.assertEqual(self.client.value(), b"")
        self.assertEqual(len(self.waiters), 1)
        b = handler.add("b")
        self.waiters.endpoint_changed("ep", 1)
        self.clock.advance(0)
        self.assertEqual(len(self.waiters), 0)
        self.assertTrue(b.written().startswith(b"GET /x HTTP/1.1\r\n"))
        b.protocols[0].dataReceived(OK)
        self.assertTrue(self.client.value().startswith(b"HTTP/1.1 200 OK\r\n"))
        # The give-up timer is gone: nothing more is written later.
        self.clock.advance(RETRY_WAIT * 2)
        self.assertEqual(self.client.value().count(b"HTTP/1.1"), 1)

    def test_cluster_change_wakes_and_nothing_found_waits_again(self) -> None:
        """A node table change that brings nothing for the endpoint leaves the request waiting."""
        handler = self.connect()
        a = handler.add("a")
        self.protocol.dataReceived(b"GET /x HTTP/1.1\r\nHost: ep.example.com\r\n\r\n")
        a.die()
        self.clock.advance(0)
        self.waiters.cluster_changed()
        self.clock.advance(0)
        self.assertEqual(len(self.waiters), 1)
        b = handler.add("b")
        self.waiters.cluster_changed()
        self.clock.advance(0)
        self.assertEqual(len(b.transports), 1)

    def test_wait_bounded(self) -> None:
        """If nothing serves the endpoint within RETRY_WAIT, the client gets Go's 502."""
        handler = self.connect()
        a = handler.add("a")
        self.protocol.dataReceived(b"GET /x HTTP/1.1\r\nHost: ep.example.com\r\n\r\n")
        a.die()
        self.clock.advance(0)
        self.clock.advance(RETRY_WAIT - 0.1)
        self.assertEqual(self.client.value(), b"")
        self.clock.advance(0.1)
        self.assertIn(b"HTTP/1.1 502 Bad Gateway\r\n", self.client.value())
        self.assertTrue(self.client.value().endswith(UNREACHABLE))
        self.assertEqual(len(self.waiters), 0)

    def test_wait_never_past_the_proxy_timeout(self) -> None:
        """A request never waits past proxy.timeout from its arrival."""
        handler = self.connect(timeout=2.0)
        a = handler.add("a")
        self.protocol.dataReceived(b"GET /x HTTP/1.1\r\nHost: ep.example.com\r\n\r\n")
        self.clock.advance(1.5)
        a.die()
        self.clock.advance(0.5)
        self.assertIn(b"502 Bad Gateway", self.client.value())

    def test_client_gone_while_waiting(self) -> None:
        """A client that leaves while its request waits ends the wait; nothing is sent."""
        handler = self.connect()
        a = handler.add("a")
        self.protocol.dataReceived(b"GET /x HTTP/1.1\r\nHost: ep.example.com\r\n\r\n")
        a.die()
        self.clock.advance(0)
        self.protocol.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(len(self.waiters), 0)
        handler.add("b")
        self.waiters.endpoint_changed("ep", 1)
        self.clock.advance(RETRY_WAIT)
        self.assertEqual(handler.connectors["b"].transports, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_no_waiters_gives_up_at_once(self) -> None:
        """A relay with nowhere to wait answers 502 when no route is left."""
        clock = Clock()
        handler = RelayHandler(clock, None, timeout=30.0)
        a = handler.add("a")
        protocol = HTTPServerProtocol(handler, clock)  # type: ignore[arg-type]
        client = StringTransport()
        protocol.makeConnection(client)
        protocol.dataReceived(b"GET /x HTTP/1.1\r\nHost: ep.example.com\r\n\r\n")
        a.die()
        clock.advance(0)
        self.assertIn(b"502 Bad Gateway", client.value())


class UpstreamWaitersTests(SynchronousTestCase):
    def test_woken_once_on_the_next_turn(self) -> None:
        """A waiter is called once, on the next turn, and only for its endpoint's arrival."""
        clock = Clock()
        waiters = UpstreamWaiters(clock)
        woken: list[str] = []
        waiters.wait("ep", lambda: woken.append("ep"))
        waiters.endpoint_changed("other", 1)
        waiters.endpoint_changed("ep", 0)
        clock.advance(0)
        self.assertEqual(woken, [])
        waiters.endpoint_changed("ep", 1)
        self.assertEqual(woken, [])
        waiters.endpoint_changed("ep", 2)
        clock.advance(0)
        self.assertEqual(woken, ["ep"])
        self.assertEqual(len(waiters), 0)

    def test_cancel(self) -> None:
        """A cancelled wait is not woken."""
        clock = Clock()
        waiters = UpstreamWaiters(clock)
        woken: list[int] = []
        cancel = waiters.wait("ep", lambda: woken.append(1))
        cancel()
        cancel()
        waiters.cluster_changed()
        clock.advance(0)
        self.assertEqual(woken, [])


class FakeSession:
    """Enough of an UpstreamSession for the proxy port: streams are StringTransports."""

    open_slot_available = True
    remote_go_away = False

    def __init__(self) -> None:
        self.streams: list[IProtocol] = []
        self.transports: list[StringTransport] = []

    def open_stream(self, protocol: IProtocol) -> None:
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.streams.append(protocol)
        self.transports.append(transport)


class ProxyPortRetryTests(SynchronousTestCase):
    """The proxy port's routes: local upstreams first, then other nodes, failed ones skipped."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.registry: UpstreamRegistry[Any] = UpstreamRegistry()
        self.cluster = ClusterState(Node("n1"), random.Random(1))
        self.node = FakeConnector()
        self.forwarder = RemoteForwarder(self.clock, self.cluster, pool_for=lambda n: self.node)
        handler = ProxyPortHandler(
            self.clock, self.registry, WebSocketAcceptor(self.clock), forwarder=self.forwarder
        )
        self.protocol = HTTPServerProtocol(handler, self.clock)
        self.client = StringTransport()
        self.protocol.makeConnection(self.client)

    def test_forwarded_request_retried_on_the_agent_that_reconnected_here(self) -> None:
        """
        The chaos run's SIGKILL: a GET forwarded to the node holding the agents, in flight
        when that node dies, waits for an agent to reconnect here and is answered 200, not
        502 (issue 11, section 3).
        """
        self.cluster.add_node(Node("n2", proxy_addr="127.0.0.1:9000", endpoints={"ep": 1}))
        self.protocol.dataReceived(b"GET /x HTTP/1.1\r\nHost: ep.example.com\r\n\r\n")
        self.assertIn(b"X-Piko-Forward: true\r\n", self.node.written())
        self.node.die()
        self.clock.advance(0.3)
        self.assertEqual(self.client.value(), b"")
        # n2 is not dropped on a failure after the write (gossip decides) but not tried again.
        self.assertIsNotNone(self.cluster.lookup_endpoint("ep"))
        self.assertEqual(len(self.node.transports), 1)
        agent = FakeSession()
        self.registry.add("ep", agent)
        self.clock.advance(0)
        [stream] = agent.transports
        self.assertTrue(stream.value().startswith(b"GET /x HTTP/1.1\r\n"))
        self.assertIn(b"Connection: close\r\n", stream.value())  # the local rewrite
        agent.streams[0].dataReceived(OK)
        self.assertTrue(self.client.value().startswith(b"HTTP/1.1 200 OK\r\n"))

    def test_local_upstream_died_retried_on_another_local_one(self) -> None:
        """An agent session dying under a GET sends it to the endpoint's next agent."""
        first, second = FakeSession(), FakeSession()
        self.registry.add("ep", first)
        self.registry.add("ep", second)
        self.protocol.dataReceived(b"GET /x HTTP/1.1\r\nHost: ep.example.com\r\n\r\n")
        self.assertEqual((len(first.streams), len(second.streams)), (1, 0))
        first.streams[0].connectionLost(Failure(ConnectionLost()))
        self.clock.advance(0)
        self.assertEqual((len(first.streams), len(second.streams)), (1, 1))
        second.streams[0].dataReceived(OK)
        self.assertTrue(self.client.value().startswith(b"HTTP/1.1 200 OK\r\n"))

    def test_local_failure_then_another_node(self) -> None:
        """With no other local agent, the retry goes to a node that has the endpoint."""
        agent = FakeSession()
        self.registry.add("ep", agent)
        self.cluster.add_node(Node("n2", proxy_addr="127.0.0.1:9000", endpoints={"ep": 1}))
        self.protocol.dataReceived(b"GET /x HTTP/1.1\r\nHost: ep.example.com\r\n\r\n")
        agent.streams[0].connectionLost(Failure(ConnectionLost()))
        # The session is still registered (its end is noticed apart): it is skipped anyway.
        self.clock.advance(0)
        self.assertEqual(len(agent.streams), 1)
        self.assertIn(b"X-Piko-Forward: true\r\n", self.node.written())

    def test_unreachable_node_skipped_for_another(self) -> None:
        """A node refusing the connection loses its route; the request goes to another node."""
        refusing, good = FakeConnector(refuse=True), FakeConnector()
        pools = {"n2": refusing, "n3": good}
        self.forwarder._pool_for = lambda node: pools[node.id]
        self.cluster.add_node(Node("n2", proxy_addr="127.0.0.1:9000", endpoints={"ep": 100}))
        self.cluster.add_node(Node("n3", proxy_addr="127.0.0.1:9001", endpoints={"ep": 1}))
        self.protocol.dataReceived(
            b"POST /x HTTP/1.1\r\nHost: ep.example.com\r\nContent-Length: 2\r\n\r\nhi"
        )
        self.clock.advance(0)
        self.assertEqual(self.cluster.node("n2").endpoints, {})
        self.assertTrue(good.written().endswith(b"\r\n\r\nhi"))

"""Tests for :mod:`piko.server.forwarding`, without sockets."""

from __future__ import annotations

import random
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.interfaces import IProtocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from piko.cluster.nodes import ClusterState, Node
from piko.http.proxy import IUpstreamConnector
from piko.http.server import HTTPServerProtocol
from piko.server.forwarding import NodeConnectionPool, RemoteForwarder
from piko.test.agent.helpers import FakeEndpoint, HalfCloseTransport
from piko.test.mux.helpers import HalfCloseRecorder


@implementer(IUpstreamConnector)
class FakePool:
    """Connects each protocol to a fresh StringTransport, or refuses."""

    def __init__(self, refuse: bool = False) -> None:
        self.refuse = refuse
        self.transports: list[StringTransport] = []
        self.protocols: list[IProtocol] = []

    def connect(self, protocol: IProtocol) -> Deferred[IProtocol]:
        if self.refuse:
            return fail(ConnectionRefusedError())
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.transports.append(transport)
        self.protocols.append(protocol)
        return succeed(protocol)

    def release(self, protocol: IProtocol, reusable: bool) -> None:
        pass


class ForwardingHandler:
    """An IRequestHandler that forwards everything for endpoint 'ep'."""

    def __init__(self, forwarder: RemoteForwarder) -> None:
        self.forwarder = forwarder
        self.forwarded: list[bool] = []

    def request_received(self, exchange: Any) -> None:
        self.forwarded.append(self.forwarder.forward(exchange, "ep"))


def setup(pool: FakePool) -> tuple[ClusterState, ForwardingHandler, StringTransport, Any]:
    clock = Clock()
    cluster = ClusterState(Node("n1"), random.Random(1))
    cluster.add_node(Node("n2", proxy_addr="127.0.0.1:9000", endpoints={"ep": 2}))
    seen: list[str] = []
    forwarder = RemoteForwarder(
        clock,
        cluster,
        pool_for=lambda node: pool,
        on_forward=seen.append,
    )
    handler = ForwardingHandler(forwarder)
    protocol = HTTPServerProtocol(handler, clock)  # type: ignore[arg-type]
    client = StringTransport()
    protocol.makeConnection(client)
    return cluster, handler, client, (protocol, seen)


class ForwardingTests(SynchronousTestCase):
    def test_forwarded_one_hop_with_header(self) -> None:
        """A request goes to the node holding the endpoint, marked x-piko-forward, kept alive."""
        pool = FakePool()
        _, handler, client, (protocol, seen) = setup(pool)
        protocol.dataReceived(b"GET /x HTTP/1.1\r\nHost: ep.example.com\r\n\r\n")
        self.assertEqual(handler.forwarded, [True])
        self.assertEqual(seen, ["n2"])
        [remote] = pool.transports
        request = remote.value()
        self.assertTrue(request.startswith(b"GET /x HTTP/1.1\r\nHost: ep.example.com\r\n"))
        self.assertIn(b"X-Piko-Forward: true\r\n", request)
        self.assertNotIn(b"Connection: close", request)
        pool.protocols[0].dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi")
        self.assertTrue(client.value().startswith(b"HTTP/1.1 200 OK\r\n"))
        self.assertTrue(client.value().endswith(b"\r\n\r\nhi"))

    def test_already_forwarded_stays_local(self) -> None:
        """A forwarded request for an endpoint no other node has is answered here."""
        pool = FakePool()
        cluster, handler, _, (protocol, _) = setup(pool)
        cluster.remove_node("n2")
        protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\nx-piko-forward: true\r\n\r\n")
        self.assertEqual(handler.forwarded, [False])
        self.assertEqual(pool.transports, [])

    def test_draining_node_takes_second_hop(self) -> None:
        """A draining node forwards a forwarded request once more, marked x-piko-hops: 2."""
        pool = FakePool()
        _, handler, _, (protocol, _) = setup(pool)
        handler.forwarder.draining = True
        protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: ep\r\nx-piko-forward: true\r\n\r\n")
        self.assertEqual(handler.forwarded, [True])
        [remote] = pool.transports
        self.assertIn(b"X-Piko-Hops: 2\r\n", remote.value())

    def test_stale_forward_takes_second_hop(self) -> None:
        """
        A forwarded request for an endpoint whose upstream just left this node goes once more
        to a node that has it (the sender's table lagged), not 502 (the chaos run's agent
        restarts lost requests to this).
        """
        pool = FakePool()
        _, handler, _, (protocol, seen) = setup(pool)
        protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: ep\r\nx-piko-forward: true\r\n\r\n")
        self.assertEqual(handler.forwarded, [True])
        self.assertEqual(seen, ["n2"])
        [remote] = pool.transports
        self.assertIn(b"X-Piko-Hops: 2\r\n", remote.value())

    def test_second_hop_never_exceeded(self) -> None:
        """A request already marked x-piko-hops is not forwarded again, even while draining."""
        pool = FakePool()
        _, handler, _, (protocol, _) = setup(pool)
        handler.forwarder.draining = True
        protocol.dataReceived(
            b"GET / HTTP/1.1\r\nHost: ep\r\nx-piko-forward: true\r\nx-piko-hops: 2\r\n\r\n"
        )
        self.assertEqual(handler.forwarded, [False])
        self.assertEqual(pool.transports, [])

    def test_client_hops_header_stripped(self) -> None:
        """A client's own x-piko-hops is dropped on the first hop."""
        pool = FakePool()
        _, _, _, (protocol, _) = setup(pool)
        protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: ep\r\nx-piko-hops: 7\r\n\r\n")
        [remote] = pool.transports
        self.assertNotIn(b"hops", remote.value().lower())

    def test_unreachable_node_502_and_route_dropped(self) -> None:
        """A node that refuses gets the client a 502 and loses its route for the endpoint."""
        pool = FakePool(refuse=True)
        cluster, handler, client, (protocol, _) = setup(pool)
        protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: ep.example.com\r\n\r\n")
        # The retry looks for another node on the next turn: there is none.
        handler.forwarder.reactor.advance(0)
        self.assertIn(b"502 Bad Gateway", client.value())
        self.assertIn(b'{"error":"upstream unreachable"}', client.value())
        self.assertIsNone(cluster.lookup_endpoint("ep"))


UPGRADE = (
    b"GET /chat HTTP/1.1\r\nHost: ep.example.com\r\nConnection: Upgrade\r\n"
    b"Upgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)
SWITCHING = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"


class ForwardedUpgradeCloseTests(SynchronousTestCase):
    """
    A forwarded upgrade ends once both directions are shut, as Twisted does not end it.

    The client's and the other node's FINs are passed on one by one; the
    node connection must then close by itself, which closes the client's, or
    a draining node waits for it until ``grace_period`` ends (issue 11, fault 2).
    """

    def setUp(self) -> None:
        clock = Clock()
        cluster = ClusterState(Node("n1"), random.Random(1))
        cluster.add_node(Node("n2", proxy_addr="127.0.0.1:9000", endpoints={"ep": 1}))
        self.endpoint = FakeEndpoint()
        self.pool = NodeConnectionPool(clock, self.endpoint)
        forwarder = RemoteForwarder(clock, cluster, pool_for=lambda node: self.pool)
        self.downstream = HTTPServerProtocol(ForwardingHandler(forwarder), clock)  # type: ignore[arg-type]
        self.client = HalfCloseTransport()
        self.downstream.makeConnection(self.client)
        self.downstream.dataReceived(UPGRADE)
        [self.node] = self.endpoint.transports
        [self.node_protocol] = self.endpoint.protocols
        self.node_protocol.dataReceived(SWITCHING)
        self.assertTrue(self.client.value().startswith(b"HTTP/1.1 101 Switching Protocols\r\n"))

    def assert_both_closed(self) -> None:
        self.assertTrue(self.node.disconnecting)
        self.node_protocol.connectionLost(Failure(ConnectionDone()))
        self.assertTrue(self.client.disconnecting)
        self.assertEqual(self.pool._leased, {})

    def test_client_shuts_first(self) -> None:
        """The client's FIN goes to the node; the node's FIN then ends both connections."""
        self.downstream.readConnectionLost()
        self.assertTrue(self.node.write_closed)
        self.node_protocol.writeConnectionLost()
        self.assertFalse(self.node.disconnecting)
        self.node_protocol.readConnectionLost()
        self.assertTrue(self.client.write_closed)
        self.assert_both_closed()

    def test_node_shuts_first(self) -> None:
        """The node's FIN goes to the client; the client's FIN then ends both connections."""
        self.node_protocol.readConnectionLost()
        self.assertTrue(self.client.write_closed)
        self.assertFalse(self.node.disconnecting)
        self.downstream.readConnectionLost()
        self.assertTrue(self.node.write_closed)
        self.node_protocol.writeConnectionLost()
        self.assert_both_closed()

    def test_half_closed_stays_open(self) -> None:
        """One FIN alone keeps the connection open: the other direction may still send."""
        self.downstream.readConnectionLost()
        self.node_protocol.writeConnectionLost()
        self.node_protocol.dataReceived(b"late")
        self.assertTrue(self.client.value().endswith(b"late"))
        self.assertFalse(self.node.disconnecting)


class NodeConnectionPoolTests(SynchronousTestCase):
    def test_keeps_go_s_two_idle_connections_per_node(self) -> None:
        """
        After a burst, only two connections to a node stay idle (Go's
        ``DefaultMaxIdleConnsPerHost``); the rest close, so fds return to near baseline.
        """
        endpoint = FakeEndpoint()
        pool = NodeConnectionPool(Clock(), endpoint)
        users = []
        for _ in range(5):
            user = HalfCloseRecorder()
            pool.connect(user)
            users.append(user)
        for user in users:
            pool.release(user, True)
        closed = [t for t in endpoint.transports if t.disconnecting]
        self.assertEqual((len(endpoint.transports), len(closed)), (5, 3))

    def test_idle_connection_closed_before_the_other_node_would(self) -> None:
        """An idle node connection is kept 5 s, not the agent pool's 90 s."""
        clock = Clock()
        endpoint = FakeEndpoint()
        pool = NodeConnectionPool(clock, endpoint)
        user = HalfCloseRecorder()
        pool.connect(user)
        pool.release(user, True)
        clock.advance(4.9)
        self.assertFalse(endpoint.transports[0].disconnecting)
        clock.advance(0.2)
        self.assertTrue(endpoint.transports[0].disconnecting)

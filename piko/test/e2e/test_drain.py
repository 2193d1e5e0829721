# -*- test-case-name: piko.test.e2e.test_drain -*-
"""
A stopping node ends as soon as nothing is in flight, well within ``grace_period``.

Issue 11, faults 2 and 3, on loopback: nodes with ``grace_period`` 30 s must
stop in under :data:`QUICK` seconds after a forwarded WebSocket or
``/_piko/v1/tcp/`` connection closed, and with upstreams that do not move
when told to (Go agents ignore GoAway), idle or answering a request.
"""

from __future__ import annotations

import os
from typing import Any

from attrs import evolve
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, connectProtocol
from twisted.internet.error import ProcessDone
from twisted.internet.protocol import Factory, ProcessProtocol
from twisted.python.failure import Failure
from twisted.web import resource, server

from piko.client import Dialer
from piko.cluster.nodes import Node, NodeStatus
from piko.config import ServerConfig
from piko.server.service import PikoServerService
from piko.test.e2e.harness import E2ETestCase, reactor, server_config, wait_for_count
from piko.test.e2e.test_gossip_cluster import status_of, wait_cluster
from piko.test.e2e.test_http import Echo, get
from piko.test.e2e.test_tcp_ws import Collector, UpgradingEcho
from piko.test.e2e.test_tcp_ws import Echo as TCPEcho
from piko.test.interop import require_go_piko

#: The configured grace period, and the bound on a stop with nothing in flight.
GRACE = 30.0
QUICK = 5.0

WEBSOCKET_UPGRADE = (
    b"GET /chat HTTP/1.1\r\nHost: x\r\nx-piko-endpoint: ws-ep\r\n"
    b"Connection: Upgrade\r\nUpgrade: websocket\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


class HeldResource(resource.Resource):
    """Holds each request until the test answers it; fires :attr:`arrived` with the first."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.arrived: Deferred[Any] = Deferred()

    def render_GET(self, request: Any) -> Any:
        if not self.arrived.called:
            self.arrived.callback(request)
        return server.NOT_DONE_YET


class AgentProcess(ProcessProtocol):
    """A child process; :attr:`ended` fires when it exits."""

    def __init__(self) -> None:
        self.ended: Deferred[None] = Deferred()
        self.output = bytearray()

    def outReceived(self, data: bytes) -> None:
        self.output += data[-4096:]

    errReceived = outReceived

    def processEnded(self, reason: Failure = Failure(ProcessDone(0))) -> None:  # noqa: B008
        self.ended.callback(None)


class DrainTestCase(E2ETestCase):
    timeout = 2 * GRACE

    def grace_config(self, node_id: str, join: tuple[str, ...] = ()) -> ServerConfig:
        config = server_config()
        return evolve(
            config,
            grace_period=GRACE,
            cluster=evolve(config.cluster, node_id=node_id, join=join, join_timeout=5.0),
        )

    @inlineCallbacks
    def stop_timed(self, node: PikoServerService) -> Any:
        """Stop ``node`` and return how long that took, in seconds."""
        started = reactor.seconds()
        yield node.stopService()
        return reactor.seconds() - started


class ForwardedDrainTests(DrainTestCase):
    """A node that forwarded an upgraded connection, since closed, stops at once (fault 2)."""

    @inlineCallbacks
    def start_pair(self) -> Any:
        """The owner (with the upstream) and another node that forwards to it."""
        owner = yield self.start_server()
        other = yield self.start_service(self.grace_config("other"))
        owner_node = Node(
            "owner",
            proxy_addr=f"127.0.0.1:{self.port_of('proxy', owner)}",
            admin_addr=f"127.0.0.1:{self.port_of('admin', owner)}",
        )
        other.cluster.add_node(owner_node)
        return owner, other

    @inlineCallbacks
    def test_forwarded_websocket_closed(self) -> Any:
        """After a WebSocket forwarded to another node closed, the node stops in seconds."""
        owner, other = yield self.start_pair()
        yield self.listen("ws-ep", Factory.forProtocol(UpgradingEcho))
        other.cluster.update_endpoint("owner", "ws-ep", 1)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.port_of("proxy", other))
        client = yield connectProtocol(endpoint, Collector())
        client.transport.write(WEBSOCKET_UPGRADE)
        head = yield client.wait_until(lambda received: b"\r\n\r\n" in received)
        self.assertTrue(head.startswith(b"HTTP/1.1 101 Switching Protocols\r\n"))
        start = len(client.received)
        client.transport.write(b"hi")
        echoed = yield client.wait_for(start + 2)
        self.assertEqual(echoed[start:], b"HI")
        client.transport.loseConnection()
        yield client.lost
        took = yield self.stop_timed(other)
        self.assertLess(took, QUICK)

    @inlineCallbacks
    def test_forwarded_tcp_closed(self) -> Any:
        """After a /_piko/v1/tcp/ connection forwarded to another node closed, it stops soon."""
        owner, other = yield self.start_pair()
        yield self.listen("tcp-ep", Factory.forProtocol(TCPEcho))
        other.cluster.update_endpoint("owner", "tcp-ep", 1)
        dialer = Dialer(reactor, f"http://127.0.0.1:{self.port_of('proxy', other)}")
        client = yield dialer.dial("tcp-ep", Factory.forProtocol(Collector))
        client.transport.write(b"two nodes")
        echoed = yield client.wait_for(9)
        self.assertEqual(echoed, b"two nodes")
        client.transport.loseConnection()
        yield client.lost
        took = yield self.stop_timed(other)
        self.assertLess(took, QUICK)

    @inlineCallbacks
    def test_idle_node_connection_closed_at_stop(self) -> Any:
        """The kept-alive connection to another node is closed when the node stops."""
        owner, other = yield self.start_pair()
        yield self.listen("my-ep", server.Site(Echo()))
        other.cluster.update_endpoint("owner", "my-ep", 1)
        response = yield self.request(get(b"/"), self.port_of("proxy", other))
        self.assertEqual(response.status, 200)
        [pool] = other.forwarder._pools.values()
        [connection] = pool.idle
        took = yield self.stop_timed(other)
        self.assertLess(took, QUICK)
        self.assertTrue(connection.closed)


class UnmovingUpstreamDrainTests(DrainTestCase):
    """
    A cluster node whose upstreams do not move when told (Go agents ignore
    GoAway) stops once their streams ended, not at ``grace_period`` (fault 3).
    """

    @inlineCallbacks
    def start_cluster(self) -> Any:
        """Node ``a`` (to be stopped) and node ``b``, each active in the other's table."""
        b = yield self.start_service(self.grace_config("b"))
        a = yield self.start_service(self.grace_config("a", (b.gossip.addr,)))
        yield wait_cluster(a.cluster, status_of("b", NodeStatus.ACTIVE))
        yield wait_cluster(b.cluster, status_of("a", NodeStatus.ACTIVE))
        return a, b

    @inlineCallbacks
    def local_service(self, root: resource.Resource) -> Any:
        port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(server.Site(root))
        self.addCleanup(port.stopListening)
        return port.getHost().port

    @inlineCallbacks
    def go_agent(self, node: PikoServerService, local_port: int) -> Any:
        """Connect a Go agent for endpoint ``ep`` to ``node``; stopped at cleanup."""
        binary = str(require_go_piko())
        process = AgentProcess()
        args = [binary, "agent", "http", "ep", str(local_port)]
        args += ["--connect.url", f"http://127.0.0.1:{self.port_of('upstream', node)}"]
        transport = reactor.spawnProcess(process, binary, args, env=dict(os.environ))

        def stop() -> Any:
            if not process.ended.called:
                transport.signalProcess("KILL")
            return process.ended

        self.addCleanup(stop)
        yield wait_for_count(node, "ep", 1)
        return process

    @inlineCallbacks
    def test_idle_go_agent(self) -> Any:
        """With an idle Go agent connected, the node stops in seconds and drops the agent."""
        a, _ = yield self.start_cluster()
        local = yield self.local_service(Echo())
        yield self.go_agent(a, local)
        took = yield self.stop_timed(a)
        self.assertLess(took, QUICK)
        self.assertEqual(a.upstream_handler.sessions, set())

    @inlineCallbacks
    def test_go_agent_answering_a_request(self) -> Any:
        """A request in flight through a Go agent is answered; then the node stops at once."""
        a, _ = yield self.start_cluster()
        held = HeldResource()
        local = yield self.local_service(held)
        yield self.go_agent(a, local)
        client = yield self.http_client(self.port_of("proxy", a))
        client.transport.write(get(b"/slow", b"ep"))
        request = yield held.arrived
        stopping = self.stop_timed(a)
        # The request is answered a second after the stop began.
        reactor.callLater(1.0, lambda: (request.write(b"late"), request.finish()))
        response = yield client.next_response()
        self.assertEqual((response.status, response.body), (200, b"late"))
        took = yield stopping
        self.assertLess(took, QUICK)

    @inlineCallbacks
    def test_sdk_listener_with_nowhere_to_go(self) -> Any:
        """Our listener, connected to this node only, cannot move either: same bound."""
        a, _ = yield self.start_cluster()
        self.server = a
        yield self.listen("ep", server.Site(Echo()))
        took = yield self.stop_timed(a)
        self.assertLess(took, QUICK)

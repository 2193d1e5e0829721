# -*- test-case-name: piko.test.e2e.test_tls_cluster_kill -*-
"""
Killing a node of a TLS cluster: three nodes gossiping over mutual TLS, an
SDK agent on node 1 through a small TCP load balancer in front of the
upstream ports, requests sent to node 3.

Node 1 then crashes: in process, every listening port closes and every
connection it holds is aborted, with no drain, no yamux GoAway and no
gossip leave.  The agent loses its connection and reconnects through the
balancer, which skips node 1 (it now refuses) for node 2; node 3 serves
the endpoint again within 5 s (its forwarder drops node 1's route after
the failed dial and sends the request again where the endpoint is), and the
failure detector later marks node 1 unreachable, not left.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.web import server

from piko.client import Upstream
from piko.cluster.certs import ClusterCerts, create_cluster_certs
from piko.cluster.nodes import NodeStatus
from piko.cluster.transport import TLSTransport
from piko.config import ClusterTLSConfig
from piko.server.service import PikoServerService
from piko.test.e2e.harness import E2ETestCase, reactor
from piko.test.e2e.test_cluster_failover import FAILOVER_BOUND, LoadBalancer, serve_again
from piko.test.e2e.test_gossip_cluster import endpoint_on, status_of, wait_cluster
from piko.test.e2e.test_http import Echo, get

#: Figures of the last run, for the report (ms, and failed requests).
MEASURED: dict[str, float] = {}


def crash(node: PikoServerService) -> Deferred[Any]:
    """
    Emulate a crash of ``node`` in process: nothing is drained or announced.

    Every listening port stops (new connections are refused), every HTTP
    connection of its ports (the agents' upstream sessions included) and
    its forwarder's pooled connections are aborted, and gossip stops
    without leaving (:meth:`GossipService.stopService` closes the transport
    and its TLS connections; only :meth:`GossipService.leave` announces).
    The node is marked stopped so that clean-up does not drain it.
    """
    node.running = False
    node.ready = False
    node.rebalancer.stop()
    stops = [Deferred.fromCoroutine(_maybe(port.stopListening())) for port in node.ports.values()]
    node.ports.clear()
    for factory in node.factories.values():
        for protocol in list(factory.connections):
            if protocol.transport is not None:
                protocol.transport.abortConnection()  # type: ignore[attr-defined]
    node.forwarder.close()
    stops.append(node.gossip.stopService())
    return DeferredList(stops, fireOnOneErrback=True, consumeErrors=True)


async def _maybe(value: Any) -> None:
    if isinstance(value, Deferred):
        await value


class TLSClusterKillTests(E2ETestCase):
    timeout = 30

    def start_node(
        self, node_id: str, certs: ClusterCerts, join: tuple[str, ...] = ()
    ) -> Deferred[PikoServerService]:
        cert, key = certs.nodes[node_id]
        tls = ClusterTLSConfig(cert=cert, key=key, ca=certs.ca)
        return self.start_cluster_node(node_id, join, tls=tls)

    @inlineCallbacks
    def test_killing_the_agents_node_fails_over_within_5s(self) -> Any:
        """Node 1 crashes; the agent moves through the balancer; node 3 serves again in 5 s."""
        certs = create_cluster_certs(Path(self.mktemp()) / "cluster", ["n1", "n2", "n3"])
        n1 = yield self.start_node("n1", certs)
        n2 = yield self.start_node("n2", certs, (n1.gossip.addr,))
        n3 = yield self.start_node("n3", certs, (n1.gossip.addr,))
        nodes: list[PikoServerService] = [n1, n2, n3]
        for node in nodes:
            self.assertIsInstance(node.gossip.transport, TLSTransport)
            for other in {"n1", "n2", "n3"} - {node.cluster.local.id}:
                yield wait_cluster(node.cluster, status_of(other, NodeStatus.ACTIVE))

        # Every upstream port stays a backend: the balancer skips one that refuses.
        upstream_ports = [self.port_of("upstream", node) for node in nodes]
        balancer = LoadBalancer(lambda: upstream_ports)
        lb_port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(balancer)
        self.addCleanup(lb_port.stopListening)

        # The agent connects through the balancer, to node 1 (the first backend).
        seen_by_n3 = wait_cluster(n3.cluster, endpoint_on("n1", "my-ep"))
        agent = yield Upstream(reactor, f"http://127.0.0.1:{lb_port.getHost().port}").listen(
            "my-ep", server.Site(Echo())
        )
        self.addCleanup(agent.shutdown)
        self.assertEqual(n1.registry.endpoints(), {"my-ep": 1})
        yield seen_by_n3
        proxy3 = self.port_of("proxy", n3)
        response = yield self.request(get(b"/before", b"my-ep"), proxy3)
        self.assertEqual(response.status, 200)
        self.assertEqual(json.loads(response.body)["headers"]["x-piko-forward"], ["true"])

        # The reconnection will try node 1 first again, to see the balancer skip it.
        balancer.next_index = 0
        started = time.monotonic()
        yield crash(n1)
        self.assertEqual(n1.registry.endpoints(), {})
        self.assertEqual(n1.upstream_handler.sessions, set())

        failures = yield serve_again(self, proxy3, n3, (n2, n3), started)
        failover = time.monotonic() - started
        self.assertLess(failover, FAILOVER_BOUND)
        self.assertEqual(n2.registry.endpoints(), {"my-ep": 1})
        self.assertEqual(n3.registry.endpoints(), {})
        self.assertEqual(agent.connections, 2)
        # Node 1 refused the relay, which went on to node 2.
        self.assertEqual(balancer.routed, [upstream_ports[0], upstream_ports[1]])

        # No leave was sent: node 1 becomes unreachable (failure detector), never left.
        yield wait_cluster(n3.cluster, status_of("n1", NodeStatus.UNREACHABLE))
        unreachable = time.monotonic() - started
        for node in (n2, n3):
            yield wait_cluster(node.cluster, status_of("n1", NodeStatus.UNREACHABLE))
            assert node.gossip.state is not None
            self.assertFalse(node.gossip.state.is_departed("n1"))
        response = yield self.request(get(b"/later", b"my-ep"), proxy3)
        self.assertEqual(response.status, 200)
        self.assertEqual(json.loads(response.body)["uri"], "/later")

        MEASURED.update(
            failover_ms=failover * 1000, failed_requests=failures, unreachable_ms=unreachable * 1000
        )
        print(f"\nTLS cluster, node 1 killed: {MEASURED}")

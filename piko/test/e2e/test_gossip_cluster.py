# -*- test-case-name: piko.test.e2e.test_gossip_cluster -*-
"""
Three server nodes on loopback forming a cluster by gossip (real UDP and TCP).

Node 2 and node 3 join node 1's gossip address; an upstream on node 1 is
learnt by node 3, which forwards to it; node 1 leaving makes node 3 drop
the route.  Every wait is on a ClusterState change, bounded by the test
timeout.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.web import server

from piko.cluster.nodes import ClusterState, NodeStatus
from piko.server.service import PikoServerService
from piko.test.e2e.harness import E2ETestCase
from piko.test.e2e.test_http import Echo, get

#: Convergence times measured by the last run, for the report (ms).
MEASURED: dict[str, float] = {}


def wait_cluster(
    cluster: ClusterState, predicate: Callable[[ClusterState], bool]
) -> Deferred[None]:
    """Fire once ``predicate(cluster)`` holds (checked at every change)."""
    d: Deferred[None] = Deferred()
    if predicate(cluster):
        d.callback(None)
        return d

    def changed(state: ClusterState) -> None:
        if not d.called and predicate(state):
            d.callback(None)

    cluster.observe(changed)
    return d


def endpoint_on(node_id: str, endpoint_id: str) -> Callable[[ClusterState], bool]:
    def check(cluster: ClusterState) -> bool:
        node = cluster.node(node_id)
        return node is not None and node.endpoints.get(endpoint_id, 0) > 0

    return check


def status_of(node_id: str, status: NodeStatus) -> Callable[[ClusterState], bool]:
    def check(cluster: ClusterState) -> bool:
        node = cluster.node(node_id)
        return node is not None and node.status is status

    return check


def _first(source: str, changes: list[tuple[str, float]]) -> float:
    return next(t for s, t in changes if s == source)


class GossipClusterTests(E2ETestCase):
    @inlineCallbacks
    def start_cluster(self) -> Any:
        n1 = yield self.start_cluster_node("n1")
        self.server = n1
        seed = n1.gossip.addr
        n2 = yield self.start_cluster_node("n2", (seed,))
        n3 = yield self.start_cluster_node("n3", (seed,))
        for node in (n1, n2, n3):
            for other in {"n1", "n2", "n3"} - {node.cluster.local.id}:
                yield wait_cluster(node.cluster, status_of(other, NodeStatus.ACTIVE))
        return n1, n2, n3

    @inlineCallbacks
    def test_three_nodes_forward_then_leave(self) -> Any:
        """Node 3 learns node 1's upstream by gossip and forwards to it; node 1 leaving drops it."""
        n1, n2, n3 = yield self.start_cluster()
        changes: list[tuple[str, float]] = []
        n1.registry.observe(lambda ep, count: changes.append(("n1", time.monotonic())))
        n3.cluster.observe(lambda c: changes.append(("n3", time.monotonic())))
        adds, removes = [], []
        for _ in range(5):
            n3_sees = wait_cluster(n3.cluster, endpoint_on("n1", "my-ep"))
            del changes[:]
            port = yield self.listen("my-ep", server.Site(Echo()))
            yield n3_sees
            adds.append(_first("n3", changes) - _first("n1", changes))
            yield wait_cluster(n2.cluster, endpoint_on("n1", "my-ep"))

            response = yield self.request(get(b"/via-n3", b"my-ep"), self.port_of("proxy", n3))
            self.assertEqual(response.status, 200)
            self.assertEqual(json.loads(response.body)["headers"]["x-piko-forward"], ["true"])

            # An endpoint removal reaches node 3 too.
            gone = wait_cluster(n3.cluster, lambda c: not endpoint_on("n1", "my-ep")(c))
            del changes[:]
            yield port.shutdown()
            yield gone
            removes.append(_first("n3", changes) - _first("n1", changes))
        MEASURED["add_ms"] = sorted(adds)[2] * 1000
        MEASURED["remove_ms"] = sorted(removes)[2] * 1000
        MEASURED["add_max_ms"] = max(adds) * 1000
        MEASURED["remove_max_ms"] = max(removes) * 1000
        port = yield self.listen("my-ep", server.Site(Echo()))
        yield wait_cluster(n3.cluster, endpoint_on("n1", "my-ep"))

        # Node 1 leaves gracefully: node 3 learns it left and has no route.
        left = wait_cluster(n3.cluster, status_of("n1", NodeStatus.LEFT))
        yield n1.stopService()
        yield left
        response = yield self.request(get(b"/", b"my-ep"), self.port_of("proxy", n3))
        self.assertEqual(
            (response.status, response.body), (502, b'{"error":"no available upstreams"}\n')
        )
        print(f"\ngossip convergence on loopback (median of 5, ms): {MEASURED}")

    @inlineCallbacks
    def test_gossip_status_and_forward(self) -> Any:
        """The gossip status routes list every node; ``?forward=`` relays to another node."""
        n1, n2, n3 = yield self.start_cluster()
        response = yield self.request(
            b"GET /status/gossip/nodes HTTP/1.1\r\nHost: x\r\n\r\n", self.port_of("admin", n3)
        )
        nodes = json.loads(response.body)
        self.assertEqual([n["id"] for n in nodes], ["n1", "n2", "n3"])
        self.assertEqual(nodes[0]["addr"], n1.gossip.addr)
        response = yield self.request(
            b"GET /status/cluster/nodes/local?forward=n1 HTTP/1.1\r\nHost: x\r\n\r\n",
            self.port_of("admin", n3),
        )
        self.assertEqual((response.status, json.loads(response.body)["id"]), (200, "n1"))
        response = yield self.request(
            b"GET /status/cluster/nodes?forward=nope HTTP/1.1\r\nHost: x\r\n\r\n",
            self.port_of("admin", n3),
        )
        self.assertEqual((response.status, response.body), (404, b""))


__all__ = ["GossipClusterTests", "PikoServerService"]

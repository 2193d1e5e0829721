# -*- test-case-name: piko.test.e2e.test_gossip_tls -*-
"""
Three server nodes on loopback gossiping over mutual TLS (real TCP), with
certificates from ``piko cluster certs``; a fourth node whose certificate
another CA signed is refused.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.logger import ILogObserver, globalLogPublisher
from twisted.web import server

from piko.cluster.certs import ClusterCerts, create_cluster_certs
from piko.cluster.nodes import NodeStatus
from piko.cluster.transport import TLSTransport
from piko.config import ClusterTLSConfig
from piko.server.service import PikoServerService
from piko.test.e2e.harness import E2ETestCase
from piko.test.e2e.test_gossip_cluster import endpoint_on, status_of, wait_cluster
from piko.test.e2e.test_http import Echo, get


class GossipTLSClusterTests(E2ETestCase):
    def start_node(
        self, node_id: str, certs: ClusterCerts, ca: str, join: tuple[str, ...] = ()
    ) -> Deferred[PikoServerService]:
        cert, key = certs.nodes[node_id]
        tls = ClusterTLSConfig(cert=cert, key=key, ca=ca)
        return self.start_cluster_node(node_id, join, abort_if_join_fails=False, tls=tls)

    @inlineCallbacks
    def test_three_tls_nodes_forward_and_a_foreign_node_is_refused(self) -> Any:
        """Nodes with cluster certificates converge and forward; another CA's node never joins."""
        directory = Path(self.mktemp())
        certs = create_cluster_certs(directory / "cluster", ["n1", "n2", "n3"])
        foreign = create_cluster_certs(directory / "other", ["n4"])
        events: list[dict[str, Any]] = []
        record = cast(ILogObserver, events.append)
        globalLogPublisher.addObserver(record)
        self.addCleanup(globalLogPublisher.removeObserver, record)

        n1 = yield self.start_node("n1", certs, certs.ca)
        self.server = n1
        self.assertIsInstance(n1.gossip.transport, TLSTransport)
        seed = (n1.gossip.addr,)
        n2 = yield self.start_node("n2", certs, certs.ca, seed)
        n3 = yield self.start_node("n3", certs, certs.ca, seed)
        for node in (n1, n2, n3):
            for other in {"n1", "n2", "n3"} - {node.cluster.local.id}:
                yield wait_cluster(node.cluster, status_of(other, NodeStatus.ACTIVE))

        n3_sees = wait_cluster(n3.cluster, endpoint_on("n1", "my-ep"))
        yield self.listen("my-ep", server.Site(Echo()))
        yield n3_sees
        response = yield self.request(get(b"/via-n3", b"my-ep"), self.port_of("proxy", n3))
        self.assertEqual(response.status, 200)
        self.assertEqual(json.loads(response.body)["headers"]["x-piko-forward"], ["true"])

        # n4 trusts the cluster CA but its own certificate is from another CA.
        refused: Deferred[None] = Deferred()

        def watch(event: dict[str, Any]) -> None:
            if "refused peer" in event.get("log_format", "") and not refused.called:
                refused.callback(None)

        observer = cast(ILogObserver, watch)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        n4 = yield self.start_node("n4", foreign, certs.ca, seed)
        yield refused
        self.assertFalse(n4.ready and n4.gossip.state.live_nodes())
        for node in (n1, n2, n3):
            self.assertIsNone(node.cluster.node("n4"))
            self.assertIsNone(node.gossip.state.node("n4"))
        self.assertFalse(
            [e for e in events if "no cluster TLS configured" in e.get("log_format", "")]
        )

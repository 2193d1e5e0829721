# -*- test-case-name: piko.test.e2e.test_same_id_restart -*-
"""
A node restarted under the same id is routed to again at once (issue 11, fault 4).

Two nodes on real sockets; node ``s2`` has the endpoint's upstream.  ``s2``
is stopped gracefully (it leaves the cluster: ``s1`` holds it ``left``) and
started again under the same ``cluster.node_id``, as a Kubernetes
StatefulSet restarts a pod; its upstream reconnects.  Requests sent to
``s1`` must be forwarded to the new ``s2`` within about a second, not after
the minute the old incarnation's ``left`` record lives.
"""

from __future__ import annotations

import time
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.web import server

from piko.client import Upstream
from piko.cluster.nodes import ClusterState, NodeStatus
from piko.test.e2e.harness import E2ETestCase, reactor
from piko.test.e2e.test_gossip_cluster import status_of, wait_cluster
from piko.test.e2e.test_http import Echo, get

#: From the restarted node being up (joined) to ``s1`` forwarding to it.
REJOIN_BOUND = 3.0

#: Figures of the last run, for the report.
MEASURED: dict[str, float] = {}


def routes_to(node_id: str, endpoint_id: str) -> Any:
    def check(cluster: ClusterState) -> bool:
        node = cluster.lookup_endpoint(endpoint_id)
        return node is not None and node.id == node_id

    return check


class SameIdRestartTests(E2ETestCase):
    timeout = 30

    @inlineCallbacks
    def upstream_on(self, node: Any) -> Any:
        url = f"http://127.0.0.1:{self.port_of('upstream', node)}"
        listener = yield Upstream(reactor, url).listen("ep", server.Site(Echo()))
        self.addCleanup(listener.shutdown)
        return listener

    @inlineCallbacks
    def test_graceful_restart_under_same_id(self) -> Any:
        """After a graceful stop and a restart under the same id, ``s1`` forwards to it at once."""
        s1 = yield self.start_cluster_node("s1")
        s2 = yield self.start_cluster_node("s2", (s1.gossip.addr,))
        yield wait_cluster(s1.cluster, status_of("s2", NodeStatus.ACTIVE))
        listener = yield self.upstream_on(s2)
        yield wait_cluster(s1.cluster, routes_to("s2", "ep"))
        response = yield self.request(get(b"/before", b"ep"), self.port_of("proxy", s1))
        self.assertEqual(response.status, 200)

        yield listener.shutdown()
        yield s2.stopService()
        yield wait_cluster(s1.cluster, status_of("s2", NodeStatus.LEFT))

        started = time.monotonic()
        s2b = yield self.start_cluster_node("s2", (s1.gossip.addr,))
        joined = time.monotonic()
        yield self.upstream_on(s2b)
        routed = wait_cluster(s1.cluster, routes_to("s2", "ep"))
        routed.addTimeout(REJOIN_BOUND, reactor)
        yield routed
        rejoined = time.monotonic()
        response = yield self.request(get(b"/after", b"ep"), self.port_of("proxy", s1))
        self.assertEqual(response.status, 200)
        node = s1.cluster.node("s2")
        assert node is not None
        self.assertEqual(node.proxy_addr, f"127.0.0.1:{self.port_of('proxy', s2b)}")
        MEASURED.update(
            start_ms=(joined - started) * 1000, routable_after_start_ms=(rejoined - joined) * 1000
        )
        print(f"\nsame-id restart: {MEASURED}")

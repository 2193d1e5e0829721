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

from twisted.internet.defer import DeferredList, inlineCallbacks
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.web import server

from piko.client import Upstream
from piko.cluster.nodes import ClusterState, NodeStatus
from piko.server.service import PikoServerService
from piko.test.e2e.harness import E2ETestCase, reactor
from piko.test.e2e.test_cluster_failover import LoadBalancer
from piko.test.e2e.test_gossip_cluster import status_of, wait_cluster
from piko.test.e2e.test_http import Echo, get

#: From the restarted node being up (joined) to ``s1`` forwarding to it.
REJOIN_BOUND = 3.0

#: Figures of the last run, for the report.
MEASURED: dict[str, float] = {}


def knows_endpoint(endpoint_id: str) -> Any:
    def check(cluster: ClusterState) -> bool:
        return bool(cluster.local.endpoints.get(endpoint_id)) or (
            cluster.lookup_endpoint(endpoint_id) is not None
        )

    return check


def routes_to(node_id: str, endpoint_id: str) -> Any:
    def check(cluster: ClusterState) -> bool:
        node = cluster.lookup_endpoint(endpoint_id)
        return node is not None and node.id == node_id

    return check


class SameIdRestartTests(E2ETestCase):
    timeout = 60

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

    @inlineCallbacks
    def test_rolling_restart_with_fixed_ids_under_load(self) -> Any:
        """
        The tester's scenario: three nodes with fixed ids behind loopback load
        balancers, restarted one after another under steady load, each under
        its own id again.  No request fails, and each restarted node is
        active on its peers within :data:`REJOIN_BOUND` of starting.
        """
        ids = ["f1", "f2", "f3"]
        first = yield self.start_cluster_node("f1")
        seed = first.gossip.addr
        serving: list[PikoServerService] = [first]
        for node_id in ids[1:]:
            node = yield self.start_cluster_node(node_id, (seed,))
            serving.append(node)
        for node in serving:
            for other in set(ids) - {node.cluster.local.id}:
                yield wait_cluster(node.cluster, status_of(other, NodeStatus.ACTIVE))

        def backends(name: str) -> list[int]:
            return [self.port_of(name, n) for n in serving if name in n.ports]

        ports = []
        for name in ("upstream", "proxy"):
            balancer = LoadBalancer(lambda name=name: backends(name))  # type: ignore[misc]
            port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(balancer)
            self.addCleanup(port.stopListening)
            ports.append(port.getHost().port)
        upstream_port, proxy_port = ports
        agent = yield Upstream(reactor, f"http://127.0.0.1:{upstream_port}").listen(
            "ep", server.Site(Echo())
        )
        self.addCleanup(agent.shutdown)
        for node in serving:
            yield wait_cluster(node.cluster, knows_endpoint("ep"))

        sent = 0
        failures: list[str] = []
        restarting = True

        @inlineCallbacks
        def client(index: int) -> Any:
            nonlocal sent
            while restarting:
                sent += 1
                path = f"/c{index}/{sent}".encode()
                try:
                    d = self.request(get(path, b"ep"), proxy_port)
                    d.addTimeout(5.0, reactor)
                    response = yield d
                except Exception as error:
                    failures.append(f"{path.decode()}: {error!r}")
                    continue
                if response.status != 200:
                    failures.append(f"{path.decode()}: {response.status} {response.body!r}")

        clients = DeferredList([client(i) for i in range(2)], fireOnOneErrback=True)
        rejoins = []
        try:
            for node_id in ids:
                old = next(n for n in serving if n.cluster.local.id == node_id)
                serving.remove(old)
                yield old.stopService()
                for node in serving:
                    yield wait_cluster(node.cluster, status_of(node_id, NodeStatus.LEFT))
                began = time.monotonic()
                new = yield self.start_cluster_node(node_id, (serving[0].gossip.addr,))
                for node in serving:
                    active = wait_cluster(node.cluster, status_of(node_id, NodeStatus.ACTIVE))
                    active.addTimeout(REJOIN_BOUND, reactor)
                    yield active
                    yield wait_cluster(
                        new.cluster, status_of(node.cluster.local.id, NodeStatus.ACTIVE)
                    )
                rejoins.append(time.monotonic() - began)
                yield wait_cluster(new.cluster, knows_endpoint("ep"))
                serving.append(new)
        finally:
            restarting = False
            yield clients
        yield agent.shutdown()
        self.assertEqual(failures, [], f"{len(failures)} of {sent} requests failed")
        MEASURED.update(rolling_requests=sent, slowest_rejoin_ms=max(rejoins) * 1000)
        print(f"\nrolling restart with fixed ids: {MEASURED}")

# -*- test-case-name: piko.test.e2e.test_rolling_restart -*-
"""
A rolling restart of all three nodes under steady load, with no failed request.

Three nodes sit behind two loopback TCP load balancers (as Kubernetes
Services would): one in front of the upstream ports, through which an SDK
agent connects, and one in front of the proxy ports, which sends each
client connection to a node that is ready.  While two clients send
requests in a loop through the proxy balancer, nodes 1, 2 and 3 are
restarted one after another: taken out of both balancers (``/ready`` turns
503), drained (:mod:`piko.server.service`), and replaced by a fresh node
that joins the others; the next one goes once the new node is active and
knows where the endpoint is.  Every request must succeed.
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

#: Figures of the last run, for the report.
MEASURED: dict[str, float] = {}

#: The bound on one request, and on the whole test.
REQUEST_DEADLINE = 5.0
TEST_BOUND = 60.0

#: Clients sending requests in a loop, each one at a time.
CLIENTS = 2


def _knows_endpoint(endpoint_id: str) -> Any:
    def check(cluster: ClusterState) -> bool:
        return bool(cluster.local.endpoints.get(endpoint_id)) or (
            cluster.lookup_endpoint(endpoint_id) is not None
        )

    return check


class RollingRestartTests(E2ETestCase):
    timeout = TEST_BOUND

    @inlineCallbacks
    def test_rolling_restart_under_load(self) -> Any:
        """Restarting nodes 1, 2 and 3 in turn under steady load fails no request."""
        n1 = yield self.start_cluster_node("r1")
        n2 = yield self.start_cluster_node("r2", (n1.gossip.addr,))
        n3 = yield self.start_cluster_node("r3", (n1.gossip.addr,))
        #: The nodes in service, in both balancers.
        serving: list[PikoServerService] = [n1, n2, n3]
        for node in serving:
            for other in {"r1", "r2", "r3"} - {node.cluster.local.id}:
                yield wait_cluster(node.cluster, status_of(other, NodeStatus.ACTIVE))

        def backends(name: str) -> list[int]:
            return [self.port_of(name, n) for n in serving if name in n.ports]

        upstream_lb = LoadBalancer(lambda: backends("upstream"))
        proxy_lb = LoadBalancer(lambda: backends("proxy"))
        ports = []
        for balancer in (upstream_lb, proxy_lb):
            port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(balancer)
            self.addCleanup(port.stopListening)
            ports.append(port.getHost().port)
        upstream_port, proxy_port = ports

        agent = yield Upstream(reactor, f"http://127.0.0.1:{upstream_port}").listen(
            "my-ep", server.Site(Echo())
        )
        self.addCleanup(agent.shutdown)
        for node in serving:
            yield wait_cluster(node.cluster, _knows_endpoint("my-ep"))

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
                    d = self.request(get(path, b"my-ep"), proxy_port)
                    d.addTimeout(REQUEST_DEADLINE, reactor)
                    response = yield d
                except Exception as error:
                    failures.append(f"{path.decode()}: {error!r}")
                    continue
                if response.status != 200:
                    failures.append(f"{path.decode()}: {response.status} {response.body!r}")

        started = time.monotonic()
        clients = DeferredList([client(i) for i in range(CLIENTS)], fireOnOneErrback=True)
        restarts = []
        try:
            for index in range(3):
                old = serving[0]
                began = time.monotonic()
                serving.remove(old)
                yield old.stopService()
                new = yield self.start_cluster_node(f"r{index + 1}b", (serving[0].gossip.addr,))
                for node in serving:
                    yield wait_cluster(
                        node.cluster, status_of(new.cluster.local.id, NodeStatus.ACTIVE)
                    )
                    yield wait_cluster(
                        new.cluster, status_of(node.cluster.local.id, NodeStatus.ACTIVE)
                    )
                yield wait_cluster(new.cluster, _knows_endpoint("my-ep"))
                serving.append(new)
                restarts.append(time.monotonic() - began)
        finally:
            restarting = False
            yield clients
        elapsed = time.monotonic() - started

        yield agent.shutdown()
        self.assertEqual(failures, [], f"{len(failures)} of {sent} requests failed")
        self.assertEqual(sum(n.registry.upstream_count for n in serving), 1)
        self.assertIn(agent.connections, (3, 4))  # it moved off each node it was on
        MEASURED.update(
            requests=sent,
            failed_requests=len(failures),
            seconds=elapsed,
            requests_per_second=sent / elapsed,
            slowest_restart_ms=max(restarts) * 1000,
        )
        print(f"\nrolling restart under load: {MEASURED}")

# -*- test-case-name: piko.test.e2e.test_cluster_retry -*-
"""
A request in flight on a node that dies, on loopback: two nodes, an SDK agent on node B
(through a small TCP balancer in front of the upstream ports), requests entering at node A.

Node B crashes (in process: every port and connection dropped, no drain, no GoAway, no
gossip leave) while the local service holds a request that B forwarded to it.  The agent
reconnects through the balancer to node A.  A ``GET`` the client sent to A is then sent again
by A, to the agent that is now local, and the client gets 200 (Go, and we before, answered
502 ``upstream unreachable``); a ``POST`` in the same place may have reached the service, so
it gets that 502 and is not sent twice (:mod:`piko.server.retry`).
"""

from __future__ import annotations

import time
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.web import resource, server
from twisted.web.server import NOT_DONE_YET

from piko.client import Upstream
from piko.cluster.nodes import NodeStatus
from piko.test.e2e.harness import E2ETestCase, Response, reactor
from piko.test.e2e.test_cluster_failover import LoadBalancer
from piko.test.e2e.test_gossip_cluster import endpoint_on, status_of, wait_cluster
from piko.test.e2e.test_http import get
from piko.test.e2e.test_tls_cluster_kill import crash

#: Figures of the last run, for the report.
MEASURED: dict[str, float] = {}


class HoldFirst(resource.Resource):
    """Holds the first request unanswered (its node dies under it); answers the later ones."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[bytes, bytes]] = []
        self.first_arrived: Deferred[None] = Deferred()

    def render(self, request: Any) -> Any:
        self.calls.append((request.method, request.content.read()))
        if len(self.calls) == 1:
            self.first_arrived.callback(None)
            return NOT_DONE_YET
        return b"call %d" % len(self.calls)


class NodeDiesUnderRequestTests(E2ETestCase):
    timeout = 30

    @inlineCallbacks
    def start_pair(self, service: HoldFirst) -> Any:
        """Nodes A and B, the agent on B; returns ``(a, b)`` once A routes the endpoint to B."""
        a = yield self.start_cluster_node("a")
        b = yield self.start_cluster_node("b", (a.gossip.addr,))
        for node, other in ((a, "b"), (b, "a")):
            yield wait_cluster(node.cluster, status_of(other, NodeStatus.ACTIVE))
        ports = [self.port_of("upstream", b), self.port_of("upstream", a)]
        balancer = LoadBalancer(lambda: ports)  # B first; skipped once it refuses
        lb = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(balancer)
        self.addCleanup(lb.stopListening)
        on_b = wait_cluster(a.cluster, endpoint_on("b", "my-ep"))
        agent = yield Upstream(reactor, f"http://127.0.0.1:{lb.getHost().port}").listen(
            "my-ep", server.Site(service)
        )
        self.addCleanup(agent.shutdown)
        yield on_b
        self.assertEqual(b.registry.endpoints(), {"my-ep": 1})
        return a, b

    @inlineCallbacks
    def kill_under_request(self, raw: bytes) -> Any:
        """
        Send ``raw`` to A and crash B once the service holds it.

        :return: the response, the service, seconds from the crash to the answer, and A.
        """
        service = HoldFirst()
        a, b = yield self.start_pair(service)
        answer = self.request(raw, self.port_of("proxy", a))
        yield service.first_arrived
        started = time.monotonic()
        yield crash(b)
        response: Response = yield answer
        elapsed = time.monotonic() - started
        return response, service, elapsed, a

    @inlineCallbacks
    def test_get_in_flight_on_a_dying_node_answered_by_the_agent_that_moved(self) -> Any:
        """A GET forwarded to B, in flight when B dies, is sent again by A and gets 200."""
        response, service, elapsed, a = yield self.kill_under_request(get(b"/slow"))
        self.assertEqual((response.status, response.body), (200, b"call 2"))
        self.assertEqual(service.calls, [(b"GET", b""), (b"GET", b"")])
        self.assertEqual(a.registry.endpoints(), {"my-ep": 1})
        self.assertLess(elapsed, 5.0)
        MEASURED.update(get_answered_after_ms=elapsed * 1000)
        print(f"\nnode died under a GET: {MEASURED}")

    @inlineCallbacks
    def test_post_in_flight_on_a_dying_node_not_sent_twice(self) -> Any:
        """A POST in the same place may have reached the service: Go's 502, sent once."""
        raw = (
            b"POST /slow HTTP/1.1\r\nHost: 127.0.0.1\r\nx-piko-endpoint: my-ep\r\n"
            b"Content-Length: 5\r\n\r\nhello"
        )
        response, service, _, _ = yield self.kill_under_request(raw)
        self.assertEqual(response.status, 502)
        self.assertEqual(response.body, b'{"error":"upstream unreachable"}\n')
        self.assertEqual(service.calls, [(b"POST", b"hello")])

"""Two nodes on loopback: one without the upstream forwards one hop to the node that has it."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.internet.protocol import Factory
from twisted.web import server

from piko.cluster.nodes import Node
from piko.server.service import make_server_service
from piko.test.e2e.harness import E2ETestCase, reactor, server_config
from piko.test.e2e.test_http import Echo, get
from piko.test.e2e.test_tcp_ws import Collector
from piko.test.e2e.test_tcp_ws import Echo as TCPEcho


class ForwardingTests(E2ETestCase):
    @inlineCallbacks
    def start_pair(self) -> Any:
        owner = yield self.start_server()
        other = make_server_service(server_config(), reactor)
        other.startService()
        self.addCleanup(lambda: other.stopService() if other.running else None)
        yield other.started
        owner_node = Node(
            "owner",
            proxy_addr=f"127.0.0.1:{self.port_of('proxy', owner)}",
            admin_addr=f"127.0.0.1:{self.port_of('admin', owner)}",
        )
        other.cluster.add_node(owner_node)
        return owner, other

    @inlineCallbacks
    def test_http_forwarded_one_hop(self) -> Any:
        """A request to the node without the upstream is answered by the owner's upstream."""
        owner, other = yield self.start_pair()
        yield self.listen("my-ep", server.Site(Echo()))
        other.cluster.update_endpoint("owner", "my-ep", 1)
        response = yield self.request(get(b"/via-other"), self.port_of("proxy", other))
        self.assertEqual(response.status, 200)
        seen = json.loads(response.body)
        self.assertEqual(seen["uri"], "/via-other")
        self.assertEqual(seen["headers"]["x-piko-forward"], ["true"])
        self.assertEqual(seen["headers"]["x-forwarded-for"], ["127.0.0.1, 127.0.0.1"])
        self.assertEqual(
            other.metrics.remote_requests_total.labels(node_id="owner")._value.get(), 1
        )

    @inlineCallbacks
    def test_tcp_forwarded_one_hop(self) -> Any:
        """The TCP route on the node without the upstream relays the WebSocket to the owner."""
        owner, other = yield self.start_pair()
        yield self.listen("tcp-ep", Factory.forProtocol(TCPEcho))
        other.cluster.update_endpoint("owner", "tcp-ep", 1)
        from piko.client import Dialer

        dialer = Dialer(reactor, f"http://127.0.0.1:{self.port_of('proxy', other)}")
        client = yield dialer.dial("tcp-ep", Factory.forProtocol(Collector))
        client.transport.write(b"two nodes")
        echoed = yield client.wait_for(9)
        self.assertEqual(echoed, b"two nodes")
        client.transport.loseConnection()
        yield client.lost

    @inlineCallbacks
    def test_gone_node_502_then_no_route(self) -> Any:
        """A route to a node that is gone is answered 502 once, then dropped: 'no available'."""
        owner, other = yield self.start_pair()
        other.cluster.add_node(Node("ghost", proxy_addr="127.0.0.1:1", endpoints={"ep": 1}))
        first = yield self.request(get(b"/", b"ep"), self.port_of("proxy", other))
        self.assertEqual((first.status, first.body), (502, b'{"error":"upstream unreachable"}\n'))
        second = yield self.request(get(b"/", b"ep"), self.port_of("proxy", other))
        self.assertEqual(second.body, b'{"error":"no available upstreams"}\n')

    @inlineCallbacks
    def test_status_lists_both_nodes(self) -> Any:
        """The status API lists the local node first, then the others, in Go's shape."""
        owner, other = yield self.start_pair()
        other.cluster.update_endpoint("owner", "my-ep", 2)
        response = yield self.request(
            b"GET /status/cluster/nodes HTTP/1.1\r\nHost: x\r\n\r\n", self.port_of("admin", other)
        )
        nodes = json.loads(response.body)
        self.assertEqual([n["id"] for n in nodes], ["node-e2e", "owner"])
        self.assertEqual((nodes[1]["endpoints"], nodes[1]["upstreams"]), (1, 2))

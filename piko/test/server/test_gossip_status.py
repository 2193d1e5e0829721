"""
The admin port's gossip status routes against Go's recorded answers
(``interop/gossip/admin-snapshots``), and ``?forward=`` routing.
"""

from __future__ import annotations

import json

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from piko.cluster.codec import DeltaEntry, Entry
from piko.cluster.failure_detector import AccrualFailureDetector
from piko.cluster.nodes import ClusterState, Node
from piko.cluster.state import GossipState
from piko.server.admin import (
    EMPTY_NOT_FOUND,
    AdminResponse,
    AdminRoutes,
    ForwardTo,
    LocalNode,
    go_time,
)
from piko.server.metrics import ServerMetrics
from piko.server.registry import UpstreamRegistry
from piko.test.interop import interop_dir

ADDRS = {
    "node-1": ("127.0.0.1:31503", "127.0.0.1:31500", "127.0.0.1:31502"),
    "node-2": ("127.0.0.1:31513", "127.0.0.1:31510", "127.0.0.1:31512"),
}


def build(local: str, snapshot: dict[str, dict[str, object]]) -> GossipState:
    """The gossip state of ``local`` at the snapshot, by replaying what Go's nodes did."""
    clock = Clock()
    state = GossipState(local, ADDRS[local][0], clock, AccrualFailureDetector(clock, 0.2))
    state.upsert_local("proxy_addr", ADDRS[local][1])
    state.upsert_local("admin_addr", ADDRS[local][2])
    for node_id in ADDRS:
        key = f"{local.replace('-', '')} GET /status/gossip/nodes/{node_id}"
        body = json.loads(snapshot[key]["body_exact"])  # type: ignore[arg-type]
        entries = [Entry(**e) for e in body["Entries"] or ()]
        if node_id == local:
            for entry in entries[2:]:
                if entry.deleted:
                    state.upsert_local(entry.key, "1")
                    state.delete_local(entry.key)
                else:
                    state.upsert_local(entry.key, entry.value)
        else:
            state.apply_delta([DeltaEntry(node_id, ADDRS[node_id][0], tuple(entries))])
    return state


class GossipStatusSnapshotTests(SynchronousTestCase):
    def setUp(self) -> None:
        # Skips, as every interop replay does, when the transcripts are not next to this checkout.
        self.snapshots = interop_dir() / "gossip" / "admin-snapshots"

    def check(self, name: str, ignore_expiry: bool = False) -> None:
        snapshot = json.loads((self.snapshots / f"{name}.json").read_text())
        checked = 0
        for local in ADDRS:
            prefix = local.replace("-", "") + " GET "
            if not any(k.startswith(prefix) for k in snapshot):
                continue
            state = build(local, snapshot)
            routes = AdminRoutes(
                LocalNode(local, ADDRS[local][1], ADDRS[local][2]),
                UpstreamRegistry(),
                lambda: True,
                gossip=lambda state=state: state,  # type: ignore[misc]
            )
            for key, recorded in snapshot.items():
                if not key.startswith(prefix) or "/status/gossip/" not in key:
                    continue
                response = routes.handle(b"GET", key[len(prefix) :].encode())
                assert isinstance(response, AdminResponse)
                body = response.body.decode()
                expected = recorded["body_exact"]
                if ignore_expiry:
                    expected = _zero_expiry(expected)
                    body = _zero_expiry(body)
                self.assertEqual((response.status, body), (recorded["status"], expected), key)
                checked += 1
        self.assertGreater(checked, 0)

    def test_after_join(self) -> None:
        """Two joined nodes: both nodes' answers are Go's bytes."""
        self.check("1-after-join")

    def test_agent_connected(self) -> None:
        """With an endpoint on node 1: Go's bytes."""
        self.check("2-agent-connected")

    def test_agent_disconnected(self) -> None:
        """After the endpoint's tombstone: Go's bytes."""
        self.check("3-agent-disconnected")

    def test_after_node2_left(self) -> None:
        """After node 2 left: Go's bytes except the expiry instant (wall time of the recording)."""
        self.check("4-after-node2-left", ignore_expiry=True)


def _zero_expiry(text: str) -> str:
    value = json.loads(text)
    for item in value if isinstance(value, list) else [value]:
        if item["expiry"] != "0001-01-01T00:00:00Z":
            item["expiry"] = "set"
    return json.dumps(value)


class GoTimeTests(SynchronousTestCase):
    def test_zero_and_fraction(self) -> None:
        """Go's zero time, trailing zeros trimmed, whole seconds without a fraction."""
        self.assertEqual(go_time(None), "0001-01-01T00:00:00Z")
        self.assertEqual(go_time(1_700_000_000.0), "2023-11-14T22:13:20Z")
        self.assertEqual(go_time(1_700_000_000.25), "2023-11-14T22:13:20.25Z")
        self.assertEqual(go_time(1.000000001), "1970-01-01T00:00:01.000000001Z")


class ForwardRoutingTests(SynchronousTestCase):
    def setUp(self) -> None:
        cluster = ClusterState(Node("n1"))
        cluster.add_node(Node("n2", admin_addr="10.0.0.2:8002", proxy_addr="10.0.0.2:8000"))
        self.routes = AdminRoutes(
            LocalNode("n1", "", ""), UpstreamRegistry(), lambda: True, cluster=cluster
        )

    def test_forward_known_node(self) -> None:
        """``?forward=`` naming another node asks the port to relay to its admin address."""
        self.assertEqual(
            self.routes.handle(b"GET", b"/status/cluster/nodes?forward=n2"),
            ForwardTo("n2", "10.0.0.2:8002"),
        )

    def test_forward_unknown_or_local(self) -> None:
        """An unknown node is 404 with no body; the local id is served here."""
        self.assertEqual(self.routes.handle(b"GET", b"/health?forward=zz"), EMPTY_NOT_FOUND)
        self.assertEqual(self.routes.handle(b"GET", b"/health?forward=n1"), AdminResponse(200))

    def test_unknown_gossip_node(self) -> None:
        """An unknown gossip node is 404 with no body."""
        clock = Clock()
        state = GossipState("n1", "a:1", clock, AccrualFailureDetector(clock, 0.2))
        self.routes.gossip = lambda: state
        self.assertEqual(self.routes.handle(b"GET", b"/status/gossip/nodes/zz"), EMPTY_NOT_FOUND)


class ClusterMetricsTests(SynchronousTestCase):
    def test_cluster_nodes_gauge(self) -> None:
        """piko_cluster_nodes counts nodes per status, the local node as active."""
        metrics = ServerMetrics()
        cluster = ClusterState(Node("n1"))
        metrics.watch_cluster(cluster)
        cluster.add_node(Node("n2"))
        text = metrics.render()[1].decode()
        self.assertIn('piko_cluster_nodes{status="active"} 2.0', text)
        self.assertIn("piko_gossip_packet_bytes_inbound_total 0.0", text)

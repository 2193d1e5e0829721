"""Tests for :mod:`piko.cluster.nodes`."""

from __future__ import annotations

import random
from collections import Counter

from twisted.trial.unittest import SynchronousTestCase

from piko.cluster.nodes import ClusterState, Node, NodeStatus


def cluster() -> ClusterState:
    return ClusterState(Node("n1", proxy_addr="10.0.0.1:8000"), random.Random(7))


class LookupTests(SynchronousTestCase):
    def test_no_remote_node(self) -> None:
        """Without another node holding the endpoint, lookup finds nothing."""
        state = cluster()
        state.set_local_endpoint("ep", 2)
        self.assertIsNone(state.lookup_endpoint("ep"))

    def test_only_active_nodes_with_upstreams(self) -> None:
        """Unreachable and left nodes, and nodes without the endpoint, are never chosen."""
        state = cluster()
        state.add_node(Node("n2", proxy_addr="a:1", endpoints={"ep": 1}))
        state.add_node(Node("n3", proxy_addr="b:1", endpoints={"other": 4}))
        state.add_node(Node("n4", proxy_addr="c:1", endpoints={"ep": 9}))
        state.update_status("n4", NodeStatus.UNREACHABLE)
        state.add_node(Node("n5", proxy_addr="d:1", endpoints={"ep": 9}, status=NodeStatus.LEFT))
        self.assertEqual({state.lookup_endpoint("ep").id for _ in range(50)}, {"n2"})

    def test_weighted_by_upstream_count(self) -> None:
        """A node with three times the upstreams gets about three times the requests."""
        state = cluster()
        state.add_node(Node("n2", proxy_addr="a:1", endpoints={"ep": 1}))
        state.add_node(Node("n3", proxy_addr="b:1", endpoints={"ep": 3}))
        picks = Counter(state.lookup_endpoint("ep").id for _ in range(4000))
        ratio = picks["n3"] / picks["n2"]
        self.assertTrue(2.6 < ratio < 3.4, ratio)

    def test_counts_follow_updates(self) -> None:
        """A count dropping to zero removes the endpoint from the node."""
        state = cluster()
        state.add_node(Node("n2", proxy_addr="a:1"))
        state.update_endpoint("n2", "ep", 2)
        self.assertEqual(state.lookup_endpoint("ep").id, "n2")
        state.update_endpoint("n2", "ep", 0)
        self.assertIsNone(state.lookup_endpoint("ep"))
        self.assertEqual(state.node("n2").endpoints, {})

    def test_local_first_and_local_alias(self) -> None:
        """The node list starts with this node, which 'local' also names."""
        state = cluster()
        state.add_node(Node("n2"))
        self.assertEqual([node.id for node in state.nodes()], ["n1", "n2"])
        self.assertIs(state.node("local"), state.local)

    def test_observers_told(self) -> None:
        """Observers hear about every change, not about no-ops."""
        state = cluster()
        seen: list[int] = []
        state.observe(lambda s: seen.append(len(s.nodes())))
        state.add_node(Node("n2"))
        state.update_status("n2", NodeStatus.ACTIVE)
        state.remove_node("n2")
        state.remove_node("n2")
        self.assertEqual(seen, [2, 1])

# -*- test-case-name: piko.test.cluster.test_nodes -*-
"""
The cluster as the proxy sees it: nodes, their status, addresses and endpoint counts.

This is Go Piko's ``server/cluster`` state, kept apart from the gossip state
machine that feeds it (:mod:`piko.cluster.state`): gossip reports nodes
joining, leaving, becoming unreachable and their ``endpoint:<id>`` counts;
this table answers "which other node can serve endpoint E".

Unlike Go, which takes the first node found (effectively random), a remote
node is chosen with probability proportional to its upstream count for the
endpoint, so load follows capacity.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Container
from enum import StrEnum

from attrs import define, field


class NodeStatus(StrEnum):
    """A node's status, with Go's JSON values."""

    ACTIVE = "active"
    UNREACHABLE = "unreachable"
    LEFT = "left"


@define
class Node:
    """One node: identity, status, advertised addresses and upstream counts per endpoint."""

    id: str
    status: NodeStatus = NodeStatus.ACTIVE
    proxy_addr: str = ""
    admin_addr: str = ""
    endpoints: dict[str, int] = field(factory=dict)

    @property
    def upstream_count(self) -> int:
        """All upstreams of the node, every endpoint together."""
        return sum(self.endpoints.values())


#: Called with the table after any change (metrics).
ChangeObserver = Callable[["ClusterState"], object]


class ClusterState:
    """
    The node table of one node.

    :param local: this node; its endpoint counts are kept by :meth:`set_local_endpoint`.
    :param rng: the randomness of weighted selection (injected in tests).
    """

    def __init__(self, local: Node, rng: random.Random | None = None) -> None:
        self.local = local
        self._remote: dict[str, Node] = {}
        self._rng = rng or random.Random()
        self._observers: list[ChangeObserver] = []

    # -- reading ------------------------------------------------------------

    def nodes(self) -> list[Node]:
        """Every node, this one first (as Go's status API lists them)."""
        return [self.local, *self._remote.values()]

    def node(self, node_id: str) -> Node | None:
        """The node with ``node_id`` (``"local"`` names this node), or ``None``."""
        if node_id in ("local", self.local.id):
            return self.local
        return self._remote.get(node_id)

    def lookup_endpoint(self, endpoint_id: str, exclude: Container[str] = ()) -> Node | None:
        """
        A remote active node with upstreams for ``endpoint_id``, weighted by their count.

        :param exclude: ids of nodes not to pick (a request's retry skips the nodes that
            already failed it).
        :return: ``None`` when no other node has one.
        """
        candidates = [
            (node, node.endpoints.get(endpoint_id, 0))
            for node in self._remote.values()
            if node.status is NodeStatus.ACTIVE and node.proxy_addr and node.id not in exclude
        ]
        candidates = [(node, count) for node, count in candidates if count > 0]
        if not candidates:
            return None
        if len(candidates) == 1:
            return candidates[0][0]
        pick = self._rng.uniform(0, sum(count for _, count in candidates))
        for node, count in candidates:
            pick -= count
            if pick < 0:
                return node
        return candidates[-1][0]

    def active_count(self) -> int:
        """Active nodes, this one included."""
        return sum(1 for node in self.nodes() if node.status is NodeStatus.ACTIVE)

    # -- changes ------------------------------------------------------------

    def set_local_endpoint(self, endpoint_id: str, count: int) -> None:
        """This node now has ``count`` upstreams for ``endpoint_id`` (0 removes it)."""
        _set_count(self.local, endpoint_id, count)
        self._changed()

    def add_node(self, node: Node) -> None:
        """A remote node became known (with both of its addresses)."""
        if node.id != self.local.id:
            self._remote[node.id] = node
            self._changed()

    def remove_node(self, node_id: str) -> None:
        """A remote node expired; removing an unknown one does nothing."""
        if self._remote.pop(node_id, None) is not None:
            self._changed()

    def update_status(self, node_id: str, status: NodeStatus) -> None:
        """A remote node left, became unreachable, or came back."""
        node = self._remote.get(node_id)
        if node is not None and node.status is not status:
            node.status = status
            self._changed()

    def update_endpoint(self, node_id: str, endpoint_id: str, count: int) -> None:
        """A remote node's upstream count for an endpoint changed (0 removes it)."""
        node = self._remote.get(node_id)
        if node is not None:
            _set_count(node, endpoint_id, count)
            self._changed()

    def observe(self, observer: ChangeObserver) -> None:
        """Call ``observer(self)`` after every change."""
        self._observers.append(observer)

    def _changed(self) -> None:
        for observer in self._observers:
            observer(self)


def _set_count(node: Node, endpoint_id: str, count: int) -> None:
    if count > 0:
        node.endpoints[endpoint_id] = count
    else:
        node.endpoints.pop(endpoint_id, None)

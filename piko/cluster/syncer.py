# -*- test-case-name: piko.test.cluster.test_syncer -*-
"""
What a Piko server gossips, and what it learns from gossip (Go's ``server/gossip/syncer.go``).

The local node publishes ``proxy_addr`` and ``admin_addr`` once, and
``endpoint:<id>`` = its upstream count for each endpoint (a tombstone at 0).
Remote nodes' keys feed the proxy's node table
(:class:`~piko.cluster.nodes.ClusterState`): a node stays *pending* until
both of its addresses are known (it cannot be routed to before), then is
added with whatever status it has by then.
"""

from __future__ import annotations

from attrs import define, field
from twisted.logger import Logger
from zope.interface import implementer

from piko.cluster.nodes import ClusterState, Node, NodeStatus
from piko.cluster.state import GossipState, IGossipWatcher

__all__ = ["ENDPOINT_PREFIX", "MAX_ENDPOINT_ID_BYTES", "Syncer"]

#: The key prefix of an endpoint's upstream count.
ENDPOINT_PREFIX = "endpoint:"

#: The longest endpoint id (in UTF-8 bytes) an upstream may register; the
#: upstream route answers 400 to a longer one.  Go has no bound, and with its
#: default 1400-byte gossip packets an id of about 1,250 bytes or more makes
#: an ``endpoint:<id>`` entry that fits in no packet, so that node's later changes never reach
#: its peers.  We carry such deltas over TCP instead, but a bound keeps the
#: common path on UDP with room to spare: with 256 bytes an entry is about 320
#: bytes, so even with 64-byte node ids and IPv6 addresses in both headers
#: (about 290 bytes) three fit in one default packet.  256 is also four times
#: the longest DNS label (63), the most an id routed by the ``Host`` subdomain
#: can be; longer ids only come through the ``x-piko-endpoint`` header.
MAX_ENDPOINT_ID_BYTES = 256


def _count(value: str) -> int | None:
    try:
        return int(value, 10)
    except ValueError:
        return None


@implementer(IGossipWatcher)
@define
class Syncer:
    """
    Keeps the local gossip state and the cluster node table in step.

    :ivar cluster: the node table fed by remote nodes' gossip.
    :ivar state: the gossip state the local keys are written to, once bound.
    """

    log = Logger(namespace="gossip.syncer")

    cluster: ClusterState
    state: GossipState | None = None
    _pending: dict[str, Node] = field(init=False, factory=dict)

    @property
    def local_id(self) -> str:
        return self.cluster.local.id

    # -- local -> gossip ---------------------------------------------------

    def sync(self, state: GossipState, proxy_addr: str, admin_addr: str) -> None:
        """Publish our addresses and current endpoint counts; follow them from now on."""
        self.state = state
        state.upsert_local("proxy_addr", proxy_addr)
        state.upsert_local("admin_addr", admin_addr)
        for endpoint_id, count in self.cluster.local.endpoints.items():
            self.local_endpoint_changed(endpoint_id, count)

    def local_endpoint_changed(self, endpoint_id: str, count: int) -> None:
        """The registry's count for ``endpoint_id`` changed (an ``observe`` callback)."""
        if self.state is None:
            return
        key = ENDPOINT_PREFIX + endpoint_id
        if count > 0:
            self.state.upsert_local(key, str(count))
        else:
            self.state.delete_local(key)

    # -- gossip -> cluster -------------------------------------------------

    def _known(self, node_id: str) -> Node | None:
        node = self.cluster.node(node_id)
        return None if node is None or node is self.cluster.local else node

    def on_join(self, node_id: str) -> None:
        """Nothing until the node's addresses arrive."""

    def on_upsert_key(self, node_id: str, key: str, value: str) -> None:
        if node_id == self.local_id:
            return
        if self._known(node_id) is not None:
            if key.startswith(ENDPOINT_PREFIX):
                count = _count(value)
                if count is not None:
                    self.cluster.update_endpoint(node_id, key[len(ENDPOINT_PREFIX) :], count)
            # proxy_addr and admin_addr are immutable: a re-versioned copy changes nothing.
            return
        node = self._pending.setdefault(node_id, Node(node_id))
        if key == "proxy_addr":
            node.proxy_addr = value
        elif key == "admin_addr":
            node.admin_addr = value
        elif key.startswith(ENDPOINT_PREFIX):
            count = _count(value)
            if count is not None and count > 0:
                node.endpoints[key[len(ENDPOINT_PREFIX) :]] = count
        if node.proxy_addr and node.admin_addr:
            del self._pending[node_id]
            self.log.info("node joined", node_id=node_id)
            self.cluster.add_node(node)

    def on_delete_key(self, node_id: str, key: str) -> None:
        if node_id == self.local_id or not key.startswith(ENDPOINT_PREFIX):
            return
        endpoint_id = key[len(ENDPOINT_PREFIX) :]
        if self._known(node_id) is not None:
            self.cluster.update_endpoint(node_id, endpoint_id, 0)
        elif node_id in self._pending:
            self._pending[node_id].endpoints.pop(endpoint_id, None)

    def _status(self, node_id: str, status: NodeStatus) -> None:
        if node_id == self.local_id:
            return
        if self._known(node_id) is not None:
            self.cluster.update_status(node_id, status)
        elif node_id in self._pending:
            self._pending[node_id].status = status

    def on_leave(self, node_id: str) -> None:
        self._status(node_id, NodeStatus.LEFT)

    def on_unreachable(self, node_id: str) -> None:
        self._status(node_id, NodeStatus.UNREACHABLE)

    def on_reachable(self, node_id: str) -> None:
        self._status(node_id, NodeStatus.ACTIVE)

    def on_expired(self, node_id: str) -> None:
        if node_id == self.local_id:
            return
        self._pending.pop(node_id, None)
        self.cluster.remove_node(node_id)

    def pending(self) -> list[str]:
        """The ids of nodes whose addresses are not both known yet."""
        return list(self._pending)

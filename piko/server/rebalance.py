# -*- test-case-name: piko.test.server.test_rebalance -*-
"""
Upstream rebalancing (Go's ``upstream.Server.Rebalance``, reference §4.7).

Once a second, when ``threshold`` is not 0, a node with clearly more upstream
connections than the cluster's average sheds a few of them; their agents
reconnect, through the load balancer, to some other node.

The decision is sans-IO (:func:`sessions_to_shed`); :class:`Rebalancer`
runs it on an injected clock and sheds through a callback.  Unlike Go, which
counts every known node in its "is there a cluster at all" check (so a
two-node cluster whose peer is unreachable or has left still sheds, onto
nothing), only **active** nodes count, in that check as in the average.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from piko.cluster.nodes import ClusterState, Node, NodeStatus
from piko.config import RebalanceConfig

#: Go's rebalance period, in seconds.
REBALANCE_INTERVAL = 1.0


def sessions_to_shed(local: int, nodes: Iterable[Node], config: RebalanceConfig) -> int:
    """
    How many local upstream sessions to close now.

    :param local: this node's upstream sessions, every endpoint together.
    :param nodes: every node of the cluster, this one included (its
        endpoint counts must add up to ``local``).
    :param config: threshold, shed rate and minimum connections.
    :return: 0 unless more than one node is active, ``local`` is at least
        ``min_conns`` (and not 0), and ``(local - avg) / avg`` reaches
        ``threshold``, where ``avg`` is the integer mean (as Go) of the
        upstream counts over the active nodes; then ``local * balance``
        capped at ``ceil(avg * shed_rate)``.
    """
    if config.threshold == 0 or local == 0 or local < config.min_conns:
        return 0
    active = [node for node in nodes if node.status is NodeStatus.ACTIVE]
    if len(active) <= 1:
        return 0
    avg = sum(node.upstream_count for node in active) // len(active)
    if avg == 0:
        # Go divides by zero here and ends up capping the shed at ceil(0) = 0.
        return 0
    balance = (local - avg) / avg
    if balance < config.threshold:
        return 0
    return min(int(local * balance), math.ceil(avg * config.shed_rate))


class Rebalancer:
    """
    Runs :func:`sessions_to_shed` every :data:`REBALANCE_INTERVAL` on ``clock``.

    :param clock: the reactor's time.
    :param cluster: the node table; its local node's counts are the local upstreams.
    :param config: the ``upstream.rebalance`` settings; a 0 threshold disables it.
    :param shed: closes that many local upstream sessions.
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        cluster: ClusterState,
        config: RebalanceConfig,
        shed: Callable[[int], object],
    ) -> None:
        self.cluster = cluster
        self.config = config
        self._shed = shed
        self._loop = LoopingCall(self.rebalance)
        self._loop.clock = clock

    @property
    def running(self) -> bool:
        """Whether the periodic check is scheduled."""
        return self._loop.running

    def start(self) -> None:
        """Check every second from now on (nothing when the threshold is 0)."""
        if self.config.threshold != 0 and not self._loop.running:
            self._loop.start(REBALANCE_INTERVAL, now=False)

    def stop(self) -> None:
        """Stop checking."""
        if self._loop.running:
            self._loop.stop()

    def rebalance(self) -> None:
        """Shed what :func:`sessions_to_shed` says, once."""
        local = self.cluster.local.upstream_count
        count = sessions_to_shed(local, self.cluster.nodes(), self.config)
        if count > 0:
            self.log.info("rebalance; shedding connections", shedding=count, local_conns=local)
            self._shed(count)

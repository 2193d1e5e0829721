# -*- test-case-name: piko.test.server.test_rebalance -*-
"""Tests for :mod:`piko.server.rebalance` and shedding upstream sessions."""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from piko.cluster.nodes import ClusterState, Node, NodeStatus
from piko.config import RebalanceConfig
from piko.mux.frames import FrameType, GoAwayCode
from piko.server.metrics import ServerMetrics
from piko.server.rebalance import REBALANCE_INTERVAL, Rebalancer, sessions_to_shed
from piko.server.registry import UpstreamRegistry
from piko.server.upstream_port import UpstreamPortHandler, UpstreamSession
from piko.test.mux.helpers import Recorder, frames_of
from piko.ws.server import WebSocketAcceptor

CONFIG = RebalanceConfig(threshold=0.2, shed_rate=0.5, min_conns=2)


def node(node_id: str, count: int, status: NodeStatus = NodeStatus.ACTIVE) -> Node:
    return Node(node_id, status, "p:1", "a:1", {"ep": count} if count else {})


class SessionsToShedTests(SynchronousTestCase):
    def test_go_formula(self) -> None:
        """Integer mean over active nodes; shed local * balance, capped at ceil(avg * rate)."""
        # avg = (12 + 4 + 2) // 3 = 6; balance = 1.0; shed = 12, capped at ceil(6 * 0.5) = 3.
        nodes = [node("a", 12), node("b", 4), node("c", 2)]
        self.assertEqual(sessions_to_shed(12, nodes, CONFIG), 3)
        # A rate of 1 raises the cap to ceil(6 * 1) = 6.
        self.assertEqual(sessions_to_shed(12, nodes, RebalanceConfig(0.2, 1.0, 2)), 6)
        # balance = (7 - 5) / 5 = 0.4; shed = int(7 * 0.4) = 2 under the cap of ceil(5 * 0.5) = 3.
        nodes = [node("a", 7), node("b", 3)]
        self.assertEqual(sessions_to_shed(7, nodes, CONFIG), 2)

    def test_below_threshold(self) -> None:
        """A node within ``threshold`` of the mean sheds nothing."""
        nodes = [node("a", 11), node("b", 10)]
        self.assertEqual(sessions_to_shed(11, nodes, CONFIG), 0)

    def test_disabled_or_too_few(self) -> None:
        """Threshold 0, no local upstreams, or fewer than ``min_conns`` shed nothing."""
        nodes = [node("a", 10), node("b", 0)]
        self.assertEqual(sessions_to_shed(10, nodes, RebalanceConfig(0, 1, 0)), 0)
        self.assertEqual(sessions_to_shed(0, [node("a", 0), node("b", 0)], CONFIG), 0)
        self.assertEqual(sessions_to_shed(10, nodes, RebalanceConfig(0.2, 1, 11)), 0)

    def test_only_active_nodes_count(self) -> None:
        """Unreachable and departed nodes count neither as cluster nor in the mean, unlike Go."""
        for status in (NodeStatus.UNREACHABLE, NodeStatus.LEFT):
            self.assertEqual(sessions_to_shed(10, [node("a", 10), node("b", 0, status)], CONFIG), 0)
        # Two active and one gone with many: avg = (10 + 0) // 2 = 5, not (10 + 0 + 50) // 3.
        nodes = [node("a", 10), node("b", 0), node("c", 50, NodeStatus.UNREACHABLE)]
        self.assertEqual(sessions_to_shed(10, nodes, CONFIG), 3)

    def test_zero_mean(self) -> None:
        """An integer mean of 0 sheds nothing (Go's capped division by zero)."""
        nodes = [node("a", 1), node("b", 0), node("c", 0)]
        self.assertEqual(sessions_to_shed(1, nodes, RebalanceConfig(0.2, 1.0, 0)), 0)


def connected_session(
    clock: Clock, registry: UpstreamRegistry[Any], endpoint_id: str = "ep"
) -> tuple[UpstreamSession, StringTransport]:
    session = UpstreamSession(clock, endpoint_id, registry)
    transport = StringTransport()
    session.makeConnection(transport)
    return session, transport


class ShedTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.registry: UpstreamRegistry[Any] = UpstreamRegistry()
        self.metrics = ServerMetrics()
        self.metrics.watch(self.registry)

    def connected(self) -> float:
        return self.metrics.connected_upstreams._value.get()

    def test_idle_session_goes_away_and_closes(self) -> None:
        """A shed idle session is sent GoAway(0), deregistered once and closed."""
        session, transport = connected_session(self.clock, self.registry)
        self.assertEqual(self.connected(), 1)
        session.shed(30)
        [frame] = frames_of(transport.value())
        self.assertEqual((frame.type, frame.length), (FrameType.GO_AWAY, GoAwayCode.NORMAL))
        self.assertTrue(session.closed)
        self.assertEqual((self.registry.endpoints(), self.connected()), ({}, 0))
        self.assertFalse(self.clock.getDelayedCalls())

    def test_busy_session_closes_when_idle(self) -> None:
        """A shed session keeps its in-flight stream, takes no new request, and closes after it."""
        session, transport = connected_session(self.clock, self.registry)
        other, _ = connected_session(self.clock, self.registry)
        stream = session.open_stream(Recorder())
        session.shed(30)
        self.assertFalse(session.closed)
        self.assertEqual(self.registry.upstreams("ep"), [other])
        self.assertEqual(self.connected(), 1)
        # Requests already routed here may still open streams to it.
        session.open_stream(Recorder()).abortConnection()
        stream.abortConnection()
        self.clock.advance(0)
        self.assertTrue(session.closed)
        self.assertEqual(self.connected(), 1)

    def test_shed_timeout(self) -> None:
        """A shed session whose streams outlast the timeout is closed then."""
        session, _ = connected_session(self.clock, self.registry)
        session.open_stream(Recorder())
        session.shed(30)
        self.clock.advance(29)
        self.assertFalse(session.closed)
        self.clock.advance(1)
        self.assertTrue(session.closed)

    def test_handler_sheds_from_busiest_endpoint(self) -> None:
        """The handler sheds ``count`` registered sessions, from the endpoint with most first."""
        handler = UpstreamPortHandler(self.clock, self.registry, WebSocketAcceptor(self.clock))
        sessions = [connected_session(self.clock, self.registry, ep)[0] for ep in "abb"]
        handler.sessions.update(sessions)
        self.assertEqual(handler.shed(1), 1)
        self.assertEqual(self.registry.endpoints(), {"a": 1, "b": 1})
        self.assertEqual(handler.shed(5), 2)
        self.assertEqual((self.registry.endpoints(), self.connected()), ({}, 0))


class RebalancerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.cluster = ClusterState(Node("local"))
        self.shed: list[int] = []

    def rebalancer(self, config: RebalanceConfig = CONFIG) -> Rebalancer:
        rebalancer = Rebalancer(self.clock, self.cluster, config, self.shed.append)
        rebalancer.start()
        self.addCleanup(rebalancer.stop)
        return rebalancer

    def test_every_second(self) -> None:
        """The check runs every second and sheds what the local excess calls for."""
        self.cluster.set_local_endpoint("ep", 10)
        self.cluster.add_node(node("b", 2))
        self.rebalancer()
        self.clock.advance(REBALANCE_INTERVAL - 0.01)
        self.assertEqual(self.shed, [])
        self.clock.advance(0.01)
        # avg = 12 // 2 = 6; balance = 4/6; shed = int(10 * 0.67) = 6, capped at ceil(3) = 3.
        self.assertEqual(self.shed, [3])
        self.cluster.set_local_endpoint("ep", 7)
        self.clock.advance(REBALANCE_INTERVAL)
        # avg = 9 // 2 = 4; balance = 0.75; shed = 5, capped at ceil(2) = 2.
        self.assertEqual(self.shed, [3, 2])

    def test_peer_unreachable_stops_shedding(self) -> None:
        """When the only other node becomes unreachable, nothing is shed."""
        self.cluster.set_local_endpoint("ep", 10)
        self.cluster.add_node(node("b", 0))
        self.rebalancer()
        self.cluster.update_status("b", NodeStatus.UNREACHABLE)
        self.clock.advance(5 * REBALANCE_INTERVAL)
        self.assertEqual(self.shed, [])

    def test_disabled_schedules_nothing(self) -> None:
        """A threshold of 0 starts no timer."""
        rebalancer = self.rebalancer(RebalanceConfig(threshold=0))
        self.assertFalse(rebalancer.running)
        self.assertFalse(self.clock.getDelayedCalls())

    def test_stop(self) -> None:
        """After ``stop`` no check runs."""
        self.cluster.set_local_endpoint("ep", 10)
        self.cluster.add_node(node("b", 0))
        self.rebalancer().stop()
        self.clock.advance(5 * REBALANCE_INTERVAL)
        self.assertEqual(self.shed, [])

"""
A Hypothesis state machine of gossip membership: nodes of a fixed set of ids
start, write, leave gracefully, crash and start again under the same id, in
any order, while exchanging UDP rounds through the codec; after a few rounds
among the running nodes every running node holds every other's current state,
live, at its current address, whatever came before, left nodes forgotten or
not (issue 11, fault 4).

Everything is sans-IO (:class:`~piko.cluster.state.GossipState` on a
``task.Clock``), so an example runs in milliseconds.
"""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    precondition,
    rule,
)
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from piko.cluster.failure_detector import AccrualFailureDetector
from piko.cluster.state import GossipState, wall_clock_version
from piko.test.cluster.test_state import exchange, join

IDS = ("n0", "n1", "n2")
KEYS = ("endpoint:a", "endpoint:b")

#: UDP rounds among the running nodes that must suffice to converge.
ROUNDS = 6


class Membership(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock()
        self.clock.advance(1_790_000_000)
        self.running: dict[str, GossipState] = {}
        self.starts = 0

    def peers(self, state: GossipState) -> list[GossipState]:
        return [s for s in self.running.values() if s is not state]

    @rule(
        node_id=st.sampled_from(IDS),
        behind=st.booleans(),
        seed=st.integers(min_value=0, max_value=len(IDS) - 1),
    )
    def start(self, node_id: str, behind: bool, seed: int) -> None:
        """Start ``node_id`` (if stopped) at a new address and join through a running node."""
        if node_id in self.running:
            return
        self.starts += 1
        # A start takes time: its wall clock is past the previous run's start
        # by more than that run's writes (see wall_clock_version).
        self.clock.advance(0.001)
        version = wall_clock_version(self.clock)
        if behind:  # its clock is 1,000 s behind: it must bump past what peers hold
            version -= 1_000_000_000
        state = GossipState(
            node_id,
            f"{node_id}:{self.starts}",
            self.clock,
            AccrualFailureDetector(self.clock, 0.2),
            initial_version=version,
            incarnation=f"run-{self.starts}",
        )
        state.upsert_local("proxy_addr", f"{node_id}-{self.starts}:8000")
        seeds = list(self.running.values())
        self.running[node_id] = state
        if seeds:
            join(seeds[seed % len(seeds)], state)

    @precondition(lambda self: self.running)
    @rule(data=st.data(), deliver_to=st.integers(min_value=0, max_value=2))
    def leave(self, data: st.DataObject, deliver_to: int) -> None:
        """Stop a node gracefully: it leaves, telling up to ``deliver_to`` peers."""
        node_id = data.draw(st.sampled_from(sorted(self.running)))
        state = self.running.pop(node_id)
        state.leave_local()
        for peer in list(self.running.values())[:deliver_to]:
            peer.apply_delta(state.local_delta(), sender=node_id)

    @precondition(lambda self: self.running)
    @rule(data=st.data())
    def crash(self, data: st.DataObject) -> None:
        """Kill a node: nobody is told."""
        del self.running[data.draw(st.sampled_from(sorted(self.running)))]

    @precondition(lambda self: self.running)
    @rule(data=st.data(), key=st.sampled_from(KEYS), value=st.sampled_from(("", "1", "2")))
    def write(self, data: st.DataObject, key: str, value: str) -> None:
        """Set (or, with ``""``, delete) an endpoint count on a running node."""
        state = self.running[data.draw(st.sampled_from(sorted(self.running)))]
        if value:
            state.upsert_local(key, value)
        else:
            state.delete_local(key)

    @precondition(lambda self: len(self.running) > 1)
    @rule(data=st.data())
    def gossip(self, data: st.DataObject) -> None:
        """One UDP round between two running nodes."""
        a, b = data.draw(st.permutations(sorted(self.running)))[:2]
        exchange(self.running[a], self.running[b], max_packet_size=600)

    @rule(seconds=st.sampled_from((0.1, 1.0, 10.0)))
    def time_passes(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule()
    def expire(self) -> None:
        """
        Over a minute passes: the running nodes forget left nodes (and keep
        a departed record of them against stale gossip).
        """
        self.clock.advance(61)
        for state in self.running.values():
            state.remove_expired()

    @rule()
    def settle(self) -> None:
        """A few rounds among the running nodes bring every one up to date on every other."""
        states = list(self.running.values())
        for _ in range(ROUNDS):
            for a in states:
                for b in states:
                    if a is not b:
                        exchange(a, b, max_packet_size=600)
        for a in states:
            for b in states:
                if a is b:
                    continue
                seen = a.node(b.local_id)
                assert seen is not None, (a.local_id, b.local_id)
                assert not seen.metadata.left, (a.local_id, b.local_id)
                assert seen.metadata.addr == b.local_addr, (a.local_id, seen.metadata)
                assert seen.entries == b.local_node().entries, (a.local_id, b.local_id)
                assert b.local_id in [n.id for n in a.live_nodes()]

    def teardown(self) -> None:
        self.settle()


TestMembership = Membership.TestCase
TestMembership.settings = settings(max_examples=60, stateful_step_count=25, deadline=None)


class MembershipTests(SynchronousTestCase):
    """Run the state machine under trial (its TestCase is a unittest one)."""

    def test_membership(self) -> None:
        """Join, leave, crash and restart under the same id, in any order, converge."""
        TestMembership("runTest").runTest()

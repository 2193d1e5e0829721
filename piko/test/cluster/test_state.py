"""Tests for :mod:`piko.cluster.state`, on a ``task.Clock``."""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from piko.cluster.codec import (
    DeltaEntry,
    DeltaHeader,
    DigestEntry,
    DigestHeader,
    Entry,
    decode_delta,
    decode_digest,
    encode_delta,
    encode_digest,
)
from piko.cluster.failure_detector import AccrualFailureDetector
from piko.cluster.state import (
    COMPACT_KEY,
    INCARNATION_KEY,
    LEFT_KEY,
    MAX_OBSERVED_VERSION,
    GossipState,
    IGossipWatcher,
    NodeMetadata,
    NullWatcher,
    wall_clock_version,
)


@implementer(IGossipWatcher)
class RecordingWatcher:
    """Records every notification as a tuple."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def take(self) -> list[tuple[Any, ...]]:
        events, self.events = self.events, []
        return events

    def on_join(self, node_id: str) -> None:
        self.events.append(("join", node_id))

    def on_leave(self, node_id: str) -> None:
        self.events.append(("leave", node_id))

    def on_reachable(self, node_id: str) -> None:
        self.events.append(("reachable", node_id))

    def on_unreachable(self, node_id: str) -> None:
        self.events.append(("unreachable", node_id))

    def on_upsert_key(self, node_id: str, key: str, value: str) -> None:
        self.events.append(("upsert", node_id, key, value))

    def on_delete_key(self, node_id: str, key: str) -> None:
        self.events.append(("delete", node_id, key))

    def on_expired(self, node_id: str) -> None:
        self.events.append(("expired", node_id))


def make_state(
    node_id: str = "local", clock: Clock | None = None, **kwargs: Any
) -> tuple[GossipState, RecordingWatcher, Clock]:
    clock = clock or Clock()
    watcher = RecordingWatcher()
    detector = AccrualFailureDetector(clock, 0.2)
    state = GossipState(node_id, f"{node_id}:7000", clock, detector, watcher, **kwargs)
    return state, watcher, clock


def remote(node_id: str, *entries: Entry) -> list[DeltaEntry]:
    return [DeltaEntry(node_id, f"{node_id}:7000", tuple(entries))]


def exchange(a: GossipState, b: GossipState, max_packet_size: int = 1400) -> None:
    """One UDP round as Go runs it, through the codec: digest, delta, digest, delta."""
    packet = encode_digest(
        DigestHeader(a.local_id, a.local_addr, True), a.digest(), max_packet_size
    )
    digest = decode_digest(packet)
    b.apply_digest(digest.entries, sender=digest.header.node_id)
    reply = encode_delta(
        DeltaHeader(b.local_id, b.local_addr), b.delta(digest.entries), max_packet_size
    )
    a.apply_delta(decode_delta(reply).entries, sender=b.local_id)
    packet = encode_digest(DigestHeader(b.local_id, b.local_addr), b.digest(), max_packet_size)
    digest = decode_digest(packet)
    a.apply_digest(digest.entries, sender=b.local_id)
    reply = encode_delta(
        DeltaHeader(a.local_id, a.local_addr), a.delta(digest.entries), max_packet_size
    )
    b.apply_delta(decode_delta(reply).entries, sender=a.local_id)


class LocalTests(SynchronousTestCase):
    def test_interfaces(self) -> None:
        """The watchers provide IGossipWatcher."""
        self.assertTrue(verifyObject(IGossipWatcher, NullWatcher()))
        self.assertTrue(verifyObject(IGossipWatcher, RecordingWatcher()))

    def test_starts_with_local_node_at_version_zero(self) -> None:
        """A new state knows only itself, at version 0."""
        state, _, _ = make_state()
        self.assertEqual(state.nodes(), [NodeMetadata("local", "local:7000")])
        self.assertEqual(state.live_nodes(), [])
        self.assertEqual(state.digest(), [DigestEntry("local", "local:7000", 0, False)])

    def test_upsert_versions(self) -> None:
        """Each change takes the next version; an unchanged value is a no-op."""
        state, watcher, _ = make_state()
        state.upsert_local("k1", "v1")
        state.upsert_local("k2", "v2")
        state.upsert_local("k1", "v1")
        state.upsert_local("k1", "v3")
        self.assertEqual(state.local_node().entries, (Entry("k2", "v2", 2), Entry("k1", "v3", 3)))
        self.assertEqual(state.local_metadata().version, 3)
        self.assertEqual(watcher.events, [])

    def test_delete_leaves_tombstone(self) -> None:
        """Deleting takes a version and keeps a tombstone; absent or deleted keys are no-ops."""
        state, _, _ = make_state()
        state.upsert_local("k1", "v1")
        state.delete_local("k1")
        state.delete_local("k1")
        state.delete_local("missing")
        self.assertEqual(state.local_node().entries, (Entry("k1", "", 2, deleted=True),))
        state.upsert_local("k1", "again")
        self.assertEqual(state.local_node().get("k1"), Entry("k1", "again", 3))

    def test_leave_local(self) -> None:
        """Leaving marks the node left and publishes ``_internal:left`` once."""
        state, _, _ = make_state()
        state.upsert_local("k", "v")
        state.leave_local()
        state.leave_local()
        self.assertTrue(state.local_metadata().left)
        self.assertEqual(
            state.local_delta(), remote("local", Entry("k", "v", 1), Entry(LEFT_KEY, "", 2, True))
        )

    def test_compaction_example(self) -> None:
        """The reference's example: k1@1,k4@4,k2†@5,k3†@6 compacts to k1@7,k4@8,compact="6"@9."""
        state, _, _ = make_state()
        for key in ["k1", "k2", "k3", "k4"]:
            state.upsert_local(key, "v")
        state.delete_local("k2")
        state.delete_local("k3")
        self.assertFalse(state.compact_local(threshold=3))
        self.assertTrue(state.compact_local(threshold=2))
        self.assertEqual(
            state.local_node().entries,
            (Entry("k1", "v", 7), Entry("k4", "v", 8), Entry(COMPACT_KEY, "6", 9, True)),
        )

    def test_compaction_threshold_and_repeat(self) -> None:
        """Go's threshold is 100 tombstones; a second compaction replaces the compact key."""
        state, _, _ = make_state()
        state.upsert_local("keep", "v")
        for i in range(100):
            state.upsert_local(f"k{i}", "v")
            if i < 99:
                state.delete_local(f"k{i}")
        self.assertFalse(state.compact_local())
        state.delete_local("k99")
        self.assertTrue(state.compact_local())
        self.assertEqual(
            state.local_node().entries,
            (Entry("keep", "v", 202), Entry(COMPACT_KEY, "201", 203, True)),
        )
        for i in range(100):
            state.upsert_local(f"x{i}", "v")
            state.delete_local(f"x{i}")
        self.assertTrue(state.compact_local())
        self.assertEqual(
            state.local_node().entries,
            (Entry("keep", "v", 404), Entry(COMPACT_KEY, "403", 405, True)),
        )

    def test_nothing_to_compact(self) -> None:
        """With no entries, even a zero threshold does nothing (Go would index an empty list)."""
        state, _, _ = make_state()
        self.assertFalse(state.compact_local(threshold=0))


class AntiEntropyTests(SynchronousTestCase):
    def test_apply_digest_learns_unknown_nodes(self) -> None:
        """Unknown nodes are learnt at version 0; left and known nodes are not."""
        state, watcher, _ = make_state()
        state.apply_digest(
            [
                DigestEntry("local", "elsewhere", 9),
                DigestEntry("n1", "n1:7000", 5),
                DigestEntry("n2", "n2:7000", 3, left=True),
            ]
        )
        self.assertEqual(watcher.take(), [("join", "n1")])
        self.assertEqual(state.node("n1").metadata, NodeMetadata("n1", "n1:7000"))
        self.assertIsNone(state.node("n2"))
        self.assertEqual(state.local_metadata().addr, "local:7000")
        state.apply_digest([DigestEntry("n1", "n1:7000", 7)])
        self.assertEqual(watcher.take(), [])

    def test_delta_for_digest(self) -> None:
        """A delta carries entries above the digest's versions, ascending; full adds the rest."""
        state, _, _ = make_state()
        state.apply_delta(remote("n1", Entry("a", "1", 1), Entry("b", "2", 2), Entry("c", "3", 3)))
        state.apply_delta(remote("n2", Entry("x", "1", 4)))
        state.upsert_local("k", "v")
        state.upsert_local("j", "w")
        digest = [DigestEntry("n1", "", 1), DigestEntry("local", "", 2), DigestEntry("zz", "", 0)]
        self.assertEqual(
            state.delta(digest),
            remote("n1", Entry("b", "2", 2), Entry("c", "3", 3)),
        )
        self.assertEqual(
            state.delta(digest, full=True),
            remote("n1", Entry("b", "2", 2), Entry("c", "3", 3)) + remote("n2", Entry("x", "1", 4)),
        )
        state.apply_digest([DigestEntry("n3", "n3:7000", 1)])
        full = state.delta([], full=True)
        self.assertEqual([d.id for d in full], ["local", "n1", "n2", "n3"])
        self.assertEqual(full[3], DeltaEntry("n3", "n3:7000"))

    def test_apply_delta_skips_old_versions(self) -> None:
        """Entries at or below the version held are skipped; newer ones notify the watcher."""
        state, watcher, _ = make_state()
        state.apply_delta(remote("n1", Entry("a", "1", 1), Entry("b", "2", 2)))
        self.assertEqual(
            watcher.take(), [("join", "n1"), ("upsert", "n1", "a", "1"), ("upsert", "n1", "b", "2")]
        )
        state.apply_delta(remote("n1", Entry("a", "old", 1), Entry("b", "", 3, deleted=True)))
        self.assertEqual(watcher.take(), [("delete", "n1", "b")])
        node = state.node("n1")
        assert node is not None
        self.assertEqual(node.metadata.version, 3)
        self.assertEqual(node.entries, (Entry("a", "1", 1), Entry("b", "", 3, deleted=True)))

    def test_apply_delta_sorts_entries(self) -> None:
        """A misordered delta loses nothing: entries are applied by ascending version."""
        state, _, _ = make_state()
        state.apply_delta(remote("n1", Entry("b", "2", 2), Entry("a", "1", 1)))
        node = state.node("n1")
        assert node is not None
        self.assertEqual(node.entries, (Entry("a", "1", 1), Entry("b", "2", 2)))

    def test_updates_about_local_node_ignored(self) -> None:
        """Nobody else writes our state."""
        state, watcher, _ = make_state()
        state.apply_delta(remote("local", Entry("a", "1", 5)))
        self.assertEqual(state.local_node().entries, ())
        self.assertEqual(watcher.events, [])

    def test_two_nodes_converge_through_the_codec(self) -> None:
        """Two states exchanging small UDP packets converge, deletions included."""
        a, _, clock = make_state("a")
        b, watcher, _ = make_state("b", clock)
        b.apply_digest([DigestEntry("a", "a:7000", 0)])
        for i in range(30):
            a.upsert_local(f"endpoint:{i}", str(i))
        a.delete_local("endpoint:3")
        b.upsert_local("proxy_addr", "b:8000")
        for _ in range(20):
            exchange(a, b, max_packet_size=300)
        self.assertEqual(b.node("a"), a.local_node())
        self.assertEqual(a.node("b"), b.local_node())
        self.assertIn(("delete", "a", "endpoint:3"), watcher.events)


class RemoteLifecycleTests(SynchronousTestCase):
    def test_remote_compaction(self) -> None:
        """A peer's compact key drops what it covers, reporting live keys as deleted."""
        a, _, _ = make_state("a")
        b, watcher, _ = make_state("b")
        for key in ["k1", "k2", "k3", "k4"]:
            a.upsert_local(key, "v")
        b.apply_delta(a.delta([DigestEntry("a", "", 0)]))
        a.delete_local("k2")
        a.delete_local("k3")
        a.compact_local(threshold=2)
        watcher.take()
        b.apply_delta(a.delta([DigestEntry("a", "", 4)]))
        self.assertEqual(
            watcher.take(),
            [
                ("upsert", "a", "k1", "v"),
                ("upsert", "a", "k4", "v"),
                ("delete", "a", "k2"),
                ("delete", "a", "k3"),
            ],
        )
        self.assertEqual(b.node("a"), a.local_node())

    def test_remote_compaction_after_tombstones(self) -> None:
        """Tombstones a peer had already reported are dropped silently."""
        a, _, _ = make_state("a")
        b, watcher, _ = make_state("b")
        for key in ["k1", "k2", "k3", "k4"]:
            a.upsert_local(key, "v")
        a.delete_local("k2")
        a.delete_local("k3")
        b.apply_delta(a.delta([DigestEntry("a", "", 0)]))
        watcher.take()
        a.compact_local(threshold=2)
        b.apply_delta(a.delta([DigestEntry("a", "", 6)]))
        self.assertEqual(watcher.take(), [("upsert", "a", "k1", "v"), ("upsert", "a", "k4", "v")])
        self.assertEqual(b.node("a"), a.local_node())

    def test_invalid_compact_value_stops_node(self) -> None:
        """A compact key that is not a number stops that node's delta there, as in Go."""
        state, watcher, _ = make_state()
        state.apply_delta(
            remote("n1", Entry("a", "1", 1), Entry(COMPACT_KEY, "x", 2, True), Entry("b", "2", 3))
            + remote("n2", Entry("c", "3", 1))
        )
        node = state.node("n1")
        assert node is not None
        self.assertEqual(node.metadata.version, 2)
        self.assertIsNone(node.get("b"))
        self.assertIn(("upsert", "n2", "c", "3"), watcher.events)

    def test_remote_leave_and_expiry(self) -> None:
        """A left node is reported, kept a minute, then forgotten and removed from the detector."""
        state, watcher, clock = make_state()
        clock.advance(100)
        state.apply_delta(remote("n1", Entry("k", "v", 1), Entry(LEFT_KEY, "", 2, True)))
        self.assertEqual(
            watcher.take(), [("join", "n1"), ("upsert", "n1", "k", "v"), ("leave", "n1")]
        )
        node = state.node("n1")
        assert node is not None
        self.assertTrue(node.metadata.left)
        self.assertEqual(node.metadata.expiry, 160.0)
        self.assertEqual(state.live_nodes(), [])
        state.update_liveness()
        self.assertEqual(watcher.take(), [])
        clock.advance(60)
        state.remove_expired()
        self.assertEqual(watcher.take(), [])
        clock.advance(0.001)
        state.remove_expired()
        self.assertEqual(watcher.take(), [("expired", "n1")])
        self.assertIsNone(state.node("n1"))
        self.assertNotIn("n1", state.failure_detector)

    def test_leave_over_join_transcript(self) -> None:
        """The recorded Go leave, applied, marks node-2 left."""
        state, watcher, _ = make_state("node-1")
        state.apply_delta(
            remote(
                "node-2",
                Entry("proxy_addr", "127.0.0.1:31510", 1),
                Entry("admin_addr", "127.0.0.1:31512", 2),
            )
        )
        state.apply_delta(
            [DeltaEntry("node-2", "127.0.0.1:31513", (Entry(LEFT_KEY, "", 3, True),))]
        )
        self.assertEqual(watcher.events[-1], ("leave", "node-2"))

    def test_unreachable_and_back(self) -> None:
        """A silent node turns unreachable past phi 20 and expires a minute later unless heard."""
        state, watcher, clock = make_state()
        detector = state.failure_detector
        state.apply_digest([DigestEntry("n1", "n1:7000", 0)])
        watcher.take()
        for _ in range(10):
            detector.report("n1")
            state.update_liveness()
            clock.advance(0.1)
        self.assertEqual(watcher.take(), [])
        # Mean interval: (0.2 + 9 * 0.1) / 10 = 0.11 s; phi 20 is 2.2 s of silence.
        clock.advance(2.0)
        state.update_liveness()
        self.assertEqual(watcher.take(), [])
        clock.advance(0.2)
        state.update_liveness()
        self.assertEqual(watcher.take(), [("unreachable", "n1")])
        node = state.node("n1")
        assert node is not None
        self.assertTrue(node.metadata.unreachable)
        self.assertEqual(node.metadata.expiry, clock.seconds() + 60)
        self.assertEqual(state.unreachable_nodes(), [node.metadata])
        self.assertEqual(state.live_nodes(), [])
        state.update_liveness()
        self.assertEqual(watcher.take(), [])
        detector.report("n1")
        state.update_liveness()
        self.assertEqual(watcher.take(), [("reachable", "n1")])
        node = state.node("n1")
        assert node is not None
        self.assertEqual((node.metadata.unreachable, node.metadata.expiry), (False, None))
        clock.advance(100)
        state.update_liveness()
        clock.advance(61)
        state.remove_expired()
        self.assertEqual(watcher.take(), [("unreachable", "n1"), ("expired", "n1")])

    def test_never_heard_from(self) -> None:
        """A node learnt from a digest but never heard from is unreachable after 4 s."""
        state, watcher, clock = make_state()
        state.apply_digest([DigestEntry("n1", "n1:7000", 0)])
        state.update_liveness()
        clock.advance(4.0)
        state.update_liveness()
        clock.advance(0.01)
        state.update_liveness()
        self.assertEqual(watcher.take(), [("join", "n1"), ("unreachable", "n1")])


class GhostNodeTests(SynchronousTestCase):
    """A forgotten node is not brought back by stale gossip (Go #314)."""

    def forgotten(self) -> tuple[GossipState, RecordingWatcher, Clock]:
        state, watcher, clock = make_state()
        state.apply_delta(remote("ghost", Entry("endpoint:e", "1", 1), Entry("proxy_addr", "p", 2)))
        state.update_liveness()
        clock.advance(30)
        state.update_liveness()
        clock.advance(61)
        state.remove_expired()
        self.assertIsNone(state.node("ghost"))
        self.assertTrue(state.is_departed("ghost"))
        watcher.take()
        return state, watcher, clock

    def test_stale_digest(self) -> None:
        """A peer's digest still listing the node at an old version does not resurrect it."""
        state, watcher, _ = self.forgotten()
        state.apply_digest([DigestEntry("ghost", "ghost:7000", 2)], sender="peer")
        state.apply_digest([DigestEntry("ghost", "ghost:7000", 0)], sender="peer")
        self.assertIsNone(state.node("ghost"))
        self.assertEqual(watcher.events, [])

    def test_stale_delta(self) -> None:
        """A peer's (full, join-time) delta with the node's old entries does not resurrect it."""
        state, watcher, _ = self.forgotten()
        state.apply_delta(
            remote("ghost", Entry("endpoint:e", "1", 1), Entry("proxy_addr", "p", 2)),
            sender="peer",
        )
        state.apply_delta(remote("ghost"), sender="peer")
        self.assertIsNone(state.node("ghost"))
        self.assertEqual(watcher.events, [])

    def test_newer_news_brings_it_back(self) -> None:
        """A version we never saw proves the node lived on: it is learnt again."""
        state, watcher, _ = self.forgotten()
        state.apply_delta(remote("ghost", Entry("endpoint:e", "2", 3)), sender="peer")
        self.assertEqual(
            watcher.take(), [("join", "ghost"), ("upsert", "ghost", "endpoint:e", "2")]
        )
        self.assertFalse(state.is_departed("ghost"))

    def test_the_node_itself_brings_it_back(self) -> None:
        """The node's own digest (a healed partition) is proof of life."""
        state, watcher, _ = self.forgotten()
        state.apply_digest([DigestEntry("ghost", "ghost:7000", 2)], sender="ghost")
        self.assertEqual(watcher.take(), [("join", "ghost")])
        self.assertEqual(state.delta([DigestEntry("ghost", "", 0)]), [])
        self.assertEqual([d.id for d in state.delta([], full=True)], ["local", "ghost"])

    def test_left_node_not_resurrected(self) -> None:
        """A node that left and expired stays gone when a peer replays its state."""
        state, watcher, clock = make_state()
        history = (Entry("k", "v", 1), Entry(LEFT_KEY, "", 2, True))
        state.apply_delta(remote("gone", *history))
        clock.advance(61)
        state.remove_expired()
        watcher.take()
        state.apply_delta(remote("gone", *history), sender="peer")
        state.apply_digest([DigestEntry("gone", "gone:7000", 1)], sender="peer")
        self.assertIsNone(state.node("gone"))
        self.assertEqual(watcher.events, [])

    def test_go_would_resurrect(self) -> None:
        """Without the departed record (after its retention) the old behaviour returns."""
        state, watcher, clock = self.forgotten()
        clock.advance(601)
        state.remove_expired()
        self.assertFalse(state.is_departed("ghost"))
        state.apply_digest([DigestEntry("ghost", "ghost:7000", 2)], sender="peer")
        self.assertEqual(watcher.events, [("join", "ghost")])

    def test_departed_records_bounded(self) -> None:
        """Only the most recent ``max_departed`` forgotten nodes are remembered."""
        state, _, clock = make_state(max_departed=3)
        for i in range(5):
            state.apply_delta(remote(f"n{i}", Entry(LEFT_KEY, "", 1, True)))
            clock.advance(61)
            state.remove_expired()
        self.assertEqual(
            [state.is_departed(f"n{i}") for i in range(5)], [False, False, True, True, True]
        )


def incarnation(clock: Clock, token: str, node_id: str = "x") -> GossipState:
    """A node started now (at the clock's wall-clock version) as incarnation ``token``."""
    state, _, _ = make_state(
        node_id, clock, initial_version=wall_clock_version(clock), incarnation=token
    )
    state.upsert_local("proxy_addr", f"{token}:8000")
    state.upsert_local("admin_addr", f"{token}:8002")
    return state


def join(peer: GossipState, joiner: GossipState) -> None:
    """A TCP join of ``joiner`` to ``peer``, through the codec's objects."""
    peer.apply_delta(joiner.local_delta(), sender=joiner.local_id)
    peer.apply_digest(joiner.digest(), sender=joiner.local_id)
    joiner.apply_delta(peer.delta(joiner.digest(), full=True), sender=peer.local_id)


class RestartTests(SynchronousTestCase):
    """
    A node restarted under the same id (a fixed ``cluster.node_id``) is taken
    at once by peers that still hold its previous incarnation.
    """

    def test_wall_clock_version(self) -> None:
        """A new incarnation's versions start at the clock in microseconds."""
        clock = Clock()
        clock.advance(1_790_000_000.25)
        self.assertEqual(wall_clock_version(clock), 1_790_000_000_250_000)
        state = incarnation(clock, "one")
        self.assertEqual(
            [(e.key, e.value, e.version, e.internal) for e in state.local_node().entries],
            [
                (INCARNATION_KEY, "one", 1_790_000_000_250_001, True),
                ("proxy_addr", "one:8000", 1_790_000_000_250_002, False),
                ("admin_addr", "one:8002", 1_790_000_000_250_003, False),
            ],
        )

    def test_no_incarnation_by_default(self) -> None:
        """Without an incarnation the state is Go's: nothing published, versions from 0."""
        state, _, _ = make_state()
        self.assertEqual(state.local_node().entries, ())
        self.assertEqual(state.local_metadata().version, 0)

    def test_restart_after_leave_taken_at_once(self) -> None:
        """
        A peer holding the node as left (its tombstone the newest version it
        saw) takes the new incarnation on its join: the old state is expired,
        the node joins again, not left, with only the new state.
        """
        clock = Clock()
        clock.advance(1000)
        peer, watcher, _ = make_state("peer", clock)
        old = incarnation(clock, "one")
        join(peer, old)
        old.upsert_local("endpoint:gone", "1")
        exchange(peer, old)
        old.leave_local()
        peer.apply_delta(old.local_delta(), sender="x")
        self.assertTrue(peer.node("x").metadata.left)
        watcher.take()

        clock.advance(3)
        new = incarnation(clock, "two")
        join(peer, new)
        node = peer.node("x")
        assert node is not None
        self.assertFalse(node.metadata.left)
        self.assertIsNone(node.metadata.expiry)
        self.assertEqual(node.entries, new.local_node().entries)
        self.assertEqual([n.id for n in peer.live_nodes()], ["x"])
        self.assertEqual(
            watcher.take(),
            [
                ("expired", "x"),
                ("join", "x"),
                ("upsert", "x", "proxy_addr", "two:8000"),
                ("upsert", "x", "admin_addr", "two:8002"),
            ],
        )

    def test_restart_at_a_new_address(self) -> None:
        """
        A restarted node may come back at a new address (a pod's new IP): the
        peer takes it with the new state and gossips there, not to the old one.
        """
        clock = Clock()
        clock.advance(1000)
        peer, _, _ = make_state("peer", clock)
        old = incarnation(clock, "one")
        join(peer, old)
        old.leave_local()
        peer.apply_delta(old.local_delta(), sender="x")
        clock.advance(1)
        new = GossipState(
            "x",
            "x2:7000",
            clock,
            AccrualFailureDetector(clock, 0.2),
            initial_version=wall_clock_version(clock),
            incarnation="two",
        )
        join(peer, new)
        self.assertEqual([(n.id, n.addr) for n in peer.live_nodes()], [("x", "x2:7000")])
        self.assertIn(DigestEntry("x", "x2:7000", new.local_metadata().version), peer.digest())

    def test_restart_after_crash_drops_stale_state(self) -> None:
        """
        After a crash (no leave), the peer holds the old incarnation, maybe
        unreachable: the new one replaces it, old endpoints and all, and the
        failure detector starts afresh.
        """
        clock = Clock()
        clock.advance(1000)
        peer, watcher, _ = make_state("peer", clock)
        old = incarnation(clock, "one")
        old.upsert_local("endpoint:e", "3")
        join(peer, old)
        peer.failure_detector.report("x")
        clock.advance(30)
        peer.update_liveness()
        self.assertTrue(peer.node("x").metadata.unreachable)
        watcher.take()

        new = incarnation(clock, "two")
        exchange(new, peer)
        node = peer.node("x")
        assert node is not None
        self.assertIsNone(node.get("endpoint:e"))
        self.assertFalse(node.metadata.unreachable)
        self.assertEqual(watcher.take()[:2], [("expired", "x"), ("join", "x")])
        peer.update_liveness()  # a fresh window: not unreachable at once
        self.assertFalse(peer.node("x").metadata.unreachable)

    def test_relayed_restart(self) -> None:
        """A third node that heard of the new incarnation passes it on by UDP."""
        clock = Clock()
        clock.advance(1000)
        peer, _, _ = make_state("peer", clock)
        relay, _, _ = make_state("relay", clock)
        old = incarnation(clock, "one")
        join(peer, old)
        old.leave_local()
        peer.apply_delta(old.local_delta(), sender="x")
        clock.advance(1)
        new = incarnation(clock, "two")
        join(relay, new)
        exchange(peer, relay)
        node = peer.node("x")
        assert node is not None
        self.assertFalse(node.metadata.left)
        self.assertEqual(node.get(INCARNATION_KEY).value, "two")

    def test_clock_behind_bumps_past_the_old_versions(self) -> None:
        """
        A new incarnation whose clock is behind the old one's versions is
        told of them (the join answer, a digest) and re-versions its state
        above them; the peer then takes it.
        """
        clock = Clock()
        clock.advance(2000)
        peer, _, _ = make_state("peer", clock)
        old = incarnation(clock, "one")
        join(peer, old)
        old.leave_local()
        peer.apply_delta(old.local_delta(), sender="x")
        old_version = old.local_metadata().version

        behind = Clock()
        behind.advance(1000)
        new = incarnation(behind, "two")
        changes: list[int] = []
        new.on_local_change = lambda: changes.append(new.local_metadata().version)
        join(peer, new)
        self.assertTrue(changes)
        self.assertGreater(new.local_metadata().version, old_version)
        self.assertEqual(
            [e.key for e in new.local_node().entries],
            [INCARNATION_KEY, "proxy_addr", "admin_addr"],
        )
        exchange(new, peer)
        node = peer.node("x")
        assert node is not None
        self.assertFalse(node.metadata.left)
        self.assertEqual(node.entries, new.local_node().entries)

    def test_digest_naming_us_higher_bumps(self) -> None:
        """A digest naming our id above our version makes us re-version above it."""
        state, _, _ = make_state("x", incarnation="two")
        state.upsert_local("k", "v")
        state.apply_digest([DigestEntry("x", "x:7000", 50, True)], sender="peer")
        self.assertEqual([e.version for e in state.local_node().entries], [51, 52])
        state.apply_digest([DigestEntry("x", "x:7000", 10)], sender="peer")
        self.assertEqual(state.local_metadata().version, 52)

    def test_absurd_version_not_bumped_to(self) -> None:
        """A report of our version past MAX_OBSERVED_VERSION is ignored: ours must encode."""
        state, _, _ = make_state("x", incarnation="two")
        state.apply_digest([DigestEntry("x", "x:7000", MAX_OBSERVED_VERSION + 1)], sender="p")
        state.apply_delta(remote("x", Entry("k", "v", 2**64 - 1)), sender="p")
        self.assertEqual(state.local_metadata().version, 1)

    def test_compaction_is_not_a_restart(self) -> None:
        """The incarnation survives a compaction, re-versioned with the same value: no restart."""
        clock = Clock()
        peer, watcher, _ = make_state("peer", clock)
        node = incarnation(clock, "one")
        for i in range(4):
            node.upsert_local(f"endpoint:{i}", "1")
            node.delete_local(f"endpoint:{i}")
        exchange(peer, node)
        self.assertTrue(node.compact_local(threshold=4))
        watcher.take()
        exchange(peer, node)
        # The survivors are upserted again under their new versions (as in Go); nothing more.
        self.assertEqual(
            watcher.take(),
            [("upsert", "x", "proxy_addr", "one:8000"), ("upsert", "x", "admin_addr", "one:8002")],
        )
        self.assertEqual(peer.node("x").entries, node.local_node().entries)

    def test_first_incarnation_after_unversioned_state_is_a_restart(self) -> None:
        """
        A node we hold state of without an incarnation (a version that
        published none) publishing one has restarted: its old state goes.
        """
        state, watcher, _ = make_state()
        state.apply_delta(remote("x", Entry("endpoint:e", "1", 1)))
        watcher.take()
        state.apply_delta(remote("x", Entry(INCARNATION_KEY, "two", 5, True)))
        self.assertEqual(watcher.take(), [("expired", "x"), ("join", "x")])
        self.assertIsNone(state.node("x").get("endpoint:e"))

    def test_first_incarnation_of_a_new_node_is_not_a_restart(self) -> None:
        """A node learnt from a digest (no state yet) publishing its incarnation just joins."""
        state, watcher, _ = make_state()
        state.apply_digest([DigestEntry("x", "x:7000", 3)], sender="peer")
        state.apply_delta(remote("x", Entry(INCARNATION_KEY, "one", 1, True)), sender="x")
        self.assertEqual(watcher.take(), [("join", "x")])

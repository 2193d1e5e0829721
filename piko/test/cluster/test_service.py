"""Tests for :mod:`piko.cluster.service` and :mod:`piko.cluster.syncer`, over fake transports."""

from __future__ import annotations

import random
from typing import Any, cast

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import ILogObserver, Logger, LogLevel
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase

from piko.cluster.codec import (
    DeltaEntry,
    DeltaHeader,
    DigestEntry,
    DigestHeader,
    Entry,
    decode_delta,
    decode_digest,
    encode_digest,
)
from piko.cluster.nodes import ClusterState, Node, NodeStatus
from piko.cluster.service import GossipService, GossipSettings, JoinError
from piko.cluster.state import INCARNATION_KEY, NullWatcher
from piko.cluster.syncer import Syncer


class FakeUDPPort:
    def __init__(self, net: FakeNet, addr: tuple[str, int], protocol: Any) -> None:
        self.net = net
        self.addr = addr
        self.protocol = protocol
        self.sent: list[tuple[bytes, tuple[str, int]]] = []

    def write(self, packet: bytes, addr: tuple[str, int]) -> None:
        self.sent.append((packet, addr))
        self.net.queue.append((packet, addr))

    def stopListening(self) -> None:
        self.net.ports.pop(self.addr, None)


class FakeNet(MemoryReactorClock):
    """A clock and a loopback 'network': UDP datagrams queue until :meth:`run`."""

    def __init__(self) -> None:
        super().__init__()
        self.ports: dict[tuple[str, int], FakeUDPPort] = {}
        self.queue: list[tuple[bytes, tuple[str, int]]] = []
        self.services: dict[tuple[str, int], GossipService] = {}
        self.dialled: list[tuple[str, int]] = []

    def listenUDP(self, port: int, protocol: Any, interface: str = "") -> FakeUDPPort:
        udp = FakeUDPPort(self, (interface, port), protocol)
        self.ports[(interface, port)] = udp
        return udp

    def deliver(self) -> None:
        while self.queue:
            packet, addr = self.queue.pop(0)
            port = self.ports.get(addr)
            if port is not None:
                port.protocol.datagramReceived(packet, ("127.0.0.1", 1))

    def run(self, seconds: float = 0.0, step: float = 0.01) -> None:
        for _ in range(round(seconds / step)):
            self.advance(step)
            self.deliver()

    def connect(self, host: str, port: int, protocol: Any) -> Deferred[Any]:
        """Dial another fake service's TCP side through an iosim pump."""
        self.dialled.append((host, port))
        service = self.services.get((host, port))
        if service is None or not service.running:
            return _refused()
        factory = next(f for p, f, _, i in self.tcpServers if (i, p) == (host, port))
        server = factory.buildProtocol(IPv4Address("TCP", host, port))
        pump = iosim.connect(
            server,
            iosim.FakeTransport(server, isServer=True),
            protocol,
            iosim.FakeTransport(protocol, isServer=False),
        )
        self.callLater(0, pump.flush)
        return succeed(protocol)


def _refused() -> Deferred[Any]:
    d: Deferred[Any] = Deferred()
    d.errback(ConnectionRefusedError("refused"))
    return d


class Recorder(NullWatcher):
    def __init__(self) -> None:
        self.events: list[tuple[str, ...]] = []

    def on_join(self, node_id: str) -> None:
        self.events.append(("join", node_id))

    def on_leave(self, node_id: str) -> None:
        self.events.append(("leave", node_id))

    def on_upsert_key(self, node_id: str, key: str, value: str) -> None:
        self.events.append(("upsert", node_id, key, value))

    def on_expired(self, node_id: str) -> None:
        self.events.append(("expired", node_id))


def node(
    net: FakeNet, node_id: str, port: int, watcher: Any = None, host: str = "127.0.0.1"
) -> GossipService:
    service = GossipService(
        net,
        GossipSettings(node_id, f"{host}:{port}"),
        watcher or NullWatcher(),
        connect=net.connect,
        rng=random.Random(port),
    )
    service.startService()
    net.services[(host, port)] = service
    return service


class GossipServiceTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.net = FakeNet()

    def test_binds_udp_and_tcp_on_one_port(self) -> None:
        """TCP and UDP listen on the same address; the advertise address is the bound one."""
        a = node(self.net, "a", 7001)
        self.assertEqual(self.net.tcpServers[0][:1], (7001,))
        self.assertIn(("127.0.0.1", 7001), self.net.ports)
        self.assertEqual(a.addr, "127.0.0.1:7001")

    def test_join_then_gossip_converges(self) -> None:
        """A node joins over TCP; later updates on either side spread by UDP digests and deltas."""
        recorder = Recorder()
        a = node(self.net, "a", 7001, recorder)
        b = node(self.net, "b", 7002)
        assert a.state is not None and b.state is not None
        a.state.upsert_local("k", "1")
        joined: list[str] = []
        Deferred.fromCoroutine(b.join(["127.0.0.1:7001"])).addCallback(joined.extend)
        self.net.run(0.01)
        self.assertEqual(joined, ["a"])
        self.assertEqual(b.state.node("a").get("k").value, "1")
        b.state.upsert_local("x", "y")
        a.state.upsert_local("k", "2")
        self.net.run(0.5)
        self.assertEqual(a.state.node("b").get("x").value, "y")
        self.assertEqual(b.state.node("a").get("k").value, "2")
        self.assertIn(("upsert", "b", "x", "y"), recorder.events)
        self.assertEqual(a.state.live_nodes()[0].id, "b")

    def test_local_change_pushed_at_once(self) -> None:
        """
        A local change is pushed to every live node (up to PUSH_FANOUT) on the
        next turn, not at the next round: three nodes agree within a few
        packet exchanges, long before a gossip interval; changes of one turn
        share a push, and pushes are spaced by PUSH_SPACING.
        """
        from piko.cluster.service import PUSH_SPACING

        a = node(self.net, "a", 7001)
        b = node(self.net, "b", 7002)
        c = node(self.net, "c", 7003)
        for joiner in (b, c):
            Deferred.fromCoroutine(joiner.join(["127.0.0.1:7001"]))
        self.net.run(1.0)
        assert a.state is not None and b.state is not None and c.state is not None
        self.assertEqual(len(a.state.live_nodes()), 2)
        port = self.net.ports[("127.0.0.1", 7001)]
        del port.sent[:]
        a.state.upsert_local("endpoint:one", "1")
        a.state.upsert_local("endpoint:two", "1")
        self.net.advance(0)
        digests = [to for packet, to in port.sent if decode_digest_or_none(packet)]
        self.assertEqual(sorted(digests), [("127.0.0.1", 7002), ("127.0.0.1", 7003)])
        for _ in range(5):  # a few packet exchanges, no clock time
            self.net.deliver()
            self.net.advance(0)
        for peer in (b, c):
            assert peer.state is not None
            self.assertEqual(peer.state.node("a").get("endpoint:two").value, "1")
        # A change right after waits out the spacing, then goes.
        del port.sent[:]
        a.state.delete_local("endpoint:one")
        self.net.advance(0)
        self.assertEqual(port.sent, [])
        self.net.advance(PUSH_SPACING)
        self.assertEqual(len(port.sent), 2)

    def test_watcher_events_come_on_the_next_turn(self) -> None:
        """State changes reach the watcher only after the reactor turns."""
        recorder = Recorder()
        a = node(self.net, "a", 7001, recorder)
        assert a.state is not None
        a.state.apply_digest([DigestEntry("z", "127.0.0.1:9", 3)])
        self.assertEqual(recorder.events, [])
        self.net.advance(0)
        self.assertEqual(recorder.events, [("join", "z")])

    def test_digest_answered_at_header_addr_even_if_empty(self) -> None:
        """A digest gets a delta (even empty) and our digest, sent to its header addr."""
        a = node(self.net, "a", 7001)
        port = self.net.ports[("127.0.0.1", 7001)]
        packet = encode_digest(DigestHeader("q", "127.0.0.1:7999", True), [])
        a.packet_received(packet)
        (delta, to1), (digest, to2) = port.sent
        self.assertEqual((to1, to2), (("127.0.0.1", 7999), ("127.0.0.1", 7999)))
        self.assertEqual(decode_delta(delta).header, DeltaHeader("a", "127.0.0.1:7001", 0))
        self.assertFalse(decode_digest(digest).header.request)

    def test_oversized_and_garbage_datagrams_dropped(self) -> None:
        """Datagrams are cut at max_packet_size (failing to decode) and garbage is ignored."""
        a = node(self.net, "a", 7001)
        port = self.net.ports[("127.0.0.1", 7001)]
        entries = [DigestEntry(f"n{i}", "127.0.0.1:1", 1) for i in range(60)]
        big = encode_digest(DigestHeader("q", "127.0.0.1:7999", True), entries, 4000)
        a.packet_received(big + b"")
        a.packet_received(b"\x07\x00junk")
        # The truncated digest still yields its complete prefix; nothing crashes.
        self.assertLessEqual(len(port.sent[0][0]), 1400)

    def test_unreachable_after_silence(self) -> None:
        """A joined node that stops answering becomes unreachable (about 4 s of silence)."""
        a = node(self.net, "a", 7001)
        b = node(self.net, "b", 7002)
        assert a.state is not None
        Deferred.fromCoroutine(b.join(["127.0.0.1:7001"]))
        self.net.run(1.0)
        self.assertEqual([n.id for n in a.state.live_nodes()], ["b"])
        b.stopService()
        self.net.run(6.0)
        self.assertEqual([n.id for n in a.state.unreachable_nodes()], ["b"])

    def test_leave_tells_live_nodes(self) -> None:
        """Leaving marks us left and sends a TCP leave the peers acknowledge."""
        a = node(self.net, "a", 7001)
        b = node(self.net, "b", 7002)
        assert a.state is not None
        Deferred.fromCoroutine(b.join(["127.0.0.1:7001"]))
        self.net.run(0.5)
        acked: list[int] = []
        Deferred.fromCoroutine(b.leave()).addCallback(acked.append)
        self.net.run(0.01)
        self.assertEqual(acked, [1])
        self.assertTrue(a.state.node("b").metadata.left)

    def test_join_without_port_uses_bind_port_and_resolves_every_address(self) -> None:
        """A seed without a port takes our bind port; a DNS name is tried at each address."""
        self.net.nameResolver = FakeResolver({"seeds": ["127.0.0.1", "127.0.0.2"]})  # type: ignore[assignment]
        node(self.net, "s", 7005)
        b = node(self.net, "b", 7005, host="127.0.0.3")
        result: list[Any] = []
        Deferred.fromCoroutine(b.join(["seeds"])).addBoth(result.append)
        self.net.run(0.01)
        self.assertEqual(self.net.dialled, [("127.0.0.1", 7005), ("127.0.0.2", 7005)])
        self.assertEqual(result, [["s"]])

    def test_join_failure(self) -> None:
        """No seed answering is a JoinError."""
        b = node(self.net, "b", 7002)
        result: list[Any] = []
        Deferred.fromCoroutine(b.join(["127.0.0.9:1"])).addErrback(result.append)
        self.net.run(0.01)
        self.assertTrue(result[0].check(JoinError))


class RestartTests(SynchronousTestCase):
    """A node restarted under the same id rejoins at once (issue 11, fault 4)."""

    def setUp(self) -> None:
        self.net = FakeNet()
        self.net.advance(1_790_000_000)  # a wall clock, as the reactor's

    def test_graceful_restart_under_same_id_rejoins_at_once(self) -> None:
        """
        b leaves and stops; a new b under the same id and address joins and a
        holds it live at once, with only the new state, instead of as left
        for the minute its tombstone lives.
        """
        recorder = Recorder()
        a = node(self.net, "a", 7001, recorder)
        b = node(self.net, "b", 7002)
        assert a.state is not None and b.state is not None
        Deferred.fromCoroutine(b.join(["127.0.0.1:7001"]))
        b.state.upsert_local("endpoint:old", "1")
        self.net.run(0.5)
        self.assertEqual(a.state.node("b").get("endpoint:old").value, "1")
        Deferred.fromCoroutine(b.leave())
        self.net.run(0.01)
        b.stopService()
        self.assertTrue(a.state.node("b").metadata.left)

        self.net.run(1.0)
        b2 = node(self.net, "b", 7002)
        assert b2.state is not None
        b2.state.upsert_local("endpoint:new", "1")
        joined: list[str] = []
        Deferred.fromCoroutine(b2.join(["127.0.0.1:7001"])).addCallback(joined.extend)
        self.net.run(0.01)
        self.assertEqual(joined, ["a"])
        state = a.state.node("b")
        assert state is not None
        self.assertFalse(state.metadata.left)
        self.assertIsNone(state.get("endpoint:old"))
        self.assertEqual(state.get("endpoint:new").value, "1")
        self.assertEqual([n.id for n in a.state.live_nodes()], ["b"])
        self.assertIn(("upsert", "b", "endpoint:new", "1"), recorder.events)
        # And it stays so: gossip goes on between them.
        self.net.run(5.0)
        self.assertEqual([n.id for n in a.state.live_nodes()], ["b"])

    def test_restart_seen_through_the_syncer(self) -> None:
        """The cluster table holds the restarted node active, with its new endpoints only."""
        cluster = ClusterState(Node("a"))
        syncer = Syncer(cluster)
        a = node(self.net, "a", 7001, syncer)
        b = node(self.net, "b", 7002)
        assert a.state is not None and b.state is not None
        syncer.sync(a.state, "pa", "aa")
        Deferred.fromCoroutine(b.join(["127.0.0.1:7001"]))
        b.state.upsert_local("proxy_addr", "pb")
        b.state.upsert_local("admin_addr", "ab")
        b.state.upsert_local("endpoint:old", "1")
        self.net.run(0.5)
        self.assertEqual(cluster.node("b").endpoints, {"old": 1})
        Deferred.fromCoroutine(b.leave())
        self.net.run(0.01)
        b.stopService()
        self.assertIs(cluster.node("b").status, NodeStatus.LEFT)

        self.net.run(1.0)
        b2 = node(self.net, "b", 7002)
        assert b2.state is not None
        b2.state.upsert_local("proxy_addr", "pb2")
        b2.state.upsert_local("admin_addr", "ab2")
        b2.state.upsert_local("endpoint:new", "2")
        Deferred.fromCoroutine(b2.join(["127.0.0.1:7001"]))
        self.net.run(0.01)
        restarted = cluster.node("b")
        assert restarted is not None
        self.assertEqual(
            (restarted.status, restarted.proxy_addr, restarted.endpoints),
            (NodeStatus.ACTIVE, "pb2", {"new": 2}),
        )
        self.assertIs(cluster.lookup_endpoint("new"), restarted)


class LargeStateTests(SynchronousTestCase):
    """State too large for a packet still spreads, and does not block the rest (fault 7)."""

    def setUp(self) -> None:
        self.net = FakeNet()

    def small_node(self, node_id: str, port: int) -> GossipService:
        service = GossipService(
            self.net,
            GossipSettings(node_id, f"127.0.0.1:{port}", max_packet_size=300),
            NullWatcher(),
            connect=self.net.connect,
            rng=random.Random(port),
        )
        service.startService()
        self.net.services[("127.0.0.1", port)] = service
        return service

    def test_entry_larger_than_a_packet_goes_over_tcp(self) -> None:
        """
        An entry that fits in no 300-byte packet reaches the peer (over a TCP
        exchange), and so do the changes made after it.
        """
        a = self.small_node("a", 7001)
        b = self.small_node("b", 7002)
        assert a.state is not None and b.state is not None
        Deferred.fromCoroutine(b.join(["127.0.0.1:7001"]))
        self.net.run(0.5)
        big = "endpoint:" + "x" * 400
        b.state.upsert_local(big, "1")
        b.state.upsert_local("endpoint:small", "1")
        self.net.run(0.5)
        seen = a.state.node("b")
        assert seen is not None
        self.assertEqual(seen.get(big).value, "1")
        self.assertEqual(seen.get("endpoint:small").value, "1")
        b.state.delete_local("endpoint:small")
        self.net.run(0.5)
        self.assertTrue(a.state.node("b").get("endpoint:small").deleted)
        # Once the peer has it, UDP alone carries on: no TCP exchange per round.
        dialled = len(self.net.dialled)
        self.net.run(3.0)
        self.assertEqual(len(self.net.dialled), dialled)
        self.assertEqual([n.id for n in a.state.live_nodes()], ["b"])

    def test_large_entry_relayed_by_a_third_node(self) -> None:
        """
        A node passing on another node's large entry (here b, holding what
        it learnt of a, which c asks about by UDP) sends it over TCP too.
        """
        b = self.small_node("b", 7002)
        c = self.small_node("c", 7003)
        assert b.state is not None and c.state is not None
        big = Entry("endpoint:" + "y" * 400, "1", 7)
        b.state.apply_delta([DeltaEntry("a", "127.0.0.1:7001", (big,))], sender="a")
        c.state.apply_digest(
            [DigestEntry("b", "127.0.0.1:7002"), DigestEntry("a", "127.0.0.1:7001")]
        )
        self.net.run(0.5)
        seen = c.state.node("a")
        assert seen is not None
        self.assertEqual(seen.entries, (big,))

    def test_one_exchange_at_a_time_and_spaced(self) -> None:
        """Digests arriving faster than STREAM_SPACING start one TCP exchange, not one each."""
        from piko.cluster.service import STREAM_SPACING

        a = self.small_node("a", 7001)
        assert a.state is not None
        a.state.upsert_local("endpoint:" + "z" * 400, "1")
        digest = encode_digest(
            DigestHeader("q", "127.0.0.1:7999", False), [DigestEntry("a", "127.0.0.1:7001")], 300
        )
        for _ in range(5):
            a.packet_received(digest)
            self.net.advance(0.1)
        self.assertEqual(self.net.dialled, [("127.0.0.1", 7999)])
        self.net.advance(STREAM_SPACING)
        a.packet_received(digest)
        self.assertEqual(self.net.dialled, [("127.0.0.1", 7999)] * 2)
        a.stopService()


class WarningTests(SynchronousTestCase):
    def test_warning_names_the_bound_address(self) -> None:
        """Bound on every interface, the unauthenticated-gossip warning says so (issue 11, 9)."""
        events: list[dict[str, Any]] = []
        service = GossipService(
            FakeNet(), GossipSettings("a", ":7001"), NullWatcher(), rng=random.Random(0)
        )
        service.log = Logger(namespace="gossip", observer=cast(ILogObserver, events.append))
        service.listen()
        [warning] = [e for e in events if e["log_level"] is LogLevel.warn]
        self.assertEqual(warning["bound"], "0.0.0.0:7001")
        self.assertEqual(warning["addr"], "127.0.0.1:7001")


class FakeResolver:
    def __init__(self, names: dict[str, list[str]]) -> None:
        self.names = names

    def resolveHostName(self, receiver: Any, hostName: str, *a: Any, **k: Any) -> Any:
        receiver.resolutionBegan(None)
        for ip in self.names.get(hostName, []):
            receiver.addressResolved(IPv4Address("TCP", ip, 0))
        receiver.resolutionComplete()
        return receiver


class SyncerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.cluster = ClusterState(Node("local"))
        self.syncer = Syncer(self.cluster)

    def test_pending_until_both_addresses(self) -> None:
        """A remote node is added only once both its proxy and admin addresses are known."""
        self.syncer.on_join("r")
        self.syncer.on_upsert_key("r", "proxy_addr", "10.0.0.2:8000")
        self.syncer.on_upsert_key("r", "endpoint:e", "2")
        self.assertIsNone(self.cluster.node("r"))
        self.syncer.on_upsert_key("r", "admin_addr", "10.0.0.2:8002")
        remote = self.cluster.node("r")
        assert remote is not None
        self.assertEqual((remote.status, remote.endpoints), (NodeStatus.ACTIVE, {"e": 2}))

    def test_endpoints_status_and_expiry(self) -> None:
        """Endpoint counts, tombstones, leave, unreachable and expiry reach the node table."""
        self.syncer.on_upsert_key("r", "proxy_addr", "p")
        self.syncer.on_upsert_key("r", "admin_addr", "a")
        self.syncer.on_upsert_key("r", "endpoint:e", "3")
        self.assertEqual(self.cluster.lookup_endpoint("e").id, "r")
        self.syncer.on_delete_key("r", "endpoint:e")
        self.assertIsNone(self.cluster.lookup_endpoint("e"))
        self.syncer.on_unreachable("r")
        self.assertEqual(self.cluster.node("r").status, NodeStatus.UNREACHABLE)
        self.syncer.on_reachable("r")
        self.syncer.on_leave("r")
        self.assertEqual(self.cluster.node("r").status, NodeStatus.LEFT)
        self.syncer.on_expired("r")
        self.assertIsNone(self.cluster.node("r"))

    def test_pending_status_kept(self) -> None:
        """A node that left while pending is added as left."""
        self.syncer.on_upsert_key("r", "proxy_addr", "p")
        self.syncer.on_leave("r")
        self.syncer.on_upsert_key("r", "admin_addr", "a")
        self.assertEqual(self.cluster.node("r").status, NodeStatus.LEFT)

    def test_local_events_ignored(self) -> None:
        """Gossip about the local node changes nothing."""
        self.syncer.on_upsert_key("local", "endpoint:e", "1")
        self.syncer.on_leave("local")
        self.assertEqual(self.cluster.local.endpoints, {})
        self.assertEqual(self.cluster.local.status, NodeStatus.ACTIVE)

    def test_local_keys_published(self) -> None:
        """Sync publishes both addresses then endpoint counts; a count of 0 is a tombstone."""
        net = FakeNet()
        state = node(net, "local", 7001).state
        assert state is not None
        self.syncer.sync(state, "p:1", "a:2")
        self.syncer.local_endpoint_changed("e", 2)
        self.syncer.local_endpoint_changed("e", 0)
        entries = state.local_node().entries
        # The incarnation (a random token) comes first, at version 1.
        self.assertEqual(entries[0].key, INCARNATION_KEY)
        self.assertEqual(
            [(e.key, e.value, e.version, e.deleted) for e in entries[1:]],
            [
                ("proxy_addr", "p:1", 2, False),
                ("admin_addr", "a:2", 3, False),
                ("endpoint:e", "", 5, True),
            ],
        )


def decode_digest_or_none(packet: bytes) -> Any:
    """The digest in ``packet``, or ``None`` if it is another kind of packet."""
    try:
        return decode_digest(packet)
    except Exception:
        return None

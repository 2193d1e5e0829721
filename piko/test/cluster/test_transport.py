# -*- test-case-name: piko.test.cluster.test_transport -*-
"""
Tests for :mod:`piko.cluster.transport`: the TLS framing, and gossip over
mutual TLS between services in memory (real TLS through ``iosim``, no sockets).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, cast

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import Factory
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import ILogObserver, Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from piko.cluster.certs import create_cluster_certs
from piko.cluster.codec import CodecError
from piko.cluster.service import GossipService, GossipSettings, JoinError
from piko.cluster.state import NullWatcher
from piko.cluster.transport import (
    FrameDecoder,
    GoTransport,
    IGossipTransport,
    TLSTransport,
    cluster_tls_options,
    encode_frame,
)


class FramingTests(SynchronousTestCase):
    def test_round_trip_in_pieces(self) -> None:
        """Frames fed a byte at a time, or several at once, come out whole and in order."""
        stream = encode_frame(b"\x01\x00abc") + encode_frame(b"\x02\x00" + b"x" * 300)
        decoder = FrameDecoder()
        out: list[bytes] = []
        for i in range(len(stream)):
            out += decoder.feed(stream[i : i + 1])
        self.assertEqual(out, [b"\x01\x00abc", b"\x02\x00" + b"x" * 300])
        self.assertEqual(FrameDecoder().feed(stream), out)

    def test_length_prefix(self) -> None:
        """A frame is a 4-byte big-endian length, then the message."""
        self.assertEqual(encode_frame(b"ab"), b"\x00\x00\x00\x02ab")

    def test_bad_lengths(self) -> None:
        """An empty or oversized frame is an error (the connection is dropped)."""
        self.assertRaises(CodecError, FrameDecoder().feed, b"\x00\x00\x00\x00")
        self.assertRaises(CodecError, FrameDecoder(10).feed, b"\x00\x00\x00\x0b")

    def test_interfaces(self) -> None:
        """Both transports provide the transport interface."""
        verifyObject(IGossipTransport, GoTransport(MemoryReactorClock()))
        directory = Path(self.mktemp())
        certs = create_cluster_certs(directory, ["a"])
        options = cluster_tls_options(*certs.nodes["a"], certs.ca)
        verifyObject(IGossipTransport, TLSTransport(MemoryReactorClock(), options))


class TLSNet(MemoryReactorClock):
    """A clock and an in-memory network of TLS connections, pumped by :meth:`run`."""

    def __init__(self) -> None:
        super().__init__()
        self.pumps: list[iosim.IOPump] = []
        self.services: dict[tuple[str, int], GossipService] = {}

    def connector(self, options: Any) -> Any:
        def connect(host: str, port: int, protocol: Any) -> Deferred[Any]:
            service = self.services.get((host, port))
            if service is None or not service.running:
                d: Deferred[Any] = Deferred()
                d.errback(ConnectionRefusedError("refused"))
                return d
            factory = next(f for p, f, _, i in self.tcpServers if (i, p) == (host, port))
            server = factory.buildProtocol(IPv4Address("TCP", host, port))
            client = TLSMemoryBIOFactory(
                options, True, Factory.forProtocol(lambda: protocol), clock=self
            )
            client_protocol = client.buildProtocol(IPv4Address("TCP", host, port))
            pump = iosim.connect(
                server,
                iosim.FakeTransport(server, isServer=True),
                client_protocol,
                iosim.FakeTransport(client_protocol, isServer=False),
                greet=False,
            )
            self.pumps.append(pump)
            return succeed(protocol)

        return connect

    def run(self, seconds: float = 0.0, step: float = 0.01) -> None:
        for _ in range(round(seconds / step)):
            self.advance(step)
            for pump in list(self.pumps):
                pump.flush()


class TLSGossipTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.net = TLSNet()
        directory = Path(self.mktemp())
        self.certs = create_cluster_certs(directory / "cluster", ["a", "b", "rogue"])
        self.rogue = create_cluster_certs(directory / "other", ["rogue"])

    def node(self, node_id: str, port: int, cert: tuple[str, str] | None = None) -> Any:
        options = cluster_tls_options(*(cert or self.certs.nodes[node_id]), self.certs.ca)
        transport = TLSTransport(self.net, options, connect=self.net.connector(options))
        events: list[dict[str, Any]] = []
        transport.log = Logger(namespace="gossip", observer=cast(ILogObserver, events.append))
        service = GossipService(
            self.net,
            GossipSettings(node_id, f"127.0.0.1:{port}"),
            NullWatcher(),
            transport=transport,
            rng=random.Random(port),
        )
        service.startService()
        self.net.services[("127.0.0.1", port)] = service
        return service, transport, events

    def test_join_and_gossip_over_persistent_connections(self) -> None:
        """Two nodes join and exchange keys over TLS; digests reuse one connection per peer."""
        a, ta, _ = self.node("a", 7001)
        b, tb, _ = self.node("b", 7002)
        joined = Deferred.fromCoroutine(b.join(["127.0.0.1:7001"]))
        self.net.run(0.05)
        self.assertEqual(self.successResultOf(joined), ["a"])
        assert a.state is not None and b.state is not None
        a.state.upsert_local("endpoint:x", "1")
        self.net.run(2.0)
        node = b.state.node("a")
        entry = node.get("endpoint:x") if node is not None else None
        self.assertEqual(entry.value if entry is not None else None, "1")
        self.assertEqual(set(ta.peers), {("127.0.0.1", 7002)})
        self.assertEqual(set(tb.peers), {("127.0.0.1", 7001)})
        # One join exchange plus one persistent connection each way.
        self.assertEqual(len(self.net.pumps), 3)
        self.assertEqual(len(ta.inbound), 1)  # the join connection closed; b's peer link stays

    def test_peer_from_another_ca_is_refused_and_logged(self) -> None:
        """A node whose certificate another CA signed cannot join, and the refusal is logged."""
        a, ta, events = self.node("a", 7001)
        rogue, _, _ = self.node("rogue", 7003, cert=self.rogue.nodes["rogue"])
        joined = Deferred.fromCoroutine(rogue.join(["127.0.0.1:7001"]))
        self.net.run(0.05)
        self.failureResultOf(joined, JoinError)
        assert a.state is not None
        self.assertIsNone(a.state.node("rogue"))
        refused = [e for e in events if "refused peer" in e["log_format"]]
        self.assertEqual(len(refused), 1)

    def test_stop_closes_connections(self) -> None:
        """Stopping a node forgets its peer connections and stops listening."""
        a, ta, _ = self.node("a", 7001)
        b, tb, _ = self.node("b", 7002)
        Deferred.fromCoroutine(b.join(["127.0.0.1:7001"]))
        self.net.run(0.5)
        self.assertTrue(tb.peers)
        self.successResultOf(b.stopService())
        self.assertEqual(tb.peers, {})
        self.assertIsNone(tb.port)

    def test_stop_cancels_a_dial_under_way(self) -> None:
        """Stopping while a peer is still being dialled cancels the dial (none is left running)."""
        options = cluster_tls_options(*self.certs.nodes["a"], self.certs.ca)
        cancelled: list[Deferred[Any]] = []

        def connect(host: str, port: int, protocol: Any) -> Deferred[Any]:
            return Deferred(cancelled.append)

        transport = TLSTransport(self.net, options, connect=connect)
        service = GossipService(
            self.net, GossipSettings("a", "127.0.0.1:7001"), NullWatcher(), transport=transport
        )
        service.startService()
        transport.send("127.0.0.1", 7009, b"digest")
        [peer] = transport.peers.values()
        self.assertIsNotNone(peer.dialing)
        self.successResultOf(service.stopService())
        self.assertEqual(len(cancelled), 1)
        self.assertEqual(transport.peers, {})


class DialEndpointTests(SynchronousTestCase):
    def test_ip_literals_dial_directly(self) -> None:
        """IP literals get plain TCP endpoints (a refusal fails at once); names resolve."""
        from twisted.internet.endpoints import (
            HostnameEndpoint,
            TCP4ClientEndpoint,
            TCP6ClientEndpoint,
        )
        from twisted.internet.testing import MemoryReactor

        from piko.cluster.transport import dial_endpoint

        reactor = MemoryReactor()
        self.assertIsInstance(dial_endpoint(reactor, "127.0.0.1", 1), TCP4ClientEndpoint)
        self.assertIsInstance(dial_endpoint(reactor, "::1", 1), TCP6ClientEndpoint)
        self.assertIsInstance(dial_endpoint(reactor, "node-1.piko", 1), HostnameEndpoint)

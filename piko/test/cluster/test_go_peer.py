# -*- test-case-name: piko.test.cluster.test_go_peer -*-
"""
A mixed cluster against the Go wire: our :class:`GossipService` and a Go Piko
v0.9.0 peer played from the packets two Go nodes exchanged
(``interop/gossip``: ``tcp/*.bin`` and ``udp-packets.jsonl``, README section 6).

No sockets: our service runs on a :class:`MemoryReactorClock` with the Go
transport; TCP joins go through ``StringTransport`` and UDP datagrams are
handed to the transport's datagram protocol, and what our node writes is
captured.  In the recording ``node-2`` (gossip ``127.0.0.1:31513``) joined
``node-1`` (gossip ``127.0.0.1:31503``); then ``piko agent http ep-g``
connected to node-1 and left again.  Our node, ``py-1``, plays each Go
node's counterpart in turn:

* **Go joins us**: node-2's recorded join request (``tcp/join.request.bin``)
  arrives at our TCP side.  Checked: our answer is what a Go node decodes as
  a join response (a ``joinHeader`` map then a msgpack array of delta
  entries, no type prefix, the same map keys in the same order as Go's own
  ``tcp/join.response.bin``), it holds our state and nothing node-2 already
  has, the connection is closed after it, and our state learned node-2's
  ``proxy_addr`` and ``admin_addr``.
* **We join Go**: node-1's recorded join response answers our join.
  Checked: our request is Go's shape (``[0x03][0x00]``, ``joinHeader``, our
  full state, a digest of ourselves only, as a Go joiner's), and we learn
  node-1's ``proxy_addr`` and ``admin_addr``.
* **Go's UDP**: node-1's recorded deltas carrying ``endpoint:ep-g`` (``"1"``,
  then its tombstone) update our state and our watcher; node-1's recorded
  digests are answered with well-formed Go packets (type and version bytes,
  re-decoded with the codec and, independently, with msgpack for the key
  order) sent to the digest header's ``addr``, not the datagram's source:
  a delta answering every digest (empty, Go's idle shape, while node-1's
  digest names nobody we know better; our entries once a digest names us at
  version 0, built by adding that entry to a recorded digest), and a
  ``request=false`` digest only when the digest asked for one.
"""

from __future__ import annotations

import random
from typing import Any

import msgpack
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase

from piko.cluster.codec import (
    DeltaHeader,
    DeltaPacket,
    DigestEntry,
    DigestHeader,
    DigestPacket,
    JoinHeader,
    decode_delta,
    decode_digest,
    decode_join_request,
    decode_join_response,
    encode_digest,
)
from piko.cluster.service import GossipService, GossipSettings
from piko.cluster.state import INCARNATION_KEY, NullWatcher
from piko.test.interop import read_bytes, read_jsonl

OUR_ADDR = "127.0.0.1:7001"
NODE_1 = ("127.0.0.1", 31503)
#: Where the recorded datagrams came from (not where replies must go).
SOURCE = ("127.0.0.1", 40000)

#: Go's map keys, in Go's order (from the recorded packets).
HEADER_KEYS = ["node_id", "addr"]
DIGEST_HEADER_KEYS = ["node_id", "addr", "request"]
DELTA_HEADER_KEYS = ["node_id", "addr", "entries"]
DIGEST_ENTRY_KEYS = ["id", "addr", "version", "left"]
DELTA_ENTRY_KEYS = ["id", "addr", "entries"]
ENTRY_KEYS = ["key", "value", "version", "internal", "deleted"]


def unpack_all(data: bytes) -> list[Any]:
    """Every msgpack object in ``data``, decoded independently of our codec."""
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(data)
    return list(unpacker)


class UDPPort:
    def __init__(self, protocol: Any) -> None:
        self.protocol = protocol
        self.sent: list[tuple[bytes, tuple[str, int]]] = []

    def write(self, packet: bytes, addr: tuple[str, int]) -> None:
        self.sent.append((packet, addr))

    def stopListening(self) -> None:
        """Nothing to release."""


class GoPeerReactor(MemoryReactorClock):
    """A clock whose UDP port records what our node sends."""

    def __init__(self) -> None:
        super().__init__()
        self.udp: UDPPort | None = None

    def listenUDP(self, port: int, protocol: Any, interface: str = "") -> UDPPort:
        self.udp = UDPPort(protocol)
        return self.udp


class Recorder(NullWatcher):
    def __init__(self) -> None:
        self.events: list[tuple[str, ...]] = []

    def on_join(self, node_id: str) -> None:
        self.events.append(("join", node_id))

    def on_upsert_key(self, node_id: str, key: str, value: str) -> None:
        self.events.append(("upsert", node_id, key, value))

    def on_delete_key(self, node_id: str, key: str) -> None:
        self.events.append(("delete", node_id, key))


def udp_packets() -> list[dict[str, Any]]:
    return read_jsonl("gossip/udp-packets.jsonl")


def first_packet(**where: Any) -> bytes:
    """The first recorded datagram matching ``where`` (on record fields, or ``request``)."""
    request = where.pop("request", None)
    version = where.pop("node_1_version", None)
    for record in udp_packets():
        if any(record.get(k) != v for k, v in where.items()):
            continue
        decoded = record["decoded"]
        if request is not None and decoded[0].get("request") is not request:
            continue
        if version is not None and not any(
            o.get("id") == "node-1" and o.get("version") == version for o in decoded[1:]
        ):
            continue
        return bytes.fromhex(record["hex"])
    raise AssertionError(f"no recorded packet matches {where}")


class GoPeerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = GoPeerReactor()
        self.watcher = Recorder()
        self.dialled: list[tuple[str, int, Any, StringTransport]] = []
        self.service = GossipService(
            self.reactor,
            GossipSettings("py-1", OUR_ADDR),
            self.watcher,
            connect=self.connect,
            rng=random.Random(1),
        )
        # listen() only: no periodic rounds, so every datagram sent is a reply.
        self.state = self.service.listen()
        self.state.upsert_local("proxy_addr", "127.0.0.1:7000")
        self.state.upsert_local("admin_addr", "127.0.0.1:7002")
        self.addCleanup(self.service.stopService)

    def incarnation(self) -> str:
        """
        Our incarnation token: published first (an internal key, which Go
        stores and ignores), so our own entries start at version 2.
        """
        entry = self.state.local_node().get(INCARNATION_KEY)
        assert entry is not None
        return entry.value

    def connect(self, host: str, port: int, protocol: Any) -> Deferred[Any]:
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.dialled.append((host, port, protocol, transport))
        return succeed(protocol)

    def sent(self) -> list[tuple[bytes, tuple[str, int]]]:
        assert self.reactor.udp is not None
        sent, self.reactor.udp.sent = self.reactor.udp.sent, []
        return sent

    def receive(self, packet: bytes) -> None:
        assert self.reactor.udp is not None
        self.reactor.udp.protocol.datagramReceived(packet, SOURCE)

    def join_node_1(self) -> None:
        """Join node-1 through its recorded join response."""
        joined = Deferred.fromCoroutine(self.service.join(["127.0.0.1:31503"]))
        [(host, port, protocol, transport)] = self.dialled
        self.assertEqual((host, port), NODE_1)
        self.request = transport.value()
        protocol.dataReceived(read_bytes("gossip/tcp/join.response.bin"))
        self.assertEqual(self.successResultOf(joined), ["node-1"])

    def value(self, node_id: str, key: str) -> tuple[str, int, bool] | None:
        node = self.state.node(node_id)
        entry = node.get(key) if node is not None else None
        return None if entry is None else (entry.value, entry.version, entry.deleted)

    # -- Go joins us ---------------------------------------------------------

    def test_go_join_request_gets_a_go_join_response(self) -> None:
        """
        node-2's recorded join request gets a response shaped as Go's (header, delta array) holding
        only our state, and the connection closes.
        """
        factory = self.reactor.tcpServers[0][1]
        protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000))
        transport = StringTransport()
        protocol.makeConnection(transport)
        request = read_bytes("gossip/tcp/join.request.bin")
        for offset in range(0, len(request), 50):  # in pieces, as TCP may deliver it
            protocol.dataReceived(request[offset : offset + 50])
        answer = transport.value()
        self.assertTrue(transport.disconnecting)

        # What a Go node reads: no type prefix, a joinHeader then one array.
        header, delta = unpack_all(answer)
        go_header, go_delta = unpack_all(read_bytes("gossip/tcp/join.response.bin"))
        self.assertEqual(list(header), list(go_header))
        self.assertEqual(header, {"node_id": "py-1", "addr": OUR_ADDR})
        self.assertEqual([list(d) for d in delta], [list(d) for d in go_delta])
        self.assertEqual(
            [list(e) for e in delta[0]["entries"]], [list(go_delta[0]["entries"][0])] * 3
        )
        self.assertEqual(
            delta,
            [
                {
                    "id": "py-1",
                    "addr": OUR_ADDR,
                    "entries": [
                        {
                            "key": INCARNATION_KEY,
                            "value": self.incarnation(),
                            "version": 1,
                            "internal": True,
                            "deleted": False,
                        },
                        {
                            "key": "proxy_addr",
                            "value": "127.0.0.1:7000",
                            "version": 2,
                            "internal": False,
                            "deleted": False,
                        },
                        {
                            "key": "admin_addr",
                            "value": "127.0.0.1:7002",
                            "version": 3,
                            "internal": False,
                            "deleted": False,
                        },
                    ],
                }
            ],
        )
        # And our own codec reads it back the same way.
        response = decode_join_response(answer)
        self.assertEqual(response.header, JoinHeader("py-1", OUR_ADDR))
        self.assertEqual([d.id for d in response.delta], ["py-1"])

    def test_go_join_request_teaches_us_the_joiner(self) -> None:
        """
        After node-2's recorded join request our state holds node-2's address, proxy_addr and
        admin_addr, and the watcher hears of it.
        """
        factory = self.reactor.tcpServers[0][1]
        protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000))
        protocol.makeConnection(StringTransport())
        protocol.dataReceived(read_bytes("gossip/tcp/join.request.bin"))
        node = self.state.node("node-2")
        assert node is not None
        self.assertEqual((node.metadata.addr, node.metadata.version), ("127.0.0.1:31513", 2))
        self.assertEqual(self.value("node-2", "proxy_addr"), ("127.0.0.1:31510", 1, False))
        self.assertEqual(self.value("node-2", "admin_addr"), ("127.0.0.1:31512", 2, False))
        self.reactor.advance(0)
        self.assertIn(("upsert", "node-2", "proxy_addr", "127.0.0.1:31510"), self.watcher.events)

    # -- we join Go --------------------------------------------------------------

    def test_our_join_request_has_go_shape(self) -> None:
        """
        Our join request to node-1 is type 3 version 0, a joinHeader, our full state and a digest of
        ourselves only, with Go's keys in Go's order.
        """
        self.join_node_1()
        self.assertEqual(self.request[:2], b"\x03\x00")
        header, delta, digest = unpack_all(self.request[2:])
        go_header, go_delta, go_digest = unpack_all(read_bytes("gossip/tcp/join.request.bin")[2:])
        self.assertEqual(list(header), list(go_header))
        self.assertEqual(header, {"node_id": "py-1", "addr": OUR_ADDR})
        self.assertEqual([list(d) for d in delta], [list(d) for d in go_delta])
        self.assertEqual(
            [e["key"] for e in delta[0]["entries"]], [INCARNATION_KEY, "proxy_addr", "admin_addr"]
        )
        self.assertEqual([list(e) for e in digest], [list(e) for e in go_digest])
        self.assertEqual(digest, [{"id": "py-1", "addr": OUR_ADDR, "version": 3, "left": False}])
        self.assertEqual(decode_join_request(self.request).header, JoinHeader("py-1", OUR_ADDR))

    def test_go_join_response_teaches_us_node_1(self) -> None:
        """node-1's recorded join response gives us node-1's address, proxy_addr and admin_addr."""
        self.join_node_1()
        node = self.state.node("node-1")
        assert node is not None
        self.assertEqual((node.metadata.addr, node.metadata.version), ("127.0.0.1:31503", 2))
        self.assertEqual(self.value("node-1", "proxy_addr"), ("127.0.0.1:31500", 1, False))
        self.assertEqual(self.value("node-1", "admin_addr"), ("127.0.0.1:31502", 2, False))
        self.assertEqual([n.addr for n in self.state.live_nodes()], ["127.0.0.1:31503"])

    # -- Go's UDP -----------------------------------------------------------------

    def test_go_deltas_add_then_remove_endpoint(self) -> None:
        """
        node-1's recorded deltas set endpoint:ep-g to "1" (version 3), then tombstone it (version
        4); no datagram answers a delta.
        """
        self.join_node_1()
        self.receive(first_packet(src_node="node-1", msg_type_name="delta", i=135))
        self.assertEqual(self.value("node-1", "endpoint:ep-g"), ("1", 3, False))
        self.receive(first_packet(src_node="node-1", msg_type_name="delta", i=271))
        self.assertEqual(self.value("node-1", "endpoint:ep-g"), ("", 4, True))
        self.assertEqual(self.sent(), [])
        self.reactor.advance(0)
        self.assertEqual(
            [e for e in self.watcher.events if "endpoint:ep-g" in e],
            [("upsert", "node-1", "endpoint:ep-g", "1"), ("delete", "node-1", "endpoint:ep-g")],
        )

    def test_go_digest_request_answered_with_delta_then_digest(self) -> None:
        """
        A recorded node-1 digest with request=true is answered, at the header's addr, by a Go delta
        (empty: node-1 names nobody we know better, Go's 48-byte idle shape) and a Go digest with
        request=false that names us.
        """
        self.join_node_1()
        self.receive(first_packet(src_node="node-1", msg_type_name="digest", request=True))
        (delta, delta_to), (digest, digest_to) = self.sent()
        self.assertEqual((delta_to, digest_to), (NODE_1, NODE_1))

        self.assertEqual(delta[:2], b"\x02\x00")
        [outer] = unpack_all(delta[2:])
        self.assertEqual(list(outer), DELTA_HEADER_KEYS)
        self.assertEqual(outer, {"node_id": "py-1", "addr": OUR_ADDR, "entries": 0})
        self.assertEqual(decode_delta(delta), DeltaPacket(DeltaHeader("py-1", OUR_ADDR, 0)))

        self.assertEqual(digest[:2], b"\x01\x00")
        header, *digest_entries = unpack_all(digest[2:])
        self.assertEqual(list(header), DIGEST_HEADER_KEYS)
        self.assertEqual([list(e) for e in digest_entries], [DIGEST_ENTRY_KEYS] * 3)
        decoded = decode_digest(digest)
        self.assertIsInstance(decoded, DigestPacket)
        self.assertEqual(decoded.header, DigestHeader("py-1", OUR_ADDR, False))
        # node-2 was only named in node-1's digest: known at version 0, as Go's ApplyDigest does.
        self.assertEqual(
            set(decoded.entries),
            {
                DigestEntry("py-1", OUR_ADDR, 3, False),
                DigestEntry("node-1", "127.0.0.1:31503", 2, False),
                DigestEntry("node-2", "127.0.0.1:31513", 0, False),
            },
        )

    def test_go_digest_naming_us_answered_with_our_entries(self) -> None:
        """
        A node-1 digest naming us at version 0 (a recorded one with our entry added, as node-1's
        next digest would be) is answered by a Go delta carrying our two entries, Go's keys in Go's
        order.
        """
        self.join_node_1()
        recorded = decode_digest(
            first_packet(src_node="node-1", msg_type_name="digest", request=False)
        )
        self.receive(
            encode_digest(recorded.header, (*recorded.entries, DigestEntry("py-1", OUR_ADDR)))
        )
        [(delta, to)] = self.sent()
        self.assertEqual(to, NODE_1)
        self.assertEqual(delta[:2], b"\x02\x00")
        outer, node_header, *entries = unpack_all(delta[2:])
        self.assertEqual(list(outer), DELTA_HEADER_KEYS)
        self.assertEqual(outer, {"node_id": "py-1", "addr": OUR_ADDR, "entries": 0})
        self.assertEqual(list(node_header), DELTA_HEADER_KEYS)
        self.assertEqual(node_header, {"node_id": "py-1", "addr": OUR_ADDR, "entries": 3})
        self.assertEqual([list(e) for e in entries], [ENTRY_KEYS] * 3)
        self.assertEqual(
            [(e["key"], e["value"], e["version"]) for e in entries],
            [
                (INCARNATION_KEY, self.incarnation(), 1),
                ("proxy_addr", "127.0.0.1:7000", 2),
                ("admin_addr", "127.0.0.1:7002", 3),
            ],
        )
        packet = decode_delta(delta)
        self.assertEqual([(d.id, len(d.entries)) for d in packet.entries], [("py-1", 3)])

    def test_go_digest_without_request_answered_by_delta_only(self) -> None:
        """
        A recorded node-1 digest with request=false gets one delta to the header's addr and no
        digest.
        """
        self.join_node_1()
        self.receive(first_packet(src_node="node-1", msg_type_name="digest", request=False))
        [(delta, to)] = self.sent()
        self.assertEqual(to, NODE_1)
        self.assertEqual(delta[:2], b"\x02\x00")
        self.assertEqual(decode_delta(delta).header, DeltaHeader("py-1", OUR_ADDR, 0))

    def test_go_heartbeat_delta_marks_node_1_alive(self) -> None:
        """
        node-1's recorded empty delta (a heartbeat) is reported to the failure detector and answered
        by nothing.
        """
        self.join_node_1()
        detector = self.service.failure_detector
        self.assertNotIn("node-1", detector)
        self.receive(first_packet(src_node="node-1", msg_type_name="delta", len=48))
        self.assertIn("node-1", detector)
        self.assertEqual(self.sent(), [])

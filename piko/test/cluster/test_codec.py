"""Tests for :mod:`piko.cluster.codec`, Go Piko's gossip wire format."""

from __future__ import annotations

import contextlib
import random
from typing import Any

import msgpack
from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from piko.cluster.codec import (
    CodecError,
    DeltaEntry,
    DeltaHeader,
    DeltaPacket,
    DigestEntry,
    DigestHeader,
    DigestPacket,
    Entry,
    JoinHeader,
    JoinRequest,
    JoinResponse,
    LeaveHeader,
    LeaveRequest,
    LeaveResponse,
    MessageType,
    RequestDecoder,
    ResponseDecoder,
    decode_delta,
    decode_digest,
    decode_join_request,
    decode_join_response,
    decode_leave_request,
    decode_leave_response,
    decode_packet,
    encode_delta,
    encode_digest,
    encode_join_request,
    encode_join_response,
    encode_leave_request,
    encode_leave_response,
    entries_fit,
)
from piko.test.interop import read_bytes, read_json, read_jsonl

GOLDEN_HEADER = DigestHeader("my-node", "1.2.3.4", True)
GOLDEN_DIGEST = (
    DigestEntry("node-1", "1.1.1.1", 4, False),
    DigestEntry("node-2", "2.2.2.2", 8, False),
    DigestEntry("node-3", "3.3.3.3", 13, False),
)
GOLDEN_DELTA = (
    DeltaEntry(
        "node-2",
        "2.2.2.2",
        (Entry("k1", "v1", 4), Entry("k2", "v2", 5), Entry("k3", "v3", 8)),
    ),
    DeltaEntry(
        "node-3",
        "3.3.3.3",
        (Entry("k1", "v1", 8), Entry("k2", "v2", 12), Entry("k3", "v3", 13)),
    ),
)


def pack(*objects: Any, use_bin_type: bool = False) -> bytes:
    """Concatenate msgpack objects as Go's encoder writes them one after another."""
    return b"".join(msgpack.packb(o, use_bin_type=use_bin_type) for o in objects)


def pieces(data: bytes, seed: int) -> list[bytes]:
    """Split ``data`` into random-size pieces, as a TCP transport may deliver it."""
    rng = random.Random(seed)
    out = []
    i = 0
    while i < len(data):
        n = rng.randint(1, 40)
        out.append(data[i : i + n])
        i += n
    return out


class GoldenTests(SynchronousTestCase):
    """The cases of Go's ``pkg/gossip/protocol_test.go``."""

    def test_full_digest_round_trip(self) -> None:
        """A digest that fits decodes back to the same header and entries."""
        packet = encode_digest(GOLDEN_HEADER, GOLDEN_DIGEST, 1000)
        self.assertEqual(decode_digest(packet), DigestPacket(GOLDEN_HEADER, GOLDEN_DIGEST))

    def test_partial_digest_is_119_bytes(self) -> None:
        """With a 125-byte limit the digest keeps its first two entries: 119 bytes."""
        packet = encode_digest(GOLDEN_HEADER, GOLDEN_DIGEST, 125)
        self.assertEqual(len(packet), 119)
        self.assertEqual(decode_digest(packet), DigestPacket(GOLDEN_HEADER, GOLDEN_DIGEST[:2]))

    def test_full_delta_round_trip(self) -> None:
        """A delta that fits decodes back to the same nodes and entries."""
        header = DeltaHeader("my-node", "1.2.3.4")
        packet = encode_delta(header, GOLDEN_DELTA, 1000)
        self.assertEqual(decode_delta(packet), DeltaPacket(header, GOLDEN_DELTA))

    def test_partial_delta_is_297_bytes(self) -> None:
        """With a 325-byte limit node-3 keeps only its first entry: 297 bytes."""
        header = DeltaHeader("my-node", "1.2.3.4")
        packet = encode_delta(header, GOLDEN_DELTA, 325)
        self.assertEqual(len(packet), 297)
        expected = (GOLDEN_DELTA[0], DeltaEntry("node-3", "3.3.3.3", GOLDEN_DELTA[1].entries[:1]))
        self.assertEqual(decode_delta(packet), DeltaPacket(header, expected))

    def test_golden_map_sizes(self) -> None:
        """The maps have the sizes the reference quotes: 39, 39, 38 and 45 bytes."""
        self.assertEqual(len(encode_digest(GOLDEN_HEADER, ())), 2 + 39)
        one = encode_digest(GOLDEN_HEADER, GOLDEN_DIGEST[:1])
        self.assertEqual(len(one), 2 + 39 + 39)
        header = DeltaHeader("my-node", "1.2.3.4")
        node = encode_delta(header, (DeltaEntry("node-2", "2.2.2.2"),))
        self.assertEqual(len(node), 2 + 39 + 38)
        entry = encode_delta(header, (DeltaEntry("node-2", "2.2.2.2", (Entry("k1", "v1", 4),)),))
        self.assertEqual(len(entry), 2 + 39 + 38 + 45)

    def test_delta_stops_at_first_map_that_does_not_fit(self) -> None:
        """After an entry overflows, Go sends no further node header even if one would fit."""
        header = DeltaHeader("my-node", "1.2.3.4")
        delta = (
            DeltaEntry("node-2", "2.2.2.2", (Entry("k1", "v" * 100, 4),)),
            DeltaEntry("node-3", "3.3.3.3"),
        )
        packet = encode_delta(header, delta, 2 + 39 + 38 + 40)
        self.assertEqual(len(packet), 2 + 39 + 38)
        self.assertEqual(decode_delta(packet).entries, (DeltaEntry("node-2", "2.2.2.2"),))

    def test_entries_fit(self) -> None:
        """
        An entry fits if it fits alone after the packet's header and its
        node's header (2 + 39 + 38 + 45 bytes for the golden maps); one byte
        more and no UDP delta of that size can ever carry it.
        """
        header = DeltaHeader("my-node", "1.2.3.4")
        small = DeltaEntry("node-2", "2.2.2.2", (Entry("k1", "v1", 4),))
        self.assertTrue(entries_fit(header, [small], 2 + 39 + 38 + 45))
        self.assertFalse(entries_fit(header, [small], 2 + 39 + 38 + 44))
        # Many small entries that together overflow still fit one by one.
        many = DeltaEntry("node-2", "2.2.2.2", tuple(Entry("k1", "v1", i) for i in range(100)))
        self.assertTrue(entries_fit(header, [many], 200))
        big = DeltaEntry("node-3", "3.3.3.3", (Entry("endpoint:" + "x" * 1400, "1", 9),))
        self.assertFalse(entries_fit(header, [small, big]))
        self.assertTrue(entries_fit(header, []))

    def test_header_too_large(self) -> None:
        """A limit smaller than the header is an error, not an empty packet."""
        self.assertRaises(CodecError, encode_digest, GOLDEN_HEADER, (), 40)
        self.assertRaises(CodecError, encode_delta, DeltaHeader("my-node", "1.2.3.4"), (), 40)


class EncodingTests(SynchronousTestCase):
    """The byte-level choices ugorji makes, where msgpack-python differs."""

    def test_go_int_is_signed(self) -> None:
        """A Go ``int`` above 127 is int16/32/64 (``0xd1..``), not msgpack-python's uint8."""
        for value, expected in [
            (127, b"\x7f"),
            (128, b"\xd1\x00\x80"),
            (200, b"\xd1\x00\xc8"),
            (0x8000, b"\xd2\x00\x00\x80\x00"),
            (2**31, b"\xd3\x00\x00\x00\x00\x80\x00\x00\x00"),
            (-1, b"\xff"),
            (-33, b"\xd0\xdf"),
            (-200, b"\xd1\xff\x38"),
        ]:
            packet = encode_delta(DeltaHeader("", "", value), ())
            self.assertTrue(packet.endswith(b"\xa7entries" + expected), (value, packet))
            self.assertEqual(decode_delta(packet).header.entries, value)
        self.assertNotEqual(msgpack.packb(200), b"\xd1\x00\xc8")

    def test_uint64_is_unsigned(self) -> None:
        """A Go ``uint64`` uses the smallest unsigned form, as msgpack-python does."""
        for value in [0, 127, 128, 255, 256, 65535, 65536, 2**32, 2**64 - 1]:
            packet = encode_digest(DigestHeader(), (DigestEntry(version=value),))
            encoded = msgpack.packb(value)
            self.assertIn(b"\xa7version" + encoded + b"\xa4left", packet)
            self.assertEqual(decode_digest(packet).entries[0].version, value)

    def test_out_of_range_integers(self) -> None:
        """Integers Go could not hold are refused rather than silently wrapped."""
        self.assertRaises(CodecError, encode_digest, DigestHeader(), (DigestEntry(version=-1),))
        self.assertRaises(CodecError, encode_digest, DigestHeader(), (DigestEntry(version=2**64),))
        self.assertRaises(CodecError, encode_delta, DeltaHeader(entries=2**63), ())

    def test_strings_use_the_old_raw_spec(self) -> None:
        """Strings are fixstr, then ``0xda``/``0xdb``: never str8 (``0xd9``)."""
        for n, prefix in [
            (31, b"\xbf"),
            (32, b"\xda\x00\x20"),
            (255, b"\xda\x00\xff"),
            (65535, b"\xda\xff\xff"),
            (65536, b"\xdb\x00\x01\x00\x00"),
        ]:
            packet = encode_join_response(JoinResponse(JoinHeader("x" * n, "")))
            self.assertEqual(packet[9 : 9 + len(prefix)], prefix, n)
            self.assertEqual(decode_join_response(packet).header.node_id, "x" * n)

    def test_non_utf8_bytes_survive(self) -> None:
        """A Go string holding bytes that are not UTF-8 re-encodes unchanged."""
        raw = pack({"node_id": b"\xff\xfe", "addr": "a"})
        response = decode_leave_response(raw)
        self.assertEqual(encode_leave_response(response), raw)

    def test_empty_lists_are_nil(self) -> None:
        """Go's nil slices encode as msgpack nil, not as an empty array."""
        self.assertEqual(
            encode_join_response(JoinResponse(JoinHeader("a", "b"))),
            pack({"node_id": "a", "addr": "b"}, None),
        )
        self.assertEqual(
            encode_leave_request(LeaveRequest(LeaveHeader("a", "b"), (DeltaEntry("a", "b"),))),
            b"\x04\x00"
            + pack({"node_id": "a", "addr": "b"}, [{"id": "a", "addr": "b", "entries": None}]),
        )

    def test_long_arrays(self) -> None:
        """Arrays of 16 or more use ``0xdc``, as both encoders do."""
        digest = tuple(DigestEntry(str(i)) for i in range(16))
        request = JoinRequest(JoinHeader(), (), digest)
        encoded = encode_join_request(request)
        self.assertIn(b"\xdc\x00\x10", encoded)
        self.assertEqual(decode_join_request(encoded), request)


class InteropTests(SynchronousTestCase):
    """Every gossip message two Go Piko v0.9.0 nodes exchanged."""

    def test_every_udp_packet_round_trips(self) -> None:
        """All 396 recorded datagrams decode to the recorded objects and re-encode byte for byte."""
        records = read_jsonl("gossip/udp-packets.jsonl")
        self.assertEqual(len(records), 396)
        for record in records:
            data = bytes.fromhex(record["hex"])
            packet = decode_packet(data)
            decoded = record["decoded"]
            if record["msg_type"] == MessageType.DIGEST:
                assert isinstance(packet, DigestPacket)
                self.assertEqual(packet.header, DigestHeader(**decoded[0]))
                self.assertEqual(packet.entries, tuple(DigestEntry(**o) for o in decoded[1:]))
                again = encode_digest(packet.header, packet.entries, 1400)
            else:
                assert isinstance(packet, DeltaPacket)
                self.assertEqual(packet.header, DeltaHeader(**decoded[0]))
                flat: list[Any] = []
                for node in packet.entries:
                    header = DeltaHeader(node.id, node.addr, len(node.entries))
                    flat.append(header)
                    flat.extend(node.entries)
                expected = [DeltaHeader(**o) if "node_id" in o else Entry(**o) for o in decoded[1:]]
                self.assertEqual(flat, expected)
                again = encode_delta(packet.header, packet.entries, 1400)
            self.assertEqual(again, data, record["i"])

    def test_tcp_sessions_round_trip(self) -> None:
        """The recorded join and leave, request and response, decode and re-encode byte for byte."""
        sessions = read_json("gossip/tcp-sessions.json")
        kinds = {MessageType.JOIN: "join", MessageType.LEAVE: "leave"}
        for session in sessions:
            name = kinds[session["request_type"]]
            request = read_bytes(f"gossip/tcp/{name}.request.bin")
            response = read_bytes(f"gossip/tcp/{name}.response.bin")
            self.assertEqual(request.hex(), session["request_hex"])
            self.assertEqual(response.hex(), session["response_hex"])
            if name == "join":
                join = decode_join_request(request)
                self.assertEqual(join.header, JoinHeader(**session["request_decoded"][0]))
                self.assertEqual(encode_join_request(join), request)
                answer = decode_join_response(response)
                self.assertEqual(encode_join_response(answer), response)
                self.assertEqual(
                    answer.delta[0].entries[1], Entry("admin_addr", "127.0.0.1:31502", 2)
                )
            else:
                leave = decode_leave_request(request)
                self.assertEqual(leave.delta[0].entries[-1], Entry("_internal:left", "", 3, True))
                self.assertEqual(encode_leave_request(leave), request)
                ack = decode_leave_response(response)
                self.assertEqual(ack, LeaveResponse(LeaveHeader("node-1", "127.0.0.1:31503")))
                self.assertEqual(encode_leave_response(ack), response)

    def test_tcp_sessions_in_pieces(self) -> None:
        """The stream decoders give the same messages however the bytes are split."""
        for name, kind in [("join", MessageType.JOIN), ("leave", MessageType.LEAVE)]:
            request = read_bytes(f"gossip/tcp/{name}.request.bin")
            response = read_bytes(f"gossip/tcp/{name}.response.bin")
            for seed in range(5):
                decoder = RequestDecoder()
                results = [decoder.feed(piece) for piece in pieces(request, seed)]
                self.assertEqual(results[:-1], [None] * (len(results) - 1))
                self.assertEqual(encode_request(results[-1]), request)
                answer = ResponseDecoder(kind)
                results2 = [answer.feed(piece) for piece in pieces(response, seed)]
                self.assertEqual(results2[:-1], [None] * (len(results2) - 1))
                self.assertEqual(encode_response(results2[-1]), response)


def encode_request(request: object) -> bytes:
    if isinstance(request, JoinRequest):
        return encode_join_request(request)
    assert isinstance(request, LeaveRequest)
    return encode_leave_request(request)


def encode_response(response: object) -> bytes:
    if isinstance(response, JoinResponse):
        return encode_join_response(response)
    assert isinstance(response, LeaveResponse)
    return encode_leave_response(response)


class TolerantDecodingTests(SynchronousTestCase):
    """Inputs ugorji accepts are accepted here too."""

    def test_str8_and_bin_strings(self) -> None:
        """Strings written as str8 or bin (a newer msgpack encoder) decode as strings."""
        addr = "a" * 40
        data = b"\x01\x00" + pack(
            {"node_id": b"n1", "addr": addr, "request": True},
            {"id": "n2", "addr": addr, "version": 3, "left": False},
            use_bin_type=True,
        )
        self.assertIn(b"\xd9\x28", data)
        self.assertIn(b"\xc4\x02n1", data)
        packet = decode_digest(data)
        self.assertEqual(packet.header, DigestHeader("n1", addr, True))
        self.assertEqual(packet.entries, (DigestEntry("n2", addr, 3),))

    def test_unknown_keys_ignored_missing_keys_zero(self) -> None:
        """Extra keys are skipped, absent ones read as Go's zero values."""
        data = b"\x02\x00" + pack(
            {"node_id": "n1", "extra": [1, {"x": None}], 7: "int key"},
            {"node_id": "n2", "entries": 1},
            {"key": "k", "version": 9, "future": True},
        )
        self.assertEqual(
            decode_delta(data),
            DeltaPacket(DeltaHeader("n1"), (DeltaEntry("n2", "", (Entry("k", "", 9),)),)),
        )

    def test_nil_values(self) -> None:
        """Nil reads as the zero value, for scalars, arrays and whole structs."""
        request = b"\x03\x00" + pack({"node_id": None, "addr": "a"}, None, None)
        self.assertEqual(decode_join_request(request), JoinRequest(JoinHeader("", "a")))
        data = b"\x01\x00" + pack({"node_id": "n"}, None, {"version": None})
        self.assertEqual(decode_digest(data).entries, (DigestEntry(), DigestEntry()))

    def test_partial_trailing_object_dropped(self) -> None:
        """A packet cut inside its last map keeps everything before it."""
        packet = encode_digest(GOLDEN_HEADER, GOLDEN_DIGEST)
        for cut in range(1, 39):
            self.assertEqual(decode_digest(packet[:-cut]).entries, GOLDEN_DIGEST[:2])
        delta = encode_delta(DeltaHeader("my-node", "1.2.3.4"), GOLDEN_DELTA)
        truncated = decode_delta(delta[:-10])
        self.assertEqual(truncated.entries[1].entries, GOLDEN_DELTA[1].entries[:2])

    def test_count_larger_than_entries(self) -> None:
        """A node header announcing more entries than follow reads what there is."""
        data = b"\x02\x00" + pack(
            {"node_id": "me"}, {"node_id": "n", "entries": 2**40}, {"key": "a"}
        )
        self.assertEqual(decode_delta(data).entries, (DeltaEntry("n", "", (Entry("a"),)),))

    def test_negative_count_reads_to_the_end(self) -> None:
        """Go's ``i != n`` loop with a negative count reads every remaining object as an entry."""
        data = b"\x02\x00" + pack({}, {"node_id": "n", "entries": -1}, {"key": "a"}, {"key": "b"})
        self.assertEqual(
            decode_delta(data).entries, (DeltaEntry("n", "", (Entry("a"), Entry("b"))),)
        )

    def test_bytes_after_a_request_ignored(self) -> None:
        """Go reads only the objects it needs from a TCP request."""
        request = encode_leave_request(LeaveRequest(LeaveHeader("a", "b")))
        self.assertEqual(
            decode_leave_request(request + b"\xc1garbage"), LeaveRequest(LeaveHeader("a", "b"))
        )


class MalformedInputTests(SynchronousTestCase):
    """Hostile or broken input raises :class:`CodecError`, never anything else."""

    def assertRejected(self, data: bytes) -> None:
        self.assertRaises(CodecError, decode_packet, data)

    def test_bad_prefix(self) -> None:
        """Too short, unknown type and unknown version are refused."""
        for data in [
            b"",
            b"\x01",
            b"\x02",
            b"\x03\x00\x80",
            b"\x09\x00",
            b"\x01\x01\x80",
            b"\x02\x07\x80",
        ]:
            self.assertRejected(data)
        self.assertRaises(CodecError, decode_digest, b"\x02\x00\x80")
        self.assertRaises(CodecError, decode_delta, b"\x01\x00\x80")

    def test_missing_or_truncated_header(self) -> None:
        """A packet whose header map is absent or cut short is refused."""
        packet = encode_digest(GOLDEN_HEADER, ())
        for cut in range(2, len(packet)):
            self.assertRejected(packet[:cut])

    def test_wrong_types(self) -> None:
        """A value of the wrong msgpack type for its field is refused."""
        for objects in [
            (5,),
            ([],),
            ({"node_id": 5},),
            ({"request": 1},),
            ({"node_id": "a"}, {"version": -1}),
            ({"node_id": "a"}, {"version": "1"}),
            ({"node_id": "a"}, {"version": True}),
            ({"node_id": "a"}, {"version": 1.0}),
            ({"node_id": "a"}, {"left": "yes"}),
            ({"node_id": "a"}, "not a map"),
        ]:
            self.assertRejected(b"\x01\x00" + pack(*objects))
        for objects in [
            ({}, {"entries": 2**64 - 1}),
            ({}, {"entries": 1}, {"deleted": 0}),
            ({}, {"entries": 1}, [1, 2]),
        ]:
            self.assertRejected(b"\x02\x00" + pack(*objects))
        self.assertRaises(CodecError, decode_join_request, b"\x03\x00" + pack({}, {}, None))
        self.assertRaises(
            CodecError, decode_join_request, b"\x03\x00" + pack({}, [{"entries": 3}], None)
        )
        self.assertRaises(CodecError, decode_join_response, pack({}, [5]))

    def test_invalid_msgpack(self) -> None:
        """Reserved type bytes, bad ext timestamps and unhashable keys are refused."""
        self.assertRejected(b"\x01\x00\xc1")
        self.assertRejected(b"\x01\x00\x81\xa1a\xd6\xff\x00")
        self.assertRejected(b"\x01\x00\x81\x80\xc0")
        self.assertRejected(b"\x01\x00\x81\x91\x80\xc0")

    def test_huge_counts_do_not_allocate(self) -> None:
        """Announced lengths far beyond the input are refused without allocating them."""
        for body in [
            b"\xdd\xff\xff\xff\xff",
            b"\xdf\xff\xff\xff\xff",
            b"\xdb\xff\xff\xff\xff",
            b"\xc6\xff\xff\xff\xff",
            b"\xc9\xff\xff\xff\xff\x01",
            b"\x81\xa1a\xdd\x7f\xff\xff\xff",
        ]:
            self.assertRejected(b"\x01\x00" + body)
            # A stream may wait for a long string's bytes, but never past its bound.
            decoder = RequestDecoder(max_size=4096)
            with self.assertRaises(CodecError):
                decoder.feed(b"\x03\x00" + body)
                decoder.feed(b"x" * 5000)

    def test_deep_nesting(self) -> None:
        """Deeply nested arrays are refused, not a recursion crash."""
        self.assertRejected(b"\x01\x00" + b"\x91" * 100_000 + b"\xc0")

    def test_stream_size_bound(self) -> None:
        """A TCP request growing past the limit is refused even before it completes."""
        decoder = RequestDecoder(max_size=100)
        self.assertIsNone(decoder.feed(b"\x03\x00\x82\xa7node_id\xdb\x00\x01\x00\x00"))
        self.assertRaises(CodecError, decoder.feed, b"x" * 200)

    def test_stream_unknown_type_or_version(self) -> None:
        """A TCP request that is not a join or leave, or of another version, is refused."""
        self.assertRaises(CodecError, RequestDecoder().feed, b"\x01\x00")
        self.assertRaises(CodecError, RequestDecoder().feed, b"\x03\x01")
        decoder = RequestDecoder()
        self.assertIsNone(decoder.feed(b"\x05"))
        self.assertRaises(CodecError, decoder.feed, b"\x00")
        self.assertRaises(ValueError, ResponseDecoder, MessageType.DIGEST)

    def test_truncated_tcp_messages(self) -> None:
        """One-shot decoders refuse a join or leave cut short anywhere."""
        request = read_bytes("gossip/tcp/join.request.bin")
        for cut in range(0, len(request), 7):
            self.assertRaises(CodecError, decode_join_request, request[:cut])
        self.assertRaises(
            CodecError, decode_join_request, read_bytes("gossip/tcp/leave.request.bin")
        )
        self.assertRaises(CodecError, decode_leave_response, b"")

    @given(st.binary(max_size=200))
    def test_arbitrary_bytes(self, data: bytes) -> None:
        """Any bytes either decode or raise CodecError."""
        for prefix in [b"\x01\x00", b"\x02\x00", b""]:
            with contextlib.suppress(CodecError):
                decode_packet(prefix + data)
        with contextlib.suppress(CodecError):
            RequestDecoder().feed(b"\x03\x00" + data)
        with contextlib.suppress(CodecError):
            ResponseDecoder(MessageType.JOIN).feed(data)


texts = st.text(max_size=40)
uint64s = st.integers(0, 2**64 - 1)
entries = st.builds(Entry, texts, texts, uint64s, st.booleans(), st.booleans())
delta_entries = st.builds(DeltaEntry, texts, texts, st.lists(entries, max_size=5).map(tuple))
digest_entries = st.builds(DigestEntry, texts, texts, uint64s, st.booleans())


class RoundTripProperties(SynchronousTestCase):
    """Decode inverts encode, and truncation only ever drops a suffix."""

    @given(
        st.builds(DigestHeader, texts, texts, st.booleans()), st.lists(digest_entries, max_size=10)
    )
    def test_digest(self, header: DigestHeader, digest: list[DigestEntry]) -> None:
        """A digest that fits round-trips exactly."""
        self.assertEqual(
            decode_digest(encode_digest(header, digest, 2**20)), DigestPacket(header, tuple(digest))
        )

    @given(st.builds(DeltaHeader, texts, texts), st.lists(delta_entries, max_size=5))
    def test_delta(self, header: DeltaHeader, delta: list[DeltaEntry]) -> None:
        """A delta that fits round-trips exactly."""
        self.assertEqual(
            decode_delta(encode_delta(header, delta, 2**20)), DeltaPacket(header, tuple(delta))
        )

    @given(st.lists(delta_entries, max_size=5), st.integers(50, 800))
    def test_truncated_delta_is_a_prefix(self, delta: list[DeltaEntry], limit: int) -> None:
        """A truncated delta is within the limit, a byte prefix of the full one, and decodes."""
        header = DeltaHeader("n", "a")
        full = encode_delta(header, delta, 2**20)
        cut = encode_delta(header, delta, limit)
        self.assertLessEqual(len(cut), limit)
        self.assertTrue(full.startswith(cut))
        decoded = decode_delta(cut).entries
        for got, sent in zip(decoded, delta, strict=False):
            self.assertEqual((got.id, got.addr), (sent.id, sent.addr))
            self.assertEqual(got.entries, sent.entries[: len(got.entries)])

    @given(
        st.builds(JoinHeader, texts, texts),
        st.lists(delta_entries, max_size=4),
        st.lists(digest_entries, max_size=20),
        st.integers(0, 1000),
    )
    def test_join_and_leave(
        self, header: JoinHeader, delta: list[DeltaEntry], digest: list[DigestEntry], seed: int
    ) -> None:
        """Join and leave requests and responses round-trip, in any split."""
        join = JoinRequest(header, tuple(delta), tuple(digest))
        decoder = RequestDecoder()
        results = [decoder.feed(piece) for piece in pieces(encode_join_request(join), seed)]
        self.assertEqual(results[-1], join)
        leave = LeaveRequest(LeaveHeader(header.node_id, header.addr), tuple(delta))
        self.assertEqual(decode_leave_request(encode_leave_request(leave)), leave)
        response = JoinResponse(header, tuple(delta))
        self.assertEqual(decode_join_response(encode_join_response(response)), response)

# -*- test-case-name: piko.test.cluster.test_codec -*-
"""
Go Piko's gossip wire format (``pkg/gossip/protocol.go``), sans-IO.

Go Piko encodes its gossip messages with ugorji's ``MsgpackHandle`` defaults:
structs as maps whose keys come in declaration order, strings in the *old*
raw msgpack spec (fixstr, ``0xda``, ``0xdb``; never ``str8``), Go ``int`` as
a signed integer and ``uint64`` as an unsigned one, nil slices as msgpack
nil.  A Go node compares nothing byte for byte, but we do: the encoder here
is a small hand-written one so that every packet we send is exactly the
packet a Go node would have sent for the same state, which is what lets the
recorded Go transcripts serve as golden tests.

Decoding uses :mod:`msgpack` and is as tolerant as ugorji: ``str8`` and
``bin`` are accepted wherever a string is expected, nil wherever an array,
a string, a number or a struct is expected (the zero value), unknown map
keys are ignored and missing ones read as zero values.  Hostile input (wrong
types, truncated headers, absurd counts, deep nesting) raises
:class:`CodecError`; memory use is bounded by the size of the input.

UDP packets are a ``[type][version]`` prefix followed by *concatenated*
msgpack maps, read until the end of the packet; a partial trailing object is
dropped, as Go's read-until-EOF loop does.  TCP join and leave exchanges are
msgpack streams read object by object with :class:`RequestDecoder` and
:class:`ResponseDecoder`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeAlias, TypeVar

import msgpack
from attrs import frozen

__all__ = [
    "DEFAULT_MAX_PACKET_SIZE",
    "DEFAULT_MAX_STREAM_SIZE",
    "PROTOCOL_VERSION",
    "CodecError",
    "DeltaEntry",
    "DeltaHeader",
    "DeltaPacket",
    "DigestEntry",
    "DigestHeader",
    "DigestPacket",
    "Entry",
    "JoinHeader",
    "JoinRequest",
    "JoinResponse",
    "LeaveHeader",
    "LeaveRequest",
    "LeaveResponse",
    "MessageType",
    "RequestDecoder",
    "ResponseDecoder",
    "decode_delta",
    "decode_digest",
    "decode_join_request",
    "decode_join_response",
    "decode_leave_request",
    "decode_leave_response",
    "decode_packet",
    "encode_delta",
    "encode_digest",
    "encode_join_request",
    "encode_join_response",
    "encode_leave_request",
    "encode_leave_response",
    "entries_fit",
]

#: The only protocol version Go Piko v0.9.0 speaks; anything else is dropped.
PROTOCOL_VERSION = 0

#: Go's ``cluster.gossip.max-packet-size`` default.
DEFAULT_MAX_PACKET_SIZE = 1400

#: The largest TCP join/leave message we buffer.  Go has no limit; a join
#: carries every node's full state, which for a large cluster with many
#: endpoints is still far below this.
DEFAULT_MAX_STREAM_SIZE = 16 * 1024 * 1024

_UINT64_MAX = 2**64 - 1
_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1


class CodecError(Exception):
    """
    A gossip message could not be encoded or decoded.

    The receiver logs and drops the message (or the TCP connection), as Go
    does with its ``decode: ...`` errors.
    """


class MessageType(enum.IntEnum):
    """The first byte of every UDP packet and TCP request."""

    DIGEST = 1
    DELTA = 2
    JOIN = 3
    LEAVE = 4


# --------------------------------------------------------------------------
# Structures, with their fields in Go's declaration (and so wire) order.


@frozen
class DigestHeader:
    """
    The first map of a digest packet.

    :ivar node_id: the sender.
    :ivar addr: the sender's gossip advertise address, where replies go.
    :ivar request: whether the receiver should answer with its own digest.
    """

    node_id: str = ""
    addr: str = ""
    request: bool = False


@frozen
class DigestEntry:
    """
    What the sender knows of one node: its address, the highest version it
    has applied and whether it left.
    """

    id: str = ""
    addr: str = ""
    version: int = 0
    left: bool = False


@frozen
class DeltaHeader:
    """
    The first map of a delta packet (``entries`` is 0 there), and the header
    in front of each node's entries (``entries`` is how many the sender meant
    to follow, before truncation).
    """

    node_id: str = ""
    addr: str = ""
    entries: int = 0


@frozen
class Entry:
    """
    One versioned key/value of a node's state.

    :ivar internal: an ``_internal:*`` key (left, compact), not user state.
    :ivar deleted: a tombstone; ``value`` is empty.
    """

    key: str = ""
    value: str = ""
    version: int = 0
    internal: bool = False
    deleted: bool = False


@frozen
class DeltaEntry:
    """One node's entries newer than some version, sorted by version ascending."""

    id: str = ""
    addr: str = ""
    entries: tuple[Entry, ...] = ()


@frozen
class JoinHeader:
    """The first map of a TCP join request and of its response."""

    node_id: str = ""
    addr: str = ""


@frozen
class LeaveHeader:
    """
    The first map of a TCP leave request and the whole leave response.

    Go's leaver actually encodes a ``joinHeader``; both have the same keys,
    so the bytes are the same.
    """

    node_id: str = ""
    addr: str = ""


@frozen
class DigestPacket:
    """A decoded UDP digest: the header and the entries that fitted."""

    header: DigestHeader
    entries: tuple[DigestEntry, ...] = ()


@frozen
class DeltaPacket:
    """A decoded UDP delta: the header and each node's entries that fitted."""

    header: DeltaHeader
    entries: tuple[DeltaEntry, ...] = ()


@frozen
class JoinRequest:
    """
    A TCP join request: the joiner's full local state (``delta``) and its
    digest of every node it knows.
    """

    header: JoinHeader
    delta: tuple[DeltaEntry, ...] = ()
    digest: tuple[DigestEntry, ...] = ()


@frozen
class JoinResponse:
    """The answer to a join: the responder and ``Delta(digest, full=True)``."""

    header: JoinHeader
    delta: tuple[DeltaEntry, ...] = ()


@frozen
class LeaveRequest:
    """A TCP leave request: the leaver's full local state, with ``_internal:left``."""

    header: LeaveHeader
    delta: tuple[DeltaEntry, ...] = ()


@frozen
class LeaveResponse:
    """The acknowledgement of a leave: the responder's header alone."""

    header: LeaveHeader


Packet: TypeAlias = DigestPacket | DeltaPacket
Request: TypeAlias = JoinRequest | LeaveRequest
Response: TypeAlias = JoinResponse | LeaveResponse


# --------------------------------------------------------------------------
# Encoding: a few lines of msgpack, exactly as ugorji writes it.


def _str(value: str) -> bytes:
    # Go strings are bytes; surrogateescape keeps any non-UTF-8 bytes we
    # decoded intact on the way back out.
    raw = value.encode("utf-8", "surrogateescape")
    n = len(raw)
    if n < 32:
        return bytes((0xA0 | n,)) + raw
    if n <= 0xFFFF:
        return b"\xda" + n.to_bytes(2, "big") + raw
    if n <= 0xFFFFFFFF:
        return b"\xdb" + n.to_bytes(4, "big") + raw
    raise CodecError(f"string too long to encode: {n} bytes")


def _uint(value: int) -> bytes:
    # ugorji EncodeUint: fixint up to 127, then the smallest unsigned form.
    if 0 <= value <= 0x7F:
        return bytes((value,))
    if 0 <= value <= 0xFF:
        return b"\xcc" + bytes((value,))
    if 0 <= value <= 0xFFFF:
        return b"\xcd" + value.to_bytes(2, "big")
    if 0 <= value <= 0xFFFFFFFF:
        return b"\xce" + value.to_bytes(4, "big")
    if 0 <= value <= _UINT64_MAX:
        return b"\xcf" + value.to_bytes(8, "big")
    raise CodecError(f"not a uint64: {value}")


def _int(value: int) -> bytes:
    # ugorji EncodeInt (PositiveIntUnsigned false): positive values above
    # 127 are *signed* int16/32/64, where msgpack-python would write uint8.
    if -32 <= value <= 0x7F:
        return (value & 0xFF).to_bytes(1, "big")
    if value > 0x7F:
        if value <= 0x7FFF:
            return b"\xd1" + value.to_bytes(2, "big", signed=True)
        if value <= 0x7FFFFFFF:
            return b"\xd2" + value.to_bytes(4, "big", signed=True)
        if value <= _INT64_MAX:
            return b"\xd3" + value.to_bytes(8, "big", signed=True)
    else:
        if value >= -0x80:
            return b"\xd0" + value.to_bytes(1, "big", signed=True)
        if value >= -0x8000:
            return b"\xd1" + value.to_bytes(2, "big", signed=True)
        if value >= -0x80000000:
            return b"\xd2" + value.to_bytes(4, "big", signed=True)
        if value >= _INT64_MIN:
            return b"\xd3" + value.to_bytes(8, "big", signed=True)
    raise CodecError(f"not an int64: {value}")


def _bool(value: bool) -> bytes:
    return b"\xc3" if value else b"\xc2"


def _array_header(n: int) -> bytes:
    if n < 16:
        return bytes((0x90 | n,))
    if n <= 0xFFFF:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


_K_NODE_ID = _str("node_id")
_K_ADDR = _str("addr")
_K_REQUEST = _str("request")
_K_ENTRIES = _str("entries")
_K_ID = _str("id")
_K_VERSION = _str("version")
_K_LEFT = _str("left")
_K_KEY = _str("key")
_K_VALUE = _str("value")
_K_INTERNAL = _str("internal")
_K_DELETED = _str("deleted")
_NIL = b"\xc0"


def _encode_digest_header(h: DigestHeader) -> bytes:
    return b"".join(
        (b"\x83", _K_NODE_ID, _str(h.node_id), _K_ADDR, _str(h.addr), _K_REQUEST, _bool(h.request))
    )


def _encode_digest_entry(e: DigestEntry) -> bytes:
    return b"".join(
        (
            b"\x84",
            _K_ID,
            _str(e.id),
            _K_ADDR,
            _str(e.addr),
            _K_VERSION,
            _uint(e.version),
            _K_LEFT,
            _bool(e.left),
        )
    )


def _encode_delta_header(h: DeltaHeader) -> bytes:
    return b"".join(
        (b"\x83", _K_NODE_ID, _str(h.node_id), _K_ADDR, _str(h.addr), _K_ENTRIES, _int(h.entries))
    )


def _encode_entry(e: Entry) -> bytes:
    return b"".join(
        (
            b"\x85",
            _K_KEY,
            _str(e.key),
            _K_VALUE,
            _str(e.value),
            _K_VERSION,
            _uint(e.version),
            _K_INTERNAL,
            _bool(e.internal),
            _K_DELETED,
            _bool(e.deleted),
        )
    )


def _encode_node_header(node_id: str, addr: str) -> bytes:
    return b"".join((b"\x82", _K_NODE_ID, _str(node_id), _K_ADDR, _str(addr)))


def _encode_list(items: Sequence[Any], encode: Callable[[Any], bytes]) -> bytes:
    # Go's slices are nil when nothing was appended, and nil encodes as
    # msgpack nil, not as an empty array.
    if not items:
        return _NIL
    return _array_header(len(items)) + b"".join(encode(item) for item in items)


def _encode_delta_entry(e: DeltaEntry) -> bytes:
    return b"".join(
        (
            b"\x83",
            _K_ID,
            _str(e.id),
            _K_ADDR,
            _str(e.addr),
            _K_ENTRIES,
            _encode_list(e.entries, _encode_entry),
        )
    )


def _prefix(message_type: MessageType) -> bytes:
    return bytes((message_type, PROTOCOL_VERSION))


def _check_header_fits(size: int, max_packet_size: int) -> None:
    if size > max_packet_size:
        raise CodecError(f"max packet size too small for header: {max_packet_size} < {size}")


def encode_digest(
    header: DigestHeader,
    entries: Iterable[DigestEntry],
    max_packet_size: int = DEFAULT_MAX_PACKET_SIZE,
) -> bytes:
    """
    Encode a UDP digest, keeping the longest prefix of ``entries`` that fits.

    Go shuffles the digest before encoding so that, over several rounds,
    every node gets mentioned even when they do not all fit; shuffling is
    the caller's job here, this function keeps the given order.

    :param max_packet_size: the receiver reads at most this many bytes.
    :raises CodecError: when even the header does not fit.
    """
    parts = [_prefix(MessageType.DIGEST), _encode_digest_header(header)]
    size = len(parts[0]) + len(parts[1])
    _check_header_fits(size, max_packet_size)
    for entry in entries:
        encoded = _encode_digest_entry(entry)
        if size + len(encoded) > max_packet_size:
            break
        parts.append(encoded)
        size += len(encoded)
    return b"".join(parts)


def encode_delta(
    header: DeltaHeader,
    delta: Iterable[DeltaEntry],
    max_packet_size: int = DEFAULT_MAX_PACKET_SIZE,
) -> bytes:
    """
    Encode a UDP delta, truncated as a prefix at ``max_packet_size``.

    Each node's entries are preceded by a :class:`DeltaHeader` announcing how
    many the sender has; when the packet fills up, fewer follow (the
    receiver reads until the end of the packet).  Like Go, the first map
    that does not fit ends the packet, even if a later, shorter one would.

    :raises CodecError: when even the header does not fit.
    """
    parts = [_prefix(MessageType.DELTA), _encode_delta_header(header)]
    size = len(parts[0]) + len(parts[1])
    _check_header_fits(size, max_packet_size)
    for node in delta:
        encoded = _encode_delta_header(DeltaHeader(node.id, node.addr, len(node.entries)))
        if size + len(encoded) > max_packet_size:
            break
        parts.append(encoded)
        size += len(encoded)
        for entry in node.entries:
            encoded = _encode_entry(entry)
            if size + len(encoded) > max_packet_size:
                return b"".join(parts)
            parts.append(encoded)
            size += len(encoded)
    return b"".join(parts)


def entries_fit(
    header: DeltaHeader,
    delta: Iterable[DeltaEntry],
    max_packet_size: int = DEFAULT_MAX_PACKET_SIZE,
) -> bool:
    """
    Whether every entry of ``delta`` fits in *some* UDP delta of this size:
    after the packet's header and its node's header, with nothing else.

    :func:`encode_delta` cuts a delta short where the packet is full and the
    receiver asks again for the rest, so a large delta crosses in several
    rounds; but an entry that does not fit even alone can never be sent by
    UDP, and since a node's entries must be applied in version order, none
    of that node's later entries would ever be applied either.  Such a delta
    has to go over the TCP stream instead.
    """
    start = len(_prefix(MessageType.DELTA)) + len(_encode_delta_header(header))
    for node in delta:
        room = max_packet_size - start
        room -= len(_encode_delta_header(DeltaHeader(node.id, node.addr, len(node.entries))))
        for entry in node.entries:
            if len(_encode_entry(entry)) > room:
                return False
    return True


def encode_join_request(request: JoinRequest) -> bytes:
    """Encode what a joiner writes on its TCP connection."""
    return b"".join(
        (
            _prefix(MessageType.JOIN),
            _encode_node_header(request.header.node_id, request.header.addr),
            _encode_list(request.delta, _encode_delta_entry),
            _encode_list(request.digest, _encode_digest_entry),
        )
    )


def encode_join_response(response: JoinResponse) -> bytes:
    """Encode the answer to a join (no type/version prefix)."""
    return _encode_node_header(response.header.node_id, response.header.addr) + _encode_list(
        response.delta, _encode_delta_entry
    )


def encode_leave_request(request: LeaveRequest) -> bytes:
    """Encode what a leaving node writes on its TCP connection."""
    return b"".join(
        (
            _prefix(MessageType.LEAVE),
            _encode_node_header(request.header.node_id, request.header.addr),
            _encode_list(request.delta, _encode_delta_entry),
        )
    )


def encode_leave_response(response: LeaveResponse) -> bytes:
    """Encode the acknowledgement of a leave (no type/version prefix)."""
    return _encode_node_header(response.header.node_id, response.header.addr)


# --------------------------------------------------------------------------
# Decoding: msgpack objects to structures, with ugorji's tolerance.

_T = TypeVar("_T")


def _as_str(value: object, what: str) -> str:
    if value is None:
        return ""
    if isinstance(value, (bytes, bytearray)):
        # raw=True hands both str and bin over as bytes.
        return bytes(value).decode("utf-8", "surrogateescape")
    raise CodecError(f"{what}: expected a string, got {type(value).__name__}")


def _as_bool(value: object, what: str) -> bool:
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    raise CodecError(f"{what}: expected a bool, got {type(value).__name__}")


def _as_uint(value: object, what: str) -> int:
    if value is None:
        return 0
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _UINT64_MAX:
        return value
    raise CodecError(f"{what}: expected a uint64, got {value!r:.40}")


def _as_int(value: object, what: str) -> int:
    if value is None:
        return 0
    if isinstance(value, int) and not isinstance(value, bool) and _INT64_MIN <= value <= _INT64_MAX:
        return value
    raise CodecError(f"{what}: expected an int64, got {value!r:.40}")


def _as_map(value: object, what: str) -> dict[Any, Any]:
    if value is None:
        return {}
    if isinstance(value, dict):
        return value
    raise CodecError(f"{what}: expected a map, got {type(value).__name__}")


def _as_list(value: object, what: str, convert: Callable[[object], _T]) -> tuple[_T, ...]:
    if value is None:
        return ()
    if isinstance(value, list):
        return tuple(convert(item) for item in value)
    raise CodecError(f"{what}: expected an array, got {type(value).__name__}")


def _fields(value: object, what: str) -> dict[bytes, Any]:
    # Map keys may be str or bin (both bytes here); other keys cannot name a
    # field and are ignored, like unknown names.
    return {key: item for key, item in _as_map(value, what).items() if isinstance(key, bytes)}


def _digest_header(value: object) -> DigestHeader:
    f = _fields(value, "digest header")
    return DigestHeader(
        _as_str(f.get(b"node_id"), "node_id"),
        _as_str(f.get(b"addr"), "addr"),
        _as_bool(f.get(b"request"), "request"),
    )


def _digest_entry(value: object) -> DigestEntry:
    f = _fields(value, "digest entry")
    return DigestEntry(
        _as_str(f.get(b"id"), "id"),
        _as_str(f.get(b"addr"), "addr"),
        _as_uint(f.get(b"version"), "version"),
        _as_bool(f.get(b"left"), "left"),
    )


def _delta_header(value: object) -> DeltaHeader:
    f = _fields(value, "delta header")
    return DeltaHeader(
        _as_str(f.get(b"node_id"), "node_id"),
        _as_str(f.get(b"addr"), "addr"),
        _as_int(f.get(b"entries"), "entries"),
    )


def _entry(value: object) -> Entry:
    f = _fields(value, "entry")
    return Entry(
        _as_str(f.get(b"key"), "key"),
        _as_str(f.get(b"value"), "value"),
        _as_uint(f.get(b"version"), "version"),
        _as_bool(f.get(b"internal"), "internal"),
        _as_bool(f.get(b"deleted"), "deleted"),
    )


def _delta_entry(value: object) -> DeltaEntry:
    f = _fields(value, "delta entry")
    return DeltaEntry(
        _as_str(f.get(b"id"), "id"),
        _as_str(f.get(b"addr"), "addr"),
        _as_list(f.get(b"entries"), "entries", _entry),
    )


def _node_header(value: object, what: str) -> tuple[str, str]:
    f = _fields(value, what)
    return _as_str(f.get(b"node_id"), "node_id"), _as_str(f.get(b"addr"), "addr")


def _unpacker(max_size: int) -> msgpack.Unpacker:
    max_size = max(max_size, 1)
    return msgpack.Unpacker(
        raw=True,
        strict_map_key=False,
        max_buffer_size=max_size,
        # Every legitimate array element is a map of at least ~20 bytes:
        # refusing longer announced arrays bounds what the C unpacker
        # preallocates for a hostile length prefix.
        max_array_len=max(max_size // 16, 16),
        max_map_len=max(max_size // 2, 16),
        max_ext_len=max_size,
    )


_DECODE_ERRORS = (ValueError, TypeError, OverflowError, msgpack.UnpackException)


def _packet_objects(data: bytes, expected: MessageType) -> tuple[object, list[object]]:
    """
    Check the prefix and read the first object and every complete one after it.

    :return: the header object and the objects that followed it, dropping a
        partial trailing object as Go's read-until-EOF loop does.
    :raises CodecError: on a bad prefix or a missing or malformed header.
    """
    if len(data) < 2:
        raise CodecError(f"packet too small: {len(data)}")
    if data[0] != expected:
        raise CodecError(f"incorrect message type: {data[0]}")
    if data[1] != PROTOCOL_VERSION:
        raise CodecError(f"unsupported version: {data[1]}")
    body = data[2:]
    unpacker = _unpacker(len(body))
    try:
        unpacker.feed(body)
        try:
            header = unpacker.unpack()
        except msgpack.OutOfData:
            raise CodecError("truncated header") from None
        objects = []
        while True:
            try:
                objects.append(unpacker.unpack())
            except msgpack.OutOfData:
                break
    except _DECODE_ERRORS as e:
        raise CodecError(f"malformed msgpack: {e}") from None
    return header, objects


def decode_digest(data: bytes) -> DigestPacket:
    """
    Decode a UDP digest packet.

    :raises CodecError: when the packet is not a well-formed digest.
    """
    header, objects = _packet_objects(data, MessageType.DIGEST)
    return DigestPacket(_digest_header(header), tuple(_digest_entry(o) for o in objects))


def decode_delta(data: bytes) -> DeltaPacket:
    """
    Decode a UDP delta packet.

    Each node header is followed by up to its announced number of entries;
    fewer when the sender truncated the packet, all the remaining objects
    when the count is negative (Go's ``i != n`` loop).

    :raises CodecError: when the packet is not a well-formed delta.
    """
    header, objects = _packet_objects(data, MessageType.DELTA)
    nodes = []
    i = 0
    while i < len(objects):
        node = _delta_header(objects[i])
        i += 1
        end = len(objects) if node.entries < 0 else min(len(objects), i + node.entries)
        entries = tuple(_entry(o) for o in objects[i:end])
        i = end
        nodes.append(DeltaEntry(node.node_id, node.addr, entries))
    return DeltaPacket(_delta_header(header), tuple(nodes))


def decode_packet(data: bytes) -> Packet:
    """
    Decode a UDP packet of either kind, by its type byte.

    :raises CodecError: for join/leave or unknown types, a bad version or a
        malformed packet.
    """
    if len(data) >= 1 and data[0] == MessageType.DELTA:
        return decode_delta(data)
    if len(data) >= 1 and data[0] == MessageType.DIGEST:
        return decode_digest(data)
    if len(data) < 2:
        raise CodecError(f"packet too small: {len(data)}")
    raise CodecError(f"unsupported message type: {data[0]}")


class _ObjectStream:
    """Read whole msgpack objects from a byte stream, within a size bound."""

    def __init__(self, max_size: int) -> None:
        self._unpacker = _unpacker(max_size)
        self._max_size = max_size
        self._received = 0
        self.objects: list[object] = []

    def feed(self, data: bytes, want: int) -> bool:
        """Add bytes; return whether ``want`` objects have now arrived."""
        self._received += len(data)
        if self._received > self._max_size:
            raise CodecError(f"message larger than {self._max_size} bytes")
        try:
            self._unpacker.feed(data)
            while len(self.objects) < want:
                try:
                    self.objects.append(self._unpacker.unpack())
                except msgpack.OutOfData:
                    return False
        except _DECODE_ERRORS as e:
            raise CodecError(f"malformed msgpack: {e}") from None
        return True


class RequestDecoder:
    """
    The receiving side of a TCP gossip connection: reads one join or leave
    request, fed in whatever pieces the transport delivers.

    Anything after the request is ignored, as Go reads only what it needs
    before answering and closing.
    """

    def __init__(self, max_size: int = DEFAULT_MAX_STREAM_SIZE) -> None:
        """:param max_size: the most bytes we accept before giving up."""
        self._prefix = b""
        self._type: MessageType | None = None
        self._stream = _ObjectStream(max_size)
        self._result: Request | None = None

    def feed(self, data: bytes) -> Request | None:
        """
        Add received bytes.

        :return: the request once complete (and then on every later call),
            else ``None``.
        :raises CodecError: on an unknown type or version, a malformed or
            oversized request; the connection should be dropped.
        """
        if self._result is not None:
            return self._result
        if self._type is None:
            need = 2 - len(self._prefix)
            self._prefix += data[:need]
            data = data[need:]
            if len(self._prefix) < 2:
                return None
            if self._prefix[1] != PROTOCOL_VERSION:
                raise CodecError(f"unsupported version: {self._prefix[1]}")
            if self._prefix[0] not in (MessageType.JOIN, MessageType.LEAVE):
                raise CodecError(f"unsupported message type: {self._prefix[0]}")
            self._type = MessageType(self._prefix[0])
        want = 3 if self._type is MessageType.JOIN else 2
        if not self._stream.feed(data, want):
            return None
        objects = self._stream.objects
        node_id, addr = _node_header(objects[0], "request header")
        delta = _as_list(objects[1], "delta", _delta_entry)
        if self._type is MessageType.JOIN:
            digest = _as_list(objects[2], "digest", _digest_entry)
            self._result = JoinRequest(JoinHeader(node_id, addr), delta, digest)
        else:
            self._result = LeaveRequest(LeaveHeader(node_id, addr), delta)
        return self._result


class ResponseDecoder:
    """
    The dialling side of a TCP gossip connection: reads the answer to the
    join or leave request it sent.
    """

    def __init__(self, request_type: MessageType, max_size: int = DEFAULT_MAX_STREAM_SIZE) -> None:
        """
        :param request_type: :attr:`MessageType.JOIN` or :attr:`MessageType.LEAVE`,
            which says what shape of answer to expect.
        """
        if request_type not in (MessageType.JOIN, MessageType.LEAVE):
            raise ValueError(f"no response to a {request_type!r}")
        self._type = request_type
        self._stream = _ObjectStream(max_size)
        self._result: Response | None = None

    def feed(self, data: bytes) -> Response | None:
        """
        Add received bytes.

        :return: the response once complete, else ``None``.
        :raises CodecError: on a malformed or oversized response.
        """
        if self._result is not None:
            return self._result
        want = 2 if self._type is MessageType.JOIN else 1
        if not self._stream.feed(data, want):
            return None
        objects = self._stream.objects
        node_id, addr = _node_header(objects[0], "response header")
        if self._type is MessageType.JOIN:
            delta = _as_list(objects[1], "delta", _delta_entry)
            self._result = JoinResponse(JoinHeader(node_id, addr), delta)
        else:
            self._result = LeaveResponse(LeaveHeader(node_id, addr))
        return self._result


def _decode_whole(decoder: RequestDecoder | ResponseDecoder, data: bytes, kind: type[_T]) -> _T:
    result = decoder.feed(data)
    if result is None:
        raise CodecError("truncated message")
    if not isinstance(result, kind):
        raise CodecError(f"expected a {kind.__name__}, got a {type(result).__name__}")
    return result


def decode_join_request(data: bytes) -> JoinRequest:
    """Decode a whole join request (prefix included)."""
    return _decode_whole(RequestDecoder(max(len(data), 1)), data, JoinRequest)


def decode_leave_request(data: bytes) -> LeaveRequest:
    """Decode a whole leave request (prefix included)."""
    return _decode_whole(RequestDecoder(max(len(data), 1)), data, LeaveRequest)


def decode_join_response(data: bytes) -> JoinResponse:
    """Decode a whole join response."""
    return _decode_whole(ResponseDecoder(MessageType.JOIN, max(len(data), 1)), data, JoinResponse)


def decode_leave_response(data: bytes) -> LeaveResponse:
    """Decode a whole leave response."""
    return _decode_whole(ResponseDecoder(MessageType.LEAVE, max(len(data), 1)), data, LeaveResponse)

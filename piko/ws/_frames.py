# -*- test-case-name: piko.test.ws.test_frames -*-
"""
Encoding of outgoing binary WebSocket frames.

Autobahn's ``sendMessage`` validates its arguments, keeps traffic statistics
and joins header and payload into one new string for every message.  On the
hot path (one message per yamux frame) that work is pure overhead: our
messages are always binary, unfragmented and uncompressed.  These helpers build
just the header, so the payload can be handed to the TCP transport without an
extra copy.
"""

from __future__ import annotations

import random
import struct

from autobahn.websocket.xormasker import create_xor_masker

_OPCODE_BINARY_FIN = 0x82
_MASK_BIT = 0x80

_SHORT = struct.Struct("!BB")
_MEDIUM = struct.Struct("!BBH")
_LONG = struct.Struct("!BBQ")
_MASK_KEY = struct.Struct("!I")
_LENGTH16 = struct.Struct("!H")
_LENGTH64 = struct.Struct("!Q")


def binary_frame_header(length: int, mask_key: bytes | None = None) -> bytes:
    """
    Return the header of one final (FIN) binary frame carrying ``length`` bytes.

    :param length: payload length; the smallest length encoding is used, as
        RFC 6455 requires.
    :param mask_key: the 4-byte masking key appended to the header for
        client-to-server frames, or ``None`` for an unmasked server frame.
    """
    mask_bit = 0 if mask_key is None else _MASK_BIT
    if length < 126:
        header = _SHORT.pack(_OPCODE_BINARY_FIN, mask_bit | length)
    elif length < 0x10000:
        header = _MEDIUM.pack(_OPCODE_BINARY_FIN, mask_bit | 126, length)
    else:
        header = _LONG.pack(_OPCODE_BINARY_FIN, mask_bit | 127, length)
    if mask_key is None:
        return header
    return header + mask_key


def new_mask_key() -> bytes:
    """
    Return a fresh 4-byte masking key.

    Masking only protects naive intermediaries against cache poisoning by
    script-controlled payloads; like autobahn, a non-cryptographic generator is
    enough for a non-browser client.
    """
    return _MASK_KEY.pack(random.getrandbits(32))


def mask_payload(mask_key: bytes, payload: bytes) -> bytes:
    """
    Return ``payload`` XOR-ed with ``mask_key`` (the same call unmasks).

    Small payloads are XOR-ed as one Python integer (a native masker costs several
    microseconds just to set up); larger ones use autobahn's masker, native code (NVX)
    when available.
    """
    size = len(payload)
    if not size:
        return payload
    if size < _NATIVE_MASK_FROM:
        key = (mask_key * ((size >> 2) + 1))[:size]
        return (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(
            size, "little"
        )
    result: bytes = create_xor_masker(mask_key, size).process(payload)
    return result


#: From this payload size on, autobahn's native masker is faster than integer XOR.
_NATIVE_MASK_FROM = 768


def parse_frame_header(data: bytes, pos: int, size: int) -> tuple[int, int, int] | None:
    """
    Read the frame header that starts at ``data[pos]``.

    :param size: ``len(data)``, which the caller already has.
    :return: ``None`` if the header is not complete before ``size``; else
        ``(first_byte, payload_length, header_length)``, where the header
        length includes the extended length and the masking key, and the
        payload length is ``-1`` if it was not encoded in the fewest bytes
        (RFC 6455 section 5.2 requires that) or is 2**63 or more.
    """
    if size - pos < 2:
        return None
    second = data[pos + 1]
    length = second & 0x7F
    header_size = 6 if second & _MASK_BIT else 2
    if length == 126:
        header_size += 2
        if size - pos < header_size:
            return None
        (length,) = _LENGTH16.unpack_from(data, pos + 2)
        if length < 126:
            length = -1
    elif length == 127:
        header_size += 8
        if size - pos < header_size:
            return None
        (length,) = _LENGTH64.unpack_from(data, pos + 2)
        if length < 0x10000 or length > 0x7FFFFFFFFFFFFFFF:
            length = -1
    elif size - pos < header_size:
        return None
    return data[pos], length, header_size

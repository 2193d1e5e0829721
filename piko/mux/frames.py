# -*- test-case-name: piko.test.mux.test_frames -*-
"""
The yamux frame codec: 12-byte big-endian headers and Data payloads, sans-IO.

Header layout (hashicorp/yamux ``const.go``)::

    version:u8  type:u8  flags:u16  stream_id:u32  length:u32

``length`` is the payload length for Data, the window delta for
WindowUpdate, the opaque ping value for Ping and the error code for GoAway.
Only Data frames carry a payload.
"""

from __future__ import annotations

import struct
from enum import IntEnum, IntFlag
from typing import NamedTuple

from piko.mux.errors import ProtocolError

PROTOCOL_VERSION = 0
HEADER = struct.Struct(">BBHII")
HEADER_SIZE = HEADER.size
_unpack_header = HEADER.unpack_from
_pack_header = HEADER.pack


class FrameType(IntEnum):
    """The four yamux message types."""

    DATA = 0
    WINDOW_UPDATE = 1
    PING = 2
    GO_AWAY = 3


class Flag(IntFlag):
    """Header flags; several may be set at once."""

    SYN = 0x1
    ACK = 0x2
    FIN = 0x4
    RST = 0x8


class GoAwayCode(IntEnum):
    """GoAway codes: 0 is a graceful stop, the others end the session."""

    NORMAL = 0
    PROTOCOL_ERROR = 1
    INTERNAL_ERROR = 2


class Frame(NamedTuple):
    """
    One decoded frame.

    A ``NamedTuple`` rather than an attrs class: one is made for every frame
    on the hot path and tuple construction is the cheapest Python offers.
    """

    type: int
    flags: int
    stream_id: int
    length: int
    payload: bytes = b""


def encode_frame(
    frame_type: int, flags: int, stream_id: int, length: int, payload: bytes = b""
) -> bytes:
    """
    Encode one frame, header and payload together.

    :param length: for Data this must equal ``len(payload)``.
    """
    return _pack_header(PROTOCOL_VERSION, frame_type, flags, stream_id, length) + payload


_DATA = int(FrameType.DATA)
_GO_AWAY = int(FrameType.GO_AWAY)


class FrameDecoder:
    """
    Incremental decoder: feed it bytes in pieces of any size, get whole frames.

    :param max_payload: the largest Data payload accepted.  A larger length
        can never fit a receive window, so it is a protocol error found from
        the header alone, before any of the payload is buffered: a hostile
        length near 2**32 costs nothing.
    """

    def __init__(self, max_payload: int) -> None:
        self._buffer = bytearray()
        self._max_payload = max_payload

    @property
    def buffered(self) -> int:
        """How many bytes wait for the rest of their frame."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Frame]:
        """
        Add ``data`` and return the frames completed by it, in order.

        :raises ProtocolError: on a bad version, type or payload length; the
            decoder must not be used afterwards.
        """
        buffer = self._buffer
        if buffer:
            buffer += data
            source: bytes | bytearray = buffer
        else:
            source = data
        frames: list[Frame] = []
        offset = 0
        end = len(source)
        with memoryview(source) as view:
            while end - offset >= HEADER_SIZE:
                version, frame_type, flags, stream_id, length = _unpack_header(source, offset)
                if version != PROTOCOL_VERSION:
                    raise ProtocolError(f"invalid protocol version {version}")
                if frame_type == _DATA:
                    if length > self._max_payload:
                        raise ProtocolError(f"data frame of {length} bytes exceeds any window")
                    stop = offset + HEADER_SIZE + length
                    if stop > end:
                        break
                    payload = bytes(view[offset + HEADER_SIZE : stop])
                    frames.append(Frame(frame_type, flags, stream_id, length, payload))
                    offset = stop
                elif frame_type <= _GO_AWAY:
                    frames.append(Frame(frame_type, flags, stream_id, length))
                    offset += HEADER_SIZE
                else:
                    raise ProtocolError(f"invalid message type {frame_type}")
        if source is buffer:
            if offset:
                del buffer[:offset]
        elif offset < end:
            buffer += data[offset:]
        return frames

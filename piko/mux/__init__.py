"""
yamux stream multiplexing, byte-compatible with hashicorp/yamux as Go Piko uses it.

:mod:`piko.mux.frames` is the sans-IO frame codec, :mod:`piko.mux.session`
the session (a Twisted :class:`~twisted.internet.protocol.Protocol` over any
byte transport), :mod:`piko.mux.stream` the per-stream Twisted transport and
:mod:`piko.mux.endpoints` the open/accept endpoints.
"""

from piko.mux.endpoints import StreamClientEndpoint, StreamServerEndpoint
from piko.mux.errors import (
    KeepAliveTimeout,
    MuxError,
    ProtocolError,
    RemoteGoAway,
    SessionClosed,
    StreamOpenTimeout,
    StreamReset,
    WriteTimeout,
)
from piko.mux.frames import Flag, Frame, FrameDecoder, FrameType, GoAwayCode, encode_frame
from piko.mux.session import Session, SessionConfig
from piko.mux.stream import Stream, StreamAddress

__all__ = [
    "Flag",
    "Frame",
    "FrameDecoder",
    "FrameType",
    "GoAwayCode",
    "KeepAliveTimeout",
    "MuxError",
    "ProtocolError",
    "RemoteGoAway",
    "Session",
    "SessionClosed",
    "SessionConfig",
    "Stream",
    "StreamAddress",
    "StreamClientEndpoint",
    "StreamOpenTimeout",
    "StreamReset",
    "StreamServerEndpoint",
    "WriteTimeout",
    "encode_frame",
]

# -*- test-case-name: piko.test.ws.test_stream -*-
"""
Tunables shared by the server and client WebSocket adapters.
"""

from __future__ import annotations

from attrs import frozen

#: 16 MiB: Go Piko sends WebSocket messages of at most 256 KiB (one yamux
#: window), so this leaves a wide margin while still bounding what one peer can
#: make us buffer inside autobahn before a frame is rejected.
DEFAULT_MAX_MESSAGE_SIZE = 16 * 1024 * 1024


@frozen
class WebSocketOptions:
    """
    Limits and timeouts for one WebSocket byte-stream connection.

    :ivar max_message_size: largest incoming message payload, in bytes.  A larger
        message is a protocol error (the connection is dropped), because Go Piko
        never sends one and an unbounded size would let a peer pin memory.
    :ivar max_frame_size: largest incoming frame payload, in bytes.
    :ivar open_handshake_timeout: seconds from the start of the opening
        handshake (server: the hand-over of the request head; client: the start
        of the TCP connect) until the connection must be open.  Go's dialer
        uses 60 s.  ``0`` disables it.
    :ivar close_timeout: seconds we allow, after sending a Close frame, for our
        buffered bytes to reach the peer before the TCP connection is aborted.
        Go never answers Close frames meaningfully, so we never wait for a reply.
    :ivar half_close_timeout: seconds a half-closed stream may stay so (we
        sent our Close frame and still read, or the peer sent its Close frame
        and we still write) before the stream is closed in full.  ``0``, the
        default, waits for ever: the other side may legitimately take long
        (it is relaying a reply), and the yamux session and stream layers
        have their own timeouts.
    """

    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    max_frame_size: int = DEFAULT_MAX_MESSAGE_SIZE
    open_handshake_timeout: float = 60.0
    close_timeout: float = 5.0
    half_close_timeout: float = 0.0

"""Socket options Piko wants on every TCP connection it makes or accepts."""

from __future__ import annotations

import contextlib
from typing import Any

#: The write buffer a WebSocket connection may hold before it pauses its
#: producer.  Twisted's default (64 KiB) is smaller than one yamux frame, so a
#: busy session would pause and resume after every frame.
WEBSOCKET_BUFFER_SIZE = 512 * 1024


def tune(transport: Any, *, buffer_size: int | None = None) -> None:
    """
    Turn Nagle's algorithm off (Go does by default) and optionally raise the write buffer.

    Without TCP_NODELAY a small request written as two segments waits ~40 ms
    for the peer's delayed ACK.  Works through TLS wrappers, which forward
    unknown attributes to the TCP transport; transports that are not TCP
    (UNIX sockets, test transports) are left alone.
    """
    with contextlib.suppress(AttributeError, OSError, NotImplementedError):
        transport.setTcpNoDelay(True)
    if buffer_size is not None:
        tcp = getattr(transport, "transport", None) or transport
        if hasattr(tcp, "bufferSize"):
            tcp.bufferSize = max(tcp.bufferSize, buffer_size)

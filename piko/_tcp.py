# -*- test-case-name: piko.test.test_tcp -*-
"""Socket options Piko wants on every TCP connection it makes or accepts."""

from __future__ import annotations

import contextlib
import types
from errno import EWOULDBLOCK
from typing import Any

from twisted.internet import main, tcp

#: The write buffer a WebSocket connection may hold before it pauses its
#: producer.  Twisted's default (64 KiB) is smaller than one yamux frame, so a
#: busy session would pause and resume after every frame.
WEBSOCKET_BUFFER_SIZE = 512 * 1024

#: The most bytes one read takes from a socket whose write buffer was raised.
#: Twisted reads ``bufferSize`` bytes at a time; CPython allocates the whole
#: size for every ``recv`` and shrinks it afterwards, and 512 KiB is above
#: glibc's mmap threshold, so each read of a 1 KiB message cost an ``mmap``,
#: an ``mremap`` and a ``munmap``.  64 KiB comes from the heap, and is also
#: the most that the WebSocket parser takes in one piece.
READ_SIZE = 64 * 1024


def _bounded_read(self: tcp.Connection) -> Any:
    """
    ``tcp.Connection.doRead``, reading at most :data:`READ_SIZE` bytes.

    A copy of Twisted's method with the read size changed:
    ``piko.test.test_upstream_sources`` fails when Twisted's changes.
    """
    try:
        data = self.socket.recv(READ_SIZE)
    except OSError as se:
        if se.args[0] == EWOULDBLOCK:
            return None
        return main.CONNECTION_LOST
    return self._dataReceived(data)


def tune(transport: Any, *, buffer_size: int | None = None) -> None:
    """
    Turn Nagle's algorithm off (Go does by default) and optionally raise the write buffer.

    Without TCP_NODELAY a small request written as two segments waits ~40 ms
    for the peer's delayed ACK.  Works through TLS wrappers, which forward
    unknown attributes to the TCP transport; transports that are not TCP
    (UNIX sockets, test transports) are left alone.  Raising the write buffer
    of a Twisted TCP connection keeps its reads at :data:`READ_SIZE`.
    """
    with contextlib.suppress(AttributeError, OSError, NotImplementedError):
        transport.setTcpNoDelay(True)
    if buffer_size is not None:
        tcp_transport = getattr(transport, "transport", None) or transport
        if hasattr(tcp_transport, "bufferSize"):
            tcp_transport.bufferSize = max(tcp_transport.bufferSize, buffer_size)
            if (
                isinstance(tcp_transport, tcp.Connection)
                and type(tcp_transport).doRead is tcp.Connection.doRead
            ):
                tcp_transport.doRead = types.MethodType(_bounded_read, tcp_transport)  # type: ignore[method-assign]

"""Tests for piko._tcp."""

from __future__ import annotations

import contextlib
import socket

from twisted.internet import main, tcp
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactor, StringTransport
from twisted.trial.unittest import SynchronousTestCase

from piko._tcp import READ_SIZE, WEBSOCKET_BUFFER_SIZE, tune


class _Collector(Protocol):
    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def dataReceived(self, data: bytes) -> None:
        self.chunks.append(data)


class TuneTests(SynchronousTestCase):
    def connection(self) -> tuple[tcp.Connection, socket.socket, _Collector]:
        listener = socket.create_server(("127.0.0.1", 0))
        self.addCleanup(listener.close)
        theirs = socket.create_connection(listener.getsockname(), timeout=5)
        ours, _ = listener.accept()
        ours.setblocking(False)
        self.addCleanup(ours.close)
        self.addCleanup(theirs.close)
        protocol = _Collector()
        connection = tcp.Connection(ours, protocol, MemoryReactor())
        connection.connected = True
        return connection, theirs, protocol

    def test_raised_buffer_keeps_reads_small(self) -> None:
        """
        A raised write buffer does not raise the read size: each read takes
        at most READ_SIZE bytes, EOF still ends the connection.
        """
        connection, peer, protocol = self.connection()
        tune(connection, buffer_size=WEBSOCKET_BUFFER_SIZE)
        self.assertEqual(connection.bufferSize, WEBSOCKET_BUFFER_SIZE)
        payload = bytes(range(256)) * 1024  # 256 KiB
        peer.setblocking(False)
        sent = 0
        result = None
        for _ in range(1000):
            if sent < len(payload):
                with contextlib.suppress(BlockingIOError):
                    sent += peer.send(payload[sent:])
                if sent == len(payload):
                    peer.shutdown(socket.SHUT_WR)
            result = connection.doRead()
            if result is not None:
                break
        self.assertIs(result, main.CONNECTION_DONE)
        self.assertEqual(b"".join(protocol.chunks), payload)
        self.assertLessEqual(max(map(len, protocol.chunks)), READ_SIZE)

    def test_nothing_to_read(self) -> None:
        """A read that would block returns None, as Twisted's does."""
        connection, _peer, protocol = self.connection()
        tune(connection, buffer_size=WEBSOCKET_BUFFER_SIZE)
        self.assertIsNone(connection.doRead())
        self.assertEqual(protocol.chunks, [])

    def test_other_transports_untouched(self) -> None:
        """A transport without TCP options or buffer is left as it is."""
        transport = StringTransport()
        tune(transport, buffer_size=WEBSOCKET_BUFFER_SIZE)
        self.assertFalse(hasattr(transport, "bufferSize"))

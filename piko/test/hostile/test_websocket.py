# -*- test-case-name: piko.test.hostile.test_websocket -*-
"""
Hostile WebSocket input on the upstream port, through the real stack
(``HTTPPortFactory`` + ``UpstreamPortHandler`` + autobahn): each bad frame
ends that one connection (a drop, as autobahn fails protocol violations;
a Close frame 1003 for text) and unregisters its
upstream, while another upstream's session goes on.
"""

from __future__ import annotations

import struct
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from piko.http.listening import HTTPPortFactory
from piko.mux.frames import HEADER, Flag, FrameType
from piko.server.registry import UpstreamRegistry
from piko.server.upstream_port import UpstreamPortHandler
from piko.test.ws.test_server import KEY, client_frame
from piko.ws import WebSocketAcceptor, WebSocketOptions
from piko.ws.server import accept_value

PEER = IPv4Address("TCP", "127.0.0.1", 50000)


def upgrade(endpoint: str) -> bytes:
    return (
        f"GET /piko/v1/upstream/{endpoint} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
        f"Sec-WebSocket-Key: {KEY}\r\n\r\n"
    ).encode()


def unmasked_frame(opcode: int, payload: bytes) -> bytes:
    return struct.pack("!BB", 0x80 | opcode, len(payload)) + payload


PING = HEADER.pack(0, FrameType.PING, Flag.SYN, 0, 5)
PONG = HEADER.pack(0, FrameType.PING, Flag.ACK, 0, 5)


class HostileWebSocketTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.registry: UpstreamRegistry[Any] = UpstreamRegistry()
        options = WebSocketOptions(max_message_size=64 * 1024, max_frame_size=64 * 1024)
        self.handler = UpstreamPortHandler(
            self.clock, self.registry, WebSocketAcceptor(self.clock, options)
        )
        self.factory = HTTPPortFactory(self.handler, self.clock)
        self.bystander = self.connect("good")

    def connect(self, endpoint: str) -> tuple[Any, StringTransport]:
        transport = StringTransport(peerAddress=PEER)
        protocol = self.factory.buildProtocol(PEER)
        protocol.makeConnection(transport)
        protocol.dataReceived(upgrade(endpoint))
        self.assertIn(accept_value(KEY).encode(), transport.value())
        transport.clear()
        return protocol, transport

    def assertBystanderServes(self) -> None:
        protocol, transport = self.bystander
        transport.clear()
        protocol.dataReceived(client_frame(2, PING))
        self.assertEqual(transport.value(), b"\x82\x0c" + PONG)
        self.assertEqual(self.registry.endpoints(), {"good": 1})

    def assertEnded(self, data: bytes, close_code: int | None) -> None:
        protocol, transport = self.connect("bad")
        self.assertEqual(self.registry.endpoints(), {"good": 1, "bad": 1})
        protocol.dataReceived(data)
        self.assertTrue(transport.disconnecting or transport.disconnected)
        value = transport.value()
        if close_code is None:
            # Dropped without a Close frame (autobahn's fail-by-drop on protocol violations).
            self.assertTrue(transport.disconnected)
            self.assertEqual(value, b"")
        elif close_code == 0:
            # yamux's GoAway(1) in a binary message, then the close.
            go_away = HEADER.pack(0, FrameType.GO_AWAY, 0, 0, 1)
            self.assertTrue(value.startswith(b"\x82\x0c" + go_away))
        else:
            self.assertEqual(value[0], 0x88)
            self.assertEqual(struct.unpack("!H", value[2:4])[0], close_code)
        protocol.connectionLost()
        self.assertEqual(self.registry.endpoints(), {"good": 1})
        self.assertEqual(self.factory.connections, {self.bystander[0]})
        self.assertBystanderServes()

    def test_text_frame(self) -> None:
        """A text frame (Go Piko sends binary only) closes with 1003."""
        self.assertEnded(client_frame(1, b"hello"), 1003)

    def test_oversized_frame(self) -> None:
        """A frame over the size limit is dropped from its header, no payload awaited."""
        head = struct.pack("!BBQ", 0x82, 0x80 | 127, 1 << 40) + b"\x01\x02\x03\x04"
        self.assertEnded(head, None)

    def test_oversized_message(self) -> None:
        """A message whose fragments add up past the limit is dropped."""
        part = b"\x00" * 40 * 1024  # empty yamux Data frames on stream 0: ignored
        self.assertEnded(client_frame(2, part, fin=False) + client_frame(0, part), None)

    def test_unmasked_client_frame(self) -> None:
        """A client frame without a mask is dropped."""
        self.assertEnded(unmasked_frame(2, PING), None)

    def test_control_frame_too_long(self) -> None:
        """A ping with more than 125 bytes of payload is dropped."""
        self.assertEnded(client_frame(9, b"p" * 200), None)

    def test_fragmented_control_frame(self) -> None:
        """A control frame without FIN is dropped."""
        self.assertEnded(client_frame(9, b"p", fin=False), None)

    def test_reserved_bits_and_opcodes(self) -> None:
        """Reserved bits or an unknown opcode are dropped."""
        self.assertEnded(b"\xc2\x80\x01\x02\x03\x04", None)
        self.assertEnded(client_frame(3, b"x"), None)

    def test_garbage_yamux_after_handshake(self) -> None:
        """Bad yamux on a valid WebSocket gets GoAway(1) and ends that session only."""
        self.assertEnded(client_frame(2, HEADER.pack(7, 0, 0, 0, 0)), 0)

    def test_handshake_that_never_finishes(self) -> None:
        """An upgrade head never completed is dropped at the header timeout, silently."""
        transport = StringTransport(peerAddress=PEER)
        protocol = self.factory.buildProtocol(PEER)
        protocol.makeConnection(transport)
        protocol.dataReceived(upgrade("slow")[:-10])
        self.clock.advance(10)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(transport.value(), b"")
        protocol.connectionLost()
        self.assertEqual(self.factory.pending, set())
        self.assertBystanderServes()

    def test_bad_handshakes(self) -> None:
        """A bad version or key is answered with gorilla's 400 and a close, no session made."""
        for bad in (b"Sec-WebSocket-Version: 13", b"Sec-WebSocket-Key: " + KEY.encode()):
            transport = StringTransport(peerAddress=PEER)
            protocol = self.factory.buildProtocol(PEER)
            protocol.makeConnection(transport)
            replacement = b"Sec-WebSocket-Version: 99" if b"Version" in bad else b"X-No: key"
            protocol.dataReceived(upgrade("bad").replace(bad, replacement))
            self.assertTrue(transport.value().startswith(b"HTTP/1.1 400 Bad Request\r\n"))
            protocol.connectionLost()
        self.assertEqual(self.registry.endpoints(), {"good": 1})
        self.assertBystanderServes()

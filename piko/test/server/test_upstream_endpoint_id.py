"""The upstream route bounds endpoint ids (issue 11, fault 7): see ``MAX_ENDPOINT_ID_BYTES``."""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from piko.cluster.syncer import MAX_ENDPOINT_ID_BYTES
from piko.http.server import HTTPServerProtocol
from piko.server.registry import UpstreamRegistry
from piko.server.upstream_port import UpstreamPortHandler
from piko.ws.server import WebSocketAcceptor


def upgrade(endpoint_id: str) -> bytes:
    return (
        f"GET /piko/v1/upstream/{endpoint_id} HTTP/1.1\r\n"
        "Host: piko\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


class EndpointIdLengthTests(SynchronousTestCase):
    def connect(self, endpoint_id: str) -> tuple[bytes, UpstreamRegistry[Any]]:
        clock = Clock()
        registry: UpstreamRegistry[Any] = UpstreamRegistry()
        protocol = HTTPServerProtocol(
            UpstreamPortHandler(clock, registry, WebSocketAcceptor(clock)), clock
        )
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(upgrade(endpoint_id))
        clock.advance(0)
        return transport.value(), registry

    def test_longest_id_accepted(self) -> None:
        """An id of exactly MAX_ENDPOINT_ID_BYTES bytes is upgraded and registered."""
        endpoint_id = "e" * MAX_ENDPOINT_ID_BYTES
        answer, registry = self.connect(endpoint_id)
        self.assertTrue(answer.startswith(b"HTTP/1.1 101 "))
        self.assertEqual(registry.endpoints(), {endpoint_id: 1})

    def test_longer_id_refused_with_400(self) -> None:
        """One byte more is a 400 with a Go-style JSON error naming the bound; nothing registers."""
        answer, registry = self.connect("e" * (MAX_ENDPOINT_ID_BYTES + 1))
        head, _, body = answer.partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 400 Bad Request\r\n"))
        self.assertIn(b"\r\nContent-Type: application/json; charset=utf-8\r\n", head + b"\r\n")
        self.assertEqual(body, b'{"error":"endpoint id too long: 257 bytes, at most 256"}')
        self.assertEqual(registry.endpoints(), {})

    def test_bound_counts_utf8_bytes(self) -> None:
        """The bound is on the UTF-8 bytes gossip carries, not on characters."""
        answer, _ = self.connect("%C3%A9" * 129)  # 129 x "é" = 258 bytes
        self.assertTrue(answer.startswith(b"HTTP/1.1 400 "))
        self.assertIn(b"258 bytes", answer)

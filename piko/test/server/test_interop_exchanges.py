"""
The recorded Go Piko exchanges of ``interop/errors``, replayed against our ports.

Each recorded request is fed to our HTTP front end with the port's real
handler (no sockets); our answer must equal Go's byte for byte once the
``Date`` value is masked.  The node is set up as the recording's was: id
``node-s5``, proxy ``127.0.0.1:31400``, admin ``127.0.0.1:31402``, one upstream
each on ``ep-dead``, ``ep-tcp-dead`` and ``ep1``.

Not replayed here: exchanges that need a live agent behind the endpoint
(``proxy-ok-ep1``, ``proxy-upstream-refused*``; the end-to-end tests cover
them) and the gossip status routes (they come with the cluster).
"""

from __future__ import annotations

import re
from typing import Any

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from piko.http.server import HTTPServerProtocol
from piko.server.admin import AdminRoutes, LocalNode
from piko.server.admin_port import AdminPortHandler
from piko.server.proxy_port import ProxyPortHandler
from piko.server.registry import UpstreamRegistry
from piko.server.upstream_port import UpstreamPortHandler
from piko.test.interop import read_bytes, read_json
from piko.ws.server import WebSocketAcceptor

NEEDS_AGENT_OR_CLUSTER = {
    "proxy-ok-ep1",
    "proxy-upstream-refused",
    "proxy-upstream-refused-post",
    "admin-status-gossip-nodes",
    "admin-status-gossip-nodes-by-id",
    "admin-status-gossip-nodes-unknown",
}

_DATE = re.compile(rb"\r\nDate: [^\r]+\r\n")


def mask_date(response: bytes) -> bytes:
    return _DATE.sub(b"\r\nDate: <masked>\r\n", response)


class RecordedExchangeTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_790_000_000)
        registry: UpstreamRegistry[Any] = UpstreamRegistry()
        for endpoint_id in ("ep-dead", "ep-tcp-dead", "ep1"):
            registry.add(endpoint_id, object())
        acceptor = WebSocketAcceptor(self.clock)
        routes = AdminRoutes(
            LocalNode("node-s5", "127.0.0.1:31400", "127.0.0.1:31402"), registry, lambda: True
        )
        empty: UpstreamRegistry[Any] = UpstreamRegistry()
        self.handlers = {
            "proxy": ProxyPortHandler(self.clock, empty, acceptor),
            "upstream": UpstreamPortHandler(self.clock, empty, acceptor),
            "admin": AdminPortHandler(routes),
        }

    def answer(self, port: str, request: bytes) -> StringTransport:
        protocol = HTTPServerProtocol(self.handlers[port], self.clock)
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(request)
        return transport

    def test_every_recorded_exchange(self) -> None:
        """Every replayable recorded request gets Go's exact answer, connection kept open."""
        exchanges = read_json("errors/exchanges/index.json")
        replayed = []
        for exchange in exchanges:
            name = exchange["name"]
            if name in NEEDS_AGENT_OR_CLUSTER:
                continue
            request = read_bytes(f"errors/exchanges/{name}.request.bin")
            expected = read_bytes(f"errors/exchanges/{name}.response.bin")
            transport = self.answer(exchange["port"], request)
            self.assertEqual(mask_date(transport.value()), mask_date(expected), name)
            if exchange["port"] != "upstream" or b"Upgrade: websocket" not in request:
                # A refused WebSocket handshake is the one place we close where
                # gorilla keeps the connection: the client asked to leave HTTP.
                self.assertFalse(transport.disconnecting, name)
            replayed.append(name)
        self.assertEqual(len(replayed), len(exchanges) - len(NEEDS_AGENT_OR_CLUSTER))

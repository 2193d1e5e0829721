"""
The recorded Go ``piko forward`` connection, replayed against our proxy port.

Its exact bytes (the WebSocket handshake to ``/_piko/v1/tcp/ep-tcp``, then
masked binary messages) go to our proxy port with an upstream session on
``ep-tcp``.  Our 101 must equal the Go server's, the stream must be opened
before it (as Go does), and the forward's payloads must come out of the
stream in order; what the upstream answers must reach the forward as binary
messages carrying the same bytes.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from piko.http.server import HTTPServerProtocol
from piko.mux.frames import Flag, FrameType
from piko.mux.session import Session
from piko.server.proxy_port import ProxyPortHandler
from piko.server.registry import UpstreamRegistry
from piko.test.interop import read_bytes, read_json, read_jsonl, websocket_payloads
from piko.test.mux.helpers import RecorderFactory, frames_of
from piko.ws.server import WebSocketAcceptor


class RecordedForwardTests(SynchronousTestCase):
    def test_go_forward_against_proxy_port(self) -> None:
        """A Go forward's handshake gets Go's 101 and its bytes flow both ways through a stream."""
        clock = Clock()
        registry: UpstreamRegistry[Any] = UpstreamRegistry()
        upstream = Session(clock, client=False)
        upstream_transport = StringTransport()
        upstream.makeConnection(upstream_transport)
        registry.add("ep-tcp", upstream)
        agent = Session(clock, client=True)
        agent.makeConnection(StringTransport())
        accepted = RecorderFactory()
        agent.listen(accepted)

        base = "forward-tcp/forward-conn/conn1"
        summary = read_json(f"{base}.summary.json")
        forward_bytes = read_bytes(f"{base}.forward-to-server.bin")
        head_len = summary["request"]["head_len"]
        proxy = HTTPServerProtocol(
            ProxyPortHandler(clock, registry, WebSocketAcceptor(clock)), clock
        )
        client = StringTransport()
        proxy.makeConnection(client)
        proxy.dataReceived(forward_bytes[:head_len])
        clock.advance(0)

        recorded_101 = read_bytes(f"{base}.server-to-forward.bin")[
            : summary["response"]["head_len"]
        ]
        self.assertEqual(client.value(), recorded_101)
        [syn] = frames_of(upstream_transport.value())
        self.assertEqual(
            (syn.type, syn.flags, syn.stream_id), (FrameType.WINDOW_UPDATE, Flag.SYN, 2)
        )

        proxy.dataReceived(forward_bytes[head_len:])
        agent.dataReceived(upstream_transport.value())
        upstream_transport.clear()
        [stream_end] = accepted.built
        sent = websocket_payloads(forward_bytes, head_len)
        self.assertEqual(bytes(stream_end.received), sent)

        client.clear()
        stream_end.transport.write(b"echo back")
        upstream.dataReceived(agent.transport.value())
        self.assertEqual(websocket_payloads(client.value(), 0), b"echo back")
        frames = read_jsonl(f"{base}.ws-frames.jsonl")
        self.assertTrue(all(f["opname"] in ("binary", "close") for f in frames))

"""
A recorded Go agent, replayed byte for byte against our upstream and proxy ports.

The Go agent's exact bytes (its WebSocket handshake, then masked and
fragmented frames carrying yamux) are fed to our upstream port, and the
recorded downstream requests to our proxy port, in the recorded order: each
stream's agent bytes are fed once the request that opens that stream has
been sent.  Our 101 must equal the Go server's, and what our proxy answers
each client must equal what the Go server answered (``Date`` masked).
"""

from __future__ import annotations

import re
from typing import Any

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from piko.http.server import HTTPServerProtocol
from piko.server.proxy_port import ProxyPortHandler
from piko.server.registry import UpstreamRegistry
from piko.server.upstream_port import UpstreamPortHandler
from piko.test.interop import read_bytes, read_json, read_jsonl
from piko.ws.server import WebSocketAcceptor

_DATE = re.compile(rb"\r\nDate: [^\r]+\r\n")


def mask_date(data: bytes) -> bytes:
    return _DATE.sub(b"\r\nDate: <masked>\r\n", data)


def agent_cut_points(scenario: str) -> dict[int, int]:
    """For each stream, the offset in the agent's bytes just past its last frame."""
    base = f"{scenario}/upstream-conn/conn1"
    ws_frames = {
        frame["n"]: frame
        for frame in read_jsonl(f"{base}.ws-frames.jsonl")
        if frame["dir"] == "agent-to-server"
    }
    cuts: dict[int, int] = {}
    for frame in read_jsonl(f"{base}.yamux-frames.jsonl"):
        if frame["dir"] != "agent-to-server" or not frame["stream_id"]:
            continue
        numbers = frame["ws_frames_hdr"] + frame.get("ws_frames_payload", [])
        for number in numbers:
            ws = ws_frames[number]
            end = ws["off"] + len(bytes.fromhex(ws["hdr_hex"])) + ws["payload_len"]
            cuts[frame["stream_id"]] = max(cuts.get(frame["stream_id"], 0), end)
    return cuts


class RecordedAgentTests(SynchronousTestCase):
    def replay(self, scenario: str) -> None:
        clock = Clock()
        clock.advance(1_790_000_000)
        registry: UpstreamRegistry[Any] = UpstreamRegistry()
        acceptor = WebSocketAcceptor(clock)
        upstream_protocol = HTTPServerProtocol(
            UpstreamPortHandler(clock, registry, acceptor), clock
        )
        upstream_transport = StringTransport()
        upstream_protocol.makeConnection(upstream_transport)

        base = f"{scenario}/upstream-conn/conn1"
        summary = read_json(f"{base}.summary.json")
        agent_bytes = read_bytes(f"{base}.agent-to-server.bin")
        head_len = summary["request"]["head_len"]
        upstream_protocol.dataReceived(agent_bytes[:head_len])
        recorded_101 = read_bytes(f"{base}.server-to-agent.bin")[: summary["response"]["head_len"]]
        self.assertEqual(upstream_transport.value(), recorded_101)
        clock.advance(0)
        endpoint_id = summary["request"]["start_line"].split(" ")[1].split("/")[-1]
        self.assertEqual(registry.endpoints(), {endpoint_id: 1})

        proxy = ProxyPortHandler(clock, registry, acceptor)
        fed = head_len
        cuts = agent_cut_points(scenario)
        for index, stream_id in enumerate(sorted(cuts), start=1):
            client = StringTransport()
            protocol = HTTPServerProtocol(proxy, clock)
            protocol.makeConnection(client)
            request = read_bytes(f"{scenario}/downstream/conn{index}.client-to-proxy.bin")
            protocol.dataReceived(request)
            clock.advance(0)
            upstream_protocol.dataReceived(agent_bytes[fed : cuts[stream_id]])
            fed = cuts[stream_id]
            clock.advance(0)
            expected = read_bytes(f"{scenario}/downstream/conn{index}.proxy-to-client.bin")
            self.assertEqual(mask_date(client.value()), mask_date(expected), f"stream {stream_id}")

    def test_upstream_http(self) -> None:
        """Three requests through a recorded Go agent get the answers the Go server gave."""
        self.replay("upstream-http")

    def test_flow_control(self) -> None:
        """A 300 KB upload and download through a recorded Go agent match Go's answers."""
        self.replay("upstream-http-flow-control")

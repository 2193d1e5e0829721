"""
Replays of byte streams recorded from Go Piko v0.9.0 against our yamux session.

Each test takes one recorded upstream connection (a Go agent talking to a Go
server), turns the captured WebSocket bytes into the yamux byte stream each
side saw, and plays the Go agent's side into our *server* session while
performing the server's recorded actions (open a stream, write the recorded
request bytes, half-close) at the recorded times on a :class:`Clock`.

What is compared, and why:

- the Go agent's bytes must all be accepted: no protocol error, no window
  overflow (our window accounting agrees with Go's), each stream's data
  delivered exactly;
- our server's frames must equal Go's, header for header, with two
  timing-dependent exceptions: plain WindowUpdate deltas (Go grants window
  when its reader runs, we when our consumer drains; both at half a window
  or more, which the test checks), and how a stream's data is cut into Data
  frames (the writer's buffering, not the protocol), so consecutive Data
  frames of one stream are compared as one run of bytes.  Likewise, when both
  sides ping at the same instant, whether a side sends its own ping or its
  answer first is a race, so adjacent Ping frames are compared as a set.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from piko.mux.frames import Flag, Frame, FrameType
from piko.mux.session import Session, SessionConfig
from piko.mux.stream import Stream
from piko.test.interop import read_bytes, read_json, read_jsonl, websocket_payloads
from piko.test.mux.helpers import HalfCloseRecorder, RecorderFactory, frames_of

HALF_WINDOW = 128 * 1024


def runs(frames: list[Frame]) -> list[tuple[Any, ...]]:
    """Frames with plain WindowUpdates dropped and adjacent Data of a stream merged."""
    out: list[tuple[Any, ...]] = []
    for frame in frames:
        if frame.type == FrameType.WINDOW_UPDATE and frame.flags == 0:
            continue
        if frame.type == FrameType.DATA and frame.flags == 0:
            if out and out[-1][0] == "data" and out[-1][1] == frame.stream_id:
                out[-1] = ("data", frame.stream_id, out[-1][2] + frame.payload)
            else:
                out.append(("data", frame.stream_id, frame.payload))
            continue
        entry = (frame.type, frame.flags, frame.stream_id, frame.length, frame.payload)
        if frame.type == FrameType.PING and out and out[-1][0] == "pings":
            out[-1] = ("pings", tuple(sorted((*out[-1][1], entry))))
        elif frame.type == FrameType.PING:
            out.append(("pings", (entry,)))
        else:
            out.append(entry)
    return out


class Recording:
    """One recorded upstream connection, split into per-direction frames."""

    def __init__(self, scenario: str, conn: str = "conn1") -> None:
        base = f"{scenario}/upstream-conn/{conn}"
        summary = read_json(f"{base}.summary.json")
        self.frames = read_jsonl(f"{base}.yamux-frames.jsonl")
        streams = {
            "agent-to-server": websocket_payloads(
                read_bytes(f"{base}.agent-to-server.bin"), summary["request"]["head_len"]
            ),
            "server-to-agent": websocket_payloads(
                read_bytes(f"{base}.server-to-agent.bin"), summary["response"]["head_len"]
            ),
        }
        for record in self.frames:
            data = streams[record["dir"]]
            start = record["stream_off"]
            size = 12 + (record["length"] if record["type"] == FrameType.DATA else 0)
            record["bytes"] = data[start : start + size]
        reads = read_jsonl(f"{scenario}/upstream-conn/relay-reads.jsonl")
        self.start = next(r["t"] for r in reads if r.get("dir") == "s2c")
        self.base = base

    def recorded(self, direction: str) -> list[Frame]:
        return frames_of(b"".join(r["bytes"] for r in self.frames if r["dir"] == direction))

    def stream_bytes(self, stream_id: int, direction: str) -> bytes:
        return read_bytes(f"{self.base}.streams/stream-{stream_id}.{direction}.bin")


class ReplayTests(SynchronousTestCase):
    def replay(self, scenario: str, conn: str = "conn1") -> None:
        recording = Recording(scenario, conn)
        clock = Clock()
        clock.advance(recording.start)
        session = Session(clock, client=False, config=SessionConfig(coalesce_control=False))
        transport = StringTransport()
        session.makeConnection(transport)
        streams: dict[int, Stream] = {}
        openers: dict[int, HalfCloseRecorder] = {}
        for record in recording.frames:
            if record["t"] > clock.seconds():
                clock.advance(record["t"] - clock.seconds())
            frame = frames_of(record["bytes"])[0]
            if record["dir"] == "agent-to-server":
                session.dataReceived(record["bytes"])
                self.assertFalse(session.closed, f"frame {record['n']} closed the session")
                continue
            if frame.type == FrameType.WINDOW_UPDATE and frame.flags & Flag.SYN:
                openers[frame.stream_id] = HalfCloseRecorder()
                streams[frame.stream_id] = session.open_stream(openers[frame.stream_id])
                self.assertEqual(streams[frame.stream_id].stream_id, frame.stream_id)
            elif frame.type == FrameType.DATA:
                streams[frame.stream_id].write(frame.payload)
            elif frame.type == FrameType.WINDOW_UPDATE and frame.flags & Flag.FIN:
                streams[frame.stream_id].loseConnection()
        ours = frames_of(transport.value())
        self.assertEqual(runs(ours), runs(recording.recorded("server-to-agent")))
        for frame in ours:
            if frame.type == FrameType.WINDOW_UPDATE and frame.flags == 0:
                self.assertGreaterEqual(frame.length, HALF_WINDOW)
        for stream_id, opener in openers.items():
            self.assertEqual(
                bytes(opener.received), recording.stream_bytes(stream_id, "agent-to-server")
            )
        agent_frames = recording.recorded("agent-to-server")
        if agent_frames and agent_frames[-1].type == FrameType.GO_AWAY:
            self.assertTrue(session.remote_go_away)

    def replay_agent(self, scenario: str, conn: str = "conn1") -> None:
        """Play the Go server's side into our client (agent) session and compare."""
        recording = Recording(scenario, conn)
        clock = Clock()
        clock.advance(recording.start)
        session = Session(clock, client=True, config=SessionConfig(coalesce_control=False))
        transport = StringTransport()
        session.makeConnection(transport)
        accepted = RecorderFactory(HalfCloseRecorder)
        session.listen(accepted)
        for record in recording.frames:
            if record["t"] > clock.seconds():
                clock.advance(record["t"] - clock.seconds())
            frame = frames_of(record["bytes"])[0]
            if record["dir"] == "server-to-agent":
                session.dataReceived(record["bytes"])
                self.assertFalse(session.closed, f"frame {record['n']} closed the session")
                continue
            stream = session._streams.get(frame.stream_id)
            if frame.type == FrameType.DATA:
                assert stream is not None
                stream.write(frame.payload)
            elif frame.type == FrameType.WINDOW_UPDATE and frame.flags & Flag.FIN:
                assert stream is not None
                stream.loseConnection()
            elif frame.type == FrameType.GO_AWAY:
                session.go_away(frame.length)
        self.assertEqual(
            runs(frames_of(transport.value())), runs(recording.recorded("agent-to-server"))
        )
        received = [bytes(protocol.received) for protocol in accepted.built]
        expected = [
            recording.stream_bytes(stream_id, "server-to-agent")
            for stream_id in sorted({r["stream_id"] for r in recording.frames if r["stream_id"]})
        ]
        self.assertEqual(received, expected)

    def test_agent_side(self) -> None:
        """Our agent-side session answers the recorded Go server exactly as the Go agent did."""
        for scenario in (
            "upstream-http",
            "upstream-http-flow-control",
            "upstream-idle-keepalive",
            "upstream-websocket-passthrough",
            "forward-tcp",
        ):
            self.replay_agent(scenario)

    def test_upstream_http(self) -> None:
        """Three proxied HTTP requests replay frame for frame."""
        self.replay("upstream-http")

    def test_flow_control(self) -> None:
        """A 300 KB upload and download replay within the 256 KiB windows both ways."""
        self.replay("upstream-http-flow-control")

    def test_idle_keepalive(self) -> None:
        """An idle session pings at 30 s and 60 s and answers the agent's pings, as Go did."""
        self.replay("upstream-idle-keepalive")

    def test_websocket_passthrough(self) -> None:
        """A WebSocket relayed over one stream replays exactly."""
        self.replay("upstream-websocket-passthrough")

    def test_forward_tcp(self) -> None:
        """A TCP echo through forward and agent replays, half-close included."""
        self.replay("forward-tcp")

    def test_agent_error_answers(self) -> None:
        """The agent's 502 answers and its early FIN replay."""
        self.replay("errors", "conn1")
        self.replay("errors", "conn2")

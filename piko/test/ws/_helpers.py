"""
Shared fakes for the WebSocket adapter tests.
"""

from __future__ import annotations

import functools
import hashlib
import struct

from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from piko.test.interop import read_bytes, read_json, read_jsonl
from piko.ws import WebSocketAcceptor


class Recorder(Protocol):
    """An inner protocol that records what it is given, optionally echoing it."""

    def __init__(self, echo: bool = False) -> None:
        self.echo = echo
        self.received: list[bytes] = []
        self.lost: Failure | None = None
        self.made = False

    def connectionMade(self) -> None:
        self.made = True

    def dataReceived(self, data: bytes) -> None:
        self.received.append(data)
        if self.echo:
            self.transport.write(data)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.lost = reason

    @property
    def data(self) -> bytes:
        return b"".join(self.received)


@implementer(IHalfCloseableProtocol)
class HalfCloseRecorder(Recorder):
    """A L{Recorder} that accepts half-closes and records them."""

    def __init__(self, echo: bool = False) -> None:
        super().__init__(echo)
        self.read_lost = False

    def readConnectionLost(self) -> None:
        self.read_lost = True

    def writeConnectionLost(self) -> None:
        pass


class FrontEnd(Protocol):
    """
    A stand-in for the HTTP front end: it reads the request head, hands the
    connection to the acceptor and then forwards every event to it.
    """

    def __init__(self, acceptor: WebSocketAcceptor, on_handshake) -> None:
        self.acceptor = acceptor
        self.on_handshake = on_handshake
        self.buffer = b""
        self.websocket: Protocol | None = None

    def dataReceived(self, data: bytes) -> None:
        if self.websocket is not None:
            self.websocket.dataReceived(data)
            return
        self.buffer += data
        if b"\r\n\r\n" in self.buffer:
            assert self.transport is not None
            self.websocket = self.acceptor.accept(self.transport, self.buffer, self.on_handshake)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        if self.websocket is not None:
            self.websocket.connectionLost(reason)


def unmask(data: bytes, key: bytes) -> bytes:
    """Unmask ``data`` with a 4-byte key (independently of autobahn's masker)."""
    n = len(data)
    pad = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(pad, "big")).to_bytes(n, "big")


@functools.cache
def capture(name: str) -> tuple[dict, bytes, bytes, list[dict], list[dict]]:
    """Return summary, c2s bytes, s2c bytes, WS frames and yamux frames of ``conn1``."""
    base = f"{name}/upstream-conn/conn1"
    return (
        read_json(f"{base}.summary.json"),
        read_bytes(f"{base}.agent-to-server.bin"),
        read_bytes(f"{base}.server-to-agent.bin"),
        read_jsonl(f"{base}.ws-frames.jsonl"),
        read_jsonl(f"{base}.yamux-frames.jsonl"),
    )


@functools.cache
def _payload_stream(direction: str, name: str) -> bytes:
    _, c2s, s2c, frames, _ = capture(name)
    return payload_stream(direction, c2s if direction == "agent-to-server" else s2c, frames)


def expected_stream(direction: str, name: str) -> bytes:
    """Return (cached) the payload byte stream of one direction of a capture."""
    return _payload_stream(direction, name)


def payload_stream(direction: str, raw: bytes, frames: list[dict]) -> bytes:
    """
    Rebuild the byte stream carried by the data frames of one direction from
    the raw capture, checking each frame against the decoder's record.
    """
    out = []
    for frame in frames:
        if frame["dir"] != direction or frame["opcode"] not in (0, 2):
            continue
        start = frame["off"] + len(bytes.fromhex(frame["hdr_hex"]))
        payload = raw[start : start + frame["payload_len"]]
        if frame["masked"]:
            payload = unmask(payload, bytes.fromhex(frame["mask_key"]))
        if "payload_hex" in frame:
            assert payload.hex() == frame["payload_hex"]
        else:
            assert hashlib.sha256(payload).hexdigest() == frame["payload_sha256"]
        out.append(payload)
    return b"".join(out)


def check_yamux_stream(direction: str, stream: bytes, yamux: list[dict]) -> None:
    """Assert every yamux header of ``direction`` sits at its offset in ``stream``."""
    end = 0
    for frame in yamux:
        if frame["dir"] != direction:
            continue
        offset = frame["stream_off"]
        assert stream[offset : offset + 12].hex() == frame["hdr_hex"], frame["n"]
        end = offset + 12 + (frame["length"] if frame["type"] == 0 else 0)
    assert end == len(stream), (end, len(stream))


CLOSE = struct.Struct("!H")

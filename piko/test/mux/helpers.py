"""Test helpers: a pair of sessions joined by in-memory transports."""

from __future__ import annotations

from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from zope.interface import implementer

from piko.mux.frames import Frame, FrameDecoder
from piko.mux.session import Session, SessionConfig


class Recorder(Protocol):
    """Records what a stream delivers."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.lost: Failure | None = None
        self.made = False

    def connectionMade(self) -> None:
        self.made = True

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:  # noqa: B008
        self.lost = reason


@implementer(IHalfCloseableProtocol)
class HalfCloseRecorder(Recorder):
    """A recorder that sees half-closes."""

    read_closed = False
    write_closed = False

    def readConnectionLost(self) -> None:
        self.read_closed = True

    def writeConnectionLost(self) -> None:
        self.write_closed = True


class RecorderFactory(Factory):
    """Builds recorders and keeps them in order."""

    def __init__(self, protocol: type[Recorder] = Recorder) -> None:
        self.protocol_class = protocol
        self.built: list[Recorder] = []

    def buildProtocol(self, addr: object) -> Recorder:
        protocol = self.protocol_class()
        self.built.append(protocol)
        return protocol


def frames_of(data: bytes) -> list[Frame]:
    """Decode everything in ``data``."""
    return FrameDecoder(2**31).feed(data)


class SessionPair:
    """A server session and a client session joined by StringTransports."""

    def __init__(self, config: SessionConfig | None = None) -> None:
        self.clock = Clock()
        self.server = Session(self.clock, client=False, config=config)
        self.client = Session(self.clock, client=True, config=config)
        self.server_transport = StringTransport()
        self.client_transport = StringTransport()
        self.server.makeConnection(self.server_transport)
        self.client.makeConnection(self.client_transport)

    def take_server_output(self) -> bytes:
        data = self.server_transport.value()
        self.server_transport.clear()
        return data

    def take_client_output(self) -> bytes:
        data = self.client_transport.value()
        self.client_transport.clear()
        return data

    def pump(self, rounds: int = 1000) -> None:
        """Deliver bytes both ways until nothing moves (bounded)."""
        for _ in range(rounds):
            self.clock.advance(0)
            to_client = self.take_server_output()
            to_server = self.take_client_output()
            if not to_client and not to_server:
                return
            if to_client and not self.client.closed:
                self.client.dataReceived(to_client)
            if to_server and not self.server.closed:
                self.server.dataReceived(to_server)
        raise AssertionError("the sessions never went quiet")

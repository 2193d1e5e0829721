"""
yamux over real WebSocket connections on loopback: many streams, a slow reader, bounded memory.

Eight streams carry 64 MiB together from a sender to a receiver that reads
slowly.  The data must arrive intact, and the bytes the sender holds (stream
backlogs plus the TCP transport's buffer) must stay within the flow-control
bounds the whole time: per stream one high-water mark plus one write, and
the transport's buffer plus one frame.
"""

from __future__ import annotations

import hashlib
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from piko.mux.session import Session
from piko.mux.stream import HIGH_WATER
from piko.test.e2e.harness import reactor
from piko.ws.client import connect
from piko.ws.server import WebSocketAcceptor

STREAMS = 8
PER_STREAM = 8 * 1024 * 1024
CHUNK = 64 * 1024
FRAME = 256 * 1024


class SlowReader(Protocol):
    """Reads a stream, pausing it for a moment after every MiB."""

    done: Deferred[str]

    def connectionMade(self) -> None:
        self.count = 0
        self.digest = hashlib.sha256()
        self.done = self.factory.results.pop(0)

    def dataReceived(self, data: bytes) -> None:
        before = self.count
        self.count += len(data)
        self.digest.update(data)
        if self.count // (1024 * 1024) != before // (1024 * 1024):
            self.transport.pauseProducing()
            reactor.callLater(0.002, self.transport.resumeProducing)
        if self.count == PER_STREAM:
            self.done.callback(self.digest.hexdigest())


class Receiver(Protocol):
    """Takes over each TCP connection for a WebSocket whose inner protocol is a yamux session."""

    def connectionMade(self) -> None:
        factory: Any = self.factory
        self.websocket = factory.acceptor.accept(self.transport, b"", factory.on_handshake)

    def dataReceived(self, data: bytes) -> None:
        self.websocket.dataReceived(data)

    def connectionLost(self, reason: Any = None) -> None:
        self.websocket.connectionLost(reason)


@implementer(IPushProducer)
class Writer(Protocol):
    """Writes PER_STREAM bytes into its stream as fast as flow control allows."""

    def __init__(self, monitor: Any, seed: int) -> None:
        self.monitor = monitor
        self.block = bytes((seed + i) % 256 for i in range(CHUNK))
        self.sent = 0
        self.paused = False

    def connectionMade(self) -> None:
        self.transport.registerProducer(self, True)
        self.resumeProducing()

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        while not self.paused and self.sent < PER_STREAM:
            self.transport.write(self.block)
            self.sent += CHUNK
            self.monitor()
        if self.sent >= PER_STREAM:
            self.transport.unregisterProducer()

    def stopProducing(self) -> None:
        self.paused = True


def expected_digest(seed: int) -> str:
    block = bytes((seed + i) % 256 for i in range(CHUNK))
    digest = hashlib.sha256()
    for _ in range(PER_STREAM // CHUNK):
        digest.update(block)
    return digest.hexdigest()


class MuxOverWebSocketTests(TestCase):
    timeout = 120

    @inlineCallbacks
    def test_eight_streams_slow_reader_bounded(self) -> Any:
        """64 MiB over 8 streams reach a slow reader intact; the sender's buffers stay bounded."""
        results: list[Deferred[str]] = [Deferred() for _ in range(STREAMS)]
        readers = Factory.forProtocol(SlowReader)
        readers.results = list(results)  # type: ignore[attr-defined]
        receivers: list[Session] = []

        def on_handshake(request: Any) -> Session:
            session = Session(reactor, client=True)
            session.listen(readers)
            receivers.append(session)
            return session

        server_factory = Factory.forProtocol(Receiver)
        server_factory.acceptor = WebSocketAcceptor(reactor)  # type: ignore[attr-defined]
        server_factory.on_handshake = on_handshake  # type: ignore[attr-defined]
        port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(server_factory)
        self.addCleanup(port.stopListening)

        sender: Session = yield connect(
            reactor,
            f"ws://127.0.0.1:{port.getHost().port}/mux",
            Factory.forProtocol(lambda: Session(reactor, client=False)),
        )

        def close_all() -> None:
            for session in (sender, *receivers):
                session.close()

        self.addCleanup(close_all)
        tcp = sender.transport._websocket.transport
        streams: list[Any] = []
        peak = [0]

        def monitor() -> None:
            held = sum(len(stream._send_buffer) for stream in streams)
            tcp_held = len(tcp.dataBuffer) + tcp._tempDataLen - tcp.offset
            peak[0] = max(peak[0], held + tcp_held)

        for seed in range(STREAMS):
            streams.append(sender.open_stream(Writer(monitor, seed)))
        digests = yield DeferredList(results, fireOnOneErrback=True)
        self.assertEqual([d for _, d in digests], [expected_digest(s) for s in range(STREAMS)])
        bound = STREAMS * (HIGH_WATER + CHUNK) + tcp.bufferSize + FRAME + 12
        self.assertLess(peak[0], bound)
        self.assertGreater(peak[0], 0)

"""
Throughput of WebSocket binary messages over real loopback sockets.

Prints MiB/s for: raw Twisted TCP; plain autobahn binary messages of 16 KiB and
64 KiB (client -> server); and the same through piko.ws's byte-stream adapters.
Each case runs for a bounded time (``--seconds``, default 2).

    AUTOBAHN_USE_NVX=1 python benchmarks/ws_messages.py
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from autobahn.twisted.websocket import (
    WebSocketClientFactory,
    WebSocketClientProtocol,
    WebSocketServerFactory,
    WebSocketServerProtocol,
)
from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from piko.ws import WebSocketAcceptor, connect

reactor: object = _reactor
MiB = 1024 * 1024


class Sink(Protocol):
    """Counts received bytes."""

    received = 0

    def dataReceived(self, data: bytes) -> None:
        Sink.received += len(data)


class Pusher:
    """A push producer writing ``chunk`` to ``transport`` until stopped."""

    def __init__(self, transport, write, chunk: bytes, deadline: float) -> None:
        self.transport, self.write, self.chunk, self.deadline = transport, write, chunk, deadline
        self.paused = False
        self.done: Deferred = Deferred()

    def resumeProducing(self) -> None:
        self.paused = False
        while not self.paused:
            if time.monotonic() > self.deadline:
                self.transport.unregisterProducer()
                self.done.callback(None)
                return
            self.write(self.chunk)

    def pauseProducing(self) -> None:
        self.paused = True

    def stopProducing(self) -> None:
        self.paused = True


def measure(name: str, start: float) -> None:
    elapsed = time.monotonic() - start
    print(f"{name:<34} {Sink.received / MiB / elapsed:8.1f} MiB/s")


class FrontEnd(Protocol):
    def __init__(self, acceptor: WebSocketAcceptor) -> None:
        self.acceptor, self.buffer, self.ws = acceptor, b"", None

    def dataReceived(self, data: bytes) -> None:
        if self.ws is not None:
            self.ws.dataReceived(data)
            return
        self.buffer += data
        if b"\r\n\r\n" in self.buffer:
            self.ws = self.acceptor.accept(self.transport, self.buffer, lambda request: Sink())

    def connectionLost(self, reason=None) -> None:
        if self.ws is not None:
            self.ws.connectionLost(reason)


@inlineCallbacks
def run_case(name: str, port: int, server_factory, dial, write_of, size: int, seconds: float):
    Sink.received = 0
    listening = yield TCP4ServerEndpoint(reactor, port, interface="127.0.0.1").listen(
        server_factory
    )
    client = yield dial(port)
    transport = client.transport
    start = time.monotonic()
    pusher = Pusher(transport, write_of(client), b"\x5a" * size, start + seconds)
    transport.registerProducer(pusher, True)
    pusher.resumeProducing()
    yield pusher.done
    measure(f"{name} {size // 1024} KiB", start)
    transport.loseConnection()
    yield listening.stopListening()


class AbServer(WebSocketServerProtocol):
    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        Sink.received += len(payload)


class AbClient(WebSocketClientProtocol):
    def onOpen(self) -> None:
        self.factory.opened.callback(self)


@inlineCallbacks
def main(seconds: float):
    def raw_dial(port):
        return TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(Factory.forProtocol(Protocol))

    yield run_case(
        "raw TCP", 39001, Factory.forProtocol(Sink), raw_dial,
        lambda p: p.transport.write, 65536, seconds,
    )  # fmt: skip

    def ab_server():
        factory = WebSocketServerFactory(reactor=reactor)
        factory.protocol = AbServer
        factory.setProtocolOptions(autoFragmentSize=0)
        return factory

    def ab_dial(port):
        factory = WebSocketClientFactory(f"ws://127.0.0.1:{port}/", reactor=reactor)
        factory.protocol = AbClient
        factory.setProtocolOptions(autoFragmentSize=0)
        factory.opened = Deferred()
        TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(factory)
        return factory.opened

    for i, size in enumerate((16384, 65536)):
        yield run_case(
            "autobahn binary messages", 39010 + i, ab_server(), ab_dial,
            lambda p: (lambda data: p.sendMessage(data, isBinary=True)), size, seconds,
        )  # fmt: skip

    acceptor = WebSocketAcceptor(reactor)

    def piko_dial(port):
        return connect(reactor, f"ws://127.0.0.1:{port}/", Factory.forProtocol(Protocol))

    for i, size in enumerate((16384, 65536)):
        yield run_case(
            "piko.ws byte stream", 39020 + i,
            Factory.forProtocol(lambda: FrontEnd(acceptor)), piko_dial,
            lambda p: p.transport.write, size, seconds,
        )  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    d = main(args.seconds)
    d.addErrback(lambda f: print(f.getTraceback()))
    d.addBoth(lambda _: reactor.stop())
    reactor.run()

"""Test helpers for the agent: fake local endpoints and a yamux pair serving a listener."""

from __future__ import annotations

import re

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.testing import StringTransport
from zope.interface import implementer

from piko.interfaces import IAbortableTransport, IHalfCloseableTransport
from piko.test.mux.helpers import HalfCloseRecorder, SessionPair


@implementer(IHalfCloseableTransport, IAbortableTransport)
class HalfCloseTransport(StringTransport):
    """A StringTransport that records loseWriteConnection and abortConnection."""

    write_closed = False
    aborted = False

    def loseWriteConnection(self):
        self.write_closed = True

    def abortConnection(self):
        self.aborted = True
        self.loseConnection()


@implementer(IStreamClientEndpoint)
class FakeEndpoint:
    """
    Connects factories to StringTransports (``mode`` "ok"), refuses ("refuse"), never
    answers ("hang"), or connects only when :meth:`complete` is called ("later", a TCP
    connect that takes a while).
    """

    def __init__(self, mode="ok"):
        self.mode = mode
        self.transports = []
        self.protocols = []
        self.pending = []
        self.later = []

    def connect(self, factory):
        if self.mode == "refuse":
            return fail(ConnectionRefusedError("connection refused"))
        if self.mode == "hang":
            d = Deferred()
            self.pending.append(d)
            return d
        if self.mode == "later":
            d = Deferred()
            self.later.append((d, factory))
            return d
        return succeed(self._connected(factory))

    def complete(self):
        """Finish the oldest connect of mode "later"; returns its transport."""
        d, factory = self.later.pop(0)
        protocol = self._connected(factory)
        d.callback(protocol)
        return self.transports[-1]

    def _connected(self, factory):
        protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 3000))
        transport = HalfCloseTransport()
        self.transports.append(transport)
        self.protocols.append(protocol)
        protocol.makeConnection(transport)
        return protocol


def take(transport):
    """What was written to ``transport`` since the last call."""
    data = transport.value()
    transport.clear()
    return data


_DATE = re.compile(rb"\r\nDate: [^\r]*\r\n")


def mask_date(data):
    """Replace every ``Date`` header value (it changes on every run)."""
    return _DATE.sub(b"\r\nDate: X\r\n", data)


class ListenerPair(SessionPair):
    """A yamux pair whose client (agent) side serves ``factory`` on accepted streams."""

    def __init__(self, factory):
        super().__init__()
        # The agent sees the Piko server as the stream's peer.
        self.client_transport.peerAddr = IPv4Address("TCP", "127.0.0.1", 8001)
        self.client.listen(factory)

    def open(self):
        """Open a stream from the server side; returns its recorder."""
        recorder = HalfCloseRecorder()
        self.server.open_stream(recorder)
        self.pump()
        return recorder

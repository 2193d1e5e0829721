# -*- test-case-name: piko.test.test_splice -*-
"""
Splicing two connections together, with backpressure and half-close.

Used wherever Piko relays raw bytes: the proxy port's TCP route (WebSocket
to yamux stream), TCP listeners of the agent (yamux stream to the local
service) and ``piko forward`` (local socket to WebSocket).  Twisted's
``portforward`` is the model: each transport is registered as the producer
of the other, so a slow side pauses the reading of the fast one and memory
stays bounded by the transports' own buffers.

A half-close travels across: when one side's read half ends, the other side's
write half is shut (``loseWriteConnection`` where the transport has it: TCP,
yamux streams (FIN) and our WebSockets (a Close frame after which we still
read); a full close where it has not).  The pair is closed once both
directions have ended, or either connection is lost.
"""

from __future__ import annotations

import contextlib
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHalfCloseableProtocol, IProtocol, IProtocolFactory
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure
from zope.interface import implementer

from piko._tcp import tune
from piko.interfaces import abort, lose_write


@implementer(IHalfCloseableProtocol)
class SpliceProtocol(Protocol):
    """
    One end of a splice.  Make two and :func:`join` them.

    Bytes that arrive before the other end is connected are held, and
    reading is paused meanwhile.
    """

    def __init__(self) -> None:
        self.peer: SpliceProtocol | None = None
        self._held: list[bytes] = []
        self._read_closed = False
        self._eof_forwarded = False
        self._lost = False
        self._wired = False

    # -- wiring -------------------------------------------------------------

    def connectionMade(self) -> None:
        """Wire up if the other end is already there; else wait for it."""
        tune(self.transport)
        peer = self.peer
        if peer is not None and peer.transport is not None and not peer._lost:
            _wire(self, peer)
        elif peer is not None and peer._lost:
            self.transport.loseConnection()  # type: ignore[union-attr]

    def _ready(self) -> bool:
        return self._wired and self.peer is not None and not self.peer._lost

    # -- IProtocol ----------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        """Forward to the other end, or hold the bytes until it is connected."""
        peer = self.peer
        if self._wired and peer is not None and peer.transport is not None:
            if not peer._lost:
                peer.transport.write(data)
            return
        if not self._held:
            self.transport.pauseProducing()  # type: ignore[union-attr]
        self._held.append(data)

    def readConnectionLost(self) -> None:
        """Our read half ended: shut the other end's write half."""
        self._read_closed = True
        if self._wired:
            self._forward_eof()

    def writeConnectionLost(self) -> None:
        """Our write half was shut (by :meth:`_forward_eof` of the other end)."""

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:  # noqa: B008
        """
        We are gone: close the other end once it has sent what it holds, or reset it if we
        were reset.

        A clean end (``ConnectionDone``: a FIN, a normal WebSocket close, a yamux stream
        closed both ways) closes the other end gracefully, so a reply still on its way (a
        local service's last bytes waiting for yamux window) is delivered.  An abrupt one
        (a TCP reset, a stream reset, a timeout) is passed on as one, as a TCP proxy passes
        a reset on: what the other end held for us is of no use, and a peer that ignores
        EOF would otherwise keep it open until a close timeout.

        The other end's reading is resumed first: we may have paused it (our write buffer
        was full) and nothing else would resume it, so a peer blocked writing to it (a local
        service sending its reply) would hold the connection open for ever.
        """
        self._lost = True
        peer = self.peer
        if peer is not None and peer.transport is not None and not peer._lost:
            transport: Any = peer.transport
            transport.unregisterProducer()
            if self._wired and not getattr(transport, "disconnecting", False):
                # A transport already stopped for good has nothing to resume.
                with contextlib.suppress(RuntimeError):
                    transport.resumeProducing()
            if reason.check(ConnectionDone):
                transport.loseConnection()
            else:
                abort(transport)

    # -- internals ----------------------------------------------------------

    def _start(self) -> None:
        self._wired = True
        held, self._held = self._held, []
        peer = self.peer
        assert peer is not None and peer.transport is not None
        for data in held:
            peer.transport.write(data)
        if held:
            self.transport.resumeProducing()  # type: ignore[union-attr]
        if self._read_closed:
            self._forward_eof()

    def _forward_eof(self) -> None:
        if self._eof_forwarded:
            return
        self._eof_forwarded = True
        peer = self.peer
        assert peer is not None
        transport = peer.transport
        if transport is None or peer._lost:
            return
        if peer._read_closed:
            # Both directions are done.
            transport.loseConnection()
            self.transport.loseConnection()  # type: ignore[union-attr]
            return
        lose_write(transport)


def _wire(a: SpliceProtocol, b: SpliceProtocol) -> None:
    assert a.transport is not None and b.transport is not None
    a.transport.registerProducer(b.transport, True)  # type: ignore[attr-defined]
    b.transport.registerProducer(a.transport, True)  # type: ignore[attr-defined]
    a._start()
    b._start()


def join(a: SpliceProtocol, b: SpliceProtocol) -> None:
    """
    Make ``a`` and ``b`` the two ends of one splice.

    Either may be connected already; the splice starts when both are.  If one
    end was lost before the other connected, the other is closed at once.
    """
    a.peer = b
    b.peer = a
    if a.transport is not None and b.transport is not None:
        if a._lost:
            b.transport.loseConnection()
        elif b._lost:
            a.transport.loseConnection()
        else:
            _wire(a, b)


class OneProtocolFactory(Factory):
    """A factory that hands out one prepared protocol (for ``endpoint.connect``)."""

    noisy = False

    def __init__(self, protocol: Protocol) -> None:
        self.protocol_instance = protocol

    def buildProtocol(self, addr: Any) -> Protocol:
        """Return the prepared protocol."""
        return self.protocol_instance


class DialingSplice(SpliceProtocol):
    """
    A splice end that, once connected, dials its other end.

    Reading is paused until the dial completes, so nothing is held; a failed
    dial is logged and closes this end; losing this end cancels the dial.
    Subclasses say how to dial.
    """

    log = Logger()

    #: The log message for a failed dial (the failure's text is its ``error`` field).
    dial_failed_message = "failed to dial"
    #: Its level (Go's forward says error, its agent warn).
    dial_failed_level = LogLevel.warn

    def __init__(self) -> None:
        super().__init__()
        self._dialing: Deferred[IProtocol] | None = None

    def dial(self, factory: IProtocolFactory) -> Deferred[IProtocol]:
        """Connect a protocol from ``factory`` to the other end."""
        raise NotImplementedError

    def log_fields(self) -> dict[str, Any]:
        """Extra fields for the failure log line."""
        return {}

    def connectionMade(self) -> None:
        """Pause reading, and dial."""
        self.transport.pauseProducing()  # type: ignore[union-attr]
        other = SpliceProtocol()
        join(self, other)
        d = self._dialing = self.dial(OneProtocolFactory(other))
        d.addCallbacks(self._dialed, self._dial_failed)

    def _dialed(self, protocol: IProtocol) -> None:
        self._dialing = None
        if self.transport is not None and not self._lost:
            self.transport.resumeProducing()  # type: ignore[attr-defined]

    def _dial_failed(self, reason: Failure) -> None:
        self._dialing = None
        if self._lost:
            return
        self.log.emit(
            self.dial_failed_level,
            self.dial_failed_message,
            error=str(reason.value),
            **self.log_fields(),
        )
        self.peer = None
        self.transport.loseConnection()  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:  # noqa: B008
        """Cancel a dial still under way."""
        super().connectionLost(reason)
        if self._dialing is not None:
            dialing, self._dialing = self._dialing, None
            dialing.cancel()

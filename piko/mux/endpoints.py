# -*- test-case-name: piko.test.mux.test_endpoints -*-
"""
Twisted endpoints over a yamux session.

:class:`StreamClientEndpoint` opens a stream per ``connect`` and
:class:`StreamServerEndpoint` accepts the peer's streams, so any stock
``Factory`` runs over Piko: a ``twisted.web`` ``Site``, a splice, an echo.
"""

from __future__ import annotations

from attrs import define, field
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import (
    IAddress,
    IListeningPort,
    IProtocol,
    IProtocolFactory,
    IStreamClientEndpoint,
    IStreamServerEndpoint,
)
from zope.interface import implementer

from piko.mux.errors import MuxError
from piko.mux.frames import GoAwayCode
from piko.mux.session import Session
from piko.mux.stream import StreamAddress


@implementer(IStreamClientEndpoint)
@define
class StreamClientEndpoint:
    """
    Open a new stream on ``session`` for each ``connect``.

    The returned ``Deferred`` fires synchronously when the peer's accept
    backlog has room, so a protocol that writes in ``connectionMade`` or in
    the callback has its first data ride with the SYN.
    """

    session: Session

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        """Open a stream and connect a protocol built by ``protocolFactory``."""
        session = self.session
        if session.open_slot_available:
            # The common case, without a Deferred chain: open now.
            try:
                return succeed(self._open(protocolFactory))
            except Exception:
                return fail()
        return session.wait_for_open_slot().addCallback(lambda _: self._open(protocolFactory))

    def _open(self, factory: IProtocolFactory) -> IProtocol:
        protocol = factory.buildProtocol(StreamAddress(0, None))
        if protocol is None:
            raise MuxError("the factory built no protocol")
        self.session.open_stream(protocol)
        return protocol


@implementer(IListeningPort)
@define
class StreamListeningPort:
    """What :class:`StreamServerEndpoint` listens with; stopping it sends GoAway(0)."""

    session: Session
    factory: IProtocolFactory
    _stopped: bool = field(default=False, init=False)

    def startListening(self) -> None:
        """Accept the peer's streams (again)."""
        self.session.listen(self.factory)

    def stopListening(self) -> Deferred[None]:
        """Accept no more streams and tell the peer so; open streams go on."""
        if not self._stopped:
            self._stopped = True
            self.session.listen(None)
            self.session.go_away(GoAwayCode.NORMAL)
        return succeed(None)

    def getHost(self) -> IAddress:
        """The local address of the session's transport."""
        transport = self.session.transport
        return transport.getHost() if transport is not None else StreamAddress(0, None)


@implementer(IStreamServerEndpoint)
@define
class StreamServerEndpoint:
    """Accept the streams the peer of ``session`` opens."""

    session: Session

    def listen(self, protocolFactory: IProtocolFactory) -> Deferred[IListeningPort]:
        """Serve each accepted stream with a protocol from ``protocolFactory``."""
        if self.session.closed:
            return fail(MuxError("session closed"))
        port = StreamListeningPort(self.session, protocolFactory)
        port.startListening()
        return succeed(port)

"""Bridging our HTTP front end's connection hand-over to the autobahn acceptor."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from piko.ws.server import OnHandshake, WebSocketAcceptor


@implementer(IHalfCloseableProtocol)
class WebSocketTakeover(Protocol):
    """
    The protocol handed to ``IServerExchange.take_over`` for a WebSocket upgrade.

    On connection it starts the autobahn handshake; every byte (the replayed
    request head first) goes to autobahn.

    :param on_lost: called if the connection ends, whether or not the
        handshake finished (for cleaning up a stream opened in advance).
    """

    def __init__(
        self,
        acceptor: WebSocketAcceptor,
        on_handshake: OnHandshake,
        on_lost: Callable[[], object] | None = None,
    ) -> None:
        self._acceptor = acceptor
        self._on_handshake = on_handshake
        self._on_lost = on_lost
        self._websocket: Any = None

    def makeConnection(self, transport: Any) -> None:
        """Hand the transport to a fresh autobahn server protocol."""
        self.transport = transport
        self.connected = True
        self._websocket = self._acceptor.accept(transport, b"", self._on_handshake)

    def dataReceived(self, data: bytes) -> None:
        """Feed autobahn."""
        self._websocket.dataReceived(data)

    def readConnectionLost(self) -> None:
        """A client half-close ends a WebSocket."""
        self.transport.loseConnection()  # type: ignore[union-attr]

    def writeConnectionLost(self) -> None:
        """Nothing to do."""

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:  # noqa: B008
        """Tell autobahn (and the owner) that the connection is gone."""
        self.connected = False
        if self._websocket is not None:
            self._websocket.connectionLost(reason)
        if self._on_lost is not None:
            self._on_lost()

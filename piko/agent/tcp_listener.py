# -*- test-case-name: piko.test.agent.test_tcp_listener -*-
"""
The agent's TCP listener: each yamux stream is spliced to a new connection to the service.

As Go's ``agent/tcpproxy``: every accepted stream dials ``host:port`` (the listener
``timeout`` bounds the dial), then bytes are copied both ways with half-close passed on.
If the dial fails the stream is closed with no byte written (the server's client sees its
connection closed) and a warning is logged.  Nothing is read from the stream until the local
connection is up, so backpressure holds from the first byte.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IProtocol, IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from piko.splice import SpliceProtocol, join

__all__ = ["TCPListenerFactory"]


class _OneShotFactory(Factory):
    """Returns one prepared protocol to ``endpoint.connect``."""

    def __init__(self, protocol: Protocol) -> None:
        self._protocol = protocol

    def buildProtocol(self, addr: Any) -> Protocol:
        return self._protocol


class _StreamSplice(SpliceProtocol):
    """The stream end of the splice; it dials the local end when the stream opens."""

    log = Logger()

    def __init__(self, factory: TCPListenerFactory) -> None:
        super().__init__()
        self.factory = factory
        self._dialing: Deferred[IProtocol] | None = None

    def connectionMade(self) -> None:
        self.transport.pauseProducing()  # type: ignore[union-attr]
        local = SpliceProtocol()
        join(self, local)
        d = self._dialing = self.factory.endpoint.connect(_OneShotFactory(local))
        d.addCallbacks(self._dialed, self._dial_failed)

    def _dialed(self, protocol: IProtocol) -> None:
        self._dialing = None
        if self.transport is not None and not self._lost:
            self.transport.resumeProducing()  # type: ignore[attr-defined]

    def _dial_failed(self, reason: Failure) -> None:
        self._dialing = None
        if self._lost:
            return
        self.log.warn(
            "failed to dial upstream: {error}",
            endpoint_id=self.factory.endpoint_id,
            error=reason.getErrorMessage(),
        )
        self.peer = None
        self.transport.loseConnection()  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:  # noqa: B008
        super().connectionLost(reason)
        if self._dialing is not None:
            dialing, self._dialing = self._dialing, None
            dialing.cancel()


class TCPListenerFactory(Factory):
    """
    Builds the protocol for each stream of a TCP listener.

    :param endpoint: dials the local service (a ``HostnameEndpoint`` with the listener
        ``timeout``; tests pass a fake).
    :param endpoint_id: for log messages.
    """

    def __init__(self, endpoint: IStreamClientEndpoint, endpoint_id: str = "") -> None:
        self.endpoint = endpoint
        self.endpoint_id = endpoint_id

    def buildProtocol(self, addr: Any) -> Protocol:
        return _StreamSplice(self)

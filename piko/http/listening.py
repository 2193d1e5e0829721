# -*- test-case-name: piko.test.server.test_service -*-
"""The HTTP connections of a listening port, tracked for draining."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure

from piko._tcp import tune
from piko.http.server import HTTPServerProtocol, IRequestHandler
from piko.interfaces import abort

#: Connections per port that may be waiting for their first request head.
DEFAULT_MAX_PENDING = 4096


class TrackedHTTPServerProtocol(HTTPServerProtocol):
    """An :class:`HTTPServerProtocol` its factory knows about while it is connected."""

    factory: HTTPPortFactory

    def connectionMade(self) -> None:
        """Count the connection in, or drop it when too many are still in their first head."""
        tune(self.transport)
        factory = self.factory
        if len(factory.pending) >= factory.max_pending:
            factory.refuse_pending()
            self._closed = True
            abort(self.transport)
            return
        factory.connections.add(self)
        factory.pending.add(self)
        super().connectionMade()

    def head_received(self) -> None:
        """The first (or a later) head arrived: the connection is no longer pending."""
        self.factory.pending.discard(self)

    def _next_request(self) -> None:
        """A request was answered and read whole: the connection is idle; tell the factory."""
        super()._next_request()
        self.factory.settled(self)

    def close_idle(self) -> None:
        """Close the connection, which answers no request (draining)."""
        self._closed = True
        self._cancel_timer()
        if self.transport is not None:
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure | None = None) -> None:
        """Count the connection out."""
        self.factory.connections.discard(self)
        self.factory.pending.discard(self)
        if reason is None:
            super().connectionLost()
        else:
            super().connectionLost(reason)
        self.factory.settled(self)

    @property
    def busy(self) -> bool:
        """Whether a request is being answered (or the connection was handed over)."""
        return self.current is not None or self._taken is not None


class HTTPPortFactory(Factory):
    """
    Serves one port's HTTP connections with ``handler``.

    :param header_timeout: Go's ``read_header_timeout``.
    :param idle_timeout: Go's ``idle_timeout``.
    :param read_timeout: Go's ``read_timeout``, as a no-progress timeout on request bodies
        (see :class:`~piko.http.server.HTTPServerProtocol`).
    :param write_timeout: Go's ``write_timeout``, as a no-progress timeout on responses.
    :param max_header_bytes: Go's ``max_header_bytes``.
    :param max_pending: connections that may be open without having sent a whole
        request head yet (slow or idle clients, handshakes that never finish);
        beyond it new connections are dropped at once, with a warning, until
        some complete a head or close.  Each pending one is also bounded in time
        by ``header_timeout``.  Go has no such cap; the default is generous.
    """

    log = Logger()
    noisy = False

    def __init__(
        self,
        handler: IRequestHandler,
        clock: IReactorTime,
        *,
        header_timeout: float | None = 10.0,
        idle_timeout: float | None = 300.0,
        read_timeout: float | None = None,
        write_timeout: float | None = None,
        max_header_bytes: int = 1 << 20,
        max_pending: int = DEFAULT_MAX_PENDING,
    ) -> None:
        self.handler = handler
        self.clock = clock
        self.header_timeout = header_timeout or None
        self.idle_timeout = idle_timeout or None
        self.read_timeout = read_timeout or None
        self.write_timeout = write_timeout or None
        self.max_header_bytes = max_header_bytes
        self.max_pending = max_pending
        self.connections: set[TrackedHTTPServerProtocol] = set()
        self.pending: set[TrackedHTTPServerProtocol] = set()
        #: connections dropped by the ``max_pending`` cap
        self.refused = 0
        self._refusing = False
        #: Set by :meth:`drain`: connections are closed as soon as they are idle.
        self.draining = False
        self._idle_waiters: list[Deferred[None]] = []

    def refuse_pending(self) -> None:
        """Count a connection dropped by the cap; warn once each time the cap is reached."""
        self.refused += 1
        if not self._refusing:
            self._refusing = True
            self.log.warn(
                "too many connections without a request head; dropping new ones",
                pending=len(self.pending),
            )

    def buildProtocol(self, addr: Any) -> TrackedHTTPServerProtocol:  # type: ignore[override]
        if len(self.pending) < self.max_pending:
            self._refusing = False
        protocol = TrackedHTTPServerProtocol(
            self.handler,
            self.clock,
            max_header_bytes=self.max_header_bytes,
            header_timeout=self.header_timeout,
            idle_timeout=self.idle_timeout,
            read_timeout=self.read_timeout,
            write_timeout=self.write_timeout,
        )
        protocol.factory = self
        return protocol

    def close_idle(self) -> None:
        """Close every connection that is not answering a request."""
        for protocol in list(self.connections):
            if not protocol.busy:
                protocol.close_idle()

    def busy_count(self) -> int:
        """How many connections are answering a request."""
        return sum(1 for protocol in self.connections if protocol.busy)

    def drain(self) -> Deferred[None]:
        """
        Close idle connections now and each busy one once its request is done.

        A connection handed over (an upgrade) is done when it closes.

        :return: fires once every connection has closed, so that what was
            written to them (the last responses) is flushed, not cut.
        """
        self.draining = True
        self.close_idle()
        return self.when_idle()

    def when_idle(self) -> Deferred[None]:
        """
        Fire once no connection is answering a request (at once if none is).

        While draining, once every connection has closed (each closes when idle).
        """
        d: Deferred[None] = Deferred()
        if self._quiet():
            d.callback(None)
        else:
            self._idle_waiters.append(d)
        return d

    def settled(self, protocol: TrackedHTTPServerProtocol) -> None:
        """
        ``protocol`` answered its request or closed: close it if draining, wake waiters.

        Called by the connections themselves, so a drain waits on events, not by polling.
        """
        if self.draining and protocol in self.connections and not protocol.busy:
            protocol.close_idle()
        if self._idle_waiters and self._quiet():
            waiters, self._idle_waiters = self._idle_waiters, []
            for d in waiters:
                d.callback(None)

    def _quiet(self) -> bool:
        if self.draining:
            return not self.connections
        return not self.busy_count()

# -*- test-case-name: piko.test.http.test_pool -*-
"""
A keep-alive connection pool to a local service: the agent's ``http.Transport`` (and, subclassed,
the server's connections to other nodes in :mod:`piko.server.forwarding`).

Go's agent proxies every request through one ``http.Transport`` per listener, which keeps
finished HTTP/1.1 connections idle for the next request (``idle_conn_timeout``, at most
``max_idle_conns``).  :class:`ConnectionPool` is that transport's connection management as an
:class:`~piko.http.proxy.IUpstreamConnector`: :class:`~piko.http.proxy.ProxyExchange` asks it
for a connection and releases it after the response, saying whether it may be reused.

Each TCP connection is owned by a :class:`PooledConnection` protocol that stays with it for
its whole life; the request's protocol gets a :class:`_Lease`, a thin transport that forwards
to the TCP transport only while the request holds it.  A stale lease (a late timeout, a
downstream stream that calls ``stopProducing`` when it ends) therefore cannot close a
connection that already serves another request.

A reused connection can turn out dead only once a request is written to it (the local
service closed it while idle and the FIN was still in flight).  When that happens before any
response byte arrived, the request's protocol hears :class:`StaleConnection` as the reason,
so a request that can be replayed is sent again on a fresh connection, as Go's transport does
for idempotent requests.
"""

from __future__ import annotations

import contextlib
from collections import deque
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IHalfCloseableProtocol,
    IProducer,
    IProtocol,
    IPushProducer,
    IReactorTime,
    IStreamClientEndpoint,
    ITransport,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from piko._tcp import tune
from piko.http.proxy import IUpstreamConnector
from piko.interfaces import IAbortableTransport, IHalfCloseableTransport
from piko.interfaces import abort as abort_transport

__all__ = ["ConnectionPool", "StaleConnection"]


class StaleConnection(ConnectionDone):
    """
    A reused idle connection closed before any byte of the response arrived; the request
    may be retried once on a fresh connection if it can be replayed.
    """


@implementer(ITransport, IPushProducer, IAbortableTransport, IHalfCloseableTransport)
class _Lease:
    """
    The transport a request's protocol sees: the pooled TCP transport while leased, inert
    once released.
    """

    def __init__(self, conn: PooledConnection) -> None:
        self._conn: PooledConnection | None = conn

    @property
    def _tx(self) -> Any:
        conn = self._conn
        return conn.transport if conn is not None else None

    def _revoke(self) -> None:
        self._conn = None

    def write(self, data: bytes) -> None:
        tx = self._tx
        if tx is not None:
            tx.write(data)

    def writeSequence(self, data: list[bytes]) -> None:  # type: ignore[override]
        tx = self._tx
        if tx is not None:
            tx.writeSequence(data)

    def loseConnection(self) -> None:
        conn = self._conn
        if conn is not None:
            conn.discard()

    def abortConnection(self) -> None:
        conn = self._conn
        if conn is not None:
            conn.discard(abort=True)

    def loseWriteConnection(self) -> None:
        tx = self._tx
        if tx is not None:
            tx.loseWriteConnection()

    def getPeer(self) -> IAddress:
        return self._tx.getPeer()

    def getHost(self) -> IAddress:
        return self._tx.getHost()

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        tx = self._tx
        if tx is not None:
            tx.registerProducer(producer, streaming)
        else:
            producer.stopProducing()

    def unregisterProducer(self) -> None:
        tx = self._tx
        if tx is not None:
            tx.unregisterProducer()

    def pauseProducing(self) -> None:
        conn = self._conn
        if conn is not None:
            conn.pause()

    def resumeProducing(self) -> None:
        conn = self._conn
        if conn is not None:
            conn.resume()

    def stopProducing(self) -> None:
        # A consumer that ends (a yamux stream) stops its producer: drop the connection, but
        # only if this request still holds it.
        self.loseConnection()


@implementer(IHalfCloseableProtocol)
class PooledConnection(Protocol):
    """Owns one TCP connection to the local service for its whole life."""

    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool
        self.user: IProtocol | None = None
        self.lease: _Lease | None = None
        self.requests = 0
        self.response_bytes = False
        self.closed = False
        self.discarded = False
        self.paused = False
        self.idle_timer: IDelayedCall | None = None

    def connectionMade(self) -> None:
        """No Nagle: a request head and body written apart must not wait for an ACK."""
        tune(self.transport)

    # -- lease management

    def attach(self, user: IProtocol) -> None:
        self.requests += 1
        self.response_bytes = False
        self.user = user
        self.lease = _Lease(self)
        user.makeConnection(self.lease)

    def detach(self) -> None:
        if self.lease is not None:
            self.lease._revoke()
        self.lease = None
        self.user = None
        if self.paused:
            self.resume()

    def pause(self) -> None:
        if not self.paused and not self.closed and self.transport is not None:
            self.paused = True
            self.transport.pauseProducing()  # type: ignore[attr-defined]

    def resume(self) -> None:
        if self.paused and not self.closed and self.transport is not None:
            self.paused = False
            self.transport.resumeProducing()  # type: ignore[attr-defined]

    def discard(self, abort: bool = False) -> None:
        """Close this connection for good (it is never reused)."""
        self.pool._forget(self)
        if self.closed or self.transport is None:
            return
        self.closed = True
        self.discarded = True
        if abort:
            abort_transport(self.transport)
        else:
            self.transport.loseConnection()

    # -- IProtocol

    def dataReceived(self, data: bytes) -> None:
        user = self.user
        if user is None:
            # Bytes on an idle connection: the service is confused; never reuse it.
            self.discard()
            return
        self.response_bytes = True
        user.dataReceived(data)

    def readConnectionLost(self) -> None:
        user = self.user
        if user is None:
            self.discard()
            return
        if self._stale():
            # connectionLost tells the request; close our half too.
            self.pool._forget(self)
            self.transport.loseConnection()  # type: ignore[union-attr]
            return
        if IHalfCloseableProtocol.providedBy(user):
            user.readConnectionLost()
        else:
            self.discard()

    def writeConnectionLost(self) -> None:
        user = self.user
        if user is not None and IHalfCloseableProtocol.providedBy(user):
            user.writeConnectionLost()

    def _stale(self) -> bool:
        return self.requests > 1 and not self.response_bytes and not self.discarded

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:  # noqa: B008
        self.closed = True
        self.pool._forget(self)
        user = self.user
        if user is None:
            return
        if self._stale():
            reason = Failure(StaleConnection(reason.getErrorMessage()))
        self.detach()
        user.connectionLost(reason)


class ConnectionFactory(Factory):
    #: One factory per connection made: no "Starting factory" line for each.
    noisy = False

    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool

    def buildProtocol(self, addr: Any) -> PooledConnection:
        return PooledConnection(self.pool)


@implementer(IUpstreamConnector)
class ConnectionPool:
    """
    Keep-alive HTTP/1.1 connections to one local service.

    :param clock: for the idle timeout.
    :param endpoint: how to open a new connection (a ``HostnameEndpoint`` with the dial
        timeout, wrapped for TLS for ``https`` targets; tests pass a fake).
    :param idle_timeout: seconds an idle connection is kept (Go's ``IdleConnTimeout``);
        None or 0 keeps it until the service closes it.
    :param max_idle: how many idle connections are kept; 0 or less means no limit
        (Go's ``MaxIdleConns``, with the config's ``-1``/0 meaning unlimited).
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        endpoint: IStreamClientEndpoint,
        *,
        idle_timeout: float | None = 90.0,
        max_idle: int = 100,
    ) -> None:
        self.clock = clock
        self.endpoint = endpoint
        self.idle_timeout = idle_timeout
        self.max_idle = max_idle
        #: Idle connections, oldest first (reuse takes the newest, as Go does).
        self.idle: deque[PooledConnection] = deque()
        self._factory = ConnectionFactory(self)
        self._leased: dict[int, PooledConnection] = {}
        self._closed = False

    # -- IUpstreamConnector

    def connect(self, protocol: IProtocol, *, fresh: bool = False) -> Deferred[IProtocol]:
        """
        Connect ``protocol`` to an idle connection, or a new one.

        :param fresh: skip idle connections (a retry after :class:`StaleConnection`).
        """
        while self.idle and not fresh:
            conn = self.idle.pop()
            self._cancel_idle_timer(conn)
            if conn.closed:
                continue
            self._lease(conn, protocol)
            return succeed(protocol)
        d = self.endpoint.connect(self._factory)

        def connected(conn: Any) -> IProtocol:
            if self._closed:
                conn.discard()
                raise ConnectionDone("connection pool closed")
            self._lease(conn, protocol)
            return protocol

        return d.addCallback(connected)

    def release(self, protocol: IProtocol, reusable: bool) -> None:
        """Take the connection back: keep it idle if ``reusable``, else close it."""
        conn = self._leased.pop(id(protocol), None)
        if conn is None:
            return
        conn.detach()
        if not reusable or conn.closed or self._closed:
            conn.discard()
            return
        self.idle.append(conn)
        if self.idle_timeout:
            conn.idle_timer = self.clock.callLater(self.idle_timeout, self._idle_expired, conn)
        while self.max_idle > 0 and len(self.idle) > self.max_idle:
            self.idle[0].discard()

    # -- management

    def close(self) -> None:
        """Close every idle connection; connections in use close when released."""
        self._closed = True
        while self.idle:
            self.idle[0].discard()

    def _lease(self, conn: PooledConnection, protocol: IProtocol) -> None:
        self._leased[id(protocol)] = conn
        conn.attach(protocol)

    def _idle_expired(self, conn: PooledConnection) -> None:
        conn.idle_timer = None
        conn.discard()

    def _cancel_idle_timer(self, conn: PooledConnection) -> None:
        if conn.idle_timer is not None and conn.idle_timer.active():
            conn.idle_timer.cancel()
        conn.idle_timer = None

    def _forget(self, conn: PooledConnection) -> None:
        self._cancel_idle_timer(conn)
        with contextlib.suppress(ValueError):
            self.idle.remove(conn)
        user = conn.user
        if user is not None and self._leased.get(id(user)) is conn:
            del self._leased[id(user)]

# -*- test-case-name: piko.test.agent.test_http_listener -*-
"""
The agent's HTTP listener: each yamux stream is an HTTP/1.1 connection to reverse-proxy.

Go's agent serves the Piko listener with an ``http.Server`` whose handler is
``httputil.NewSingleHostReverseProxy(target)``.  Here every accepted stream runs
:class:`~piko.http.server.HTTPServerProtocol` (no header or idle timeout, as Go's server has
none), and every request starts a :class:`~piko.http.proxy.ProxyExchange` to the listener's
:class:`~piko.http.pool.ConnectionPool`:

* the request keeps its ``Host``; ``X-Forwarded-For`` gets the stream's peer IP appended (the
  Piko server's address, Go's ``RemoteAddr``); the target URL's path prefix and query are
  joined in front; no ``Connection: close`` is added (the local connection is kept alive);
* the answer on the stream is written the way Go's ``http.Server`` writes it: handler headers
  sorted, ``Date``, and ``Connection: close`` when the request asked for it (the server always
  does), so the stream FINs after the response;
* the local service refusing or breaking before a head gives 502 ``upstream unreachable``;
  no head within the listener timeout gives 504 ``upstream timeout`` (not applied to
  ``Upgrade: websocket``, which passes through);
* the Piko server closing the stream (FIN) before the answer is complete abandons the request:
  the stream is reset and the local connection closed (see :class:`StreamServerProtocol`).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any
from urllib.parse import urlsplit

from attrs import frozen
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from piko.agent.metrics import AgentMetrics, MeteredListenerHandler
from piko.http.access_log import AccessLog, AccessLoggedHandler
from piko.http.head import header_get
from piko.http.pool import ConnectionPool, StaleConnection
from piko.http.proxy import ProxyExchange
from piko.http.rewrite import rewrite_request
from piko.http.server import HTTPServerProtocol, IRequestHandler, IServerExchange
from piko.inspect.capture import IListenerInspector

__all__ = [
    "AgentProxyExchange",
    "HTTPListenerFactory",
    "StreamServerProtocol",
    "Target",
    "parse_target",
]

# Go's Request.isReplayable: these methods with no body may be sent again.
_IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE"})


@frozen
class Target:
    """
    Where an HTTP listener forwards: Go's target URL, split.

    :ivar tls: True for ``https``.
    :ivar path: the URL path, joined in front of every request path.
    :ivar query: the URL's raw query, merged before every request query.
    """

    host: str
    port: int
    tls: bool = False
    path: bytes = b""
    query: bytes = b""


def parse_target(url: str) -> Target:
    """
    Split a listener URL (from :meth:`piko.config.ListenerConfig.url`).

    :raises ValueError: for a scheme other than http/https or a URL with no host.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"invalid target url: {url}")
    tls = parts.scheme == "https"
    port = parts.port if parts.port is not None else (443 if tls else 80)
    return Target(
        host=parts.hostname,
        port=port,
        tls=tls,
        path=parts.path.encode(),
        query=parts.query.encode(),
    )


class AgentProxyExchange(ProxyExchange):
    """
    A :class:`ProxyExchange` that sends a replayable request once more on a fresh
    connection when a reused one turned out dead before any response byte (Go's transport
    retry for idempotent requests).
    """

    _retried = False

    @property
    def replayable(self) -> bool:
        """Whether the request can be sent again: no body, and idempotent (or keyed)."""
        exchange = self.exchange
        if exchange.upgrade or not exchange.framing.empty:
            return False
        head = exchange.head
        if head.method in _IDEMPOTENT:
            return True
        return (
            header_get(head.headers, b"idempotency-key") is not None
            or header_get(head.headers, b"x-idempotency-key") is not None
        )

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:  # noqa: B008
        if (
            reason.check(StaleConnection)
            and not self._retried
            and not self._done
            and not self._got_head
            and self.replayable
            and isinstance(self.connector, ConnectionPool)
        ):
            self._retried = True
            self.log.debug("reused connection was closed; retrying on a new connection")
            self.exchange.unregister_producer()
            self.transport = None
            d = self.connector.connect(self, fresh=True)
            d.addErrback(self._connect_failed)
            return
        super().connectionLost(reason)


class StreamServerProtocol(HTTPServerProtocol):
    """
    Serves one stream from the Piko server: an end of the stream (FIN) before the answer is
    complete means the server gave the request up.

    Go's server proxies with an ``http.Transport``, which never half-closes: it closes a
    stream (FIN) only when it is done with it, after the response or when its own client
    went away (the request's context cancelled), and then reads from the stream no more, so
    no window is granted for the rest of the answer.  (Our server resets the stream when
    its client goes away, which ends the exchange here anyway.)
    Go's agent serves the stream with ``http.Server``, whose background read sees the EOF and
    cancels the request's context, so its ``ReverseProxy`` closes the local connection.  An
    answer that went on here would stall for good once the stream's window is spent, holding
    the local connection (and the service's worker) until Go's 5-minute stream close timeout.

    So the answer is dropped: the stream is reset (RST; Go's side forgets it at once instead
    of after that timeout) and the request's :class:`~piko.http.proxy.ProxyExchange` hears
    the connection lost and closes its local connection, never returned to the pool, as its
    response was not read to the end.  A local connection whose response was complete before
    the FIN was already released to the pool (if reusable) and is not touched.
    """

    def readConnectionLost(self) -> None:
        current = self.current
        if self._taken is None and current is not None and not current.response_done:
            self.log.debug("stream closed by the server before the answer: request abandoned")
            self._abort()
            return
        super().readConnectionLost()


@implementer(IRequestHandler)
class _ProxyHandler:
    """Starts one :class:`AgentProxyExchange` per request read from a stream."""

    def __init__(self, factory: HTTPListenerFactory) -> None:
        self.factory = factory

    def request_received(self, exchange: IServerExchange) -> None:
        f = self.factory
        peer = exchange.transport.getPeer()
        client_ip = getattr(peer, "host", None)
        rewrite = partial(
            rewrite_request,
            client_ip=client_ip if isinstance(client_ip, str) else None,
            close=False,
            target_path=f.target.path,
            target_query=f.target.query,
        )
        proxy = f.exchange_class(exchange, f.pool, f.clock, rewrite, timeout=f.timeout)
        proxy.start()


class HTTPListenerFactory(Factory):
    """
    Builds the protocol for each stream of an HTTP listener.

    :param clock: for the per-request timeout and the ``Date`` header.
    :param pool: connections to the local service.
    :param target: the target URL's parts (path prefix and query).
    :param timeout: seconds to wait for a response head (the listener ``timeout``); None or
        0 for no limit.
    :param access_log: logs every answered request (``proxy.http.access``), if given.
    :param metrics: counts every answered request under ``endpoint_id``, if given.
    :param inspector: captures every exchange (the request inspector), if given; it sees
        what the relay does, inside the access log and metrics.
    """

    #: Started for every connection of the listener: no "Starting factory" line.
    noisy = False

    log = Logger()
    exchange_class: Callable[..., Any] = AgentProxyExchange

    def __init__(
        self,
        clock: IReactorTime,
        pool: ConnectionPool,
        target: Target,
        *,
        timeout: float | None = None,
        access_log: AccessLog | None = None,
        metrics: AgentMetrics | None = None,
        endpoint_id: str = "",
        inspector: IListenerInspector | None = None,
    ) -> None:
        self.clock = clock
        self.pool = pool
        self.target = target
        self.timeout = timeout or None
        handler: IRequestHandler = _ProxyHandler(self)
        if inspector is not None:
            handler = inspector.wrap_http(handler, endpoint_id)
        if access_log is not None and not access_log.disabled:
            handler = AccessLoggedHandler(handler, access_log, clock)
        if metrics is not None:
            handler = MeteredListenerHandler(handler, metrics, endpoint_id, clock)
        self._handler = handler

    def buildProtocol(self, addr: Any) -> HTTPServerProtocol:
        return StreamServerProtocol(
            self._handler, self.clock, header_timeout=None, idle_timeout=None
        )

# -*- test-case-name: piko.test.client.test_upstream -*-
"""
Listening on a Piko endpoint: Go's ``client.Upstream``, for Twisted factories.

One WebSocket per listener to the server's upstream port
(``/piko/v1/upstream/<endpoint>``), a yamux client session over it, and each
stream the server opens served by the user's factory.

The listener reconnects, with exponential backoff and full jitter, after any
disconnection it did not ask for: a server restart, a node drained or
rebalanced, a network fault.  (Go's v0.9.0 listener stops instead when the
server closes the WebSocket.)  The first delay after a connection that
worked is drawn between 0 and ``min_reconnect_backoff`` (100 ms).

A yamux GoAway(0) from the server (a node draining or rebalancing) is taken
as "make before break": a replacement connection is opened at once (after
the same small jitter), through the load balancer to some other node, while
the old session keeps serving the streams already routed to it.  Once the
replacement has been up for ``handoff_overlap`` (1 s, several gossip
intervals, so every node has learnt the new node's count), the listener
answers GoAway(0) on the old session, still accepting any stream that
crosses it; the server then deregisters it and closes it when idle (we
close it ourselves after another ``handoff_overlap`` if it does not).
Go's server never sends GoAway, and Go's listener ignores one, so this
changes nothing on the wire.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from typing import Any

from attrs import frozen
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IListeningPort,
    IOpenSSLClientConnectionCreator,
    IProtocol,
    IProtocolFactory,
    IReactorTime,
)
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from piko.client._urls import route_url
from piko.client.backoff import Backoff
from piko.config import format_duration
from piko.mux.frames import GoAwayCode
from piko.mux.session import Session, SessionConfig
from piko.ws.client import WebSocketDialError, connect

UPSTREAM_ROUTE = "/piko/v1/upstream/"

#: The signature of :func:`piko.ws.client.connect`, injectable for tests.
DialFunction = Callable[..., "Deferred[IProtocol]"]


@implementer(IAddress)
@frozen
class PikoAddress:
    """The address of a Piko endpoint (Go's listener ``Addr()``)."""

    endpoint_id: str


class ListenerSession(Session):
    """
    The client session of a listener: tells it when the server sends GoAway(0).

    :ivar on_go_away: called with the session when the server's GoAway(0) arrives.
    """

    on_go_away: Callable[[ListenerSession], object] | None = None

    def _on_go_away(self, code: int) -> None:
        super()._on_go_away(code)
        if code == GoAwayCode.NORMAL and self.on_go_away is not None and not self.closed:
            self.on_go_away(self)

    _announced = False

    def announce_go_away(self) -> None:
        """Send GoAway(0) but keep accepting streams (one may already be on its way)."""
        if not self.closed and not self._announced and not self.local_go_away:
            self._announced = True
            self._send_go_away(GoAwayCode.NORMAL)

    def go_away(self, code: int = GoAwayCode.NORMAL) -> None:
        """Refuse the peer's new streams from now on; GoAway is sent unless announced."""
        if self._announced and not self.closed:
            self.local_go_away = True
            return
        super().go_away(code)


class _SessionFactory(Factory):
    """Builds the yamux client session that runs over the WebSocket."""

    #: Started for every (re)connection: no "Starting factory" line for each.
    noisy = False

    def __init__(self, clock: IReactorTime, config: SessionConfig | None) -> None:
        self._clock = clock
        self._config = config

    def buildProtocol(self, addr: Any) -> ListenerSession:
        return ListenerSession(self._clock, client=True, config=self._config)


class Upstream:
    """
    A Piko server's upstream port, and how to authenticate to it.

    :param reactor: the reactor (TCP, TLS and time).
    :param url: the upstream port, ``http(s)://`` or ``ws(s)://``; a path
        prefix and query are kept.
    :param token: sent as ``Authorization: Bearer <token>``.
    :param tenant_id: sent as ``x-piko-tenant-id``.
    :param tls: the TLS connection creator for ``https``/``wss`` URLs.
    :param connect_timeout: how long the first connection of a listener may
        take, retries of retryable errors included (Go's ``connect.timeout``); with
        ``keep_trying``, how long each attempt may take.
    :param min_reconnect_backoff: the first reconnect delay ceiling.
    :param max_reconnect_backoff: the largest reconnect delay ceiling.
    :param session_config: yamux tunables.
    :param dial: the WebSocket dialer (tests inject a fake).
    :param handoff_overlap: how long a session the server sent GoAway(0) on
        keeps serving after its replacement is up, before we answer GoAway(0).
    :param proxy_url: an ``http(s)://`` proxy to reach the server through (``CONNECT``;
        Go's ``connect.proxy-url``).
    :param keep_trying: retry a retryable failure of the first connection for as long as it
        takes (the ``piko agent`` program: a server that is down while the agent starts is a
        transient outage, not a reason to exit); ``listen`` then fails only for an answer
        that retrying cannot change (``401: invalid token``).  Off by default, as Go's SDK.
    """

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        url: str = "http://localhost:8001",
        *,
        token: str | None = None,
        tenant_id: str | None = None,
        tls: IOpenSSLClientConnectionCreator | None = None,
        connect_timeout: float = 30.0,
        min_reconnect_backoff: float = 0.1,
        max_reconnect_backoff: float = 15.0,
        session_config: SessionConfig | None = None,
        dial: DialFunction = connect,
        uniform: Callable[[float, float], float] = random.uniform,
        handoff_overlap: float = 1.0,
        proxy_url: str | None = None,
        keep_trying: bool = False,
    ) -> None:
        self.reactor = reactor
        self.url = url
        self.token = token
        self.tenant_id = tenant_id
        self.tls = tls
        self.connect_timeout = connect_timeout
        self.min_reconnect_backoff = min_reconnect_backoff
        self.max_reconnect_backoff = max_reconnect_backoff
        self.session_config = session_config
        self._dial = dial
        self._uniform = uniform
        self.handoff_overlap = handoff_overlap
        self.proxy_url = proxy_url or None
        self.keep_trying = keep_trying

    def headers(self) -> Mapping[str, str]:
        """The handshake headers Go's listener sends."""
        headers: dict[str, str] = {}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if self.tenant_id:
            headers["x-piko-tenant-id"] = self.tenant_id
        return headers

    def listen(self, endpoint_id: str, factory: IProtocolFactory) -> Deferred[PikoListeningPort]:
        """
        Register on ``endpoint_id`` and serve each proxied connection with ``factory``.

        :return: fires with the listening port once the first connection is
            up; fails with :class:`~piko.ws.client.WebSocketDialError` if it
            cannot be made (a non-retryable answer such as ``401: invalid
            token``, or retryable ones until ``connect_timeout``).
        """
        port = PikoListeningPort(self, endpoint_id, factory)
        return port.start()

    def route(self, endpoint_id: str) -> str:
        """The URL a listener on ``endpoint_id`` dials (logged with every attempt)."""
        return route_url(self.url, UPSTREAM_ROUTE, endpoint_id)

    def open_session(self, endpoint_id: str, timeout: float) -> Deferred[Session]:
        """Make one WebSocket connection and return its yamux session."""
        url = self.route(endpoint_id)
        extra: dict[str, Any] = {}
        if self.proxy_url:
            extra["proxy_url"] = self.proxy_url
        d = self._dial(
            self.reactor,
            url,
            _SessionFactory(self.reactor, self.session_config),
            headers=self.headers(),
            tls=self.tls,
            timeout=timeout,
            **extra,
        )
        return d  # type: ignore[return-value]


@implementer(IListeningPort)
class PikoListeningPort:
    """
    A listener on a Piko endpoint that stays connected.

    ``stopListening`` is a graceful stop: GoAway(0) so the server routes no
    new stream here, in-flight streams finish, then the connection closes.

    :ivar session: the current session, once connected.
    :ivar departing: sessions the server sent GoAway(0) on, still serving
        their in-flight streams until the server closes them.
    """

    log = Logger()

    def __init__(self, upstream: Upstream, endpoint_id: str, factory: IProtocolFactory) -> None:
        self.upstream = upstream
        self.endpoint_id = endpoint_id
        self.factory = factory
        self.session: Session | None = None
        self.departing: set[Session] = set()
        self._backoff = Backoff(
            upstream.min_reconnect_backoff, upstream.max_reconnect_backoff, upstream._uniform
        )
        self._started: Deferred[PikoListeningPort] = Deferred()
        self._first_deadline = 0.0
        self._reconnect_call: IDelayedCall | None = None
        self._dialing: Deferred[Session] | None = None
        self._stopping = False
        self._stopped: Deferred[None] | None = None
        self._handoff_calls: dict[Session, IDelayedCall] = {}
        self.connections = 0
        self._stop_accepting_call: IDelayedCall | None = None
        #: Failed attempts since the last successful connection (each logged once).
        self.attempts_failed = 0

    @property
    def connected(self) -> bool:
        """Whether a session to the server is up now."""
        return self.session is not None and not self.session.closed

    def start(self) -> Deferred[PikoListeningPort]:
        """Make the first connection (used by :meth:`Upstream.listen`)."""
        self._first_deadline = self.upstream.reactor.seconds() + self.upstream.connect_timeout
        self.factory.doStart()
        self._connect()
        return self._started

    def startListening(self) -> None:
        """Required by ``IListeningPort``; :meth:`Upstream.listen` starts the port."""

    def getHost(self) -> PikoAddress:
        """The endpoint this port listens on."""
        return PikoAddress(self.endpoint_id)

    # -- connecting ---------------------------------------------------------

    def _connect(self) -> None:
        self._reconnect_call = None
        if self._stopping:
            return
        timeout = self.upstream.connect_timeout
        if not self._started.called and not self.upstream.keep_trying:
            timeout = max(0.001, self._first_deadline - self.upstream.reactor.seconds())
        d = self.upstream.open_session(self.endpoint_id, timeout)
        self._dialing = d
        d.addCallbacks(self._connected, self._connect_failed)

    def _connected(self, session: Session) -> None:
        self._dialing = None
        if self._stopping:
            session.close()
            return
        self.session = session
        self.connections += 1
        self.attempts_failed = 0
        self._backoff.reset()
        session.listen(self.factory)
        if isinstance(session, ListenerSession):
            session.on_go_away = self._server_going_away
        session.when_closed().addCallback(self._session_ended, session)
        self.log.info(
            "upstream connected",
            **{"endpoint-id": self.endpoint_id, "url": self.upstream.route(self.endpoint_id)},
        )
        self._schedule_handoffs()
        if not self._started.called:
            self._started.callback(self)

    def _connect_failed(self, failure: Failure) -> None:
        self._dialing = None
        if self._stopping:
            return
        error = failure.value
        retryable = not isinstance(error, WebSocketDialError) or error.retryable
        delay = self._backoff.next_delay()
        first = not self._started.called
        if first and (
            not retryable
            or (
                not self.upstream.keep_trying
                and self.upstream.reactor.seconds() + delay >= self._first_deadline
            )
        ):
            self.factory.doStop()
            self._stopping = True
            self._started.errback(failure)
            return
        self.attempts_failed += 1
        self.log.warn(
            "connect failed; retrying",
            **{
                "endpoint-id": self.endpoint_id,
                "url": self.upstream.route(self.endpoint_id),
                "backoff": format_duration(delay),
                "error": str(error),
                "attempt": self.attempts_failed,
            },
        )
        self._reconnect_call = self.upstream.reactor.callLater(delay, self._connect)

    def _server_going_away(self, session: Session) -> None:
        """The server asked us to go: connect again now, keep this one until it closes."""
        if self._stopping or self.session is not session:
            return
        self.session = None
        self.departing.add(session)
        delay = self._backoff.next_delay()
        self.log.info(
            "server going away; reconnecting", endpoint_id=self.endpoint_id, backoff=f"{delay:.2f}s"
        )
        self._reconnect_call = self.upstream.reactor.callLater(delay, self._connect)

    def _schedule_handoffs(self) -> None:
        """The replacement is up: let each departing session go after the overlap."""
        clock = self.upstream.reactor
        for session in self.departing:
            if session not in self._handoff_calls:
                self._handoff_calls[session] = clock.callLater(
                    self.upstream.handoff_overlap, self._hand_off, session
                )

    def _hand_off(self, session: Session) -> None:
        """Answer GoAway(0) on a departing session; close it if the server does not."""
        self._handoff_calls[session] = self.upstream.reactor.callLater(
            self.upstream.handoff_overlap, self._close_when_idle, session
        )
        if isinstance(session, ListenerSession):
            session.announce_go_away()

    def _close_when_idle(self, session: Session) -> None:
        self._handoff_calls.pop(session, None)
        session.go_away()
        session.when_idle().addCallback(_close, session)

    def _session_ended(self, reason: BaseException, session: Session) -> None:
        call = self._handoff_calls.pop(session, None)
        if call is not None and call.active():
            call.cancel()
        if session in self.departing:
            # Its replacement is connected or on its way.
            self.departing.discard(session)
            return
        if self.session is not session:
            return
        self.session = None
        if self._stopping:
            return
        delay = self._backoff.next_delay()
        self.log.warn(
            "disconnected; reconnecting",
            endpoint_id=self.endpoint_id,
            backoff=f"{delay:.2f}s",
            error=str(reason) or type(reason).__name__,
        )
        self._reconnect_call = self.upstream.reactor.callLater(delay, self._connect)

    # -- stopping -----------------------------------------------------------

    def stopListening(self) -> Deferred[None]:
        """
        Stop gracefully: GoAway(0), let in-flight streams finish, then close.

        Use :meth:`shutdown` to close at once.
        """
        if self._stopped is not None:
            return _chain(self._stopped)
        self._stopping = True
        self._stopped = Deferred()
        self._cancel_pending()
        sessions = [s for s in self._sessions() if not s.closed]
        if not sessions:
            self._finish_stop()
            return _chain(self._stopped)
        # GoAway(0) first while still accepting: a stream the server opened before it heard
        # the GoAway is on its way, and refusing it would cost that request a 502.  After
        # ``handoff_overlap`` new streams are refused and the sessions close once idle.
        for session in sessions:
            if isinstance(session, ListenerSession):
                session.announce_go_away()
            else:
                session.go_away()
        self._stop_accepting_call = self.upstream.reactor.callLater(
            self.upstream.handoff_overlap, self._stop_accepting, sessions
        )
        return _chain(self._stopped)

    def _stop_accepting(self, sessions: list[Session]) -> None:
        self._stop_accepting_call = None
        idle = []
        for session in sessions:
            session.listen(None)
            session.go_away()
            idle.append(session.when_idle().addCallback(_close, session))
        DeferredList(idle).addCallback(lambda _: self._finish_stop())

    def shutdown(self) -> Deferred[None]:
        """Close the connections now, in-flight streams included."""
        d = self.stopListening()
        self._cancel_pending()
        for session in self._sessions():
            session.close()
        self._finish_stop()
        return d

    def _sessions(self) -> list[Session]:
        current = [self.session] if self.session is not None else []
        return current + list(self.departing)

    def _cancel_pending(self) -> None:
        if self._stop_accepting_call is not None and self._stop_accepting_call.active():
            self._stop_accepting_call.cancel()
        self._stop_accepting_call = None
        for call in self._handoff_calls.values():
            if call.active():
                call.cancel()
        self._handoff_calls.clear()
        if self._reconnect_call is not None and self._reconnect_call.active():
            self._reconnect_call.cancel()
        self._reconnect_call = None
        if self._dialing is not None:
            dialing, self._dialing = self._dialing, None
            dialing.addErrback(lambda _: None)
            dialing.cancel()

    def _finish_stop(self) -> None:
        self.session = None
        self.departing.clear()
        if self._stopped is not None and not self._stopped.called:
            self.factory.doStop()
            if not self._started.called:
                self._started.errback(Failure(WebSocketDialError(None, "listener closed", False)))
            self._stopped.callback(None)


def _close(_: object, session: Session) -> None:
    session.close()


def _chain(d: Deferred[None]) -> Deferred[None]:
    """A new Deferred that fires when ``d`` does, leaving ``d`` untouched."""
    if d.called:
        return succeed(None)
    out: Deferred[None] = Deferred()

    def relay(result: object) -> object:
        out.callback(None)
        return result

    d.addBoth(relay)
    return out

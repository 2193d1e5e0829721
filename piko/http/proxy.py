# -*- test-case-name: piko.test.http.test_proxy -*-
"""
Relay one HTTP request to an upstream byte transport and its response back, streaming.

A :class:`ProxyExchange` is the glue between an :class:`~piko.http.server.IServerExchange`
(the downstream request) and one upstream connection obtained from an
:class:`IUpstreamConnector` (a yamux stream on the server, a pooled TCP connection on the
agent).  Bodies are never buffered whole: each side is registered as the other's producer, so a
slow reader pauses the fast writer.  A ``101`` switches both directions to a raw splice with
half-close passed on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IDelayedCall,
    IHalfCloseableProtocol,
    IProtocol,
    IProtocolFactory,
    IPushProducer,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Interface, implementer

from piko.http import errors
from piko.http.head import RequestHead
from piko.http.parser import (
    NEED_DATA,
    PAUSED,
    BodyChunk,
    HeadEvent,
    MessageEnd,
    ParseError,
    ResponseReader,
)
from piko.http.rewrite import BodyFraming, response_headers_for_relay, upgrade_response_head
from piko.http.server import IRequestReceiver, IServerExchange
from piko.interfaces import ICorkableTransport, IUnwaitedCloseTransport, lose_write
from piko.interfaces import abort as abort_transport
from piko.splice import OneProtocolFactory


class IUpstreamConnector(Interface):
    """Supplies the upstream byte transport for each proxied request."""

    def connect(protocol: IProtocol) -> Deferred[IProtocol]:
        """
        Connect ``protocol`` to an upstream transport (fresh or reused); the Deferred fires
        with ``protocol`` after its ``makeConnection``, or fails if no transport can be had.
        """

    def release(protocol: IProtocol, reusable: bool) -> None:
        """
        ``protocol`` is done with its transport.  If ``reusable`` (a complete, delimited,
        keep-alive response) the connector may give it to a later request, else it closes it.
        """


@implementer(IUpstreamConnector)
class EndpointConnector:
    """
    One new connection per request from an ``IStreamClientEndpoint``, closed after the
    response.  This is the server side: the endpoint opens a yamux stream, and the stream is
    closed once the agent answered (Go sends ``Connection: close``; the agent FINs first).
    """

    def __init__(self, endpoint: IStreamClientEndpoint) -> None:
        self.endpoint = endpoint

    def connect(self, protocol: IProtocol) -> Deferred[IProtocol]:
        factory: IProtocolFactory = OneProtocolFactory(protocol)  # type: ignore[arg-type]
        return self.endpoint.connect(factory)

    def release(self, protocol: IProtocol, reusable: bool) -> None:
        transport = getattr(protocol, "transport", None)
        if transport is not None:
            # The agent FINs after its response; our FIN only completes the stream, so a
            # yamux stream may send it with the next frame (see Stream.loseConnectionUnwaited).
            if IUnwaitedCloseTransport.providedBy(transport):
                transport.loseConnectionUnwaited()
            else:
                transport.loseConnection()


@implementer(IPushProducer)
class _BodyProducer:
    """Pauses the downstream request body while the upstream transport's buffer is full."""

    def __init__(self, exchange: IServerExchange) -> None:
        self.exchange = exchange

    def pauseProducing(self) -> None:
        self.exchange.pause_body()

    def resumeProducing(self) -> None:
        self.exchange.resume_body()

    def stopProducing(self) -> None:
        pass


@implementer(IHalfCloseableProtocol)
class _DownstreamSplice(Protocol):
    """After a 101: the downstream half of the raw relay, writing into the upstream transport."""

    def __init__(self, upstream: Any) -> None:
        self.upstream = upstream

    def dataReceived(self, data: bytes) -> None:
        self.upstream.write(data)

    def readConnectionLost(self) -> None:
        lose_write(self.upstream)

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:  # noqa: B008
        self.upstream.loseConnection()


@implementer(IRequestReceiver, IHalfCloseableProtocol)
class ProxyExchange(Protocol):
    """
    Relays one request and its response between ``exchange`` and an upstream connection.

    :param exchange: the downstream request.
    :param connector: gives the upstream connection.
    :param clock: for ``timeout``.
    :param rewrite: builds the upstream request head bytes from the downstream head and body
        framing (e.g. ``functools.partial(rewrite_request, client_ip=..., close=True)``).
    :param timeout: seconds to wait for the response head before answering 504 (Go's
        ``proxy.timeout``); not applied when ``Upgrade: websocket`` (exact value, as Go).
        None disables it.
    :param unreachable: builds the 502 answered when the upstream fails before a head.
    :param timed_out: builds the 504.
    :param retry: asked, when the upstream connection failed or broke before any byte of
        the response arrived, whether the request is sent again elsewhere; it gets whether
        the request was written to this connection.  ``True``: this exchange ends without
        answering (the caller answers through its next attempt); ``None`` or ``False``:
        the 502 as usual.  Never asked on a timeout or for a response that began.
    """

    log = Logger()

    def __init__(
        self,
        exchange: IServerExchange,
        connector: IUpstreamConnector,
        clock: IReactorTime,
        rewrite: Callable[[RequestHead, BodyFraming], bytes],
        *,
        timeout: float | None = 30.0,
        unreachable: Callable[..., bytes] = errors.upstream_unreachable,
        timed_out: Callable[..., bytes] = errors.upstream_timeout,
        retry: Callable[[bool], bool] | None = None,
    ) -> None:
        self.exchange = exchange
        self.connector = connector
        self.clock = clock
        self.rewrite = rewrite
        self.timeout = timeout
        self.unreachable = unreachable
        self.timed_out = timed_out
        self.retry = retry
        self.reader = ResponseReader()
        self.reader.expect(exchange.head.method)
        self._timer: IDelayedCall | None = None
        self._got_head = False
        self._done = False
        self._relaying = False
        self._reusable = False
        self._request_done = False
        self._released = False
        #: The request head was written to the upstream connection.
        self._written = False
        #: Some byte of the response arrived (a retry could duplicate a response).
        self._response_bytes = False

    @property
    def _tx(self) -> Any:
        return self.transport

    def start(self) -> Deferred[Any]:
        """Begin: open the upstream connection and arm the timeout."""
        if self.timeout is not None and self.exchange.head.get(b"upgrade") != b"websocket":
            self._timer = self.clock.callLater(self.timeout, self._on_timeout)
        d = self.connector.connect(self)
        d.addErrback(self._connect_failed)
        return d

    # -- failure paths

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _note(self, why: str) -> None:
        # Tell an exchange that listens (the request inspector's) why this one failed.
        note = getattr(self.exchange, "note_failure", None)
        if note is not None:
            note(why)

    def _connect_failed(self, reason: Failure) -> None:
        # Warn, as Go does: the service behind the route is down or refusing.
        self.log.warn("upstream unreachable", error=reason.getErrorMessage())
        self._note(reason.getErrorMessage())
        self._fail_before_head()

    def _fail_before_head(self) -> None:
        if self._done:
            return
        self._done = True
        self._cancel_timer()
        if self.retry is not None and not self._response_bytes and self.retry(self._written):
            return
        self.exchange.respond(self.unreachable)

    def _on_timeout(self) -> None:
        self._timer = None
        if self._done or self._got_head:
            return
        self._done = True
        self._note(f"no response head within {self.timeout:g}s")
        self.exchange.respond(self.timed_out)
        self._close_upstream(abort=True)

    def _close_upstream(self, abort: bool = False) -> None:
        if self.transport is None:
            return
        if abort:
            abort_transport(self._tx)
        else:
            self._tx.loseConnection()

    # -- upstream connection

    def connectionMade(self) -> None:
        if self._done:
            self._close_upstream()
            return
        framing = self.exchange.framing
        self._written = True
        self._tx.write(self.rewrite(self.exchange.head, framing))
        self._tx.registerProducer(_BodyProducer(self.exchange), True)
        self.exchange.register_producer(self._tx)
        if framing.empty and not self.exchange.upgrade:
            self._request_done = True
        self.exchange.set_receiver(self)

    def dataReceived(self, data: bytes) -> None:
        if self._relaying:
            self.exchange.transport.write(data)
            return
        if self._done and not self._got_head:
            return
        self._response_bytes = True
        self.reader.feed(data)
        # A yamux stream downstream (the agent) holds what this read produces (head, body,
        # FIN) and sends it as one frame.
        downstream = self.exchange.transport
        if not ICorkableTransport.providedBy(downstream):
            self._process()
            return
        downstream.cork()
        try:
            self._process()
        finally:
            downstream.uncork()

    def _process(self) -> None:
        while not self._relaying:
            try:
                ev = self.reader.next_event()
            except ParseError as e:
                self.log.warn("bad response from upstream")
                self._note(f"bad response from upstream: {e}")
                self._broken()
                return
            if ev is NEED_DATA or ev is PAUSED:
                return
            if isinstance(ev, HeadEvent):
                self._on_head(ev)
            elif isinstance(ev, BodyChunk):
                self.exchange.write(ev.data)
            elif isinstance(ev, MessageEnd):
                if not self._got_head:
                    self.reader.start_next()  # an interim 1xx ended
                    continue
                self._finish()
                return

    def _on_head(self, ev: HeadEvent) -> None:
        head = ev.head
        status = getattr(head, "status", 0)
        if 100 <= status < 200 and status != 101:
            return  # 100 Continue / 103: the server side sends its own 100 when reading the body.
        self._got_head = True
        self._cancel_timer()
        if self._done:
            return
        if status == 101:
            self._upgrade(head)
            return
        self._reusable = ev.keep_alive
        self.exchange.start_response(status, response_headers_for_relay(head))  # type: ignore[arg-type]

    def _upgrade(self, head: Any) -> None:
        self._relaying = True
        self._done = True
        self.exchange.unregister_producer()
        downstream = self.exchange.transport
        downstream.write(upgrade_response_head(head))
        leftover = self.reader.take_buffered()
        if leftover:
            downstream.write(leftover)
        self.exchange.take_over(_DownstreamSplice(self._tx))
        downstream_any: Any = downstream
        self._tx.unregisterProducer()
        self._tx.registerProducer(downstream_any, True)
        downstream_any.registerProducer(self._tx, True)

    def _finish(self) -> None:
        self._done = True
        self.exchange.finish()
        self._release()

    def _release(self) -> None:
        if self._released:
            return
        self._released = True
        if self.transport is not None:
            self._tx.unregisterProducer()
        self.connector.release(self, self._reusable and self._request_done)

    def _broken(self) -> None:
        self._note(
            "the local service closed the connection before a response"
            if not self._got_head
            else "the response broke off"
        )
        if not self._got_head:
            self._fail_before_head()
            self._close_upstream(abort=True)
        elif not self._done:
            self._done = True
            self.exchange.abort()
            self._close_upstream(abort=True)

    def readConnectionLost(self) -> None:
        if self._relaying:
            lose_write(self.exchange.transport)
            return
        self.reader.feed_eof()
        self._process()
        if not self._done or not self._got_head:
            self._broken()
        self._close_upstream()

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:  # noqa: B008
        self._cancel_timer()
        if self._relaying:
            self.exchange.transport.loseConnection()
            return
        if not self._done:
            self.reader.feed_eof()
            self._process()
        if not self._done:
            self._reusable = False
            self._broken()

    # -- IRequestReceiver (downstream request body)

    def body_data(self, data: bytes) -> None:
        if self.exchange.framing.chunked:
            self._tx.writeSequence([b"%x\r\n" % len(data), data, b"\r\n"])
        else:
            self._tx.write(data)

    def body_end(self) -> None:
        if self.exchange.framing.chunked:
            self._tx.write(b"0\r\n\r\n")
        self._request_done = True

    def connection_lost(self, reason: Failure) -> None:
        """The downstream client went away: drop the upstream side too."""
        self._cancel_timer()
        if not self._done:
            self._done = True
            self._close_upstream(abort=True)

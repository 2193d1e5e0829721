# -*- test-case-name: piko.test.inspect.test_capture -*-
"""
Capturing what the agent relays, without changing it or holding it up.

The agent's listeners take an :class:`IListenerInspector` (the only thing they know of the
inspector): an HTTP listener wraps its request handler with :meth:`~IListenerInspector.wrap_http`
and a TCP listener each stream's protocol with :meth:`~IListenerInspector.wrap_tcp`.

An HTTP exchange is seen through a :class:`CapturingExchange`, an
:class:`~piko.http.observe.ObservedExchange` that also copies the request body as the relay
reads it and the response body as the relay writes it, each into a
:class:`~piko.inspect.store.BodyCapture` that keeps at most its cap.  Every byte still goes
where it went, in the same call, and flow control is untouched (the wrappers pass pause and
resume through), so a body larger than the cap streams as before.  A 502 or 504 the agent
answers itself is captured whole, with why (the connect error, the timeout).  An upgraded
exchange (a WebSocket) and every TCP stream become :class:`~piko.inspect.store.ConnectionRecord`
with the bytes they carried each way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IProtocol, IReactorTime
from twisted.python.failure import Failure
from zope.interface import Interface, implementer

from piko.http.head import RequestHead, serialize_headers
from piko.http.observe import CountedTunnel, ExchangeOutcome, ObservedExchange
from piko.http.server import IRequestHandler, IRequestReceiver, IServerExchange
from piko.inspect.store import (
    RECORD_OVERHEAD,
    BodyCapture,
    CaptureStore,
    ConnectionRecord,
    ExchangeRecord,
)

__all__ = ["CapturingExchange", "CapturingHandler", "IListenerInspector"]


class IListenerInspector(Interface):
    """What the agent's listeners call to have their traffic captured."""

    def wrap_http(handler: IRequestHandler, endpoint_id: str) -> IRequestHandler:
        """The handler to serve an HTTP listener's streams with instead of ``handler``."""

    def wrap_tcp(protocol: IProtocol, endpoint_id: str, target: str) -> IProtocol:
        """The protocol to run a TCP listener's stream with instead of ``protocol``."""


@implementer(IRequestReceiver)
class _CapturingReceiver:
    """Passes a request body on to the relay, keeping a copy up to the cap."""

    __slots__ = ("exchange", "receiver")

    def __init__(self, receiver: IRequestReceiver, exchange: CapturingExchange) -> None:
        self.receiver = receiver
        self.exchange = exchange

    def body_data(self, data: bytes) -> None:
        self.receiver.body_data(data)
        self.exchange.captured(self.exchange._record.request_body, data)

    def body_end(self) -> None:
        self.receiver.body_end()

    def connection_lost(self, reason: Failure) -> None:
        self.receiver.connection_lost(reason)
        self.exchange._client_gone()


class CapturingExchange(ObservedExchange):
    """
    The exchange the relay answers through: everything goes to the real one, and a copy of
    the bodies (up to the cap) to ``record``.
    """

    def __init__(
        self,
        exchange: Any,
        clock: IReactorTime,
        record: ExchangeRecord,
        store: CaptureStore,
        tunnel: Callable[[RequestHead, Any], Any],
    ) -> None:
        super().__init__(exchange, clock, self._completed, tunnel)
        self._record = record
        self._store = store
        self._canned = b""

    def set_receiver(self, receiver: IRequestReceiver) -> None:
        self._exchange.set_receiver(_CapturingReceiver(receiver, self))

    def captured(self, body: BodyCapture, data: bytes) -> None:
        """Copy ``data`` into ``body`` (up to its cap), charging the store for it."""
        kept = body.append(data)
        if kept:
            self._store.charge(self._record, kept)

    def _client_gone(self) -> None:
        # The relay drops the exchange without answering (nothing reports an outcome): the
        # record ends here, saying why.
        if self._done_callback is None:
            return
        self._record.error = self._record.error or "the client closed the connection"
        self._complete()

    def write(self, data: bytes) -> None:
        self._sent += len(data)
        self._exchange.write(data)
        self.captured(self._record.response_body, data)

    def respond(self, build: Callable[..., bytes]) -> None:
        def captured(date: bytes, **kwargs: Any) -> bytes:
            response = build(date, **kwargs)
            self._canned = response
            return response

        super().respond(captured)

    def note_failure(self, why: str) -> None:
        """The relay says why it is about to answer an error itself (or give up)."""
        if not self._record.error:
            self._record.error = why

    def _completed(self, outcome: ExchangeOutcome) -> None:
        record = self._record
        record.status = outcome.status
        record.response_lines = serialize_headers(outcome.headers)
        if self._canned:
            end = self._canned.find(b"\r\n\r\n")
            if end >= 0:
                self.captured(record.response_body, self._canned[end + 4 :])
        if outcome.reason:
            record.error = (
                f"{outcome.reason}: {record.error}"
                if record.error and record.error != outcome.reason
                else outcome.reason
            )
        elif outcome.status == 0 and not record.error:
            record.error = "the exchange ended before a response"
        record.ended = record.started + outcome.duration
        self._store.charge(record, len(record.response_lines))
        self._store.completed(record)
        waiters, record.waiters = record.waiters, None
        for waiter in waiters or ():
            waiter(record)


@implementer(IRequestHandler)
class CapturingHandler:
    """
    Records every request an HTTP listener's handler answers.

    :param handler: the listener's handler (the relay).
    :param store: where records go.
    :param clock: the reactor's clock (durations).
    :param wall: wall-clock seconds (start times shown).
    :param tunnel: makes the connection record of an upgrade.
    """

    def __init__(
        self,
        handler: IRequestHandler,
        endpoint_id: str,
        store: CaptureStore,
        clock: IReactorTime,
        wall: Callable[[], float],
        tunnel: Callable[[ExchangeRecord, Any], Any],
    ) -> None:
        self.handler = handler
        self.endpoint_id = endpoint_id
        self.store = store
        self.clock = clock
        self.wall = wall
        self.tunnel = tunnel

    def request_received(self, exchange: IServerExchange) -> None:
        """Start a record, and pass the request on through a capturing exchange."""
        store = self.store
        head = exchange.head
        transport = exchange.transport
        record = ExchangeRecord(
            id=store.new_id("req"),
            endpoint_id=self.endpoint_id,
            started=self.wall(),
            method=head.method,
            target=head.target,
            version=head.version,
            raw_head=exchange.raw_head,
            request_body=BodyCapture(store.body_cap),
            response_body=BodyCapture(store.body_cap),
            replay_of=getattr(transport, "replay_of", ""),
            cost=RECORD_OVERHEAD + len(exchange.raw_head),
        )
        started = getattr(transport, "record_started", None)
        if started is not None:
            started(record)
        store.add(record)

        def tunnel(head: RequestHead, protocol: Any) -> Any:
            return self.tunnel(record, protocol)

        captured = CapturingExchange(exchange, self.clock, record, store, tunnel)
        self.handler.request_received(captured)  # type: ignore[arg-type]


def counted(
    store: CaptureStore,
    record: ConnectionRecord,
    protocol: IProtocol,
    wall: Callable[[], float],
    live: dict[str, CountedTunnel],
) -> IProtocol:
    """
    ``protocol`` wrapped to count its bytes into ``record`` (kept in ``live`` while open, so
    the API shows the counts so far), which is added to ``store``.
    """

    def ended(received: int, sent: int) -> None:
        live.pop(record.id, None)
        record.bytes_in, record.bytes_out = received, sent
        record.ended = wall()
        store.completed(record)

    tunnel = CountedTunnel(protocol, ended)
    live[record.id] = tunnel
    store.add(record)
    return tunnel

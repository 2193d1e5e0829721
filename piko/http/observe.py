# -*- test-case-name: piko.test.http.test_access_log -*-
"""
Watching what a request handler answers, without changing it.

Go wraps its handlers in middleware (metrics, access log) that see the status, headers and
size of every response.  :class:`ObservedExchange` is the same seam over
:class:`~piko.http.server.IServerExchange`: it forwards every call to the real exchange and,
once the response is complete (finished, aborted, or the connection handed over for an
upgrade), calls back with an :class:`ExchangeOutcome`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from attrs import frozen
from twisted.internet.interfaces import IHalfCloseableProtocol, IProtocol, IReactorTime
from twisted.python.failure import Failure
from zope.interface import implementer

from piko.http.head import RequestHead

Headers = tuple[tuple[bytes, bytes], ...]


@frozen
class ExchangeOutcome:
    """
    What one request got.

    :ivar status: the response status (101 for a handed-over upgrade; 0 if the exchange was
        aborted before any head).
    :ivar headers: the response headers as the handler gave them (for a canned response, the
        whole head as written).
    :ivar sent: response body bytes written.
    :ivar started: the clock's time when the request head arrived.
    :ivar ended: the clock's time when the response completed.
    :ivar transport: the client's transport, for its address (the access log's console line).
    :ivar reason: for a canned error response (5xx), its JSON ``error`` message, if any.
    :ivar policy: the traffic policy that refused the request (:mod:`piko.policy`), or ``""``.
    :ivar policy_action: the policy's action that refused it (``rate_limit``...), or ``""``.
    """

    head: RequestHead
    request_size: int
    status: int
    headers: Headers
    sent: int
    started: float
    ended: float
    transport: object = None
    reason: str = ""
    policy: str = ""
    policy_action: str = ""

    @property
    def duration(self) -> float:
        """Seconds from request head to response end."""
        return self.ended - self.started


def parse_head_headers(response: bytes) -> tuple[int, Headers, int]:
    """``(status, headers, body length)`` of a whole canned response."""
    head_end = response.find(b"\r\n\r\n")
    if head_end < 0:
        return 0, (), 0
    try:
        status = int(response[9:12])
    except ValueError:
        status = 0
    lines = response[:head_end].split(b"\r\n")[1:]
    headers = tuple(
        (name.strip(), value.strip())
        for name, sep, value in (line.partition(b":") for line in lines)
        if sep
    )
    return status, headers, len(response) - head_end - 4


def error_reason(status: int, response: bytes) -> str:
    """The ``{"error": "..."}`` message of a canned 5xx response, else ``""``."""
    if status < 500:
        return ""
    start = response.find(b'{"error":"')
    if start < 0:
        return ""
    start += 10
    end = response.find(b'"', start)
    return response[start : end if end >= 0 else None][:200].decode("utf-8", "replace")


_MISSING = object()
_REQUEST_ATTRIBUTES = ("head", "raw_head", "framing", "upgrade")
_BOUND_METHODS = frozenset(
    {
        "date",
        "set_receiver",
        "pause_body",
        "resume_body",
        "register_producer",
        "unregister_producer",
    }
)


def copy_request_attributes(wrapper: object, exchange: object) -> None:
    """
    Copy an exchange's request attributes (they never change) onto a wrapper that forwards
    everything else through ``__getattr__``: each use is then a plain attribute read instead
    of a failed lookup and a forward per wrapper.
    """
    for name in _REQUEST_ATTRIBUTES:
        value = getattr(exchange, name, _MISSING)
        if value is not _MISSING:
            setattr(wrapper, name, value)


def forward_attribute(wrapper: object, exchange: object, name: str) -> Any:
    """A wrapper's ``__getattr__``: the exchange's attribute, kept if it is a bound method."""
    value = getattr(exchange, name)
    if name in _BOUND_METHODS:
        setattr(wrapper, name, value)
    return value


class ObservedExchange:
    """
    An :class:`~piko.http.server.IServerExchange` that reports its outcome once.

    Everything not overridden here is the wrapped exchange's own attribute.
    """

    def __init__(
        self,
        exchange: Any,
        clock: IReactorTime,
        done: Callable[[ExchangeOutcome], None],
        tunnel: Callable[[RequestHead, Any], Any] | None = None,
    ) -> None:
        self._exchange = exchange
        #: Given the protocol of a hand-over, returns the one to hand over (a byte counter).
        self._tunnel = tunnel
        self._clock = clock
        self._done_callback: Callable[[ExchangeOutcome], None] | None = done
        self._started = clock.seconds()
        self._status = 0
        self._headers: Headers = ()
        self._sent = 0
        self._reason = ""
        self._policy = ("", "")
        copy_request_attributes(self, exchange)

    def __getattr__(self, name: str) -> Any:
        return forward_attribute(self, self._exchange, name)

    def note_policy(self, policy: str, action: str) -> None:
        """A traffic policy refused this request (for the access log and the dashboard)."""
        self._policy = (policy, action)

    def respond(self, build: Callable[..., bytes]) -> None:
        def observed(date: bytes, **kwargs: Any) -> bytes:
            response = build(date, **kwargs)
            self._status, self._headers, self._sent = parse_head_headers(response)
            self._reason = error_reason(self._status, response)
            return response

        self._exchange.respond(observed)
        self._complete()

    def start_response(self, status: int, headers: Headers) -> None:
        self._status = status
        self._headers = tuple(headers)
        self._exchange.start_response(status, headers)

    def write(self, data: bytes) -> None:
        self._sent += len(data)
        self._exchange.write(data)

    def finish(self) -> None:
        self._exchange.finish()
        self._complete()

    def abort(self) -> None:
        self._exchange.abort()
        self._complete()

    def take_over(self, protocol: Any, replay_head: bool = False) -> None:
        self._status = self._status or 101
        if self._tunnel is not None:
            protocol = self._tunnel(self._exchange.head, protocol)
        self._exchange.take_over(protocol, replay_head)
        self._complete()

    def _complete(self) -> None:
        done, self._done_callback = self._done_callback, None
        if done is None:
            return
        exchange = self._exchange
        length = exchange.framing.length or 0
        done(
            ExchangeOutcome(
                head=exchange.head,
                request_size=len(exchange.raw_head) + length,
                status=self._status,
                headers=self._headers,
                sent=self._sent,
                started=self._started,
                ended=self._clock.seconds(),
                transport=getattr(exchange, "transport", None),
                reason=self._reason,
                policy=self._policy[0],
                policy_action=self._policy[1],
            )
        )


@implementer(IProtocol, IHalfCloseableProtocol)
class CountedTunnel:
    """
    Wraps the protocol a connection is handed over to, counting the bytes either way; calls
    ``ended(received, sent)`` when the connection is lost.  Half-closes are passed on when the
    wrapped protocol takes them.
    """

    def __init__(self, protocol: IProtocol, ended: Callable[[int, int], None]) -> None:
        self.protocol = protocol
        self.ended = ended
        self.received = 0
        self.sent = 0
        self.transport: Any = None

    def makeConnection(self, transport: Any) -> None:
        """
        Count what is written to ``transport``, then connect the wrapped protocol to it.

        The transport itself is handed on, not a wrapper: code beyond it checks its type and
        interfaces (autobahn reads the TLS channel of a ``TLSMemoryBIOProtocol``).  So its
        ``write`` is replaced on the instance, which from now on carries this tunnel only;
        ``writeSequence`` joins and goes through it, so nothing is counted twice.
        """
        self.transport = transport
        write = transport.write

        def counted_write(data: bytes) -> None:
            self.sent += len(data)
            write(data)

        def counted_sequence(data: list[bytes]) -> None:
            counted_write(b"".join(data))

        try:
            transport.write = counted_write
            transport.writeSequence = counted_sequence
        except AttributeError:  # pragma: no cover - a transport with slots: count "in" only
            pass
        self.protocol.makeConnection(transport)

    def connectionMade(self) -> None:
        """Nothing: :meth:`makeConnection` connects the wrapped protocol."""

    def dataReceived(self, data: bytes) -> None:
        """Count and pass on."""
        self.received += len(data)
        self.protocol.dataReceived(data)

    def readConnectionLost(self) -> None:
        """Pass on, or close if the wrapped protocol does not take half-closes."""
        if IHalfCloseableProtocol.providedBy(self.protocol):
            self.protocol.readConnectionLost()
        else:
            self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        """Pass on."""
        if IHalfCloseableProtocol.providedBy(self.protocol):
            self.protocol.writeConnectionLost()

    def connectionLost(self, reason: Failure) -> None:
        """Pass on, then report the counts."""
        try:
            self.protocol.connectionLost(reason)
        finally:
            self.ended(self.received, self.sent)

# -*- test-case-name: piko.test.inspect.test_replay -*-
"""
Sending a captured request to the local service once more, as it was or modified.

A replay goes through the listener's own relay, not around it: the request bytes are fed to
an :class:`~piko.http.server.HTTPServerProtocol` over an in-memory :class:`ReplayTransport`,
served by the listener's (capturing) handler.  So it is rewritten exactly as a request from
the server would be (``X-Forwarded-For``, the target's path prefix), it uses the listener's
connection pool and timeout, and it is captured like any other exchange, marked
``replay_of`` the original.  The response bytes are dropped: the capture has them.

The body is framed anew with ``Content-Length`` (the capture holds the decoded body, so a
chunked original is sent delimited).  A request whose body was truncated by the cap cannot
be replayed as it was (the bytes are gone); it can be with a new body.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from attrs import frozen
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from piko.http.server import HTTPServerProtocol, IRequestHandler
from piko.inspect.store import ExchangeRecord

__all__ = ["Modifications", "ReplayError", "ReplayTransport", "build_request", "replay"]

#: Dropped from a replayed request: the replay frames its own body and closes after it.
_REFRAMED = frozenset({b"content-length", b"transfer-encoding", b"connection", b"expect"})
_TOKEN = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_VALUE = re.compile(rb"^[^\r\n\x00]*$")
_TARGET = re.compile(rb"^/[^\s\x00-\x1f\x7f]*$")


class ReplayError(Exception):
    """The replay cannot be sent; the message says why (shown to the user)."""


@frozen
class Modifications:
    """
    What to change in a replayed request; ``None`` keeps the original.

    :ivar headers: the whole header list (``Host`` included), in order.
    """

    method: bytes | None = None
    target: bytes | None = None
    headers: tuple[tuple[bytes, bytes], ...] | None = None
    body: bytes | None = None


def build_request(record: ExchangeRecord, changes: Modifications | None = None) -> bytes:
    """
    The bytes of the replayed request.

    :raises ReplayError: the original body was truncated and no new body is given, or a
        modification is not valid HTTP (a method or header name that is not a token, a
        value or path with control characters, a path not starting with ``/``).
    """
    changes = changes or Modifications()
    method = changes.method if changes.method is not None else record.method
    target = changes.target if changes.target is not None else record.target
    headers: Sequence[tuple[bytes, bytes]] = (
        changes.headers if changes.headers is not None else record.request_headers
    )
    if changes.body is not None:
        body = changes.body
    elif record.request_body.truncated:
        raise ReplayError(
            f"the request body was truncated ({record.request_body.size} bytes, "
            f"{len(record.request_body.data)} kept): replay it with a new body"
        )
    else:
        body = bytes(record.request_body.data)
    if not _TOKEN.match(method):
        raise ReplayError(f"invalid method: {method.decode('latin-1')!r}")
    if not _TARGET.match(target):
        raise ReplayError(f"invalid path: {target.decode('latin-1')!r} (must start with /)")
    lines = [b"%s %s HTTP/1.1\r\n" % (method, target)]
    has_host = False
    for name, value in headers:
        if not _TOKEN.match(name):
            raise ReplayError(f"invalid header name: {name.decode('latin-1')!r}")
        if not _VALUE.match(value):
            raise ReplayError(f"invalid value for header {name.decode('latin-1')}")
        lowered = name.lower()
        if lowered in _REFRAMED:
            continue
        has_host = has_host or lowered == b"host"
        lines.append(b"%s: %s\r\n" % (name, value.strip()))
    if not has_host:
        lines.insert(1, b"Host: localhost\r\n")
    if body or method not in (b"GET", b"HEAD", b"OPTIONS", b"DELETE", b"TRACE"):
        lines.append(b"Content-Length: %d\r\n" % len(body))
    lines.append(b"Connection: close\r\n\r\n")
    return b"".join(lines) + body


class ReplayTransport(StringTransport):
    """
    The in-memory connection a replayed request arrives on.

    The capture sees :attr:`replay_of` on the exchange's transport and calls
    :meth:`record_started` with the new record; :attr:`done` fires with it once answered,
    or fails with :class:`ReplayError` if the relay refused the request without an
    exchange (a head the HTTP reader rejects).
    """

    def __init__(self, replay_of: str) -> None:
        super().__init__(peerAddress=IPv4Address("TCP", "127.0.0.1", 0))
        self.replay_of = replay_of
        self.done: Deferred[ExchangeRecord] = Deferred()
        self.protocol: HTTPServerProtocol | None = None
        self._record: ExchangeRecord | None = None
        self._lost = False

    def record_started(self, record: ExchangeRecord) -> None:
        """The capture made ``record`` for the replayed request."""
        self._record = record
        record.waiters = [*(record.waiters or ()), self._answered]

    def _answered(self, record: ExchangeRecord) -> None:
        if not self.done.called:
            self.done.callback(record)
        self.loseConnection()

    def write(self, data: bytes) -> None:
        """Keep only the start of what is written (the first line says a refusal's why)."""
        if self.io.tell() < 256:
            super().write(data[:256])

    def writeSequence(self, data: Sequence[bytes]) -> None:
        self.write(b"".join(data))

    def registerProducer(self, producer: object, streaming: bool) -> None:
        """Take the relay's producer (replacing any other: nothing is buffered here)."""
        self.producer = producer  # type: ignore[assignment]
        self.streaming = streaming  # type: ignore[assignment]

    def loseConnection(self) -> None:
        """Close now: the protocol hears it at once (nothing is in flight)."""
        if self._lost:
            return
        self._lost = True
        self.disconnecting = True
        if self.protocol is not None:
            self.protocol.connectionLost(Failure(ConnectionError("replay over")))
        if not self.done.called:
            if self._record is not None:
                # The relay closes while it finishes the answer: the record completes just
                # after, and :meth:`_answered` fires ``done`` then.
                return
            else:
                first = self.value().split(b"\r\n", 1)[0].decode("latin-1", "replace")
                self.done.errback(ReplayError(f"the request was refused: {first}"))

    abortConnection = loseConnection


def replay(
    handler: IRequestHandler, clock: IReactorTime, record: ExchangeRecord, request: bytes
) -> Deferred[ExchangeRecord]:
    """
    Feed ``request`` to ``handler`` (a listener's capturing handler) as the replay of
    ``record``; the Deferred fires with the new record once it is answered.
    """
    transport = ReplayTransport(record.id)
    protocol = HTTPServerProtocol(handler, clock, header_timeout=None, idle_timeout=None)
    transport.protocol = protocol
    protocol.makeConnection(transport)
    protocol.dataReceived(request)
    return transport.done

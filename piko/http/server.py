# -*- test-case-name: piko.test.http.test_server -*-
"""
An HTTP/1.1 server protocol that streams, over any ``ITransport``.

``twisted.web`` buffers request bodies and cannot pass an ``Upgrade`` through, so the proxy
port (and the agent, on each yamux stream) use this instead.  It parses with
:class:`piko.http.parser.RequestReader` and hands each request to an :class:`IRequestHandler`
as an :class:`IServerExchange`, through which the handler reads the body as it arrives (with
backpressure), answers (canned bytes or a streamed response written the way Go's
``http.Server`` writes it), or takes the raw connection over for an upgrade.

Keep-alive, HTTP/1.0 (one request, then close), pipelining (one request at a time: later ones
wait in the reader while the transport is paused), ``Expect: 100-continue`` (sent when the
handler asks for the body), the 431 header limit, and the header/idle timeouts on an injected
clock are handled here so handlers never see them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from twisted.internet.interfaces import (
    IDelayedCall,
    IHalfCloseableProtocol,
    IProtocol,
    IPushProducer,
    IReactorTime,
    ITransport,
)
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Attribute, Interface, implementer

from piko.http import errors
from piko.http.head import RequestHead, header_tokens, header_values, http_date
from piko.http.parser import (
    DEFAULT_MAX_HEADER_BYTES,
    NEED_DATA,
    PAUSED,
    BodyChunk,
    HeadEvent,
    MessageEnd,
    ParseError,
    RequestReader,
)
from piko.http.rewrite import BodyFraming, body_allowed, go_response_head
from piko.interfaces import abort, can_half_close

# Go's http.Server reads at most this much of an unread request body to keep a connection alive.
MAX_DISCARD = 256 * 1024

#: Go's ``rstAvoidanceDelay``: after answering a request whose body it did not read whole,
#: net/http half-closes and waits this long before closing.  Closing a socket at once while
#: the body still arrives makes the kernel answer with a reset, which can destroy the answer
#: in the peer's receive buffer before it is read (a Go proxy in front then reports ``write:
#: broken pipe`` and sends its client a 502 instead of the answer).
LINGER = 0.5

#: Bytes of each request head that never count against a :class:`HeadBudget`, so ordinary
#: requests are never refused by it.
FREE_HEAD_BYTES = 16 * 1024

#: The default budget of one process (see :data:`PROCESS_HEAD_BUDGET`): room for 50 heads just
#: under the 1 MiB limit at once, each charged twice (:func:`head_cost`); 64 MiB refused 6 of
#: 50 concurrent 770 KB heads.  (Go has no such budget; its per-name accounting refuses heads
#: of more than about 4,900 distinct names, see ``docs/performance.md``.)
DEFAULT_HEAD_BUDGET = 128 << 20


class HeadBudget:
    """
    The memory a process may hold for large request heads.

    A connection's head is charged while it arrives (the bytes buffered) and, once parsed,
    until its exchange ends (:func:`head_cost`), less the first :data:`FREE_HEAD_BYTES`.
    A head that would take the total past ``limit`` is refused with a 503 and the connection
    closed: otherwise a few dozen clients sending heads just under ``max_header_bytes``
    could hold gigabytes (every pending connection may hold ``max_header_bytes``).

    :param limit: bytes.
    """

    log = Logger()

    def __init__(self, limit: int = DEFAULT_HEAD_BUDGET) -> None:
        self.limit = limit
        #: bytes charged now
        self.held = 0
        #: heads refused so far
        self.refused = 0
        self._warned = False

    def change(self, old: int, new: int) -> bool:
        """
        Move one connection's charge from ``old`` to ``new`` bytes.

        :returns: False, changing nothing, when growing to ``new`` would exceed the limit.
        """
        grow = new - old
        if grow > 0 and self.held + grow > self.limit:
            self.refused += 1
            if not self._warned:
                self._warned = True
                self.log.warn(
                    "large request heads at their memory limit: refusing more",
                    held=self.held,
                    limit=self.limit,
                )
            return False
        self.held += grow
        if self._warned and self.held < self.limit // 2:
            self._warned = False
        return True


#: The budget of every :class:`HTTPServerProtocol` not given its own: one per process, so the
#: proxy port and, in the agent, every yamux stream share it.
PROCESS_HEAD_BUDGET = HeadBudget()


def head_cost(event: HeadEvent) -> int:
    """
    Bytes a parsed head is charged while its exchange lasts: the head as received (which
    :class:`~piko.http.head.PackedHeaders` share), and as much again for the pairs of a
    small head or the rewritten head sent on.
    """
    return 2 * len(event.raw)


def service_unavailable() -> bytes:
    """The 503 for a head refused by the :class:`HeadBudget` (worded like Go's own errors)."""
    text = b"503 Service Unavailable"
    return (
        b"HTTP/1.1 "
        + text
        + b"\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n"
        + text
        + b": too many large request heads in flight"
    )


#: Body bytes a client must send in each ``read_timeout`` window (unless the body ends in it,
#: or this side paused reading in it) for the request to count as progressing.
MIN_READ_PROGRESS = 16 * 1024


class IRequestReceiver(Interface):
    """Receives one request's body, and hears if the client goes away."""

    def body_data(data: bytes) -> None:
        """Decoded body bytes arrived (called only while the body is not paused)."""

    def body_end() -> None:
        """The request body is complete."""

    def connection_lost(reason: Failure) -> None:
        """The client connection closed before the exchange finished."""


class IServerExchange(Interface):
    """One request on an :class:`HTTPServerProtocol`, and the means to answer it."""

    head: RequestHead = Attribute("The parsed request head.")
    raw_head: bytes = Attribute("The exact head bytes as received.")
    framing: BodyFraming = Attribute("How the request body is delimited.")
    upgrade: bool = Attribute("True when the request asks for a protocol upgrade.")
    transport: ITransport = Attribute("The client transport (for getPeer/getHost only).")

    def date() -> bytes:
        """The ``Date`` value to use now (from the injected clock)."""

    def set_receiver(receiver: IRequestReceiver) -> None:
        """Start delivering the body to ``receiver`` (sends ``100 Continue`` if asked for)."""

    def pause_body() -> None:
        """Stop delivering body bytes (the client transport stops being read)."""

    def resume_body() -> None:
        """Deliver body bytes again."""

    def respond(build: Callable[..., bytes]) -> None:
        """
        Answer with a whole canned response: ``build(date, close=..., http11=...)`` returns it
        (the functions of :mod:`piko.http.errors` fit).
        """

    def start_response(status: int, headers: tuple[tuple[bytes, bytes], ...]) -> None:
        """
        Write a response head the way Go's ``http.Server`` does for handler ``headers``: a
        ``Content-Length`` among them is kept, otherwise the body is chunked (HTTP/1.1) or runs
        to the close (HTTP/1.0).
        """

    def write(data: bytes) -> None:
        """Write response body bytes (framed as :meth:`start_response` decided)."""

    def finish() -> None:
        """End the response; the connection moves on to the next request or closes."""

    def register_producer(producer: IPushProducer) -> None:
        """Have ``producer`` paused while the client transport's write buffer is full."""

    def unregister_producer() -> None:
        """Undo :meth:`register_producer`."""

    def take_over(protocol: IProtocol, replay_head: bool = False) -> None:
        """
        Hand the raw connection to ``protocol``: it is connected to the client transport and
        fed every byte not yet consumed (the request head first if ``replay_head``, as a
        WebSocket server fed by these bytes needs).  HTTP processing stops for good.
        """

    def abort() -> None:
        """
        End the client connection after what was written so far (a response broke after
        its head was sent): the client gets the head and the body up to the break, then the
        close, and sees the body cut short (its length or last chunk is missing), as Go's
        server does (it flushes, then closes).
        """


class IRequestHandler(Interface):
    """Decides what to do with each request an :class:`HTTPServerProtocol` reads."""

    def request_received(exchange: IServerExchange) -> None:
        """A request head arrived; answer through ``exchange`` now or later."""


@implementer(IServerExchange)
class ServerExchange:
    """The :class:`IServerExchange` of :class:`HTTPServerProtocol`."""

    def __init__(self, protocol: HTTPServerProtocol, event: HeadEvent) -> None:
        assert isinstance(event.head, RequestHead)
        self._protocol = protocol
        self.head: RequestHead = origin_form(event.head)
        self.raw_head = event.raw
        self.framing = event.framing
        self.upgrade = event.upgrade
        self.keep_alive = event.keep_alive
        self.http11 = event.head.version == b"1.1"
        self.transport: ITransport = protocol._tx
        self.receiver: IRequestReceiver | None = None
        self.paused = False
        self.body_done = False
        self.response_started = False
        self.response_done = False
        self.continue_sent = False
        self.expect_continue = (
            self.http11
            and b"100-continue" in header_tokens(event.head.headers, b"expect")
            and not event.framing.empty
        )
        self._chunked = False
        self._close = False
        self._body_allowed = True
        self._producer = False
        self._pending: list[bytes] = []
        self.discarded = 0

    def date(self) -> bytes:
        return self._protocol.date()

    def set_receiver(self, receiver: IRequestReceiver) -> None:
        self.receiver = receiver
        if self.expect_continue and not self.continue_sent and not self.response_started:
            self.continue_sent = True
            self._protocol._tx.write(errors.CONTINUE_100)
        pending, self._pending = self._pending, []
        for data in pending:
            receiver.body_data(data)
        if self.body_done and not self.response_done:
            receiver.body_end()  # the body ended before anyone read it
        self._protocol._process()

    def pause_body(self) -> None:
        self.paused = True
        self._protocol._pause_reading()

    def resume_body(self) -> None:
        self.paused = False
        self._protocol._process()

    def _must_close(self) -> bool:
        if not self.keep_alive or self._protocol.read_eof:
            return True
        # Go closes when it answered an Expect: 100-continue request without reading the body.
        return self.expect_continue and not self.continue_sent and not self.body_done

    def respond(self, build: Callable[..., bytes]) -> None:
        if self.response_started:
            raise RuntimeError("response already started")
        self.response_started = True
        self._close = self._must_close()
        self._protocol._tx.write(build(self.date(), close=self._close, http11=self.http11))
        self._finished()

    def start_response(self, status: int, headers: tuple[tuple[bytes, bytes], ...]) -> None:
        if self.response_started:
            raise RuntimeError("response already started")
        self.response_started = True
        self._close = self._must_close()
        has_length = any(n.lower() == b"content-length" for n, _ in headers)
        self._body_allowed = body_allowed(status, self.head.method)
        if self._body_allowed and not has_length:
            if self.http11:
                self._chunked = True
            else:
                self._close = True
        head = go_response_head(
            status,
            headers,
            self.date(),
            http11=self.http11,
            close=self._close,
            chunked=self._chunked,
        )
        self._protocol._tx.write(head)

    def write(self, data: bytes) -> None:
        if not data or not self._body_allowed:
            return
        if self._chunked:
            self._protocol._tx.writeSequence([b"%x\r\n" % len(data), data, b"\r\n"])
        else:
            self._protocol._tx.write(data)

    def finish(self) -> None:
        if self.response_done:
            return
        if self._chunked:
            self._protocol._tx.write(b"0\r\n\r\n")
        self._finished()

    def _finished(self) -> None:
        self.response_done = True
        self.unregister_producer()
        self._protocol._response_finished(self, self._close)

    def register_producer(self, producer: IPushProducer) -> None:
        self._producer = True
        protocol = self._protocol
        if protocol.write_timeout is not None:
            producer = _WatchedProducer(producer, protocol)
        protocol._tx.registerProducer(producer, True)

    def unregister_producer(self) -> None:
        if self._producer:
            self._producer = False
            self._protocol._tx.unregisterProducer()

    def take_over(self, protocol: IProtocol, replay_head: bool = False) -> None:
        self.response_started = self.response_done = True
        self._protocol._take_over(protocol, self.raw_head if replay_head else b"")

    def abort(self) -> None:
        self.response_done = True
        self._protocol._cut_short()

    def _deliver(self, data: bytes) -> None:
        if self.receiver is not None:
            self.receiver.body_data(data)
        else:
            self._pending.append(data)


@implementer(IPushProducer)
class _WatchedProducer:
    """
    Passes the client transport's flow control on to a response's producer, telling the
    protocol when the transport's write buffer is full (paused) and when it drained (resumed):
    the write timeout runs while it is paused.
    """

    def __init__(self, producer: IPushProducer, protocol: HTTPServerProtocol) -> None:
        self._producer = producer
        self._protocol = protocol

    def pauseProducing(self) -> None:
        self._protocol._write_stalled(True)
        self._producer.pauseProducing()

    def resumeProducing(self) -> None:
        self._protocol._write_stalled(False)
        self._producer.resumeProducing()

    def stopProducing(self) -> None:
        self._protocol._write_stalled(False)
        self._producer.stopProducing()


def origin_form(head: RequestHead) -> RequestHead:
    """
    An absolute-form request (``GET http://host/path``) as Go's server reads it: the URL's
    host replaces any ``Host`` header and the target becomes ``path?query``.

    Routing and the upstream then see the same host; otherwise this proxy would route by the
    ``Host`` header while an upstream (Go's server does) obeys the URL's host.
    """
    target = head.target
    if target[:1] == b"/" or b"://" not in target:
        return head
    parts = urlsplit(target)
    host = parts.netloc.rpartition(b"@")[2]
    if parts.scheme.lower() not in (b"http", b"https") or not host:
        return head
    path = (parts.path or b"/") + (b"?" + parts.query if parts.query else b"")
    headers = [(b"Host", host), *((n, v) for n, v in head.headers if n.lower() != b"host")]
    return RequestHead(head.method, path, head.version, headers)


def _host_error(event: HeadEvent) -> str | None:
    """
    Go's ``readRequest`` check that a request carries at most one ``Host``.

    Two ``Host`` headers would let this proxy route by one and the upstream read the other,
    so they are refused before any routing, with Go's reason.  (Go also refuses an HTTP/1.1
    request with no ``Host``; that one is harmless here, since routing then needs
    ``x-piko-endpoint``, and is still accepted.)
    """
    if len(header_values(event.head.headers, b"host")) > 1:
        return "too many Host headers"
    return None


@implementer(IHalfCloseableProtocol)
class HTTPServerProtocol(Protocol):
    """
    Serves HTTP/1.1 on one connection (a TCP connection or a yamux stream).

    :param handler: receives each request.
    :param clock: for the timeouts and the default ``Date``.
    :param date: returns the ``Date`` value (default: ``clock.seconds()`` formatted as Go does).
    :param max_header_bytes: a longer head gets Go's 431 and the connection closes.
    :param header_timeout: seconds to read a whole head once it started (Go's
        ``ReadHeaderTimeout``; also applies to the first request); None for no limit.
    :param idle_timeout: seconds to wait for the next request on a kept-alive connection.
    :param read_timeout: Go's ``ReadTimeout`` for request bodies, as a no-progress timeout:
        the connection is dropped when, for this many seconds, a request body made no progress
        (fewer than :data:`MIN_READ_PROGRESS` bytes arrived and the body did not end) while
        this side was waiting for it (time with reading paused by backpressure never counts).
        Go's deadline is absolute from the start of the request and would cut every healthy
        upload longer than the timeout.  None for no limit.
    :param write_timeout: Go's ``WriteTimeout`` as a no-progress timeout: the connection is
        dropped when a response's producer stays paused this long, that is when the client
        did not take the bytes already queued for it (the transport's write buffer, about
        64 KiB, did not drain).  Go's deadline is absolute from the end of the request head.
        None for no limit.
    :param head_budget: charged for large heads; :data:`PROCESS_HEAD_BUDGET` by default.
    """

    log = Logger()

    def __init__(
        self,
        handler: IRequestHandler,
        clock: IReactorTime,
        *,
        date: Callable[[], bytes] | None = None,
        max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
        header_timeout: float | None = 10.0,
        idle_timeout: float | None = 300.0,
        read_timeout: float | None = None,
        write_timeout: float | None = None,
        head_budget: HeadBudget | None = None,
    ) -> None:
        self.handler = handler
        self.head_budget = PROCESS_HEAD_BUDGET if head_budget is None else head_budget
        self._head_charge = 0
        self.clock = clock
        self._date = date
        # Go allows MaxHeaderBytes plus 4096 bytes of slack.
        self.reader = RequestReader(max_header_bytes + 4096)
        self.header_timeout = header_timeout
        self.idle_timeout = idle_timeout
        self.read_timeout = read_timeout or None
        self.write_timeout = write_timeout or None
        self.current: ServerExchange | None = None
        self.read_eof = False
        self._timer: IDelayedCall | None = None
        self._timer_kind = ""
        self._processing = False
        self._process_again = False
        self._reading_paused = False
        self._closed = False
        self._taken: IProtocol | None = None
        #: bytes received so far (the read timeout's measure of progress)
        self._received = 0
        self._read_timer: IDelayedCall | None = None
        self._read_mark = 0
        self._read_paused_in_window = False
        self._write_timer: IDelayedCall | None = None
        self._write_paused_since: float | None = None

    @property
    def _tx(self) -> Any:
        # The transport, typed loosely: besides ITransport we use IProducer/IConsumer methods.
        return self.transport

    def date(self) -> bytes:
        """The ``Date`` header value for now."""
        if self._date is not None:
            return self._date()
        return http_date(self.clock.seconds())

    # -- timers

    def _arm(self, kind: str, seconds: float | None) -> None:
        self._cancel_timer()
        if seconds is not None:
            self._timer_kind = kind
            self._timer = self.clock.callLater(seconds, self._timed_out)

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._timer_kind = ""

    def _timed_out(self) -> None:
        self._timer = None
        self.log.debug("HTTP connection timed out", timeout=self._timer_kind)
        reader = self.reader
        # Go answers a request line that never ended with a 400 at the timeout (it closes
        # without answering once the line is complete).
        if (
            self._timer_kind == "header"
            and reader.head_in_progress
            and not reader.request_line_complete
        ):
            self._tx.write(errors.bad_request())
        self._closed = True
        self._tx.loseConnection()

    def _arm_read(self) -> None:
        """Start a read-timeout window for the request body now being read."""
        self._read_mark = self._received
        self._read_paused_in_window = self._reading_paused
        if self._read_timer is None and self.read_timeout is not None:
            self._read_timer = self.clock.callLater(self.read_timeout, self._read_window_over)

    def _cancel_read(self) -> None:
        timer, self._read_timer = self._read_timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _read_window_over(self) -> None:
        self._read_timer = None
        current = self.current
        if self._closed or current is None or current.body_done:
            return
        moved = self._received - self._read_mark
        # Not the client's stall: we held its bytes back, or nobody asked for the body yet
        # (an ``Expect: 100-continue`` client rightly waits for that).
        ours = self._read_paused_in_window or self._reading_paused or current.receiver is None
        if ours or moved >= MIN_READ_PROGRESS:
            self._arm_read()
            return
        self.log.info(
            "request body made no progress: dropping connection (read_timeout)",
            seconds=self.read_timeout,
            moved=moved,
        )
        self._abort()

    def _write_stalled(self, stalled: bool) -> None:
        """The client transport paused (``True``) or resumed a response's producer."""
        if not stalled:
            self._write_paused_since = None
            return
        if self._write_paused_since is None:
            self._write_paused_since = self.clock.seconds()
        if self._write_timer is None and self.write_timeout is not None:
            self._write_timer = self.clock.callLater(self.write_timeout, self._check_write)

    def _check_write(self) -> None:
        self._write_timer = None
        since = self._write_paused_since
        if self._closed or since is None or self.write_timeout is None:
            return
        left = since + self.write_timeout - self.clock.seconds()
        if left > 0:
            self._write_timer = self.clock.callLater(left, self._check_write)
            return
        self.log.info(
            "client took no response bytes: dropping connection (write_timeout)",
            seconds=self.write_timeout,
        )
        self._abort()

    def _cancel_progress_timers(self) -> None:
        self._cancel_read()
        self._write_paused_since = None
        timer, self._write_timer = self._write_timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _charge(self, nbytes: int) -> bool:
        """Charge this connection's head at ``nbytes``; False if the budget refuses."""
        want = nbytes - FREE_HEAD_BYTES
        if want <= 0:
            if self._head_charge:
                self.head_budget.change(self._head_charge, 0)
                self._head_charge = 0
            return True
        if not self.head_budget.change(self._head_charge, want):
            return False
        self._head_charge = want
        return True

    def _refuse_head(self) -> None:
        self._tx.write(service_unavailable())
        self._closed = True
        self._cancel_timer()
        self._charge(0)
        self._tx.loseConnection()

    def head_received(self) -> None:
        """
        A whole request head arrived and is about to be handled (a hook for subclasses that
        count connections still in their first head).
        """

    # -- IProtocol

    def connectionMade(self) -> None:
        self._arm("header", self.header_timeout)

    def dataReceived(self, data: bytes) -> None:
        if self._taken is not None:
            self._taken.dataReceived(data)
            return
        if self._closed:
            return
        self._received += len(data)
        self.reader.feed(data)
        self._process()

    def readConnectionLost(self) -> None:
        if self._taken is not None:
            if IHalfCloseableProtocol.providedBy(self._taken):
                self._taken.readConnectionLost()
            else:
                self._tx.loseConnection()
            return
        self.read_eof = True
        if self._timer_kind == "linger":
            self._cancel_timer()
            self._tx.loseConnection()
            return
        self.reader.feed_eof()
        if self.current is None:
            self._closed = True
            self._tx.loseConnection()
        else:
            self._process()

    def writeConnectionLost(self) -> None:
        if self._taken is not None and IHalfCloseableProtocol.providedBy(self._taken):
            self._taken.writeConnectionLost()

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:  # noqa: B008
        self._closed = True
        self._cancel_timer()
        self._cancel_progress_timers()
        self._charge(0)
        if self._taken is not None:
            self._taken.connectionLost(reason)
            return
        current, self.current = self.current, None
        unfinished = current is not None and not (current.response_done and current.body_done)
        if unfinished and current is not None and current.receiver is not None:
            current.receiver.connection_lost(reason)

    # -- request processing

    def _pause_reading(self) -> None:
        if not self._reading_paused and not self._closed:
            self._reading_paused = True
            self._read_paused_in_window = True
            self._tx.pauseProducing()

    def _resume_reading(self) -> None:
        if self._reading_paused and not self._closed:
            self._reading_paused = False
            self._tx.resumeProducing()

    def _process(self) -> None:
        # Re-entered when the loop's own calls deliver bytes at once: resuming a yamux
        # stream hands over what it held from inside ``resumeProducing`` (a TCP transport
        # would wait for the next reactor turn).  Those bytes are in the reader by then; the
        # loop runs again for them rather than leave them there until more arrive, which
        # for a body's last bytes is never.
        if self._processing:
            self._process_again = True
            return
        self._processing = True
        try:
            self._process_again = True
            while self._process_again:
                self._process_again = False
                self._process_loop()
        finally:
            self._processing = False

    def _process_loop(self) -> None:
        while not self._closed and self._taken is None:
            current = self.current
            if current is not None and not current.response_done and current.paused:
                self._pause_reading()
                return
            waiting = current is not None and current.receiver is None and not current.response_done
            if waiting and self.reader.buffered:
                # Nobody reads the body yet: hold what we have, read no more.
                self._pause_reading()
                return
            try:
                ev = self.reader.next_event()
            except ParseError as e:
                self._fail(e)
                return
            if ev is NEED_DATA:
                if self.read_eof:
                    self._closed = True
                    self._tx.loseConnection()
                    return
                if (
                    current is not None
                    and self._read_timer is None
                    and self.read_timeout is not None
                    and not current.body_done
                ):
                    # Armed only once a body is waited for: one that came with its head
                    # costs no timer.
                    self._arm_read()
                if self.current is None and self.reader.head_in_progress:
                    if not self._charge(self.reader.buffered):
                        self._refuse_head()
                        return
                    if self._timer_kind != "header":
                        self._arm("header", self.header_timeout)
                self._resume_reading()
                return
            if ev is PAUSED:
                # A request is being answered; later pipelined bytes wait, bounded by one read.
                if self.reader.buffered:
                    self._pause_reading()
                else:
                    self._resume_reading()
                return
            if isinstance(ev, HeadEvent):
                self._cancel_timer()
                refused = _host_error(ev)
                if refused is not None:
                    self._fail(ParseError(refused, reason=refused))
                    return
                if not self._charge(head_cost(ev)):
                    self._refuse_head()
                    return
                self.head_received()
                exchange = self.current = ServerExchange(self, ev)
                self.handler.request_received(exchange)
            elif isinstance(ev, BodyChunk):
                assert current is not None
                if current.response_done:
                    current.discarded += len(ev.data)
                    if current.discarded > MAX_DISCARD:
                        self._close_unread()
                        return
                else:
                    current._deliver(ev.data)
            elif isinstance(ev, MessageEnd):
                assert current is not None
                current.body_done = True
                self._cancel_read()
                if current.receiver is not None and not current.response_done:
                    current.receiver.body_end()
                if current.response_done:
                    self._next_request()

    def _response_finished(self, exchange: ServerExchange, close: bool) -> None:
        if exchange is not self.current:
            return
        if close:
            if exchange.body_done or self.read_eof:
                self._closed = True
                self._tx.loseConnection()
            else:
                self._close_unread()
            return
        if exchange.body_done:
            self._next_request()
        self._process()

    def _close_unread(self) -> None:
        """
        Close after an answer while the request body still arrives, as Go does: half-close
        (the answer, then a FIN), keep reading and discarding, and close for good when the
        peer closes or after :data:`LINGER`; so the close does not reset the connection
        under an answer the peer has not read yet.  A transport that cannot half-close
        closes at once.
        """
        self._cancel_timer()
        self._cancel_progress_timers()
        self._charge(0)
        if not can_half_close(self._tx):
            self._closed = True
            self._tx.loseConnection()
            return
        self._resume_reading()
        self._closed = True
        self._tx.loseWriteConnection()
        self._timer_kind = "linger"
        self._timer = self.clock.callLater(LINGER, self._tx.loseConnection)

    def _next_request(self) -> None:
        self._cancel_progress_timers()
        self._charge(0)
        self.current = None
        self.reader.start_next()
        self._arm("idle", self.idle_timeout)

    def _fail(self, error: ParseError) -> None:
        current = self.current
        if current is not None and current.response_started:
            # A response is under way (a bad chunk arrived late): no answer can follow it.
            self._abort()
            return
        if error.status == 431:
            self._tx.write(errors.request_header_too_large())
        else:
            self._tx.write(errors.bad_request(error.reason))
        self._closed = True
        self._cancel_timer()
        self._cancel_progress_timers()
        self._charge(0)
        self._tx.loseConnection()

    def _take_over(self, protocol: IProtocol, head: bytes) -> None:
        # Go's hijacked connections (gorilla clears the deadlines) have no timeouts.
        self._cancel_timer()
        self._cancel_progress_timers()
        self._charge(0)
        self._taken = protocol
        self.current = None
        buffered = self.reader.take_buffered()
        protocol.makeConnection(self._tx)
        self._resume_reading()
        if head or buffered:
            protocol.dataReceived(head + buffered)
        if self.read_eof:
            self.readConnectionLost()

    def _cut_short(self) -> None:
        """
        Close after the bytes already written: a broken response keeps what it sent (an
        abort would throw away a head still in the write buffer, and the client would see a
        reset instead of the status it was about to get).
        """
        self._end()
        self._tx.loseConnection()

    def _abort(self) -> None:
        self._end()
        abort(self._tx)

    def _end(self) -> None:
        """No more processing on this connection: timers off, head memory released."""
        self._closed = True
        self._cancel_timer()
        self._cancel_progress_timers()
        self._charge(0)

# -*- test-case-name: piko.test.ws.test_server -*-
"""
Server side: take over a TCP connection whose HTTP request head asks for a
WebSocket upgrade, and run a byte-stream protocol over it.

Our HTTP front end parses request heads itself and routes them.  For an
upgrade on a WebSocket route it hands the raw connection to
:meth:`WebSocketAcceptor.accept` together with the bytes it has read so far
(the request head plus anything after it).  Autobahn then validates the
handshake; the caller's ``on_handshake`` decides whether to go ahead, which
lets the raw TCP route open its upstream stream *before* upgrading, as Go Piko
does; and only then is the ``101`` written, byte for byte as Go writes it.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
from collections.abc import Callable, Mapping
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

from attrs import field, frozen
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.protocol import WebSocketProtocol
from autobahn.websocket.types import ConnectionDeny, ConnectionRequest
from twisted.internet.defer import CancelledError, Deferred, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IProtocol, IReactorTime, ITransport
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure

from piko.ws._options import WebSocketOptions
from piko.ws._stream import ByteStreamWebSocketMixin

_WS_MAGIC = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def accept_value(key: str) -> str:
    """Return the ``Sec-WebSocket-Accept`` value for a ``Sec-WebSocket-Key``."""
    digest = hashlib.sha1(key.encode("ascii") + _WS_MAGIC).digest()
    return base64.b64encode(digest).decode("ascii")


def switching_protocols_response(key: str) -> bytes:
    """
    Return the ``101`` response exactly as gorilla/websocket writes it for
    Go Piko: no ``Server`` or ``Date`` header, lower-case ``websocket``.
    """
    return (
        b"HTTP/1.1 101 Switching Protocols\r\n"
        b"Upgrade: websocket\r\n"
        b"Connection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept_value(key).encode("ascii") + b"\r\n\r\n"
    )


def handshake_error_response(status: int, now: float) -> bytes:
    """
    Return gorilla's answer to a bad handshake: the status text as a
    ``text/plain`` body plus ``Sec-Websocket-Version: 13``, with Go's header
    order.

    :param status: the HTTP status code.
    :param now: the current POSIX time, for the ``Date`` header.
    """
    phrase = HTTPStatus(status).phrase
    body = (phrase + "\n").encode("ascii")
    head = (
        f"HTTP/1.1 {status} {phrase}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "Sec-Websocket-Version: 13\r\n"
        "X-Content-Type-Options: nosniff\r\n"
        f"Date: {email.utils.formatdate(now, usegmt=True)}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("ascii") + body


@frozen
class HandshakeRequest:
    """
    A validated WebSocket opening handshake, as given to ``on_handshake``.

    :ivar uri: the request target, as sent (path and query).
    :ivar path: the path part of :attr:`uri`.
    :ivar headers: request headers, names lower-cased (repeated headers joined
        with ``", "``).
    """

    uri: str
    path: str
    headers: Mapping[str, str] = field(repr=False)


class HandshakeRejected(Exception):
    """
    Raised (or used to fail the Deferred) by ``on_handshake`` to refuse the
    upgrade: ``response`` (a complete HTTP response, e.g. Go's 502 JSON) is
    written and the connection closed after it is flushed.
    """

    def __init__(self, response: bytes) -> None:
        super().__init__(response)
        self.response = response


#: What ``on_handshake`` returns: the inner protocol, or a Deferred firing with it.
OnHandshake = Callable[[HandshakeRequest], "IProtocol | Deferred[IProtocol]"]


class _ServerProtocol(ByteStreamWebSocketMixin, WebSocketServerProtocol):  # type: ignore[misc]
    """autobahn's server protocol, as a byte stream, with Go's handshake bytes."""

    def __init__(
        self, reactor: IReactorTime, options: WebSocketOptions, on_handshake: OnHandshake
    ) -> None:
        super().__init__()
        self._reactor = reactor
        self._options = options
        self._on_handshake = on_handshake
        self._decision: Deferred[Any] | None = None
        self._decided_inner: IProtocol | None = None
        self._rejection: bytes | None = None
        self._open_timer: IDelayedCall | None = None

    def connectionMade(self) -> None:
        super().connectionMade()
        if self._options.open_handshake_timeout > 0:
            self._open_timer = self._reactor.callLater(
                self._options.open_handshake_timeout, self._open_timed_out
            )

    def _open_timed_out(self) -> None:
        self._open_timer = None
        if self.state == WebSocketProtocol.STATE_CONNECTING:
            self.wasOpenHandshakeTimeout = True
            self.wasNotCleanReason = "WebSocket opening handshake timeout"
            self.dropConnection(abort=True)
            self._cancel_decision()

    def processHandshake(self) -> None:
        """Ignore bytes that arrive while the caller is still deciding."""
        if self._decision is None:
            super().processHandshake()

    def onConnect(self, request: ConnectionRequest) -> Deferred[None]:  # type: ignore[override]
        """
        Apply gorilla's same-origin rule, then ask the caller for the inner
        protocol; nothing is written until it answers.
        """
        origin = request.headers.get("origin")
        if origin is not None and not _same_origin(origin, request.headers.get("host", "")):
            raise ConnectionDeny(403, "origin not allowed")
        handshake = HandshakeRequest(
            uri=self.http_request_uri,
            path=request.path,
            headers=dict(request.headers),
        )
        decision: Deferred[Any] = maybeDeferred(self._on_handshake, handshake)
        self._decision = decision

        def accepted(inner: IProtocol) -> None:
            self._decided_inner = inner

        def refused(failure: Failure) -> Failure:
            if failure.check(HandshakeRejected):
                self._rejection = failure.value.response
                raise ConnectionDeny(400, "rejected by the application")
            if failure.check(CancelledError):
                raise ConnectionDeny(400, "connection lost during the handshake")
            return failure

        decision.addCallbacks(accepted, refused)
        return decision

    def succeedHandshake(self, res: object) -> None:
        """
        Write Go's exact ``101`` and open the WebSocket (no extensions).

        Re-implements autobahn's method, minus its headers and extensions;
        ``piko.test.test_upstream_sources`` fails when autobahn's changes, so
        that a check or state it adds is carried over here.
        """
        if self.state != WebSocketProtocol.STATE_CONNECTING:
            return
        self._cancel_open_timer()
        self.websocket_protocol_in_use = None
        self.websocket_extensions_in_use = []
        response = switching_protocols_response(self._wskey)
        self.http_response_data = response.decode("ascii")
        self.sendData(response)
        self.state = WebSocketProtocol.STATE_OPEN
        self.inside_message = False
        self.current_frame = None
        self._onOpen()
        self.is_open.callback(None)
        if self.data:
            self.consumeData()

    def failHandshake(self, reason: str, code: int = 400, responseHeaders: object = None) -> None:
        """Answer a bad or refused handshake as gorilla does, then close."""
        self.wasNotCleanReason = reason
        self._cancel_open_timer()
        if self.state == WebSocketProtocol.STATE_CLOSED:
            return
        if self._rejection is not None:
            response = self._rejection
        else:
            status = code if code in (403, 405, 500) else 400
            response = handshake_error_response(status, self._reactor.seconds())
        self._piko_log.info("refused WebSocket handshake", reason=reason)
        self.sendData(response)
        self._drop_after_flush()

    def _build_inner(self) -> IProtocol | None:
        inner = self._decided_inner
        assert inner is not None, "opened without an accepted handshake"
        return inner

    def _lost_before_open(self, reason: Failure) -> None:
        self._cancel_open_timer()
        self._cancel_decision()

    def _cancel_decision(self) -> None:
        decision = self._decision
        if decision is not None and not decision.called:
            decision.cancel()

    def _cancel_open_timer(self) -> None:
        if self._open_timer is not None:
            if self._open_timer.active():
                self._open_timer.cancel()
            self._open_timer = None


def _same_origin(origin: str, host: str) -> bool:
    """gorilla's ``checkSameOrigin``: the Origin's host must equal ``Host``."""
    try:
        origin_host = urlsplit(origin).netloc
    except ValueError:
        return False
    return origin_host.lower() == host.strip().lower()


class WebSocketAcceptor:
    """
    Runs the WebSocket server handshake on connections handed over by the
    HTTP front end.  Create one per listener and reuse it.

    :param reactor: supplies the time for timeouts and ``Date`` headers.
    :param options: limits and timeouts for every accepted connection.
    """

    def __init__(self, reactor: IReactorTime, options: WebSocketOptions | None = None) -> None:
        self._reactor = reactor
        self._options = options if options is not None else WebSocketOptions()
        factory = WebSocketServerFactory(reactor=reactor, server=None)
        factory.setProtocolOptions(
            versions=[13],
            webStatus=False,
            utf8validateIncoming=True,
            requireMaskedClientFrames=True,
            maskServerFrames=False,
            # The client's frames are unmasked by ByteStreamWebSocketMixin.onFrameData,
            # cheaper than the native masker autobahn would build for every frame.  (The
            # option only touches receiving here: a server's frames are never masked.)
            applyMask=False,
            maxFramePayloadSize=self._options.max_frame_size,
            maxMessagePayloadSize=self._options.max_message_size,
            autoFragmentSize=0,
            failByDrop=True,
            echoCloseCodeReason=False,
            # Our own timers run on the injected reactor instead.
            openHandshakeTimeout=0,
            closeHandshakeTimeout=0,
            tcpNoDelay=True,
            autoPingInterval=0,
            autoPingTimeout=0,
            perMessageCompressionAccept=lambda offers: None,
        )
        self._factory = factory

    def accept(self, transport: ITransport, received: bytes, on_handshake: OnHandshake) -> Protocol:
        """
        Take over ``transport`` for a WebSocket upgrade.

        :param transport: the connection, as the HTTP front end got it.  The
            caller must have stopped its own timeouts and unregistered any
            producer it registered.
        :param received: every byte read from the connection so far that the
            front end has not consumed: the request head and anything after it.
        :param on_handshake: called with the :class:`HandshakeRequest` once the
            head is a valid WebSocket handshake, before anything is written.
            Return the inner protocol (or a Deferred firing with it) to write
            the ``101`` and connect it; raise or fail with
            :class:`HandshakeRejected` to send that response instead.  If the
            connection is lost or times out first, the Deferred is cancelled.
        :return: the protocol now driving ``transport``.  The front end must
            pass it every later ``dataReceived`` and the ``connectionLost``
            (or set ``transport.protocol`` to it).
        """
        protocol = _ServerProtocol(self._reactor, self._options, on_handshake)
        protocol.factory = self._factory
        protocol.makeConnection(transport)
        if received:
            protocol.dataReceived(received)
        return protocol

# -*- test-case-name: piko.test.ws.test_stream -*-
"""
Present an autobahn WebSocket connection as a plain byte stream.

Go Piko (``pkg/websocket/conn.go``) treats a WebSocket as a ``net.Conn``:
every ``Write`` is one binary message, incoming binary messages are one
continuous byte stream whose boundaries mean nothing, a text message is fatal,
and closing just drops TCP.  This module gives a Twisted ``IProtocol`` (the
yamux session, or a splice for the raw TCP route) the same view: an
``ITransport`` that is also a push producer and a consumer, so backpressure
passes straight through to the TCP connection underneath.

The shared behaviour lives in :class:`ByteStreamWebSocketMixin`, mixed into
autobahn's Twisted server and client protocols by :mod:`piko.ws.server` and
:mod:`piko.ws.client`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from autobahn.websocket.protocol import WebSocketProtocol
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IAddress,
    IConsumer,
    IDelayedCall,
    IProducer,
    IProtocol,
    IPushProducer,
    IReactorTime,
    ITransport,
)
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from piko.ws._frames import binary_frame_header, mask_payload, new_mask_key
from piko.ws._options import WebSocketOptions

#: Payloads at least this long are handed to the TCP transport as a separate
#: buffer (``writeSequence``) instead of being concatenated with the header,
#: which saves one copy of a large payload.
_SEPARATE_PAYLOAD_THRESHOLD = 1024

CLOSE_NORMAL = WebSocketProtocol.CLOSE_STATUS_CODE_NORMAL
CLOSE_UNSUPPORTED_DATA = WebSocketProtocol.CLOSE_STATUS_CODE_UNSUPPORTED_DATA


class WebSocketProtocolError(Exception):
    """
    The peer broke the WebSocket protocol as Piko uses it (a text message, an
    oversized or malformed frame).  Handed to the inner protocol's
    ``connectionLost``.
    """


@implementer(ITransport, IPushProducer, IConsumer)
class WebSocketStreamTransport:
    """
    The transport an inner protocol sees: a byte stream carried in binary
    WebSocket messages.

    ``write`` sends exactly one message, so a caller that writes a whole yamux
    frame at once pays the per-message cost once.  Producer calls go to the
    TCP transport, so pausing this transport stops reading the socket and a
    full socket pauses the producer registered here.
    """

    def __init__(self, websocket: ByteStreamWebSocketMixin) -> None:
        self._websocket = websocket

    @property
    def disconnecting(self) -> bool:
        """Whether ``loseConnection`` (or a protocol failure) is under way."""
        return self._websocket._stream_closing

    @property
    def connected(self) -> bool:
        """Whether the stream is still open for writing."""
        return not self._websocket._stream_closing

    def write(self, data: bytes) -> None:
        """Send ``data`` as one binary message; empty data sends nothing."""
        self._websocket._send_binary(data)

    def writeSequence(self, data: Iterable[bytes]) -> None:
        """Send the concatenation of ``data`` as one binary message."""
        self._websocket._send_binary(b"".join(data))

    def loseConnection(self) -> None:
        """Send a Close frame (1000), then drop TCP once our bytes are flushed."""
        self._websocket._close_stream()

    def abortConnection(self) -> None:
        """Drop the TCP connection at once, discarding unsent bytes."""
        self._websocket._abort_stream()

    def getPeer(self) -> IAddress:
        """Return the address of the TCP peer."""
        peer: IAddress = self._websocket.transport.getPeer()
        return peer

    def getHost(self) -> IAddress:
        """Return the local address of the TCP connection."""
        host: IAddress = self._websocket.transport.getHost()
        return host

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        """Register ``producer`` with the TCP transport, which pauses it when full."""
        self._websocket.transport.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        """Unregister the producer from the TCP transport."""
        self._websocket.transport.unregisterProducer()

    def pauseProducing(self) -> None:
        """Stop reading the TCP socket (bytes already read may still arrive)."""
        self._websocket.transport.pauseProducing()

    def resumeProducing(self) -> None:
        """Resume reading the TCP socket."""
        self._websocket.transport.resumeProducing()

    def stopProducing(self) -> None:
        """Our consumer is gone for good: close the stream."""
        self._websocket._close_stream()


class ByteStreamWebSocketMixin(WebSocketProtocol):
    """
    The byte-stream behaviour shared by the server and client protocols.

    Mixed in before autobahn's Twisted ``WebSocketServerProtocol`` or
    ``WebSocketClientProtocol``.  Subclasses provide :meth:`_build_inner`.
    """

    #: Not ``log``: autobahn's own txaio logger lives there and drops debug
    #: events cheaply; a Twisted ``Logger`` in its place would format every one.
    _piko_log = Logger()

    # Provided by twisted.internet.protocol.Protocol in the concrete classes.
    transport: Any
    factory: Any

    _reactor: IReactorTime
    _options: WebSocketOptions
    _inner: IProtocol | None = None
    _stream: WebSocketStreamTransport | None = None
    _stream_closing: bool = False
    _error: Failure | None = None
    _close_timer: IDelayedCall | None = None
    _tcp_lost: bool = False
    _is_client: bool = False

    def _build_inner(self) -> IProtocol | None:
        """Return the inner protocol once the handshake has succeeded, or ``None`` to drop."""
        raise NotImplementedError

    def _inner_connected(self, inner: IProtocol) -> None:
        """Hook called right after the inner protocol is connected."""

    def _lost_before_open(self, reason: Failure) -> None:
        """Hook called when TCP is lost before the WebSocket opened."""

    # -- autobahn callbacks -------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        """Feed autobahn directly, skipping its per-read debug-log arguments."""
        self._dataReceived(data)

    def onOpen(self) -> None:
        """Connect the inner protocol to a stream transport over this WebSocket."""
        inner = self._build_inner()
        if inner is None:
            self._abort_stream()
            return
        self._inner = inner
        self._stream = WebSocketStreamTransport(self)
        inner.makeConnection(self._stream)
        self._inner_connected(inner)

    def onMessageBegin(self, isBinary: bool) -> None:
        """Reject text messages: Go Piko treats them as a fatal error."""
        self.message_data_total_length = 0
        if not isBinary:
            self._fail(CLOSE_UNSUPPORTED_DATA, "text message received on a byte-stream WebSocket")

    def onMessageFrameData(self, payload: bytes) -> None:
        """
        Deliver frame data to the inner protocol as it arrives.

        Message boundaries carry no meaning, so nothing is reassembled: each
        TCP read yields at most one ``dataReceived`` per frame it touches.
        """
        if payload and not self._stream_closing and not self.failedByMe:
            inner = self._inner
            if inner is not None:
                inner.dataReceived(payload)

    def onMessageFrameEnd(self) -> None:
        """Nothing to do: frame data was delivered as it arrived."""

    def onMessageEnd(self) -> None:
        """Nothing to do: message boundaries carry no meaning."""

    def onCloseFrame(self, code: int, reasonRaw: bytes) -> bool | None:
        """
        Let autobahn answer the Close frame, then drop TCP ourselves.

        Autobahn's client waits for the server to drop TCP; we do not wait,
        as Go simply closes the socket.
        """
        result = WebSocketProtocol.onCloseFrame(self, code, reasonRaw)
        self._drop_after_flush()
        return result

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:  # noqa: B008
        """Tell the inner protocol (if any) that the stream ended, and why."""
        self._tcp_lost = True
        self._cancel_close_timer()
        super().connectionLost(reason)  # type: ignore[misc]
        self._stream_closing = True
        inner = self._inner
        if inner is None:
            self._lost_before_open(reason)
            return
        inner.connectionLost(self._inner_reason(reason))

    def unregisterProducer(self) -> None:
        """
        Unregister the inner protocol's producer from TCP, if there is one.

        Autobahn calls this when it drops the connection; doing so lets a
        pending ``loseConnection`` finish instead of resuming a paused producer.
        """
        if getattr(self.transport, "producer", True) is not None:
            self.transport.unregisterProducer()

    # -- what the stream transport calls ------------------------------------

    def _send_binary(self, data: bytes) -> None:
        """Send ``data`` as one unfragmented binary message (masked if client)."""
        if not data or self.state != WebSocketProtocol.STATE_OPEN or self._stream_closing:
            return
        if self._is_client:
            key = new_mask_key()
            header = binary_frame_header(len(data), key)
            data = mask_payload(key, data)
        else:
            header = binary_frame_header(len(data))
        if len(data) < _SEPARATE_PAYLOAD_THRESHOLD:
            self.transport.write(header + data)
        else:
            self.transport.writeSequence((header, data))

    def _close_stream(self) -> None:
        """Send a normal Close frame and drop TCP once flushed."""
        if self._stream_closing:
            return
        self._stream_closing = True
        if self.state == WebSocketProtocol.STATE_OPEN:
            self.sendCloseFrame(code=CLOSE_NORMAL, isReply=False)
        self._drop_after_flush()

    def _abort_stream(self) -> None:
        """Abort the TCP connection."""
        self._stream_closing = True
        self.wasClean = True
        self.dropConnection(abort=True)

    # -- internals ----------------------------------------------------------

    def _fail(self, code: int, reason: str) -> None:
        """
        Fail the connection with a Close frame carrying ``code``; the inner
        protocol later gets a :class:`WebSocketProtocolError`.
        """
        if self._error is None:
            self._error = Failure(WebSocketProtocolError(reason))
        self._piko_log.warn(
            "failing WebSocket connection ({code}): {reason}", code=code, reason=reason
        )
        self.failedByMe = True
        self.wasClean = False
        self.wasNotCleanReason = reason
        if self.state == WebSocketProtocol.STATE_OPEN:
            self.sendCloseFrame(code=code, reasonUtf8=reason.encode("utf-8")[:123], isReply=False)
        self._drop_after_flush()

    def _drop_after_flush(self) -> None:
        """
        Close TCP after the buffered bytes are written, aborting if that takes
        longer than the close timeout (for example a peer that stopped reading).
        """
        if self._close_timer is not None or self._tcp_lost:
            return
        if self.state != WebSocketProtocol.STATE_CLOSED:
            if self._error is None:
                # Our own deliberate close: not worth autobahn's warning.
                self.wasClean = True
            self.dropConnection(abort=False)
        else:
            self.transport.loseConnection()
        if self._options.close_timeout > 0:
            self._close_timer = self._reactor.callLater(
                self._options.close_timeout, self._close_timed_out
            )

    def _close_timed_out(self) -> None:
        self._close_timer = None
        self.transport.abortConnection()

    def _cancel_close_timer(self) -> None:
        if self._close_timer is not None:
            if self._close_timer.active():
                self._close_timer.cancel()
            self._close_timer = None

    def _inner_reason(self, reason: Failure) -> Failure:
        """
        Map how the connection ended to the inner protocol's ``connectionLost``
        reason.

        A TCP EOF without Close frame (1006) is how Go always ends a
        connection, so it is a clean :class:`ConnectionDone`, as is any Close
        frame.  Protocol failures become :class:`WebSocketProtocolError`.
        Anything else (a reset, a local abort) is passed on unchanged.
        """
        if self._error is not None:
            return self._error
        if self.failedByMe:
            return Failure(WebSocketProtocolError(self.wasNotCleanReason or "protocol error"))
        if self.remoteCloseCode is not None:
            return Failure(
                ConnectionDone(f"WebSocket closed by peer with code {self.remoteCloseCode}")
            )
        return reason

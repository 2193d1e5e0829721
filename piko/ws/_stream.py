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

Half-close goes further than Go.  Go Piko closes the whole WebSocket when a
local connection half-closes (``shutdown(SHUT_WR)``, ``nc -N``), so a reply
still on its way is lost.  RFC 6455 (section 5.5.1) already carries a
half-close on the same wire: an endpoint that has sent a Close frame sends no
more data frames but still receives them until the peer's Close frame arrives,
and the receiver "MAY delay sending its Close frame until its current message
is sent".  So :meth:`WebSocketStreamTransport.loseWriteConnection` sends a
Close frame and keeps reading; and a Close frame from the peer, when the inner
protocol provides ``IHalfCloseableProtocol``, becomes its
``readConnectionLost`` while it goes on writing, our own Close frame following
when it closes.  Against a Go peer this is no worse than Go itself: gorilla
answers a Close frame with its own and Go Piko then closes the connection,
exactly what it does on a local half-close.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from autobahn.websocket.protocol import WebSocketProtocol
from autobahn.websocket.utf8validator import Utf8Validator
from autobahn.websocket.xormasker import create_xor_masker
from twisted.internet.error import ConnectionDone, TimeoutError
from twisted.internet.interfaces import (
    IAddress,
    IConsumer,
    IDelayedCall,
    IHalfCloseableProtocol,
    IProducer,
    IProtocol,
    IPushProducer,
    IReactorTime,
    ITransport,
)
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from piko._tcp import WEBSOCKET_BUFFER_SIZE, tune
from piko.interfaces import IAbortableTransport, IHalfCloseableTransport
from piko.ws._frames import binary_frame_header, mask_payload, new_mask_key
from piko.ws._frames import parse_frame_header as _parse_frame_header
from piko.ws._options import WebSocketOptions

#: The most bytes handed to autobahn's parser at once.  Autobahn re-slices its
#: whole receive buffer at every frame boundary (``self.data = self.data[i:]``),
#: so its cost grows with the size of a read times the frames in it; the large
#: transport buffer (:data:`piko._tcp.WEBSOCKET_BUFFER_SIZE`) also sets the read
#: size, and 512 KiB reads of 64 KiB messages cost ~2.7x the CPU per MiB of
#: 64 KiB reads (``benchmarks/mux_throughput.py``).
_PARSE_CHUNK = 64 * 1024

#: Payloads at least this long are handed to the TCP transport as a separate
#: buffer (``writeSequence``) instead of being concatenated with the header,
#: which saves one copy of a large payload.
_SEPARATE_PAYLOAD_THRESHOLD = 1024

_OPEN = WebSocketProtocol.STATE_OPEN
_CLOSING = WebSocketProtocol.STATE_CLOSING
_CLOSED = WebSocketProtocol.STATE_CLOSED

_TEXT_REFUSED = "text message received on a byte-stream WebSocket"

CLOSE_NORMAL = WebSocketProtocol.CLOSE_STATUS_CODE_NORMAL
CLOSE_UNSUPPORTED_DATA = WebSocketProtocol.CLOSE_STATUS_CODE_UNSUPPORTED_DATA


class WebSocketProtocolError(Exception):
    """
    The peer broke the WebSocket protocol as Piko uses it (a text message, an
    oversized or malformed frame).  Handed to the inner protocol's
    ``connectionLost``.
    """


@implementer(ITransport, IPushProducer, IConsumer, IHalfCloseableTransport, IAbortableTransport)
class WebSocketStreamTransport:
    """
    The transport an inner protocol sees: a byte stream carried in binary
    WebSocket messages.

    ``write`` sends exactly one message, so a caller that writes a whole yamux
    frame at once pays the per-message cost once.  Producer calls go to the
    TCP transport, so pausing this transport stops reading the socket and a
    full socket pauses the producer registered here.

    ``loseWriteConnection`` half-closes as ``ITCPTransport`` does, with a
    WebSocket Close frame in place of a TCP FIN (see the module docstring).
    As with TCP, an inner protocol that provides ``IHalfCloseableProtocol``
    gets ``readConnectionLost`` when the peer half-closes;
    ``writeConnectionLost`` is never called (Twisted's TCP does not promise it
    either).
    """

    def __init__(self, websocket: ByteStreamWebSocketMixin) -> None:
        self._websocket = websocket

    @property
    def disconnecting(self) -> bool:
        """Whether ``loseConnection`` (or a protocol failure) is under way."""
        return self._websocket._stream_closing

    @property
    def connected(self) -> bool:
        """
        Whether the stream has not been closed in full; a half-closed stream
        is still connected, as a half-closed TCP connection is.
        """
        return not self._websocket._stream_closing

    def write(self, data: bytes) -> None:
        """Send ``data`` as one binary message; empty data sends nothing."""
        self._websocket._send_binary(data)

    def writeSequence(self, data: Iterable[bytes]) -> None:
        """
        Send the concatenation of ``data`` as one binary message.

        The pieces are not joined: a yamux header and its payload go to the
        TCP transport as they are (masked piece by piece on the client).
        """
        self._websocket._send_binary_parts(list(data))

    def loseConnection(self) -> None:
        """Send a Close frame (1000), then drop TCP once our bytes are flushed."""
        self._websocket._close_stream()

    def loseWriteConnection(self) -> None:
        """
        Half-close: send a Close frame (1000) after the bytes already written,
        ignore later writes, and go on reading until the peer's Close frame
        (or TCP EOF) ends the connection.

        If the peer has already sent its Close frame, this completes the close
        as :meth:`loseConnection` does.  A Go peer answers at once with its
        own Close frame and drops the connection, so the reply a half-close
        waits for only arrives from a peer built on this module.
        """
        self._websocket._close_write()

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
    # autobahn protocol options, copied from the factory at connectionMade.
    applyMask: bool

    _reactor: IReactorTime
    _options: WebSocketOptions
    _inner: IProtocol | None = None
    _stream: WebSocketStreamTransport | None = None
    _stream_closing: bool = False
    _error: Failure | None = None
    _close_timer: IDelayedCall | None = None
    _half_close_timer: IDelayedCall | None = None
    #: We sent our Close frame by ``loseWriteConnection`` and are still reading.
    _write_closed: bool = False
    #: The peer's Close frame arrived; nothing more will be delivered.
    _read_closed: bool = False
    _tcp_lost: bool = False
    _is_client: bool = False
    # Our own frame parser (_receive_frames), used once the WebSocket is open.
    _rx_fast: bool = False
    _rx_pending: bytes = b""
    _rx_remaining: int = 0
    _rx_mask: bytes | None = None
    _rx_mask_offset: int = 0
    _rx_in_message: bool = False
    _rx_message_size: int = 0
    # autobahn's own state and limits, read by the parser.
    data: bytes
    current_frame: Any
    inside_message: bool
    maxMessagePayloadSize: int
    maxFramePayloadSize: int

    def connectionMade(self) -> None:
        """Tune the TCP connection (no Nagle, a write buffer above one frame), then start."""
        tune(self.transport, buffer_size=WEBSOCKET_BUFFER_SIZE)
        super().connectionMade()  # type: ignore[misc]

    def _build_inner(self) -> IProtocol | None:
        """Return the inner protocol once the handshake has succeeded, or ``None`` to drop."""
        raise NotImplementedError

    def _inner_connected(self, inner: IProtocol) -> None:
        """Hook called right after the inner protocol is connected."""

    def _lost_before_open(self, reason: Failure) -> None:
        """Hook called when TCP is lost before the WebSocket opened."""

    # -- autobahn callbacks -------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        """
        Parse data frames ourselves once the WebSocket is open (see
        :meth:`_receive_frames`); before that, and whenever autobahn holds a
        partial frame, feed autobahn, at most :data:`_PARSE_CHUNK` bytes at a
        time and without its per-read debug-log arguments.
        """
        if self._rx_fast:
            self._receive_frames(data)
            return
        state = self.state
        if (
            (state in (_OPEN, _CLOSING))
            and self._inner is not None
            and self.current_frame is None
            and not self.data
        ):
            # Autobahn is between frames: take over, carrying its message state.
            self._rx_fast = True
            self._rx_in_message = bool(self.inside_message)
            self._rx_message_size = getattr(self, "message_data_total_length", 0)
            self._receive_frames(data)
            return
        size = len(data)
        if size <= _PARSE_CHUNK:
            self._dataReceived(data)
            return
        with memoryview(data) as view:
            for start in range(0, size, _PARSE_CHUNK):
                if self.state == WebSocketProtocol.STATE_CLOSED:
                    return
                self._dataReceived(bytes(view[start : start + _PARSE_CHUNK]))

    def _receive_frames(self, data: bytes) -> None:
        """
        Parse incoming frames and hand data frame payloads to the inner
        protocol as they arrive.

        Autobahn costs ~20 us per frame (a frame object, a masker, traffic
        statistics, five callbacks, a re-slice of its whole buffer); one yamux
        frame is usually one WebSocket frame, so that was a large share of the
        CPU per proxied request.  Here a frame header costs a few byte
        lookups.  Frames are checked as autobahn checks them, in the same
        order (reserved bits, masking direction, control frame rules, opcode
        against the fragmentation state, all on the first two bytes; then
        minimal length encoding; then the frame and message size limits) and
        fail the connection the same way, through autobahn's own
        ``_protocol_violation`` and ``_max_message_size_exceeded``; a text
        frame fails it as :meth:`onMessageBegin` does.
        ``piko.test.ws.test_fast_path_equivalence`` holds this parser and
        autobahn's to the same outcome on random streams.  Control frames (ping,
        pong, close) are rare: each is buffered whole and handed to autobahn,
        which answers pings and runs the close handshake as before.  So
        autobahn only ever sees complete control frames and stays between
        frames, and nothing here depends on its parser state.
        """
        if self._rx_pending:
            data = self._rx_pending + data
            self._rx_pending = b""
        size = len(data)
        pos = 0
        while pos < size:
            remaining = self._rx_remaining
            if remaining:
                end = pos + remaining
                if end > size:
                    end = size
                chunk = data if (pos == 0 and end == size) else data[pos:end]
                self._rx_remaining = remaining - (end - pos)
                pos = end
                mask = self._rx_mask
                if mask is not None:
                    offset = self._rx_mask_offset
                    self._rx_mask_offset = (offset + len(chunk)) & 3
                    chunk = mask_payload(mask[offset:] + mask[:offset] if offset else mask, chunk)
                self._deliver_payload(chunk)
                if self.state == _CLOSED:
                    return
                continue
            if size - pos < 2:
                self._rx_pending = data[pos:]
                return
            # Autobahn's checks, in autobahn's order: those on the first two
            # bytes fail the connection before the rest of the header arrives.
            first = data[pos]
            second = data[pos + 1]
            opcode = first & 0x0F
            if first & 0x70:
                self._protocol_violation(f"RSV = {(first & 0x70) >> 4} and no extension negotiated")
                return
            masked = second & 0x80
            if self._is_client:
                if masked:
                    self._protocol_violation("masked server-to-client frame")
                    return
            elif not masked:
                self._protocol_violation("unmasked client-to-server frame")
                return
            if opcode > 7:
                if not self._control_frame_allowed(first, second):
                    return
            elif opcode > 2:
                self._protocol_violation(f"data frame using reserved opcode {opcode}")
                return
            elif opcode == 0:
                if not self._rx_in_message:
                    self._protocol_violation(
                        "received continuation data frame outside fragmented message"
                    )
                    return
            elif self._rx_in_message:
                self._protocol_violation(
                    "received non-continuation data frame while inside fragmented message"
                )
                return
            header = _parse_frame_header(data, pos, size)
            if header is None:
                self._rx_pending = data[pos:]
                return
            _, length, header_size = header
            if length < 0:
                self._protocol_violation(
                    "invalid data frame length (>2^63)"
                    if second & 0x7F == 127 and data[pos + 2] & 0x80
                    else "invalid data frame length (not using minimal length encoding)"
                )
                return
            if opcode > 7:
                end = pos + header_size + length
                if end > size:
                    self._rx_pending = data[pos:]
                    return
                # A complete control frame: autobahn answers pings and closes.
                self._dataReceived(data[pos:end])
                if self.state == _CLOSED:
                    return
                pos = end
                continue
            if opcode == 1:
                self._fail(CLOSE_UNSUPPORTED_DATA, _TEXT_REFUSED)
                return
            if opcode == 2:
                self._rx_in_message = True
                self._rx_message_size = 0
            self._rx_message_size += length
            if not self._within_size_limits(length):
                return
            if first & 0x80:
                self._rx_in_message = False
            pos += header_size
            self._rx_mask = data[pos - 4 : pos] if masked else None
            self._rx_mask_offset = 0
            self._rx_remaining = length

    def _control_frame_allowed(self, first: int, second: int) -> bool:
        """
        Check a control frame's first two bytes as autobahn does, failing the
        connection if they are wrong.

        :return: whether the frame may be read on.
        """
        length = second & 0x7F
        if not first & 0x80:
            self._protocol_violation("fragmented control frame")
            return False
        if length > 125:
            self._protocol_violation("control frame with payload length > 125 octets")
            return False
        opcode = first & 0x0F
        if opcode not in (8, 9, 10):
            self._protocol_violation(f"control frame using reserved opcode {opcode}")
            return False
        if opcode == 8 and length == 1:
            self._protocol_violation("received close control frame with payload len 1")
            return False
        return True

    def _within_size_limits(self, length: int) -> bool:
        """Fail the connection, as autobahn would, if a frame or its message is too large."""
        if self.failedByMe:
            return True
        total = self._rx_message_size
        if 0 < self.maxMessagePayloadSize < total:
            self.wasMaxMessagePayloadSizeExceeded = True
            self._max_message_size_exceeded(
                total,
                self.maxMessagePayloadSize,
                f"received WebSocket message size {total} exceeds payload limit of "
                f"{self.maxMessagePayloadSize} octets",
            )
            return False
        if 0 < self.maxFramePayloadSize < length:
            self.wasMaxFramePayloadSizeExceeded = True
            self._max_message_size_exceeded(
                length,
                self.maxFramePayloadSize,
                f"received WebSocket frame size {length} exceeds payload limit of "
                f"{self.maxFramePayloadSize} octets",
            )
            return False
        return True

    def _deliver_payload(self, payload: bytes) -> None:
        """Hand frame data to the inner protocol unless the stream is closing or failed."""
        if payload and not self._stream_closing and not self._read_closed and not self.failedByMe:
            inner = self._inner
            if inner is not None:
                inner.dataReceived(payload)

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

    def onFrameData(self, payload: bytes) -> bool | None:
        """
        Unmask a masked frame's payload when autobahn was told not to (``applyMask=False``,
        as the server is): small pieces are XOR-ed as one integer instead of through a native
        masker built for every frame.
        """
        mask: bytes | None = self.current_frame.mask
        if mask is not None and payload and not self.applyMask:
            # autobahn's null masker counts the bytes of this frame handed on so far.
            offset = (self.current_frame_masker.pointer() - len(payload)) & 3
            key = mask[offset:] + mask[:offset] if offset else mask
            payload = mask_payload(key, payload)
        result: bool | None = super().onFrameData(payload)
        return result

    def onMessageBegin(self, isBinary: bool) -> None:
        """Reject text messages: Go Piko treats them as a fatal error."""
        self.message_data_total_length = 0
        if not isBinary:
            self._fail(CLOSE_UNSUPPORTED_DATA, _TEXT_REFUSED)

    def onMessageFrameData(self, payload: bytes) -> None:
        """
        Deliver frame data to the inner protocol as it arrives.

        Message boundaries carry no meaning, so nothing is reassembled: each
        TCP read yields at most one ``dataReceived`` per frame it touches.
        """
        self._deliver_payload(payload)

    def onMessageFrameEnd(self) -> None:
        """Nothing to do: frame data was delivered as it arrived."""

    def onMessageEnd(self) -> None:
        """Nothing to do: message boundaries carry no meaning."""

    def onCloseFrame(self, code: int, reasonRaw: bytes) -> bool | None:
        """
        Handle the peer's Close frame: the end of a half-close, the start of
        one, or a plain close.

        * After our own ``loseWriteConnection`` this is the peer's answer: we
          drop TCP once our bytes are flushed.  (Autobahn's server would abort
          instead, discarding bytes still queued.)
        * If the inner protocol provides ``IHalfCloseableProtocol``, it gets
          ``readConnectionLost`` and may go on writing; our Close frame
          follows when it closes.  Autobahn would answer at once, after which
          it writes no more data.
        * Otherwise autobahn answers the Close frame and we drop TCP without
          waiting for the peer to (autobahn's client waits; Go simply closes).
        """
        if self._read_closed:
            # A second Close frame: the peer broke the protocol; ignore it.
            return None
        if self._write_closed and not self._stream_closing:
            if not self._accept_close_frame(code, reasonRaw):
                return True
            self._read_closed = True
            self._stream_closing = True
            self.wasClean = True
            self._drop_after_flush()
            return None
        inner = self._inner
        if (
            self.state == WebSocketProtocol.STATE_OPEN
            and not self._stream_closing
            and inner is not None
            and IHalfCloseableProtocol.providedBy(inner)
        ):
            if not self._accept_close_frame(code, reasonRaw):
                return True
            self._read_closed = True
            self.wasClean = True
            self._start_half_close_timer()
            inner.readConnectionLost()
            return None
        result = WebSocketProtocol.onCloseFrame(self, code, reasonRaw)
        self._drop_after_flush()
        return result

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:  # noqa: B008
        """Tell the inner protocol (if any) that the stream ended, and why."""
        self._tcp_lost = True
        self._cancel_close_timer()
        self._cancel_half_close_timer()
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

    def _send_binary_parts(self, parts: list[bytes]) -> None:
        """Send ``parts`` as one binary message without joining them first."""
        length = sum(map(len, parts))
        if not length or self.state != WebSocketProtocol.STATE_OPEN or self._stream_closing:
            return
        if length < _SEPARATE_PAYLOAD_THRESHOLD:
            self._send_binary(b"".join(parts))
            return
        if self._is_client:
            key = new_mask_key()
            header = binary_frame_header(length, key)
            masker = create_xor_masker(key, length)
            parts = [masker.process(part) for part in parts if part]
        else:
            header = binary_frame_header(length)
        self.transport.writeSequence([header, *parts])

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
        """
        Send a normal Close frame (unless our half-close already sent one) and
        drop TCP once flushed.
        """
        if self._stream_closing:
            return
        self._stream_closing = True
        if self.state == WebSocketProtocol.STATE_OPEN:
            self.sendCloseFrame(code=CLOSE_NORMAL, isReply=self._read_closed)
        self._drop_after_flush()

    def _close_write(self) -> None:
        """
        Send a normal Close frame but keep reading (``loseWriteConnection``).

        Autobahn moves to ``STATE_CLOSING``, where it still parses incoming
        frames (it expects the peer's Close there) and :meth:`_send_binary`
        writes nothing more.  The factories disable autobahn's own close
        handshake timeout, so only ``half_close_timeout`` bounds the wait.
        """
        if self._stream_closing or self._write_closed:
            return
        if self._read_closed or self.state != WebSocketProtocol.STATE_OPEN:
            # Both halves are now done (or there is nothing left to half-close).
            self._close_stream()
            return
        self._write_closed = True
        self.sendCloseFrame(code=CLOSE_NORMAL, isReply=False)
        self._start_half_close_timer()

    def _abort_stream(self) -> None:
        """Abort the TCP connection."""
        self._stream_closing = True
        self.wasClean = True
        self.dropConnection(abort=True)

    # -- internals ----------------------------------------------------------

    def _accept_close_frame(self, code: int | None, reason_raw: bytes | None) -> bool:
        """
        Record the peer's close code and reason, checking them as autobahn's
        ``onCloseFrame`` does (which we bypass for half-closes).

        :return: ``False`` if the frame was invalid and the connection is
            being failed.
        """
        self.remoteCloseCode = None
        self.remoteCloseReason = None
        if code is not None and (
            code < 1000
            or (1000 <= code <= 2999 and code not in WebSocketProtocol.CLOSE_STATUS_CODES_ALLOWED)
            or code >= 5000
        ):
            if self._protocol_violation(f"invalid close code {code}"):
                return False
            code = CLOSE_NORMAL
        self.remoteCloseCode = code
        if reason_raw is not None:
            valid, ended, _, _ = Utf8Validator().validate(reason_raw)
            if not (valid and ended):
                if self._invalid_payload("invalid close reason (non-UTF8 payload)"):
                    return False
            else:
                self.remoteCloseReason = reason_raw.decode("utf-8")
        return True

    def _fail(self, code: int, reason: str) -> None:
        """
        Fail the connection with a Close frame carrying ``code``; the inner
        protocol later gets a :class:`WebSocketProtocolError`.
        """
        if self._error is None:
            self._error = Failure(WebSocketProtocolError(reason))
        self._piko_log.warn("failing WebSocket connection", code=code, reason=reason)
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
        self._cancel_half_close_timer()
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

    def _start_half_close_timer(self) -> None:
        """Bound the half-closed state, if ``half_close_timeout`` asks for it."""
        timeout = self._options.half_close_timeout
        if timeout > 0 and self._half_close_timer is None and not self._tcp_lost:
            self._half_close_timer = self._reactor.callLater(timeout, self._half_close_timed_out)

    def _half_close_timed_out(self) -> None:
        """The other half took too long: close in full; the inner protocol sees a timeout."""
        self._half_close_timer = None
        if self._error is None:
            self._error = Failure(TimeoutError("WebSocket half-close timed out"))
            self.wasNotCleanReason = "WebSocket half-close timed out"
        self._close_stream()

    def _cancel_half_close_timer(self) -> None:
        if self._half_close_timer is not None:
            if self._half_close_timer.active():
                self._half_close_timer.cancel()
            self._half_close_timer = None

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

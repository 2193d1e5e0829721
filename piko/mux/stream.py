# -*- test-case-name: piko.test.mux.test_session -*-
"""
A yamux stream as a real Twisted transport.

A :class:`Stream` provides ``ITransport``, ``IConsumer`` and
``IPushProducer``, so any :class:`~twisted.internet.protocol.Protocol` runs
on it unchanged, a producer (say the downstream TCP transport) can be
registered on it, and it can be registered as the producer of another
transport.

Flow control is yamux's per-stream window:

- outgoing, we never send more than the peer's window; what does not fit
  waits in the stream, and a registered producer is paused while that
  backlog is above a high-water mark;
- incoming, data is handed to the protocol at once unless it paused us,
  and window is granted back (in deltas of at least half the window, as Go
  does) only for data the protocol has taken.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from attrs import frozen
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IAddress,
    IConsumer,
    IDelayedCall,
    IHalfCloseableProtocol,
    IProducer,
    IProtocol,
    IPushProducer,
    ITransport,
)
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from piko.interfaces import (
    IAbortableTransport,
    ICorkableTransport,
    IHalfCloseableTransport,
    IUnwaitedCloseTransport,
)
from piko.mux.errors import StreamReset
from piko.mux.frames import Flag, FrameType

if TYPE_CHECKING:
    from piko.mux.session import Session

_DATA = int(FrameType.DATA)
_WINDOW_UPDATE = int(FrameType.WINDOW_UPDATE)
_FIN = int(Flag.FIN)
_RST = int(Flag.RST)

#: The reason every cleanly closed stream gives, shared as Twisted shares
#: ``protocol.connectionDone``: building a Failure per stream is costly.
_STREAM_CLOSED = Failure(ConnectionDone("stream closed"))

_log = Logger(namespace="piko.mux.stream")

#: Pause a registered producer when this much outgoing data waits.
HIGH_WATER = 64 * 1024

#: yamux's initial per-stream window, which both ends assume without saying.
INITIAL_WINDOW = 256 * 1024


@implementer(IAddress)
@frozen
class StreamAddress:
    """
    The address of one end of a yamux stream.

    :param stream_id: the yamux stream id.
    :param address: the address of the transport the session runs on (for
        the agent, the Piko server's address, as Go reports it).
    """

    stream_id: int
    address: IAddress | None


@implementer(
    IHalfCloseableTransport, IAbortableTransport, ICorkableTransport, IUnwaitedCloseTransport
)
@implementer(ITransport, IConsumer, IPushProducer)
class Stream:
    """
    One yamux stream.  Made by :class:`~piko.mux.session.Session` only.

    :ivar stream_id: the yamux stream id.
    :ivar disconnecting: ``True`` once we have half-closed (sent FIN).
    """

    def __init__(self, session: Session, stream_id: int, *, opened_locally: bool) -> None:
        self._session = session
        self.stream_id = stream_id
        self.opened_locally = opened_locally
        # Both ends start from the protocol's initial window; a larger
        # max_stream_window is granted to the peer with a window update.
        self._max_window = max(session.config.max_stream_window, INITIAL_WINDOW)
        self._send_window = INITIAL_WINDOW
        self._recv_window = INITIAL_WINDOW
        self._send_buffer = bytearray()
        self._recv_buffer: list[bytes] = []
        self._recv_buffered = 0
        self.protocol: IProtocol | None = None
        self._producer: IProducer | None = None
        self._producer_paused = False
        self._streaming_producer = True
        self._reading_paused = False
        self._pending_flags = 0
        self._control_call: IDelayedCall | None = None
        #: True while our SYN awaits its ACK (the timeout is in the session's Deadlines).
        self._open_timer: bool | None = None
        #: True once the close timeout was armed (in the session's Deadlines).
        self._close_timer: bool | None = None
        self._write_closing = False  # loseConnection asked; FIN once the buffer drains
        self._fin_unwaited = False  # loseConnectionUnwaited: the FIN may wait
        self._corked = False
        self._fin_sent = False
        self._fin_received = False
        self._eof_delivered = False
        #: stopProducing was called: nothing reads what arrives from now on.
        self._reader_gone = False
        self.disconnecting = False
        self.connected = False
        self.finished = False

    def __repr__(self) -> str:
        return f"<Stream {self.stream_id}>"

    # -- connecting ---------------------------------------------------------

    def _connect(self, protocol: IProtocol) -> None:
        self.protocol = protocol
        self.connected = True
        try:
            protocol.makeConnection(self)
        except Exception:
            self._protocol_failed("makeConnection")
            return
        self._deliver()

    def _protocol_failed(self, callback: str) -> None:
        """
        The stream's protocol raised: log it and reset this stream only.

        As a TCP transport loses its connection when its protocol raises, and as the
        README promises that any ``Factory`` can be served on an endpoint: one stream's
        faulty protocol must not take the session, and every other stream on it, down.
        Called from inside an ``except`` block.
        """
        _log.failure(
            "stream protocol raised; stream reset",
            callback=callback,
            stream_id=self.stream_id,
        )
        self.abortConnection()

    def _send_pending_control(self) -> None:
        """Send a SYN or ACK that found no Data frame to ride on."""
        self._control_call = None
        flags = self._pending_flags
        if flags and not self.finished:
            self._pending_flags = 0
            self._session.send_frame(_WINDOW_UPDATE, flags, self.stream_id, 0)

    def _take_flags(self) -> int:
        flags = self._pending_flags
        if flags:
            self._pending_flags = 0
            call = self._control_call
            if call is not None:
                if call.active():
                    call.cancel()
                self._control_call = None
            else:
                self._session._held_acks.pop(self, None)
        return flags

    # -- ITransport ---------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Send ``data``, at once if the window and the transport allow."""
        if not data or self._write_closing or self.finished:
            return
        session = self._session
        size = len(data)
        if (
            not self._send_buffer
            and size <= self._send_window
            and size <= session.config.max_frame_payload
            and not session._output_paused
            and not self._corked
        ):
            self._send_window -= size
            session.send_frame(_DATA, self._take_flags(), self.stream_id, size, bytes(data))
            return
        self._send_buffer += data
        if not self._corked:
            self._flush()

    def writeSequence(self, data: list[bytes]) -> None:  # type: ignore[override]
        """Send the concatenation of ``data``."""
        self.write(b"".join(data))

    def loseConnection(self) -> None:
        """Half-close: FIN once buffered data is sent; reading goes on until the peer's FIN."""
        if self._write_closing or self.finished:
            return
        self._write_closing = True
        self.disconnecting = True
        if self._close_timer is None:
            # As Go's Stream.Close starts its closeTimer: a FIN still queued behind data
            # the peer never grants window for must not hold the stream for ever.
            self._close_timer = True
            self._session._close_deadlines.arm(self)
        if self._producer is not None and not self._streaming_producer:
            # A pull producer would never be asked again; drop it.
            self._producer = None
        if not self._corked:
            self._flush()

    def loseConnectionUnwaited(self) -> None:
        """
        Half-close when nothing on the other side waits for our FIN.

        Like :meth:`loseConnection`; if the peer has already closed its side
        (or its FIN is in the same read, right behind the Data frame being
        delivered), the FIN may wait up to the session's ``control_delay`` to
        ride with another frame (the server's FIN after a proxied response
        rides with the next request) instead of costing the peer a message of
        its own.
        """
        self._fin_unwaited = True
        self.loseConnection()

    def cork(self) -> None:
        """
        Hold what is written (and a half-close) until :meth:`uncork`.

        A protocol that answers with several writes and then closes, all in one call (a
        response head, its body, the FIN), corks around them so that one Data frame carries
        all of it, followed by the FIN in the same write: one WebSocket message instead of
        three.
        """
        self._corked = True

    def uncork(self) -> None:
        """Send what was held since :meth:`cork`."""
        if not self._corked:
            return
        self._corked = False
        if not self.finished and (self._send_buffer or self._write_closing):
            self._flush()

    def loseWriteConnection(self) -> None:
        """Half-close the stream (the ``ITCPTransport`` spelling)."""
        self.loseConnection()

    def abortConnection(self) -> None:
        """Reset the stream (RST) and drop buffered data both ways."""
        if self.finished:
            return
        self._session.send_frame(_WINDOW_UPDATE, self._take_flags() | _RST, self.stream_id, 0)
        self._finish(Failure(StreamReset("stream aborted")))

    def getPeer(self) -> IAddress:
        """The peer address of the transport the session runs on."""
        transport = self._session.transport
        return transport.getPeer() if transport is not None else StreamAddress(self.stream_id, None)

    def getHost(self) -> IAddress:
        """The local address of the transport the session runs on."""
        transport = self._session.transport
        return transport.getHost() if transport is not None else StreamAddress(self.stream_id, None)

    # -- IConsumer ----------------------------------------------------------

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        """Register the producer that writes into this stream."""
        if self._producer is not None:
            raise RuntimeError(f"producer {self._producer!r} already registered on {self!r}")
        if self.finished:
            producer.stopProducing()
            return
        self._producer = producer
        self._streaming_producer = streaming
        self._producer_paused = False
        if not streaming:
            producer.resumeProducing()  # type: ignore[attr-defined]
        elif len(self._send_buffer) > HIGH_WATER:
            self._pause_producer()

    def unregisterProducer(self) -> None:
        """Forget the registered producer."""
        self._producer = None
        self._producer_paused = False

    # -- IPushProducer (our incoming data) ----------------------------------

    def pauseProducing(self) -> None:
        """Stop delivering received data; window is not granted meanwhile."""
        self._reading_paused = True

    def resumeProducing(self) -> None:
        """Deliver held data, then grant window for it."""
        if not self._reading_paused:
            return
        self._reading_paused = False
        self._deliver()

    def stopProducing(self) -> None:
        """
        The consumer of our data is gone for good: close, as a TCP transport does.

        Twisted's transports answer ``stopProducing`` with ``loseConnection``
        (``FileDescriptor.stopProducing``), and a TCP transport calls it on its
        registered producer when it is lost.  So a splice whose local connection
        closes right after the local service's last write stops the stream that
        feeds it; a reset here would discard what the stream still holds for the
        peer (written, waiting for window) and the peer would see a reply cut at
        a window boundary.  Instead what was written is still sent, then the FIN.

        Data that arrives from now on has no reader: it is dropped, with its
        window granted back so the peer is not stalled before our FIN is out;
        data arriving after our FIN resets the stream, as TCP answers data for a
        closed socket with a reset, so an endless sender is stopped.
        """
        if self.finished:
            return
        self._reader_gone = True
        self._reading_paused = False
        self._recv_buffer = []
        self._recv_buffered = 0
        self.loseConnection()

    # -- flow control: output -----------------------------------------------

    def _flush(self) -> None:
        session = self._session
        buffer = self._send_buffer
        max_frame = session.config.max_frame_payload
        while buffer and self._send_window > 0 and not session._output_paused:
            size = min(len(buffer), self._send_window, max_frame)
            if size == len(buffer):
                chunk = bytes(buffer)
                buffer.clear()
            else:
                with memoryview(buffer) as view:
                    chunk = bytes(view[:size])
                del buffer[:size]
            self._send_window -= size
            flags = self._take_flags()
            # The FIN never rides on a Data frame with a payload: Go's yamux applies a
            # frame's flags before it copies the payload (``readData`` calls
            # ``processFlags`` first), so a reader woken by the FIN in between finds the
            # stream closed and its buffer empty, reads EOF, and the payload is lost.  It
            # goes in a WindowUpdate of its own right behind the data, in the same write
            # (one WebSocket message), as Go's ``Stream.Close`` sends it.
            fin = not buffer and self._write_closing
            if fin:
                self._fin_sent = True
            session.send_frame(_DATA, flags, self.stream_id, size, chunk, fin=fin)
            if self.finished:
                return
        if buffer:
            if self._send_window > 0:
                session._want_flush(self)
            if len(buffer) > HIGH_WATER:
                self._pause_producer()
        else:
            if self._write_closing and not self._fin_sent:
                self._fin_sent = True
                flags = self._take_flags() | _FIN
                peer_closed = self._fin_received or session._fin_follows(self)
                if peer_closed and flags == _FIN and session.config.coalesce_control:
                    # The peer closed already: our FIN only completes the stream.
                    session.send_frame_later(
                        _WINDOW_UPDATE, _FIN, self.stream_id, 0, unwaited=self._fin_unwaited
                    )
                else:
                    session.send_frame(_WINDOW_UPDATE, flags, self.stream_id, 0)
            if self._fin_sent:
                self._after_fin_sent()
                return
            # Resume even if the session is paused now (the last frame may have
            # filled the transport): the producer refills at most a high-water
            # mark before it is paused again, and nothing else would wake it.
            self._resume_producer()

    def _after_fin_sent(self) -> None:
        if self._fin_received:
            if self._eof_delivered or not self._recv_buffer:
                self._finish(_STREAM_CLOSED)
            return
        if self._close_timer is None:
            self._close_timer = True
            self._session._close_deadlines.arm(self)
        protocol = self.protocol
        if protocol is not None and IHalfCloseableProtocol.providedBy(protocol):
            try:
                protocol.writeConnectionLost()
            except Exception:
                self._protocol_failed("writeConnectionLost")

    def _pause_producer(self) -> None:
        # Like Twisted's own transports, ask again on every write over the mark:
        # a producer may have resumed itself since the last request.
        producer = self._producer
        if producer is not None and self._streaming_producer:
            self._producer_paused = True
            producer.pauseProducing()  # type: ignore[attr-defined]

    def _resume_producer(self) -> None:
        producer = self._producer
        if producer is None:
            return
        if not self._streaming_producer:
            producer.resumeProducing()  # type: ignore[attr-defined]
        elif self._producer_paused:
            self._producer_paused = False
            producer.resumeProducing()  # type: ignore[attr-defined]

    def _window_update(self, delta: int) -> None:
        self._send_window += delta
        if self._send_buffer:
            self._flush()

    # -- flow control: input ------------------------------------------------

    def _data_received(self, data: bytes) -> None:
        from piko.mux.errors import ProtocolError

        size = len(data)
        if size > self._recv_window:
            raise ProtocolError(
                f"receive window exceeded on stream {self.stream_id}: "
                f"{size} bytes for a window of {self._recv_window}"
            )
        self._recv_window -= size
        if self._fin_received or self.finished:
            return
        if self._reader_gone:
            if self._fin_sent:
                self.abortConnection()
            else:
                self._grant_window()
            return
        protocol = self.protocol
        if protocol is None or self._reading_paused or self._recv_buffer:
            self._recv_buffer.append(data)
            self._recv_buffered += size
            return
        try:
            protocol.dataReceived(data)
        except Exception:
            self._protocol_failed("dataReceived")
            return
        self._grant_window()

    def _deliver(self) -> None:
        """Hand held data (and a held EOF) to the protocol, until it pauses us."""
        protocol = self.protocol
        if protocol is None:
            return
        buffer = self._recv_buffer
        while buffer and not self._reading_paused and not self.finished:
            data = buffer.pop(0)
            self._recv_buffered -= len(data)
            try:
                protocol.dataReceived(data)
            except Exception:
                self._protocol_failed("dataReceived")
                return
        if not self.finished:
            self._grant_window()
        if not buffer and self._fin_received and not self._reading_paused:
            self._deliver_eof()

    def _grant_window(self) -> None:
        delta = self._max_window - self._recv_buffered - self._recv_window
        if delta < self._max_window // 2 or self.finished or self._fin_received:
            return
        self._recv_window += delta
        self._session.send_frame(_WINDOW_UPDATE, self._take_flags(), self.stream_id, delta)

    # -- ending -------------------------------------------------------------

    def _on_fin(self) -> None:
        if self.finished or self._fin_received:
            return
        self._fin_received = True
        if not self._recv_buffer and not self._reading_paused and self.protocol is not None:
            self._deliver_eof()

    def _deliver_eof(self) -> None:
        if self._eof_delivered or self.finished:
            return
        self._eof_delivered = True
        if self._fin_sent:
            self._finish(_STREAM_CLOSED)
            return
        protocol = self.protocol
        if protocol is not None and IHalfCloseableProtocol.providedBy(protocol):
            try:
                protocol.readConnectionLost()
            except Exception:
                self._protocol_failed("readConnectionLost")
        else:
            self.loseConnection()

    def _reset_received(self) -> None:
        self._finish(Failure(StreamReset("stream reset by peer")))

    def _close_timed_out(self) -> None:
        self._close_timer = None
        if self.finished:
            return
        self._session.send_frame(_WINDOW_UPDATE, _RST, self.stream_id, 0)
        self._finish(Failure(StreamReset("stream close timeout")))

    def _session_closed(self, reason: Failure) -> None:
        self._finish(reason)

    def _finish(self, reason: Failure) -> None:
        if self.finished:
            return
        self.finished = True
        self.connected = False
        self.disconnecting = True
        call = self._control_call
        if call is not None and call.active():
            call.cancel()
        self._control_call = None
        if self._close_timer is not None:
            self._close_timer = None
            self._session._close_deadlines.disarm(self)
        self._send_buffer = bytearray()
        self._recv_buffer = []
        self._recv_buffered = 0
        self._session._stream_finished(self)
        producer, self._producer = self._producer, None
        if producer is not None:
            producer.stopProducing()
        protocol, self.protocol = self.protocol, None
        if protocol is not None:
            try:
                protocol.connectionLost(reason)
            except Exception:
                _log.failure("stream protocol raised in connectionLost", stream_id=self.stream_id)

# -*- test-case-name: piko.test.mux.test_session -*-
"""
A yamux session: many streams over one byte transport.

The session is a plain Twisted :class:`~twisted.internet.protocol.Protocol`,
so it runs over a TCP connection, a WebSocket adapter (:mod:`piko.ws`) or a
:class:`~twisted.internet.testing.StringTransport` in tests.  Time comes
from an injected :class:`~twisted.internet.interfaces.IReactorTime`.

Roles follow Go Piko: the server side opens streams (even ids from 2), the
client side (the agent) accepts them (odd ids from 1 if it ever opens).

Backpressure: the session registers itself as a streaming producer on its
transport.  While the transport is paused, streams keep their outgoing data
and pause their own producers; incoming data is bounded per stream by the
receive window, which is only granted back as each stream's consumer drains.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from attrs import frozen
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IDelayedCall,
    IProtocol,
    IProtocolFactory,
    IPushProducer,
    IReactorTime,
)
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from piko._deadlines import Deadlines
from piko.mux.errors import (
    KeepAliveTimeout,
    MuxError,
    ProtocolError,
    RemoteGoAway,
    SessionClosed,
    StreamOpenTimeout,
    WriteTimeout,
)
from piko.mux.frames import (
    HEADER,
    HEADER_SIZE,
    PROTOCOL_VERSION,
    Flag,
    FrameType,
    GoAwayCode,
)
from piko.mux.stream import INITIAL_WINDOW

if TYPE_CHECKING:
    from piko.mux.stream import Stream

# Plain ints on the hot path: IntFlag/IntEnum operators run Python code.
_pack_header = HEADER.pack
_unpack_header = HEADER.unpack_from
_DATA = int(FrameType.DATA)
_WINDOW_UPDATE = int(FrameType.WINDOW_UPDATE)
_PING = int(FrameType.PING)
_GO_AWAY = int(FrameType.GO_AWAY)
_SYN = int(Flag.SYN)
_ACK = int(Flag.ACK)
_FIN = int(Flag.FIN)
_RST = int(Flag.RST)
#: Answers (ping ACKs, RSTs of refused opens) the peer may make us write
#: while it does not read (the transport is paused) before the session ends.
MAX_UNREAD_REPLIES = 1024
#: Payloads smaller than this are joined to their header (one small copy
#: beats a list); larger ones go to the transport as a separate piece.
_JOIN_BELOW = 1024


@frozen
class SessionConfig:
    """
    Session tunables; the defaults are ``yamux.DefaultConfig()`` as Go Piko uses it.

    :param accept_backlog: streams the peer may open that we have not
        accepted yet; more are refused with RST.  Also the number of our own
        opens that may wait for an ACK before further opens wait.
    :param max_stream_window: the per-stream receive window (and the
        initial send window): 256 KiB.
    :param keepalive_interval: seconds between our pings; ``None`` disables.
    :param keepalive_timeout: seconds a ping may stay unanswered before the
        session is closed (Go uses its connection write timeout, 10 s).
    :param stream_open_timeout: seconds an opened stream may wait for its
        ACK; Go closes the whole session when it runs out.
    :param stream_close_timeout: seconds a half-closed stream waits for the
        peer's FIN before it is reset and forgotten.
    :param write_timeout: seconds the transport may refuse our writes
        (stay paused) before the session is presumed dead.
    :param max_frame_payload: the largest Data frame we send.
    :param coalesce_control: carry a new stream's SYN or ACK on its first
        Data frame, saving a frame (and a WebSocket message), and let the FIN
        that completes a stream the peer has already closed ride with another
        frame.  A SYN waits until the end of the reactor turn; an ACK up to
        ``control_delay``, long enough for a proxied request's response to
        carry it; a closing FIN until the end of the turn, or up to
        ``control_delay`` after :meth:`Stream.loseConnectionUnwaited`.  Go
        peers accept SYN and ACK on Data frames and tolerate a late FIN (their
        stream has nothing left to do); ``False`` sends each frame alone and
        at once, exactly as Go does.
    :param control_delay: seconds an ACK, or an unwaited closing FIN, may wait
        for a frame to ride with.  Well under Go's 75 s open timeout; at most
        :data:`MAX_HELD_CONTROL` ACKs wait at once, far below the 256
        unacknowledged opens after which a Go peer stops opening streams.
    """

    accept_backlog: int = 256
    max_stream_window: int = 256 * 1024
    keepalive_interval: float | None = 30.0
    keepalive_timeout: float = 10.0
    stream_open_timeout: float = 75.0
    stream_close_timeout: float = 300.0
    write_timeout: float = 10.0
    max_frame_payload: int = 256 * 1024
    coalesce_control: bool = True
    control_delay: float = 0.005


#: The most ACKs (and closing FINs) held back at once; one more sends them all.
MAX_HELD_CONTROL = 64


def _close_timed_out(stream: Stream) -> None:
    stream._close_timed_out()


@implementer(IPushProducer)
class Session(Protocol):
    """
    One end of a yamux session.

    :param clock: the source of time for keepalives and timeouts.
    :param client: ``True`` for the side that accepts in Piko (the agent,
        odd stream ids), ``False`` for the server (even ids).
    :param config: the tunables.
    :param on_closed: called once with the reason when the session ends.
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        *,
        client: bool,
        config: SessionConfig | None = None,
        on_closed: Callable[[Failure], object] | None = None,
    ) -> None:
        self.clock = clock
        self.client = client
        self.config = config if config is not None else SessionConfig()
        self._on_closed = on_closed
        self._next_stream_id = 1 if client else 2
        self._streams: dict[int, Stream] = {}
        self._backlog: deque[Stream] = deque()
        self._factory: IProtocolFactory | None = None
        # Incoming frames are parsed in place (see dataReceived): a header cut
        # by a read waits in _head; a Data payload is handed on as it arrives.
        self._max_payload = max(self.config.max_stream_window, INITIAL_WINDOW)
        self._head = bytearray()
        self._payload_left = 0
        self._payload_stream: Stream | None = None
        self._payload_flags = 0
        # While a Data frame's last bytes are delivered: the read they came in, and where
        # the next frame starts in it (see _fin_follows).
        self._after: bytes | None = None
        self._after_offset = 0
        self._unacked_opens = 0
        # Open and close timeouts of every stream, on one timer each (see Deadlines).
        self._open_deadlines: Deadlines[Stream] = Deadlines(
            clock, self.config.stream_open_timeout, self._open_timed_out
        )
        self._close_deadlines: Deadlines[Stream] = Deadlines(
            clock, self.config.stream_close_timeout, _close_timed_out
        )
        self._open_waiters: deque[Deferred[None]] = deque()
        self._pending_flush: dict[Stream, None] = {}
        # Streams whose ACK waits for their first Data frame, and header-only
        # frames (closing FINs) that wait to ride with the next frame we send;
        # both flushed by one timer (see send_frame, _flush_held).
        self._held_acks: dict[Stream, None] = {}
        self._held_frames: list[bytes] = []
        self._held_call: IDelayedCall | None = None
        self._frames_call: IDelayedCall | None = None
        self._output_paused = False
        self._unread_replies = 0
        self._paused_since = 0.0
        self._write_timer: IDelayedCall | None = None
        self._ping_id = 0
        self._ping_timer: IDelayedCall | None = None
        self._ping_waiters: dict[int, tuple[float, list[Deferred[float]]]] = {}
        self._keepalive_call: IDelayedCall | None = None
        # Reads from the peer so far, and how many there had been when the ping timer was
        # armed; whether the timer has had its one extra reactor turn (see _ping_timed_out).
        self._reads = 0
        self._reads_at_ping = 0
        self._ping_grace = False
        self.local_go_away = False
        self.remote_go_away = False
        self.closed = False
        self._close_reason: Failure | None = None
        self._closed_waiters: list[Deferred[BaseException]] = []
        self._idle_waiters: list[Deferred[None]] = []

    # -- Protocol -----------------------------------------------------------

    def connectionMade(self) -> None:
        """Start keepalives and take part in the transport's flow control."""
        assert self.transport is not None
        self.transport.registerProducer(self, True)  # type: ignore[attr-defined]
        self._schedule_keepalive()

    def dataReceived(self, data: bytes) -> None:
        """
        Parse frames in place and dispatch them; a protocol error ends the session.

        A Data frame's payload is not gathered first: its header is checked
        against the stream's receive window at once (a longer frame is a
        protocol error, as in hashicorp's ``readData``), then each piece goes
        to the stream as it arrives.  Windows count bytes, so partial delivery
        changes nothing for the protocol, and a piece that is the whole of
        ``data`` is passed on without a copy.  The FIN or RST a Data frame
        carries takes effect after its last byte.
        """
        if self.closed:
            return
        self._reads += 1  # liveness for the keepalive (see _ping_timed_out)
        try:
            offset = 0
            end = len(data)
            while offset < end:
                left = self._payload_left
                if left:
                    size = end - offset
                    if size > left:
                        size = left
                    piece = data if size == end else data[offset : offset + size]
                    offset += size
                    left -= size
                    self._payload_left = left
                    stream = self._payload_stream
                    if stream is not None:
                        if left:
                            stream._data_received(piece)
                        else:
                            # The frame's last bytes: what follows in this read is
                            # visible to _fin_follows meanwhile.
                            self._after = data
                            self._after_offset = offset
                            try:
                                stream._data_received(piece)
                            finally:
                                self._after = None
                    if not left:
                        self._end_payload()
                    if self.closed:
                        return
                    continue
                head = self._head
                if head:
                    take = HEADER_SIZE - len(head)
                    head += data[offset : offset + take]
                    offset += take
                    if len(head) < HEADER_SIZE:
                        return
                    header = _unpack_header(head)
                    head.clear()
                elif end - offset < HEADER_SIZE:
                    head += data[offset:]
                    return
                else:
                    header = _unpack_header(data, offset)
                    offset += HEADER_SIZE
                version, frame_type, flags, stream_id, length = header
                if version != PROTOCOL_VERSION:
                    raise ProtocolError(f"invalid protocol version {version}")
                if frame_type == _DATA:
                    self._on_data_header(flags, stream_id, length)
                elif frame_type == _WINDOW_UPDATE:
                    self._on_window_update(flags, stream_id, length)
                elif frame_type == _PING:
                    self._on_ping(flags, length)
                elif frame_type == _GO_AWAY:
                    self._on_go_away(length)
                else:
                    raise ProtocolError(f"invalid message type {frame_type}")
                if self.closed:
                    return
        except ProtocolError as error:
            self.log.warn("yamux protocol error", error=str(error))
            self._send_go_away(GoAwayCode.PROTOCOL_ERROR)
            self._terminate(Failure(error))

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:  # noqa: B008
        """The transport ended: every stream ends with it."""
        self.transport = None
        self._terminate(reason)

    # -- IPushProducer (the transport's view of us) ---------------------------

    def pauseProducing(self) -> None:
        """
        The transport is full: hold stream data until it drains.

        Streams are not told: each keeps what it is given and pauses its own
        producer past its high-water mark, which keeps memory bounded without
        touching every stream on every pause (a busy session pauses often).
        """
        if self._output_paused or self.closed:
            return
        self._output_paused = True
        self._paused_since = self.clock.seconds()
        if self._write_timer is None:
            self._write_timer = self.clock.callLater(
                self.config.write_timeout, self._check_write_timeout
            )

    def resumeProducing(self) -> None:
        """The transport drained: send what the streams hold, in turn."""
        if not self._output_paused:
            return
        self._output_paused = False
        self._unread_replies = 0
        pending = self._pending_flush
        while pending and not self._output_paused and not self.closed:
            stream = next(iter(pending))
            del pending[stream]
            stream._flush()

    def stopProducing(self) -> None:
        """The transport is going away."""
        self.close()

    # -- public API ---------------------------------------------------------

    @property
    def is_paused(self) -> bool:
        """Whether the transport currently refuses more data."""
        return self._output_paused

    @property
    def stream_count(self) -> int:
        """The number of live streams."""
        return len(self._streams)

    def listen(self, factory: IProtocolFactory | None) -> None:
        """
        Accept the peer's streams with ``factory`` from now on (``None`` stops).

        Streams that arrived before a factory was set wait in the backlog and
        are accepted now, in arrival order.
        """
        self._factory = factory
        while factory is not None and self._backlog and self._factory is factory:
            stream = self._backlog.popleft()
            if not stream.finished:
                self._accept(stream, factory)

    def open_stream(self, protocol: IProtocol) -> Stream:
        """
        Open a stream now and connect ``protocol`` to it.

        Data may be written at once, before the peer's ACK.  Use
        :meth:`wait_for_open_slot` first to respect the peer's backlog.

        :raises SessionClosed: when the session is closed.
        :raises RemoteGoAway: when the peer sent GoAway(0) or we did.
        """
        from piko.mux.stream import Stream

        if self.closed:
            raise SessionClosed("session closed")
        if self.remote_go_away:
            raise RemoteGoAway("remote end is not accepting connections")
        if self.local_go_away:
            raise SessionClosed("session is going away")
        stream_id = self._next_stream_id
        self._next_stream_id += 2
        if stream_id > 0xFFFFFFFF:
            raise SessionClosed("stream ids exhausted")
        stream = Stream(self, stream_id, opened_locally=True)
        self._streams[stream_id] = stream
        self._unacked_opens += 1
        stream._open_timer = True
        self._open_deadlines.arm(stream)
        self._send_control(stream, _SYN)
        stream._connect(protocol)
        self._control_later(stream)
        return stream

    @property
    def open_slot_available(self) -> bool:
        """Whether :meth:`wait_for_open_slot` would fire at once."""
        return self._unacked_opens < self.config.accept_backlog or self.closed

    def wait_for_open_slot(self) -> Deferred[None]:
        """
        Fire when fewer than ``accept_backlog`` of our opens await an ACK.

        Go blocks ``OpenStream`` in the same situation; the peer would refuse
        the excess with RST.
        """
        if self.open_slot_available:
            d: Deferred[None] = Deferred()
            d.callback(None)
            return d
        waiter: Deferred[None] = Deferred()
        self._open_waiters.append(waiter)
        return waiter

    def go_away(self, code: int = GoAwayCode.NORMAL) -> None:
        """
        Tell the peer to open no more streams; existing streams go on.

        After a local GoAway new streams from the peer are refused with RST.
        """
        if self.closed or self.local_go_away:
            return
        self.local_go_away = True
        self._send_go_away(code)

    def close(self, reason: Failure | None = None) -> None:
        """
        Close the transport at once; every stream ends.

        Like Go's ``Session.Close``, no GoAway is sent.
        """
        self._terminate(reason or Failure(SessionClosed("session closed")))

    def ping(self) -> Deferred[float]:
        """Send a ping and fire with the round trip time in seconds."""
        d: Deferred[float] = Deferred()
        if self.closed:
            d.errback(SessionClosed("session closed"))
            return d
        self._send_ping(d)
        return d

    def when_closed(self) -> Deferred[BaseException]:
        """Fire with the reason (an exception, not an errback) once the session has ended."""
        d: Deferred[BaseException] = Deferred()
        if self.closed:
            assert self._close_reason is not None
            d.callback(self._close_reason.value)
        else:
            self._closed_waiters.append(d)
        return d

    def when_idle(self) -> Deferred[None]:
        """
        Fire once no stream is open (at once if none is), or the session ended.

        A graceful stop sends GoAway(0), then waits on this before closing.
        """
        d: Deferred[None] = Deferred()
        if self.closed or not self._streams:
            d.callback(None)
        else:
            self._idle_waiters.append(d)
        return d

    # -- frame output (used by streams) -------------------------------------

    def send_frame(
        self,
        frame_type: int,
        flags: int,
        stream_id: int,
        length: int,
        payload: bytes = b"",
        *,
        fin: bool = False,
    ) -> None:
        """
        Write one frame, header and payload in one transport write.

        :param fin: follow it with a ``WindowUpdate|FIN`` for ``stream_id`` in the same
            write: a stream's last Data frame and its FIN, kept apart for Go's sake (see
            :meth:`Stream._flush <piko.mux.stream.Stream._flush>`) yet in one message.
        """
        transport = self.transport
        if transport is None:
            return
        header = _pack_header(PROTOCOL_VERSION, frame_type, flags, stream_id, length)
        held = self._held_frames
        if held or fin:
            # Held frames ride in front, in the same WebSocket message; a FIN behind.
            self._held_frames = []
            held.append(header)
            if payload:
                held.append(payload)
            if fin:
                held.append(_pack_header(PROTOCOL_VERSION, _WINDOW_UPDATE, _FIN, stream_id, 0))
            transport.writeSequence(held)
        elif not payload:
            transport.write(header)
        elif len(payload) < _JOIN_BELOW:
            transport.write(header + payload)
        else:
            transport.writeSequence((header, payload))

    def send_frame_later(
        self, frame_type: int, flags: int, stream_id: int, length: int, *, unwaited: bool = False
    ) -> None:
        """
        Send a header-only frame with the next frame sent in this reactor turn,
        or alone at the end of it.

        For frames nothing waits on, such as the FIN that completes a stream
        the peer has already closed: under load they share a message with
        other traffic instead of costing one each.

        :param unwaited: the frame may wait up to ``control_delay`` rather
            than the end of the turn, for a frame to ride with: for a FIN no
            one on the other side waits for (a proxied exchange that is over).
        """
        if self.transport is None or self.closed:
            return
        self._held_frames.append(
            _pack_header(PROTOCOL_VERSION, frame_type, flags, stream_id, length)
        )
        if len(self._held_frames) >= MAX_HELD_CONTROL:
            self._flush_held()
        elif unwaited:
            if self._held_call is None:
                self._held_call = self.clock.callLater(
                    self.config.control_delay, self._held_expired
                )
        elif self._frames_call is None:
            self._frames_call = self.clock.callLater(0, self._frames_expired)

    def _hold_ack(self, stream: Stream) -> None:
        """Let ``stream``'s ACK wait for its first Data frame (see ``control_delay``)."""
        self._held_acks[stream] = None
        self._arm_held()

    def _frames_expired(self) -> None:
        self._frames_call = None
        self._write_held_frames([])

    def _arm_held(self) -> None:
        if len(self._held_acks) >= MAX_HELD_CONTROL:
            self._flush_held()
        elif self._held_call is None:
            self._held_call = self.clock.callLater(self.config.control_delay, self._held_expired)

    def _held_expired(self) -> None:
        self._held_call = None
        self._flush_held()

    def _flush_held(self) -> None:
        """Send every held ACK and frame now, in one write."""
        acks, self._held_acks = self._held_acks, {}
        headers = []
        for stream in acks:
            flags = stream._pending_flags
            if flags and not stream.finished:
                stream._pending_flags = 0
                headers.append(
                    _pack_header(PROTOCOL_VERSION, _WINDOW_UPDATE, flags, stream.stream_id, 0)
                )
        self._write_held_frames(headers)

    def _write_held_frames(self, more: list[bytes]) -> None:
        """Write the held frames followed by ``more`` in one write (one WebSocket message)."""
        frames, self._held_frames = self._held_frames, []
        frames += more
        transport = self.transport
        if frames and transport is not None:
            transport.writeSequence(frames)

    def _fin_follows(self, stream: Stream) -> bool:
        """
        Whether the peer's FIN for ``stream`` comes with the Data frame being delivered to
        it: as that frame's flag, or as the frame right behind it in the same read (a
        header-only frame with FIN, how Go and we send a FIN after data).
        """
        if self._payload_stream is not stream:
            return False
        if self._payload_flags & _FIN:
            return True
        data = self._after
        offset = self._after_offset
        if data is None or len(data) - offset < HEADER_SIZE:
            return False
        _version, frame_type, flags, stream_id, length = _unpack_header(data, offset)
        return (
            stream_id == stream.stream_id
            and bool(flags & _FIN)
            and (frame_type == _WINDOW_UPDATE or (frame_type == _DATA and not length))
        )

    def _want_flush(self, stream: Stream) -> None:
        self._pending_flush[stream] = None

    # -- frame input --------------------------------------------------------

    def _frame_stream(self, flags: int, stream_id: int) -> Stream | None:
        """
        The stream a Data or WindowUpdate frame is for, made first if it
        carries SYN and settled if it carries ACK; ``None`` to ignore the frame.
        """
        stream = self._streams.get(stream_id)
        if flags & _SYN:
            if stream is not None:
                raise ProtocolError(f"duplicate stream declared: {stream_id}")
            stream = self._incoming_stream(stream_id)
            if stream is None:
                return None
        elif stream is None:
            return None
        if flags & _ACK and stream._open_timer is not None:
            self._stream_acked(stream)
        return stream

    def _on_data_header(self, flags: int, stream_id: int, length: int) -> None:
        """A Data header: check its length now, then expect ``length`` payload bytes."""
        if length > self._max_payload:
            raise ProtocolError(f"data frame of {length} bytes exceeds any window")
        stream = self._frame_stream(flags, stream_id)
        if stream is None:
            if length and not flags & _SYN:
                self.log.debug(
                    "discarding data for unknown stream", length=length, stream_id=stream_id
                )
        elif length > stream._recv_window:
            raise ProtocolError(
                f"receive window exceeded on stream {stream_id}: "
                f"{length} bytes for a window of {stream._recv_window}"
            )
        self._payload_stream = stream
        self._payload_flags = flags
        self._payload_left = length
        if not length:
            self._end_payload()

    def _end_payload(self) -> None:
        """The current Data frame's last byte arrived: apply its FIN or RST."""
        stream = self._payload_stream
        flags = self._payload_flags
        self._payload_stream = None
        if stream is not None and flags & (_FIN | _RST):
            if flags & _RST:
                stream._reset_received()
            else:
                stream._on_fin()

    def _on_window_update(self, flags: int, stream_id: int, delta: int) -> None:
        stream = self._frame_stream(flags, stream_id)
        if stream is None:
            return
        if delta:
            stream._window_update(delta)
        if flags & (_FIN | _RST):
            if flags & _RST:
                stream._reset_received()
            else:
                stream._on_fin()

    def _incoming_stream(self, stream_id: int) -> Stream | None:
        from piko.mux.stream import Stream

        if stream_id == 0 or (stream_id % 2 == 1) == self.client:
            raise ProtocolError(f"stream id {stream_id} has the wrong parity")
        if self.local_go_away:
            self._reply(_WINDOW_UPDATE, _RST, stream_id, 0)
            return None
        stream = Stream(self, stream_id, opened_locally=False)
        factory = self._factory
        if factory is None:
            if len(self._backlog) >= self.config.accept_backlog:
                self.log.warn("backlog exceeded, forcing stream reset", stream_id=stream_id)
                self._reply(_WINDOW_UPDATE, _RST, stream_id, 0)
                return None
            self._streams[stream_id] = stream
            self._backlog.append(stream)
            return stream
        self._streams[stream_id] = stream
        self._accept(stream, factory)
        return stream if not stream.finished else None

    def _accept(self, stream: Stream, factory: IProtocolFactory) -> None:
        self._send_control(stream, _ACK)
        protocol = factory.buildProtocol(stream.getPeer())
        if protocol is None:
            stream.abortConnection()
            return
        stream._connect(protocol)
        self._control_later(stream)

    def _send_control(self, stream: Stream, flag: int) -> None:
        """
        Send a new stream's SYN or ACK: on its first Data frame when coalescing
        (and no extra window is to be granted), else as a WindowUpdate now,
        carrying the window we grant beyond the initial one (as hashicorp does).
        """
        extra = stream._max_window - stream._recv_window
        if self.config.coalesce_control and not extra:
            # Held for the first Data frame; see _control_later for when none comes.
            stream._pending_flags = flag
            return
        stream._recv_window += extra
        self.send_frame(_WINDOW_UPDATE, flag, stream.stream_id, extra)

    def _control_later(self, stream: Stream) -> None:
        """
        After a new stream's protocol was connected: if its SYN or ACK is still held (the
        protocol wrote nothing yet), send it later unless a Data frame written before then
        carries it: a SYN at the next turn, an ACK within ``control_delay`` (an agent's
        first write is the response, a round trip to its service away).  Scheduling only
        now spares a timer for the common case of a protocol that writes in
        ``connectionMade``.
        """
        if not stream._pending_flags or stream.finished:
            return
        if stream._pending_flags == _ACK:
            self._hold_ack(stream)
        elif stream._control_call is None:
            stream._control_call = self.clock.callLater(0, stream._send_pending_control)

    def _stream_acked(self, stream: Stream) -> None:
        stream._open_timer = None
        self._open_deadlines.disarm(stream)
        self._unacked_opens -= 1
        while self._open_waiters and self._unacked_opens < self.config.accept_backlog:
            self._open_waiters.popleft().callback(None)

    def _stream_finished(self, stream: Stream) -> None:
        """Forget a stream that has ended (called by the stream)."""
        if self._streams.get(stream.stream_id) is stream:
            del self._streams[stream.stream_id]
        self._pending_flush.pop(stream, None)
        self._held_acks.pop(stream, None)
        if stream._open_timer is not None:
            self._stream_acked(stream)
        if not self._streams and self._idle_waiters:
            waiters, self._idle_waiters = self._idle_waiters, []
            for d in waiters:
                d.callback(None)

    def _reply(self, frame_type: int, flags: int, stream_id: int, value: int) -> None:
        """
        Send a frame that answers the peer (a ping's ACK, a refused stream's RST).

        The peer decides how many of these we send, so while the transport is
        paused (the peer is not reading) at most ``MAX_UNREAD_REPLIES`` are
        written; one more means the peer floods us without reading, and the
        session ends rather than buffer without bound until the write timeout.
        """
        if self._output_paused:
            self._unread_replies += 1
            if self._unread_replies > MAX_UNREAD_REPLIES:
                raise ProtocolError(
                    f"peer sent over {MAX_UNREAD_REPLIES} pings or refused opens without reading"
                )
        self.send_frame(frame_type, flags, stream_id, value)

    def _on_ping(self, flags: int, value: int) -> None:
        if flags & _SYN:
            self._reply(_PING, _ACK, 0, value)
        elif flags & _ACK:
            entry = self._ping_waiters.pop(value, None)
            if entry is None:
                return
            if self._ping_timer is not None and self._ping_timer.active():
                self._ping_timer.cancel()
            self._ping_timer = None
            sent, waiters = entry
            rtt = self.clock.seconds() - sent
            for d in waiters:
                d.callback(rtt)

    def _on_go_away(self, code: int) -> None:
        if code == GoAwayCode.NORMAL:
            self.remote_go_away = True
            return
        if code == GoAwayCode.PROTOCOL_ERROR:
            error: MuxError = SessionClosed("yamux protocol error (remote GoAway 1)")
        elif code == GoAwayCode.INTERNAL_ERROR:
            error = SessionClosed("yamux internal error (remote GoAway 2)")
        else:
            error = SessionClosed(f"unexpected GoAway code {code}")
        self._terminate(Failure(error))

    # -- keepalive and timeouts ---------------------------------------------

    def _schedule_keepalive(self) -> None:
        interval = self.config.keepalive_interval
        if interval is not None and not self.closed:
            self._keepalive_call = self.clock.callLater(interval, self._keepalive)

    def _keepalive(self) -> None:
        self._keepalive_call = None
        self._send_ping(None)
        self._schedule_keepalive()

    def _send_ping(self, waiter: Deferred[float] | None) -> None:
        ping_id = self._ping_id
        self._ping_id = (ping_id + 1) & 0xFFFFFFFF
        self._ping_waiters[ping_id] = (self.clock.seconds(), [waiter] if waiter else [])
        if self._ping_timer is None:
            self._arm_ping_timer()
        self.send_frame(FrameType.PING, _SYN, 0, ping_id)

    def _arm_ping_timer(self) -> None:
        self._reads_at_ping = self._reads
        self._ping_grace = False
        self._ping_timer = self.clock.callLater(self.config.keepalive_timeout, self._ping_timed_out)

    def _ping_timed_out(self) -> None:
        """
        The ping has not been answered in ``keepalive_timeout``: end the session, unless the
        peer has shown it is alive some other way.

        Go's yamux reads in a goroutine of its own, so only a silent peer lets its ping time
        out.  Here one reactor reads and also does everything else: after a busy spell (a few
        dozen large heads to rewrite) the timer can fire before the reactor has read the
        answer waiting in the socket, or the answer can sit behind megabytes of stream data
        the peer sent first.  So any bytes received since the ping count as liveness (the
        timer is armed again, and a silent peer still ends the session one timeout later),
        and before giving up the timer waits one more reactor turn, in which bytes that
        arrived during the busy spell are read.  Nothing changes on the wire.
        """
        self._ping_timer = None
        if self._reads != self._reads_at_ping:
            self._arm_ping_timer()
            return
        if not self._ping_grace:
            self._ping_grace = True
            self._ping_timer = self.clock.callLater(0, self._ping_timed_out)
            return
        self.log.warn("yamux keepalive timeout")
        self._terminate(Failure(KeepAliveTimeout("keepalive timeout")))

    def _open_timed_out(self, stream: Stream) -> None:
        stream._open_timer = None
        self.log.warn("yamux stream not acknowledged in time", stream_id=stream.stream_id)
        self._terminate(Failure(StreamOpenTimeout("stream open timeout")))

    def _check_write_timeout(self) -> None:
        """
        One timer for the whole time writes are blocked, not one per pause.

        Fires ``write_timeout`` after a pause began; if the transport resumed
        and paused again meanwhile, it re-arms for the newest pause.
        """
        self._write_timer = None
        if not self._output_paused or self.closed:
            return
        deadline = self._paused_since + self.config.write_timeout
        now = self.clock.seconds()
        if now >= deadline:
            self._terminate(Failure(WriteTimeout("connection write timeout")))
        else:
            self._write_timer = self.clock.callLater(deadline - now, self._check_write_timeout)

    # -- ending -------------------------------------------------------------

    def _send_go_away(self, code: int) -> None:
        self.send_frame(FrameType.GO_AWAY, 0, 0, code)

    def _terminate(self, reason: Failure) -> None:
        if self.closed:
            return
        self.closed = True
        self._close_reason = reason
        for call in (self._keepalive_call, self._ping_timer, self._write_timer):
            if call is not None and call.active():
                call.cancel()
        self._keepalive_call = self._ping_timer = self._write_timer = None
        self._open_deadlines.stop()
        self._close_deadlines.stop()
        for held_call in (self._held_call, self._frames_call):
            if held_call is not None and held_call.active():
                held_call.cancel()
        self._held_call = self._frames_call = None
        self._held_acks.clear()
        transport = self.transport
        if transport is not None:
            self._write_held_frames([])
            transport.unregisterProducer()  # type: ignore[attr-defined]
            transport.loseConnection()
        stream_reason = reason
        if not reason.check(SessionClosed):
            stream_reason = Failure(SessionClosed(str(reason.value)))
        for stream in list(self._streams.values()):
            stream._session_closed(stream_reason)
        self._streams.clear()
        self._backlog.clear()
        self._pending_flush.clear()
        for _sent, ping_waiters in self._ping_waiters.values():
            for ping_waiter in ping_waiters:
                ping_waiter.errback(SessionClosed("session closed"))
        self._ping_waiters.clear()
        while self._open_waiters:
            self._open_waiters.popleft().callback(None)
        if self._on_closed is not None:
            self._on_closed(reason)
        idle, self._idle_waiters = self._idle_waiters, []
        for idle_waiter in idle:
            idle_waiter.callback(None)
        waiters_closed, self._closed_waiters = self._closed_waiters, []
        for d in waiters_closed:
            d.callback(reason.value)

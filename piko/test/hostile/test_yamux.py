# -*- test-case-name: piko.test.hostile.test_yamux -*-
"""
Hostile yamux frames fed to a real :class:`piko.mux.session.Session` (the
server side of an upstream) over a StringTransport: each is a protocol error
answered with GoAway(1) and a close, or is ignored, and is bounded; other
sessions are untouched.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from piko.mux.errors import ProtocolError
from piko.mux.frames import HEADER, Flag, FrameType, GoAwayCode
from piko.mux.session import MAX_UNREAD_REPLIES, Session, SessionConfig
from piko.test.mux.helpers import RecorderFactory, frames_of

GO_AWAY_PROTOCOL_ERROR = HEADER.pack(0, FrameType.GO_AWAY, 0, 0, GoAwayCode.PROTOCOL_ERROR)


def frame(kind: int, flags: int, stream_id: int, length: int, payload: bytes = b"") -> bytes:
    return HEADER.pack(0, kind, flags, stream_id, length) + payload


class HostileYamuxTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.session, self.transport = self.make(client=True)
        self.factory = RecorderFactory()
        self.session.listen(self.factory)
        # A bystander session that must keep working whatever the first one is fed.
        self.other, self.other_transport = self.make(client=True)
        self.other.listen(RecorderFactory())

    def make(self, client: bool, **config: Any) -> tuple[Session, StringTransport]:
        session = Session(
            self.clock, client=client, config=SessionConfig(keepalive_interval=None, **config)
        )
        transport = StringTransport()
        session.makeConnection(transport)
        return session, transport

    def assertProtocolError(self, data: bytes, session: Session | None = None) -> None:
        session = session or self.session
        transport = self.transport
        session.dataReceived(data)
        self.assertTrue(session.closed)
        reason = session._close_reason
        assert reason is not None
        self.assertIsInstance(reason.value, ProtocolError)
        self.assertTrue(transport.value().endswith(GO_AWAY_PROTOCOL_ERROR))
        self.assertTrue(transport.disconnecting)
        self.assertEqual(session.stream_count, 0)
        self.assertBystanderServes()

    def assertBystanderServes(self) -> None:
        self.other_transport.clear()
        self.other.dataReceived(frame(FrameType.PING, Flag.SYN, 0, 7))
        self.assertEqual(self.other_transport.value(), frame(FrameType.PING, Flag.ACK, 0, 7))
        self.assertFalse(self.other.closed)

    def test_wrong_version(self) -> None:
        """A version other than 0 is a protocol error."""
        self.assertProtocolError(HEADER.pack(1, FrameType.PING, Flag.SYN, 0, 1))

    def test_wrong_type(self) -> None:
        """A frame type above GoAway is a protocol error."""
        self.assertProtocolError(HEADER.pack(0, 4, 0, 0, 0))

    def test_length_near_2_32(self) -> None:
        """A Data length near 2^32 is refused from its header, before any payload is awaited."""
        self.assertProtocolError(frame(FrameType.DATA, Flag.SYN, 2, 0xFFFFFFFF))

    def test_data_past_the_window(self) -> None:
        """More Data than an unread stream's window is a protocol error, on the header."""
        session, self.transport = self.make(client=True)
        session.dataReceived(frame(FrameType.WINDOW_UPDATE, Flag.SYN, 2, 0))
        session.dataReceived(frame(FrameType.DATA, 0, 2, 200 * 1024, b"x" * 200 * 1024))
        self.assertFalse(session.closed)
        self.assertProtocolError(frame(FrameType.DATA, 0, 2, 100 * 1024), session)

    def test_syn_on_live_id(self) -> None:
        """A second SYN for a live stream id is a protocol error ("duplicate stream")."""
        self.session.dataReceived(frame(FrameType.WINDOW_UPDATE, Flag.SYN, 2, 0))
        self.assertProtocolError(frame(FrameType.WINDOW_UPDATE, Flag.SYN, 2, 0))

    def test_syn_with_wrong_parity(self) -> None:
        """A peer opening a stream id of our parity (or 0) is a protocol error."""
        self.assertProtocolError(frame(FrameType.WINDOW_UPDATE, Flag.SYN, 1, 0))

    def test_data_on_unknown_and_closed_streams(self) -> None:
        """Data and window updates for unknown or finished streams are read and dropped."""
        session = self.session
        session.dataReceived(frame(FrameType.DATA, 0, 40, 5, b"hello"))
        session.dataReceived(frame(FrameType.WINDOW_UPDATE, 0, 40, 1000))
        session.dataReceived(frame(FrameType.WINDOW_UPDATE, Flag.SYN, 2, 0))
        session.dataReceived(frame(FrameType.WINDOW_UPDATE, Flag.RST, 2, 0))
        self.assertEqual(session.stream_count, 0)
        session.dataReceived(frame(FrameType.DATA, 0, 2, 5, b"late!"))
        self.assertFalse(session.closed)
        self.assertEqual(self.factory.built[0].received, b"")
        self.transport.clear()
        session.dataReceived(frame(FrameType.PING, Flag.SYN, 0, 9))
        self.assertEqual(self.transport.value(), frame(FrameType.PING, Flag.ACK, 0, 9))

    def test_syn_flood_bounded_by_backlog(self) -> None:
        """Opens beyond the accept backlog (no one accepting) are each refused with RST."""
        session, transport = self.make(client=False, accept_backlog=8)
        flood = b"".join(frame(FrameType.WINDOW_UPDATE, Flag.SYN, 2 * i + 1, 0) for i in range(100))
        session.dataReceived(flood)
        self.assertEqual(session.stream_count, 8)
        resets = [f for f in frames_of(transport.value()) if f.flags & Flag.RST]
        self.assertEqual(len(resets), 92)
        self.assertFalse(session.closed)
        self.assertBystanderServes()

    def test_ping_flood_answered_while_read(self) -> None:
        """A peer that pings a lot but reads the answers is answered every time."""
        self.session.dataReceived(
            b"".join(frame(FrameType.PING, Flag.SYN, 0, i) for i in range(5000))
        )
        self.assertEqual(len(frames_of(self.transport.value())), 5000)
        self.assertFalse(self.session.closed)

    def test_ping_flood_without_reading_ends_session(self) -> None:
        """A peer that floods pings while not reading (transport paused) is cut off, bounded."""
        session, transport = self.session, self.transport
        session.pauseProducing()
        pings = b"".join(frame(FrameType.PING, Flag.SYN, 0, i) for i in range(5000))
        self.assertProtocolError(pings)
        answers = [f for f in frames_of(transport.value()) if f.type == FrameType.PING]
        self.assertEqual(len(answers), MAX_UNREAD_REPLIES)

    def test_syn_flood_without_reading_ends_session(self) -> None:
        """Refused opens flooded while the peer does not read are bounded the same way."""
        session, transport = self.make(client=False, accept_backlog=1)
        self.transport = transport
        session.pauseProducing()
        flood = b"".join(
            frame(FrameType.WINDOW_UPDATE, Flag.SYN, 2 * i + 1, 0) for i in range(5000)
        )
        self.assertProtocolError(flood, session)
        self.assertTrue(transport.value().endswith(GO_AWAY_PROTOCOL_ERROR))
        self.assertLess(len(transport.value()), 12 * (MAX_UNREAD_REPLIES + 3))

    def test_pause_resets_the_reply_budget(self) -> None:
        """Once the peer reads again (the transport resumes), its reply budget starts afresh."""
        session = self.session
        for _ in range(3):
            session.pauseProducing()
            session.dataReceived(
                b"".join(frame(FrameType.PING, Flag.SYN, 0, i) for i in range(MAX_UNREAD_REPLIES))
            )
            session.resumeProducing()
        self.assertFalse(session.closed)

    def test_truncated_header_waits(self) -> None:
        """A header cut short is held (11 bytes at most) until the rest arrives."""
        data = frame(FrameType.PING, Flag.SYN, 0, 3)
        for byte in range(len(data)):
            self.session.dataReceived(data[byte : byte + 1])
        self.assertEqual(self.transport.value(), frame(FrameType.PING, Flag.ACK, 0, 3))

    def test_backlogged_stream_buffer_bounded_by_window(self) -> None:
        """Data for a stream nobody accepted yet is bounded by its window; more is an error."""
        session, transport = self.make(client=False)
        self.transport = transport
        session.dataReceived(frame(FrameType.WINDOW_UPDATE, Flag.SYN, 1, 0))
        window = 256 * 1024
        session.dataReceived(frame(FrameType.DATA, 0, 1, window, b"x" * window))
        self.assertFalse(session.closed)
        self.assertProtocolError(frame(FrameType.DATA, 0, 1, 1, b"x"), session)

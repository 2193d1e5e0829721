"""Tests for :mod:`piko.mux.session` and :mod:`piko.mux.stream`, without sockets."""

from __future__ import annotations

from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IConsumer, IPushProducer, ITransport
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from piko.mux.errors import (
    KeepAliveTimeout,
    ProtocolError,
    RemoteGoAway,
    SessionClosed,
    StreamOpenTimeout,
    StreamReset,
    WriteTimeout,
)
from piko.mux.frames import Flag, FrameType, encode_frame
from piko.mux.session import SessionConfig
from piko.mux.stream import HIGH_WATER
from piko.test.mux.helpers import (
    HalfCloseRecorder,
    Recorder,
    RecorderFactory,
    SessionPair,
    frames_of,
)

WINDOW = 256 * 1024


@implementer(IPushProducer)
class FakeProducer:
    """A push producer that records whether it is paused."""

    def __init__(self) -> None:
        self.paused = False
        self.stopped = False
        self.pauses = 0

    def pauseProducing(self) -> None:
        self.paused = True
        self.pauses += 1

    def resumeProducing(self) -> None:
        self.paused = False

    def stopProducing(self) -> None:
        self.stopped = True


class OpenAcceptTests(SynchronousTestCase):
    def test_data_both_ways(self) -> None:
        """A stream opened by the server carries data to the client's protocol and back."""
        pair = SessionPair()
        accepted = RecorderFactory()
        pair.client.listen(accepted)
        opener = Recorder()
        stream = pair.server.open_stream(opener)
        stream.write(b"hello")
        pair.pump()
        [server_side] = accepted.built
        self.assertEqual(bytes(server_side.received), b"hello")
        server_side.transport.write(b"world")
        pair.pump()
        self.assertEqual(bytes(opener.received), b"world")

    def test_stream_provides_transport_interfaces(self) -> None:
        """A stream is a full Twisted transport, consumer and push producer."""
        pair = SessionPair()
        stream = pair.server.open_stream(Recorder())
        for interface in (ITransport, IConsumer, IPushProducer):
            self.assertTrue(verifyObject(interface, stream))

    def test_server_ids_even_client_ids_odd(self) -> None:
        """The server opens even ids from 2, the client odd ids from 1."""
        pair = SessionPair()
        self.assertEqual(
            [pair.server.open_stream(Recorder()).stream_id for _ in range(3)], [2, 4, 6]
        )
        self.assertEqual(pair.client.open_stream(Recorder()).stream_id, 1)

    def test_syn_rides_first_data(self) -> None:
        """Data written in the opening turn carries the SYN: one frame, not two."""
        pair = SessionPair()
        pair.server.open_stream(Recorder()).write(b"GET /")
        pair.clock.advance(0)
        [frame] = frames_of(pair.take_server_output())
        self.assertEqual(
            (frame.type, frame.flags, frame.stream_id, frame.payload),
            (FrameType.DATA, Flag.SYN, 2, b"GET /"),
        )

    def test_lone_syn_sent_next_turn(self) -> None:
        """A stream opened without data sends its SYN as a WindowUpdate on the next turn."""
        pair = SessionPair()
        pair.server.open_stream(Recorder())
        self.assertEqual(pair.take_server_output(), b"")
        pair.clock.advance(0)
        self.assertEqual(pair.take_server_output(), bytes.fromhex("000100010000000200000000"))

    def test_go_identical_open(self) -> None:
        """Without coalescing, the open is Go's WindowUpdate|SYN followed by a plain Data frame."""
        pair = SessionPair(SessionConfig(coalesce_control=False))
        pair.server.open_stream(Recorder()).write(b"x")
        self.assertEqual(
            pair.take_server_output(),
            bytes.fromhex("000100010000000200000000") + encode_frame(FrameType.DATA, 0, 2, 1, b"x"),
        )

    def test_accept_acks(self) -> None:
        """Accepting a stream answers WindowUpdate|ACK, which settles the opener's timer."""
        pair = SessionPair(SessionConfig(coalesce_control=False))
        pair.client.listen(RecorderFactory())
        stream = pair.server.open_stream(Recorder())
        pair.client.dataReceived(pair.take_server_output())
        ack = pair.take_client_output()
        self.assertEqual(ack, bytes.fromhex("000100020000000200000000"))
        self.assertIsNotNone(stream._open_timer)
        pair.server.dataReceived(ack)
        self.assertIsNone(stream._open_timer)

    def test_ack_rides_on_the_response(self) -> None:
        """
        An accepted stream's ACK waits for its first Data frame (an agent's
        response) within ``control_delay``: one frame, not two.
        """
        pair = SessionPair()
        accepted = RecorderFactory()
        pair.client.listen(accepted)
        stream = pair.server.open_stream(Recorder())
        stream.write(b"GET /")
        pair.client.dataReceived(pair.take_server_output())
        pair.clock.advance(SessionConfig().control_delay / 2)
        self.assertEqual(pair.take_client_output(), b"")
        accepted.built[0].transport.write(b"200 OK")
        [frame] = frames_of(pair.take_client_output())
        self.assertEqual(
            (frame.type, frame.flags, frame.stream_id, frame.payload),
            (FrameType.DATA, Flag.ACK, 2, b"200 OK"),
        )
        pair.clock.advance(SessionConfig().control_delay)
        self.assertEqual(pair.take_client_output(), b"")

    def test_ack_alone_after_control_delay(self) -> None:
        """With nothing written, the ACK leaves alone once ``control_delay`` has passed."""
        pair = SessionPair()
        pair.client.listen(RecorderFactory())
        stream = pair.server.open_stream(Recorder())
        stream.write(b"x")
        pair.client.dataReceived(pair.take_server_output())
        pair.clock.advance(SessionConfig().control_delay - 0.001)
        self.assertEqual(pair.take_client_output(), b"")
        pair.clock.advance(0.001)
        ack = pair.take_client_output()
        self.assertEqual(ack, bytes.fromhex("000100020000000200000000"))
        pair.server.dataReceived(ack)
        self.assertIsNone(stream._open_timer)

    def test_held_acks_are_bounded(self) -> None:
        """At most MAX_HELD_CONTROL ACKs wait; one more sends them all in one write."""
        from piko.mux.session import MAX_HELD_CONTROL

        pair = SessionPair()
        pair.client.listen(RecorderFactory())
        for _ in range(MAX_HELD_CONTROL - 1):
            pair.server.open_stream(Recorder()).write(b"x")
        pair.client.dataReceived(pair.take_server_output())
        self.assertEqual(pair.take_client_output(), b"")
        pair.server.open_stream(Recorder()).write(b"x")
        writes: list[bytes] = []
        pair.client_transport.writeSequence = lambda seq: writes.append(b"".join(seq))  # type: ignore[method-assign]
        pair.client.dataReceived(pair.take_server_output())
        [write] = writes
        acks = frames_of(write)
        self.assertEqual(len(acks), MAX_HELD_CONTROL)
        self.assertTrue(all(f.flags == Flag.ACK for f in acks))

    def test_closing_fin_rides_with_next_frame(self) -> None:
        """
        The FIN that completes a stream the peer already closed goes out with
        the next frame of the same turn, in one write, or alone at its end.
        """
        pair = SessionPair()
        accepted = RecorderFactory()
        pair.client.listen(accepted)
        first = pair.server.open_stream(Recorder())
        first.write(b"one")
        pair.pump()
        accepted.built[0].transport.write(b"reply")
        accepted.built[0].transport.loseConnection()
        pair.server.dataReceived(pair.take_client_output())
        self.assertTrue(first._fin_received)
        writes: list[list[bytes]] = []
        pair.server_transport.writeSequence = writes.append  # type: ignore[method-assign]
        first.loseConnection()
        self.assertTrue(first.finished)
        self.assertEqual(pair.take_server_output(), b"")
        pair.server.open_stream(Recorder()).write(b"two")
        [parts] = writes
        fin, data = frames_of(b"".join(parts))
        self.assertEqual(
            (fin.type, fin.flags, fin.stream_id), (FrameType.WINDOW_UPDATE, Flag.FIN, 2)
        )
        self.assertEqual((data.flags, data.stream_id, data.payload), (Flag.SYN, 4, b"two"))
        # Alone, it leaves at the end of the turn.
        del pair.server_transport.writeSequence
        second = pair.server.open_stream(Recorder())
        second.write(b"three")
        pair.pump()
        [stream] = [p for p in accepted.built if p.transport.stream_id == 6]
        stream.transport.loseConnection()
        pair.server.dataReceived(pair.take_client_output())
        second.loseConnection()
        self.assertEqual(pair.take_server_output(), b"")
        pair.clock.advance(0)
        [fin] = frames_of(pair.take_server_output())
        self.assertEqual((fin.flags, fin.stream_id), (Flag.FIN, 6))

    def test_unwaited_fin_waits_for_control_delay(self) -> None:
        """
        loseConnectionUnwaited's FIN (the peer closed already) survives the end
        of the turn and rides with a frame written within ``control_delay``, or
        leaves alone when it runs out.
        """
        delay = SessionConfig().control_delay
        for next_frame in (True, False):
            pair = SessionPair()
            accepted = RecorderFactory()
            pair.client.listen(accepted)
            stream = pair.server.open_stream(HalfCloseRecorder())
            stream.write(b"request")
            pair.pump()
            accepted.built[0].transport.write(b"response")
            accepted.built[0].transport.loseConnection()
            pair.server.dataReceived(pair.take_client_output())
            stream.loseConnectionUnwaited()
            self.assertTrue(stream.finished)
            pair.clock.advance(0)
            self.assertEqual(pair.take_server_output(), b"")
            if next_frame:
                pair.clock.advance(delay / 2)
                pair.server.open_stream(Recorder()).write(b"next")
                fin, data = frames_of(pair.take_server_output())
                self.assertEqual(data.payload, b"next")
            else:
                pair.clock.advance(delay)
                [fin] = frames_of(pair.take_server_output())
            self.assertEqual(
                (fin.type, fin.flags, fin.stream_id), (FrameType.WINDOW_UPDATE, Flag.FIN, 2)
            )

    def test_unwaited_fin_when_fin_follows_the_response(self) -> None:
        """
        A protocol that closes unwaited from ``dataReceived`` of the response's
        last Data frame, with the peer's FIN right behind it in the same read
        (a proxied response that is complete), already counts as closing after
        the peer: its FIN waits for a frame to ride with.
        """

        class CloseOnData(HalfCloseRecorder):
            def dataReceived(self, data: bytes) -> None:
                super().dataReceived(data)
                self.transport.loseConnectionUnwaited()

        pair = SessionPair()
        accepted = RecorderFactory()
        pair.client.listen(accepted)
        opener = CloseOnData()
        stream = pair.server.open_stream(opener)
        stream.write(b"request")
        pair.pump()
        agent = accepted.built[0].transport
        agent.cork()
        agent.write(b"response")
        agent.loseConnection()
        agent.uncork()
        pair.server.dataReceived(pair.take_client_output())
        self.assertEqual(bytes(opener.received), b"response")
        self.assertTrue(stream.finished)
        pair.clock.advance(0)
        self.assertEqual(pair.take_server_output(), b"")
        pair.clock.advance(SessionConfig().control_delay)
        [fin] = frames_of(pair.take_server_output())
        self.assertEqual((fin.flags, fin.stream_id), (Flag.FIN, 2))

    def test_unwaited_fin_sent_at_once_when_no_fin_follows(self) -> None:
        """
        Closing unwaited from ``dataReceived`` when the peer's FIN is not in the same read
        (it did not close, or the frame behind is another stream's) sends the FIN at once.
        """

        class CloseOnData(HalfCloseRecorder):
            def dataReceived(self, data: bytes) -> None:
                super().dataReceived(data)
                self.transport.loseConnectionUnwaited()

        for other_stream_fin in (False, True):
            pair = SessionPair()
            accepted = RecorderFactory()
            pair.client.listen(accepted)
            opener = CloseOnData()
            stream = pair.server.open_stream(opener)
            stream.write(b"request")
            pair.pump()
            accepted.built[0].transport.write(b"response")
            wire = pair.take_client_output()
            if other_stream_fin:
                wire += encode_frame(FrameType.WINDOW_UPDATE, Flag.FIN, 4, 0)
            pair.server.dataReceived(wire)
            self.assertEqual(bytes(opener.received), b"response")
            self.assertFalse(stream.finished)
            [fin] = frames_of(pair.take_server_output())
            self.assertEqual(
                (fin.type, fin.flags, fin.stream_id), (FrameType.WINDOW_UPDATE, Flag.FIN, 2)
            )

    def test_backlog_waits_for_listen(self) -> None:
        """Streams that arrive before anyone listens are accepted, with their data, on listen."""
        pair = SessionPair()
        pair.server.open_stream(Recorder()).write(b"early")
        pair.pump()
        factory = RecorderFactory()
        pair.client.listen(factory)
        [protocol] = factory.built
        self.assertEqual(bytes(protocol.received), b"early")

    def test_backlog_overflow_resets(self) -> None:
        """The 257th stream waiting to be accepted is refused with RST."""
        pair = SessionPair()
        openers = [Recorder() for _ in range(257)]
        for opener in openers:
            pair.server.open_stream(opener)
        pair.pump()
        self.assertIsNone(openers[255].lost)
        self.assertIsInstance(openers[256].lost.value, StreamReset)
        self.assertFalse(pair.server.closed)

    def test_open_slots_bounded_by_backlog(self) -> None:
        """Opens beyond 256 unacknowledged ones wait until an ACK arrives."""
        pair = SessionPair()
        for _ in range(256):
            pair.server.open_stream(Recorder())
        waiting = pair.server.wait_for_open_slot()
        self.assertNoResult(waiting)
        pair.client.listen(RecorderFactory())
        pair.pump()
        self.successResultOf(waiting)

    def test_open_after_close_fails(self) -> None:
        """Opening a stream on a closed session raises SessionClosed."""
        pair = SessionPair()
        pair.server.close()
        self.assertRaises(SessionClosed, pair.server.open_stream, Recorder())


class CloseTests(SynchronousTestCase):
    def test_half_close_then_full_close(self) -> None:
        """FIN half-closes: the peer reads EOF, still writes back, and both ends close cleanly."""
        pair = SessionPair()
        accepted = RecorderFactory(HalfCloseRecorder)
        pair.client.listen(accepted)
        opener = HalfCloseRecorder()
        stream = pair.server.open_stream(opener)
        stream.write(b"request")
        stream.loseConnection()
        pair.pump()
        [agent] = accepted.built
        assert isinstance(agent, HalfCloseRecorder)
        self.assertTrue(agent.read_closed)
        self.assertTrue(opener.write_closed)
        self.assertIsNone(agent.lost)
        agent.transport.write(b"response")
        agent.transport.loseConnection()
        pair.pump()
        self.assertEqual(bytes(opener.received), b"response")
        opener.lost.trap(ConnectionDone)
        agent.lost.trap(ConnectionDone)
        self.assertEqual((pair.server.stream_count, pair.client.stream_count), (0, 0))

    def test_eof_closes_plain_protocol(self) -> None:
        """A protocol that cannot half-close answers the peer's FIN by closing too."""
        pair = SessionPair()
        accepted = RecorderFactory()
        pair.client.listen(accepted)
        opener = Recorder()
        pair.server.open_stream(opener).loseConnection()
        pair.pump()
        [agent] = accepted.built
        agent.lost.trap(ConnectionDone)
        opener.lost.trap(ConnectionDone)

    def test_fin_waits_for_buffered_data(self) -> None:
        """A close after more data than the window sends FIN only with the last byte."""
        pair = SessionPair()
        accepted = RecorderFactory()
        pair.client.listen(accepted)
        stream = pair.server.open_stream(Recorder())
        payload = bytes(range(256)) * 4096  # 1 MiB
        stream.write(payload)
        stream.loseConnection()
        pair.pump()
        [agent] = accepted.built
        self.assertEqual(bytes(agent.received), payload)
        agent.lost.trap(ConnectionDone)

    def test_cork_sends_writes_and_fin_as_one_write(self) -> None:
        """
        Writes and a close made while corked leave in one transport write: one Data frame,
        then the FIN as a WindowUpdate of its own (never a FIN on a Data frame with payload).
        """
        pair = SessionPair()
        accepted = RecorderFactory(HalfCloseRecorder)
        pair.client.listen(accepted)
        opener = Recorder()
        stream = pair.server.open_stream(opener)
        pair.pump()
        writes: list[bytes] = []
        pair.server_transport.writeSequence = lambda seq: writes.append(b"".join(seq))  # type: ignore[method-assign]
        stream.cork()
        stream.write(b"head ")
        stream.write(b"body")
        stream.loseConnection()
        self.assertEqual((writes, pair.take_server_output()), ([], b""))
        stream.uncork()
        [write] = writes
        data, fin = frames_of(write)
        self.assertEqual((data.type, data.flags, data.payload), (FrameType.DATA, 0, b"head body"))
        self.assertEqual(
            (fin.type, fin.flags, fin.stream_id, fin.length),
            (FrameType.WINDOW_UPDATE, Flag.FIN, stream.stream_id, 0),
        )
        pair.client.dataReceived(write)
        [agent] = accepted.built
        assert isinstance(agent, HalfCloseRecorder)
        self.assertEqual(bytes(agent.received), b"head body")
        self.assertTrue(agent.read_closed)

    def test_fin_never_on_data_with_payload(self) -> None:
        """
        However a stream closes (right after a write, after more than the window, corked,
        with a pending ACK), no Data frame with a payload carries FIN: Go's yamux applies
        flags before it copies the payload, and a reader woken in between reads EOF and
        loses the payload.
        """

        def close_after_write(stream):
            stream.write(b"x" * 1000)
            stream.loseConnection()

        def close_after_window(stream):
            stream.write(bytes(WINDOW + 70_000))
            stream.loseConnection()

        def close_corked(stream):
            stream.cork()
            stream.write(b"response")
            stream.loseConnectionUnwaited()
            stream.uncork()

        for close in (close_after_write, close_after_window, close_corked):
            pair = SessionPair()
            accepted = RecorderFactory(HalfCloseRecorder)
            pair.client.listen(accepted)
            pair.server.open_stream(Recorder()).write(b"request")
            pair.pump()
            [agent] = accepted.built
            output = bytearray()
            close(agent.transport)  # the agent's stream: its first frame carries the ACK
            for _ in range(10):
                chunk = pair.take_client_output()
                output += chunk
                pair.server.dataReceived(chunk)
                pair.client.dataReceived(pair.take_server_output())
            frames = frames_of(bytes(output))
            fin_on_data = [
                f for f in frames if f.type == FrameType.DATA and f.payload and f.flags & Flag.FIN
            ]
            self.assertEqual(fin_on_data, [], close.__name__)
            self.assertEqual(
                [f.flags & Flag.FIN for f in frames if f.flags & Flag.FIN],
                [Flag.FIN],
                close.__name__,
            )

    def test_uncork_without_writes_sends_nothing(self) -> None:
        """Uncorking a stream nothing was written to sends no frame."""
        pair = SessionPair()
        pair.client.listen(RecorderFactory())
        stream = pair.server.open_stream(Recorder())
        pair.pump()
        stream.cork()
        stream.uncork()
        stream.uncork()
        self.assertEqual(pair.take_server_output(), b"")

    def test_abort_resets_peer(self) -> None:
        """abortConnection sends RST; the peer's protocol loses the stream with StreamReset."""
        pair = SessionPair()
        accepted = RecorderFactory()
        pair.client.listen(accepted)
        stream = pair.server.open_stream(Recorder())
        stream.write(b"x")
        pair.pump()
        stream.abortConnection()
        pair.pump()
        [agent] = accepted.built
        self.assertIsInstance(agent.lost.value, StreamReset)

    def test_stop_producing_still_sends_what_was_written(self) -> None:
        """
        ``stopProducing`` closes as TCP's does: data waiting for window is still
        sent, then FIN, and the peer reads all of it and a clean EOF.

        A TCP transport calls ``stopProducing`` on its registered producer when it
        is lost; a splice whose local service wrote its last bytes and closed thus
        stopped the stream feeding the other side, and a reset there cut the reply
        at a window boundary (issue 11, the TCP half-close through ``forward``).
        """
        pair = SessionPair()
        accepted = RecorderFactory(HalfCloseRecorder)
        pair.client.listen(accepted)
        opener = HalfCloseRecorder()
        stream = pair.server.open_stream(opener)
        stream.write(b"q")
        pair.pump()
        [agent] = accepted.built
        assert isinstance(agent, HalfCloseRecorder)
        agent.transport.pauseProducing()  # a slow reader: the window runs out
        payload = bytes(range(256)) * 4096  # 1 MiB, four windows
        stream.write(payload)
        pair.pump()
        self.assertGreater(len(stream._send_buffer), 0)
        stream.stopProducing()
        pair.pump()
        agent.transport.resumeProducing()
        pair.pump()
        self.assertEqual(bytes(agent.received), b"q" + payload)
        self.assertTrue(agent.read_closed)
        self.assertIsNone(agent.lost)

    def test_stop_producing_then_data_resets(self) -> None:
        """After ``stopProducing`` and our FIN, data from the peer has no reader: RST."""
        pair = SessionPair()
        accepted = RecorderFactory(HalfCloseRecorder)
        pair.client.listen(accepted)
        opener = HalfCloseRecorder()
        stream = pair.server.open_stream(opener)
        stream.write(b"q")
        pair.pump()
        [agent] = accepted.built
        assert isinstance(agent, HalfCloseRecorder)
        stream.stopProducing()
        pair.pump()
        self.assertTrue(agent.read_closed)
        agent.transport.write(b"more")
        pair.pump()
        self.assertEqual(bytes(opener.received), b"")
        self.assertIsInstance(opener.lost.value, StreamReset)
        self.assertIsInstance(agent.lost.value, StreamReset)
        self.assertEqual((pair.server.stream_count, pair.client.stream_count), (0, 0))

    def test_stop_producing_after_peer_fin_ends_the_stream(self) -> None:
        """With the peer's FIN in, ``stopProducing`` ends the stream once our FIN is out."""
        pair = SessionPair()
        accepted = RecorderFactory(HalfCloseRecorder)
        pair.client.listen(accepted)
        opener = HalfCloseRecorder()
        stream = pair.server.open_stream(opener)
        stream.write(b"q")
        pair.pump()
        [agent] = accepted.built
        agent.transport.write(b"answer")
        agent.transport.loseConnection()
        pair.pump()
        self.assertTrue(opener.read_closed)
        stream.stopProducing()
        pair.pump()
        opener.lost.trap(ConnectionDone)
        agent.lost.trap(ConnectionDone)
        self.assertEqual((pair.server.stream_count, pair.client.stream_count), (0, 0))

    def test_close_timeout_resets(self) -> None:
        """A half-closed stream whose peer never FINs is reset after the close timeout."""
        pair = SessionPair()
        accepted = RecorderFactory(HalfCloseRecorder)
        pair.client.listen(accepted)
        opener = Recorder()
        pair.server.open_stream(opener).loseConnection()
        pair.pump()
        pair.clock.advance(SessionConfig().control_delay)  # the held ACK goes out
        pair.pump()
        pair.clock.advance(300)
        self.assertIsInstance(opener.lost.value, StreamReset)
        pair.pump()
        self.assertIsInstance(accepted.built[0].lost.value, StreamReset)

    def test_close_timeout_counts_from_close_not_from_fin(self) -> None:
        """
        A close whose FIN waits behind data the peer never grants window for is reset
        after the close timeout, counted from ``loseConnection`` as Go's ``Close`` does.
        """
        pair = SessionPair()
        accepted = RecorderFactory(HalfCloseRecorder)
        pair.client.listen(accepted)
        opener = Recorder()
        stream = pair.server.open_stream(opener)
        stream.write(b"q")
        pair.pump()
        pair.clock.advance(SessionConfig().control_delay)  # the held ACK goes out
        pair.pump()
        [agent] = accepted.built
        agent.transport.pauseProducing()  # never reads again: no window comes back
        stream.write(b"x" * (2 * WINDOW))
        stream.loseConnection()
        pair.pump()
        self.assertIsNone(opener.lost)
        pair.clock.advance(300)
        self.assertIsInstance(opener.lost.value, StreamReset)
        self.assertEqual(pair.server.stream_count, 0)

    def test_session_close_ends_streams(self) -> None:
        """Closing the session ends every stream with SessionClosed and drops the transport."""
        pair = SessionPair()
        opener = Recorder()
        pair.server.open_stream(opener)
        pair.server.close()
        self.assertIsInstance(opener.lost.value, SessionClosed)
        self.assertTrue(pair.server_transport.disconnecting)
        self.assertIsInstance(self.successResultOf(pair.server.when_closed()), SessionClosed)


class FlowControlTests(SynchronousTestCase):
    def test_window_exhaustion_then_resumption(self) -> None:
        """A paused reader stops the sender at exactly one window; resuming delivers the rest."""
        pair = SessionPair()
        accepted = RecorderFactory()
        pair.client.listen(accepted)
        opener = Recorder()
        stream = pair.server.open_stream(opener)
        producer = FakeProducer()
        stream.registerProducer(producer, True)
        stream.write(b"a")
        pair.pump()
        [agent] = accepted.built
        agent.transport.pauseProducing()
        payload = b"b" * (WINDOW * 3)
        stream.write(payload)
        pair.pump()
        self.assertEqual(len(agent.received), 1)
        self.assertTrue(producer.paused)
        self.assertEqual(stream._send_window, 0)
        self.assertEqual(len(stream._send_buffer), 3 * WINDOW - (WINDOW - 1))
        agent.transport.resumeProducing()
        pair.pump()
        self.assertEqual(bytes(agent.received), b"a" + payload)
        self.assertFalse(producer.paused)

    def test_window_granted_at_half(self) -> None:
        """Window is granted back in a delta once half the window has been consumed."""
        pair = SessionPair()
        pair.client.listen(RecorderFactory())
        stream = pair.server.open_stream(Recorder())
        pair.pump()
        stream.write(b"x" * (WINDOW // 2 - 1))
        pair.client.dataReceived(pair.take_server_output())
        self.assertEqual(frames_of(pair.take_client_output()), [])
        stream.write(b"x")
        pair.client.dataReceived(pair.take_server_output())
        [update] = frames_of(pair.take_client_output())
        self.assertEqual((update.type, update.length), (FrameType.WINDOW_UPDATE, WINDOW // 2))

    def test_larger_window_granted_on_open(self) -> None:
        """A larger max_stream_window is granted in the SYN's delta; the peer may then fill it."""
        config = SessionConfig(max_stream_window=4 * WINDOW)
        pair = SessionPair(config)
        pair.client.listen(RecorderFactory())
        opener = Recorder()
        pair.server.open_stream(opener)
        [syn] = frames_of(pair.take_server_output())
        self.assertEqual((syn.flags, syn.length), (Flag.SYN, 3 * WINDOW))
        pair.client.dataReceived(encode_frame(*syn))
        pair.server.dataReceived(pair.take_client_output())
        stream = pair.client._streams[2]
        self.assertEqual(stream._send_window, 4 * WINDOW)
        stream.write(b"z" * 4 * WINDOW)
        pair.pump()
        self.assertEqual(len(opener.received), 4 * WINDOW)
        self.assertFalse(pair.server.closed)

    def test_window_overflow_is_protocol_error(self) -> None:
        """Data past the advertised window gets GoAway(1) and the session closes."""
        pair = SessionPair()
        pair.client.listen(RecorderFactory())
        pair.client.dataReceived(encode_frame(FrameType.WINDOW_UPDATE, Flag.SYN, 2, 0))
        pair.client._streams[2].pauseProducing()
        chunk = b"z" * (WINDOW // 2 + 1)
        pair.client.dataReceived(encode_frame(FrameType.DATA, 0, 2, len(chunk), chunk))
        pair.client.dataReceived(encode_frame(FrameType.DATA, 0, 2, len(chunk), chunk))
        self.assertIn(encode_frame(FrameType.GO_AWAY, 0, 0, 1), pair.take_client_output())
        self.assertTrue(pair.client.closed)
        self.assertTrue(pair.client_transport.disconnecting)
        self.assertIsInstance(self.successResultOf(pair.client.when_closed()), ProtocolError)

    def test_window_overflow_found_from_header(self) -> None:
        """A Data header longer than the window is refused before any of its payload arrives."""
        pair = SessionPair()
        accepted = RecorderFactory()
        pair.client.listen(accepted)
        pair.client.dataReceived(encode_frame(FrameType.WINDOW_UPDATE, Flag.SYN, 2, 0))
        header = encode_frame(FrameType.DATA, 0, 2, WINDOW + 1)
        pair.client.dataReceived(header)
        self.assertIn(encode_frame(FrameType.GO_AWAY, 0, 0, 1), pair.take_client_output())
        self.assertTrue(pair.client.closed)
        self.assertEqual(len(accepted.built[0].received), 0)

    def test_payload_delivered_as_it_arrives(self) -> None:
        """A Data payload split across reads reaches the protocol piece by piece, FIN last."""
        pair = SessionPair()
        accepted = RecorderFactory(HalfCloseRecorder)
        pair.client.listen(accepted)
        wire = encode_frame(FrameType.DATA, Flag.SYN | Flag.FIN, 2, 10, b"0123456789")
        wire += encode_frame(FrameType.PING, Flag.SYN, 0, 7)
        pair.client.dataReceived(wire[:5])
        self.assertEqual(accepted.built, [])
        pair.client.dataReceived(wire[5:15])
        [agent] = accepted.built
        assert isinstance(agent, HalfCloseRecorder)
        self.assertEqual(bytes(agent.received), b"012")
        self.assertFalse(agent.read_closed)
        pair.client.dataReceived(wire[15:22])
        self.assertEqual(bytes(agent.received), b"0123456789")
        self.assertTrue(agent.read_closed)
        pair.take_client_output()
        pair.client.dataReceived(wire[22:30])
        self.assertEqual(pair.take_client_output(), b"")
        pair.client.dataReceived(wire[30:])
        self.assertEqual(
            frames_of(pair.take_client_output()), [(FrameType.PING, Flag.ACK, 0, 7, b"")]
        )

    def test_byte_at_a_time(self) -> None:
        """Frames fed one byte at a time arrive whole and in order."""
        pair = SessionPair()
        accepted = RecorderFactory()
        pair.client.listen(accepted)
        wire = encode_frame(FrameType.WINDOW_UPDATE, Flag.SYN, 2, 0)
        wire += encode_frame(FrameType.DATA, 0, 2, 3, b"abc")
        wire += encode_frame(FrameType.DATA, 0, 4, 0) + encode_frame(FrameType.DATA, 0, 2, 2, b"de")
        for i in range(len(wire)):
            pair.client.dataReceived(wire[i : i + 1])
        self.assertEqual(bytes(accepted.built[0].received), b"abcde")
        self.assertFalse(pair.client.closed)

    def test_whole_read_passed_without_copy(self) -> None:
        """A read that is entirely payload reaches the protocol as the very same object."""
        pair = SessionPair()
        seen: list[bytes] = []
        accepted = RecorderFactory()
        pair.client.listen(accepted)
        pair.client.dataReceived(encode_frame(FrameType.DATA, Flag.SYN, 2, 8))
        [agent] = accepted.built
        agent.dataReceived = seen.append  # type: ignore[method-assign,assignment]
        piece = b"p" * 8
        pair.client.dataReceived(piece)
        self.assertIs(seen[0], piece)

    def test_unknown_stream_payload_skipped(self) -> None:
        """The payload of a Data frame for an unknown stream is skipped, even split across reads."""
        pair = SessionPair()
        accepted = RecorderFactory()
        pair.client.listen(accepted)
        wire = encode_frame(FrameType.DATA, 0, 8, 4, b"zzzz")
        wire += encode_frame(FrameType.DATA, Flag.SYN, 2, 2, b"ok")
        pair.client.dataReceived(wire[:14])
        pair.client.dataReceived(wire[14:])
        self.assertEqual(bytes(accepted.built[0].received), b"ok")
        self.assertFalse(pair.client.closed)

    def test_transport_backpressure_holds_streams(self) -> None:
        """While the transport is paused stream data waits; producers pause past their mark."""
        pair = SessionPair()
        stream = pair.server.open_stream(Recorder())
        producer = FakeProducer()
        stream.registerProducer(producer, True)
        pair.clock.advance(0)
        pair.take_server_output()
        pair.server.pauseProducing()
        stream.write(b"held")
        self.assertEqual(pair.take_server_output(), b"")
        self.assertFalse(producer.paused)
        stream.write(b"x" * HIGH_WATER)
        self.assertTrue(producer.paused)
        pair.server.resumeProducing()
        payload = b"".join(frame.payload for frame in frames_of(pair.take_server_output()))
        self.assertEqual(payload, b"held" + b"x" * HIGH_WATER)
        self.assertFalse(producer.paused)

    def test_producer_resumed_when_last_frame_fills_transport(self) -> None:
        """A drained stream resumes its producer even if its last frame paused the session."""
        pair = SessionPair()
        stream = pair.server.open_stream(Recorder())
        producer = FakeProducer()
        stream.registerProducer(producer, True)
        pair.server.pauseProducing()
        stream.write(b"x" * (HIGH_WATER + 1))
        self.assertTrue(producer.paused)
        write_sequence = pair.server_transport.writeSequence

        def write_then_fill(data: list[bytes]) -> None:
            write_sequence(data)
            pair.server.pauseProducing()

        pair.server_transport.writeSequence = write_then_fill  # type: ignore[method-assign]
        pair.server.resumeProducing()
        self.assertEqual(len(stream._send_buffer), 0)
        self.assertTrue(pair.server.is_paused)
        self.assertFalse(producer.paused)

    def test_write_timeout_spans_repeated_pauses(self) -> None:
        """Short pauses do not add up to a write timeout; one long pause does."""
        pair = SessionPair()
        for _ in range(5):
            pair.server.pauseProducing()
            pair.clock.advance(4)
            pair.server.resumeProducing()
        self.assertFalse(pair.server.closed)
        pair.server.pauseProducing()
        pair.clock.advance(9.9)
        self.assertFalse(pair.server.closed)
        pair.clock.advance(0.1)
        self.assertTrue(pair.server.closed)

    def test_self_resuming_producer_paused_again(self) -> None:
        """A producer that resumes itself is paused again by the next write over the mark."""
        pair = SessionPair()
        stream = pair.server.open_stream(Recorder())
        pair.server.pauseProducing()
        producer = FakeProducer()
        stream.registerProducer(producer, True)
        stream.write(b"x" * (HIGH_WATER + 1))
        self.assertTrue(producer.paused)
        producer.resumeProducing()
        stream.write(b"x")
        self.assertTrue(producer.paused)
        self.assertEqual(producer.pauses, 2)

    def test_write_timeout(self) -> None:
        """A transport that stays paused past the write timeout kills the session."""
        pair = SessionPair()
        pair.server.pauseProducing()
        pair.clock.advance(10)
        self.assertIsInstance(self.successResultOf(pair.server.when_closed()), WriteTimeout)


class KeepaliveTests(SynchronousTestCase):
    def test_ping_answered(self) -> None:
        """A ping is answered with Ping|ACK carrying the same value."""
        pair = SessionPair()
        pair.client.dataReceived(encode_frame(FrameType.PING, Flag.SYN, 0, 41))
        self.assertEqual(pair.take_client_output(), encode_frame(FrameType.PING, Flag.ACK, 0, 41))

    def test_keepalive_every_interval(self) -> None:
        """Each side pings after 30 s with ids 0, 1, ... like Go."""
        pair = SessionPair()
        pair.clock.advance(30)
        self.assertEqual(pair.take_server_output(), encode_frame(FrameType.PING, Flag.SYN, 0, 0))
        pair.server.dataReceived(encode_frame(FrameType.PING, Flag.ACK, 0, 0))
        pair.clock.advance(30)
        self.assertEqual(pair.take_server_output(), encode_frame(FrameType.PING, Flag.SYN, 0, 1))

    def test_ping_rtt(self) -> None:
        """ping() fires with the round trip time once the answer arrives."""
        pair = SessionPair()
        d = pair.server.ping()
        pair.clock.advance(0.25)
        pair.pump()
        self.assertEqual(self.successResultOf(d), 0.25)

    def test_unanswered_ping_kills_session(self) -> None:
        """No answer within 10 s closes the session with KeepAliveTimeout."""
        pair = SessionPair()
        opener = Recorder()
        pair.server.open_stream(opener)
        pair.clock.advance(30)
        pair.clock.advance(10)
        self.assertTrue(pair.server.closed)
        self.assertIsInstance(opener.lost.value, SessionClosed)
        self.assertIsInstance(self.successResultOf(pair.server.when_closed()), KeepAliveTimeout)

    def test_keepalive_survives_busy_peer_that_sends(self) -> None:
        """
        A ping whose answer is late while the peer's bytes keep arriving (its reactor, or
        ours, busy with large heads) does not end the session: the bytes count as liveness.
        """
        pair = SessionPair()
        pair.clock.advance(30)
        self.assertEqual(pair.take_server_output(), encode_frame(FrameType.PING, Flag.SYN, 0, 0))
        pair.clock.advance(5)
        # Stream data from the peer, not the answer.
        pair.server.dataReceived(encode_frame(FrameType.WINDOW_UPDATE, Flag.SYN, 1, 0))
        pair.clock.advance(5)
        self.assertFalse(pair.server.closed)
        pair.clock.advance(4)
        pair.server.dataReceived(encode_frame(FrameType.PING, Flag.ACK, 0, 0))
        pair.clock.advance(30)
        self.assertFalse(pair.server.closed)

    def test_keepalive_still_ends_silent_peer(self) -> None:
        """Once the peer's bytes stop, the unanswered ping ends the session one timeout later."""
        pair = SessionPair()
        pair.clock.advance(30)
        pair.clock.advance(5)
        pair.server.dataReceived(encode_frame(FrameType.WINDOW_UPDATE, Flag.SYN, 1, 0))
        pair.clock.advance(5)
        self.assertFalse(pair.server.closed)
        pair.clock.advance(10)
        self.assertTrue(pair.server.closed)
        self.assertIsInstance(self.successResultOf(pair.server.when_closed()), KeepAliveTimeout)

    def test_unacknowledged_open_kills_session(self) -> None:
        """A stream not acknowledged within 75 s closes the whole session, as Go does."""
        pair = SessionPair(SessionConfig(keepalive_interval=None))
        pair.server.open_stream(Recorder())
        pair.clock.advance(75)
        self.assertIsInstance(self.successResultOf(pair.server.when_closed()), StreamOpenTimeout)


class GoAwayTests(SynchronousTestCase):
    def test_remote_go_away_normal(self) -> None:
        """After the peer's GoAway(0) new opens fail while existing streams go on."""
        pair = SessionPair()
        accepted = RecorderFactory()
        pair.client.listen(accepted)
        stream = pair.server.open_stream(Recorder())
        pair.pump()
        pair.client.go_away()
        pair.pump()
        self.assertRaises(RemoteGoAway, pair.server.open_stream, Recorder())
        stream.write(b"still here")
        pair.pump()
        self.assertEqual(bytes(accepted.built[0].received), b"still here")

    def test_local_go_away_refuses_new_streams(self) -> None:
        """After our own GoAway, a SYN from the peer is answered with RST."""
        pair = SessionPair()
        pair.client.listen(RecorderFactory())
        pair.client.go_away()
        pair.client.dataReceived(encode_frame(FrameType.WINDOW_UPDATE, Flag.SYN, 2, 0))
        output = frames_of(pair.take_client_output())
        self.assertEqual(output[-1][:3], (FrameType.WINDOW_UPDATE, Flag.RST, 2))

    def test_go_away_errors_end_session(self) -> None:
        """GoAway with code 1, 2 or an unknown code ends the receiving session."""
        for code in (1, 2, 7):
            pair = SessionPair()
            pair.server.dataReceived(encode_frame(FrameType.GO_AWAY, 0, 0, code))
            self.assertTrue(pair.server.closed)
            self.assertTrue(pair.server_transport.disconnecting)


class HostileInputTests(SynchronousTestCase):
    def test_unknown_stream_drained(self) -> None:
        """Data for an unknown stream is discarded and the session goes on."""
        pair = SessionPair()
        pair.client.dataReceived(encode_frame(FrameType.DATA, 0, 8, 3, b"abc"))
        self.assertFalse(pair.client.closed)
        self.assertEqual(pair.take_client_output(), b"")

    def test_duplicate_syn_is_protocol_error(self) -> None:
        """A SYN on a live stream id gets GoAway(1)."""
        pair = SessionPair()
        pair.client.listen(RecorderFactory())
        syn = encode_frame(FrameType.WINDOW_UPDATE, Flag.SYN, 2, 0)
        pair.client.dataReceived(syn + syn)
        self.assertTrue(pair.client.closed)
        self.assertIn(encode_frame(FrameType.GO_AWAY, 0, 0, 1), pair.take_client_output())

    def test_wrong_parity_is_protocol_error(self) -> None:
        """A peer opening an id of our own parity breaks the protocol."""
        pair = SessionPair()
        pair.client.dataReceived(encode_frame(FrameType.WINDOW_UPDATE, Flag.SYN, 3, 0))
        self.assertTrue(pair.client.closed)

    def test_bad_version_is_protocol_error(self) -> None:
        """A frame with version 1 ends the session with GoAway(1)."""
        pair = SessionPair()
        pair.client.dataReceived(bytes.fromhex("010100010000000200000000"))
        self.assertTrue(pair.client.closed)
        self.assertEqual(pair.take_client_output(), encode_frame(FrameType.GO_AWAY, 0, 0, 1))


class FaultIsolationTests(SynchronousTestCase):
    """An exception from one stream's protocol resets that stream and nothing else."""

    def test_raising_protocol_resets_only_its_stream(self) -> None:
        """
        A protocol that raises in ``dataReceived`` gets its stream reset (and
        ``connectionLost``); the session and a second stream on it go on, and the
        failure is logged.
        """

        class Faulty(Recorder):
            def dataReceived(self, data: bytes) -> None:
                if data == b"boom":
                    raise ZeroDivisionError("bug in a user's protocol")
                super().dataReceived(data)

        pair = SessionPair()
        accepted = RecorderFactory(Faulty)
        pair.client.listen(accepted)
        bad_opener, good_opener = Recorder(), Recorder()
        bad = pair.server.open_stream(bad_opener)
        good = pair.server.open_stream(good_opener)
        bad.write(b"boom")
        good.write(b"fine")
        pair.pump()
        bad_peer, good_peer = accepted.built
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertIsInstance(bad_peer.lost.value, StreamReset)
        self.assertIsInstance(bad_opener.lost.value, StreamReset)
        self.assertFalse(pair.server.closed or pair.client.closed)
        good_peer.transport.write(b"still here")
        good.write(b" and more")
        pair.pump()
        self.assertEqual(bytes(good_peer.received), b"fine and more")
        self.assertEqual(bytes(good_opener.received), b"still here")
        self.assertIsNone(good_opener.lost)

    def test_raising_connection_made_resets_the_stream(self) -> None:
        """A protocol that raises in ``connectionMade`` never takes the session down."""

        class FaultyStart(Recorder):
            def connectionMade(self) -> None:
                raise ZeroDivisionError("bug at start")

        pair = SessionPair()
        pair.client.listen(RecorderFactory(FaultyStart))
        opener = Recorder()
        pair.server.open_stream(opener).write(b"hello")
        pair.pump()
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertIsInstance(opener.lost.value, StreamReset)
        self.assertFalse(pair.server.closed or pair.client.closed)

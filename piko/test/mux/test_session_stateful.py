# -*- test-case-name: piko.test.mux.test_session_stateful -*-
"""
A stateful Hypothesis test of a yamux session pair, through public APIs only.

Any interleaving of opening streams, writing on either end, half-closing either
end, pausing and resuming a reader, delivering bytes and letting time pass must
keep these true: neither session fails (so no window is ever exceeded: a peer
that overran one would be a protocol error), every byte written arrives once and
in order, and once everyone has resumed and closed, every stream ends cleanly
on both sides and both sessions hold no stream.
"""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from twisted.internet.error import ConnectionDone
from twisted.trial.unittest import SynchronousTestCase

from piko.mux.session import SessionConfig
from piko.mux.stream import Stream
from piko.test.mux.helpers import HalfCloseRecorder, Recorder, RecorderFactory, SessionPair

#: Writes up to a little over one window, so flow control is exercised.
SIZES = st.integers(min_value=1, max_value=300 * 1024)
_PATTERN = bytes(range(251))


def _stream(protocol: Recorder) -> Stream:
    """The yamux stream a recorder is connected to."""
    transport = protocol.transport
    assert isinstance(transport, Stream)
    return transport


class _Pair:
    """One stream seen from both ends, with what each end wrote."""

    def __init__(self, opener: HalfCloseRecorder) -> None:
        self.opener = opener
        self.peer: HalfCloseRecorder | None = None
        self.from_opener = bytearray()
        self.from_peer = bytearray()
        self.opener_closed = False
        self.peer_closed = False


class SessionPairMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.pair = SessionPair()
        self.accepted = RecorderFactory(HalfCloseRecorder)
        self.pair.client.listen(self.accepted)
        self.streams: list[_Pair] = []
        self.counter = 0

    def _bind_peers(self) -> None:
        """Match accepted protocols to their openers by stream id (accept order may differ)."""
        by_id = {
            _stream(peer).stream_id: peer
            for peer in self.accepted.built
            if peer.transport is not None
        }
        for stream in self.streams:
            if stream.peer is None and stream.opener.transport is not None:
                peer = by_id.get(_stream(stream.opener).stream_id)
                if peer is not None:
                    assert isinstance(peer, HalfCloseRecorder)
                    stream.peer = peer

    def _payload(self, size: int) -> bytes:
        self.counter += 1
        start = self.counter % 251
        return (_PATTERN * (size // 251 + 2))[start : start + size]

    @precondition(lambda self: len(self.streams) < 6)
    @rule()
    def open_stream(self) -> None:
        opener = HalfCloseRecorder()
        self.pair.server.open_stream(opener)
        self.streams.append(_Pair(opener))

    @precondition(lambda self: self.streams)
    @rule(index=st.integers(min_value=0), size=SIZES)
    def opener_writes(self, index: int, size: int) -> None:
        stream = self.streams[index % len(self.streams)]
        if stream.opener_closed or stream.opener.transport is None:
            return
        data = self._payload(size)
        stream.opener.transport.write(data)
        stream.from_opener += data

    @precondition(lambda self: self.streams)
    @rule(index=st.integers(min_value=0), size=SIZES)
    def peer_writes(self, index: int, size: int) -> None:
        self._bind_peers()
        stream = self.streams[index % len(self.streams)]
        if stream.peer is None or stream.peer_closed or stream.peer.transport is None:
            return
        data = self._payload(size)
        stream.peer.transport.write(data)
        stream.from_peer += data

    @precondition(lambda self: self.streams)
    @rule(index=st.integers(min_value=0), side=st.sampled_from(["opener", "peer"]))
    def half_close(self, index: int, side: str) -> None:
        self._bind_peers()
        stream = self.streams[index % len(self.streams)]
        protocol = stream.opener if side == "opener" else stream.peer
        if protocol is None or protocol.transport is None:
            return
        protocol.transport.loseConnection()
        if side == "opener":
            stream.opener_closed = True
        else:
            stream.peer_closed = True

    @precondition(lambda self: self.streams)
    @rule(
        index=st.integers(min_value=0),
        side=st.sampled_from(["opener", "peer"]),
        paused=st.booleans(),
    )
    def pause_or_resume(self, index: int, side: str, paused: bool) -> None:
        self._bind_peers()
        stream = self.streams[index % len(self.streams)]
        protocol = stream.opener if side == "opener" else stream.peer
        if protocol is None or protocol.transport is None:
            return
        transport = _stream(protocol)
        transport.pauseProducing() if paused else transport.resumeProducing()

    @rule(rounds=st.integers(min_value=1, max_value=4))
    def deliver(self, rounds: int) -> None:
        for _ in range(rounds):
            self.pair.clock.advance(0)
            to_client = self.pair.take_server_output()
            to_server = self.pair.take_client_output()
            if to_client:
                self.pair.client.dataReceived(to_client)
            if to_server:
                self.pair.server.dataReceived(to_server)

    @rule()
    def time_passes(self) -> None:
        self.pair.clock.advance(SessionConfig().control_delay)

    @invariant()
    def sessions_alive_and_bytes_in_order(self) -> None:
        assert not self.pair.server.closed and not self.pair.client.closed
        self._bind_peers()
        for stream in self.streams:
            assert stream.from_opener.startswith(stream.peer.received if stream.peer else b"")
            assert stream.from_peer.startswith(stream.opener.received)

    def teardown(self) -> None:
        """Resume every reader, close every end, and check everything ended cleanly."""
        pair = self.pair
        pair.pump()
        self._bind_peers()
        for stream in self.streams:
            for protocol in (stream.opener, stream.peer):
                if protocol is not None and protocol.transport is not None:
                    _stream(protocol).resumeProducing()
        pair.pump()
        pair.clock.advance(SessionConfig().control_delay)
        pair.pump()
        self._bind_peers()
        for stream in self.streams:
            for protocol in (stream.opener, stream.peer):
                if protocol is not None and protocol.transport is not None:
                    protocol.transport.loseConnection()
        pair.pump()
        pair.clock.advance(SessionConfig().control_delay)
        pair.pump()
        assert not pair.server.closed and not pair.client.closed
        for stream in self.streams:
            assert stream.peer is not None, "a stream opened was never accepted"
            assert bytes(stream.peer.received) == bytes(stream.from_opener)
            assert bytes(stream.opener.received) == bytes(stream.from_peer)
            for protocol in (stream.opener, stream.peer):
                assert protocol.lost is not None, "a stream never ended"
                assert protocol.lost.check(ConnectionDone), protocol.lost
        assert (pair.server.stream_count, pair.client.stream_count) == (0, 0)


TestSessionPair = SessionPairMachine.TestCase
TestSessionPair.settings = settings(max_examples=40, stateful_step_count=25, deadline=None)


class SessionPairStatefulTests(SynchronousTestCase):
    """Run the state machine under trial (its TestCase is a unittest one)."""

    def test_any_interleaving(self) -> None:
        """Windows respected, bytes conserved in order, every stream ends, in any order."""
        TestSessionPair("runTest").runTest()

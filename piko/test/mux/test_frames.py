"""Tests for :mod:`piko.mux.frames`, the sans-IO yamux codec."""

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from piko.mux.errors import ProtocolError
from piko.mux.frames import Flag, Frame, FrameDecoder, FrameType, encode_frame

MAX = 256 * 1024

frames_strategy = st.lists(
    st.one_of(
        st.builds(
            lambda flags, sid, payload: Frame(FrameType.DATA, flags, sid, len(payload), payload),
            st.integers(0, 15),
            st.integers(0, 2**32 - 1),
            st.binary(max_size=300),
        ),
        st.builds(
            lambda frame_type, flags, sid, length: Frame(frame_type, flags, sid, length),
            st.sampled_from([FrameType.WINDOW_UPDATE, FrameType.PING, FrameType.GO_AWAY]),
            st.integers(0, 15),
            st.integers(0, 2**32 - 1),
            st.integers(0, 2**32 - 1),
        ),
    ),
    max_size=20,
)


def encode_all(frames: list[Frame]) -> bytes:
    return b"".join(encode_frame(*frame) for frame in frames)


class EncodeTests(SynchronousTestCase):
    def test_window_update_syn_matches_go(self) -> None:
        """A stream open encodes as the bytes Go sends for stream 2."""
        self.assertEqual(
            encode_frame(FrameType.WINDOW_UPDATE, Flag.SYN, 2, 0),
            bytes.fromhex("000100010000000200000000"),
        )

    def test_ping_ack_matches_go(self) -> None:
        """A ping answer carries the ping value in the length field."""
        self.assertEqual(
            encode_frame(FrameType.PING, Flag.ACK, 0, 7), bytes.fromhex("000200020000000000000007")
        )

    def test_data_header_then_payload(self) -> None:
        """A Data frame is its header followed by the payload."""
        self.assertEqual(
            encode_frame(FrameType.DATA, 0, 2, 3, b"abc"),
            bytes.fromhex("000000000000000200000003") + b"abc",
        )


class DecodeTests(SynchronousTestCase):
    @given(frames_strategy, st.lists(st.integers(1, 64), max_size=50))
    def test_any_split_same_frames(self, frames: list[Frame], cuts: list[int]) -> None:
        """Any splitting of the byte stream into pieces decodes to the same frames."""
        data = encode_all(frames)
        decoder = FrameDecoder(MAX)
        decoded: list[Frame] = []
        offset = 0
        for cut in cuts:
            decoded += decoder.feed(data[offset : offset + cut])
            offset += cut
        decoded += decoder.feed(data[offset:])
        self.assertEqual(decoded, frames)
        self.assertEqual(decoder.buffered, 0)

    def test_partial_frame_waits(self) -> None:
        """A frame missing bytes yields nothing until the rest arrives."""
        decoder = FrameDecoder(MAX)
        data = encode_frame(FrameType.DATA, 0, 1, 5, b"hello")
        self.assertEqual(decoder.feed(data[:14]), [])
        self.assertEqual(decoder.feed(data[14:]), [Frame(FrameType.DATA, 0, 1, 5, b"hello")])

    def test_bad_version(self) -> None:
        """A version other than 0 is a protocol error."""
        decoder = FrameDecoder(MAX)
        with self.assertRaises(ProtocolError):
            decoder.feed(bytes.fromhex("010100010000000200000000"))

    def test_bad_type(self) -> None:
        """An unknown message type is a protocol error."""
        decoder = FrameDecoder(MAX)
        with self.assertRaises(ProtocolError):
            decoder.feed(bytes.fromhex("000400000000000200000000"))

    def test_huge_length_rejected_from_header(self) -> None:
        """A Data length near 2**32 is refused before any payload is buffered."""
        decoder = FrameDecoder(MAX)
        with self.assertRaises(ProtocolError):
            decoder.feed(bytes.fromhex("0000000000000002fffffff0"))

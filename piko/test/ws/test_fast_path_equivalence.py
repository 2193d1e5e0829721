"""
The adapter's own frame parser (``ByteStreamWebSocketMixin._receive_frames``)
against autobahn's: the same random byte streams, valid and invalid, must
give the same outcome.

Two server adapters accept the same handshake.  One parses frames as
``piko`` does (the fast path takes over once the WebSocket is open); the
other hands every byte to autobahn's own parser (``_dataReceived``), with the
same callbacks delivering payloads to the inner protocol.  Each stream is a
run of frames drawn from everything a client may send, or get wrong:
reserved opcodes, reserved bits, unmasked frames, fragmentation in and out of
order, non-minimal length encodings, frames and messages over the size
limits, control frames fragmented or over 125 bytes, text frames, close
frames with valid and invalid codes and reasons, and pings; it is cut into
reads at random points.  Both must deliver the same bytes to the inner
protocol, write the same bytes to the peer (pongs, Close frames with their
status code and reason), and end in the same state (failed, closing, open).
"""

from __future__ import annotations

import itertools
import struct
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from piko.test.ws._helpers import Recorder
from piko.test.ws.test_server import HEAD
from piko.ws import WebSocketAcceptor, WebSocketOptions

#: Small limits, so that random frames cross them.
_OPTIONS = WebSocketOptions(max_frame_size=150, max_message_size=300, close_timeout=2)


def _frame(
    opcode: int,
    payload: bytes,
    *,
    fin: bool,
    rsv: int,
    key: bytes | None,
    length_form: int,
) -> bytes:
    """
    Encode one frame, possibly wrongly.

    :param rsv: the three reserved bits (0 for a valid frame).
    :param key: the masking key, or ``None`` for an unmasked frame.
    :param length_form: 0 for the minimal length encoding, 126 or 127 to force
        the 16- or 64-bit form (non-minimal for short payloads).
    """
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    mask_bit = 0x80 if key is not None else 0
    n = len(payload)
    if length_form == 0:
        length_form = 0 if n < 126 else (126 if n < 0x10000 else 127)
    if length_form == 0:
        head = struct.pack("!BB", first, mask_bit | n)
    elif length_form == 126:
        head = struct.pack("!BBH", first, mask_bit | 126, n)
    else:
        head = struct.pack("!BBQ", first, mask_bit | 127, n)
    if key is None:
        return head + payload
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


_close_payloads = st.one_of(
    st.just(b""),
    st.builds(
        lambda code, reason: struct.pack("!H", code) + reason,
        st.sampled_from([1000, 1001, 1002, 1003, 1007, 1008, 1011, 3000, 4999, 999, 1004, 5000]),
        st.one_of(st.just(b""), st.just(b"bye"), st.just(b"\xff\xfe"), st.binary(max_size=8)),
    ),
    st.binary(max_size=3),
)


@st.composite
def _frames(draw: Any) -> bytes:
    """One frame, usually valid, sometimes broken in one or more ways."""
    opcode = draw(
        st.one_of(
            st.sampled_from([0, 2, 2, 2, 0, 9, 10, 8]),
            st.integers(min_value=0, max_value=15),
        )
    )
    if opcode == 8:
        payload = draw(_close_payloads)
    else:
        payload = draw(
            st.one_of(
                st.binary(max_size=40),
                st.integers(min_value=120, max_value=160).map(lambda n: bytes(range(256))[:n]),
            )
        )
    fin = draw(st.booleans()) if opcode in (0, 2) else draw(st.sampled_from([True] * 5 + [False]))
    rsv = draw(st.sampled_from([0] * 12 + [1, 2, 4, 7]))
    masked = draw(st.sampled_from([True] * 12 + [False]))
    key = draw(st.binary(min_size=4, max_size=4)) if masked else None
    length_form = draw(st.sampled_from([0] * 12 + [126, 127]))
    return _frame(opcode, payload, fin=fin, rsv=rsv, key=key, length_form=length_form)


@st.composite
def _reads(draw: Any) -> list[bytes]:
    """A stream of frames cut into reads at random points."""
    stream = b"".join(draw(st.lists(_frames(), min_size=1, max_size=8)))
    if draw(st.integers(min_value=0, max_value=4)) == 0:
        # The peer stops mid-frame (or mid-header): what was read so far must agree too.
        stream = stream[: draw(st.integers(min_value=1, max_value=len(stream)))]
    cuts = sorted(draw(st.sets(st.integers(min_value=1, max_value=max(1, len(stream) - 1)))))
    bounds = [0, *cuts, len(stream)]
    return [stream[a:b] for a, b in itertools.pairwise(bounds) if b > a]


def _accept(fast: bool) -> tuple[Any, StringTransport, Recorder]:
    """An open server adapter; with ``fast=False`` every byte goes to autobahn's parser."""
    transport = StringTransport(
        hostAddress=IPv4Address("TCP", "127.0.0.1", 8001),
        peerAddress=IPv4Address("TCP", "127.0.0.1", 50000),
    )
    inner = Recorder()
    protocol: Any = WebSocketAcceptor(Clock(), _OPTIONS).accept(
        transport, HEAD, lambda request: inner
    )
    transport.clear()
    if not fast:
        protocol.dataReceived = protocol._dataReceived
    return protocol, transport, inner


def _outcome(reads: list[bytes], fast: bool) -> dict[str, Any]:
    """Feed ``reads`` to one adapter and describe what it did."""
    protocol, transport, inner = _accept(fast)
    for data in reads:
        if transport.disconnecting:
            break
        protocol.dataReceived(data)
    return {
        "delivered": inner.data,
        "written": transport.value(),
        "failed": bool(protocol.failedByMe),
        "reason": protocol.wasNotCleanReason if protocol.failedByMe else None,
        "state": protocol.state,
        "disconnecting": transport.disconnecting,
        "fast path used": protocol._rx_fast if fast else False,
    }


class FastPathMatchesAutobahnTests(SynchronousTestCase):
    @settings(
        max_examples=200,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(_reads())
    def test_same_outcome(self, reads: list[bytes]) -> None:
        """The fast path and autobahn's parser agree on every stream, byte for byte."""
        fast = _outcome(reads, fast=True)
        slow = _outcome(reads, fast=False)
        used = fast.pop("fast path used")
        slow.pop("fast path used")
        self.assertEqual(fast, slow)
        # Every stream starts between frames on an open WebSocket: the fast path ran.
        self.assertTrue(used)

    def test_known_disagreements(self) -> None:
        """
        Streams on which the fast path once disagreed with autobahn, because
        it checked the length encoding before the opcode, or waited for the
        whole header before checking its first two bytes.
        """
        key = b"\x01\x02\x03\x04"
        cases = {
            "text frame, 16-bit length for 5 bytes (1002, not 1003)": [
                _frame(1, b"hello", fin=True, rsv=0, key=key, length_form=126)
            ],
            "continuation outside a message, 64-bit length": [
                _frame(0, b"x", fin=True, rsv=0, key=key, length_form=127)
            ],
            "ping with a 16-bit length": [
                _frame(9, b"p", fin=True, rsv=0, key=key, length_form=126)
            ],
            "reserved opcode, header incomplete": [
                _frame(3, b"x" * 200, fin=True, rsv=0, key=key, length_form=0)[:3]
            ],
            "close frame with a 1-byte body, body not yet read": [b"\x88\x81"],
        }
        for name, reads in cases.items():
            with self.subTest(name):
                fast = _outcome(reads, fast=True)
                fast.pop("fast path used")
                slow = _outcome(reads, fast=False)
                slow.pop("fast path used")
                self.assertEqual(fast, slow)
                self.assertTrue(fast["failed"])

    def test_discriminates(self) -> None:
        """
        The comparison sees a fast path that differs: one that let a reserved
        bit through would deliver what autobahn refuses.
        """
        reads = [_frame(2, b"data", fin=True, rsv=4, key=b"abcd", length_form=0)]
        fast = _outcome(reads, fast=True)
        slow = _outcome(reads, fast=False)
        self.assertEqual((fast["delivered"], slow["delivered"]), (b"", b""))
        self.assertTrue(fast["failed"] and slow["failed"])
        valid = [_frame(2, b"data", fin=True, rsv=0, key=b"abcd", length_form=0)]
        self.assertNotEqual(_outcome(valid, fast=True), fast)

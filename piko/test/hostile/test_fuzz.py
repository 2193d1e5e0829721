# -*- test-case-name: piko.test.hostile.test_fuzz -*-
"""
Hypothesis fuzzers for the decoders that read untrusted bytes: each asserts
that only the documented error (or answer) comes out, never another exception.

Examples per fuzzer: 200 by default (CI), ``PIKO_FUZZ_EXAMPLES=<n>`` for a
longer run on demand.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from piko.cluster.codec import (
    CodecError,
    decode_join_request,
    decode_join_response,
    decode_leave_request,
    decode_packet,
)
from piko.config import ConfigError, build_server_config
from piko.http.parser import RequestReader
from piko.http.server import HTTPServerProtocol, IRequestHandler, IServerExchange
from piko.mux.errors import ProtocolError, SessionClosed
from piko.mux.frames import HEADER, FrameDecoder
from piko.mux.session import Session, SessionConfig

settings.register_profile(
    "piko-fuzz",
    max_examples=int(os.environ.get("PIKO_FUZZ_EXAMPLES", "200")),
    deadline=None,
    derandomize=not os.environ.get("PIKO_FUZZ_EXAMPLES"),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
fuzz = settings.get_profile("piko-fuzz")

#: yamux-shaped input: valid-looking headers (any field values) mixed with raw bytes.
_headers = st.builds(
    HEADER.pack,
    st.integers(0, 1),
    st.integers(0, 5),
    st.integers(0, 15),
    st.integers(0, 8),
    st.one_of(st.integers(0, 64), st.integers(0, 2**32 - 1)),
)
yamux_bytes = st.lists(st.one_of(_headers, st.binary(max_size=64)), max_size=30).map(b"".join)


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for p in [*points, len(data)]:
        pieces.append(data[last:p])
        last = p
    return pieces


class YamuxFuzz(SynchronousTestCase):
    @fuzz
    @given(yamux_bytes, st.lists(st.integers(0, 10_000), max_size=5))
    def test_frame_decoder(self, data: bytes, cuts: list[int]) -> None:
        """FrameDecoder yields frames or raises ProtocolError, whatever the bytes and cuts."""
        decoder = FrameDecoder(256 * 1024)
        try:
            for piece in _split(data, cuts):
                decoder.feed(piece)
        except ProtocolError:
            pass
        self.assertLessEqual(decoder.buffered, len(data))

    @fuzz
    @given(yamux_bytes, st.lists(st.integers(0, 10_000), max_size=5), st.booleans())
    def test_session_data_received(self, data: bytes, cuts: list[int], client: bool) -> None:
        """A session fed anything either goes on or ends with a protocol error, never a crash."""
        from piko.test.mux.helpers import RecorderFactory

        session = Session(
            Clock(), client=client, config=SessionConfig(keepalive_interval=None, accept_backlog=4)
        )
        session.makeConnection(StringTransport())
        if client:
            session.listen(RecorderFactory())
        for piece in _split(data, cuts):
            session.dataReceived(piece)
        if session.closed:
            reason = session._close_reason
            assert reason is not None
            # Bytes alone can only end a session as a protocol error of ours or a GoAway with
            # an error code from the peer; anything else (a crash turned into a close) fails.
            self.assertIn(type(reason.value), (ProtocolError, SessionClosed))
        self.assertLessEqual(session.stream_count, 4 + 30)


@implementer(IRequestHandler)
class _Answer:
    def request_received(self, exchange: IServerExchange) -> None:
        exchange.respond(lambda date, *, close, http11: b"HTTP/1.1 204 No Content\r\n\r\n")


_request_line = st.sampled_from(
    [b"GET / HTTP/1.1\r\n", b"POST /x HTTP/1.1\r\n", b"GET http://a.b/ HTTP/1.0\r\n", b""]
)
_header = st.one_of(
    st.sampled_from(
        [
            b"Host: ep.example.com\r\n",
            b"Content-Length: 3\r\n",
            b"Content-Length: -1\r\n",
            b"Transfer-Encoding: chunked\r\n",
            b"Connection: close\r\n",
            b" folded\r\n",
            b"\r\n",
            b"3\r\nabc\r\n0\r\n\r\n",
        ]
    ),
    st.binary(max_size=40),
)
http_bytes = st.lists(st.one_of(_request_line, _header), max_size=20).map(b"".join)


class HTTPHeadFuzz(SynchronousTestCase):
    @fuzz
    @given(http_bytes)
    def test_request_reader(self, data: bytes) -> None:
        """RequestReader yields events or raises ParseError (400/431), nothing else."""
        from piko.http.parser import NEED_DATA, PAUSED, ParseError

        reader = RequestReader(4096)
        reader.feed(data)
        reader.feed_eof()
        try:
            for _ in range(1000):
                event = reader.next_event()
                if event is NEED_DATA:
                    break
                if event is PAUSED:
                    reader.start_next()
        except ParseError as error:
            self.assertIn(error.status, (400, 431))

    @fuzz
    @given(http_bytes, st.lists(st.integers(0, 2000), max_size=4))
    def test_server_protocol(self, data: bytes, cuts: list[int]) -> None:
        """The server answers (204, 400 or 431) or waits; it never raises."""
        transport = StringTransport()
        protocol = HTTPServerProtocol(_Answer(), Clock(), max_header_bytes=1024)
        protocol.makeConnection(transport)
        for piece in _split(data, cuts):
            protocol.dataReceived(piece)
        out = transport.value()
        for line in out.split(b"\r\n"):
            if line.startswith(b"HTTP/1.1 "):
                self.assertIn(line[9:12], (b"204", b"400", b"431"))


class GossipFuzz(SynchronousTestCase):
    @fuzz
    @given(st.binary(max_size=512))
    def test_decoders(self, data: bytes) -> None:
        """Every gossip decoder returns a message or raises CodecError, nothing else."""
        for decode in (
            decode_packet,
            decode_join_request,
            decode_join_response,
            decode_leave_request,
        ):
            with contextlib.suppress(CodecError):
                decode(data)


_yaml_keys = st.sampled_from(
    [
        "proxy",
        "upstream",
        "admin",
        "cluster",
        "log",
        "grace_period",
        "bind_addr",
        "timeout",
        "http",
        "read_header_timeout",
        "auth",
        "tls",
        "level",
        "node_id",
        "gossip",
        "bogus",
    ]
)
_yaml_values = st.one_of(
    st.sampled_from(["1s", "-5m", "10", "abc", "true", "[]", "{}", "null", "1h2x", "'", "0"]),
    st.text(max_size=12),
)
yaml_text = st.recursive(
    st.builds(lambda k, v: f"{k}: {v}", _yaml_keys, _yaml_values),
    lambda inner: st.builds(
        lambda k, lines: f"{k}:\n" + "\n".join("  " + line for line in lines),
        _yaml_keys,
        st.lists(inner, max_size=3),
    ),
    max_leaves=8,
)


class ConfigFuzz(SynchronousTestCase):
    @fuzz
    @given(st.lists(yaml_text, max_size=4).map("\n".join))
    def test_build_server_config(self, text: str) -> None:
        """Any YAML gives a config or one ConfigError with a message, nothing else."""
        files: dict[str, Any] = {"s.yaml": text}
        try:
            build_server_config(
                {"config.path": "s.yaml"}, environ={}, read=lambda path: files[path]
            )
        except ConfigError as error:
            self.assertTrue(str(error))

# -*- test-case-name: piko.test.http.test_parser -*-
"""Tests for :mod:`piko.http.parser`: early refusal of impossible heads, chunk-line limits."""

from __future__ import annotations

import tracemalloc

from twisted.trial.unittest import SynchronousTestCase

from piko.http.head import PackedHeaders, RequestHead, header_values
from piko.http.parser import (
    MAX_CHUNK_LINE,
    NEED_DATA,
    BodyChunk,
    Event,
    HeadEvent,
    MessageEnd,
    ParseError,
    RequestReader,
)

#: The start of a TLS 1.2/1.3 ClientHello record: it holds no line feed at all.
CLIENT_HELLO = bytes.fromhex("16030100f8010000f40303") + b"\x11" * 64

CHUNKED = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"


def events(reader: RequestReader) -> list[Event]:
    out: list[Event] = []
    while True:
        ev = reader.next_event()
        if ev is NEED_DATA:
            return out
        out.append(ev)
        if isinstance(ev, MessageEnd):
            return out


class EarlyRefusalTests(SynchronousTestCase):
    """Bytes that can never become a request are refused before the head ends."""

    def assertRefused(self, data: bytes) -> None:
        reader = RequestReader()
        reader.feed(data)
        with self.assertRaises(ParseError) as caught:
            reader.next_event()
        self.assertEqual(caught.exception.status, 400)

    def test_tls_client_hello(self) -> None:
        """A TLS ClientHello (first byte 0x16, no line feed) is refused at once."""
        self.assertRefused(CLIENT_HELLO)

    def test_binary_junk(self) -> None:
        """Control bytes where the method should be are refused at once."""
        self.assertRefused(b"\x00\x01\x02junk")
        self.assertRefused(b"GE\xff")

    def test_bare_lf_request_line(self) -> None:
        """A request line ended by a bare LF is refused at once (llhttp would refuse it)."""
        self.assertRefused(b"GET / HTTP/1.1\nHost: x\n\n")

    def test_bare_lf_header_line(self) -> None:
        """A bare LF in a header line is refused as soon as it arrives."""
        reader = RequestReader()
        reader.feed(b"GET / HTTP/1.1\r\nHost: x\r")
        self.assertIs(reader.next_event(), NEED_DATA)
        reader.feed(b"\nA: b\n")
        with self.assertRaises(ParseError):
            reader.next_event()

    def test_bad_complete_request_line(self) -> None:
        """A complete request line llhttp rejects is refused before any header arrives."""
        self.assertRefused(b"G\x01T / HTTP/1.1\r\n")
        self.assertRefused(b"GET /a b HTTP/1.1\r\nHost")
        self.assertRefused(b"GET / HTTP/1.9\r\n")

    def test_overlong_method(self) -> None:
        """65 token bytes without a space cannot be a method llhttp knows."""
        self.assertRefused(b"A" * 65)

    def test_valid_prefixes_wait(self) -> None:
        """Every prefix of a good head, fed byte by byte, waits for more."""
        raw = b"\r\nGET /x?y=1 HTTP/1.1\r\nHost: a\r\nX-A: b c\r\n\r\n"
        reader = RequestReader()
        for i in range(len(raw) - 1):
            reader.feed(raw[i : i + 1])
            self.assertIs(reader.next_event(), NEED_DATA, raw[: i + 1])
        self.assertTrue(reader.request_line_complete)
        reader.feed(raw[-1:])
        ev = reader.next_event()
        assert isinstance(ev, HeadEvent)
        self.assertEqual(ev.head.target, b"/x?y=1")

    def test_request_line_complete(self) -> None:
        """``request_line_complete`` turns true once the request line has arrived."""
        reader = RequestReader()
        reader.feed(b"GET / HT")
        reader.next_event()
        self.assertFalse(reader.request_line_complete)
        reader.feed(b"TP/1.1\r\nHost")
        reader.next_event()
        self.assertTrue(reader.request_line_complete)


class ChunkLineTests(SynchronousTestCase):
    """Chunk-size lines (extensions included) and trailer lines are capped as Go caps them."""

    def test_extension_streamed_forever_refused(self) -> None:
        """An extension that never ends is refused once the line reaches Go's 4096 bytes."""
        reader = RequestReader()
        reader.feed(CHUNKED + b"1;a=")
        self.assertIsInstance(reader.next_event(), HeadEvent)
        fed = 4
        with self.assertRaises(ParseError) as caught:
            while fed < 10 * MAX_CHUNK_LINE:
                reader.feed(b"b" * 100)
                fed += 100
                reader.next_event()
        self.assertLessEqual(fed, MAX_CHUNK_LINE + 100)
        self.assertEqual(caught.exception.reason, "chunk line too long")

    def test_line_just_under_limit(self) -> None:
        """A chunk-size line of 4095 bytes with its CRLF is accepted."""
        reader = RequestReader()
        line = b"3;e=" + b"x" * (MAX_CHUNK_LINE - 1 - 6) + b"\r\n"
        self.assertEqual(len(line), MAX_CHUNK_LINE - 1)
        reader.feed(CHUNKED + line + b"abc\r\n0\r\n\r\n")
        evs = events(reader)
        self.assertEqual(evs[1:], [BodyChunk(b"abc"), MessageEnd()])

    def test_line_at_limit(self) -> None:
        """A chunk-size line of 4096 bytes with its CRLF is refused."""
        reader = RequestReader()
        line = b"3;e=" + b"x" * (MAX_CHUNK_LINE - 6) + b"\r\n"
        reader.feed(CHUNKED + line + b"abc\r\n0\r\n\r\n")
        with self.assertRaises(ParseError):
            events(reader)

    def test_long_trailer_refused(self) -> None:
        """A trailer line past the limit is refused too."""
        reader = RequestReader()
        reader.feed(CHUNKED + b"0\r\nX-T: " + b"t" * MAX_CHUNK_LINE)
        with self.assertRaises(ParseError):
            events(reader)

    def test_long_chunk_data_without_line_feeds(self) -> None:
        """Chunk data is not a line: a megabyte without a line feed passes, in pieces."""
        reader = RequestReader()
        size = 1 << 20
        reader.feed(CHUNKED + b"%x\r\n" % size)
        self.assertIsInstance(reader.next_event(), HeadEvent)
        got = 0
        for _ in range(size // 1000):
            reader.feed(b"d" * 1000)
            for ev in events(reader):
                assert isinstance(ev, BodyChunk)
                got += len(ev.data)
        reader.feed(b"d" * (size % 1000) + b"\r\n0\r\n\r\n")
        evs = events(reader)
        got += sum(len(ev.data) for ev in evs if isinstance(ev, BodyChunk))
        self.assertEqual((got, evs[-1]), (size, MessageEnd()))


def _many_headers(count: int) -> bytes:
    lines = b"".join(b"X-H%05d: v\r\n" % i for i in range(count))
    return b"GET / HTTP/1.1\r\nHost: a\r\n" + lines + b"\r\n"


class PackedHeadTests(SynchronousTestCase):
    """Heads with many headers are held packed: bytes received plus 16 bytes per header."""

    def parse(self, raw: bytes) -> HeadEvent:
        reader = RequestReader()
        reader.feed(raw)
        ev = reader.next_event()
        assert isinstance(ev, HeadEvent)
        return ev

    def test_same_pairs_as_llhttp(self) -> None:
        """The packed index gives exactly the pairs llhttp's callbacks give, blanks trimmed."""
        lines = [
            b"A: b",
            b"Empty:",
            b"Spaces:   x  y \t ",
            b"Tab:\tz",
            b"Obs: \xe9t\xe9",
        ] * 10
        lines.append(b"Content-Length: 0")
        raw = b"GET / HTTP/1.1\r\nHost: a\r\n" + b"\r\n".join(lines) + b"\r\n\r\n"
        packed = self.parse(raw).head.headers
        self.assertIsInstance(packed, PackedHeaders)
        # The callbacks path, which asks llhttp for every pair:
        parser, cb = RequestReader()._parse_head(raw, packed=False)
        self.assertEqual(list(packed), cb.headers)
        self.assertEqual(packed, tuple(cb.headers))
        self.assertEqual(packed[3], (b"Spaces", b"x  y"))
        self.assertEqual(packed[-1], (b"Content-Length", b"0"))

    def test_few_headers_stay_tuples(self) -> None:
        """A head with a few headers keeps plain tuples (the fast path)."""
        headers = self.parse(_many_headers(10)).head.headers
        self.assertIsInstance(headers, tuple)

    def test_memory_held_is_a_small_multiple_of_the_head(self) -> None:
        """
        A 780 KB head of 60,000 13-byte headers holds little more than its own bytes (as
        tuples it held nine times them), and parsing it peaks under three times them.
        """
        raw = _many_headers(60_000)
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            ev = self.parse(raw)
            held, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        headers = ev.head.headers
        self.assertIsInstance(headers, PackedHeaders)
        assert isinstance(headers, PackedHeaders)
        self.assertEqual(len(headers), 60_001)
        self.assertEqual(headers.nbytes, len(raw))
        self.assertLess(held - before, 1.1 * len(raw))
        self.assertLess(peak - before, 3 * len(raw))
        self.assertIs(headers.raw, ev.raw)

    def test_rebuilt_heads_packed(self) -> None:
        """A head rebuilt from many pairs (absolute-form targets) is packed too."""
        pairs = [(b"X-%d" % i, b"v") for i in range(1000)]
        head = RequestHead(b"GET", b"/", b"1.1", pairs)
        self.assertIsInstance(head.headers, PackedHeaders)
        self.assertEqual(list(head.headers), pairs)
        self.assertEqual(head.get(b"x-999"), b"v")

    def test_unpackable_pairs_stay_tuples(self) -> None:
        """Pairs that packing would alter (colons in names, blanks around values) stay tuples."""
        for odd in ((b"X:Y", b"v"), (b"X", b" v "), (b"X", b"a\r\nb")):
            pairs = [(b"X-%d" % i, b"v") for i in range(100)] + [odd]
            head = RequestHead(b"GET", b"/", b"1.1", pairs)
            self.assertIsInstance(head.headers, tuple)
            self.assertEqual(list(head.headers), pairs)

    def test_lookups_scan_the_bytes(self) -> None:
        """Lookups by name on packed headers agree with the pairs, any case, in order."""
        raw = _many_headers(100)[:-2] + b"x-h00050: second \t\r\nHOST: b\r\n\r\n"
        head = self.parse(raw).head
        self.assertIsInstance(head.headers, PackedHeaders)
        self.assertEqual(head.get(b"X-H00050"), b"v")
        self.assertEqual(header_values(head.headers, b"x-h00050"), [b"v", b"second"])
        self.assertEqual(header_values(head.headers, b"host"), [b"a", b"b"])
        self.assertEqual(head.get(b"missing"), None)

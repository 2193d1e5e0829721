# -*- test-case-name: piko.test.http.test_parser -*-
"""
Sans-IO incremental HTTP/1.1 message readers on httptools (llhttp).

llhttp does the parsing (request/status line, header syntax, Content-Length and
Transfer-Encoding validation, chunk framing).  Around it this module keeps what a proxy needs
and llhttp's Python binding does not expose:

* **exact message boundaries**, so a pipelined or upgraded connection hands the next bytes on
  untouched: the head ends at the first blank line (found here, which also enforces the header
  size limit before llhttp sees a byte); Content-Length bodies are counted here; chunked bodies
  are fed to llhttp in pieces that end at line feeds, because a chunked message can only end
  right after one, so the end of the piece that completed the message is the end of the message;
* **the raw head bytes** of every message (an upgrade takeover replays them to autobahn);
* **pausing between messages**: after :class:`MessageEnd` the reader returns :data:`PAUSED`
  until :meth:`_Reader.start_next`, which is how pipelined requests wait their turn.

Events come out of ``next_event()``, h11 style: :class:`HeadEvent`, :class:`BodyChunk`,
:class:`MessageEnd`, or the sentinels :data:`NEED_DATA` / :data:`PAUSED`.
"""

from __future__ import annotations

import enum
import re
from typing import Union

import httptools
from attrs import frozen

from piko.http.head import (
    PACK_ABOVE,
    Headers,
    PackedHeaders,
    RequestHead,
    ResponseHead,
    make_request_head,
    make_response_head,
)
from piko.http.rewrite import NO_BODY, BodyFraming, body_allowed

DEFAULT_MAX_HEADER_BYTES = 1 << 20

#: Longest chunk-size line (extensions included) or trailer line, with its line ending, that a
#: chunked body may carry: Go's ``maxLineLength`` in ``net/http/internal/chunked.go``.  llhttp
#: streams extensions through without a limit, so without this one line could run forever.
MAX_CHUNK_LINE = 4096

#: Bytes that may start an HTTP method (RFC 9110 ``token``); anything else before the first
#: space can never become a valid request line.
_TOKEN_BYTES = frozenset(
    b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)
#: A line feed not preceded by a carriage return: llhttp refuses every one in a head.
_BARE_LF = re.compile(rb"(?<!\r)\n")


class ParseError(Exception):
    """
    The peer sent something that is not HTTP/1.1.

    :ivar status: the status a server should answer with (400, or 431 for oversized heads).
    :ivar reason: the text a server puts after ``400 Bad Request:`` (Go's, where Go gives
        one; empty for llhttp's own messages, which Go words differently).
    """

    def __init__(self, message: str, status: int = 400, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class Sentinel(enum.Enum):
    """Reader states that are not events."""

    NEED_DATA = "NEED_DATA"
    PAUSED = "PAUSED"


NEED_DATA = Sentinel.NEED_DATA
PAUSED = Sentinel.PAUSED


@frozen
class HeadEvent:
    """
    A complete head.

    :ivar raw: the exact bytes of the head, blank line included.
    :ivar framing: how the body that follows is delimited.
    :ivar keep_alive: whether the connection may carry another message afterwards.
    :ivar upgrade: whether the head asks for (request) or grants (101 response) an upgrade.
    """

    head: RequestHead | ResponseHead
    raw: bytes
    framing: BodyFraming
    keep_alive: bool
    upgrade: bool


@frozen
class BodyChunk:
    """Decoded body bytes (chunk framing removed)."""

    data: bytes


@frozen
class MessageEnd:
    """The body (if any) is complete."""


Event = Union[HeadEvent, BodyChunk, MessageEnd, Sentinel]  # noqa: UP007


class _State(enum.Enum):
    HEAD = 1
    LENGTH = 2
    CHUNKED = 3
    UNTIL_EOF = 4
    END = 5
    DONE = 6
    DEAD = 7


class _PackedCallbacks:
    """
    httptools protocol object without ``on_header``: llhttp then checks the header lines
    but makes no Python objects for them (a head with many headers is kept as a
    :class:`~piko.http.head.PackedHeaders` instead).  Collects the rest of the head and
    chunk data.
    """

    def __init__(self) -> None:
        self.url = b""
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_done = False
        self.complete = False
        self.body: list[bytes] = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_status(self, status: bytes) -> None:
        self.reason += status

    def on_headers_complete(self) -> None:
        self.head_done = True

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.complete = True


class _Callbacks(_PackedCallbacks):
    """httptools protocol object that also collects the headers as pairs."""

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value.strip(b" \t")))


class _Reader:
    """Shared machinery of :class:`RequestReader` and :class:`ResponseReader`."""

    def __init__(self, max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES) -> None:
        self.max_header_bytes = max_header_bytes
        self._buf = bytearray()
        self._state = _State.HEAD
        self._scanned = 0
        self._remaining = 0
        self._parser: httptools.HttpRequestParser | httptools.HttpResponseParser | None = None
        self._cb: _PackedCallbacks = _Callbacks()
        self._eof = False
        #: bytes of the chunk-size or trailer line being read (see :data:`MAX_CHUNK_LINE`)
        self._line = 0

    @property
    def buffered(self) -> int:
        """Bytes received and not yet turned into events (for flow control)."""
        return len(self._buf)

    @property
    def head_in_progress(self) -> bool:
        """True while part of a head has arrived but not all of it."""
        return self._state is _State.HEAD and bool(self._buf)

    def feed(self, data: bytes) -> None:
        """Add received bytes."""
        self._buf += data

    def feed_eof(self) -> None:
        """The peer closed its sending side."""
        self._eof = True

    def start_next(self) -> None:
        """After :class:`MessageEnd`, begin reading the next message."""
        if self._state is _State.DONE:
            self._state = _State.HEAD
            self._scanned = 0
            self._line = 0

    def take_buffered(self) -> bytes:
        """Stop reading and return every byte not consumed yet (the upgraded protocol's)."""
        data = bytes(self._buf)
        self._buf = bytearray()
        self._state = _State.DEAD
        return data

    def _new_parser(self) -> httptools.HttpRequestParser | httptools.HttpResponseParser:
        raise NotImplementedError()

    def _parse_head(
        self, raw: bytes, packed: bool
    ) -> tuple[httptools.HttpRequestParser | httptools.HttpResponseParser, _PackedCallbacks]:
        cb = self._cb = _PackedCallbacks() if packed else _Callbacks()
        parser = self._parser = self._new_parser()
        try:
            parser.feed_data(raw)
        except httptools.HttpParserUpgrade:
            pass
        except httptools.HttpParserError as e:
            self._state = _State.DEAD
            raise ParseError(str(e)) from None
        return parser, cb

    def _check_partial(self, scanned: int) -> None:
        """
        Raise :class:`ParseError` if the incomplete head in the buffer can already never
        become a valid one (``scanned`` bytes of it were checked before).

        Without this a head that never ends (TLS bytes, junk, bare line feeds) would wait
        for the header timeout, though its first bytes already show it will be refused.
        """

    def _make_head(
        self,
        parser: httptools.HttpRequestParser | httptools.HttpResponseParser,
        cb: _PackedCallbacks,
        raw: bytes,
        headers: Headers,
    ) -> HeadEvent:
        raise NotImplementedError()

    def next_event(self) -> Event:
        """Return the next event, :data:`NEED_DATA` or :data:`PAUSED`."""
        state = self._state
        if state is _State.HEAD:
            return self._next_head()
        if state is _State.LENGTH:
            if not self._buf:
                return NEED_DATA
            take = min(self._remaining, len(self._buf))
            data = bytes(self._buf[:take])
            del self._buf[:take]
            self._remaining -= take
            if self._remaining == 0:
                self._state = _State.END
            return BodyChunk(data)
        if state is _State.CHUNKED:
            return self._next_chunked()
        if state is _State.UNTIL_EOF:
            if self._buf:
                data = bytes(self._buf)
                self._buf = bytearray()
                return BodyChunk(data)
            if self._eof:
                self._state = _State.DONE
                return MessageEnd()
            return NEED_DATA
        if state is _State.END:
            self._state = _State.DONE
            return MessageEnd()
        return PAUSED

    def _next_head(self) -> Event:
        buf = self._buf
        end = buf.find(b"\r\n\r\n", max(0, self._scanned - 3))
        if end == -1:
            if len(buf) > self.max_header_bytes:
                self._state = _State.DEAD
                raise ParseError("header too large", 431)
            self._check_partial(self._scanned)
            self._scanned = len(buf)
            return NEED_DATA
        end += 4
        if end > self.max_header_bytes:
            raise ParseError("header too large", 431)
        with memoryview(buf) as view:
            raw = bytes(view[:end])  # one copy, not a bytearray slice and then bytes
        del buf[:end]
        # Request or status line, headers, blank line: more lines than that means packing.
        packed = raw.count(b"\n") > PACK_ABOVE + 2
        parser, cb = self._parse_head(raw, packed)
        headers: Headers | None = None
        if packed and cb.head_done:
            # llhttp checked every line: ``name:value``, CRLF-ended, no bare CR or LF.
            lead = len(raw) - len(raw.lstrip(b"\r\n"))
            headers = PackedHeaders(raw, raw.index(b"\r\n", lead) + 2, len(raw) - 4)
        else:
            headers = tuple(cb.headers)
        if not cb.head_done:
            if raw.strip(b"\r\n"):
                self._state = _State.DEAD
                raise ParseError("incomplete head")
            # Stray blank lines between messages: skip them, as Go does.
            self._scanned = 0
            return self._next_head()
        ev = self._make_head(parser, cb, raw, headers)
        framing = ev.framing
        if ev.upgrade and isinstance(ev.head, ResponseHead):
            self._state = _State.DEAD
        elif framing.chunked:
            self._state = _State.CHUNKED
            cb.complete = False
        elif framing.length is None:
            self._state = _State.UNTIL_EOF
        elif framing.length == 0:
            self._state = _State.END
        else:
            self._state = _State.LENGTH
            self._remaining = framing.length
        return ev

    def _next_chunked(self) -> Event:
        cb = self._cb
        parser = self._parser
        assert parser is not None
        if not cb.body and not cb.complete and self._buf:
            data = bytes(self._buf)
            pos = 0
            n = len(data)
            view = memoryview(data)
            body = cb.body
            try:
                while pos < n and not cb.complete:
                    lf = data.find(b"\n", pos)
                    end = n if lf == -1 else lf + 1
                    pieces = len(body)
                    parser.feed_data(view[pos:end])
                    # Pieces end at line feeds, so a piece that yields no data is part of a
                    # chunk-size or trailer line: bound those as Go does.
                    if len(body) != pieces:
                        self._line = 0
                    else:
                        self._line += end - pos
                        if self._line >= MAX_CHUNK_LINE:
                            raise ParseError("chunk line too long", reason="chunk line too long")
                        if lf != -1:
                            self._line = 0
                    pos = end
            except httptools.HttpParserError as e:
                self._state = _State.DEAD
                raise ParseError(str(e)) from None
            except ParseError:
                self._state = _State.DEAD
                raise
            finally:
                view.release()
            del self._buf[:pos]
        if cb.body:
            data = b"".join(cb.body)
            cb.body = []
            return BodyChunk(data)
        if cb.complete:
            self._state = _State.DONE
            return MessageEnd()
        return NEED_DATA


#: llhttp's version strings as the bytes a head keeps.
_VERSIONS = {"1.1": b"1.1", "1.0": b"1.0", "0.9": b"0.9"}

_CHUNKED = BodyFraming(chunked=True)
#: :func:`_framing_fields`' Content-Length when it is not a number (llhttp lets no minus sign
#: through, so no real length is negative).
_BAD_LENGTH = -1
_UNTIL_EOF = BodyFraming()


def _version(parser: httptools.HttpRequestParser | httptools.HttpResponseParser) -> bytes:
    text = parser.get_http_version()
    version = _VERSIONS.get(text)
    if version is None:
        version = str(text).encode()
    return version


#: The headers :func:`_framing_fields` reads.
_FRAMING_NAMES = frozenset((b"connection", b"content-length", b"transfer-encoding", b"upgrade"))


def _framing_fields(
    headers: Headers,
) -> tuple[bool, int | None, bool, bool, bool]:
    """
    One pass over ``headers`` for what framing needs.

    :returns: ``(chunked, content_length, close, connection_upgrade, has_upgrade)``:
        whether the last ``Transfer-Encoding`` token is ``chunked``; the first
        ``Content-Length`` (None without one, :data:`_BAD_LENGTH` if it is not a number:
        an error only where the length is used); whether ``Connection`` lists ``close`` /
        ``upgrade``; whether an ``Upgrade`` header is present.  Tokens are compared trimmed
        and lower-cased, as :func:`~piko.http.head.header_tokens` gives them.
    """
    te_last = b""
    length: int | None = None
    seen_length = False
    close = conn_upgrade = has_upgrade = False
    if isinstance(headers, PackedHeaders):
        headers = tuple(headers.select(_FRAMING_NAMES))
    for name, value in headers:
        lname = name.lower()
        if lname == b"connection":
            for tok in value.split(b","):
                tok = tok.strip(b" \t").lower()
                if tok == b"close":
                    close = True
                elif tok == b"upgrade":
                    conn_upgrade = True
        elif lname == b"content-length":
            if not seen_length:
                seen_length = True
                try:
                    length = int(value.split(b",")[0].strip())
                except ValueError:
                    length = _BAD_LENGTH
        elif lname == b"transfer-encoding":
            for tok in value.split(b","):
                tok = tok.strip(b" \t")
                if tok:
                    te_last = tok
        elif lname == b"upgrade":
            has_upgrade = True
    return te_last.lower() == b"chunked", length, close, conn_upgrade, has_upgrade


class RequestReader(_Reader):
    """
    Reads requests from a client, one at a time.

    :param max_header_bytes: a head longer than this raises :class:`ParseError` with status 431.
    """

    #: whether the request line of the head being read has all arrived (and was checked)
    request_line_complete = False

    def start_next(self) -> None:
        """After :class:`MessageEnd`, begin reading the next message."""
        super().start_next()
        self.request_line_complete = False

    def _new_parser(self) -> httptools.HttpRequestParser:
        return httptools.HttpRequestParser(self._cb)

    def _check_partial(self, scanned: int) -> None:
        """
        Refuse at once, as Go does once it has the line, what cannot start a request: a
        method byte that is not a token character (a TLS ClientHello starts with 0x16), a
        bare line feed (llhttp refuses them; a head of bare-LF lines would never show the
        ``CRLF CRLF`` that ends it), or a complete request line llhttp rejects.
        """
        buf = self._buf
        start = 0
        n = len(buf)
        # Blank lines before a request are skipped, as Go does.
        while start < n and buf[start] in (13, 10):
            if buf[start] == 10 and (start == 0 or buf[start - 1] != 13):
                break
            start += 1
        space = buf.find(b" ", start, start + 64)
        method_end = n if space == -1 else space
        method = buf[start : min(method_end, start + 64)]
        if method and (set(method) - _TOKEN_BYTES or (space == -1 and n - start > 64)):
            self._state = _State.DEAD
            raise ParseError("malformed request line")
        if _BARE_LF.search(buf, max(start, scanned - 1)) is not None:
            self._state = _State.DEAD
            raise ParseError("bare LF in head")
        if self.request_line_complete:
            return
        line_end = buf.find(b"\r\n", max(start, scanned - 1))
        if line_end != -1:
            # The request line is complete: let llhttp judge it now.
            self.request_line_complete = True
            probe = httptools.HttpRequestParser(_PackedCallbacks())
            try:
                probe.feed_data(bytes(buf[start : line_end + 2]))
            except httptools.HttpParserError as e:
                self._state = _State.DEAD
                raise ParseError(str(e)) from None

    def _make_head(
        self,
        parser: httptools.HttpRequestParser | httptools.HttpResponseParser,
        cb: _PackedCallbacks,
        raw: bytes,
        headers: Headers,
    ) -> HeadEvent:
        assert isinstance(parser, httptools.HttpRequestParser)
        version = _version(parser)
        head = make_request_head(parser.get_method(), cb.url, version, headers)
        chunked, length, close, conn_upgrade, has_upgrade = _framing_fields(headers)
        if chunked:
            framing = _CHUNKED
        elif not length:
            framing = NO_BODY
        elif length == _BAD_LENGTH:
            raise ParseError("bad Content-Length")
        else:
            framing = BodyFraming(length=length)
        keep_alive = version == b"1.1" and not close
        return HeadEvent(head, raw, framing, keep_alive, conn_upgrade and has_upgrade)


class ResponseReader(_Reader):
    """
    Reads responses from an upstream.

    Call :meth:`expect` with the request method before each response, since a response to
    ``HEAD`` has no body whatever its headers say.
    """

    def __init__(self, max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES) -> None:
        super().__init__(max_header_bytes)
        self._method = b"GET"

    def expect(self, method: bytes) -> None:
        """Set the method of the request whose response comes next."""
        self._method = method

    def _new_parser(self) -> httptools.HttpResponseParser:
        return httptools.HttpResponseParser(self._cb)

    def _make_head(
        self,
        parser: httptools.HttpRequestParser | httptools.HttpResponseParser,
        cb: _PackedCallbacks,
        raw: bytes,
        headers: Headers,
    ) -> HeadEvent:
        assert isinstance(parser, httptools.HttpResponseParser)
        version = _version(parser)
        status = parser.get_status_code()
        head = make_response_head(status, cb.reason, version, headers)
        if status == 101:
            return HeadEvent(head, raw, NO_BODY, False, True)
        chunked, length, close, _, _ = _framing_fields(headers)
        if not body_allowed(status, self._method):
            framing = NO_BODY
        elif chunked:
            framing = _CHUNKED
        elif length is None:
            framing = _UNTIL_EOF
        elif length == 0:
            framing = NO_BODY
        elif length == _BAD_LENGTH:
            raise ParseError("bad Content-Length")
        else:
            framing = BodyFraming(length=length)
        delimited = framing.length is not None or framing.chunked
        keep_alive = version == b"1.1" and not close and delimited
        return HeadEvent(head, raw, framing, keep_alive, False)

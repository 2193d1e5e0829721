# -*- test-case-name: piko.test.http.test_head -*-
"""
HTTP/1.1 message heads as immutable values, and the pure helpers around them.

Headers are kept as an ordered sequence of ``(name, value)`` byte pairs exactly as they arrived
(casing and order), because Go Piko's wire behaviour depends on both: the server re-sorts and
re-cases them when it forwards, and the interop transcripts are compared byte for byte.

A few headers are a tuple of tuples.  Many are a :class:`PackedHeaders`: just the bytes they
arrived in, because a tuple and two ``bytes`` objects cost about 150 bytes per header, so a
1 MiB head of 13-byte headers held that way would take 12 MiB.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Iterator, Sequence
from email.utils import formatdate
from http import HTTPStatus
from itertools import repeat
from operator import itemgetter
from typing import overload
from urllib.parse import unquote

from attrs import field, frozen

Headers = Sequence[tuple[bytes, bytes]]

#: More headers than this are held packed (:class:`PackedHeaders`), fewer as tuples.
PACK_ABOVE = 32

#: Compiled lookups of :meth:`PackedHeaders.select`, by the names they find.
_SELECTORS: dict[frozenset[bytes], re.Pattern[bytes]] = {}


def _selector(names: frozenset[bytes]) -> re.Pattern[bytes]:
    pattern = _SELECTORS.get(names)
    if pattern is None:
        alternatives = b"|".join(re.escape(n) for n in sorted(names))
        pattern = re.compile(rb"\r\n(" + alternatives + rb"):[ \t]*([^\r\n]*)", re.IGNORECASE)
        if len(_SELECTORS) < 64:
            _SELECTORS[names] = pattern
    return pattern


#: A colon and the blanks after it.
_VALUE_BLANKS = re.compile(rb":[ \t]+")


class PackedHeaders(Sequence[tuple[bytes, bytes]]):
    """
    Many headers held as nothing but the bytes of their lines (``name:value`` lines joined
    by CRLF, usually a slice of the head as received, shared with whoever keeps it): the
    pairs are made on access, and lookups by name (:meth:`select`) scan the bytes with a
    regular expression, without making the pairs they skip.  Tuples would cost about 150
    bytes per header.

    Values are given trimmed of spaces and tabs, as llhttp gives them.

    :param raw: bytes holding the lines.
    :param start: where the first line starts in ``raw``; ``raw[start - 2 : start]`` must be
        CRLF (the end of the request or status line).
    :param end: where the last line ends (before its CRLF).
    """

    __slots__ = ("_count", "_end", "_start", "raw")

    def __init__(self, raw: bytes, start: int, end: int) -> None:
        self.raw = raw
        self._start = start
        self._end = end
        self._count = raw.count(b"\r\n", start, end) + 1 if end > start else 0

    @classmethod
    def from_pairs(cls, pairs: Sequence[tuple[bytes, bytes]]) -> PackedHeaders | None:
        """
        Pack ``pairs``; None if some cannot be (a name with a colon, a line break inside, or
        a value with blanks around it, which packing would trim).
        """
        lines = []
        for name, value in pairs:
            if b":" in name or value.strip(b" \t") != value:
                return None
            lines.append(bytes(name) + b":" + bytes(value))
        block = b"\r\n" + b"\r\n".join(lines)
        if block.count(b"\n") != len(lines) or block.count(b"\r") != len(lines):
            return None
        return cls(block, 2, len(block))

    @property
    def nbytes(self) -> int:
        """Bytes held: the whole of ``raw``."""
        return len(self.raw)

    def __len__(self) -> int:
        return self._count

    @overload
    def __getitem__(self, i: int) -> tuple[bytes, bytes]: ...

    @overload
    def __getitem__(self, i: slice) -> tuple[tuple[bytes, bytes], ...]: ...

    def __getitem__(self, i: int | slice) -> tuple[bytes, bytes] | tuple[tuple[bytes, bytes], ...]:
        if isinstance(i, slice):
            return tuple(self)[i]
        n = self._count
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError("header index out of range")
        for k, pair in enumerate(self):
            if k == i:
                return pair
        raise IndexError("header index out of range")  # pragma: no cover

    def __iter__(self) -> Iterator[tuple[bytes, bytes]]:
        if not self._count:
            return
        for line in self.raw[self._start : self._end].split(b"\r\n"):
            name, _, value = line.partition(b":")
            yield name, value.strip(b" \t")

    def columns(self) -> tuple[list[bytes], list[bytes]]:
        """
        Every name and every value, as :meth:`__iter__` gives them, in two lists made by a
        few passes over the bytes in C: no tuple per header (tuples also make work for the
        garbage collector), for code that needs them all (the rewrite of a large head).

        The usual lines, one colon each, blanks only after it, split at once; any other
        head is split line by line, still without Python code per header.
        """
        if not self._count:
            return [], []
        block = self.raw[self._start : self._end]
        if (
            block.count(b":") == self._count
            and b" \r\n" not in block
            and b"\t\r\n" not in block
            and block[-1] not in b" \t"
        ):
            # The only colons are the separators, so blanks after a colon start a value.
            squeezed = block.replace(b": ", b":")
            if b": " in squeezed or b":\t" in squeezed:
                squeezed = _VALUE_BLANKS.sub(b":", block)
            items = squeezed.replace(b"\r\n", b":").split(b":")
            return items[0::2], items[1::2]
        parts = list(map(bytes.partition, block.split(b"\r\n"), repeat(b":")))
        values = list(map(bytes.strip, map(itemgetter(2), parts), repeat(b" \t")))
        return list(map(itemgetter(0), parts)), values

    def select(self, names: frozenset[bytes]) -> Iterator[tuple[bytes, bytes]]:
        """
        The pairs whose name is one of ``names`` (lower-case; compared case-insensitively),
        in order, found by scanning the bytes.
        """
        for m in _selector(names).finditer(self.raw, self._start - 2, self._end + 2):
            yield m.group(1), m.group(2).rstrip(b" \t")

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (PackedHeaders, tuple, list)):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return f"PackedHeaders({len(self)} headers, {self.nbytes} bytes)"


def _as_headers(value: Iterable[tuple[bytes, bytes]]) -> Headers:
    if isinstance(value, PackedHeaders):
        return value
    pairs = tuple((bytes(n), bytes(v)) for n, v in value)
    if len(pairs) > PACK_ABOVE:
        return PackedHeaders.from_pairs(pairs) or pairs
    return pairs


@frozen
class RequestHead:
    """
    A parsed request line and header block.

    :ivar method: e.g. ``b"GET"``.
    :ivar target: the request target exactly as sent (origin-form for normal requests).
    :ivar version: ``b"1.1"`` or ``b"1.0"``.
    :ivar headers: ``(name, value)`` pairs in wire order with wire casing; values trimmed of
        surrounding whitespace as Go's reader does.
    """

    method: bytes
    target: bytes
    version: bytes = b"1.1"
    headers: Headers = field(default=(), converter=_as_headers)

    def get(self, name: bytes) -> bytes | None:
        """Return the first value of header ``name`` (any case), or None."""
        return header_get(self.headers, name)


@frozen
class ResponseHead:
    """
    A parsed status line and header block.

    :ivar reason: the reason phrase as sent by the peer (Go keeps it only on 101 relays).
    """

    status: int
    reason: bytes = b""
    version: bytes = b"1.1"
    headers: Headers = field(default=(), converter=_as_headers)

    def get(self, name: bytes) -> bytes | None:
        """Return the first value of header ``name`` (any case), or None."""
        return header_get(self.headers, name)


_new = object.__new__
_set = object.__setattr__


def make_request_head(
    method: bytes, target: bytes, version: bytes, headers: Headers
) -> RequestHead:
    """
    A :class:`RequestHead` from parts already in their final types, without the converter
    (the parser's hot path: ``headers`` must be a tuple of ``(bytes, bytes)`` tuples).
    """
    head = _new(RequestHead)
    _set(head, "method", method)
    _set(head, "target", target)
    _set(head, "version", version)
    _set(head, "headers", headers)
    return head


def make_response_head(
    status: int, reason: bytes, version: bytes, headers: Headers
) -> ResponseHead:
    """A :class:`ResponseHead` from parts already in their final types (see above)."""
    head = _new(ResponseHead)
    _set(head, "status", status)
    _set(head, "reason", reason)
    _set(head, "version", version)
    _set(head, "headers", headers)
    return head


def header_get(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    """Return the first value of ``name`` compared case-insensitively, or None."""
    lname = name.lower()
    if isinstance(headers, PackedHeaders):
        for _, v in headers.select(frozenset((lname,))):
            return v
        return None
    for n, v in headers:
        if n.lower() == lname:
            return v
    return None


def header_values(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> list[bytes]:
    """Return every value of ``name`` (any case), in order."""
    lname = name.lower()
    if isinstance(headers, PackedHeaders):
        return [v for _, v in headers.select(frozenset((lname,)))]
    return [v for n, v in headers if n.lower() == lname]


def header_tokens(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> list[bytes]:
    """Return the comma-separated tokens of every ``name`` header, trimmed and lower-cased."""
    out = []
    for v in header_values(headers, name):
        for tok in v.split(b","):
            tok = tok.strip(b" \t").lower()
            if tok:
                out.append(tok)
    return out


_TOKEN = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_TOKEN_CHARS = bytes(sorted(_TOKEN))


#: Canonical forms already computed, by wire spelling: header names repeat from request to
#: request, so the hot path is one dict lookup.  Bounded: cleared when full.
_CANONICAL: dict[bytes, bytes] = {}
_CANONICAL_MAX = 4096


def canonical_key(name: bytes) -> bytes:
    """
    Go's ``textproto.CanonicalMIMEHeaderKey``: ``x-piko-endpoint`` -> ``X-Piko-Endpoint``.

    Names holding a byte that is not a token character are returned unchanged, as Go does.
    """
    key = _CANONICAL.get(name)
    if key is not None:
        return key
    if name.translate(None, _TOKEN_CHARS):
        key = bytes(name)
    else:
        key = b"-".join([part.capitalize() for part in name.split(b"-")])
    if len(_CANONICAL) >= _CANONICAL_MAX:
        _CANONICAL.clear()
    _CANONICAL[bytes(name)] = key
    return key


#: ``bytes.translate`` tables marking, with the case bit 0x20, the ASCII letters of a block of
#: names, and the bytes after which Go upper-cases a letter: the hyphen, and the line feed that
#: joins names.
_LETTER_BITS = bytes(0x20 if chr(b).isascii() and chr(b).isalpha() else 0 for b in range(256))
_BREAK_BITS = bytes(0x20 if b in b"-\n" else 0 for b in range(256))
_TOKEN_CHARS_LF = _TOKEN_CHARS + b"\n"


def canonical_keys(names: Sequence[bytes]) -> list[bytes]:
    """
    :func:`canonical_key` of every name in ``names``, in bulk.

    A large head can carry tens of thousands of distinct names: one by one, through a bounded
    cache they overflow, they cost about 7 µs each (0.4 s for a 770 KB head, long enough to
    starve the reactor).  Here the names are joined and canonicalised with a handful of
    C-level passes over their bytes, whatever the names, in time linear in their length: the
    block is lower-cased, and the case bit cleared on each letter that starts the block or
    follows a hyphen or line feed (the bytes read as one big integer, the letters and breaks
    marked by ``translate`` and the marks of the breaks shifted one byte on).
    """
    if len(names) < 8:
        return [canonical_key(n) for n in names]
    block = b"\n".join(names)
    if block.count(b"\n") != len(names) - 1 or block.translate(None, _TOKEN_CHARS_LF):
        # A name with a line feed or another non-token byte (never from llhttp, which
        # refuses them): one by one, which leaves such names unchanged as Go does.
        return [canonical_key(n) for n in names]
    size = len(block)
    if not size:
        return [b""] * len(names)
    low = block.lower()
    letters = int.from_bytes(low.translate(_LETTER_BITS), "big")
    breaks = int.from_bytes(low.translate(_BREAK_BITS), "big")
    # Big-endian: shifting right by 8 bits moves each mark to the byte after it.
    upper = ((breaks >> 8) | (0x20 << (8 * (size - 1)))) & letters
    return (int.from_bytes(low, "big") ^ upper).to_bytes(size, "big").split(b"\n")


def canonical_columns(
    headers: Sequence[tuple[bytes, bytes]],
) -> tuple[list[bytes], list[bytes], bool]:
    """
    Go's ``http.Header`` for ``headers``, flattened into two lists: canonical keys and values
    in wire order (a key's values keep their order); and whether the values are known clean
    (trimmed, no line breaks: those of a packed head, which llhttp checked).

    Linear in the head's bytes with no Python code per header for a :class:`PackedHeaders`:
    its columns come from a few passes over the bytes and the names are canonicalised in
    bulk (:func:`canonical_keys`).  One by one, a 770 KB head of 59,000 distinct names cost
    half a second of CPU, long enough to starve the reactor (and the yamux keepalives) when a
    few dozen such requests came at once.
    """
    if isinstance(headers, PackedHeaders):
        names, values = headers.columns()
        return canonical_keys(names), values, True
    return canonical_keys([n for n, _ in headers]), [v for _, v in headers], False


def endpoint_id_from_request(headers: Sequence[tuple[bytes, bytes]]) -> str | None:
    """
    The endpoint a downstream request names, exactly as Go's ``EndpointIDFromRequest``.

    ``x-piko-endpoint`` (any case) wins when non-empty; otherwise the ``Host`` with its port
    stripped gives the first DNS label if it contains a dot and is not an IP address.

    :returns: the endpoint id, or None when the request names none.
    """
    endpoint = header_get(headers, b"x-piko-endpoint")
    if endpoint:
        return endpoint.decode("latin-1")
    host = (header_get(headers, b"host") or b"").decode("latin-1")
    host = _strip_port(host)
    if not host:
        return None
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return None
    if "." in host:
        return host.split(".", 1)[0]
    return None


def _strip_port(host: str) -> str:
    # Go: net.SplitHostPort, falling back to the whole string when it has no port.
    if host.startswith("["):
        end = host.find("]")
        return host[1:end] if end != -1 else host
    if host.count(":") == 1:
        return host.split(":", 1)[0]
    return host


# Go's http.StatusText where it differs from Python's phrases.
_GO_STATUS_TEXT = {
    413: "Request Entity Too Large",
    414: "Request URI Too Long",
    416: "Requested Range Not Satisfiable",
    418: "I'm a teapot",
    422: "Unprocessable Entity",
}


_STATUS_TEXT: dict[int, bytes] = {}


def status_text(code: int) -> bytes:
    """Go's ``http.StatusText``, with Go's ``status code N`` fallback for unknown codes."""
    text = _STATUS_TEXT.get(code)
    if text is not None:
        return text
    if code in _GO_STATUS_TEXT:
        text = _GO_STATUS_TEXT[code].encode()
    else:
        try:
            text = HTTPStatus(code).phrase.encode()
        except ValueError:
            text = b"status code %d" % (code,)
    if len(_STATUS_TEXT) < 1024:
        _STATUS_TEXT[code] = text
    return text


#: The last whole second formatted by :func:`http_date`, and its text: one format per second.
_last_date: tuple[int, bytes] = (-1, b"")


def http_date(seconds: float) -> bytes:
    """Format ``seconds`` since the epoch as Go's ``http.TimeFormat`` (RFC 7231 IMF-fixdate)."""
    global _last_date
    whole = int(seconds // 1)
    last, text = _last_date
    if whole == last:
        return text
    text = formatdate(whole, usegmt=True).encode()
    _last_date = (whole, text)
    return text


def serialize_headers(headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    """Render header lines (each ending CRLF), without the blank line."""
    return b"".join(b"%s: %s\r\n" % (n, v) for n, v in headers)


def serialize_request_head(head: RequestHead) -> bytes:
    """Render ``head`` as wire bytes, ending with the blank line."""
    return (
        b"%s %s HTTP/%s\r\n" % (head.method, head.target, head.version)
        + serialize_headers(head.headers)
        + b"\r\n"
    )


def serialize_response_head(head: ResponseHead) -> bytes:
    """Render ``head`` as wire bytes, ending with the blank line."""
    return (
        b"HTTP/%s %d %s\r\n" % (head.version, head.status, head.reason)
        + serialize_headers(head.headers)
        + b"\r\n"
    )


def endpoint_from_path(path: str, route: str) -> str | None:
    """
    The endpoint id of ``route + <id>``: one non-empty, unescaped path segment.

    Mirrors gin's ``:endpointID`` parameter, matched on the decoded path.
    """
    if not path.startswith(route):
        return None
    endpoint_id = unquote(path[len(route) :])
    if not endpoint_id or "/" in endpoint_id:
        return None
    return endpoint_id

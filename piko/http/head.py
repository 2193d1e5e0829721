# -*- test-case-name: piko.test.http.test_head -*-
"""
HTTP/1.1 message heads as immutable values, and the pure helpers around them.

Headers are kept as an ordered list of ``(name, value)`` byte pairs exactly as they arrived
(casing and order), because Go Piko's wire behaviour depends on both: the server re-sorts and
re-cases them when it forwards, and the interop transcripts are compared byte for byte.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from email.utils import formatdate
from http import HTTPStatus

from attrs import field, frozen

Headers = tuple[tuple[bytes, bytes], ...]


def _as_headers(value: Iterable[tuple[bytes, bytes]]) -> Headers:
    return tuple((bytes(n), bytes(v)) for n, v in value)


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
    for n, v in headers:
        if n.lower() == lname:
            return v
    return None


def header_values(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> list[bytes]:
    """Return every value of ``name`` (any case), in order."""
    lname = name.lower()
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
    if any(c not in _TOKEN for c in name):
        key = name
    else:
        key = b"-".join(part[:1].upper() + part[1:].lower() for part in name.split(b"-"))
    if len(_CANONICAL) >= _CANONICAL_MAX:
        _CANONICAL.clear()
    _CANONICAL[bytes(name)] = key
    return key


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

# -*- test-case-name: piko.test.http.test_errors -*-
"""
Piko's own HTTP error responses, byte for byte as Go Piko v0.9.0 writes them.

Go has two styles: gin's ``c.JSON`` (``application/json; charset=utf-8``, no trailing newline)
and ``net/http``'s ``http.Error`` (``X-Content-Type-Options: nosniff``, body ending in ``\\n``).
Go clients only parse the ``error`` field when Content-Type starts with ``application/json``,
so these must not drift.  Each function takes the ``Date`` value and returns the whole response.
"""

from __future__ import annotations

from piko.http.rewrite import go_response_head

_GIN_JSON = ((b"Content-Type", b"application/json; charset=utf-8"),)
_ERROR_JSON = ((b"Content-Type", b"application/json"), (b"X-Content-Type-Options", b"nosniff"))
_ERROR_TEXT = (
    (b"Content-Type", b"text/plain; charset=utf-8"),
    (b"X-Content-Type-Options", b"nosniff"),
)


def _response(
    status: int,
    headers: tuple[tuple[bytes, bytes], ...],
    body: bytes,
    date: bytes,
    close: bool,
    http11: bool,
) -> bytes:
    return (
        go_response_head(
            status, headers, date, content_length=len(body), close=close, http11=http11
        )
        + body
    )


def gin_json_error(
    status: int, message: str, date: bytes, *, close: bool = False, http11: bool = True
) -> bytes:
    """A gin ``c.JSON(status, gin.H{"error": message})`` response."""
    body = b'{"error":"%s"}' % (message.encode(),)
    return _response(status, _GIN_JSON, body, date, close, http11)


def net_http_json_error(
    status: int, message: str, date: bytes, *, close: bool = False, http11: bool = True
) -> bytes:
    """Piko's ``http.Error(w, `{"error":...}`, status)`` with ``Content-Type: application/json``."""
    body = b'{"error":"%s"}\n' % (message.encode(),)
    return _response(status, _ERROR_JSON, body, date, close, http11)


def missing_endpoint_id(date: bytes, *, close: bool = False, http11: bool = True) -> bytes:
    """400: the downstream request names no endpoint (gin style)."""
    return gin_json_error(400, "missing endpoint id", date, close=close, http11=http11)


def no_available_upstreams(date: bytes, *, close: bool = False, http11: bool = True) -> bytes:
    """502: no local upstream, and no remote node may be used."""
    return net_http_json_error(502, "no available upstreams", date, close=close, http11=http11)


def upstream_unreachable(date: bytes, *, close: bool = False, http11: bool = True) -> bytes:
    """502: opening the stream or connection failed, or it broke before a response head."""
    return net_http_json_error(502, "upstream unreachable", date, close=close, http11=http11)


def upstream_timeout(date: bytes, *, close: bool = False, http11: bool = True) -> bytes:
    """504: no response head within the proxy timeout."""
    return net_http_json_error(504, "upstream timeout", date, close=close, http11=http11)


def not_found(date: bytes, *, close: bool = False, http11: bool = True) -> bytes:
    """404 ``404 page not found`` (gin's NoRoute; also a POST to the upstream route)."""
    return _response(
        404, ((b"Content-Type", b"text/plain"),), b"404 page not found", date, close, http11
    )


def websocket_bad_request(date: bytes, *, close: bool = False, http11: bool = True) -> bytes:
    """400 from gorilla's Upgrade: a non-WebSocket request on the upstream route."""
    headers = (*_ERROR_TEXT, (b"Sec-Websocket-Version", b"13"))
    return _response(400, headers, b"Bad Request\n", date, close, http11)


def websocket_forbidden(date: bytes, *, close: bool = False, http11: bool = True) -> bytes:
    """403 from gorilla's Upgrade: the ``Origin`` does not match ``Host``."""
    headers = (*_ERROR_TEXT, (b"Sec-Websocket-Version", b"13"))
    return _response(403, headers, b"Forbidden\n", date, close, http11)


def agent_upstream_unreachable_relayed(date: bytes) -> bytes:
    """
    The Go agent's 502 as the proxy relays it to the client: every header sorted (Go's server
    re-serialises the agent's head), so the order differs from :func:`upstream_unreachable`.
    """
    body = b'{"error":"upstream unreachable"}\n'
    headers = (*_ERROR_JSON, (b"Content-Length", b"%d" % len(body)), (b"Date", date))
    return go_response_head(502, headers, date) + body


# Go's net/http answers these itself, before any handler runs (server.go ``errorHeaders``).
_GO_ERROR_HEADERS = b"\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n"


def request_header_too_large() -> bytes:
    """Go's 431 for a header block over ``MaxHeaderBytes`` (the connection then closes)."""
    text = b"431 Request Header Fields Too Large"
    return b"HTTP/1.1 " + text + _GO_ERROR_HEADERS + text


def bad_request(reason: str = "") -> bytes:
    """Go's 400 for a malformed request (the connection then closes)."""
    text = b"400 Bad Request"
    body = text + (b": " + reason.encode() if reason else b"")
    return b"HTTP/1.1 " + text + _GO_ERROR_HEADERS + body


CONTINUE_100 = b"HTTP/1.1 100 Continue\r\n\r\n"

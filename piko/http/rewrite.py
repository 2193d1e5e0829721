# -*- test-case-name: piko.test.http.test_rewrite -*-
"""
Go ``httputil.ReverseProxy`` + ``net/http`` head rewriting, reproduced byte for byte.

Three places in Piko write HTTP heads the way Go does, and the interop transcripts pin them:

* the server forwarding a downstream request onto a yamux stream
  (:func:`rewrite_request` with ``close=True``);
* the agent forwarding that request to the local service (:func:`rewrite_request` with
  ``close=False`` and a target path);
* any Go ``http.Server`` writing a response head (:func:`go_response_head`), used for the agent's
  answer on the stream, the proxy's answer to its client and Piko's own error responses.

All functions are pure: heads and parameters in, heads or bytes out.
"""

from __future__ import annotations

from collections.abc import Sequence

from attrs import frozen

from piko.http.head import (
    Headers,
    RequestHead,
    ResponseHead,
    canonical_key,
    header_get,
    header_tokens,
    header_values,
    serialize_headers,
    status_text,
)

# Go's hopHeaders (httputil.ReverseProxy), canonical form.
HOP_BY_HOP = frozenset(
    {
        b"Connection",
        b"Proxy-Connection",
        b"Keep-Alive",
        b"Proxy-Authenticate",
        b"Proxy-Authorization",
        b"Te",
        b"Trailer",
        b"Transfer-Encoding",
        b"Upgrade",
    }
)

# Headers Go's Request.Write emits itself, in its own slots, not in the sorted block.
_REQUEST_SELF_WRITTEN = frozenset(
    {b"Host", b"User-Agent", b"Content-Length", b"Transfer-Encoding", b"Trailer"}
)


@frozen
class BodyFraming:
    """
    How a message body is delimited on the wire.

    :ivar length: the Content-Length, or None.
    :ivar chunked: True for ``Transfer-Encoding: chunked``.
    When neither is set a request has no body and a response runs until the connection closes.
    """

    length: int | None = None
    chunked: bool = False

    @property
    def empty(self) -> bool:
        """True when the message certainly carries no body bytes."""
        return not self.chunked and self.length == 0


NO_BODY = BodyFraming(length=0)


def canonical_groups(headers: Sequence[tuple[bytes, bytes]]) -> dict[bytes, list[bytes]]:
    """Group header values under Go's canonical keys, keeping value order (Go's ``http.Header``)."""
    out: dict[bytes, list[bytes]] = {}
    for n, v in headers:
        out.setdefault(canonical_key(n), []).append(v)
    return out


def _sorted_lines(
    groups: dict[bytes, list[bytes]], exclude: frozenset[bytes] = frozenset()
) -> list[tuple[bytes, bytes]]:
    # Go's Header.writeSubset: keys sorted, values in order, newlines folded to spaces, trimmed.
    out = []
    for key in sorted(groups):
        if key in exclude:
            continue
        for v in groups[key]:
            if b"\r" in v or b"\n" in v:
                v = v.replace(b"\r", b" ").replace(b"\n", b" ")
            out.append((key, v.strip(b" \t")))
    return out


def remove_hop_by_hop(groups: dict[bytes, list[bytes]]) -> None:
    """Delete hop-by-hop headers and those named in ``Connection``, as Go's ReverseProxy does."""
    for v in groups.get(b"Connection", []):
        for name in v.split(b","):
            name = name.strip(b" \t")
            if name:
                groups.pop(canonical_key(name), None)
    for name in HOP_BY_HOP:
        groups.pop(name, None)


def _tokens(values: list[bytes] | None) -> list[bytes]:
    """The comma-separated tokens of ``values``, trimmed and lower-cased (as header_tokens)."""
    if not values:
        return []
    out = []
    for v in values:
        for tok in v.split(b","):
            tok = tok.strip(b" \t").lower()
            if tok:
                out.append(tok)
    return out


def upgrade_type(headers: Sequence[tuple[bytes, bytes]]) -> bytes | None:
    """The ``Upgrade`` value if ``Connection`` has the ``upgrade`` token (Go's ``upgradeType``)."""
    if b"upgrade" not in header_tokens(headers, b"connection"):
        return None
    return header_get(headers, b"upgrade")


def join_target(prefix_path: bytes, prefix_query: bytes, target: bytes) -> bytes:
    """
    Join an agent target URL's path and query with a request target, as Go's
    ``NewSingleHostReverseProxy`` does (``singleJoiningSlash`` and the query merge).
    """
    path, sep, query = target.partition(b"?")
    if prefix_path:
        a_slash = prefix_path.endswith(b"/")
        b_slash = path.startswith(b"/")
        if a_slash and b_slash:
            path = prefix_path + path[1:]
        elif not a_slash and not b_slash:
            path = prefix_path + b"/" + path
        else:
            path = prefix_path + path
    if prefix_query and query:
        query = prefix_query + b"&" + query
    elif prefix_query:
        query = prefix_query
    return path + (b"?" + query if query or (sep and not prefix_query) else b"")


def rewrite_request(
    head: RequestHead,
    framing: BodyFraming,
    client_ip: str | None,
    *,
    close: bool,
    add_accept_encoding: bool = False,
    target_path: bytes = b"",
    target_query: bytes = b"",
) -> bytes:
    """
    The request head Go's ReverseProxy + Transport write for ``head``.

    :param framing: how the incoming body is delimited; the outgoing head declares the same
        length, or ``Transfer-Encoding: chunked`` (the body is re-chunked).
    :param client_ip: appended to ``X-Forwarded-For`` (None: no X-Forwarded-For change).
    :param close: True for Piko's server (``DisableKeepAlives``: one request per stream, so
        ``Connection: close`` is added unless upgrading); False for the agent's keep-alive pool.
    :param add_accept_encoding: Go's Transport adds ``Accept-Encoding: gzip`` when absent and then
        gunzips the response behind the client's back.  Piko for Twisted does not decompress, so
        it defaults to not adding it, which keeps clients from receiving gzip they did not ask
        for.  Pass True only to reproduce Go's bytes.
    :param target_path: the agent target URL's path (joined in front of the request path).
    :param target_query: the agent target URL's raw query (merged before the request query).
    :returns: the head bytes, ending with the blank line.
    """
    groups = canonical_groups(head.headers)
    host = groups.pop(b"Host", [b""])[0]
    # From the groups (each name's values, in order, under its canonical key) rather than
    # more passes over the headers: the same values as upgrade_type and header_tokens see.
    up_type = None
    if b"upgrade" in _tokens(groups.get(b"Connection")):
        upgrade = groups.get(b"Upgrade")
        up_type = upgrade[0] if upgrade else None
    te_trailers = b"trailers" in _tokens(groups.get(b"Te"))
    remove_hop_by_hop(groups)
    if te_trailers:
        groups[b"Te"] = [b"trailers"]
    if up_type is not None:
        groups[b"Connection"] = [b"Upgrade"]
        groups[b"Upgrade"] = [up_type]
    if client_ip is not None:
        prior = groups.get(b"X-Forwarded-For")
        groups[b"X-Forwarded-For"] = [
            b", ".join([*prior, client_ip.encode()]) if prior else client_ip.encode()
        ]
    groups[b"X-Piko-Forward"] = [b"true"]

    target = head.target
    if target_path or target_query:
        target = join_target(target_path, target_query, target)

    lines: list[tuple[bytes, bytes]] = [(b"Host", host)]
    user_agent = groups.get(b"User-Agent", [b""])[0].strip(b" \t")
    if user_agent:
        lines.append((b"User-Agent", user_agent))
    if framing.chunked:
        lines.append((b"Transfer-Encoding", b"chunked"))
    elif framing.length:
        lines.append((b"Content-Length", b"%d" % framing.length))
    elif head.method in (b"POST", b"PUT", b"PATCH"):
        lines.append((b"Content-Length", b"0"))
    lines.extend(_sorted_lines(groups, _REQUEST_SELF_WRITTEN))
    extra: list[tuple[bytes, bytes]] = []
    if (
        add_accept_encoding
        and b"Accept-Encoding" not in groups
        and b"Range" not in groups
        and head.method != b"HEAD"
    ):
        extra.append((b"Accept-Encoding", b"gzip"))
    if close and up_type is None:
        extra.append((b"Connection", b"close"))
    lines.extend(extra)
    return b"%s %s HTTP/1.1\r\n" % (head.method, target) + serialize_headers(lines) + b"\r\n"


def response_headers_for_relay(head: ResponseHead) -> Headers:
    """
    The headers a Go ReverseProxy copies from an upstream response: canonical keys, hop-by-hop
    removed (kept for ``101``, which Go relays as is).
    """
    groups = canonical_groups(head.headers)
    if head.status != 101:
        remove_hop_by_hop(groups)
    return tuple((k, v) for k, vs in groups.items() for v in vs)


def upgrade_response_head(head: ResponseHead) -> bytes:
    """The ``101`` head Go's ReverseProxy writes to the client: peer's reason, headers sorted."""
    groups = canonical_groups(head.headers)
    lines = _sorted_lines(groups, frozenset({b"Content-Length", b"Transfer-Encoding", b"Trailer"}))
    reason = head.reason or status_text(head.status)
    return b"HTTP/1.1 %d %s\r\n" % (head.status, reason) + serialize_headers(lines) + b"\r\n"


def body_allowed(status: int, method: bytes = b"GET") -> bool:
    """Whether a response with ``status`` to ``method`` may carry a body."""
    return not (100 <= status < 200 or status in (204, 304) or method == b"HEAD")


def go_response_head(
    status: int,
    headers: Sequence[tuple[bytes, bytes]],
    date: bytes,
    *,
    http11: bool = True,
    close: bool = False,
    content_length: int | None = None,
    chunked: bool = False,
) -> bytes:
    """
    The head a Go ``http.Server`` writes for a handler's ``status`` and ``headers``.

    Handler headers come first, sorted by canonical key; then Go's extra headers in Go's order:
    ``Date`` (unless set), ``Content-Length`` (when the server computed it), ``Connection: close``
    (HTTP/1.1 only), ``Transfer-Encoding: chunked``.

    :param date: the ``Date`` value (from an injected clock).
    :param http11: False when answering an HTTP/1.0 request (``HTTP/1.0`` status line, no
        ``Connection`` header; the connection closes after the body).
    :param content_length: a length Go computed itself (set only when ``headers`` has none).
    """
    groups = canonical_groups(headers)
    if chunked:
        groups.pop(b"Content-Length", None)
    lines = _sorted_lines(groups, frozenset({b"Transfer-Encoding", b"Trailer"}))
    if b"Date" not in groups:
        lines.append((b"Date", date))
    if content_length is not None and b"Content-Length" not in groups:
        lines.append((b"Content-Length", b"%d" % content_length))
    if (
        close
        and http11
        and b"close"
        not in [
            t.strip().lower() for v in header_values(headers, b"connection") for t in v.split(b",")
        ]
    ):
        lines.append((b"Connection", b"close"))
    if chunked and http11:
        lines.append((b"Transfer-Encoding", b"chunked"))
    version = b"1.1" if http11 else b"1.0"
    return (
        b"HTTP/%s %d %s\r\n" % (version, status, status_text(status))
        + serialize_headers(lines)
        + b"\r\n"
    )

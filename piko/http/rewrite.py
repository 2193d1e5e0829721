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
from itertools import compress
from operator import not_

from attrs import frozen

from piko.http.head import (
    Headers,
    RequestHead,
    ResponseHead,
    canonical_columns,
    canonical_key,
    header_get,
    header_tokens,
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

#: The keys :func:`rewrite_request` reads values of.
_REQUEST_LOOKUPS = frozenset(
    {
        b"Host",
        b"Connection",
        b"Upgrade",
        b"Te",
        b"X-Forwarded-For",
        b"User-Agent",
        b"Accept-Encoding",
        b"Range",
    }
)
_CONNECTION = frozenset({b"Connection"})
_CRLF = b"\r\n"
_COLON_SP = b": "
#: The keys :func:`go_response_head` reads values of, and those it leaves out of the block.
_RESPONSE_LOOKUPS = frozenset({b"Connection", b"Content-Length", b"Date"})
_RESPONSE_EXCLUDED = frozenset({b"Transfer-Encoding", b"Trailer"})
_RESPONSE_EXCLUDED_CHUNKED = _RESPONSE_EXCLUDED | {b"Content-Length"}
_UPGRADE_EXCLUDED = frozenset({b"Content-Length", b"Transfer-Encoding", b"Trailer"})


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


def canonical_pairs(headers: Sequence[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """
    ``(canonical key, value)`` for every header, in wire order (see
    :func:`~piko.http.head.canonical_columns`).
    """
    keys, values, _ = canonical_columns(headers)
    return list(zip(keys, values, strict=True))


def _collect(
    keys: list[bytes], values: list[bytes], wanted: frozenset[bytes]
) -> dict[bytes, list[bytes]]:
    """The values of the few ``wanted`` keys a rewrite looks at, in one pass over ``keys``."""
    out: dict[bytes, list[bytes]] = {}
    for i in compress(range(len(keys)), map(wanted.__contains__, keys)):
        out.setdefault(keys[i], []).append(values[i])
    return out


def _clean_value(v: bytes) -> bytes:
    # Go's Header.writeSubset: newlines folded to spaces, then trimmed.
    if b"\r" in v or b"\n" in v:
        v = v.replace(b"\r", b" ").replace(b"\n", b" ")
    return v.strip(b" \t")


def _sorted_block(
    keys: list[bytes],
    values: list[bytes],
    exclude: frozenset[bytes] | set[bytes],
    clean: bool,
    extra: Sequence[tuple[bytes, bytes]] = (),
) -> bytes:
    """
    Go's ``Header.writeSubset``: the header lines (each ending CRLF) sorted by key, a key's
    values in order, less the keys in ``exclude``; all in C but the sort's key lookups.

    :param clean: True when every value is known trimmed and free of line breaks, which
        spares a pass over them.
    :param extra: pairs added after the exclusion (keys set anew), values already clean.
    """
    count = len(keys)
    kept = list(compress(range(count), map(not_, map(exclude.__contains__, keys))))
    if extra:
        keys = keys + [k for k, _ in extra]
        values = values + [v for _, v in extra]
        kept.extend(range(count, len(keys)))
    # sort() is stable: a key's values keep their wire order, as in Go's http.Header.
    kept.sort(key=keys.__getitem__)
    order = kept
    if not order:
        return b""
    if not clean:
        values = [_clean_value(v) for v in values]
    # Key, ": ", value, CRLF, interleaved by slice assignment and joined once.
    n = len(order)
    parts: list[bytes] = [_CRLF] * (4 * n)
    parts[0::4] = map(keys.__getitem__, order)
    parts[1::4] = [_COLON_SP] * n
    parts[2::4] = map(values.__getitem__, order)
    return b"".join(parts)


def _hop_by_hop(connection: list[bytes] | None) -> set[bytes]:
    """
    The keys Go's ReverseProxy removes: those named in ``Connection`` (its ``connection``
    values) and the hop-by-hop ones.
    """
    drop = set(HOP_BY_HOP)
    for v in connection or ():
        for name in v.split(b","):
            name = name.strip(b" \t")
            if name:
                drop.add(canonical_key(name))
    return drop


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
    keys, values, clean = canonical_columns(head.headers)
    found = _collect(keys, values, _REQUEST_LOOKUPS)
    host = found.get(b"Host", [b""])[0]
    up_type = None
    if b"upgrade" in _tokens(found.get(b"Connection")):
        upgrade = found.get(b"Upgrade")
        up_type = upgrade[0] if upgrade else None
    te_trailers = b"trailers" in _tokens(found.get(b"Te"))
    # Go's ReverseProxy deletes these from its copy of the header, then sets a few again.
    removed = _hop_by_hop(found.get(b"Connection"))
    for key in removed:
        found.pop(key, None)
    added: list[tuple[bytes, bytes]] = []
    if te_trailers:
        added.append((b"Te", b"trailers"))
    if up_type is not None:
        added.append((b"Connection", b"Upgrade"))
        added.append((b"Upgrade", _clean_value(up_type)))
    if client_ip is not None:
        removed.add(b"X-Forwarded-For")
        prior = found.get(b"X-Forwarded-For")
        xff = b", ".join([*prior, client_ip.encode()]) if prior else client_ip.encode()
        added.append((b"X-Forwarded-For", _clean_value(xff)))
    removed.add(b"X-Piko-Forward")
    added.append((b"X-Piko-Forward", b"true"))

    target = head.target
    if target_path or target_query:
        target = join_target(target_path, target_query, target)

    lines: list[tuple[bytes, bytes]] = [(b"Host", host)]
    user_agent = found.get(b"User-Agent", [b""])[0].strip(b" \t")
    if user_agent:
        lines.append((b"User-Agent", user_agent))
    if framing.chunked:
        lines.append((b"Transfer-Encoding", b"chunked"))
    elif framing.length:
        lines.append((b"Content-Length", b"%d" % framing.length))
    elif head.method in (b"POST", b"PUT", b"PATCH"):
        lines.append((b"Content-Length", b"0"))
    removed.update(_REQUEST_SELF_WRITTEN)
    block = _sorted_block(keys, values, removed, clean, added)
    extra: list[tuple[bytes, bytes]] = []
    if (
        add_accept_encoding
        and b"Accept-Encoding" not in found
        and b"Range" not in found
        and head.method != b"HEAD"
    ):
        extra.append((b"Accept-Encoding", b"gzip"))
    if close and up_type is None:
        extra.append((b"Connection", b"close"))
    return (
        b"%s %s HTTP/1.1\r\n" % (head.method, target)
        + serialize_headers(lines)
        + block
        + serialize_headers(extra)
        + b"\r\n"
    )


def response_headers_for_relay(head: ResponseHead) -> Headers:
    """
    The headers a Go ReverseProxy copies from an upstream response: canonical keys, hop-by-hop
    removed (kept for ``101``, which Go relays as is), in wire order (whoever writes them
    sorts them by key, each key's values in this order, as Go's ``http.Header`` does).
    """
    keys, values, _ = canonical_columns(head.headers)
    if head.status == 101:
        return tuple(zip(keys, values, strict=True))
    removed = _hop_by_hop(_collect(keys, values, _CONNECTION).get(b"Connection"))
    return tuple(p for p in zip(keys, values, strict=True) if p[0] not in removed)


def upgrade_response_head(head: ResponseHead) -> bytes:
    """The ``101`` head Go's ReverseProxy writes to the client: peer's reason, headers sorted."""
    keys, values, clean = canonical_columns(head.headers)
    block = _sorted_block(keys, values, _UPGRADE_EXCLUDED, clean)
    reason = head.reason or status_text(head.status)
    return b"HTTP/1.1 %d %s\r\n" % (head.status, reason) + block + b"\r\n"


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
    keys, values, clean = canonical_columns(headers)
    found = _collect(keys, values, _RESPONSE_LOOKUPS)
    exclude = _RESPONSE_EXCLUDED
    if chunked:
        found.pop(b"Content-Length", None)
        exclude = _RESPONSE_EXCLUDED_CHUNKED
    block = _sorted_block(keys, values, exclude, clean)
    lines: list[tuple[bytes, bytes]] = []
    if b"Date" not in found:
        lines.append((b"Date", date))
    if content_length is not None and b"Content-Length" not in found:
        lines.append((b"Content-Length", b"%d" % content_length))
    if (
        close
        and http11
        and b"close"
        not in [t.strip().lower() for v in found.get(b"Connection", ()) for t in v.split(b",")]
    ):
        lines.append((b"Connection", b"close"))
    if chunked and http11:
        lines.append((b"Transfer-Encoding", b"chunked"))
    version = b"1.1" if http11 else b"1.0"
    return (
        b"HTTP/%s %d %s\r\n" % (version, status, status_text(status))
        + block
        + serialize_headers(lines)
        + b"\r\n"
    )

"""
The oracle: normalise what each end saw, then compare a topology with the
all-Go one that ran the same batch.

Normalising removes only what HTTP says is not end to end, what differs per
run, and the deviations written down in ``docs/compatibility.md``; each rule
below names its reason.  Everything else must be equal, or, where ours is
documented to do better, equal to the better outcome.
"""

from __future__ import annotations

from typing import Any

from piko.test.differential.spec import Exchange, body_bytes
from piko.test.differential.topology import TopologySpec
from piko.test.differential.wire import digest

#: RFC 9110 7.6.1 connection-specific fields: a proxy removes and may add them.
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authenticate",
    "proxy-authorization",
}
#: Per-run values: present or absent is compared, the value is not.
MASKED_VALUES = {"date"}


def normalise_headers(
    headers: list[tuple[str, str]], *, keep_upgrade: bool = False
) -> list[tuple[str, str]]:
    """
    Header fields as a proxy must preserve them: names case-insensitive
    (RFC 9110 5.1), fields of one name in order, distinct names in any order
    (Go's ``http.Header`` is a map and writes them sorted), hop-by-hop fields
    and those the Connection field names removed, per-run values masked.
    """
    listed = {
        token.strip().lower()
        for name, value in headers
        if name.lower() == "connection"
        for token in value.split(",")
    }
    out = []
    for name, value in headers:
        lowered = name.lower()
        if lowered in HOP_BY_HOP or lowered in listed:
            if keep_upgrade and lowered == "upgrade":
                out.append((lowered, value.lower()))
            continue
        out.append((lowered, "<masked>" if lowered in MASKED_VALUES else value))
    return sorted(out, key=lambda field: field[0])


def _client_sent(exchange: Exchange, name: str) -> bool:
    return any(k.lower() == name for k, _ in exchange.headers)


def normalise_service(
    exchange: Exchange, records: list[dict[str, Any]], topology: TopologySpec
) -> Any:
    """What the local service received for ``exchange``, in comparable form."""
    if exchange.kind == "tcp":
        return [{k: r.get(k) for k in ("len", "body")} for r in records]
    out = []
    for record in records:
        headers = normalise_headers(record["headers"], keep_upgrade=exchange.kind == "ws")
        go_in_path = _go_in_path(topology)
        if go_in_path and not _client_sent(exchange, "accept-encoding"):
            # compatibility.md: Go's server and agent add ``Accept-Encoding: gzip``
            # (net/http's transport); ours passes the request as the client sent it,
            # so an all-ours path must not show it.
            headers = [f for f in headers if f != ("accept-encoding", "gzip")]
        entry = {
            "method": record["method"],
            "target": record["target"],
            "version": record["version"],
            "headers": headers,
        }
        if exchange.kind == "ws":
            entry["messages"] = record.get("messages")
            entry["closed"] = record.get("closed")
        elif exchange.service == "early":
            entry["early"] = True  # how much body follows an early answer is not compared
        else:
            entry.update(
                {
                    k: record.get(k)
                    for k in ("framing", "body_len", "body", "trailers", "body_complete")
                }
            )
            entry["trailers"] = normalise_headers(entry["trailers"] or [])
        out.append(entry)
    return out


def normalise_client(exchange: Exchange, record: dict[str, Any]) -> Any:
    """What the client received for ``exchange``, in comparable form."""
    out = dict(record)
    out.pop("seconds", None)
    if "headers" in out:
        headers = normalise_headers(out["headers"], keep_upgrade=exchange.kind == "ws")
        service_typed = any(k.lower() == "content-type" for k, _ in exchange.response_headers)
        if not service_typed and out.get("status") == exchange.status:
            # compatibility.md: Go's net/http sniffs a Content-Type for a response
            # the service sent without one; ours passes the response as it was sent.
            headers = [f for f in headers if f[0] != "content-type"]
        if _empty_unsized(exchange, out):
            # Go itself varies: its ReverseProxy, copying a response with no
            # Content-Length, arms a flush at once (flushInterval -1) and races
            # it with the end of an empty body; the flush wins and the client sees
            # an empty chunked body, or the handler ends first and net/http sends
            # ``Content-Length: 0``.  The same empty message either way.
            headers = [f for f in headers if f != ("content-length", "0")]
            out["framing"] = "empty"
        out["headers"] = headers
    if out.get("trailers"):
        out["trailers"] = normalise_headers(out["trailers"])
    return out


def gin_retypes(exchange: Exchange, client: dict[str, Any]) -> bool:
    """
    Whether a Go server or agent in the path replaces the service's
    ``Content-Type`` with ``text/plain`` in what the client sees.

    compatibility.md: both route every proxied request through gin's
    ``NoRoute``; when the handler wrote a 404 head but no body byte, gin's
    ``serveError`` takes the 404 for its own "no route", sets ``Content-Type:
    text/plain`` and tries to write ``404 page not found`` (refused: the
    proxied ``Content-Length`` is already sent).  So a 404 the service sent
    with ``Content-Length`` and no body (length 0, or any ``HEAD``) reaches
    the client retyped.  A chunked or close-framed empty 404 is not: the
    proxy flushes its head first, so gin sees it written.
    """
    return (
        exchange.kind == "http"
        and exchange.status == 404
        and client.get("status") == 404
        and any(k.lower() == "content-type" for k, _ in exchange.response_headers)
        and (
            exchange.method == "HEAD"
            or (exchange.response_framing == "length" and exchange.response_size == 0)
        )
    )


def _go_in_path(topology: TopologySpec) -> bool:
    """Whether an HTTP request of ``topology`` passes a Go server or a Go agent."""
    return "go" in (*topology.servers, topology.agent)


def _as_service_typed(exchange: Exchange, want: dict[str, Any]) -> dict[str, Any]:
    """``want`` with the ``Content-Type`` the service sent in place of Go's."""
    typed = [(k.lower(), v) for k, v in exchange.response_headers if k.lower() == "content-type"]
    headers = [f for f in want.get("headers", []) if f[0] != "content-type"] + typed
    return {**want, "headers": sorted(headers, key=lambda field: field[0])}


def _empty_unsized(exchange: Exchange, record: dict[str, Any]) -> bool:
    """Whether the client got, as it should, the empty body the service sent with no length."""
    return (
        exchange.kind == "http"
        and exchange.response_framing in ("chunked", "close")
        and exchange.response_size == 0
        and exchange.method != "HEAD"
        and exchange.status not in (204, 304)
        and record.get("status") == exchange.status
        and record.get("framing") in ("length", "chunked")
        and record.get("body_len") == 0
        and not record.get("trailers")
    )


def full_echo(exchange: Exchange) -> dict[str, Any]:
    """The client record of a TCP exchange whose echo arrived whole."""
    line = len(exchange.key) + 1
    data = body_bytes(exchange.key, exchange.body_size, "t")
    return {"end": "complete", "len": line + len(data), "body": digest(data)}


def compare(
    exchange: Exchange,
    topology: TopologySpec,
    ours: dict[str, Any],
    reference: dict[str, Any],
) -> list[str]:
    """
    The differences between one exchange's observations in ``topology`` and
    in its reference; empty when they agree (or ours is documented better).
    """
    problems: list[str] = []
    mine = ours["client"]
    if mine.get("end") == "hang":
        problems.append(f"hang: no end within the bound ({mine.get('seconds')} s)")
    if not exchange.checked:
        return problems
    if exchange.kind == "tcp" and exchange.tcp_half_close:
        # compatibility.md: a local half-close in ``forward`` keeps the reply with
        # ours; Go loses what had not come back yet (how much varies run to run).
        # So: a prefix of the echo, and all of it on an all-ours path.
        got = normalise_client(exchange, mine)
        echo = body_bytes(exchange.key, exchange.body_size, "t")
        received = max(0, (got.get("len") or 0) - len(exchange.key) - 1)
        if got.get("end") != "complete" or got.get("body") != digest(echo[:received]):
            problems.append(f"client: not a prefix of the echo: {got}")
        elif topology.impls == {"ours"} and got != full_echo(exchange):
            problems.append(f"client: ours must keep the reply after a half-close: {got}")
        return problems
    got = normalise_client(exchange, mine)
    want = normalise_client(exchange, reference["client"])
    if reference_failed(exchange, reference):
        return problems  # nothing to compare with; counted in the report
    if gin_retypes(exchange, want) and not _go_in_path(topology):
        want = _as_service_typed(exchange, want)
    if exchange.kind == "http" and exchange.service in ("early", "cut"):
        problems += _judge_partial(exchange, got, want, topology, ours["service"])
    elif got != want:
        problems.append(f"client: {_diff(want, got)}")
    got_s = normalise_service(exchange, ours["service"], topology)
    want_s = normalise_service(exchange, reference["service"], reference["topology"])
    if got_s != want_s:
        problems.append(f"service: {_diff(want_s, got_s)}")
    return problems


def reference_failed(exchange: Exchange, reference: dict[str, Any]) -> bool:
    """
    Whether Go itself failed this exchange: its proxy answered an error of its
    own and the request never reached the service.  Seen with the go-twin
    calibration: a Go two-node cluster answers some of 200 concurrent
    forwarded requests ``502 upstream unreachable``.  Such an exchange is not
    judged (ours doing better there is allowed); the report counts them.
    """
    status = reference["client"].get("status")
    return (
        exchange.kind != "tcp"
        and not reference["service"]
        and status in (502, 503, 504)
        and status != exchange.status
    )


def go_completes_cut_early_answer(
    exchange: Exchange,
    topology: TopologySpec,
    client: dict[str, Any],
    service: list[dict[str, Any]],
) -> bool:
    """
    Whether a Go server or agent in the path may have ended an early answer
    short and marked it complete: ``0\r\n\r\n`` after a part of the body.

    compatibility.md: Go's ``net/http`` server, once a handler writes the
    answer's head with the request body unread, reads (discards) that body
    itself, racing the ``ReverseProxy`` transport that streams it upstream.
    The transport then fails to read the rest of the upload, closes the
    stream (a yamux FIN mid-body) and the upload ends cut at the service.
    The hop behind it must then drop the exchange: a Go agent aborts its
    handler, a Go server reads a reset (from our agent) or an early EOF.  Go
    Piko's panic-recovery middleware (``handler panic``: ``net/http: abort
    Handler``) then swallows the ``ReverseProxy``'s ``http.ErrAbortHandler``,
    so ``net/http`` finishes the chunked answer as if whole.  Seed 731690393
    exchange 178: all-Go 3 of 10 runs, a Go server with our agent 9 of 10,
    our server with either agent 0 of 10; the Go agent writes the false
    ``0\r\n\r\n`` on the stream itself, ours resets the stream and the Go
    server writes it.

    So only with Go in the path, a chunked answer to the client, and an upload
    that reached the service cut (the sign of the race; a whole upload leaves
    no excuse).
    """
    return (
        _go_in_path(topology)
        and exchange.framing != "none"
        and client.get("framing") == "chunked"
        and any(record.get("body_complete") is False for record in service)
    )


def _judge_partial(
    exchange: Exchange,
    got: dict[str, Any],
    want: dict[str, Any],
    topology: TopologySpec,
    service: list[dict[str, Any]],
) -> list[str]:
    """
    A response the service answered early or cut: Go itself delivers a varying
    part of it (calibrated with the go-twin topologies), so the head must be
    Go's and the body a prefix of what the service sent, ending as Go's did or
    (better) as ``truncated`` when the service did cut it.  An early answer
    cut but marked complete is a mismatch, unless
    :func:`go_completes_cut_early_answer`.
    """
    if got == want:
        return []  # what Go did, even where Go cuts an early answer short and calls it whole
    head = ("status", "headers", "interim", "framing", "trailers")
    if {k: got.get(k) for k in head} != {k: want.get(k) for k in head}:
        return [f"client: {_diff({k: want.get(k) for k in head}, {k: got.get(k) for k in head})}"]
    sent = body_bytes(exchange.key, exchange.response_size, "r")
    if got.get("body") is not None and got.get("body") != digest(sent[: got.get("body_len", 0)]):
        return [f"client: body is not a prefix of what the service sent: {_short(got)}"]
    if exchange.service == "cut" and got.get("end") not in (want.get("end"), "truncated"):
        return [f"client: {_diff({'end': want.get('end')}, {'end': got.get('end')})}"]
    whole = got.get("body_len") == len(sent) or exchange.method == "HEAD"
    if exchange.service == "early" and got.get("end") == "complete" and not whole:
        if go_completes_cut_early_answer(exchange, topology, got, service):
            return []
        return [f"client: an early answer arrived cut but marked complete: {_short(got)}"]
    return []


def _diff(want: Any, got: Any, path: str = "") -> str:
    """A short description of the first places ``got`` differs from ``want``."""
    if isinstance(want, dict) and isinstance(got, dict):
        parts = []
        for key in sorted(set(want) | set(got), key=str):
            if want.get(key) != got.get(key):
                parts.append(_diff(want.get(key), got.get(key), f"{path}.{key}"))
        return "; ".join(parts)
    if isinstance(want, list) and isinstance(got, list) and len(want) == len(got) and want:
        parts = [
            _diff(w, g, f"{path}[{i}]")
            for i, (w, g) in enumerate(zip(want, got, strict=True))
            if w != g
        ]
        return "; ".join(parts)
    return f"{path or '.'}: go={_short(want)} ours={_short(got)}"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) < 300 else text[:300] + "..."

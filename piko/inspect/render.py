# -*- test-case-name: piko.test.inspect.test_api -*-
"""
Records as JSON (ngrok's shapes where ngrok has them) and as ``curl`` commands.

An exchange is ngrok's ``{"uri", "id", "tunnel_name", "remote_addr", "start", "duration",
"request": {"method", "proto", "headers", "uri", "raw"}, "response": {"status",
"status_code", "proto", "headers", "raw"}}``: ``duration`` in nanoseconds, ``raw`` the
base64 of the head and the captured body, headers as ``{"Canonical-Name": ["value"]}``.
Ours adds, under each of ``request`` and ``response``, ``body`` (``size``, ``captured``,
``truncated``), and on the exchange ``complete``, ``error``, ``replay_of`` and ``upgraded``.
The response head in ``raw`` is rebuilt from the status and headers the relay passed on.
"""

from __future__ import annotations

import base64
import shlex
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

from piko.http.head import canonical_key
from piko.inspect.store import ConnectionRecord, ExchangeRecord

__all__ = ["connection_json", "curl_command", "exchange_json", "response_head"]

#: Headers curl sets by itself, or that describe the original connection only.
_CURL_SKIPPED = frozenset({b"content-length", b"transfer-encoding", b"connection"})


def _time(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


def _headers(headers: tuple[tuple[bytes, bytes], ...]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in headers:
        out.setdefault(canonical_key(name).decode("latin-1"), []).append(value.decode("latin-1"))
    return out


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def response_head(record: ExchangeRecord) -> bytes:
    """The response head as relayed (rebuilt from its status and headers)."""
    lines = [b"HTTP/1.1 %d %s\r\n" % (record.status, _reason(record.status).encode())]
    lines += [b"%s: %s\r\n" % (name, value) for name, value in record.response_headers]
    return b"".join(lines) + b"\r\n"


def exchange_json(record: ExchangeRecord, *, raw: bool = True) -> dict[str, Any]:
    """
    ``record`` as ngrok's request object (plus ours).

    :param raw: include the ``raw`` bytes (the live stream leaves them out).
    """
    request: dict[str, Any] = {
        "method": record.method.decode("latin-1"),
        "proto": "HTTP/" + record.version.decode("latin-1"),
        "headers": _headers(record.request_headers),
        "uri": record.target.decode("latin-1"),
        "body": record.request_body.to_json(),
    }
    if raw:
        request["raw"] = base64.b64encode(record.raw_head + record.request_body.data).decode()
    response: dict[str, Any] | None = None
    if record.complete and record.status:
        response = {
            "status": f"{record.status} {_reason(record.status)}".strip(),
            "status_code": record.status,
            "proto": "HTTP/1.1",
            "headers": _headers(record.response_headers),
            "body": record.response_body.to_json(),
        }
        if raw:
            response["raw"] = base64.b64encode(
                response_head(record) + record.response_body.data
            ).decode()
    return {
        "uri": f"/api/requests/http/{record.id}",
        "id": record.id,
        "tunnel_name": record.endpoint_id,
        "remote_addr": record.remote_addr,
        "start": _time(record.started),
        "duration": int(record.duration * 1e9),
        "request": request,
        "response": response,
        "complete": record.complete,
        "error": record.error,
        "replay_of": record.replay_of or None,
        "upgraded": record.upgraded,
    }


def connection_json(
    record: ConnectionRecord, counts: tuple[int, int] | None = None, now: float | None = None
) -> dict[str, Any]:
    """
    A connection record; ``counts`` are ``(in, out)`` so far while it is open, ``now`` the
    time its duration so far is measured to.
    """
    bytes_in, bytes_out = counts if counts is not None else (record.bytes_in, record.bytes_out)
    if record.ended is not None:
        duration = record.duration
    else:
        duration = max(0.0, (now or record.started) - record.started)
    return {
        "uri": f"/api/connections/{record.id}",
        "id": record.id,
        "kind": record.kind,
        "tunnel_name": record.endpoint_id,
        "remote_addr": record.remote_addr,
        "target": record.target,
        "exchange_id": record.exchange_id or None,
        "start": _time(record.started),
        "duration": int(duration * 1e9),
        "open": record.ended is None,
        "bytes_in": bytes_in,
        "bytes_out": bytes_out,
    }


def curl_command(record: ExchangeRecord, base_url: str) -> str:
    """
    A ``curl`` command sending the request again to ``base_url`` (the Piko server's proxy
    URL, or the local service): method, path, headers and body, shell-quoted.  A truncated
    body is noted in a comment, as the bytes beyond the cap are gone.
    """
    method = record.method.decode("latin-1")
    url = base_url.rstrip("/") + record.target.decode("latin-1")
    words = ["curl"]
    if method != "GET" or record.request_body.size:
        words += ["-X", method]
    words.append(url)
    for name, value in record.request_headers:
        if name.lower() in _CURL_SKIPPED:
            continue
        words += ["-H", f"{name.decode('latin-1')}: {value.decode('latin-1')}"]
    body = bytes(record.request_body.data)
    if body:
        words += ["--data-binary", body.decode("utf-8", "replace")]
    command = " ".join(shlex.quote(w) for w in words)
    if record.request_body.truncated:
        command += f"  # body truncated: {record.request_body.size} bytes, {len(body)} kept"
    return command

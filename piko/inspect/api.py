# -*- test-case-name: piko.test.inspect.test_api -*-
"""
The inspector's web resource: the page, ngrok's API, and a live stream.

Routes (relative to where the resource is mounted, the root on the agent's inspector port):

``GET /``
    The single-page UI (``index.html``, ``app.js``, ``app.css`` from this package's data).
``GET /api/requests/http?limit=N``
    ``{"uri", "requests": [...]}``, newest first (ngrok's; ``limit`` defaults to 50).
``GET /api/requests/http/<id>``
    One exchange (ngrok's shape, see :mod:`piko.inspect.render`).
``GET /api/requests/http/<id>/curl?base=<url>``
    The exchange as a ``curl`` command (``text/plain``).
``POST /api/requests/http`` ``{"id": ...}``
    Replay (ngrok's, 204).  Ours also takes ``method``, ``path``, ``headers`` (a list of
    ``[name, value]``) and ``body`` (text) or ``body_base64`` to replay modified, and
    ``"wait": true`` to answer 200 with the replay's record once it is answered.
``DELETE /api/requests/http``
    Forget every exchange (ngrok's, 204).
``GET /api/connections``, ``DELETE /api/connections``
    WebSocket and TCP connection records.
``GET /api/stream``
    Server-Sent Events: ``exchange`` and ``connection`` (as JSON, without raw bytes) when one
    starts or ends, ``cleared``, and ``resync`` after events were dropped for a slow reader.
``GET /api/status``
    The budget, what is used, the body cap, how many records were evicted.

Guards, before any route: on a loopback address the ``Host`` must name a loopback host (a
DNS-rebinding page cannot read the capture); with auth configured, ``/api`` needs a bearer
token (the admin JWT auth); a request that changes anything (``POST``, ``DELETE``) must not
come from another site (``Sec-Fetch-Site`` and ``Origin``, when sent, must be same-origin)
and a ``POST`` must be ``application/json``, which no HTML form can send, and which a page of
another origin can only send after a CORS preflight this resource never approves.
"""

from __future__ import annotations

import base64
import binascii
import json
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site
from zope.interface import implementer

from piko.auth.token import AuthError, ITokenVerifier
from piko.inspect.inspector import Inspector
from piko.inspect.render import connection_json, curl_command, exchange_json
from piko.inspect.replay import Modifications, ReplayError
from piko.inspect.store import ConnectionRecord, ExchangeRecord

__all__ = ["InspectorResource", "InspectorSite"]

_STATIC = {
    "": ("index.html", b"text/html; charset=utf-8"),
    "index.html": ("index.html", b"text/html; charset=utf-8"),
    "app.js": ("app.js", b"text/javascript; charset=utf-8"),
    "app.css": ("app.css", b"text/css; charset=utf-8"),
}
_CSP = (
    b"default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    b"img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
_DEFAULT_LIMIT = 50


def _static(name: str) -> bytes:
    return resources.files("piko.inspect").joinpath("static", name).read_bytes()


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@implementer(IPushProducer)
class _EventStream:
    """
    One ``/api/stream`` reader.  While its connection cannot take more (paused), events
    are dropped, not queued, and a ``resync`` is sent when it can again: a slow reader
    costs a flag, never a buffer.
    """

    def __init__(self, request: Request, inspector: Inspector) -> None:
        self.request = request
        self.inspector = inspector
        self.paused = False
        self.missed = False
        request.setHeader(b"content-type", b"text/event-stream; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"x-accel-buffering", b"no")
        request.write(b": inspector stream\n\n")
        self.unsubscribe = inspector.store.subscribe(self.event)
        request.registerProducer(self, True)
        request.notifyFinish().addBoth(self._finished)

    def event(self, kind: str, record: ExchangeRecord | ConnectionRecord | None) -> None:
        if self.paused:
            self.missed = True
            return
        if isinstance(record, ExchangeRecord):
            name, data = "exchange", exchange_json(record, raw=False)
        elif isinstance(record, ConnectionRecord):
            name, data = "connection", connection_json(record, now=self.inspector.wall())
        else:
            name, data = kind, {}
        self.request.write(b"event: %s\ndata: %s\n\n" % (name.encode(), json.dumps(data).encode()))

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        if self.missed:
            self.missed = False
            self.request.write(b"event: resync\ndata: {}\n\n")

    def stopProducing(self) -> None:
        self.unsubscribe()

    def _finished(self, _: object) -> None:
        self.unsubscribe()


class InspectorResource(Resource):
    """
    The page and the API of one :class:`~piko.inspect.inspector.Inspector`.

    :param loopback_only: check that ``Host`` names a loopback host (the inspector listens
        on loopback: refuse DNS-rebound pages).
    :param verifier: checks bearer tokens on ``/api`` (the admin JWT auth), if given.
    :param proxy_url: the Piko server's proxy URL, for ``curl`` exports.
    """

    isLeaf = True
    log = Logger()

    def __init__(
        self,
        inspector: Inspector,
        *,
        loopback_only: bool = True,
        verifier: ITokenVerifier | None = None,
        proxy_url: str = "http://localhost:8000",
    ) -> None:
        super().__init__()
        self.inspector = inspector
        self.loopback_only = loopback_only
        self.verifier = verifier
        self.proxy_url = proxy_url

    # -- dispatch

    def render(self, request: Request) -> bytes | int:
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"referrer-policy", b"no-referrer")
        path = [p.decode("utf-8", "replace") for p in request.postpath or ()]
        method = request.method.decode("latin-1")
        try:
            self._guard(request, method, path)
            return self._route(request, method, path)
        except _Refused as refused:
            return self._json(request, {"error": str(refused)}, refused.status)

    def _route(self, request: Request, method: str, path: list[str]) -> bytes | int:
        if len(path) <= 1 and (path[0] if path else "") in _STATIC:
            if method not in ("GET", "HEAD"):
                raise _Refused(405, "method not allowed")
            name, content_type = _STATIC[path[0] if path else ""]
            request.setHeader(b"content-type", content_type)
            request.setHeader(b"content-security-policy", _CSP)
            request.setHeader(b"cache-control", b"no-store")
            return _static(name)
        if path[:1] != ["api"]:
            raise _Refused(404, "not found")
        api = path[1:]
        if api == ["requests", "http"]:
            if method == "GET":
                return self._list(request)
            if method == "POST":
                return self._replay(request)
            if method == "DELETE":
                self.inspector.store.clear(ExchangeRecord)
                request.setResponseCode(204)
                return b""
            raise _Refused(405, "method not allowed")
        if len(api) in (3, 4) and api[:2] == ["requests", "http"] and method == "GET":
            record = self.inspector.store.get(api[2])
            if not isinstance(record, ExchangeRecord):
                raise _Refused(404, "no such request (it may have been evicted)")
            if len(api) == 3:
                return self._json(request, exchange_json(record))
            if api[3] == "curl":
                base = _arg(request, b"base") or self.proxy_url
                request.setHeader(b"content-type", b"text/plain; charset=utf-8")
                return (curl_command(record, base) + "\n").encode()
            raise _Refused(404, "not found")
        if api == ["connections"]:
            if method == "GET":
                return self._connections(request)
            if method == "DELETE":
                self.inspector.store.clear(ConnectionRecord)
                request.setResponseCode(204)
                return b""
            raise _Refused(405, "method not allowed")
        if api == ["stream"] and method == "GET":
            _EventStream(request, self.inspector)
            return NOT_DONE_YET
        if api == ["status"] and method == "GET":
            store = self.inspector.store
            return self._json(
                request,
                {
                    "budget": store.budget,
                    "used": store.used,
                    "body_cap": store.body_cap,
                    "records": len(store),
                    "evicted": store.evicted,
                    "proxy_url": self.proxy_url,
                },
            )
        raise _Refused(404, "not found")

    # -- guards

    def _guard(self, request: Request, method: str, path: list[str]) -> None:
        host = (_header(request, b"host") or "").strip()
        if self.loopback_only:
            name = urlsplit("//" + host).hostname or ""
            if name not in _LOOPBACK_HOSTS and not name.startswith("127."):
                raise _Refused(403, "the inspector answers loopback host names only")
        if self.verifier is not None and path[:1] == ["api"]:
            self._authenticate(request)
        if method in ("GET", "HEAD"):
            return
        site = _header(request, b"sec-fetch-site")
        if site is not None and site not in ("same-origin", "none"):
            raise _Refused(403, "cross-site request refused")
        origin = _header(request, b"origin")
        if origin is not None and urlsplit(origin).netloc != host:
            raise _Refused(403, "cross-origin request refused")
        if method == "POST":
            content_type = (_header(request, b"content-type") or "").split(";")[0].strip()
            if content_type.lower() != "application/json":
                raise _Refused(415, "send application/json")

    def _authenticate(self, request: Request) -> None:
        assert self.verifier is not None
        value = _header(request, b"x-piko-authorization") or _header(request, b"authorization")
        if not value:
            raise _Refused(401, "missing authorization")
        scheme, _, token = value.partition(" ")
        if scheme != "Bearer" or not token:
            raise _Refused(401, "unsupported auth type")
        try:
            self.verifier.verify(token)
        except AuthError:
            raise _Refused(401, "invalid token") from None

    # -- handlers

    def _list(self, request: Request) -> bytes:
        limit = _int_arg(request, b"limit", _DEFAULT_LIMIT)
        records: list[dict[str, Any]] = []
        for record in self.inspector.store.exchanges():
            if len(records) >= limit:
                break
            records.append(exchange_json(record))
        return self._json(request, {"uri": "/api/requests/http", "requests": records})

    def _connections(self, request: Request) -> bytes:
        limit = _int_arg(request, b"limit", _DEFAULT_LIMIT)
        live = self.inspector.live
        now = self.inspector.wall()
        out: list[dict[str, Any]] = []
        for record in self.inspector.store.connections():
            if len(out) >= limit:
                break
            tunnel = live.get(record.id)
            counts = (tunnel.received, tunnel.sent) if tunnel is not None else None
            out.append(connection_json(record, counts, now))
        return self._json(request, {"uri": "/api/connections", "connections": out})

    def _replay(self, request: Request) -> bytes | int:
        try:
            content = request.content.read() if request.content is not None else b""
            body = json.loads(content or b"{}")
        except ValueError:
            raise _Refused(400, "the body is not JSON") from None
        if not isinstance(body, dict) or not isinstance(body.get("id"), str):
            raise _Refused(400, 'expected {"id": "<request id>"}')
        changes = _modifications(body)
        try:
            d = self.inspector.replay(body["id"], changes)
        except KeyError:
            raise _Refused(404, "no such request (it may have been evicted)") from None
        except ReplayError as e:
            raise _Refused(400, str(e)) from None
        if not body.get("wait"):
            d.addErrback(lambda f: self.log.warn("replay failed", error=str(f.value)))
            request.setResponseCode(204)
            return b""
        finished: list[object] = []

        def ended(result: object) -> None:
            finished.append(result)

        request.notifyFinish().addBoth(ended)

        def answered(record: ExchangeRecord) -> None:
            if not finished:
                request.write(self._json(request, exchange_json(record)))
                request.finish()

        def failed(reason: Failure) -> None:
            if not finished:
                request.write(self._json(request, {"error": str(reason.value)}, 502))
                request.finish()

        d.addCallbacks(answered, failed)
        return NOT_DONE_YET

    def _json(self, request: Request, value: Any, status: int = 200) -> bytes:
        request.setResponseCode(status)
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        return json.dumps(value).encode()


def _header(request: Request, name: bytes) -> str | None:
    value = request.getHeader(name)
    return value.decode("latin-1") if isinstance(value, bytes) else value


def _arg(request: Request, name: bytes) -> str | None:
    args: dict[bytes, list[bytes]] = request.args or {}
    values = args.get(name)
    return values[0].decode("utf-8", "replace") if values else None


def _int_arg(request: Request, name: bytes, default: int) -> int:
    text = _arg(request, name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise _Refused(400, f"{name.decode()} must be an integer") from None
    if value < 0:
        raise _Refused(400, f"{name.decode()} must not be negative")
    return value


def _modifications(body: dict[str, Any]) -> Modifications | None:
    """The changes a replay request asks for, or ``None`` for an exact replay."""
    keys = ("method", "path", "headers", "body", "body_base64")
    if not any(k in body for k in keys):
        return None

    def text(key: str) -> bytes | None:
        value = body.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise _Refused(400, f"{key} must be a string")
        try:
            return value.encode("latin-1") if key != "body" else value.encode("utf-8")
        except UnicodeEncodeError:
            raise _Refused(400, f"{key} must be Latin-1 text") from None

    headers = body.get("headers")
    pairs: tuple[tuple[bytes, bytes], ...] | None = None
    if headers is not None:
        if not isinstance(headers, list) or not all(
            isinstance(h, list) and len(h) == 2 and all(isinstance(x, str) for x in h)
            for h in headers
        ):
            raise _Refused(400, "headers must be a list of [name, value]")
        try:
            pairs = tuple((n.encode("latin-1"), v.encode("latin-1")) for n, v in headers)
        except UnicodeEncodeError:
            raise _Refused(400, "headers must be Latin-1 text") from None
    payload = text("body")
    if body.get("body_base64") is not None:
        try:
            payload = base64.b64decode(str(body["body_base64"]), validate=True)
        except (binascii.Error, ValueError):
            raise _Refused(400, "body_base64 is not base64") from None
    return Modifications(method=text("method"), target=text("path"), headers=pairs, body=payload)


class InspectorSite(Site):
    """
    A :class:`Site` for the inspector: no access log lines, and its open connections
    known (live streams never end by themselves; stopping the inspector closes them).
    """

    noisy = False

    def __init__(self, resource: Resource, **kwargs: Any) -> None:
        super().__init__(resource, **kwargs)
        self.connections: set[Any] = set()

    def buildProtocol(self, addr: Any) -> Any:
        protocol = super().buildProtocol(addr)
        if protocol is None:
            return None
        connections = self.connections
        lost = protocol.connectionLost

        def connection_lost(reason: Failure) -> None:
            connections.discard(protocol)
            lost(reason)

        protocol.connectionLost = connection_lost
        connections.add(protocol)
        return protocol

    def log(self, request: Any) -> None:
        """Nothing: the inspector's own requests are not worth a log line each."""

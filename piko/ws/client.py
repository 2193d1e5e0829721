# -*- test-case-name: piko.test.ws.test_client -*-
"""
Client side: dial a Piko server's WebSocket route and run a byte-stream
protocol (the agent's yamux session, ``piko forward``'s splice) over it.

Mirrors Go Piko's ``pkg/websocket`` ``Dial``: ``http``/``https`` URLs become
``ws``/``wss``; the handshake carries the same headers in the same order (Go
sorts header names); and a refused handshake becomes a
:class:`WebSocketDialError` whose text and retry decision match Go's.  A TLS
handshake that fails says why in Go's words (``tls: failed to verify
certificate: x509: certificate has expired or is not yet valid: ...``), not
OpenSSL's bare ``certificate verify failed``.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from attrs import frozen
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from autobahn.websocket.protocol import parseHttpHeader
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import (
    IDelayedCall,
    IOpenSSLClientConnectionCreator,
    IProtocol,
    IProtocolFactory,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory
from twisted.python.failure import Failure

from piko import __version__
from piko.config import ConnectTLSConfig
from piko.tls import client_tls, tls_failure_text
from piko.ws._options import WebSocketOptions
from piko.ws._stream import ByteStreamWebSocketMixin
from piko.ws.http_proxy import HTTPConnectEndpoint, ProxyURL

#: Sent instead of Go's ``Go-http-client/1.1``, so server logs tell us apart.
USER_AGENT = f"piko-twisted/{__version__}"

#: Statuses after which Go Piko retries the connection (``pkg/websocket``).
RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})

#: gorilla reads at most this much of a refused handshake's body.
_MAX_ERROR_BODY = 1024

#: Largest response head we wait for before giving up on the peer.
_MAX_RESPONSE_HEAD = 64 * 1024

_BAD_HANDSHAKE = "websocket: bad handshake"

_RESERVED_HEADERS = frozenset(
    {"upgrade", "connection", "sec-websocket-key", "sec-websocket-version"}
)


class WebSocketDialError(Exception):
    """
    Opening the WebSocket failed.

    :ivar status: the HTTP status of the refusal, or ``None`` when no HTTP
        response came back (connection refused, timeout, reset).
    :ivar message: the JSON ``error`` field of the response when its
        ``Content-Type`` is ``application/json``, else
        ``"websocket: bad handshake"``; for network failures, what went wrong.
    :ivar retryable: whether Go Piko would try again: always for network
        failures, and for statuses 408, 429, 500, 502, 503 and 504.
    """

    def __init__(self, status: int | None, message: str, retryable: bool) -> None:
        super().__init__(status, message, retryable)
        self.status = status
        self.message = message
        self.retryable = retryable

    def __str__(self) -> str:
        if self.status is None:
            return self.message
        return f"{self.status}: {self.message}"


def error_from_response(status: int, headers: Mapping[str, str], body: bytes) -> WebSocketDialError:
    """
    Build the :class:`WebSocketDialError` Go Piko reports for a non-``101``
    answer.

    :param headers: response headers with lower-cased names.
    :param body: (the start of) the response body.
    """
    message = _BAD_HANDSHAKE
    if headers.get("content-type", "").startswith("application/json"):
        try:
            decoded = json.loads(body)
        except ValueError:
            decoded = None
        if isinstance(decoded, dict):
            error = decoded.get("error", "")
            message = error if isinstance(error, str) else _BAD_HANDSHAKE
    return WebSocketDialError(status, message, status in RETRYABLE_STATUSES)


@frozen
class WebSocketTarget:
    """
    Where and how to dial, from a ``ws``/``wss``/``http``/``https`` URL.

    :ivar secure: whether TLS is used (``wss`` / ``https``).
    :ivar host: host name or address to connect to (IPv6 without brackets).
    :ivar port: TCP port (default 80 or 443).
    :ivar host_header: the ``Host`` header: the URL's authority as written.
    :ivar resource: the request target: path (at least ``/``) and query.
    """

    secure: bool
    host: str
    port: int
    host_header: str
    resource: str

    @classmethod
    def from_url(cls, url: str) -> WebSocketTarget:
        """
        Parse ``url``; ``http`` means ``ws`` and ``https`` means ``wss``.

        :raises ValueError: for any other scheme or a URL without a host.
        """
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme in ("ws", "http"):
            secure = False
        elif scheme in ("wss", "https"):
            secure = True
        else:
            raise ValueError(f"unsupported WebSocket URL scheme: {url!r}")
        if not parts.hostname:
            raise ValueError(f"WebSocket URL without a host: {url!r}")
        port = parts.port or (443 if secure else 80)
        resource = parts.path or "/"
        if parts.query:
            resource += "?" + parts.query
        return cls(
            secure=secure,
            host=parts.hostname,
            port=port,
            host_header=parts.netloc.rpartition("@")[2],
            resource=resource,
        )


def canonical_header_name(name: str) -> str:
    """Go's ``CanonicalMIMEHeaderKey`` for plain token names: ``x-piko-id`` -> ``X-Piko-Id``."""
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


def handshake_request(
    target: WebSocketTarget, key: str, headers: Mapping[str, str], user_agent: str = USER_AGENT
) -> bytes:
    """
    Return the opening handshake request as Go's ``net/http`` writes it for
    gorilla: ``Host`` and ``User-Agent`` first, then every other header sorted
    by name (so ``Authorization`` comes before ``Connection`` and
    ``X-Piko-Tenant-Id`` last), no ``Origin``, no extensions.

    :param headers: extra headers such as ``Authorization``; names are
        canonicalised as Go does.  ``Host`` and ``User-Agent`` here replace the
        defaults.
    :raises ValueError: if ``headers`` tries to set a handshake header.
    """
    host = target.host_header
    fields = {
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": key,
        "Sec-WebSocket-Version": "13",
        "Upgrade": "websocket",
    }
    for name, value in headers.items():
        lowered = name.lower()
        if lowered in _RESERVED_HEADERS:
            raise ValueError(f"duplicate header not allowed: {name}")
        if lowered == "host":
            host = value
        elif lowered == "user-agent":
            user_agent = value
        else:
            fields[canonical_header_name(name)] = value
    lines = [f"GET {target.resource} HTTP/1.1", f"Host: {host}", f"User-Agent: {user_agent}"]
    lines.extend(f"{name}: {value}" for name, value in sorted(fields.items()))
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")


def _parse_status(head: bytes) -> int | None:
    """Return the status code of an ``HTTP/1.x`` response head, or ``None``."""
    line = head.split(b"\r\n", 1)[0].split()
    if len(line) < 2 or not line[0].startswith(b"HTTP/1.") or not line[1].isdigit():
        return None
    return int(line[1])


class _ClientProtocol(ByteStreamWebSocketMixin, WebSocketClientProtocol):  # type: ignore[misc]
    """autobahn's client protocol as a byte stream, with Go's request and errors."""

    _is_client = True

    def __init__(
        self,
        reactor: IReactorTime,
        options: WebSocketOptions,
        request: _DialRequest,
        ready: Deferred[IProtocol],
    ) -> None:
        super().__init__()
        self._reactor = reactor
        self._options = options
        self._request = request
        self._ready = ready
        self._status: int | None = None
        self._refusal_headers: dict[str, str] | None = None
        self._refusal_body_start = 0
        self._refusal_body_wanted = _MAX_ERROR_BODY
        self._dial_error: WebSocketDialError | None = None

    def _new_key(self) -> str:
        """Return a fresh ``Sec-WebSocket-Key``."""
        return base64.b64encode(os.urandom(16)).decode("ascii")

    def startHandshake(self) -> None:
        """Send Go's handshake request instead of autobahn's."""
        key = self._new_key()
        self.websocket_key = key.encode("ascii")
        self.http_request_data = handshake_request(
            self._request.target, key, self._request.headers, self._request.user_agent
        )
        self.sendData(self.http_request_data)

    def processHandshake(self) -> None:
        """
        Let autobahn check a ``101``; for any other status, read (the start of)
        the body so the error can carry the server's JSON ``error`` message.
        """
        if self._refusal_headers is None:
            end = self.data.find(b"\r\n\r\n")
            if end < 0:
                if len(self.data) > _MAX_RESPONSE_HEAD:
                    self.failHandshake("HTTP response head too long")
                return
            self._status = _parse_status(self.data[:end])
            if self._status is None or self._status == 101:
                super().processHandshake()
                return
            try:
                headers = parseHttpHeader(self.data[: end + 4])[1]
            except Exception:
                headers = {}
            self._refusal_headers = headers
            self._refusal_body_start = end + 4
            length = headers.get("content-length", "").strip()
            if length.isdigit():
                self._refusal_body_wanted = min(int(length), _MAX_ERROR_BODY)
        body = self.data[self._refusal_body_start :]
        if len(body) >= self._refusal_body_wanted:
            self._refuse(body[: self._refusal_body_wanted])

    def _refuse(self, body: bytes) -> None:
        status = self._status
        assert status is not None and self._refusal_headers is not None
        if self._dial_error is None:
            self._dial_error = error_from_response(status, self._refusal_headers, body)
        self.dropConnection(abort=True)

    def failHandshake(self, reason: str) -> None:
        """Record the Go-style error for an invalid response, then drop TCP."""
        if self._dial_error is None:
            if self._status is None:
                self._dial_error = WebSocketDialError(None, f"bad HTTP response: {reason}", True)
            else:
                self._dial_error = WebSocketDialError(self._status, _BAD_HANDSHAKE, False)
        super().failHandshake(reason)

    def timed_out(self) -> None:
        """The dial timeout expired before the WebSocket opened."""
        if self._dial_error is None:
            self._dial_error = WebSocketDialError(None, "websocket: handshake timeout", True)
        self.dropConnection(abort=True)

    def _build_inner(self) -> IProtocol | None:
        return self._request.factory.buildProtocol(self.transport.getPeer())

    def _inner_connected(self, inner: IProtocol) -> None:
        if not self._ready.called:
            self._ready.callback(inner)

    def _lost_before_open(self, reason: Failure) -> None:
        error = self._dial_error
        if error is None and self._refusal_headers is not None:
            # No Content-Length: the body ended with the connection.
            body = self.data[self._refusal_body_start :][: self._refusal_body_wanted]
            assert self._status is not None
            error = error_from_response(self._status, self._refusal_headers, body)
        if error is None:
            tls_failure = tls_failure_text(reason.value)
            if tls_failure is not None:
                error = WebSocketDialError(None, tls_failure, True)
            else:
                error = WebSocketDialError(
                    None, f"connection lost during handshake: {reason.getErrorMessage()}", True
                )
        if not self._ready.called:
            self._ready.errback(Failure(error))


@frozen
class _DialRequest:
    target: WebSocketTarget
    headers: Mapping[str, str]
    user_agent: str
    factory: IProtocolFactory


class _DialFactory(Factory):
    """Builds the one client protocol of a :func:`connect` call."""

    noisy = False

    def __init__(
        self,
        reactor: IReactorTime,
        options: WebSocketOptions,
        request: _DialRequest,
        ready: Deferred[IProtocol],
    ) -> None:
        self._reactor = reactor
        self._options = options
        self._request = request
        self._ready = ready
        self.protocol_instance: _ClientProtocol | None = None
        factory = WebSocketClientFactory(
            url=("wss" if request.target.secure else "ws") + "://localhost/",
            reactor=reactor,
        )
        factory.setProtocolOptions(
            version=18,
            utf8validateIncoming=True,
            acceptMaskedServerFrames=False,
            maskClientFrames=True,
            applyMask=True,
            maxFramePayloadSize=options.max_frame_size,
            maxMessagePayloadSize=options.max_message_size,
            autoFragmentSize=0,
            failByDrop=True,
            echoCloseCodeReason=False,
            serverConnectionDropTimeout=0,
            openHandshakeTimeout=0,
            closeHandshakeTimeout=0,
            tcpNoDelay=True,
            autoPingInterval=0,
            autoPingTimeout=0,
            perMessageCompressionOffers=[],
            perMessageCompressionAccept=lambda response: None,
        )
        self._websocket_factory = factory

    def buildProtocol(self, addr: Any) -> _ClientProtocol:
        protocol = _ClientProtocol(self._reactor, self._options, self._request, self._ready)
        protocol.factory = self._websocket_factory
        self.protocol_instance = protocol
        return protocol


def connect(
    reactor: Any,
    url: str,
    factory: IProtocolFactory,
    *,
    headers: Mapping[str, str] | None = None,
    tls: IOpenSSLClientConnectionCreator | None = None,
    timeout: float | None = None,
    options: WebSocketOptions | None = None,
    endpoint: IStreamClientEndpoint | None = None,
    user_agent: str = USER_AGENT,
    proxy_url: str | None = None,
) -> Deferred[IProtocol]:
    """
    Open a WebSocket to ``url`` and connect a byte-stream protocol over it.

    :param reactor: used for the TCP connection and all timers.
    :param url: ``ws://``, ``wss://``, ``http://`` or ``https://`` URL,
        including the route (e.g. ``.../piko/v1/upstream/<endpoint>``).
    :param factory: builds the inner protocol once the handshake succeeded;
        ``buildProtocol`` gets the TCP peer address.
    :param headers: extra request headers, e.g.
        ``{"Authorization": "Bearer <token>", "x-piko-tenant-id": "<id>"}``.
    :param tls: the TLS connection creator for ``wss``/``https``, e.g. from
        :func:`piko.tls.client_tls` or ``optionsForClientTLS(hostname,
        trustRoot=...)``; by default :func:`piko.tls.client_tls` with the
        system trust store, checking the URL's host.
    :param timeout: seconds for the TCP connect, TLS and WebSocket handshake
        together; defaults to ``options.open_handshake_timeout``.
    :param endpoint: connect through this endpoint instead of one built from
        the URL (tests); TLS is then the endpoint's business.
    :param proxy_url: an ``http://`` or ``https://`` proxy to tunnel through with
        ``CONNECT`` (Go's ``connect.proxy-url``); TLS to the server runs inside the tunnel.
    :return: a Deferred firing with the connected inner protocol, or failing
        with :class:`WebSocketDialError`.  Cancelling it abandons the dial.
    """
    options = options if options is not None else WebSocketOptions()
    if timeout is None:
        timeout = options.open_handshake_timeout
    target = WebSocketTarget.from_url(url)
    request = _DialRequest(
        target=target, headers=dict(headers or {}), user_agent=user_agent, factory=factory
    )
    if endpoint is None:
        if proxy_url:
            endpoint = HTTPConnectEndpoint(
                reactor,
                ProxyURL.parse(proxy_url),
                target.host,
                target.port,
                user_agent=user_agent,
            )
        else:
            endpoint = HostnameEndpoint(reactor, target.host, target.port)
        if target.secure:
            endpoint = wrapClientTLS(
                tls if tls is not None else client_tls(target.host, ConnectTLSConfig()), endpoint
            )

    connecting: Deferred[Any] | None = None
    timer: IDelayedCall | None = None

    def cancel(ready: Deferred[IProtocol]) -> None:
        abandon(WebSocketDialError(None, "websocket: dial cancelled", True))

    ready: Deferred[IProtocol] = Deferred(cancel)
    dial_factory = _DialFactory(reactor, options, request, ready)

    def abandon(error: WebSocketDialError) -> None:
        protocol = dial_factory.protocol_instance
        if protocol is not None:
            if protocol._dial_error is None:
                protocol._dial_error = error
            protocol.timed_out()
        elif connecting is not None:
            # Not guarded by ``called``: once the name is resolved the Deferred waits on
            # HostnameEndpoint's attempts and counts as called, yet cancelling it still
            # stops them (a refused attempt would otherwise linger for its next round).
            connecting.cancel()
        if not ready.called:
            ready.errback(Failure(error))

    def connect_failed(failure: Failure) -> None:
        if ready.called:
            return
        if failure.check(CancelledError):
            ready.errback(Failure(WebSocketDialError(None, "websocket: dial timeout", True)))
        else:
            ready.errback(Failure(WebSocketDialError(None, failure.getErrorMessage(), True)))

    def stop_timer(result: object) -> object:
        if timer is not None and timer.active():
            timer.cancel()
        return result

    ready.addBoth(stop_timer)
    if timeout > 0:
        timer = reactor.callLater(
            timeout, abandon, WebSocketDialError(None, "websocket: handshake timeout", True)
        )
    connecting = endpoint.connect(dial_factory)
    connecting.addErrback(connect_failed)
    return ready

# -*- test-case-name: piko.test.ws.test_http_proxy -*-
"""
Reach the Piko server through an HTTP(S) proxy: ``CONNECT`` tunnels for ``connect.proxy-url``.

Go's agent hands ``connect.proxy-url`` to gorilla's dialer (``http.ProxyURL``), which opens a
TCP (or, for an ``https://`` proxy, TLS) connection to the proxy, asks it for
``CONNECT host:port HTTP/1.1`` with ``Proxy-Authorization: Basic`` when the proxy URL carries
a user, and runs the WebSocket (TLS to the server first, for ``wss``) over the tunnel once the
proxy answers ``200``.  :class:`HTTPConnectEndpoint` is that tunnel as an
``IStreamClientEndpoint``, so :func:`piko.ws.client.connect` only swaps the endpoint it dials
and wraps it for TLS as it would a direct connection.

Any other answer fails the dial with the proxy's status (gorilla reports only its text; we
say which step failed), which Go treats as a network failure: the agent retries it.
"""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import unquote, urlsplit

from attrs import frozen
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import (
    IAddress,
    IProtocol,
    IProtocolFactory,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import optionsForClientTLS
from twisted.python.failure import Failure
from zope.interface import implementer

__all__ = ["HTTPConnectEndpoint", "ProxyError", "ProxyURL"]

#: A proxy's answer head longer than this is not an HTTP proxy speaking.
_MAX_ANSWER_HEAD = 16 * 1024


class ProxyError(Exception):
    """The proxy refused or broke the ``CONNECT`` (its status text, as gorilla reports it)."""


@frozen
class ProxyURL:
    """
    A parsed ``connect.proxy-url``.

    :ivar secure: ``https://`` proxies are spoken to over TLS.
    :ivar authorization: the ``Proxy-Authorization`` value from the URL's user, or None.
    """

    secure: bool
    host: str
    port: int
    authorization: str | None

    @classmethod
    def parse(cls, url: str) -> ProxyURL:
        """
        Split ``http://[user[:password]@]host[:port]`` (or ``https://``).

        :raises ValueError: for another scheme or a URL without a host.
        """
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https"):
            raise ValueError(f"unsupported proxy scheme {parts.scheme!r} (want http or https)")
        if not parts.hostname:
            raise ValueError(f"proxy url without a host: {url!r}")
        secure = scheme == "https"
        authorization = None
        if parts.username is not None:
            credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            authorization = "Basic " + base64.b64encode(credentials.encode()).decode("ascii")
        return cls(
            secure=secure,
            host=parts.hostname,
            port=parts.port or (443 if secure else 80),
            authorization=authorization,
        )


def connect_request(
    host: str, port: int, authorization: str | None, user_agent: str | None = None
) -> bytes:
    """The ``CONNECT`` request head, as Go's ``net/http`` writes it for gorilla."""
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    lines = [f"CONNECT {authority} HTTP/1.1", f"Host: {authority}"]
    if user_agent is not None:
        lines.append(f"User-Agent: {user_agent}")
    if authorization is not None:
        lines.append(f"Proxy-Authorization: {authorization}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")


class _TunnelProtocol(Protocol):
    """
    Speaks ``CONNECT`` to the proxy, then hands the connection to the inner protocol and
    relays every later event to it.
    """

    def __init__(
        self, factory: IProtocolFactory, request: bytes, ready: Deferred[IProtocol]
    ) -> None:
        self._factory = factory
        self._request = request
        self._ready = ready
        self._buffer = b""
        self._inner: IProtocol | None = None

    def connectionMade(self) -> None:
        self.transport.write(self._request)  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        if self._inner is not None:
            self._inner.dataReceived(data)
            return
        self._buffer += data
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buffer) > _MAX_ANSWER_HEAD:
                self._fail(ProxyError("proxy answer head too long"))
            return
        head, rest = self._buffer[:end], self._buffer[end + 4 :]
        self._buffer = b""
        status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        version, _, status = status_line.partition(" ")
        code, _, text = status.partition(" ")
        if not version.startswith("HTTP/1.") or not code.isdigit():
            self._fail(ProxyError(f"malformed proxy answer: {status_line[:80]!r}"))
            return
        if code != "200":
            self._fail(ProxyError(f"proxy refused CONNECT: {code} {text}".rstrip()))
            return
        transport: Any = self.transport
        inner = self._factory.buildProtocol(transport.getPeer())
        if inner is None:
            self._fail(ProxyError("connection refused by the protocol factory"))
            return
        self._inner = inner
        inner.makeConnection(transport)
        if not self._ready.called:
            self._ready.callback(inner)
        if rest:
            inner.dataReceived(rest)

    def _fail(self, error: Exception) -> None:
        if not self._ready.called:
            self._ready.errback(Failure(error))
        self.transport.abortConnection()  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:  # noqa: B008
        if self._inner is not None:
            self._inner.connectionLost(reason)
            return
        if not self._ready.called:
            message = reason.getErrorMessage()
            self._ready.errback(Failure(ProxyError(f"proxy closed the connection: {message}")))


class _TunnelFactory(Factory):
    noisy = False

    def __init__(
        self, factory: IProtocolFactory, request: bytes, ready: Deferred[IProtocol]
    ) -> None:
        self._factory = factory
        self._request = request
        self._ready = ready
        self.protocol_instance: _TunnelProtocol | None = None

    def buildProtocol(self, addr: IAddress | None) -> _TunnelProtocol:
        self.protocol_instance = _TunnelProtocol(self._factory, self._request, self._ready)
        return self.protocol_instance


@implementer(IStreamClientEndpoint)
class HTTPConnectEndpoint:
    """
    Connects to ``host:port`` through the proxy at ``proxy`` with ``CONNECT``.

    The Deferred of :meth:`connect` fires with the inner protocol once the proxy answered
    ``200`` (and the protocol is connected to the tunnel), or fails with :class:`ProxyError`
    or the TCP error.  Cancelling it abandons the dial at whatever step it is.

    :param reactor: for the connection to the proxy.
    :param proxy: where the proxy is and how to authenticate to it.
    :param proxy_endpoint: dial the proxy with this instead (tests).
    :param user_agent: sent to the proxy, as Go sends its client's.
    """

    def __init__(
        self,
        reactor: Any,
        proxy: ProxyURL,
        host: str,
        port: int,
        *,
        proxy_endpoint: IStreamClientEndpoint | None = None,
        user_agent: str | None = None,
    ) -> None:
        if proxy_endpoint is None:
            proxy_endpoint = HostnameEndpoint(reactor, proxy.host, proxy.port)
            if proxy.secure:
                proxy_endpoint = wrapClientTLS(optionsForClientTLS(proxy.host), proxy_endpoint)
        self._proxy_endpoint = proxy_endpoint
        self._request = connect_request(host, port, proxy.authorization, user_agent)

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        dialing: Deferred[Any] | None = None

        def cancel(d: Deferred[IProtocol]) -> None:
            tunnel = factory.protocol_instance
            if tunnel is not None and tunnel.transport is not None:
                tunnel.transport.abortConnection()  # type: ignore[attr-defined]
            elif dialing is not None:
                dialing.cancel()

        ready: Deferred[IProtocol] = Deferred(cancel)
        factory = _TunnelFactory(protocolFactory, self._request, ready)

        def dial_failed(failure: Failure) -> None:
            if not ready.called:
                ready.errback(failure)

        dialing = self._proxy_endpoint.connect(factory)
        dialing.addErrback(dial_failed)
        return ready

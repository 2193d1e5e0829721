# -*- test-case-name: piko.test.client.test_dialer -*-
"""
Connecting to a Piko endpoint over TCP: Go's ``client.Dialer``, for Twisted factories.

A WebSocket to the proxy port's ``/_piko/v1/tcp/<endpoint>`` route; the
protocol built by the factory sees it as a plain byte stream.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IOpenSSLClientConnectionCreator,
    IProtocol,
    IProtocolFactory,
)

from piko.client._urls import route_url
from piko.client.upstream import DialFunction
from piko.ws.client import connect

TCP_ROUTE = "/_piko/v1/tcp/"


class Dialer:
    """
    A Piko server's proxy port, and how to authenticate to it.

    :param reactor: the reactor.
    :param url: the proxy port, ``http(s)://`` or ``ws(s)://``.
    :param token: sent as ``Authorization: Bearer <token>``.
    :param tls: the TLS connection creator for ``https``/``wss`` URLs.
    :param timeout: seconds for the TCP connect and the handshake.
    :param dial: the WebSocket dialer (tests inject a fake).
    """

    def __init__(
        self,
        reactor: Any,
        url: str = "http://localhost:8000",
        *,
        token: str | None = None,
        tls: IOpenSSLClientConnectionCreator | None = None,
        timeout: float = 30.0,
        dial: DialFunction = connect,
    ) -> None:
        self.reactor = reactor
        self.url = url
        self.token = token
        self.tls = tls
        self.timeout = timeout
        self._dial = dial

    def headers(self) -> Mapping[str, str]:
        """The handshake headers Go's dialer sends."""
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def dial(self, endpoint_id: str, factory: IProtocolFactory) -> Deferred[IProtocol]:
        """
        Connect a protocol from ``factory`` to ``endpoint_id``.

        :return: fires with the connected protocol, or fails with
            :class:`~piko.ws.client.WebSocketDialError` (for example
            ``502: no available upstreams``).
        """
        url = route_url(self.url, TCP_ROUTE, endpoint_id)
        d = self._dial(
            self.reactor, url, factory, headers=self.headers(), tls=self.tls, timeout=self.timeout
        )
        return d

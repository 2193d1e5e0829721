# -*- test-case-name: piko.test.client.test_endpoints -*-
"""
Twisted endpoints for Piko, and the ``piko:`` endpoint-string parsers.

Server side, ``piko:<endpoint>[:url=<upstream url>][:token=<jwt>][:tenant=<id>]``
serves a factory on a Piko endpoint; client side,
``piko:<endpoint>[:url=<proxy url>][:token=<jwt>][:timeout=<s>]`` connects to
one.  Colons inside values are escaped with a backslash, as in every Twisted
endpoint string: ``url=http\\://localhost\\:8001``.  ``caCertsFile=<pem>``
trusts the given CAs for ``https``/``wss`` URLs.
"""

from __future__ import annotations

from typing import Any

from attrs import frozen
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IListeningPort,
    IOpenSSLClientConnectionCreator,
    IProtocol,
    IProtocolFactory,
    IStreamClientEndpoint,
    IStreamClientEndpointStringParserWithReactor,
    IStreamServerEndpoint,
    IStreamServerEndpointStringParser,
)
from twisted.plugin import IPlugin
from zope.interface import implementer

from piko.client._urls import route_url
from piko.client.dialer import Dialer
from piko.client.upstream import PikoAddress, Upstream
from piko.config import ConnectTLSConfig
from piko.tls import client_tls

__all__ = [
    "PikoAddress",
    "PikoClientEndpoint",
    "PikoClientParser",
    "PikoServerEndpoint",
    "PikoServerParser",
]


@implementer(IStreamServerEndpoint)
@frozen
class PikoServerEndpoint:
    """Listen on a Piko endpoint through ``upstream``."""

    upstream: Upstream
    endpoint_id: str

    def listen(self, protocolFactory: IProtocolFactory) -> Deferred[IListeningPort]:
        """Serve ``protocolFactory`` on the endpoint; see :meth:`Upstream.listen`."""
        return self.upstream.listen(self.endpoint_id, protocolFactory)  # type: ignore[return-value]


@implementer(IStreamClientEndpoint)
@frozen
class PikoClientEndpoint:
    """Connect to a Piko endpoint through ``dialer``."""

    dialer: Dialer
    endpoint_id: str

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        """Connect a protocol from ``protocolFactory``; see :meth:`Dialer.dial`."""
        return self.dialer.dial(self.endpoint_id, protocolFactory)


def _tls_for(url: str, ca_certs_file: str | None) -> IOpenSSLClientConnectionCreator | None:
    """
    TLS trusting every CA of the ``caCertsFile`` bundle, or ``None`` (then the
    WebSocket client verifies against the system's trust store).
    """
    route_url(url, "/", "x")  # validates the scheme
    if ca_certs_file is None or not url.startswith(("https:", "wss:")):
        return None
    from urllib.parse import urlsplit

    host = urlsplit(url).hostname or "localhost"
    return client_tls(host, ConnectTLSConfig(root_cas=ca_certs_file))


@implementer(IPlugin, IStreamServerEndpointStringParser)
class PikoServerParser:
    """Parses ``piko:<endpoint>:url=...`` into a :class:`PikoServerEndpoint`."""

    prefix = "piko"

    def parseStreamServer(  # type: ignore[override]
        self,
        reactor: Any,
        endpoint_id: str,
        url: str = "http://localhost:8001",
        token: str | None = None,
        tenant: str | None = None,
        caCertsFile: str | None = None,
        connectTimeout: str = "30",
        proxyUrl: str | None = None,
        keepTrying: str = "no",
    ) -> PikoServerEndpoint:
        """
        Build the endpoint from the string's arguments (``docs/sdk.md`` lists them).

        :raises ValueError: for a ``keepTrying`` other than yes/no/true/false/1/0.
        """
        flags = {"yes": True, "true": True, "1": True, "no": False, "false": False, "0": False}
        if keepTrying.lower() not in flags:
            raise ValueError(f"keepTrying must be yes or no, not {keepTrying!r}")
        upstream = Upstream(
            reactor,
            url,
            token=token,
            tenant_id=tenant,
            tls=_tls_for(url, caCertsFile),
            connect_timeout=float(connectTimeout),
            proxy_url=proxyUrl,
            keep_trying=flags[keepTrying.lower()],
        )
        return PikoServerEndpoint(upstream, endpoint_id)


@implementer(IPlugin, IStreamClientEndpointStringParserWithReactor)
class PikoClientParser:
    """Parses ``piko:<endpoint>:url=...`` into a :class:`PikoClientEndpoint`."""

    prefix = "piko"

    def parseStreamClient(  # type: ignore[override]
        self,
        reactor: Any,
        endpoint_id: str,
        url: str = "http://localhost:8000",
        token: str | None = None,
        caCertsFile: str | None = None,
        timeout: str = "30",
    ) -> PikoClientEndpoint:
        """Build the endpoint from the string's arguments."""
        dialer = Dialer(
            reactor, url, token=token, tls=_tls_for(url, caCertsFile), timeout=float(timeout)
        )
        return PikoClientEndpoint(dialer, endpoint_id)

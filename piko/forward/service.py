# -*- test-case-name: piko.test.forward.test_service -*-
"""
The ``piko forward`` service: local TCP ports forwarded to Piko endpoints.

As Go's ``forward/forwarder.go``: each configured port listens locally (a bare port on
``127.0.0.1``, Go's ``localhost``), and each accepted connection is dialled to its endpoint
through the proxy port's ``/_piko/v1/tcp/<endpoint>`` route
(:meth:`piko.client.Dialer.dial`), once, without retry.  The local connection is not read
until the dial completes; then the two are spliced with backpressure and half-close
(:func:`piko.splice.join`).  A failed dial is logged (``502: no available upstreams``) and the
local connection closed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IProtocol, IProtocolFactory, IStreamServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger, LogLevel

from piko.client.dialer import Dialer
from piko.config import ForwardConfig, PortConfig, listen_endpoint_description, local_host
from piko.splice import DialingSplice
from piko.tls import tls_for_url

__all__ = ["ForwardFactory", "ForwardService", "listen_description", "make_forward_service"]


class _LocalSplice(DialingSplice):
    """The local end: dials the endpoint when accepted, reading paused meanwhile."""

    dial_failed_message = "failed to dial endpoint"
    dial_failed_level = LogLevel.error

    def __init__(self, factory: ForwardFactory) -> None:
        super().__init__()
        self.factory = factory

    def dial(self, factory: IProtocolFactory) -> Deferred[IProtocol]:
        """Connect through the Piko proxy port."""
        return self.factory.dialer.dial(self.factory.endpoint_id, factory)

    def log_fields(self) -> dict[str, Any]:
        """Name the endpoint in the log line."""
        return {"endpoint_id": self.factory.endpoint_id}


class ForwardFactory(Factory):
    """
    Builds the protocol of each accepted local connection.

    :param dialer: connects to the Piko proxy port (anything with Go's ``Dial`` shape,
        ``dial(endpoint_id, factory) -> Deferred``).
    :param endpoint_id: the endpoint this port forwards to.
    :param addr: what the port listens on, for the line logged when it starts.
    """

    #: Twisted's "Starting factory" line is replaced by a structured ``forwarding`` line.
    noisy = False
    log = Logger()

    def __init__(self, dialer: Dialer, endpoint_id: str, addr: str = "") -> None:
        self.dialer = dialer
        self.endpoint_id = endpoint_id
        self.addr = addr

    def startFactory(self) -> None:
        """Say what this port forwards, once it listens."""
        self.log.info("forwarding", addr=self.addr, endpoint_id=self.endpoint_id)

    def buildProtocol(self, addr: Any) -> Protocol:
        return _LocalSplice(self)


def listen_description(port: PortConfig) -> str:
    """
    The server endpoint string for a forward port: a bare port or ``localhost:<port>`` listens
    on ``127.0.0.1`` (Go's ``localhost``, IPv4 only here); ``host:port`` as given; an endpoint
    description (``tcp:...``, ``unix:...``) unchanged.

    :raises ValueError: when the address is invalid.
    """
    host = local_host(port.addr)
    if host is None:
        return listen_endpoint_description(port.addr)
    if host.startswith("localhost:"):
        host = "127.0.0.1:" + host[len("localhost:") :]
    return listen_endpoint_description(host)


class ForwardService(MultiService):
    """One :class:`StreamServerEndpointService` per forwarded port."""

    log = Logger()


def make_forward_service(
    config: ForwardConfig,
    reactor: Any,
    *,
    dialer: Dialer | None = None,
    endpoint_factory: Callable[[Any, str], IStreamServerEndpoint] = serverFromString,
) -> ForwardService:
    """
    Build the forward service for ``config``.

    Listening failures (port in use) surface as usual for a ``StreamServerEndpointService``:
    ``startService`` logs them, and with ``_raiseSynchronously`` set (we set it) a synchronous
    failure raises from ``startService``, which the caller turns into exit status 1.

    :param reactor: the reactor.
    :param dialer: the :class:`Dialer` (tests inject a fake); by default from ``connect``.
    :param endpoint_factory: ``serverFromString`` (tests inject a fake).
    :raises ValueError: when a port address is invalid.
    """
    connect = config.connect
    if dialer is None:
        dialer = Dialer(
            reactor,
            connect.url,
            token=connect.token or None,
            tls=tls_for_url(connect.url, connect.tls),
            timeout=connect.timeout,
        )
    service = ForwardService()
    for port in config.ports:
        description = listen_description(port)
        endpoint = endpoint_factory(reactor, description)
        factory = ForwardFactory(dialer, port.endpoint_id, description)
        child = StreamServerEndpointService(endpoint, factory)
        child._raiseSynchronously = True
        child.setServiceParent(service)
    return service

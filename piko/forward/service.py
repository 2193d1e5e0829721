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
from twisted.application.service import MultiService, Service
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IProtocol, IProtocolFactory, IStreamServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

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
    """

    #: Twisted's "Starting factory" line is replaced by :class:`_ForwardPortService`'s
    #: ``forwarding`` line, which names the address actually bound.
    noisy = False
    log = Logger()

    def __init__(self, dialer: Dialer, endpoint_id: str) -> None:
        self.dialer = dialer
        self.endpoint_id = endpoint_id

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
    """
    One listening service per forwarded port.

    :ivar failed: fires with the error when a port cannot listen (logged already); the
        program then exits 1 (``piko forward`` and, through :mod:`piko._tap_exit`, twistd).
    """

    log = Logger()

    def __init__(self) -> None:
        super().__init__()
        self.failed: Deferred[BaseException] = Deferred()

    def fail(self, error: BaseException) -> None:
        """Report that the forwarder cannot run."""
        if not self.failed.called:
            self.failed.callback(error)


class _ForwardPortService(StreamServerEndpointService):
    """
    A forwarded port that says, once it listens, where it listens and where it forwards, and
    reports a port it cannot listen on to its :class:`ForwardService` (one log line, exit 1)
    instead of raising from ``startService`` (a traceback under twistd).
    """

    log = Logger()

    def __init__(
        self, endpoint: Any, factory: ForwardFactory, url: str, owner: ForwardService
    ) -> None:
        super().__init__(endpoint, factory)
        self._url = url
        self._owner = owner

    def privilegedStartService(self) -> None:
        Service.privilegedStartService(self)
        self._waitingForPort = self.endpoint.listen(self.factory)
        self._waitingForPort.addCallbacks(self._listening, self._listen_failed)

    def _listening(self, port: Any) -> Any:
        factory: ForwardFactory = self.factory
        host = port.getHost()
        addr = f"{host.host}:{host.port}" if hasattr(host, "port") else str(host)
        self.log.info(
            "forwarding",
            **{"addr": addr, "endpoint-id": factory.endpoint_id, "url": self._url},
        )
        return port

    def _listen_failed(self, failure: Failure) -> None:
        if failure.check(CancelledError):
            return
        factory: ForwardFactory = self.factory
        self.log.error(
            "failed to listen",
            **{"endpoint-id": factory.endpoint_id, "error": failure.getErrorMessage()},
        )
        self._owner.fail(failure.value)


def make_forward_service(
    config: ForwardConfig,
    reactor: Any,
    *,
    dialer: Dialer | None = None,
    endpoint_factory: Callable[[Any, str], IStreamServerEndpoint] = serverFromString,
) -> ForwardService:
    """
    Build the forward service for ``config``.

    A port that cannot listen (in use) is logged and fires :attr:`ForwardService.failed`;
    the caller makes the process exit 1.

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
        endpoint = endpoint_factory(reactor, listen_description(port))
        child = _ForwardPortService(
            endpoint, ForwardFactory(dialer, port.endpoint_id), connect.url, service
        )
        child.setServiceParent(service)
    return service

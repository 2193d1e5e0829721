# -*- test-case-name: piko.test.agent.test_tcp_listener -*-
"""
The agent's TCP listener: each yamux stream is spliced to a new connection to the service.

As Go's ``agent/tcpproxy``: every accepted stream dials ``host:port`` (the listener
``timeout`` bounds the dial), then bytes are copied both ways with half-close passed on.
If the dial fails the stream is closed with no byte written (the server's client sees its
connection closed) and a warning is logged.  Nothing is read from the stream until the local
connection is up, so backpressure holds from the first byte.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IProtocol, IProtocolFactory, IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import ILogObserver, Logger, LogLevel
from twisted.python.failure import Failure

from piko.config import AccessLogConfig
from piko.inspect.capture import IListenerInspector
from piko.splice import DialingSplice

__all__ = ["TCPListenerFactory"]


class _StreamSplice(DialingSplice):
    """The stream end of the splice; it dials the local service when the stream opens."""

    dial_failed_message = "failed to dial upstream"

    def __init__(self, factory: TCPListenerFactory) -> None:
        super().__init__()
        self.factory = factory

    def dial(self, factory: IProtocolFactory) -> Deferred[IProtocol]:
        """Connect to the local service."""
        return self.factory.endpoint.connect(factory)

    def log_fields(self) -> dict[str, Any]:
        """Name the endpoint in the log line."""
        return {"endpoint_id": self.factory.endpoint_id}

    def connectionMade(self) -> None:
        """Log the connection (Go's ``proxy.tcp.access``), then dial."""
        self.factory.access("connection opened")
        super().connectionMade()

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:  # noqa: B008
        """Log the connection's end."""
        super().connectionLost(reason)
        self.factory.access("connection closed")


class TCPListenerFactory(Factory):
    """
    Builds the protocol for each stream of a TCP listener.

    :param endpoint: dials the local service (a ``HostnameEndpoint`` with the listener
        ``timeout``; tests pass a fake).
    :param endpoint_id: for log messages.
    :param access_log: the listener's ``access_log``: streams are logged opened and closed on
        ``proxy.tcp.access`` at info, or at debug when the access log is disabled (as Go does).
    :param observer: where access records go (default: the global log publisher).
    :param inspector: records every connection (the request inspector), if given.
    """

    #: Started for every connection of the listener: no "Starting factory" line.
    noisy = False

    def __init__(
        self,
        endpoint: IStreamClientEndpoint,
        endpoint_id: str = "",
        access_log: AccessLogConfig | None = None,
        observer: ILogObserver | None = None,
        inspector: IListenerInspector | None = None,
        target: str = "",
    ) -> None:
        self.endpoint = endpoint
        self.endpoint_id = endpoint_id
        self.inspector = inspector
        self.target = target
        disabled = access_log is not None and access_log.disable
        self.access_level = LogLevel.debug if disabled else LogLevel.info
        self.access_log = Logger(namespace="proxy.tcp.access", observer=observer)

    def access(self, message: str) -> None:
        """Emit one access record for this listener."""
        self.access_log.emit(self.access_level, message, **{"endpoint-id": self.endpoint_id})

    def buildProtocol(self, addr: Any) -> Any:
        protocol = _StreamSplice(self)
        if self.inspector is not None:
            return self.inspector.wrap_tcp(protocol, self.endpoint_id, self.target)
        return protocol

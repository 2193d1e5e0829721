# -*- test-case-name: piko.test.agent.test_metrics -*-
"""
The agent's Prometheus metrics and its metrics server (``server.enabled``, ``server.bind_addr``).

Go's agent counts every request its HTTP listeners answer with the ``piko_agent_*`` metrics,
labelled by ``endpoint``, in a registry of its own, and serves only ``GET /metrics`` on
``server.bind_addr`` (``:5000``).  Go registers no runtime collector there; we add the
process collector (``process_*``) as on the server, because RSS, CPU and open file
descriptors are what an operator watches on a long-running agent and the extra series change
none of Go's.  ``prometheus_client.twisted`` imports the global reactor and serves from a
thread, so the registry is served by our own HTTP front end.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IListeningPort, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from piko.http.listening import HTTPPortFactory
from piko.http.observe import ExchangeOutcome, ObservedExchange
from piko.http.rewrite import go_response_head
from piko.http.server import IRequestHandler, IServerExchange
from piko.metrics import SIZE_BUCKETS, WithoutCreated
from piko.net import listen

__all__ = ["AgentMetrics", "AgentMetricsHandler", "AgentMetricsServer", "MeteredListenerHandler"]


class AgentMetrics:
    """
    The ``piko_agent_*`` metrics of one agent, in one registry.

    :param registry: where the metrics live (a new one by default).
    :param process: also register the process collector.
    """

    def __init__(self, registry: CollectorRegistry | None = None, *, process: bool = True) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        if process:
            ProcessCollector(registry=r)
        self.requests_in_flight = Gauge(
            "piko_agent_requests_in_flight",
            "Number of requests currently handled by this agent.",
            ["endpoint"],
            registry=r,
        )
        self.requests_total = Counter(
            "piko_agent_requests",
            "Total requests.",
            ["status", "method", "endpoint"],
            registry=r,
        )
        self.request_latency = Histogram(
            "piko_agent_request_latency_seconds",
            "Request latency.",
            ["status", "method", "endpoint"],
            registry=r,
        )
        self.request_size = Histogram(
            "piko_agent_request_size_bytes",
            "Request size",
            ["endpoint"],
            buckets=SIZE_BUCKETS,
            registry=r,
        )
        self.response_size = Histogram(
            "piko_agent_response_size_bytes",
            "Response size",
            ["endpoint"],
            buckets=SIZE_BUCKETS,
            registry=r,
        )

    def render(self) -> tuple[bytes, bytes]:
        """The text exposition: ``(content type, body)``."""
        return CONTENT_TYPE_LATEST.encode(), generate_latest(WithoutCreated(self.registry))


@implementer(IRequestHandler)
class MeteredListenerHandler:
    """Counts every request an HTTP listener's handler answers, labelled by its endpoint."""

    def __init__(
        self,
        handler: IRequestHandler,
        metrics: AgentMetrics,
        endpoint_id: str,
        clock: IReactorTime,
    ) -> None:
        self.handler = handler
        self.metrics = metrics
        self.endpoint_id = endpoint_id
        self.clock = clock
        self._in_flight = metrics.requests_in_flight.labels(endpoint=endpoint_id)
        self._request_size = metrics.request_size.labels(endpoint=endpoint_id)
        self._response_size = metrics.response_size.labels(endpoint=endpoint_id)
        #: The labelled ``(requests_total, request_latency)`` children by (status, method):
        #: ``labels()`` costs a lock and a dict lookup per call.
        self._children: dict[tuple[int, bytes], tuple[Any, Any]] = {}

    def request_received(self, exchange: IServerExchange) -> None:
        """Count the request in, and observe its answer."""
        self._in_flight.inc()
        observed = ObservedExchange(exchange, self.clock, self._record)
        self.handler.request_received(observed)  # type: ignore[arg-type]

    def _record(self, outcome: ExchangeOutcome) -> None:
        self._in_flight.dec()
        key = (outcome.status, outcome.head.method)
        children = self._children.get(key)
        if children is None:
            labels = {
                "status": str(outcome.status),
                "method": outcome.head.method.decode("latin-1"),
                "endpoint": self.endpoint_id,
            }
            children = (
                self.metrics.requests_total.labels(**labels),
                self.metrics.request_latency.labels(**labels),
            )
            if len(self._children) < 256:
                self._children[key] = children
        children[0].inc()
        # Go observes latency with millisecond resolution.
        children[1].observe(round(outcome.duration, 3))
        self._request_size.observe(outcome.request_size)
        self._response_size.observe(outcome.sent)


_NOT_FOUND = (404, ((b"Content-Type", b"text/plain"),), b"404 page not found")


@implementer(IRequestHandler)
class AgentMetricsHandler:
    """Serves ``GET /metrics`` (and ``HEAD``); anything else is Go's ``404 page not found``."""

    def __init__(self, render: Callable[[], tuple[bytes, bytes]]) -> None:
        self.render = render

    def request_received(self, exchange: IServerExchange) -> None:
        """Answer at once."""
        head = exchange.head
        path = urlsplit(head.target.decode("latin-1")).path
        if head.method in (b"GET", b"HEAD") and path == "/metrics":
            content_type, body = self.render()
            status, headers = 200, ((b"Content-Type", content_type),)
        else:
            status, headers, body = _NOT_FOUND
        head_only = head.method == b"HEAD"

        def build(date: bytes, *, close: bool, http11: bool) -> bytes:
            response = go_response_head(
                status, headers, date, http11=http11, close=close, content_length=len(body)
            )
            return response if head_only else response + body

        exchange.respond(build)


class AgentMetricsServer(Service):
    """
    Listens on ``bind_addr`` and serves the agent's metrics while running.

    :param on_failure: called with the error when the address cannot be listened on (the
        agent then exits, as Go's does).
    :ivar port: the listening port, once listening.
    """

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        bind_addr: str,
        metrics: AgentMetrics,
        on_failure: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.reactor = reactor
        self.bind_addr = bind_addr
        self.metrics = metrics
        self.on_failure = on_failure
        self.factory = HTTPPortFactory(AgentMetricsHandler(metrics.render), reactor)
        self.port: IListeningPort | None = None
        self.listening: Deferred[IListeningPort] | None = None

    def startService(self) -> None:
        """Start listening."""
        super().startService()
        d = self.listening = maybeDeferred(listen, self.reactor, self.bind_addr, self.factory)
        d.addCallbacks(self._listening, self._failed)

    def _listening(self, port: IListeningPort) -> IListeningPort:
        self.port = port
        self.log.info("metrics server listening", addr=self.bind_addr)
        return port

    def _failed(self, reason: Failure) -> Failure | None:
        self.log.error(
            "metrics server: failed to listen", addr=self.bind_addr, error=str(reason.value)
        )
        if self.on_failure is not None:
            self.on_failure(reason.value)
            return None
        return reason

    def stopService(self) -> Deferred[None]:
        """Stop listening and close the open connections."""
        super().stopService()
        port, self.port = self.port, None
        for protocol in list(self.factory.connections):
            if protocol.transport is not None:
                protocol.transport.loseConnection()
        if port is None:
            return succeed(None)
        d: Deferred[None] = Deferred()
        stopped = port.stopListening()
        if stopped is None:
            return succeed(None)
        stopped.addBoth(lambda _: d.callback(None))
        return d

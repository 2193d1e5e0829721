# -*- test-case-name: piko.test.agent.test_service -*-
"""
The ``piko agent`` service: every configured listener, registered on the Piko server.

Go's agent (``cli/agent/command.go``) connects its listeners one after the other through one
``client.Upstream``, each within ``connect.timeout``, and exits with status 1 if any of them
cannot connect.  Ours exits at start only for an answer that retrying cannot change (``401:
invalid token``, ``404``); a server that is down or unreachable while the agent starts is
retried as after a disconnection, each attempt logged (``connect failed; retrying`` with the
URL, error and next delay), and ``connect.timeout`` bounds each attempt.  Once connected,
listeners reconnect by themselves (see :class:`~piko.client.upstream.PikoListeningPort`).
On SIGTERM each HTTP listener stops gracefully (GoAway, in-flight requests finish, bounded by
``grace_period``), TCP listeners close at once.

:func:`make_agent_service` is what the CLI and ``twistd piko-agent`` call.  The exit-on-failure
contract: the returned :class:`AgentService` has a :attr:`~AgentService.failed` Deferred that
fires (callback, with the exception) if an initial connect fails; the error is already logged
and the other listeners are already shut.  By default the service also stops the reactor
then; the caller must make the process exit with status 1 (``piko agent`` returns 1 from its
main; under twistd, which always exits 0 after ``reactor.stop()``, see :func:`make_agent_service`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from attrs import define, field
from twisted.application.service import IService, MultiService
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.error import ReactorNotRunning
from twisted.internet.interfaces import IProtocolFactory, IStreamClientEndpoint
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

from piko.agent.http_listener import HTTPListenerFactory, parse_target
from piko.agent.metrics import AgentMetrics, AgentMetricsServer
from piko.agent.tcp_listener import TCPListenerFactory
from piko.auth.load import load_verifier
from piko.client.upstream import PikoListeningPort, Upstream
from piko.config import AgentConfig, ListenerConfig, split_host_port
from piko.http.access_log import AccessLog
from piko.http.pool import ConnectionPool
from piko.inspect import Inspector, inspector_service
from piko.inspect.capture import IListenerInspector
from piko.inspect.service import InspectorService
from piko.logging import kept_from
from piko.tls import client_tls, tls_for_url

__all__ = ["AgentService", "build_listener_factory", "make_agent_service"]

#: Builds the client endpoint to the local service: ``(reactor, host, port, timeout)``.
EndpointFactory = Callable[[Any, str, int, float], IStreamClientEndpoint]


def _hostname_endpoint(reactor: Any, host: str, port: int, timeout: float) -> IStreamClientEndpoint:
    return HostnameEndpoint(reactor, host, port, timeout=timeout or 30)


@define
class _Listener:
    """One configured listener and its running state."""

    config: ListenerConfig
    factory: IProtocolFactory
    pool: ConnectionPool | None = None
    port: PikoListeningPort | None = None
    stopping: Deferred[None] | None = field(default=None)


def build_listener_factory(
    config: ListenerConfig,
    reactor: Any,
    endpoint_factory: EndpointFactory = _hostname_endpoint,
    metrics: AgentMetrics | None = None,
    min_log_level: LogLevel | None = None,
    inspector: IListenerInspector | None = None,
) -> tuple[IProtocolFactory, ConnectionPool | None]:
    """
    The stream factory of one listener (and its connection pool for HTTP), with its access
    log, and counted in ``metrics`` if given.  ``min_log_level`` is the lowest level the
    agent's logging keeps for access records (none built below it).  ``inspector``
    captures its traffic, if given.

    :raises ValueError: when ``addr`` is invalid for the protocol.
    """
    if config.protocol == "tcp":
        host_port = config.host()
        if host_port is None:
            raise ValueError(f"invalid addr: {config.addr}")
        host, port = split_host_port(host_port)
        endpoint = endpoint_factory(reactor, host, int(port), config.timeout)
        tcp = TCPListenerFactory(
            endpoint, config.endpoint_id, config.access_log, inspector=inspector, target=host_port
        )
        return tcp, None
    url = config.url()
    if url is None:
        raise ValueError(f"invalid addr: {config.addr}")
    target = parse_target(url)
    endpoint = endpoint_factory(reactor, target.host, target.port, config.timeout)
    if target.tls:
        endpoint = wrapClientTLS(
            client_tls(target.host, config.tls, f"listener {config.endpoint_id}: tls"), endpoint
        )
    http_client = config.http_client
    pool = ConnectionPool(
        reactor,
        endpoint,
        idle_timeout=http_client.idle_conn_timeout,
        max_idle=http_client.max_idle_conns,
    )
    access_log = AccessLog(
        config.access_log,
        "proxy.http.access",
        fields={"endpoint-id": config.endpoint_id},
        min_level=min_log_level,
        behind_server=True,
    )
    factory = HTTPListenerFactory(
        reactor,
        pool,
        target,
        timeout=config.timeout,
        access_log=access_log,
        metrics=metrics,
        endpoint_id=config.endpoint_id,
        inspector=inspector,
    )
    return factory, pool


class AgentService(MultiService):
    """
    Connects every listener on start, stops them gracefully on stop.

    :ivar failed: fires with the exception when a listener's first connection fails (the
        agent must then exit with status 1); never fires otherwise.
    :ivar ready: fires once every listener is connected.
    """

    log = Logger()

    def __init__(
        self,
        config: AgentConfig,
        reactor: Any,
        upstream: Upstream,
        listeners: list[_Listener],
        on_failure: Callable[[BaseException], None] | None,
    ) -> None:
        super().__init__()
        self.config = config
        self.reactor = reactor
        self.upstream = upstream
        self.listeners = listeners
        self.on_failure = on_failure
        self.failed: Deferred[BaseException] = Deferred()
        self.ready: Deferred[None] = Deferred()
        #: The request inspector's service, when it is on.
        self.inspector: InspectorService | None = None
        self._stopping = False

    def startService(self) -> None:
        super().startService()
        self._stopping = False
        self._connect_next(0)

    def _connect_next(self, index: int) -> None:
        if self._stopping:
            return
        if index >= len(self.listeners):
            if not self.ready.called:
                self.ready.callback(None)
            return
        listener = self.listeners[index]
        cfg = listener.config
        port = listener.port = PikoListeningPort(self.upstream, cfg.endpoint_id, listener.factory)
        if cfg.protocol == "tcp":
            self.log.info("starting tcp proxy", endpoint_id=cfg.endpoint_id)
        else:
            self.log.info("starting reverse proxy", endpoint_id=cfg.endpoint_id)
        d = port.start()
        d.addCallbacks(
            lambda _: self._connect_next(index + 1),
            self._connect_failed,
            errbackArgs=(listener,),
        )

    def _connect_failed(self, reason: Failure, listener: _Listener) -> None:
        listener.port = None
        if self._stopping:
            return
        error = reason.value
        self.log.error(
            "failed to connect", endpoint_id=listener.config.endpoint_id, error=str(error)
        )
        self.fail(error)

    def fail(self, error: BaseException) -> None:
        """Shut every listener and report ``error`` (the agent must exit with status 1)."""
        if self.failed.called:
            return
        self._stopping = True
        d = DeferredList([self._shutdown(other) for other in self.listeners], consumeErrors=True)

        def report(_: object) -> None:
            if not self.failed.called:
                self.failed.callback(error)
            if self.on_failure is not None:
                self.on_failure(error)

        d.addCallback(report)

    def _shutdown(self, listener: _Listener) -> Deferred[None]:
        port = listener.port
        if listener.pool is not None:
            listener.pool.close()
        if port is None:
            return succeed(None)
        listener.port = None
        return port.shutdown()

    def _graceful(self, listener: _Listener) -> Deferred[None]:
        port = listener.port
        if port is None:
            return succeed(None)
        if listener.config.protocol == "tcp":
            return self._shutdown(listener)
        done: Deferred[None] = Deferred()
        timer = self.reactor.callLater(self.config.grace_period, lambda: port.shutdown())

        def finished(_: object) -> None:
            if timer.active():
                timer.cancel()
            listener.port = None
            if listener.pool is not None:
                listener.pool.close()
            done.callback(None)

        port.stopListening().addBoth(finished)
        return done

    def stopService(self) -> Deferred[None]:
        self._stopping = True
        d1 = super().stopService()
        d2 = DeferredList([self._graceful(lst) for lst in self.listeners], consumeErrors=True)
        d = DeferredList([d1 or succeed(None), d2], consumeErrors=True)
        return d.addCallback(lambda _: None)


def make_agent_service(
    config: AgentConfig,
    reactor: Any,
    *,
    stop_reactor_on_failure: bool = True,
    endpoint_factory: EndpointFactory = _hostname_endpoint,
    upstream: Upstream | None = None,
) -> AgentService:
    """
    Build the agent service for ``config``.

    Caller contract: start the service under a running reactor; if
    :attr:`AgentService.failed` fires, the failure is logged (``connect: 401: invalid token``)
    and, with ``stop_reactor_on_failure``, ``reactor.stop()`` was called: exit with status 1.
    ``piko agent`` does ``service.failed.addCallback(lambda _: status.__setitem__(0, 1))``
    before ``reactor.run()``.  ``twistd`` exits 0 after ``reactor.stop()``; a ``_tap`` module
    that wants status 1 can add an ``("after", "shutdown")`` trigger calling ``os._exit(1)``
    once ``failed`` fired.

    :param reactor: the reactor (TCP, TLS, time).
    :param stop_reactor_on_failure: call ``reactor.stop()`` after a failed initial connect.
    :param endpoint_factory: builds the client endpoint to a local service (tests).
    :param upstream: the :class:`Upstream` to use (tests); by default built from ``connect``.
    :raises ValueError: when a listener ``addr`` is invalid.
    """
    connect = config.connect
    if upstream is None:
        upstream = Upstream(
            reactor,
            connect.url,
            token=connect.token or None,
            tenant_id=connect.tenant_id or None,
            tls=tls_for_url(connect.url, connect.tls),
            connect_timeout=connect.timeout,
            proxy_url=connect.proxy_url or None,
            keep_trying=True,
        )
    metrics = AgentMetrics() if config.server.enabled else None
    inspect = config.inspect
    inspector = (
        Inspector(reactor, budget=inspect.db_size, body_cap=inspect.body_size)
        if inspect.enabled
        else None
    )
    listeners = []
    for listener_config in config.listeners:
        factory, pool = build_listener_factory(
            listener_config,
            reactor,
            endpoint_factory,
            metrics,
            kept_from(config.log.level, config.log.subsystems, "proxy.http.access"),
            inspector,
        )
        listeners.append(_Listener(listener_config, factory, pool))

    def stop_reactor(_: BaseException) -> None:
        with contextlib.suppress(ReactorNotRunning):
            reactor.stop()

    on_failure = stop_reactor if stop_reactor_on_failure else None
    service = AgentService(config, reactor, upstream, listeners, on_failure)
    if metrics is not None:
        server = AgentMetricsServer(reactor, config.server.bind_addr, metrics, service.fail)
        server.setServiceParent(service)
    if inspector is not None:
        verifier = load_verifier(inspect.auth, reactor, where="config: inspect: auth")
        service.inspector = inspector_service(
            inspect, reactor, inspector, verifier=verifier, proxy_url=_proxy_url(connect.url)
        )
        service.inspector.setServiceParent(service)
    IService(service)
    return service


def _proxy_url(upstream_url: str) -> str:
    """
    A guess at the server's proxy URL from its upstream URL, for ``curl`` exports: the
    same host on Go's default proxy port (the inspector page lets the user change it).
    """
    parts = urlsplit(upstream_url)
    host = parts.hostname or "localhost"
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme or 'http'}://{host}:8000"

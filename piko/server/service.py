# -*- test-case-name: piko.test.server.test_service -*-
"""
The Piko server node as a Twisted service: admin, upstream and proxy ports.

Start order follows Go: admin (not ready), upstream port, proxy port, then
ready.  Stopping drains instead of cutting: ``/ready`` turns 503, both ports
stop accepting, in-flight proxied requests finish (bounded by
``grace_period``), and only then are the upstream sessions closed, so no
request already routed is lost (Go closes the upstreams first).
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks, succeed
from twisted.internet.interfaces import IListeningPort
from twisted.internet.task import deferLater
from twisted.logger import Logger

from piko.auth import RequestAuthenticator, load_port_authenticator
from piko.cluster.nodes import ClusterState, Node
from piko.config import ServerConfig
from piko.http.access_log import AccessLog, AccessLoggedHandler
from piko.mux.session import SessionConfig
from piko.server.admin import AdminRoutes, LocalNode
from piko.server.admin_port import AdminPortHandler
from piko.server.forwarding import RemoteForwarder
from piko.server.listening import HTTPPortFactory, listen
from piko.server.metrics import MeteredHandler, ServerMetrics
from piko.server.proxy_port import ProxyPortHandler
from piko.server.registry import UpstreamRegistry
from piko.server.upstream_port import UpstreamPortHandler, UpstreamSession
from piko.tls import node_tls, server_tls
from piko.ws.server import WebSocketAcceptor

#: How often a draining server looks whether in-flight requests have finished.
DRAIN_POLL_INTERVAL = 0.05


def advertise_addr(configured: str, port: IListeningPort) -> str:
    """
    The ``host:port`` other nodes and tools should use for ``port``.

    The configured advertise address if any; else the bound address, with a
    wildcard host replaced by this machine's address (Go panics when it finds
    no private IP; we fall back to loopback).
    """
    if configured:
        return configured
    address = port.getHost()
    host = getattr(address, "host", "")
    if host in ("", "0.0.0.0", "::"):
        try:
            host = socket.gethostbyname(socket.gethostname())
        except OSError:
            host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{getattr(address, 'port', 0)}"


class PikoServerService(MultiService):
    """
    One Piko server node.

    :ivar registry: the local upstreams.
    :ivar ready: what ``/ready`` reports.
    :ivar ports: the listening ports by name, once started.
    :ivar started: fires once every port listens (or fails if one cannot).
    """

    log = Logger()

    def __init__(self, config: ServerConfig, reactor: Any, *, http_client: Any = None) -> None:
        super().__init__()
        self.config = config
        self.reactor = reactor
        self.registry: UpstreamRegistry[UpstreamSession] = UpstreamRegistry()
        self.ready = False
        self.ports: dict[str, IListeningPort] = {}
        self.started: Deferred[None] = Deferred()
        # Configured but unusable auth raises here, before anything listens: fail closed.
        self.auth: dict[str, RequestAuthenticator | None] = {
            port: load_port_authenticator(config, port, reactor, http_client=http_client)
            for port in ("admin", "upstream", "proxy")
        }
        # The other nodes, fed by gossip; the local endpoint counts follow the registry.
        self.cluster = ClusterState(Node(config.cluster.node_id))
        self.registry.observe(self.cluster.set_local_endpoint)
        self.forwarder = RemoteForwarder(
            reactor,
            self.cluster,
            timeout=config.proxy.timeout,
            tls_for_host=node_tls(config.proxy.tls),
            on_forward=lambda node_id: self.metrics.remote_requests_total.labels(
                node_id=node_id
            ).inc(),
        )
        acceptor = WebSocketAcceptor(reactor)
        session_config = SessionConfig()
        self.upstream_handler = UpstreamPortHandler(
            reactor, self.registry, acceptor, session_config, auth=self.auth["upstream"]
        )
        self.proxy_handler = ProxyPortHandler(
            reactor,
            self.registry,
            acceptor,
            timeout=config.proxy.timeout,
            auth=self.auth["proxy"],
            forwarder=self.forwarder,
        )
        self.metrics = ServerMetrics()
        self.metrics.watch(self.registry)
        self.routes = AdminRoutes(
            LocalNode(config.cluster.node_id, "", ""),
            self.registry,
            lambda: self.ready,
            self.metrics.render,
            self.cluster,
        )
        # Unusable TLS settings raise here, before anything listens: fail closed.
        self.tls = {
            "admin": server_tls("admin", config.admin.tls),
            "upstream": server_tls("upstream", config.upstream.tls),
            "proxy": server_tls("proxy", config.proxy.tls),
        }
        http = config.proxy.http
        self.factories = {
            "admin": HTTPPortFactory(AdminPortHandler(self.routes, self.auth["admin"]), reactor),
            "upstream": HTTPPortFactory(self.upstream_handler, reactor),
            "proxy": HTTPPortFactory(
                MeteredHandler(
                    AccessLoggedHandler(
                        self.proxy_handler,
                        AccessLog(config.proxy.access_log, "proxy.access", skip_prefix="/_piko"),
                        reactor,
                    ),
                    self.metrics,
                    reactor,
                ),
                reactor,
                header_timeout=http.read_header_timeout,
                idle_timeout=http.idle_timeout,
                max_header_bytes=http.max_header_bytes,
            ),
        }

    def startService(self) -> None:
        """Listen on admin, upstream and proxy in that order, then turn ready."""
        super().startService()
        for auth in self.auth.values():
            if auth is not None:
                auth.start()
        self._start().chainDeferred(self.started)

    @inlineCallbacks
    def _start(self) -> Any:
        config = self.config
        for name, bind_addr in (
            ("admin", config.admin.bind_addr),
            ("upstream", config.upstream.bind_addr),
            ("proxy", config.proxy.bind_addr),
        ):
            try:
                self.ports[name] = yield listen(
                    self.reactor, bind_addr, self.factories[name], self.tls[name]
                )
            except Exception as error:
                self.log.error(
                    "{name}: failed to listen on {addr}: {error}",
                    name=name,
                    addr=bind_addr,
                    error=str(error),
                )
                raise
        self.routes.node = LocalNode(
            config.cluster.node_id,
            advertise_addr(config.proxy.advertise_addr, self.ports["proxy"]),
            advertise_addr(config.admin.advertise_addr, self.ports["admin"]),
        )
        self.ready = True
        self.log.info(
            "piko server ready: node {node_id}, proxy {proxy}, upstream {upstream}, admin {admin}",
            node_id=config.cluster.node_id,
            proxy=_addr(self.ports["proxy"]),
            upstream=_addr(self.ports["upstream"]),
            admin=_addr(self.ports["admin"]),
        )

    def stopService(self) -> Deferred[None]:
        """Drain, then close; bounded by ``grace_period``."""
        super().stopService()
        for auth in self.auth.values():
            if auth is not None:
                auth.stop()
        return self._stop()

    @inlineCallbacks
    def _stop(self) -> Any:
        self.ready = False
        for name in ("proxy", "upstream"):
            port = self.ports.pop(name, None)
            if port is not None:
                yield port.stopListening()
        proxy = self.factories["proxy"]
        deadline = self.reactor.seconds() + self.config.grace_period
        proxy.close_idle()
        while proxy.busy_count() and self.reactor.seconds() < deadline:
            yield deferLater(self.reactor, DRAIN_POLL_INTERVAL, lambda: None)
            proxy.close_idle()
        for protocol in list(proxy.connections):
            _abort(protocol.transport)
        self.upstream_handler.close_all()
        for protocol in list(self.factories["upstream"].connections):
            _abort(protocol.transport)
        port = self.ports.pop("admin", None)
        if port is not None:
            yield port.stopListening()
        yield DeferredList([succeed(None)])


def _abort(transport: Any) -> None:
    if transport is not None:
        transport.abortConnection()


def _addr(port: IListeningPort) -> str:
    address = port.getHost()
    return f"{getattr(address, 'host', '')}:{getattr(address, 'port', '')}"


def make_server_service(
    config: ServerConfig, reactor: Any, *, http_client: Any = None
) -> PikoServerService:
    """
    Build the server node service (what ``twistd piko-server`` and ``piko server`` run).

    :param http_client: fetches remote JWKS (default :mod:`treq`).
    :raises piko.config.ConfigError: when TLS or auth is configured but
        cannot be loaded; the server must not start without it.
    """
    return PikoServerService(config, reactor, http_client=http_client)

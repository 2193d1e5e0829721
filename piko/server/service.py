# -*- test-case-name: piko.test.server.test_service -*-
"""
The Piko server node as a Twisted service: admin, gossip, upstream and proxy ports.

Start order follows Go: admin (not ready), gossip (TCP and UDP), one join
attempt through ``cluster.join``, upstream port, proxy port, then ready (and,
if the boot join found nobody, joining retries with backoff within
``cluster.join_timeout``).  Stopping drains instead of cutting: ``/ready``
turns 503, both ports stop accepting, in-flight proxied requests finish
(bounded by ``grace_period``), and only then are the upstream sessions
closed, so no request already routed is lost (Go closes the upstreams
first); then the node leaves the cluster and closes gossip and admin.

The drain overlaps the move of the upstreams, so that no request fails
while gossip catches up (a rolling restart under load):

1. ``/ready`` turns 503 and the upstream port stops accepting; the proxy
   port keeps serving, and the upstream sessions stay registered (their
   counts stay gossiped, other nodes keep forwarding here).
2. Every upstream is sent yamux GoAway(0); our SDK listeners open a
   replacement connection through the load balancer, keep the old one a
   moment while gossip spreads the new node's count, then answer GoAway(0)
   and we close the old session once idle.
3. We wait until every upstream session is closed, or has answered, or is
   idle while another active node serves its endpoint, but only for a short
   hand-off window (:data:`HANDOFF_RECONNECT` plus
   :data:`HANDOFF_GOSSIP_ROUNDS` gossip intervals): Go agents ignore GoAway
   and never move while their session is open, and neither does one of ours
   that cannot reach another node, so waiting longer gains nothing.
   Meanwhile a forwarded request that finds no local upstream here takes a
   second hop (:mod:`piko.server.forwarding`).
4. The rest are deregistered and closed by us, each at once if idle or when
   its last stream ends; the proxy port stays open
   :data:`HANDOFF_GOSSIP_ROUNDS` gossip intervals more, so the others learn
   our counts are 0 before we stop answering; then it stops accepting.

The proxy drain ends as soon as nothing is in flight: each connection is
closed once its request is answered (an upgraded one, once it closes), and
the stop goes on when the last one is done, not at ``grace_period``.  Every
wait is on an event (a connection turning idle or closing, an upstream
answering or ending its last stream, gossip changing the node table), never
a poll; ``grace_period`` bounds them all.  Idle connections to other nodes
are closed at the end.

With ``upstream.rebalance.threshold`` set, a node well above the cluster's
mean upstream count sheds some every second (:mod:`piko.server.rebalance`).
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable
from typing import Any

from twisted.application.service import MultiService
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    inlineCallbacks,
)
from twisted.internet.error import DNSLookupError
from twisted.internet.interfaces import IListeningPort
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure

from piko.auth import RequestAuthenticator, load_port_authenticator
from piko.cluster.nodes import ClusterState, Node
from piko.cluster.service import GossipService, GossipSettings
from piko.cluster.syncer import Syncer
from piko.cluster.transport import TLSTransport, cluster_tls_options
from piko.config import LoadConfig, ServerConfig, listen_endpoint_description, split_host_port
from piko.http.access_log import AccessLog
from piko.http.listening import HTTPPortFactory
from piko.http.server import IServerExchange
from piko.logging import kept_from
from piko.mux.session import SessionConfig
from piko.net import listen
from piko.policy.config import compile_policies
from piko.policy.handler import PolicyHandler
from piko.policy.metrics import PolicyMetrics
from piko.policy.reload import PolicyReloader, ReloadResult
from piko.server.admin import AdminRoutes, LocalNode
from piko.server.admin_port import AdminPortHandler
from piko.server.forwarding import RemoteForwarder
from piko.server.metrics import MeteredHandler, ServerMetrics
from piko.server.proxy_port import ProxyPortHandler
from piko.server.rebalance import Rebalancer
from piko.server.registry import UpstreamRegistry
from piko.server.traffic import Traffic
from piko.server.upstream_port import UpstreamPortHandler, UpstreamSession
from piko.tls import TLSConfigError, node_tls, server_tls
from piko.ws.server import WebSocketAcceptor

#: Gossip intervals the proxy port stays open after the last upstream moved away.
HANDOFF_GOSSIP_ROUNDS = 5

#: Seconds a drain gives an upstream to reconnect elsewhere (plus
#: :data:`HANDOFF_GOSSIP_ROUNDS` gossip intervals for the news to reach us)
#: before closing it anyway.  Our SDK listeners reconnect within 0.1 s of the
#: GoAway; Go agents ignore GoAway and never move while their session is open,
#: so waiting longer would only delay the stop.  Not waiting at all would fail
#: requests: in a rolling restart under load (``test_rolling_restart``) a
#: quarter of them failed while gossip still routed them here.
HANDOFF_RECONNECT = 1.0

#: Go's join-on-startup backoff: from 1 s, doubling, at most 1 min.
JOIN_BACKOFF_MIN = 1.0
JOIN_BACKOFF_MAX = 60.0


#: A listening address's host that means "every interface".
_ANY_HOST = ("", "0.0.0.0", "::")


def advertise_addr(configured: str, port: IListeningPort, own_host: str = "127.0.0.1") -> str:
    """
    The ``host:port`` other nodes and tools should use for ``port``.

    The configured advertise address if any; else the bound address, with a
    wildcard host replaced by ``own_host``, this machine's address as
    :func:`resolve_own_host` found it (Go panics when it finds no private IP;
    we fall back to loopback).
    """
    if configured:
        return configured
    address = port.getHost()
    host = getattr(address, "host", "")
    if host in _ANY_HOST:
        host = own_host
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{getattr(address, 'port', 0)}"


def resolve_own_host(reactor: Any) -> Deferred[str]:
    """
    This machine's address by its host name, ``127.0.0.1`` if it has none.

    Resolved by the reactor's resolver (:meth:`IReactorCore.resolve
    <twisted.internet.interfaces.IReactorCore.resolve>`, a thread by default),
    so a slow or broken DNS delays only this node's start, never the reactor
    (``socket.gethostbyname`` here blocked every connection in the process).
    """
    d: Deferred[str] = reactor.resolve(socket.gethostname())

    def loopback(failure: Failure) -> str:
        failure.trap(DNSLookupError, OSError)
        return "127.0.0.1"

    return d.addErrback(loopback)


def may_bind_any(bind_addr: str) -> bool:
    """
    Whether listening on ``bind_addr`` may bind every interface (or no IP at all).

    Only then does :func:`advertise_addr` need this machine's address; an
    address that names its interface (``127.0.0.1:8000``,
    ``tcp:8000:interface=10.0.0.1``) never does.
    """
    try:
        description = listen_endpoint_description(bind_addr)
    except ValueError:
        return True
    interface = re.search(r"(?:^|:)interface=((?:\\.|[^:])*)", description)
    if interface is None:
        return True
    return interface.group(1).replace("\\", "") in _ANY_HOST


class PikoServerService(MultiService):
    """
    One Piko server node.

    :ivar registry: the local upstreams.
    :ivar ready: what ``/ready`` reports.
    :ivar ports: the listening ports by name, once started.
    :ivar started: fires once every port listens (or fails if one cannot).
    """

    log = Logger()

    def __init__(
        self,
        config: ServerConfig,
        reactor: Any,
        *,
        http_client: Any = None,
        stop_reactor_on_failure: bool = False,
        shared_sockets: dict[str, tuple[int, int]] | None = None,
        policy_source: LoadConfig | None = None,
    ) -> None:
        """
        :param policy_source: the configuration file (``--config.path``) that
            :meth:`reload_policies` reads the traffic policies from again.
        """
        super().__init__()
        #: Listening sockets bound by a parent process (``piko server --workers``),
        #: by port name: ``(file descriptor, address family)``.  Each is adopted
        #: next to the port of the same name and served by the same factory.
        self.shared_sockets = dict(shared_sockets or {})
        self.shared_ports: dict[str, IListeningPort] = {}
        self.stop_reactor_on_failure = stop_reactor_on_failure
        #: Fires if the node gives up after starting (joining failed with
        #: ``abort_if_join_fails``); the program then exits 1.
        self.failed: Deferred[BaseException] = Deferred()
        self.config = config
        self.reactor = reactor
        self.registry: UpstreamRegistry[UpstreamSession] = UpstreamRegistry()
        self.ready = False
        self.ports: dict[str, IListeningPort] = {}
        #: This machine's address, advertised for a port bound to every interface
        #: (resolved at start when one may be, see :func:`resolve_own_host`).
        self.own_host = "127.0.0.1"
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
        # Unusable policies raise here, before anything listens: fail closed.
        policies = compile_policies(config.policies, reactor.seconds)
        self.rebalancer = Rebalancer(
            reactor,
            self.cluster,
            config.upstream.rebalance,
            lambda count: self.upstream_handler.shed(count, config.proxy.timeout or None),
        )
        self.metrics = ServerMetrics()
        self.metrics.watch(self.registry)
        # Traffic policy (piko.policy): applied in front of the proxy handler.
        policy_metrics = PolicyMetrics(self.metrics.registry)
        self.policy_handler = PolicyHandler(
            self.proxy_handler,
            reactor,
            policies,
            metrics=policy_metrics,
            from_node=self._from_node,
        )
        self.policy_reloader = PolicyReloader(
            self.policy_handler,
            policy_source or LoadConfig(),
            reactor.seconds,
            metrics=policy_metrics,
        )
        self.metrics.watch_cluster(self.cluster)
        #: The dashboard's per-endpoint figures (fed by the proxy port's request observer).
        self.traffic = Traffic(reactor.seconds)
        # Gossip: what we publish and what we learn go through the syncer.
        gossip = config.cluster.gossip
        self.syncer = Syncer(self.cluster)
        self.registry.observe(self.syncer.local_endpoint_changed)
        cluster_tls = config.cluster.tls
        gossip_transport = None
        if cluster_tls.enabled():
            # Unusable cluster TLS raises here, before anything listens: fail closed.
            try:
                options = cluster_tls_options(cluster_tls.cert, cluster_tls.key, cluster_tls.ca)
            except ValueError as error:
                raise TLSConfigError(f"config: {error}") from error
            gossip_transport = TLSTransport(reactor, options)
        self.gossip = GossipService(
            reactor,
            GossipSettings(
                config.cluster.node_id,
                gossip.bind_addr,
                gossip.advertise_addr,
                gossip.interval,
                gossip.max_packet_size,
            ),
            self.syncer,
            metrics=self.metrics,
            advertise=lambda port: advertise_addr(gossip.advertise_addr, port, self.own_host),
            transport=gossip_transport,
        )
        self.metrics.watch_gossip(lambda: self.gossip.state)
        self._join_retry: Deferred[Any] | None = None
        #: The upstream hand-off in progress while draining (see :meth:`_hand_off`).
        self._handoff: _HandOff | None = None
        self.cluster.observe(self._cluster_changed)
        self.routes = AdminRoutes(
            LocalNode(config.cluster.node_id, "", ""),
            self.registry,
            lambda: self.ready,
            self.metrics.render,
            self.cluster,
            gossip=lambda: self.gossip.state,
            traffic=self.traffic,
            reload_policies=self._reload_policies,
        )
        # Unusable TLS settings raise here, before anything listens: fail closed.
        self.tls = {
            "admin": server_tls("admin", config.admin.tls),
            "upstream": server_tls("upstream", config.upstream.tls),
            "proxy": server_tls("proxy", config.proxy.tls),
        }
        http = config.proxy.http
        access_log = AccessLog(
            config.proxy.access_log,
            "proxy.access",
            skip_prefix="/_piko",
            min_level=kept_from(config.log.level, config.log.subsystems, "proxy.access"),
        )
        self.factories = {
            "admin": HTTPPortFactory(
                AdminPortHandler(self.routes, self.auth["admin"], reactor=reactor), reactor
            ),
            "upstream": HTTPPortFactory(self.upstream_handler, reactor),
            "proxy": HTTPPortFactory(
                # Metrics and the access log watch the same exchange (one wrapper per request).
                MeteredHandler(
                    self.policy_handler,
                    self.metrics,
                    reactor,
                    also=None if access_log.disabled else access_log.record,
                    traffic=self.traffic,
                ),
                reactor,
                header_timeout=http.header_timeout(),
                idle_timeout=http.keep_alive_timeout(),
                read_timeout=http.body_timeout(),
                write_timeout=http.response_timeout(),
                max_header_bytes=http.max_header_bytes,
            ),
        }

    def _from_node(self, exchange: IServerExchange) -> bool:
        """
        Whether a request was forwarded here by another node (so its entry node applied
        the policies): it says so (``x-piko-forward``) and comes from a known node's address.
        """
        if exchange.head.get(b"x-piko-forward") is None:
            return False
        host = getattr(exchange.transport.getPeer(), "host", None)
        for node in self.cluster.nodes()[1:]:
            if node.proxy_addr and split_host_port(node.proxy_addr)[0].strip("[]") == host:
                return True
        return False

    def reload_policies(self) -> ReloadResult:
        """Reload the traffic policies from the configuration file (``SIGHUP``, admin)."""
        return self.policy_reloader.reload()

    def _reload_policies(self) -> tuple[int, dict[str, object]]:
        result = self.reload_policies()
        report: dict[str, object] = {
            "ok": result.ok,
            "message": result.message,
            "policies": list(result.policies),
        }
        return (200 if result.ok else 400), report

    def startService(self) -> None:
        """Listen on admin, upstream and proxy in that order, then turn ready."""
        super().startService()
        for auth in self.auth.values():
            if auth is not None:
                auth.start()
        self._start().addErrback(self._start_failed).chainDeferred(self.started)

    def _start_failed(self, failure: Failure) -> Failure:
        """A port could not listen: the node cannot serve, so the program exits 1."""
        if not self.failed.called:
            self.failed.callback(failure.value)
        return failure

    @inlineCallbacks
    def _start(self) -> Any:
        config = self.config
        if any(
            not advertise and may_bind_any(bind_addr)
            for advertise, bind_addr in (
                (config.admin.advertise_addr, config.admin.bind_addr),
                (config.cluster.gossip.advertise_addr, config.cluster.gossip.bind_addr),
                (config.proxy.advertise_addr, config.proxy.bind_addr),
            )
        ):
            self.own_host = yield resolve_own_host(self.reactor)
        for name, bind_addr in (
            ("admin", config.admin.bind_addr),
            ("gossip", config.cluster.gossip.bind_addr),
            ("upstream", config.upstream.bind_addr),
            ("proxy", config.proxy.bind_addr),
        ):
            if name == "gossip":
                try:
                    self.gossip.listen()
                except Exception as error:
                    self.log.error(
                        "failed to listen", port="gossip", addr=bind_addr, error=str(error)
                    )
                    raise
                self.gossip.startService()
                joined = yield self._join_on_boot()
                continue
            try:
                self.ports[name] = yield listen(
                    self.reactor, bind_addr, self.factories[name], self.tls[name]
                )
            except Exception as error:
                self.log.error("failed to listen", port=name, addr=bind_addr, error=str(error))
                raise
            if name in self.shared_sockets:
                fd, family = self.shared_sockets[name]
                factory = self.factories[name]
                tls = self.tls[name]
                self.shared_ports[name] = self.reactor.adoptStreamPort(
                    fd, family, factory if tls is None else TLSMemoryBIOFactory(tls, False, factory)
                )
        self.routes.node = LocalNode(
            config.cluster.node_id,
            advertise_addr(config.proxy.advertise_addr, self.ports["proxy"], self.own_host),
            advertise_addr(config.admin.advertise_addr, self.ports["admin"], self.own_host),
        )
        self.cluster.local.proxy_addr = self.routes.node.proxy_addr
        self.cluster.local.admin_addr = self.routes.node.admin_addr
        assert self.gossip.state is not None
        self.syncer.sync(
            self.gossip.state, self.routes.node.proxy_addr, self.routes.node.admin_addr
        )
        self.ready = True
        self.rebalancer.start()
        self.log.info(
            "piko server ready",
            node_id=config.cluster.node_id,
            proxy=_addr(self.ports["proxy"]),
            upstream=_addr(self.ports["upstream"]),
            admin=_addr(self.ports["admin"]),
        )
        if config.cluster.join and not joined:
            self._join_retry = Deferred.fromCoroutine(self._join_on_startup())

    @inlineCallbacks
    def _join_on_boot(self) -> Any:
        """One join attempt before serving (Go's ``JoinOnBoot``); failure is only logged."""
        if not self.config.cluster.join:
            return True
        try:
            yield Deferred.fromCoroutine(self.gossip.join(self.config.cluster.join))
        except Exception as error:
            self.log.warn("failed to join cluster", error=str(error))
            return False
        return True

    async def _join_on_startup(self) -> None:
        """Retry joining with backoff within ``join_timeout``; give up as configured."""
        cluster = self.config.cluster
        deadline = self.reactor.seconds() + cluster.join_timeout
        backoff = JOIN_BACKOFF_MIN
        error: Exception | None = None
        while self.running:
            try:
                await self.gossip.join(cluster.join)
                return
            except CancelledError:
                raise
            except Exception as e:
                error = e
            if not self.running:
                return
            wait = min(backoff, deadline - self.reactor.seconds())
            if wait <= 0:
                break
            self.log.warn("failed to join cluster; retrying", error=str(error), backoff=wait)
            await deferLater(self.reactor, wait, lambda: None)
            backoff = min(backoff * 2, JOIN_BACKOFF_MAX)
        if not self.running:
            return
        if cluster.abort_if_join_fails:
            self.log.error("failed to join cluster", error=str(error))
            self.failed.callback(error or Exception("join failed"))
            if self.stop_reactor_on_failure:
                self.reactor.stop()
        else:
            self.log.warn("failed to join cluster", error=str(error))

    def stopService(self) -> Deferred[None]:
        """Drain, then close; bounded by ``grace_period``."""
        super().stopService()
        self.log.info("starting shutdown")
        for auth in self.auth.values():
            if auth is not None:
                auth.stop()
        return self._stop()

    @inlineCallbacks
    def _stop(self) -> Any:
        self.ready = False
        self.rebalancer.stop()
        deadline = self.reactor.seconds() + self.config.grace_period
        yield self._stop_listening("upstream")
        yield self._hand_off(deadline)
        yield self._stop_listening("proxy")
        proxy = self.factories["proxy"]
        yield _within(self.reactor, proxy.drain(), deadline - self.reactor.seconds())
        for protocol in list(proxy.connections):
            _abort(protocol.transport)
        self.forwarder.draining = False
        self.forwarder.close()
        self.upstream_handler.close_all()
        for protocol in list(self.factories["upstream"].connections):
            _abort(protocol.transport)
        if self._join_retry is not None:
            self._join_retry.cancel()
            self._join_retry = None
        if self.gossip.state is not None:
            try:
                yield Deferred.fromCoroutine(self.gossip.leave())
            except Exception as error:
                self.log.warn("failed to leave cluster", error=str(error))
        if self.gossip.running or self.gossip.state is not None:
            yield self.gossip.stopService()
        yield self._stop_listening("admin")
        self.log.info("shutdown complete")

    @inlineCallbacks
    def _stop_listening(self, name: str) -> Any:
        """Stop the port ``name`` and the shared socket adopted next to it."""
        for ports in (self.shared_ports, self.ports):
            port = ports.pop(name, None)
            if port is not None:
                yield port.stopListening()

    @inlineCallbacks
    def _hand_off(self, deadline: float) -> Any:
        """Steps 2 to 4 of the drain (module docstring), within ``deadline``."""
        sessions = [s for s in self.upstream_handler.sessions if s.transport is not None]
        if "proxy" not in self.ports or not sessions or self.cluster.active_count() <= 1:
            # Alone: nowhere for them to move to; go as before (closed when idle).
            self.upstream_handler.shed_all()
            return
        self.forwarder.draining = True
        self.upstream_handler.announce_all()
        gossip_rounds = HANDOFF_GOSSIP_ROUNDS * self.config.cluster.gossip.interval
        window = HANDOFF_RECONNECT + gossip_rounds
        self._handoff = _HandOff(sessions, lambda e: self.cluster.lookup_endpoint(e) is not None)
        try:
            yield _within(
                self.reactor,
                self._handoff.done,
                min(window, deadline - self.reactor.seconds()),
            )
        finally:
            self._handoff = None
        self.upstream_handler.shed_all()
        linger = min(gossip_rounds, deadline - self.reactor.seconds())
        if linger > 0 and self.cluster.active_count() > 1:
            yield deferLater(self.reactor, linger, lambda: None)

    def _cluster_changed(self, cluster: ClusterState) -> None:
        """Gossip changed the node table: an upstream being handed off may now be elsewhere."""
        if self._handoff is not None:
            self._handoff.check_all()


class _HandOff:
    """
    Fires :attr:`done` once every upstream session of a draining node has moved.

    Moved means :meth:`UpstreamSession.handed_off`: closed, answered GoAway,
    or idle while another active node serves its endpoint.  Waits on the
    events that change that (the session ends or answers, its last stream
    ends, gossip changes the node table), not by polling.

    :param elsewhere: whether another active node serves an endpoint id.
    """

    def __init__(self, sessions: list[UpstreamSession], elsewhere: Callable[[str], bool]) -> None:
        self.pending = set(sessions)
        self.elsewhere = elsewhere
        self.done: Deferred[None] = Deferred()
        self._idle_watched: set[UpstreamSession] = set()
        for session in sessions:
            session.when_going_away().addCallback(self._going, session)
        self.check_all()

    def check_all(self) -> None:
        """Look at every session still pending (the node table changed)."""
        for session in list(self.pending):
            self.check(session)

    def check(self, session: UpstreamSession) -> None:
        """Forget ``session`` if it moved, else wait for its last stream to end."""
        if session not in self.pending:
            return
        if session.handed_off(self.elsewhere(session.endpoint_id)):
            self.pending.discard(session)
            if not self.pending and not self.done.called:
                self.done.callback(None)
        elif session.stream_count and session not in self._idle_watched:
            self._idle_watched.add(session)
            session.when_idle().addCallback(self._idle, session)

    def _going(self, _: None, session: UpstreamSession) -> None:
        self.check(session)

    def _idle(self, _: None, session: UpstreamSession) -> None:
        self._idle_watched.discard(session)
        self.check(session)


def _within(reactor: Any, d: Deferred[Any], seconds: float) -> Deferred[bool]:
    """
    Fire with ``True`` when ``d`` fires, or with ``False`` once ``seconds`` passed.

    ``d`` is left to fire later (its result is dropped); a drain bounded by
    ``grace_period`` then goes on.
    """
    result: Deferred[bool] = Deferred()

    def expired() -> None:
        if not result.called:
            result.callback(False)

    call = reactor.callLater(max(0.0, seconds), expired)

    def fired(_: object) -> None:
        if call.active():
            call.cancel()
        if not result.called:
            result.callback(True)

    d.addBoth(fired)
    return result


def _abort(transport: Any) -> None:
    if transport is not None:
        transport.abortConnection()


def _addr(port: IListeningPort) -> str:
    address = port.getHost()
    return f"{getattr(address, 'host', '')}:{getattr(address, 'port', '')}"


def make_server_service(
    config: ServerConfig,
    reactor: Any,
    *,
    http_client: Any = None,
    policy_source: LoadConfig | None = None,
) -> PikoServerService:
    """
    Build the server node service (what ``twistd piko-server`` and ``piko server`` run).

    :param http_client: fetches remote JWKS (default :mod:`treq`).
    :raises piko.config.ConfigError: when TLS or auth is configured but
        cannot be loaded; the server must not start without it.
    """
    return PikoServerService(
        config,
        reactor,
        http_client=http_client,
        stop_reactor_on_failure=True,
        policy_source=policy_source,
    )

# -*- test-case-name: piko.test.server.test_forwarding -*-
"""
Node-to-node forwarding: a request with no local upstream goes to a node that has one.

Go Piko reverse-proxies such a request over the other node's proxy port,
marked ``x-piko-forward: true`` so that it goes one hop at most; the other
node answers from its local upstreams only.  We do the same on the same
wire, with three differences: the node is chosen weighted by its upstream
count (:meth:`ClusterState.lookup_endpoint`), connections to other nodes are
kept alive and reused, and TLS is used whenever the proxy port serves TLS
(Go #283 fails there).  A node that cannot be reached has its route dropped
so the next request does not try it again before gossip says otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator, IProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from piko.agent.pool import ConnectionPool
from piko.cluster.nodes import ClusterState, Node
from piko.config import split_host_port
from piko.http.proxy import IUpstreamConnector, ProxyExchange
from piko.http.rewrite import rewrite_request
from piko.http.server import IServerExchange

#: Builds the TLS creator for connections to a node's proxy port (``None``: plain TCP).
TLSForHost = Callable[[str], IOpenSSLClientConnectionCreator | None]


@implementer(IUpstreamConnector)
class _RouteConnector:
    """A pooled connection to one node, dropping the route if the node cannot be reached."""

    def __init__(self, pool: IUpstreamConnector, on_unreachable: Callable[[], object]) -> None:
        self.pool = pool
        self.on_unreachable = on_unreachable

    def connect(self, protocol: IProtocol) -> Deferred[IProtocol]:
        def unreachable(failure: Failure) -> Failure:
            self.on_unreachable()
            return failure

        return self.pool.connect(protocol).addErrback(unreachable)

    def release(self, protocol: IProtocol, reusable: bool) -> None:
        self.pool.release(protocol, reusable)


class RemoteForwarder:
    """
    Forwards requests to other nodes.

    :param reactor: dials the nodes and times the requests.
    :param cluster: the node table.
    :param timeout: ``proxy.timeout`` for forwarded requests (not for WebSocket upgrades).
    :param tls_for_host: TLS for node connections, when the proxy port serves TLS.
    :param on_forward: called with the node id of each forwarded request (metrics).
    :param pool_for: the connection pool for a node (tests pass fakes).
    """

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        cluster: ClusterState,
        *,
        timeout: float | None = 30.0,
        tls_for_host: TLSForHost | None = None,
        on_forward: Callable[[str], object] | None = None,
        dial_timeout: float = 10.0,
        pool_for: Callable[[Node], IUpstreamConnector] | None = None,
    ) -> None:
        self.reactor = reactor
        self.cluster = cluster
        self.timeout = timeout or None
        self.tls_for_host = tls_for_host
        self.on_forward = on_forward
        self.dial_timeout = dial_timeout
        self._pools: dict[str, ConnectionPool] = {}
        self._pool_for: Callable[[Node], IUpstreamConnector] = pool_for or self._pool

    def forward(self, exchange: IServerExchange, endpoint_id: str) -> bool:
        """
        Send ``exchange`` to a node with upstreams for ``endpoint_id``, if one may be used.

        :return: ``False`` when the request was already forwarded once (one hop
            only) or no other node has the endpoint; the caller answers then.
        """
        if exchange.head.get(b"x-piko-forward") == b"true":
            return False
        node = self.cluster.lookup_endpoint(endpoint_id)
        if node is None:
            return False
        if self.on_forward is not None:
            self.on_forward(node.id)
        peer = exchange.transport.getPeer()
        relay = ProxyExchange(
            exchange,
            _RouteConnector(self._pool_for(node), partial(self._drop, node.id, endpoint_id)),
            self.reactor,
            partial(rewrite_request, client_ip=getattr(peer, "host", None), close=False),
            timeout=self.timeout,
        )
        relay.start()
        return True

    def close(self) -> None:
        """Close idle connections to other nodes (at shutdown)."""
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()

    def _pool(self, node: Node) -> ConnectionPool:
        pool = self._pools.get(node.proxy_addr)
        if pool is None:
            host, port = split_host_port(node.proxy_addr)
            endpoint: Any = HostnameEndpoint(
                self.reactor, host, int(port), timeout=self.dial_timeout
            )
            tls = self.tls_for_host(host) if self.tls_for_host is not None else None
            if tls is not None:
                endpoint = wrapClientTLS(tls, endpoint)
            pool = self._pools[node.proxy_addr] = ConnectionPool(self.reactor, endpoint)
        return pool

    def _drop(self, node_id: str, endpoint_id: str) -> None:
        self.log.warn(
            "node {node_id} unreachable; dropping its route for {endpoint_id}",
            node_id=node_id,
            endpoint_id=endpoint_id,
        )
        self.cluster.update_endpoint(node_id, endpoint_id, 0)

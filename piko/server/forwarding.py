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
so the next request does not try it again before gossip says otherwise.  A
request whose node fails before answering is sent again by the rules of
:mod:`piko.server.retry` (always when it was never written; when written, for
an idempotent method whose body is held): :meth:`RemoteForwarder.route` gives
the routes, avoiding the nodes that failed it.

A second hop, between our nodes only: a node that receives a forwarded
request (``x-piko-forward: true``) for an endpoint it no longer has a local
upstream of (the upstream moved away, or the node drains, and the other
nodes' tables lag by a gossip round or two) forwards it once more, to another
node with the endpoint, instead of answering 502 ``no available upstreams``.  That hop is marked
``x-piko-hops: 2``; a request carrying ``x-piko-hops`` is never forwarded
again, so there is no loop even between two draining nodes.  The header is
internal: every forward replaces whatever a client sent in it.  Go nodes
never drain this way and never send it; to them it is an ordinary header.

A connection to another node that carries an upgraded request (a WebSocket,
``/_piko/v1/tcp/``) is relayed raw with half-close passed on; it is closed
once both directions are shut (each side sent its FIN), which Twisted leaves
to the protocol.  Without that it stays open after the client and the other
node are gone, and a draining node waits for it until ``grace_period`` ends.
Idle connections to other nodes are closed when the node stops
(:meth:`RemoteForwarder.close`).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from collections.abc import Set as AbstractSet
from functools import partial
from typing import Any

from attrs import evolve
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator, IProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from piko.cluster.nodes import ClusterState, Node
from piko.config import split_host_port
from piko.http.head import RequestHead
from piko.http.pool import ConnectionFactory, ConnectionPool, PooledConnection
from piko.http.proxy import IUpstreamConnector
from piko.http.rewrite import BodyFraming, rewrite_request
from piko.http.server import IServerExchange
from piko.server.retry import NodeKey, RetryingRelay, Route

#: The internal header of a second hop, and its value (see the module docstring).
HOPS_HEADER = b"x-piko-hops"
SECOND_HOP = b"2"

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


def _rewrite_hop(
    head: RequestHead, framing: BodyFraming, *, client_ip: str | None, second: bool
) -> bytes:
    """Go's forwarded head, with ``x-piko-hops`` replaced (set on a second hop)."""
    headers = [(k, v) for k, v in head.headers if k.lower() != HOPS_HEADER]
    if second:
        headers.append((HOPS_HEADER, SECOND_HOP))
    if len(headers) != len(head.headers) or second:
        head = evolve(head, headers=headers)
    return rewrite_request(head, framing, client_ip, close=False)


class _NodeConnection(PooledConnection):
    """
    A pooled connection to another node's proxy port, closed once both halves are shut.

    Twisted keeps a half-closeable TCP connection open after EOF was read and
    our own FIN was sent; only the protocol can end it.  On a relayed upgrade
    each half is shut by a different party (the client's FIN is passed on,
    then the other node's), so no one else would.
    """

    read_shut = False
    write_shut = False

    def readConnectionLost(self) -> None:
        """The other node sent its FIN; close the connection if ours was sent too."""
        self.read_shut = True
        super().readConnectionLost()
        self._close_if_shut()

    def writeConnectionLost(self) -> None:
        """Our FIN was sent; close the connection if the other node's arrived already."""
        self.write_shut = True
        super().writeConnectionLost()
        self._close_if_shut()

    def _close_if_shut(self) -> None:
        if self.read_shut and self.write_shut and not self.closed and self.transport is not None:
            self.transport.loseConnection()


class _NodeConnectionFactory(ConnectionFactory):
    def buildProtocol(self, addr: Any) -> _NodeConnection:
        return _NodeConnection(self.pool)


#: Idle connections kept per node: Go's ``http.DefaultTransport`` keeps 2 per host
#: (``DefaultMaxIdleConnsPerHost``).  A burst of forwarded requests opens more, and all but
#: these close once answered, so a node holds a handful of sockets per peer, not one per
#: request of its busiest second for 90 s.
MAX_IDLE_PER_NODE = 2

#: Seconds an idle connection to another node is kept.  A request written into a connection
#: the other node is closing at that moment is lost, and one with a body cannot be replayed
#: (the differential run lost one that way); keeping idle connections briefly narrows that
#: window to bursts, where reuse pays.
NODE_IDLE_TIMEOUT = 5.0


class NodeConnectionPool(ConnectionPool):
    """Keep-alive connections to one other node (:class:`_NodeConnection`)."""

    def __init__(self, clock: Any, endpoint: Any) -> None:
        super().__init__(
            clock, endpoint, idle_timeout=NODE_IDLE_TIMEOUT, max_idle=MAX_IDLE_PER_NODE
        )
        self._factory = _NodeConnectionFactory(self)


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
        self._pools: dict[str, NodeConnectionPool] = {}
        self._pool_for: Callable[[Node], IUpstreamConnector] = pool_for or self._pool
        #: Set while the node drains: forwarded requests may take a second hop.
        self.draining = False

    def forward(self, exchange: IServerExchange, endpoint_id: str) -> bool:
        """
        Send ``exchange`` to a node with upstreams for ``endpoint_id``, if one may be used.

        A node that fails before answering is replaced by another one that has the
        endpoint, when :mod:`piko.server.retry` allows it, without waiting for one.

        :return: ``False`` when the request was already forwarded twice or no
            other node has the endpoint; the caller answers then.
        """
        route = self.route(exchange, endpoint_id)
        if route is None:
            return False
        relay = RetryingRelay(
            exchange,
            partial(self.route, exchange, endpoint_id),
            self.reactor,
            endpoint_id=endpoint_id,
            timeout=self.timeout,
        )
        relay.start(route)
        return True

    def route(
        self,
        exchange: IServerExchange,
        endpoint_id: str,
        exclude: AbstractSet[Hashable] = frozenset(),
    ) -> Route | None:
        """
        A route for ``exchange`` to a node with upstreams for ``endpoint_id``.

        :param exclude: keys of routes that failed this request already (the nodes of
            :class:`~piko.server.retry.NodeKey` among them are not picked).
        :return: ``None`` when the request was already forwarded twice or no other node
            (but the excluded) has the endpoint.
        """
        head = exchange.head
        second = False
        if head.get(b"x-piko-forward") == b"true":
            # Our caller found no local upstream: the sender's table is stale.
            if head.get(HOPS_HEADER) is not None:
                return None
            second = True
        failed = {key.id for key in exclude if isinstance(key, NodeKey)} if exclude else ()
        node = self.cluster.lookup_endpoint(endpoint_id, failed)
        if node is None:
            return None
        if failed:
            self.log.info("retrying on another node", endpoint_id=endpoint_id, node_id=node.id)
        if self.on_forward is not None:
            self.on_forward(node.id)
        peer = exchange.transport.getPeer()
        return Route(
            NodeKey(node.id),
            _RouteConnector(self._pool_for(node), partial(self._drop, node.id, endpoint_id)),
            partial(_rewrite_hop, client_ip=getattr(peer, "host", None), second=second),
        )

    def close(self) -> None:
        """
        Close idle connections to other nodes (at shutdown).

        Connections still in use are closed when released; a later forward
        dials afresh.
        """
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()

    def _pool(self, node: Node) -> NodeConnectionPool:
        pool = self._pools.get(node.proxy_addr)
        if pool is None:
            host, port = split_host_port(node.proxy_addr)
            endpoint: Any = HostnameEndpoint(
                self.reactor, host, int(port), timeout=self.dial_timeout
            )
            tls = self.tls_for_host(host) if self.tls_for_host is not None else None
            if tls is not None:
                endpoint = wrapClientTLS(tls, endpoint)
            pool = self._pools[node.proxy_addr] = NodeConnectionPool(self.reactor, endpoint)
        return pool

    def _drop(self, node_id: str, endpoint_id: str) -> None:
        self.log.warn(
            "node unreachable; dropping its route",
            node_id=node_id,
            endpoint_id=endpoint_id,
        )
        self.cluster.update_endpoint(node_id, endpoint_id, 0)

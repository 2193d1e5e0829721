# -*- test-case-name: piko.test.server.test_admin -*-
"""
The admin port's routes, sans-IO: health, readiness and the status API.

Answers are byte-compatible with Go Piko's gin handlers (see the recorded
exchanges in ``interop/errors``): ``/health`` and ``/ready`` with empty
bodies, JSON as gin writes it, and gin's ``404 page not found`` for any
other path or method.  Beyond Go: the status dashboard on ``/ui`` (see
:mod:`piko.server.dashboard`), with ``/`` redirecting to it, and its data under a prefix of
our own, :data:`DASHBOARD_PREFIX` (Go's routes are left exactly as they are):

* ``/status/dashboard/node``: this node's per-endpoint traffic over the last fifteen minutes
  (see :mod:`piko.server.traffic`), its upstream sessions and its recent errors.  With
  ``?forward=<node-id>`` the request goes to that node's admin port, like any admin route, so
  a browser talking to one node sees the whole cluster.
* ``POST /policy/reload``: reload the traffic policies from the configuration file
  (:mod:`piko.policy.reload`); 200 with the policies now in force, or 400 with the error
  (the old policies stay).
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

from attrs import frozen

from piko.cluster.codec import Entry
from piko.cluster.nodes import ClusterState, Node
from piko.cluster.state import GossipState, NodeMetadata
from piko.server.dashboard import PAGE, PAGE_HEADERS
from piko.server.gojson import GoStruct, go_json
from piko.server.registry import IUpstreamRegistry
from piko.server.traffic import Traffic

Headers = tuple[tuple[bytes, bytes], ...]

_JSON = ((b"Content-Type", b"application/json; charset=utf-8"),)
_TEXT = ((b"Content-Type", b"text/plain"),)


@frozen
class AdminResponse:
    """A complete answer: the HTTP layer adds ``Date`` and ``Content-Length``."""

    status: int
    headers: Headers = ()
    body: bytes = b""


NOT_FOUND = AdminResponse(404, _TEXT, b"404 page not found")
#: The status dashboard (``/ui``), and ``/`` sending browsers there.
DASHBOARD = AdminResponse(200, PAGE_HEADERS, PAGE)
REDIRECT_TO_DASHBOARD = AdminResponse(302, ((b"Location", b"/ui"),))
EMPTY_NOT_FOUND = AdminResponse(404)
#: Reloads the traffic policies (``POST``; not in Go).
POLICY_RELOAD = "/policy/reload"
#: Our own admin routes (the dashboard's data), apart from Go's ``/status/...`` ones.
DASHBOARD_PREFIX = "/status/dashboard/"


@frozen
class ForwardTo:
    """Not answered here: reverse-proxy the request to another node's admin address."""

    node_id: str
    admin_addr: str


@frozen
class LocalNode:
    """What the status API says about this node."""

    node_id: str
    proxy_addr: str
    admin_addr: str


class AdminRoutes:
    """
    Route admin requests.

    :param node: this node's identity and advertised addresses.
    :param registry: the local upstreams.
    :param is_ready: whether ``/ready`` answers 200 (started and not draining).
    :param metrics: renders the Prometheus exposition, if metrics are served.
    :param cluster: the other nodes, listed after this one by the status API.
    :param traffic: the per-endpoint figures of ``/status/dashboard/node``; without it the
        route still answers, with no endpoint.
    """

    def __init__(
        self,
        node: LocalNode,
        registry: IUpstreamRegistry,
        is_ready: Callable[[], bool],
        metrics: Callable[[], tuple[bytes, bytes]] | None = None,
        cluster: ClusterState | None = None,
        gossip: Callable[[], GossipState | None] | None = None,
        traffic: Traffic | None = None,
        reload_policies: Callable[[], tuple[int, dict[str, object]]] | None = None,
    ) -> None:
        #: ``POST /policy/reload`` (not in Go): reloads the traffic policies, returning the
        #: status and the JSON report (see :mod:`piko.policy.reload`).
        self.reload_policies = reload_policies
        self.node = node
        self.registry = registry
        self.is_ready = is_ready
        self.metrics = metrics
        self.cluster = cluster
        self.gossip = gossip
        self.traffic = traffic

    def handle(self, method: bytes, target: bytes) -> AdminResponse | ForwardTo:
        """
        Answer one request given its method and request target.

        ``?forward=<node>`` naming another known node (any method) returns a
        :class:`ForwardTo` for the port to relay; an unknown node is 404.
        """
        parts = urlsplit(target.decode("latin-1"))
        path = parts.path
        forward = parse_qs(parts.query).get("forward")
        if forward and forward[0] != self.node.node_id:
            remote = None
            if self.cluster is not None and forward[0] != "local":
                remote = self.cluster.node(forward[0])
            if remote is None or not remote.admin_addr:
                return EMPTY_NOT_FOUND
            return ForwardTo(remote.id, remote.admin_addr)
        if path == POLICY_RELOAD and method == b"POST" and self.reload_policies is not None:
            status, report = self.reload_policies()
            return self._json(report, status)
        if method not in (b"GET", b"HEAD"):
            return NOT_FOUND
        if path == "/health":
            return AdminResponse(200)
        if path == "/ui":
            return DASHBOARD
        if path == "/":
            return REDIRECT_TO_DASHBOARD
        if path == "/ready":
            return AdminResponse(200 if self.is_ready() else 503)
        if path == "/metrics" and self.metrics is not None:
            content_type, body = self.metrics()
            return AdminResponse(200, ((b"Content-Type", content_type),), body)
        if path.startswith(DASHBOARD_PREFIX):
            if path == DASHBOARD_PREFIX + "node":
                return self._json(self.dashboard_node())
            return NOT_FOUND
        if path == "/status/upstream/endpoints":
            return self._json(self.registry.endpoints())
        if path == "/status/cluster/nodes":
            return self._json([self._node_summary(), *map(_remote_summary, self._remotes())])
        if path.startswith("/status/cluster/nodes/"):
            node_id = path[len("/status/cluster/nodes/") :]
            if node_id in ("local", self.node.node_id):
                return self._json(self._node_detail())
            for remote in self._remotes():
                if remote.id == node_id:
                    return self._json(_remote_detail(remote))
            return EMPTY_NOT_FOUND if node_id and "/" not in node_id else NOT_FOUND
        state = self.gossip() if self.gossip is not None else None
        if path == "/status/gossip/nodes" and state is not None:
            return self._json([_gossip_node(m) for m in sorted(state.nodes(), key=_by_id)])
        if path.startswith("/status/gossip/nodes/") and state is not None:
            node_id = path[len("/status/gossip/nodes/") :]
            if not node_id or "/" in node_id:
                return NOT_FOUND
            gossip_node = state.node(node_id)
            if gossip_node is None:
                return EMPTY_NOT_FOUND
            detail = _gossip_node(gossip_node.metadata)
            detail["Entries"] = [_gossip_entry(e) for e in gossip_node.entries] or None
            return self._json(detail)
        return NOT_FOUND

    def dashboard_node(self) -> dict[str, object]:
        """
        What the dashboard shows of this node: identity, traffic, upstreams, recent errors.

        Upstreams come from the registry's sessions (``remote_addr``, ``connected_at`` and
        ``stream_count`` of :class:`~piko.server.upstream_port.UpstreamSession`).
        """
        if self.traffic is not None:
            status = self.traffic.snapshot()
        else:
            status = Traffic(lambda: 0.0).snapshot()
        status["node"] = {
            "id": self.node.node_id,
            "proxy_addr": self.node.proxy_addr,
            "admin_addr": self.node.admin_addr,
        }
        upstreams = []
        pairs: list[tuple[str, Any]] = getattr(self.registry, "all_upstreams", list)()
        for endpoint_id, session in pairs:
            connected_at = getattr(session, "connected_at", None)
            upstreams.append(
                {
                    "endpoint": endpoint_id,
                    "address": getattr(session, "remote_addr", "")
                    or getattr(session, "client_ip", ""),
                    "connected_since": go_time(connected_at) if connected_at else None,
                    "connected_at": connected_at,
                    "streams": getattr(session, "stream_count", 0),
                }
            )
        upstreams.sort(key=lambda u: (str(u["endpoint"]), str(u["address"])))
        status["upstreams"] = upstreams
        return status

    def _remotes(self) -> list[Node]:
        return [] if self.cluster is None else self.cluster.nodes()[1:]

    def _json(self, value: object, status: int = 200) -> AdminResponse:
        return AdminResponse(status, _JSON, go_json(value))

    def _node_summary(self) -> GoStruct:
        endpoints = self.registry.endpoints()
        return GoStruct(
            id=self.node.node_id,
            status="active",
            proxy_addr=self.node.proxy_addr,
            admin_addr=self.node.admin_addr,
            endpoints=len(endpoints),
            upstreams=sum(endpoints.values()),
        )

    def _node_detail(self) -> GoStruct:
        endpoints = self.registry.endpoints()
        return GoStruct(
            id=self.node.node_id,
            status="active",
            proxy_addr=self.node.proxy_addr,
            admin_addr=self.node.admin_addr,
            endpoints=endpoints or None,
        )


def _remote_summary(node: Node) -> GoStruct:
    return GoStruct(
        id=node.id,
        status=node.status.value,
        proxy_addr=node.proxy_addr,
        admin_addr=node.admin_addr,
        endpoints=len(node.endpoints),
        upstreams=node.upstream_count,
    )


def _remote_detail(node: Node) -> GoStruct:
    return GoStruct(
        id=node.id,
        status=node.status.value,
        proxy_addr=node.proxy_addr,
        admin_addr=node.admin_addr,
        endpoints=dict(node.endpoints) or None,
    )


def _by_id(metadata: NodeMetadata) -> str:
    return metadata.id


def _gossip_node(metadata: NodeMetadata) -> GoStruct:
    return GoStruct(
        id=metadata.id,
        addr=metadata.addr,
        version=metadata.version,
        left=metadata.left,
        unreachable=metadata.unreachable,
        expiry=go_time(metadata.expiry),
    )


def _gossip_entry(entry: Entry) -> GoStruct:
    return GoStruct(
        key=entry.key,
        value=entry.value,
        version=entry.version,
        internal=entry.internal,
        deleted=entry.deleted,
    )


_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


def go_time(seconds: float | None) -> str:
    """
    A POSIX time as Go's ``time.Time`` marshals to JSON (RFC 3339, nanoseconds,
    trailing zeros trimmed); ``None`` is Go's zero time.
    """
    if seconds is None:
        return "0001-01-01T00:00:00Z"
    whole = math.floor(seconds)
    frac = round((seconds - whole) * 1_000_000_000)  # exact subtraction: no float drift
    if frac >= 1_000_000_000:
        whole, frac = whole + 1, frac - 1_000_000_000
    stamp = (_EPOCH + datetime.timedelta(seconds=whole)).strftime("%Y-%m-%dT%H:%M:%S")
    fraction = f".{frac:09d}".rstrip("0") if frac else ""
    return f"{stamp}{fraction}Z"

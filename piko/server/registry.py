# -*- test-case-name: piko.test.server.test_registry -*-
"""
Which upstreams serve which endpoint, and which one takes the next request.

The registry is the one place the proxy port, the TCP route and (later) the
cluster ask "where does endpoint E go".  It is sans-IO: upstreams are any
objects; the upstream port adds and removes them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from zope.interface import Attribute, Interface, implementer

UpstreamT = TypeVar("UpstreamT")

#: Called with ``(endpoint_id, count)`` whenever an endpoint's local count changes.
CountObserver = Callable[[str, int], object]


class IUpstreamRegistry(Interface):
    """Local upstreams by endpoint, with round-robin selection."""

    upstream_count = Attribute("The number of connected upstreams, all endpoints together.")

    def add(endpoint_id: str, upstream: Any) -> None:
        """Register ``upstream`` as serving ``endpoint_id``."""

    def remove(endpoint_id: str, upstream: Any) -> bool:
        """
        Forget ``upstream``; removing one that is not registered does nothing.

        :return: whether it was registered.
        """

    def select(endpoint_id: str) -> Any:
        """The next upstream for ``endpoint_id`` in round-robin order, or ``None``."""

    def endpoints() -> dict[str, int]:
        """Each endpoint with at least one upstream, and how many it has."""

    def observe(observer: CountObserver) -> None:
        """Call ``observer(endpoint_id, count)`` on every change of an endpoint's count."""


class _EndpointUpstreams(Generic[UpstreamT]):
    """The upstreams of one endpoint in connect order, and the round-robin cursor."""

    __slots__ = ("next_index", "upstreams")

    def __init__(self) -> None:
        self.upstreams: list[UpstreamT] = []
        self.next_index = 0


@implementer(IUpstreamRegistry)
class UpstreamRegistry(Generic[UpstreamT]):
    """
    The local upstreams of a node.

    Selection is strict round robin over the upstreams in connect order, as
    Go's ``LocalLoadBalancer``; removal keeps the cursor modulo the new length.
    Unlike Go, removal is idempotent: an upstream removed twice (once when
    its GoAway is noticed, once when its session ends) is counted once.
    """

    def __init__(self) -> None:
        self._endpoints: dict[str, _EndpointUpstreams[UpstreamT]] = {}
        self._observers: list[CountObserver] = []
        self._selection_observers: list[Callable[[str], object]] = []
        self.upstream_count = 0

    def add(self, endpoint_id: str, upstream: UpstreamT) -> None:
        """Register ``upstream`` as serving ``endpoint_id``."""
        entry = self._endpoints.get(endpoint_id)
        if entry is None:
            entry = self._endpoints[endpoint_id] = _EndpointUpstreams()
        if upstream in entry.upstreams:
            return
        entry.upstreams.append(upstream)
        self.upstream_count += 1
        self._notify(endpoint_id, len(entry.upstreams))

    def remove(self, endpoint_id: str, upstream: UpstreamT) -> bool:
        """Forget ``upstream``; a second removal is a no-op."""
        entry = self._endpoints.get(endpoint_id)
        if entry is None or upstream not in entry.upstreams:
            return False
        entry.upstreams.remove(upstream)
        self.upstream_count -= 1
        count = len(entry.upstreams)
        if count == 0:
            del self._endpoints[endpoint_id]
        else:
            entry.next_index %= count
        self._notify(endpoint_id, count)
        return True

    def select(self, endpoint_id: str) -> UpstreamT | None:
        """The next upstream for ``endpoint_id``, or ``None`` when there is none."""
        entry = self._endpoints.get(endpoint_id)
        if entry is None:
            return None
        upstreams = entry.upstreams
        index = entry.next_index % len(upstreams)
        entry.next_index = (index + 1) % len(upstreams)
        for observer in self._selection_observers:
            observer(endpoint_id)
        return upstreams[index]

    def upstreams(self, endpoint_id: str) -> list[UpstreamT]:
        """The upstreams of ``endpoint_id`` in connect order (a copy)."""
        entry = self._endpoints.get(endpoint_id)
        return list(entry.upstreams) if entry is not None else []

    def all_upstreams(self) -> list[tuple[str, UpstreamT]]:
        """Every ``(endpoint_id, upstream)`` pair (a copy)."""
        return [(ep, up) for ep, entry in self._endpoints.items() for up in entry.upstreams]

    def endpoints(self) -> dict[str, int]:
        """Each endpoint with at least one upstream, and how many it has."""
        return {ep: len(entry.upstreams) for ep, entry in self._endpoints.items()}

    def observe(self, observer: CountObserver) -> None:
        """Call ``observer(endpoint_id, count)`` on every change of an endpoint's count."""
        self._observers.append(observer)

    def observe_selections(self, observer: Callable[[str], object]) -> None:
        """Call ``observer(endpoint_id)`` each time a local upstream is selected (metrics)."""
        self._selection_observers.append(observer)

    def _notify(self, endpoint_id: str, count: int) -> None:
        for observer in self._observers:
            observer(endpoint_id, count)

# -*- test-case-name: piko.test.cluster.test_failure_detector -*-
"""
Go Piko's simplified phi-accrual failure detector (``pkg/gossip/failuredetector.go``).

Each peer's UDP deltas are its heartbeats.  For each peer we keep the last
``sample_size`` intervals between them; the suspicion level is how many mean
intervals have passed since the last one, ``phi = (now - last) / mean``.
Go's gossip declares a peer unreachable when phi exceeds 20 and reachable
again when it drops back, so a peer that answers every 100 ms round is
suspected after about 2 s of silence, and a slow peer is given proportionally
longer.  The first interval is a generous bootstrap value (2x the gossip
interval) so that one early, quick heartbeat does not make the detector
trigger-happy.
"""

from __future__ import annotations

from attrs import define, field
from twisted.internet.interfaces import IReactorTime
from zope.interface import Interface, implementer

__all__ = [
    "DEFAULT_SAMPLE_SIZE",
    "DEFAULT_SUSPICION_THRESHOLD",
    "AccrualFailureDetector",
    "ArrivalWindow",
    "IFailureDetector",
]

#: Go's window size: the last 50 inter-arrival intervals.
DEFAULT_SAMPLE_SIZE = 50

#: Go's ``UpdateLiveness`` threshold: above it a peer is unreachable.
DEFAULT_SUSPICION_THRESHOLD = 20.0


class IFailureDetector(Interface):
    """
    Decides, from the heartbeats received, how suspect a peer's silence is.

    The gossip state asks it for every known peer once per gossip interval.
    """

    def report(node_id: str) -> None:
        """Record a heartbeat (a UDP delta) from ``node_id``, now."""

    def suspicion_level(node_id: str) -> float:
        """
        Return phi for ``node_id`` now; higher is more suspect.

        A peer never heard from starts its window at the first call, so it
        too becomes suspect if nothing ever arrives.
        """

    def remove(node_id: str) -> None:
        """Forget ``node_id`` (its state expired)."""


@define
class ArrivalWindow:
    """
    The last ``sample_size`` intervals between one peer's heartbeats, as a
    ring buffer with a running sum so the mean costs nothing to read.

    :ivar bootstrap_interval: the interval assumed before the first heartbeat.
    """

    bootstrap_interval: float
    sample_size: int = DEFAULT_SAMPLE_SIZE
    _intervals: list[float] = field(init=False, factory=list)
    _index: int = field(init=False, default=0)
    _sum: float = field(init=False, default=0.0)
    _last: float | None = field(init=False, default=None)

    def __attrs_post_init__(self) -> None:
        if self.sample_size < 1:
            raise ValueError("sample_size must be at least 1")

    def add(self, timestamp: float) -> None:
        """Record a heartbeat at ``timestamp`` (seconds)."""
        interval = self.bootstrap_interval if self._last is None else timestamp - self._last
        if len(self._intervals) < self.sample_size:
            self._intervals.append(interval)
        else:
            self._sum -= self._intervals[self._index]
            self._intervals[self._index] = interval
            self._index = (self._index + 1) % self.sample_size
        self._sum += interval
        self._last = timestamp

    def mean(self) -> float:
        """The mean of the recorded intervals (0 before any)."""
        return self._sum / len(self._intervals) if self._intervals else 0.0

    def phi(self, timestamp: float) -> float:
        """
        How many mean intervals have passed since the last heartbeat.

        If every recorded interval is zero (a burst of heartbeats at one
        instant, where Go would panic dividing by zero) any later moment is
        infinitely suspect, and the same instant not at all.

        :raises ValueError: before any heartbeat.
        """
        if self._last is None:
            raise ValueError("cannot sample phi before any samples arrived")
        elapsed = timestamp - self._last
        mean = self.mean()
        if mean <= 0:
            return float("inf") if elapsed > 0 else 0.0
        return elapsed / mean


@implementer(IFailureDetector)
@define
class AccrualFailureDetector:
    """
    One :class:`ArrivalWindow` per peer, timed by an injected clock.

    :ivar clock: where "now" comes from (the reactor, or a ``task.Clock``).
    :ivar bootstrap_interval: 2x the gossip interval in Go Piko.
    """

    clock: IReactorTime
    bootstrap_interval: float
    sample_size: int = DEFAULT_SAMPLE_SIZE
    _windows: dict[str, ArrivalWindow] = field(init=False, factory=dict)

    def _window(self, node_id: str) -> ArrivalWindow:
        window = self._windows.get(node_id)
        if window is None:
            window = ArrivalWindow(self.bootstrap_interval, self.sample_size)
            self._windows[node_id] = window
        return window

    def report(self, node_id: str) -> None:
        """Record a heartbeat from ``node_id`` now."""
        self._window(node_id).add(self.clock.seconds())

    def suspicion_level(self, node_id: str) -> float:
        """Return phi for ``node_id`` now, starting its window if it has none."""
        now = self.clock.seconds()
        window = self._windows.get(node_id)
        if window is None:
            window = self._window(node_id)
            window.add(now)
        return window.phi(now)

    def remove(self, node_id: str) -> None:
        """Forget ``node_id``."""
        self._windows.pop(node_id, None)

    def __contains__(self, node_id: str) -> bool:
        return node_id in self._windows

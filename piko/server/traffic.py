# -*- test-case-name: piko.test.server.test_traffic -*-
"""
What the dashboard shows about a node's proxy traffic: per-endpoint time series over the last
fifteen minutes, and the last failed exchanges.

Fed from the proxy port's one request observer (:class:`~piko.server.metrics.MeteredHandler`),
so no request gets a second wrapper.  Memory is bounded whatever the traffic:

* time is cut into :data:`BUCKET_SECONDS` buckets and only the last :data:`BUCKETS` of them are
  kept (older ones are dropped as time moves on, a series only holds buckets that saw traffic);
* at most ``max_endpoints`` series are tracked: a new endpoint evicts the one idle longest, and a
  series with no traffic in the whole window is forgotten;
* latency is counted in a small fixed histogram (:data:`LATENCY_BOUNDS`), from which p50 and p99
  are estimated (the upper bound of the bucket holding the quantile);
* failed exchanges go to a ring of the last ``max_errors``.

A request that reached this node already forwarded by another one (``x-piko-forward: true``) is
not added to the series: the node it entered the cluster at counts it, with the latency its
client saw.  It is only counted as ``forwarded_in``, so that summing the nodes of a cluster
counts each request once.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlsplit

from attrs import frozen
from twisted.internet.interfaces import IProtocol

from piko.http.head import RequestHead, endpoint_id_from_request
from piko.http.observe import CountedTunnel, ExchangeOutcome

#: Seconds per time-series bucket.
BUCKET_SECONDS = 10
#: Buckets kept: fifteen minutes.
BUCKETS = 90
#: The window the dashboard shows, in seconds.
WINDOW_SECONDS = BUCKET_SECONDS * BUCKETS
#: Seconds the "now" rates are averaged over.
RATE_SECONDS = 60
#: Upper bounds (seconds) of the latency histogram; a last bucket counts everything slower.
LATENCY_BOUNDS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
#: Endpoints tracked at most (HTTP and TCP of one endpoint count as two).
MAX_ENDPOINTS = 200
#: Failed exchanges remembered.
MAX_ERRORS = 50

_TCP_ROUTE = "/_piko/v1/tcp/"
_FORWARD = b"x-piko-forward"
_NO_ENDPOINT = ""

# Bucket layout: [index, requests, errors, bytes_in, bytes_out, *latency counts]
_INDEX, _REQUESTS, _ERRORS, _IN, _OUT, _LATENCY = range(6)
_FIELDS = _LATENCY + len(LATENCY_BOUNDS) + 1


def quantile(histogram: list[int], q: float) -> float | None:
    """
    The ``q`` quantile (0 < q <= 1) of a latency histogram: the upper bound of the bucket that
    holds it (the last, unbounded, bucket gives the largest bound).  ``None`` when empty.
    """
    total = sum(histogram)
    if not total:
        return None
    rank = q * total
    seen = 0
    for i, count in enumerate(histogram):
        seen += count
        if seen >= rank:
            return LATENCY_BOUNDS[min(i, len(LATENCY_BOUNDS) - 1)]
    return LATENCY_BOUNDS[-1]


def is_error(status: int) -> bool:
    """A server error or an exchange that ended before any response (status 0)."""
    return status == 0 or status >= 500


class Series:
    """
    One endpoint's traffic of one kind (HTTP or TCP), in buckets of :data:`BUCKET_SECONDS`.

    :ivar forwarded_in: requests that came forwarded from another node, not in the buckets.
    """

    __slots__ = ("buckets", "forwarded_in", "last_seen", "refused")

    def __init__(self) -> None:
        self.buckets: deque[list[int]] = deque()
        self.forwarded_in = 0
        self.last_seen = 0.0
        #: requests refused by a traffic policy, by action (at most five keys)
        self.refused: dict[str, int] = {}

    def _bucket(self, index: int) -> list[int]:
        buckets = self.buckets
        if buckets and buckets[-1][_INDEX] == index:
            return buckets[-1]
        if buckets and buckets[-1][_INDEX] > index:
            # The clock went back: fold into the newest bucket rather than reorder.
            return buckets[-1]
        bucket = [0] * _FIELDS
        bucket[_INDEX] = index
        buckets.append(bucket)
        while buckets[0][_INDEX] <= index - BUCKETS:
            buckets.popleft()
        return bucket

    def add(self, now: float, error: bool, received: int, sent: int, latency: float) -> None:
        """Count one exchange that ended at ``now``."""
        bucket = self._bucket(int(now // BUCKET_SECONDS))
        bucket[_REQUESTS] += 1
        if error:
            bucket[_ERRORS] += 1
        bucket[_IN] += received
        bucket[_OUT] += sent
        bucket[_LATENCY + bisect_left(LATENCY_BOUNDS, latency)] += 1
        self.last_seen = now

    def add_bytes(self, now: float, received: int, sent: int) -> None:
        """Count bytes that are not an exchange of their own (a TCP connection's, at its end)."""
        bucket = self._bucket(int(now // BUCKET_SECONDS))
        bucket[_IN] += received
        bucket[_OUT] += sent
        self.last_seen = now

    def window(self, now: float) -> list[list[int]]:
        """The buckets still inside the window ending at ``now``, oldest first."""
        first = int(now // BUCKET_SECONDS) - BUCKETS + 1
        return [b for b in self.buckets if b[_INDEX] >= first]

    def snapshot(self, now: float) -> dict[str, Any]:
        """
        Totals, rates (over the last :data:`RATE_SECONDS`), percentiles and, per bucket of the
        window (oldest first, the last one is the current bucket), requests, errors, bytes and
        p99.
        """
        current = int(now // BUCKET_SECONDS)
        first = current - BUCKETS + 1
        buckets = self.window(now)
        latency = [0] * (len(LATENCY_BOUNDS) + 1)
        requests = [0] * BUCKETS
        errors = [0] * BUCKETS
        received = [0] * BUCKETS
        sent = [0] * BUCKETS
        p99: list[float | None] = [None] * BUCKETS
        totals = [0, 0, 0, 0]
        recent = [0, 0]
        recent_first = (now - RATE_SECONDS) // BUCKET_SECONDS
        for b in buckets:
            slot = b[_INDEX] - first
            requests[slot] = b[_REQUESTS]
            errors[slot] = b[_ERRORS]
            received[slot] = b[_IN]
            sent[slot] = b[_OUT]
            p99[slot] = quantile(b[_LATENCY:], 0.99)
            for i in range(4):
                totals[i] += b[_REQUESTS + i]
            if b[_INDEX] > recent_first:
                recent[0] += b[_REQUESTS]
                recent[1] += b[_ERRORS]
            for i in range(len(latency)):
                latency[i] += b[_LATENCY + i]
        return {
            "requests": totals[0],
            "errors": totals[1],
            "bytes_in": totals[2],
            "bytes_out": totals[3],
            "forwarded_in": self.forwarded_in,
            "refused": sum(self.refused.values()),
            "refused_by": dict(self.refused),
            "requests_per_second": recent[0] / RATE_SECONDS,
            "errors_per_second": recent[1] / RATE_SECONDS,
            "error_ratio": totals[1] / totals[0] if totals[0] else 0.0,
            "p50_seconds": quantile(latency, 0.5),
            "p99_seconds": quantile(latency, 0.99),
            "latency_histogram": latency,
            "series": {
                "requests": requests,
                "errors": errors,
                "bytes_in": received,
                "bytes_out": sent,
                "p99_seconds": p99,
            },
        }


@frozen
class FailedExchange:
    """One entry of the recent-errors ring."""

    time: float
    endpoint: str
    kind: str
    status: int
    reason: str


def classify(outcome: ExchangeOutcome) -> tuple[str, str, bool]:
    """``(endpoint, kind, forwarded)`` of an exchange on the proxy port."""
    return classify_head(outcome.head)


def classify_head(head: RequestHead) -> tuple[str, str, bool]:
    """
    ``(endpoint, kind, forwarded)`` of a request on the proxy port: the TCP route's endpoint
    from its path (kind ``tcp``), else the HTTP request's ``x-piko-endpoint`` or ``Host`` (as
    :func:`~piko.http.head.endpoint_id_from_request`, which routing uses).

    One pass over the headers: this runs for every request.
    """
    named = host = None
    forwarded = False
    for name, value in head.headers:
        lowered = name.lower()
        if lowered == b"x-piko-endpoint":
            if named is None:
                named = value
        elif lowered == b"host":
            if host is None:
                host = value
        elif lowered == _FORWARD and not forwarded:
            forwarded = value == b"true"
    target = head.target
    if head.method == b"GET" and target.startswith(b"/_piko/v1/tcp/"):
        path = urlsplit(target.decode("latin-1")).path
        return unquote(path[len(_TCP_ROUTE) :]), "tcp", forwarded
    if named:
        return named.decode("latin-1"), "http", forwarded
    if host is None:
        return _NO_ENDPOINT, "http", forwarded
    return endpoint_id_from_request(((b"host", host),)) or _NO_ENDPOINT, "http", forwarded


def reason_of(outcome: ExchangeOutcome) -> str:
    """Why an exchange failed, in a few words."""
    if outcome.reason:
        return outcome.reason
    if outcome.status == 0:
        return "aborted before a response"
    return f"upstream answered {outcome.status}"


class Traffic:
    """
    The dashboard's view of one node's proxy traffic.

    :param clock: ``seconds()`` (the reactor's wall clock) for bucketing and error times.
    """

    def __init__(
        self,
        clock: Callable[[], float],
        *,
        max_endpoints: int = MAX_ENDPOINTS,
        max_errors: int = MAX_ERRORS,
    ) -> None:
        self.clock = clock
        self.max_endpoints = max_endpoints
        #: ``(endpoint, kind)`` to its series, least recently used first.
        self.series: OrderedDict[tuple[str, str], Series] = OrderedDict()
        self.errors: deque[FailedExchange] = deque(maxlen=max_errors)
        #: Series evicted to make room (a figure for the page: the cap was reached).
        self.evicted = 0

    def _series(self, key: tuple[str, str]) -> Series:
        series = self.series.get(key)
        if series is None:
            if len(self.series) >= self.max_endpoints:
                self.series.popitem(last=False)
                self.evicted += 1
            series = self.series[key] = Series()
        else:
            self.series.move_to_end(key)
        return series

    def record(self, outcome: ExchangeOutcome) -> None:
        """Count one exchange of the proxy port (called by the request observer)."""
        endpoint, kind, forwarded = classify(outcome)
        series = self._series((endpoint, kind))
        now = outcome.ended
        if forwarded:
            series.forwarded_in += 1
            series.last_seen = now
            return
        status = outcome.status
        if outcome.policy_action:
            action = outcome.policy_action
            series.refused[action] = series.refused.get(action, 0) + 1
        error = is_error(status)
        series.add(now, error, outcome.request_size, outcome.sent, outcome.duration)
        if error:
            self.errors.append(
                FailedExchange(now, endpoint, kind, status, reason_of(outcome)[:200])
            )

    def tunnel(self, head: RequestHead, protocol: IProtocol) -> IProtocol:
        """
        The protocol to hand a taken-over connection (the TCP route, a WebSocket) to: one that
        counts the bytes it carries, added to the endpoint's series when it ends.
        """
        endpoint, kind, forwarded = classify_head(head)
        if forwarded:
            return protocol

        def ended(received: int, sent: int) -> None:
            self.record_tunnel_bytes(endpoint, kind, received, sent)

        return CountedTunnel(protocol, ended)

    def record_tunnel_bytes(self, endpoint: str, kind: str, received: int, sent: int) -> None:
        """Count the bytes a taken-over connection carried, once it ends."""
        if received or sent:
            self._series((endpoint, kind)).add_bytes(self.clock(), received, sent)

    def snapshot(self) -> dict[str, Any]:
        """Every tracked endpoint's figures, and the recent errors (newest first)."""
        now = self.clock()
        horizon = now - WINDOW_SECONDS
        for key in [k for k, s in self.series.items() if s.last_seen < horizon]:
            del self.series[key]
        endpoints = []
        for (endpoint, kind), series in sorted(self.series.items()):
            entry = {"endpoint": endpoint, "kind": kind}
            entry.update(series.snapshot(now))
            endpoints.append(entry)
        return {
            "time": now,
            "bucket_seconds": BUCKET_SECONDS,
            "buckets": BUCKETS,
            "rate_seconds": RATE_SECONDS,
            "latency_bounds": list(LATENCY_BOUNDS),
            "evicted": self.evicted,
            "endpoints": endpoints,
            "recent_errors": [
                {
                    "time": e.time,
                    "endpoint": e.endpoint,
                    "kind": e.kind,
                    "status": e.status,
                    "reason": e.reason,
                }
                for e in reversed(self.errors)
            ],
        }

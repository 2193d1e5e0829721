"""Tests for :mod:`piko.server.traffic`: the dashboard's time series, error ring and bounds."""

from __future__ import annotations

from typing import Any

from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from piko.http.head import RequestHead
from piko.http.observe import ExchangeOutcome
from piko.server.traffic import (
    BUCKET_SECONDS,
    BUCKETS,
    LATENCY_BOUNDS,
    WINDOW_SECONDS,
    Series,
    Traffic,
    classify_head,
    quantile,
)

#: A clock far from zero, at the start of a bucket.
T0 = 1_700_000_000.0


def outcome(
    clock: Clock,
    endpoint: str = "ep",
    status: int = 200,
    *,
    duration: float = 0.004,
    received: int = 100,
    sent: int = 20,
    tcp: bool = False,
    forwarded: bool = False,
    reason: str = "",
) -> ExchangeOutcome:
    headers = [(b"Host", b"127.0.0.1")]
    target = b"/"
    if tcp:
        target = b"/_piko/v1/tcp/" + endpoint.encode()
    else:
        headers.append((b"x-piko-endpoint", endpoint.encode()))
    if forwarded:
        headers.append((b"x-piko-forward", b"true"))
    now = clock.seconds()
    return ExchangeOutcome(
        head=RequestHead(b"GET", target, headers=headers),
        request_size=received,
        status=status,
        headers=(),
        sent=sent,
        started=now - duration,
        ended=now,
        reason=reason,
    )


def make() -> tuple[Clock, Traffic]:
    clock = Clock()
    clock.advance(T0)
    return clock, Traffic(clock.seconds, max_endpoints=4, max_errors=3)


def entry(traffic: Traffic, endpoint: str, kind: str = "http") -> dict[str, Any]:
    for e in traffic.snapshot()["endpoints"]:
        if (e["endpoint"], e["kind"]) == (endpoint, kind):
            return e
    raise AssertionError(f"{endpoint} {kind} not in the snapshot")


class QuantileTests(SynchronousTestCase):
    def test_empty(self) -> None:
        """No observation: no percentile."""
        self.assertIsNone(quantile([0] * (len(LATENCY_BOUNDS) + 1), 0.5))

    def test_upper_bound_of_bucket(self) -> None:
        """The quantile is the upper bound of the bucket that holds it; the last is open."""
        histogram = [0] * (len(LATENCY_BOUNDS) + 1)
        histogram[2] = 98  # <= 5 ms
        histogram[9] = 1  # <= 1 s
        histogram[-1] = 1  # > 30 s
        self.assertEqual(quantile(histogram, 0.5), 0.005)
        self.assertEqual(quantile(histogram, 0.99), 1.0)
        self.assertEqual(quantile(histogram, 1.0), LATENCY_BOUNDS[-1])


class TrafficTests(SynchronousTestCase):
    def test_counts_rates_and_percentiles(self) -> None:
        """Requests, errors (5xx and status 0), bytes, rates and p50/p99 per endpoint."""
        clock, traffic = make()
        for _ in range(97):
            traffic.record(outcome(clock, duration=0.004))
        traffic.record(outcome(clock, status=502, duration=0.3, reason="upstream unreachable"))
        traffic.record(outcome(clock, status=0, duration=2.0))
        traffic.record(outcome(clock, status=404))  # a client error is not an error here
        e = entry(traffic, "ep")
        self.assertEqual((e["requests"], e["errors"]), (100, 2))
        self.assertEqual((e["bytes_in"], e["bytes_out"]), (100 * 100, 100 * 20))
        self.assertEqual(e["requests_per_second"], 100 / 60)
        self.assertEqual(e["errors_per_second"], 2 / 60)
        self.assertEqual(e["error_ratio"], 0.02)
        self.assertEqual((e["p50_seconds"], e["p99_seconds"]), (0.005, 0.5))
        self.assertEqual(e["series"]["requests"][-1], 100)
        self.assertEqual(e["series"]["errors"][-1], 2)
        self.assertEqual(len(e["series"]["requests"]), BUCKETS)

    def test_buckets_slide_over_fifteen_minutes(self) -> None:
        """Old buckets leave the window, the rate covers the last minute only."""
        clock, traffic = make()
        traffic.record(outcome(clock))
        clock.advance(BUCKET_SECONDS)
        traffic.record(outcome(clock))
        traffic.record(outcome(clock))
        e = entry(traffic, "ep")
        self.assertEqual(e["series"]["requests"][-2:], [1, 2])
        self.assertEqual(e["requests"], 3)
        clock.advance(2 * 60)
        e = entry(traffic, "ep")
        self.assertEqual((e["requests"], e["requests_per_second"]), (3, 0.0))
        self.assertEqual(e["series"]["requests"][-14:-12], [1, 2])
        # 15 minutes after the first request, only the later two remain.
        clock.advance(WINDOW_SECONDS - 2 * 60 - BUCKET_SECONDS)
        self.assertEqual(entry(traffic, "ep")["requests"], 2)
        series = traffic.series[("ep", "http")]
        traffic.record(outcome(clock))
        self.assertEqual(len(series.buckets), 2)  # the first bucket was dropped

    def test_idle_series_forgotten(self) -> None:
        """An endpoint with no traffic in the window leaves the snapshot and the memory."""
        clock, traffic = make()
        traffic.record(outcome(clock))
        clock.advance(WINDOW_SECONDS + 1)
        self.assertEqual(traffic.snapshot()["endpoints"], [])
        self.assertEqual(len(traffic.series), 0)

    def test_endpoints_capped_idlest_evicted(self) -> None:
        """Past ``max_endpoints`` series, the least recently used one makes room."""
        clock, traffic = make()
        for name in ("a", "b", "c", "d"):
            traffic.record(outcome(clock, name))
        traffic.record(outcome(clock, "a"))  # "b" is now the idlest
        for i in range(100):
            traffic.record(outcome(clock, f"new-{i}"))
        self.assertEqual(len(traffic.series), 4)
        self.assertEqual(traffic.evicted, 100)
        traffic.record(outcome(clock, "e"))
        self.assertNotIn(("b", "http"), traffic.series)

    def test_bounded_buckets(self) -> None:
        """However long it runs, a series holds at most :data:`BUCKETS` buckets."""
        clock, traffic = make()
        for _ in range(3 * BUCKETS):
            traffic.record(outcome(clock))
            clock.advance(BUCKET_SECONDS)
        self.assertEqual(len(traffic.series[("ep", "http")].buckets), BUCKETS)

    def test_http_and_tcp_apart(self) -> None:
        """The TCP route's connections are their own series, named from the path."""
        clock, traffic = make()
        traffic.record(outcome(clock, "ep"))
        traffic.record(outcome(clock, "ep", 101, tcp=True))
        self.assertEqual(entry(traffic, "ep", "http")["requests"], 1)
        self.assertEqual(entry(traffic, "ep", "tcp")["requests"], 1)
        self.assertEqual(entry(traffic, "ep", "tcp")["errors"], 0)

    def test_forwarded_counted_apart(self) -> None:
        """A request forwarded here by another node is only ``forwarded_in``."""
        clock, traffic = make()
        traffic.record(outcome(clock, forwarded=True, status=500))
        e = entry(traffic, "ep")
        self.assertEqual((e["requests"], e["errors"], e["forwarded_in"]), (0, 0, 1))
        self.assertEqual(traffic.snapshot()["recent_errors"], [])

    def test_recent_errors_ring(self) -> None:
        """The last ``max_errors`` failures, newest first, with their reason."""
        clock, traffic = make()
        for status in (500, 502, 503, 504):
            traffic.record(outcome(clock, f"ep{status}", status))
            clock.advance(1)
        traffic.record(outcome(clock, "gone", 502, reason="upstream unreachable"))
        traffic.record(outcome(clock, "ok"))
        errors = traffic.snapshot()["recent_errors"]
        self.assertEqual([e["status"] for e in errors], [502, 504, 503])
        self.assertEqual(
            errors[0],
            {
                "time": T0 + 4,
                "endpoint": "gone",
                "kind": "http",
                "status": 502,
                "reason": "upstream unreachable",
            },
        )
        self.assertEqual(errors[1]["reason"], "upstream answered 504")

    def test_clock_going_back(self) -> None:
        """A wall clock stepping back folds into the newest bucket instead of breaking order."""
        clock, traffic = make()
        traffic.record(outcome(clock))
        clock.rightNow -= 3 * BUCKET_SECONDS
        traffic.record(outcome(clock))
        series = traffic.series[("ep", "http")]
        self.assertEqual([b[1] for b in series.buckets], [2])


class _Inner(Protocol):
    def __init__(self) -> None:
        self.data = b""
        self.lost = False

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        self.transport.write(data.upper())

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.lost = True


class TunnelTests(SynchronousTestCase):
    def test_bytes_counted_when_connection_ends(self) -> None:
        """A taken-over connection's bytes are added to its endpoint when it ends."""
        clock, traffic = make()
        head = RequestHead(b"GET", b"/_piko/v1/tcp/db", headers=[(b"Host", b"x")])
        inner = _Inner()
        wrapped = traffic.tunnel(head, inner)
        transport = StringTransport()
        wrapped.makeConnection(transport)
        wrapped.dataReceived(b"hello")
        self.assertEqual(transport.value(), b"HELLO")
        self.assertEqual(inner.data, b"hello")
        self.assertIs(inner.transport, transport)  # not a wrapper: type checks still hold
        transport.writeSequence([b"ab", b"c"])
        self.assertNotIn(("db", "tcp"), traffic.series)
        wrapped.connectionLost(Failure(ConnectionError()))
        self.assertTrue(inner.lost)
        e = entry(traffic, "db", "tcp")
        self.assertEqual((e["bytes_in"], e["bytes_out"], e["requests"]), (5, 8, 0))

    def test_forwarded_tunnel_not_wrapped(self) -> None:
        """A connection forwarded by another node is counted there, not here."""
        clock, traffic = make()
        head = RequestHead(b"GET", b"/_piko/v1/tcp/db", headers=[(b"x-piko-forward", b"true")])
        inner = _Inner()
        self.assertIs(traffic.tunnel(head, inner), inner)


class SeriesTests(SynchronousTestCase):
    def test_empty_snapshot(self) -> None:
        """A series with nothing in the window has zero figures and no percentiles."""
        snapshot = Series().snapshot(T0)
        self.assertEqual(snapshot["requests"], 0)
        self.assertIsNone(snapshot["p99_seconds"])
        self.assertEqual(snapshot["series"]["p99_seconds"], [None] * BUCKETS)


class ClassifyTests(SynchronousTestCase):
    def check(self, target: bytes, headers: list[tuple[bytes, bytes]]) -> tuple[str, str, bool]:
        return classify_head(RequestHead(b"GET", target, headers=headers))

    def test_endpoint_as_routing_reads_it(self) -> None:
        """``x-piko-endpoint`` (any case) first, else the first label of a host name."""
        self.assertEqual(
            self.check(b"/", [(b"Host", b"a.example.com"), (b"X-Piko-Endpoint", b"ep")]),
            ("ep", "http", False),
        )
        self.assertEqual(
            self.check(b"/", [(b"host", b"my-ep.example.com:8000")]), ("my-ep", "http", False)
        )
        self.assertEqual(self.check(b"/", [(b"Host", b"127.0.0.1:8000")]), ("", "http", False))
        self.assertEqual(self.check(b"/", []), ("", "http", False))

    def test_tcp_route_and_forward_mark(self) -> None:
        """The TCP route names its endpoint in the (escaped) path; the forward mark is seen."""
        self.assertEqual(
            self.check(b"/_piko/v1/tcp/a%3Cb%3E?x=1", [(b"x-piko-forward", b"true")]),
            ("a<b>", "tcp", True),
        )

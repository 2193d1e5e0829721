# -*- test-case-name: piko.test.agent.test_metrics -*-
"""
Tests for :mod:`piko.agent.metrics` and the agent's access logs: ``piko_agent_*`` per endpoint,
the metrics server, ``proxy.http.access`` and ``proxy.tcp.access`` records.
"""

from __future__ import annotations

import io
import json

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.error import CannotListenError, ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from piko.agent.http_listener import HTTPListenerFactory, Target
from piko.agent.metrics import AgentMetrics, AgentMetricsHandler, AgentMetricsServer
from piko.agent.service import make_agent_service
from piko.agent.tcp_listener import TCPListenerFactory
from piko.client.upstream import Upstream
from piko.config import (
    AccessLogConfig,
    AgentConfig,
    AgentServerConfig,
    InspectConfig,
    ListenerConfig,
)
from piko.http.access_log import AccessLog
from piko.http.pool import ConnectionPool
from piko.http.server import HTTPServerProtocol
from piko.logging import go_json_observer
from piko.test.agent.helpers import FakeEndpoint, ListenerPair
from piko.test.agent.test_service import FakeDial

TOKEN = "agent-secret-token-0123456789"


def samples(metrics):
    _, body = metrics.render()
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def records(stream):
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def http_listener(metrics, stream, access_config=None):
    endpoint = FakeEndpoint()
    pair = ListenerPair(None)
    pool = ConnectionPool(pair.clock, endpoint)
    access_log = AccessLog(
        access_config or AccessLogConfig(),
        "proxy.http.access",
        fields={"endpoint-id": "ep1"},
        observer=go_json_observer(stream),
    )
    factory = HTTPListenerFactory(
        pair.clock,
        pool,
        Target("127.0.0.1", 3000),
        timeout=10.0,
        access_log=access_log,
        metrics=metrics,
        endpoint_id="ep1",
    )
    pair.client.listen(factory)
    return pair, endpoint


class HTTPListenerMetricsTests(SynchronousTestCase):
    def request(self, metrics, stream, status=b"200 OK", **kwargs):
        pair, endpoint = http_listener(metrics, stream, **kwargs)
        recorder = pair.open()
        recorder.transport.write(
            b"POST /things HTTP/1.1\r\nHost: ep1.example\r\nContent-Length: 3\r\n"
            b"Authorization: Bearer " + TOKEN.encode() + b"\r\n\r\nabc"
        )
        pair.pump()
        endpoint.protocols[0].dataReceived(
            b"HTTP/1.1 " + status + b"\r\nContent-Length: 5\r\n\r\nhello"
        )
        pair.pump()
        return recorder

    def test_requests_counted_per_endpoint(self):
        """An answered request moves every piko_agent_* metric under its endpoint."""
        metrics = AgentMetrics(process=False)
        self.request(metrics, io.StringIO())
        values = samples(metrics)
        labels = (("endpoint", "ep1"), ("method", "POST"), ("status", "200"))
        self.assertEqual(values[("piko_agent_requests_total", labels)], 1)
        self.assertEqual(values[("piko_agent_request_latency_seconds_count", labels)], 1)
        self.assertEqual(values[("piko_agent_requests_in_flight", (("endpoint", "ep1"),))], 0)
        self.assertEqual(values[("piko_agent_request_size_bytes_count", (("endpoint", "ep1"),))], 1)
        self.assertEqual(values[("piko_agent_response_size_bytes_sum", (("endpoint", "ep1"),))], 5)

    def test_no_created_series(self):
        """The agent's /metrics has Go's series only, no prometheus_client ``*_created``."""
        metrics = AgentMetrics(process=False)
        self.request(metrics, io.StringIO())
        _, body = metrics.render()
        self.assertIn(b"piko_agent_requests_total{", body)
        self.assertNotIn(b"_created", body)

    def test_in_flight_while_waiting(self):
        """A request waiting for the local service is in flight."""
        metrics = AgentMetrics(process=False)
        pair, endpoint = http_listener(metrics, io.StringIO())
        recorder = pair.open()
        recorder.transport.write(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        pair.pump()
        values = samples(metrics)
        self.assertEqual(values[("piko_agent_requests_in_flight", (("endpoint", "ep1"),))], 1)

    def test_access_record(self):
        """The listener logs Go's record on proxy.http.access with endpoint-id, token redacted."""
        stream = io.StringIO()
        self.request(AgentMetrics(process=False), stream)
        [record] = records(stream)
        self.assertEqual(record["subsystem"], "proxy.http.access")
        self.assertEqual(record["endpoint-id"], "ep1")
        self.assertEqual(record["request"]["status"], 200)
        self.assertEqual(record["request"]["path"], "/things")
        self.assertNotIn(TOKEN, stream.getvalue())

    def test_access_record_5xx_warn(self):
        """A 5xx from the local service is logged at warn."""
        stream = io.StringIO()
        self.request(AgentMetrics(process=False), stream, status=b"503 Service Unavailable")
        [record] = records(stream)
        self.assertEqual((record["level"], record["request"]["status"]), ("warn", 503))

    def test_access_log_disabled(self):
        """A disabled access log writes nothing."""
        stream = io.StringIO()
        config = AccessLogConfig(disable=True)
        self.request(AgentMetrics(process=False), stream, access_config=config)
        self.assertEqual(stream.getvalue(), "")


class TCPAccessTests(SynchronousTestCase):
    def serve(self, config):
        stream = io.StringIO()
        endpoint = FakeEndpoint()
        factory = TCPListenerFactory(endpoint, "ep-tcp", config, observer=go_json_observer(stream))
        pair = ListenerPair(factory)
        recorder = pair.open()
        recorder.transport.loseConnection()
        pair.pump()
        endpoint.transports[0].loseConnection()
        endpoint.protocols[0].connectionLost(Failure(ConnectionDone()))
        pair.pump()
        return records(stream)

    def test_opened_and_closed(self):
        """Each stream is logged opened and closed on proxy.tcp.access at info."""
        opened, closed = self.serve(AccessLogConfig())
        self.assertEqual(
            [(r["msg"], r["level"], r["subsystem"], r["endpoint-id"]) for r in (opened, closed)],
            [
                ("connection opened", "info", "proxy.tcp.access", "ep-tcp"),
                ("connection closed", "info", "proxy.tcp.access", "ep-tcp"),
            ],
        )

    def test_debug_when_disabled(self):
        """With the access log disabled the records are at debug (as Go's agent)."""
        levels = {r["level"] for r in self.serve(AccessLogConfig(disable=True))}
        self.assertEqual(levels, {"debug"})


class MetricsEndpointTests(SynchronousTestCase):
    def get(self, request):
        metrics = AgentMetrics()
        metrics.requests_total.labels(status="200", method="GET", endpoint="ep1").inc()
        transport = StringTransport()
        protocol = HTTPServerProtocol(AgentMetricsHandler(metrics.render), Clock())
        protocol.makeConnection(transport)
        protocol.dataReceived(request)
        return transport.value()

    def test_metrics(self):
        """GET /metrics answers the exposition, process collector included."""
        response = self.get(b"GET /metrics HTTP/1.1\r\nHost: h\r\n\r\n")
        self.assertTrue(response.startswith(b"HTTP/1.1 200 OK\r\n"), response)
        self.assertIn(
            b'piko_agent_requests_total{endpoint="ep1",method="GET",status="200"} 1.0', response
        )
        self.assertIn(b"process_", response)

    def test_only_metrics(self):
        """Any other path or method is Go's 404 page not found."""
        for request in (
            b"GET / HTTP/1.1\r\nHost: h\r\n\r\n",
            b"POST /metrics HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
        ):
            response = self.get(request)
            self.assertTrue(response.startswith(b"HTTP/1.1 404 Not Found\r\n"), response)
            self.assertTrue(response.endswith(b"404 page not found"), response)


class RefusingReactor(MemoryReactorClock):
    def listenTCP(self, port, factory, backlog=50, interface=""):
        raise CannotListenError(interface, port, OSError("address in use"))


class MetricsServerTests(SynchronousTestCase):
    def agent(self, reactor, enabled=True):
        config = AgentConfig(
            listeners=(ListenerConfig(endpoint_id="ep1", addr="3000", timeout=10.0),),
            server=AgentServerConfig(enabled=enabled, bind_addr="127.0.0.1:5999"),
            inspect=InspectConfig(enabled=False),
        )
        upstream = Upstream(reactor, "http://piko:8001", dial=FakeDial())
        service = make_agent_service(
            config,
            reactor,
            upstream=upstream,
            endpoint_factory=lambda r, h, p, t: FakeEndpoint(),
            stop_reactor_on_failure=False,
        )
        return service

    def test_enabled_listens(self):
        """server.enabled makes the agent listen on server.bind_addr, and stop listening on stop."""
        reactor = MemoryReactorClock()
        service = self.agent(reactor)
        service.startService()
        [(port, _, _, interface)] = reactor.tcpServers
        self.assertEqual((port, interface), (5999, "127.0.0.1"))
        [server] = [s for s in service if isinstance(s, AgentMetricsServer)]
        self.assertIsNotNone(server.port)
        service.stopService()
        self.assertIsNone(server.port)

    def test_disabled_by_default(self):
        """Without server.enabled nothing listens."""
        reactor = MemoryReactorClock()
        self.agent(reactor, enabled=False).startService()
        self.assertEqual(reactor.tcpServers, [])

    def test_listen_failure_fails_agent(self):
        """A metrics address that cannot be listened on fails the agent (it exits, as Go's)."""
        service = self.agent(RefusingReactor())
        service.startService()
        self.assertIsInstance(self.successResultOf(service.failed), CannotListenError)

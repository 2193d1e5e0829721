# -*- test-case-name: piko.test.agent.test_service -*-
"""Tests for :func:`piko.agent.service.make_agent_service` with a fake WebSocket dialer."""

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ReactorNotRunning
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from piko.agent.http_listener import HTTPListenerFactory
from piko.agent.service import make_agent_service
from piko.agent.tcp_listener import TCPListenerFactory
from piko.client.upstream import Upstream
from piko.config import AgentConfig, ListenerConfig
from piko.mux.frames import FrameType
from piko.test.agent.helpers import FakeEndpoint
from piko.test.mux.helpers import frames_of
from piko.ws.client import WebSocketDialError


class FakeDial:
    """Stands in for piko.ws.client.connect: sessions over StringTransports, or errors."""

    def __init__(self, errors=None):
        self.urls = []
        self.transports = []
        self.errors = errors or {}

    def __call__(self, reactor, url, factory, headers=None, tls=None, timeout=None):
        self.urls.append(url)
        for suffix, error in self.errors.items():
            if url.endswith(suffix):
                return fail(error)
        session = factory.buildProtocol(None)
        transport = StringTransport()
        self.transports.append(transport)
        session.makeConnection(transport)
        return succeed(session)


def config(*listeners, grace=60.0):
    return AgentConfig(listeners=listeners, grace_period=grace)


def build(cfg, dial):
    reactor = MemoryReactorClock()
    upstream = Upstream(reactor, "http://piko:8001", dial=dial)
    service = make_agent_service(
        cfg, reactor, upstream=upstream, endpoint_factory=lambda r, h, p, t: FakeEndpoint()
    )
    return reactor, service


HTTP = ListenerConfig(endpoint_id="ep1", addr="3000", timeout=10.0)
TCP = ListenerConfig(endpoint_id="ep2", addr="localhost:22", protocol="tcp", timeout=10.0)


class AgentServiceTests(SynchronousTestCase):
    def test_listeners_connect_in_order(self):
        """Every listener connects, in configuration order; ready fires."""
        dial = FakeDial()
        reactor, service = build(config(HTTP, TCP), dial)
        service.startService()
        self.assertEqual(
            dial.urls,
            ["http://piko:8001/piko/v1/upstream/ep1", "http://piko:8001/piko/v1/upstream/ep2"],
        )
        self.assertTrue(service.ready.called)
        self.assertFalse(service.failed.called)
        self.assertIsInstance(service.listeners[0].factory, HTTPListenerFactory)
        self.assertIsInstance(service.listeners[1].factory, TCPListenerFactory)

    def test_initial_failure_logs_and_stops(self):
        """A failed first connect logs Go's message, shuts the others and stops the reactor."""
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        dial = FakeDial({"/ep2": WebSocketDialError(401, "invalid token", False)})
        reactor, service = build(config(HTTP, TCP), dial)
        reactor.running = True
        service.startService()
        failures = []
        service.failed.addCallback(failures.append)
        self.assertEqual(str(failures[0]), "401: invalid token")
        self.assertTrue(dial.transports[0].disconnecting)
        self.assertTrue(reactor.hasStopped)
        logged = [e for e in events if e.get("log_format") == "failed to connect"]
        self.assertEqual(logged[0]["error"], "401: invalid token")
        self.assertEqual(logged[0]["endpoint_id"], "ep2")

    def test_server_down_at_start_is_retried_not_fatal(self):
        """
        A refused first connection does not end the agent: each attempt is one warning with
        the URL, error and next delay, and the listener connects once the server is back.
        """
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        refused = WebSocketDialError(None, "Connection was refused by other side", True)
        dial = FakeDial({"/ep1": refused})
        reactor = MemoryReactorClock()
        upstream = make_agent_service(config(HTTP), reactor).upstream
        self.assertTrue(upstream.keep_trying)
        upstream._dial = dial
        service = make_agent_service(config(HTTP), reactor, upstream=upstream)
        reactor.running = True
        reactor.hasStopped = False  # Twisted 24.3's MemoryReactor starts "stopped"
        service.startService()
        for _ in range(12):  # well past connect.timeout (30 s) of backoff
            reactor.advance(20)
        self.assertFalse(service.failed.called)
        self.assertFalse(reactor.hasStopped)
        retries = [e for e in events if e.get("log_format") == "connect failed; retrying"]
        self.assertGreater(len(retries), 6)
        self.assertEqual(retries[0]["url"], "http://localhost:8001/piko/v1/upstream/ep1")
        self.assertEqual(retries[0]["error"], "Connection was refused by other side")
        self.assertEqual(retries[0]["endpoint-id"], "ep1")
        self.assertIn("backoff", retries[0])
        dial.errors.clear()
        reactor.advance(20)
        self.assertTrue(service.ready.called)
        self.assertTrue(service.listeners[0].port.connected)

    def test_failure_after_reactor_stopped_is_quiet(self):
        """A failed first connect while the reactor is already stopping raises nothing."""

        class StoppedReactor(MemoryReactorClock):
            def stop(self):
                raise ReactorNotRunning("Can't stop reactor that isn't running.")

        dial = FakeDial({"/ep1": WebSocketDialError(401, "invalid token", False)})
        reactor = StoppedReactor()
        upstream = Upstream(reactor, "http://piko:8001", dial=dial)
        service = make_agent_service(config(HTTP), reactor, upstream=upstream)
        service.startService()
        self.assertTrue(service.failed.called)
        self.assertEqual(self.flushLoggedErrors(ReactorNotRunning), [])

    def test_stop_goes_away_gracefully(self):
        """stopService sends GoAway(0) on HTTP listeners and fires once they are closed."""
        dial = FakeDial()
        reactor, service = build(config(HTTP), dial)
        service.startService()
        d = service.stopService()
        reactor.advance(1.0)  # the hand-off overlap
        self.assertTrue(d.called)
        frames = frames_of(dial.transports[0].value())
        self.assertEqual(frames[-1].type, FrameType.GO_AWAY)
        self.assertEqual(frames[-1].length, 0)
        self.assertTrue(dial.transports[0].disconnecting)

    def test_stop_bounded_by_grace_period(self):
        """An HTTP listener with a stream in flight is shut when the grace period ends."""
        dial = FakeDial()
        reactor, service = build(config(HTTP, grace=5.0), dial)
        service.startService()
        session = service.listeners[0].port.session
        session.when_idle = lambda: Deferred()  # a request never finishes
        d = service.stopService()
        self.assertFalse(d.called)
        reactor.advance(5)
        self.assertTrue(d.called)
        self.assertTrue(dial.transports[0].disconnecting)

    def test_stop_while_connecting(self):
        """Stopping before the first connection completes fires without reporting failure."""
        pending = Deferred()
        reactor = MemoryReactorClock()
        upstream = Upstream(reactor, "http://piko:8001", dial=lambda *a, **k: pending)
        service = make_agent_service(config(HTTP), reactor, upstream=upstream)
        service.startService()
        d = service.stopService()
        self.assertTrue(d.called)
        self.assertFalse(service.failed.called)

    def test_invalid_addr(self):
        """An invalid listener addr raises ValueError when the service is built."""
        bad = ListenerConfig(endpoint_id="x", addr="nope", timeout=1.0)
        self.assertRaises(ValueError, make_agent_service, config(bad), MemoryReactorClock())

# -*- test-case-name: piko.test.inspect.test_service -*-
"""
Tests for :mod:`piko.inspect.service`: the inspector's address (the next free port when taken)
and its place in the agent service, on a memory reactor; no sockets.
"""

from attrs import evolve
from twisted.internet.error import CannotListenError
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from piko.agent.service import make_agent_service
from piko.client.upstream import Upstream
from piko.config import AgentConfig, ListenerConfig
from piko.inspect import Inspector, InspectorResource, InspectorService, InspectorSite
from piko.test.agent.helpers import FakeEndpoint
from piko.test.agent.test_service import FakeDial


class TakenPorts(MemoryReactorClock):
    """A memory reactor on which some ports are taken."""

    def __init__(self, taken):
        super().__init__()
        self.taken = set(taken)

    def listenTCP(self, port, factory, backlog=50, interface=""):
        if port in self.taken:
            raise CannotListenError(interface, port, OSError("address already in use"))
        return super().listenTCP(port, factory, backlog, interface)


def service(reactor, bind_addr="127.0.0.1:4040"):
    site = InspectorSite(InspectorResource(Inspector(reactor)))
    return InspectorService(reactor, bind_addr, site)


class InspectorServiceTests(SynchronousTestCase):
    def setUp(self):
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def test_default_port(self):
        """A free 4040 on loopback is used, and its URL logged."""
        reactor = TakenPorts(())
        s = service(reactor)
        s.startService()
        [(port, _, _, interface)] = reactor.tcpServers
        self.assertEqual((port, interface), (4040, "127.0.0.1"))
        self.assertEqual(s.url, "http://127.0.0.1:4040/")
        [line] = [e for e in self.events if e.get("url")]
        self.assertEqual(line["url"], "http://127.0.0.1:4040/")

    def test_next_free_port(self):
        """Several agents on one host do not collide: a taken port moves on to the next."""
        reactor = TakenPorts({4040, 4041})
        s = service(reactor)
        s.startService()
        self.assertEqual([p[0] for p in reactor.tcpServers], [4042])
        self.assertEqual(s.url, "http://127.0.0.1:4042/")

    def test_none_free_does_not_stop_the_agent(self):
        """When no port can be had, an error is logged and nothing else happens."""
        reactor = TakenPorts(range(4040, 4070))
        s = service(reactor)
        s.startService()
        self.failureResultOf(s.listening, CannotListenError)
        self.assertIsNone(s.port)
        [error] = [e for e in self.events if "failed to listen" in e.get("log_format", "")]
        self.assertIn("4040", error["addr"])

    def test_endpoint_description_as_given(self):
        """An endpoint description is listened on as given, without trying others."""
        reactor = TakenPorts({4040})
        s = service(reactor, "tcp:4040:interface=127.0.0.1")
        s.startService()
        self.failureResultOf(s.listening, CannotListenError)
        self.assertEqual(reactor.tcpServers, [])

    def test_stop(self):
        """Stopping closes the port."""
        reactor = TakenPorts(())
        s = service(reactor)
        s.startService()
        self.successResultOf(s.stopService())
        self.assertIsNone(s.port)


class AgentInspectorTests(SynchronousTestCase):
    def agent(self, config):
        reactor = TakenPorts(())
        upstream = Upstream(reactor, "http://piko:8001", dial=FakeDial())
        listeners = (ListenerConfig(endpoint_id="ep", addr="3000", timeout=10.0),)
        svc = make_agent_service(
            evolve(config, listeners=listeners),
            reactor,
            upstream=upstream,
            endpoint_factory=lambda r, h, p, t: FakeEndpoint(),
            stop_reactor_on_failure=False,
        )
        return reactor, svc

    def test_on_by_default(self):
        """``piko agent`` serves the inspector by default, wrapping its listeners."""
        reactor, svc = self.agent(AgentConfig())
        svc.startService()
        self.assertIsNotNone(svc.inspector)
        self.assertIn((4040, "127.0.0.1"), [(p[0], p[3]) for p in reactor.tcpServers])
        factory = svc.listeners[0].factory
        self.assertIn("ep", svc.inspector.site.resource.inspector.handlers)
        # Inside the access log: the capture sees what the relay does.
        self.assertEqual(type(factory._handler.handler).__name__, "CapturingHandler")

    def test_off(self):
        """With ``inspect.enabled`` false nothing listens and nothing is wrapped."""
        config = AgentConfig()
        reactor, svc = self.agent(evolve(config, inspect=evolve(config.inspect, enabled=False)))
        svc.startService()
        self.assertIsNone(svc.inspector)
        self.assertEqual(reactor.tcpServers, [])

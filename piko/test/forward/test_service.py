# -*- test-case-name: piko.test.forward.test_service -*-
"""Tests for :mod:`piko.forward.service` with a fake Dialer and StringTransports."""

from twisted.application.internet import StreamServerEndpointService
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import CannotListenError
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from piko.config import ForwardConfig, PortConfig
from piko.forward.service import ForwardFactory, listen_description, make_forward_service
from piko.ws.client import WebSocketDialError


class FakeDialer:
    """Records dials; each returns a Deferred the test fires."""

    def __init__(self):
        self.dials = []

    def dial(self, endpoint_id, factory):
        d = Deferred()
        self.dials.append((endpoint_id, factory, d))
        return d


def accept(dialer, endpoint_id="ep"):
    protocol = ForwardFactory(dialer, endpoint_id).buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    return protocol, transport


class ForwardTests(SynchronousTestCase):
    def test_paused_until_dialled_then_spliced(self):
        """Local reading is paused until the dial completes; then bytes flow both ways."""
        dialer = FakeDialer()
        local, local_t = accept(dialer)
        self.assertEqual(local_t.producerState, "paused")
        endpoint_id, factory, d = dialer.dials[0]
        self.assertEqual(endpoint_id, "ep")
        remote = factory.buildProtocol(None)
        remote_t = StringTransport()
        remote.makeConnection(remote_t)
        d.callback(remote)
        self.assertEqual(local_t.producerState, "producing")
        local.dataReceived(b"ping")
        self.assertEqual(remote_t.value(), b"ping")
        remote.dataReceived(b"pong")
        self.assertEqual(local_t.value(), b"pong")

    def test_dial_failure_logs_and_closes(self):
        """A failed dial logs Go's error text and closes the local connection."""
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        dialer = FakeDialer()
        local, local_t = accept(dialer, "nope")
        dialer.dials[0][2].errback(WebSocketDialError(502, "no available upstreams", True))
        self.assertTrue(local_t.disconnecting)
        self.assertEqual(local_t.value(), b"")
        errors = [
            e for e in events if e.get("log_format", "").startswith("failed to dial endpoint")
        ]
        self.assertEqual(errors[0]["error"], "502: no available upstreams")
        self.assertEqual(errors[0]["endpoint_id"], "nope")

    def test_local_lost_while_dialling_cancels(self):
        """A local connection closed during the dial cancels it."""
        dialer = FakeDialer()
        local, local_t = accept(dialer)
        local.connectionLost()
        self.assertTrue(dialer.dials[0][2].called)

    def test_listen_description(self):
        """A bare port listens on 127.0.0.1, host:port as given."""
        self.assertEqual(
            listen_description(PortConfig("3000", "e")), "tcp:3000:interface=127.0.0.1"
        )
        self.assertEqual(
            listen_description(PortConfig("0.0.0.0:3000", "e")), "tcp:3000:interface=0.0.0.0"
        )

    def test_make_forward_service(self):
        """One endpoint service per port, built from its description."""
        seen = []

        def endpoint_factory(reactor, description):
            seen.append(description)
            return object()

        config = ForwardConfig(ports=(PortConfig("3000", "a"), PortConfig("127.0.0.1:4000", "b")))
        service = make_forward_service(
            config, MemoryReactorClock(), dialer=FakeDialer(), endpoint_factory=endpoint_factory
        )
        children = list(service)
        self.assertEqual(len(children), 2)
        self.assertIsInstance(children[0], StreamServerEndpointService)
        self.assertEqual(seen, ["tcp:3000:interface=127.0.0.1", "tcp:4000:interface=127.0.0.1"])
        self.assertEqual(children[1].factory.endpoint_id, "b")

    def test_port_in_use_fires_failed_and_says_so(self):
        """A port that cannot listen is one error line and fires ``failed``; no raise."""
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        error = CannotListenError("127.0.0.1", 3000, OSError(98, "Address already in use"))

        class Taken:
            def listen(self, factory):
                return fail(error)

        config = ForwardConfig(ports=(PortConfig("3000", "a"),))
        service = make_forward_service(
            config, MemoryReactorClock(), dialer=FakeDialer(), endpoint_factory=lambda r, d: Taken()
        )
        service.startService()
        self.assertIs(self.successResultOf(service.failed), error)
        logged = [e for e in events if e.get("log_format") == "failed to listen"]
        self.assertEqual(logged[0]["endpoint-id"], "a")
        self.assertIn("Address already in use", logged[0]["error"])

    def test_listening_port_is_announced(self):
        """Once listening, one line says the address, the endpoint and the server URL."""
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)

        class Listening:
            def listen(self, factory):
                port = type(
                    "P", (), {"getHost": lambda self: IPv4Address("TCP", "127.0.0.1", 4321)}
                )
                return succeed(port())

        config = ForwardConfig(ports=(PortConfig("4321", "db"),))
        service = make_forward_service(
            config,
            MemoryReactorClock(),
            dialer=FakeDialer(),
            endpoint_factory=lambda r, d: Listening(),
        )
        service.startService()
        logged = [e for e in events if e.get("log_format") == "forwarding"]
        self.assertEqual(
            (logged[0]["addr"], logged[0]["endpoint-id"], logged[0]["url"]),
            ("127.0.0.1:4321", "db", "http://localhost:8000"),
        )
        self.assertFalse(service.failed.called)
        self.assertFalse([e for e in events if "Starting factory" in e.get("log_format", "")])

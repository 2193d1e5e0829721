# -*- test-case-name: piko.test.config.test_models -*-
"""
Tests for the configuration models' defaults.
"""

import attrs
from twisted.trial.unittest import SynchronousTestCase

from piko.config import AgentConfig, ForwardConfig, ServerConfig


class DefaultsTests(SynchronousTestCase):
    def test_server_defaults(self):
        """ServerConfig defaults equal Go's server Default()."""
        c = ServerConfig()
        self.assertEqual(c.proxy.bind_addr, ":8000")
        self.assertEqual(c.proxy.timeout, 30.0)
        self.assertEqual(c.proxy.access_log.level, "info")
        self.assertEqual(c.proxy.http.read_timeout, 10.0)
        self.assertEqual(c.proxy.http.read_header_timeout, 10.0)
        self.assertEqual(c.proxy.http.write_timeout, 10.0)
        self.assertEqual(c.proxy.http.idle_timeout, 300.0)
        self.assertEqual(c.proxy.http.max_header_bytes, 1048576)
        self.assertEqual(c.upstream.bind_addr, ":8001")
        self.assertEqual(c.upstream.rebalance.threshold, 0.0)
        self.assertEqual(c.upstream.rebalance.shed_rate, 0.005)
        self.assertEqual(c.upstream.rebalance.min_conns, 50)
        self.assertEqual(c.admin.bind_addr, ":8002")
        self.assertEqual(c.cluster.join_timeout, 60.0)
        self.assertTrue(c.cluster.abort_if_join_fails)
        self.assertEqual(c.cluster.gossip.bind_addr, ":8003")
        self.assertEqual(c.cluster.gossip.interval, 0.1)
        self.assertEqual(c.cluster.gossip.max_packet_size, 1400)
        self.assertEqual(c.log.level, "info")
        self.assertEqual(c.grace_period, 60.0)
        self.assertEqual(c.cluster.node_id, "")
        self.assertFalse(c.proxy.auth.enabled())

    def test_agent_defaults(self):
        """AgentConfig defaults equal Go's agent Default()."""
        c = AgentConfig()
        self.assertEqual(c.connect.url, "http://localhost:8001")
        self.assertEqual(c.connect.timeout, 30.0)
        self.assertEqual(c.server.bind_addr, ":5000")
        self.assertFalse(c.server.enabled)
        self.assertEqual(c.log.level, "info")
        self.assertEqual(c.grace_period, 60.0)
        self.assertEqual(c.listeners, ())

    def test_forward_defaults(self):
        """ForwardConfig defaults equal Go's forward Default()."""
        c = ForwardConfig()
        self.assertEqual(c.connect.url, "http://localhost:8000")
        self.assertEqual(c.connect.timeout, 30.0)
        self.assertEqual(c.ports, ())

    def test_frozen(self):
        """The models are immutable."""
        self.assertRaises(
            attrs.exceptions.FrozenInstanceError, setattr, ServerConfig(), "grace_period", 1.0
        )


class HTTPTimeoutTests(SynchronousTestCase):
    """The proxy port's timeouts in force, with Go's fallbacks."""

    def test_defaults(self) -> None:
        """Go's defaults: 10 s head, 10 s body progress, 10 s write progress, 5 min idle."""
        http = ServerConfig().proxy.http
        self.assertEqual(
            (
                http.header_timeout(),
                http.body_timeout(),
                http.response_timeout(),
                http.keep_alive_timeout(),
            ),
            (10.0, 10.0, 10.0, 300.0),
        )

    def test_zero_falls_back_to_read_timeout(self) -> None:
        """As in Go, a zero read_header_timeout or idle_timeout means read_timeout."""
        http = attrs.evolve(
            ServerConfig().proxy.http, read_timeout=7.0, read_header_timeout=0.0, idle_timeout=0.0
        )
        self.assertEqual((http.header_timeout(), http.keep_alive_timeout()), (7.0, 7.0))

    def test_zero_disables(self) -> None:
        """Zero everywhere means no timeout at all."""
        http = attrs.evolve(
            ServerConfig().proxy.http,
            read_timeout=0.0,
            read_header_timeout=0.0,
            write_timeout=0.0,
            idle_timeout=0.0,
        )
        timeouts = (
            http.header_timeout(),
            http.body_timeout(),
            http.response_timeout(),
            http.keep_alive_timeout(),
        )
        self.assertEqual(timeouts, (None, None, None, None))

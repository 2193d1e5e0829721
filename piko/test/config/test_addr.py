# -*- test-case-name: piko.test.config.test_addr -*-
"""
Tests for address helpers and endpoint descriptions.
"""

from twisted.trial.unittest import SynchronousTestCase

from piko.config import (
    ListenerConfig,
    PortConfig,
    listen_endpoint_description,
    local_host,
    local_url,
    split_host_port,
)


class ListenEndpointDescriptionTests(SynchronousTestCase):
    def test_go_addresses(self):
        """Go host:port addresses map to TCP endpoint descriptions."""
        self.assertEqual(listen_endpoint_description(":8000"), "tcp:8000")
        self.assertEqual(
            listen_endpoint_description("127.0.0.1:8000"), "tcp:8000:interface=127.0.0.1"
        )
        self.assertEqual(listen_endpoint_description("[::1]:8000"), "tcp6:8000:interface=\\:\\:1")
        self.assertEqual(listen_endpoint_description("localhost:0"), "tcp:0:interface=localhost")

    def test_endpoint_strings_pass_through(self):
        """Twisted endpoint descriptions are returned unchanged."""
        for text in (
            "tcp:8000:interface=127.0.0.1",
            "ssl:8443:privateKey=key.pem",
            "unix:/tmp/piko.sock",
            "systemd:domain=INET:index=0",
        ):
            self.assertEqual(listen_endpoint_description(text), text)

    def test_invalid(self):
        """Addresses without a numeric port are rejected."""
        for text in ("8000", "host", "host:http", "a:b:c"):
            self.assertRaises(ValueError, listen_endpoint_description, text)

    def test_endpoint_parses(self):
        """The produced descriptions are accepted by Twisted's parser."""
        from twisted.internet.endpoints import serverFromString
        from twisted.internet.testing import MemoryReactor

        for addr in (":8000", "127.0.0.1:8000", "[::1]:8000"):
            serverFromString(MemoryReactor(), listen_endpoint_description(addr))


class SplitHostPortTests(SynchronousTestCase):
    def test_split(self):
        """Host and port split like Go's net.SplitHostPort."""
        self.assertEqual(split_host_port(":80"), ("", "80"))
        self.assertEqual(split_host_port("[::1]:80"), ("::1", "80"))
        self.assertEqual(split_host_port("a:"), ("a", ""))
        self.assertRaises(ValueError, split_host_port, "::1:80")
        self.assertRaises(ValueError, split_host_port, "a")


class ListenerAddrTests(SynchronousTestCase):
    def test_http_url(self):
        """Agent HTTP targets resolve like Go's ListenerConfig.URL."""
        self.assertEqual(local_url("8080"), "http://localhost:8080")
        self.assertEqual(local_url("1.2.3.4:8080"), "http://1.2.3.4:8080")
        self.assertEqual(local_url("https://host:8443/prefix"), "https://host:8443/prefix")
        self.assertEqual(local_url("localhost:3000"), "http://localhost:3000")
        self.assertIsNone(local_url("not an addr"))
        self.assertIsNone(local_url("65535"))
        self.assertEqual(ListenerConfig(addr="8080").url(), "http://localhost:8080")

    def test_tcp_host(self):
        """Agent TCP and forward addresses resolve like Go's Host()."""
        self.assertEqual(local_host("8080"), "localhost:8080")
        self.assertEqual(local_host("1.2.3.4:8080"), "1.2.3.4:8080")
        self.assertIsNone(local_host("nocolon"))
        # Go accepts anything net.SplitHostPort accepts, even this:
        self.assertEqual(local_host("http://x"), "http://x")
        self.assertEqual(ListenerConfig(addr="3000").host(), "localhost:3000")
        self.assertEqual(PortConfig(addr="3000").listen_endpoint(), "tcp:3000:interface=localhost")


class IPVersionTests(SynchronousTestCase):
    def test_literals_and_names(self):
        """IPv4 and IPv6 literals give their version; names (and bracketed forms) give None."""
        from piko.config import ip_version

        self.assertEqual(ip_version("127.0.0.1"), 4)
        self.assertEqual(ip_version("::1"), 6)
        self.assertIsNone(ip_version("node-1.piko"))
        self.assertIsNone(ip_version("[::1]"))
        self.assertIsNone(ip_version(""))

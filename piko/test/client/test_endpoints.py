"""Tests for :mod:`piko.client.endpoints` and the ``piko:`` endpoint strings."""

from twisted.internet.endpoints import clientFromString, serverFromString
from twisted.internet.interfaces import IStreamClientEndpoint, IStreamServerEndpoint
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from piko.client.endpoints import PikoClientEndpoint, PikoServerEndpoint


class EndpointStringTests(SynchronousTestCase):
    def test_server_string(self) -> None:
        """serverFromString understands piko:<endpoint> with url, token and tenant."""
        endpoint = serverFromString(
            Clock(), r"piko:my-endpoint:url=http\://127.0.0.1\:9001:token=abc:tenant=t1"
        )
        self.assertIsInstance(endpoint, PikoServerEndpoint)
        self.assertTrue(verifyObject(IStreamServerEndpoint, endpoint))
        self.assertEqual(endpoint.endpoint_id, "my-endpoint")
        self.assertEqual(endpoint.upstream.url, "http://127.0.0.1:9001")
        self.assertEqual(
            dict(endpoint.upstream.headers()),
            {"Authorization": "Bearer abc", "x-piko-tenant-id": "t1"},
        )

    def test_client_string(self) -> None:
        """clientFromString understands piko:<endpoint> with the proxy url."""
        endpoint = clientFromString(Clock(), r"piko:db:url=http\://127.0.0.1\:9000")
        self.assertIsInstance(endpoint, PikoClientEndpoint)
        self.assertTrue(verifyObject(IStreamClientEndpoint, endpoint))
        self.assertEqual(endpoint.dialer.url, "http://127.0.0.1:9000")

    def test_defaults_match_go(self) -> None:
        """Without url the upstream port is localhost:8001 and the proxy port localhost:8000."""
        server = serverFromString(Clock(), "piko:ep")
        client = clientFromString(Clock(), "piko:ep")
        self.assertEqual(server.upstream.url, "http://localhost:8001")
        self.assertEqual(client.dialer.url, "http://localhost:8000")

    def test_bad_scheme_refused(self) -> None:
        """An unsupported URL scheme is refused when the string is parsed."""
        self.assertRaises(ValueError, serverFromString, Clock(), r"piko:ep:url=ftp\://x")

    def test_proxy_and_keep_trying(self) -> None:
        """``proxyUrl`` and ``keepTrying`` reach the Upstream; a bad keepTrying is refused."""
        endpoint = serverFromString(
            Clock(), r"piko:ep:proxyUrl=http\://u\:p@proxy\:3128:keepTrying=yes"
        )
        assert isinstance(endpoint, PikoServerEndpoint)
        self.assertEqual(endpoint.upstream.proxy_url, "http://u:p@proxy:3128")
        self.assertTrue(endpoint.upstream.keep_trying)
        self.assertFalse(serverFromString(Clock(), "piko:ep").upstream.keep_trying)
        self.assertRaises(ValueError, serverFromString, Clock(), "piko:ep:keepTrying=maybe")

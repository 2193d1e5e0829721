# -*- test-case-name: piko.test.test_tls -*-
"""Tests for :mod:`piko.tls`."""

from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.trial.unittest import SynchronousTestCase

from piko.config import ConnectTLSConfig
from piko.tls import client_tls, tls_for_url


class TLSTests(SynchronousTestCase):
    def test_plain_url_no_tls(self):
        """Plain http/ws URLs, and secure ones with no option set, need no custom creator."""
        self.assertIsNone(tls_for_url("http://h:8001", ConnectTLSConfig(insecure_skip_verify=True)))
        self.assertIsNone(tls_for_url("https://h:8001", ConnectTLSConfig()))

    def test_insecure_skip_verify(self):
        """insecure_skip_verify gives a creator that builds connections without verification."""
        creator = tls_for_url("wss://h:8001", ConnectTLSConfig(insecure_skip_verify=True))
        self.assertTrue(IOpenSSLClientConnectionCreator.providedBy(creator))
        connection = creator.clientConnectionForTLS(object())
        self.assertEqual(connection.get_servername(), b"h")

    def test_verified_default(self):
        """Without options, a verifying creator for the host is returned."""
        creator = client_tls("example.com", ConnectTLSConfig())
        self.assertTrue(IOpenSSLClientConnectionCreator.providedBy(creator))

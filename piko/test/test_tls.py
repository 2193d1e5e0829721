# -*- test-case-name: piko.test.test_tls -*-
"""Tests for :mod:`piko.tls`."""

import datetime
import ipaddress
import re
from pathlib import Path
from typing import Any, cast

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL import SSL
from service_identity import VerificationError
from service_identity.exceptions import DNSMismatch
from service_identity.hazmat import DNS_ID
from twisted.internet import defer
from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, serverFromString, wrapClientTLS
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import ILogObserver, LogEvent, LogLevel, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from piko.config import ConnectTLSConfig, ServerTLSConfig
from piko.test.certs import TestCA
from piko.tls import (
    TLSVerificationError,
    certificate_validity_error,
    client_tls,
    hostname_error,
    server_tls,
    tls_failure_text,
    tls_for_url,
    verify_error_text,
)
from piko.ws.client import WebSocketDialError, connect

reactor: Any = _reactor


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


NOW = datetime.datetime(2026, 12, 4, 16, 0, 0, tzinfo=datetime.UTC).timestamp()


def _certificate(
    not_before: datetime.datetime = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC),
    not_after: datetime.datetime = datetime.datetime(2027, 1, 1, tzinfo=datetime.UTC),
    sans: list[x509.GeneralName] | None = None,
    common_name: str = "server",
) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    if sans is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(key, hashes.SHA256())


EXPIRED = "x509: certificate has expired or is not yet valid: current time 2026-12-04T16:00:00Z"


class MessageTests(SynchronousTestCase):
    """The words a refused certificate is reported with: Go's ``crypto/x509`` texts."""

    def test_validity(self) -> None:
        """Expired and not-yet-valid name the current time and the bound passed."""
        expired = _certificate(not_after=datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC))
        self.assertEqual(
            certificate_validity_error(expired, NOW), f"{EXPIRED} is after 2025-01-01T00:00:00Z"
        )
        early = _certificate(
            not_before=datetime.datetime(2027, 1, 3, 16, 26, 50, tzinfo=UTC),
            not_after=datetime.datetime(2028, 1, 1, tzinfo=UTC),
        )
        self.assertEqual(
            certificate_validity_error(early, NOW), f"{EXPIRED} is before 2027-01-03T16:26:50Z"
        )
        self.assertIsNone(certificate_validity_error(_certificate(), NOW))

    def test_verify_errors(self) -> None:
        """OpenSSL's verify codes in Go's words; others keep OpenSSL's text and code."""
        good = _certificate()
        expired = _certificate(not_after=datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC))
        self.assertEqual(
            verify_error_text(10, expired, NOW), f"{EXPIRED} is after 2025-01-01T00:00:00Z"
        )
        for code in (2, 18, 19, 20, 21):
            self.assertEqual(
                verify_error_text(code, good, NOW), "x509: certificate signed by unknown authority"
            )
        # Go checks the dates before the chain, so an expired leaf of an unknown CA says so.
        self.assertEqual(
            verify_error_text(20, expired, NOW), f"{EXPIRED} is after 2025-01-01T00:00:00Z"
        )
        self.assertEqual(
            verify_error_text(26, good, NOW),
            "x509: certificate specifies an incompatible key usage",
        )
        self.assertEqual(
            verify_error_text(7, good, NOW),
            "x509: certificate signature failure (OpenSSL verify error 7)",
        )
        self.assertEqual(
            verify_error_text(999, good, NOW),
            "x509: certificate verify failed (OpenSSL verify error 999)",
        )

    def test_hostname(self) -> None:
        """A name or address the certificate does not cover, in Go's HostnameError words."""
        other = _certificate(sans=[x509.DNSName("other.example"), x509.DNSName("b.example")])
        self.assertEqual(
            hostname_error(other, "localhost"),
            "x509: certificate is valid for other.example, b.example, not localhost",
        )
        self.assertEqual(
            hostname_error(other, "127.0.0.1"),
            "x509: cannot validate certificate for 127.0.0.1 because it doesn't contain any "
            "IP SANs",
        )
        address = _certificate(sans=[x509.IPAddress(ipaddress.ip_address("10.0.0.1"))])
        self.assertEqual(
            hostname_error(address, "127.0.0.1"),
            "x509: certificate is valid for 10.0.0.1, not 127.0.0.1",
        )
        self.assertEqual(
            hostname_error(address, "localhost"),
            "x509: certificate is not valid for any names, but wanted to match localhost",
        )
        self.assertEqual(
            hostname_error(_certificate(common_name="localhost"), "localhost"),
            "x509: certificate relies on legacy Common Name field, use SANs instead",
        )
        self.assertIsNone(hostname_error(other, "b.example"))
        self.assertIsNone(hostname_error(address, "10.0.0.1"))

    def test_failure_text(self) -> None:
        """
        Failures of our creators keep their text; Twisted's (an SDK user's own
        ``optionsForClientTLS``) become words instead of reprs; others are not TLS.
        """
        self.assertEqual(tls_failure_text(TLSVerificationError("tls: x")), "tls: x")
        mismatch = VerificationError(errors=[DNSMismatch(mismatched_id=DNS_ID("localhost"))])
        self.assertEqual(
            tls_failure_text(mismatch),
            "tls: failed to verify certificate: x509: certificate is not valid for localhost",
        )
        verify = SSL.Error([("SSL routines", "", "certificate verify failed")])
        self.assertEqual(
            tls_failure_text(verify), "tls: failed to verify certificate: certificate verify failed"
        )
        alert = SSL.Error([("SSL routines", "", "tlsv13 alert certificate required")])
        self.assertEqual(tls_failure_text(alert), "tls: tlsv13 alert certificate required")
        self.assertIsNone(tls_failure_text(ConnectionDone()))


class ServerCertificateTests(SynchronousTestCase):
    def test_expired_server_certificate_warns(self) -> None:
        """A port's own expired or not-yet-valid certificate is loaded with a warning."""
        directory = Path(self.mktemp())
        directory.mkdir()
        ca = TestCA(directory)
        now = datetime.datetime.now(datetime.UTC)
        expired = ca.issue("expired", not_before=now - YEAR, not_after=now - DAY)
        early = ca.issue("early", not_before=now + DAY, not_after=now + YEAR)
        good = ca.issue("good")
        events: list[LogEvent] = []
        observer = cast(ILogObserver, events.append)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        for cert, key in (expired, early, good):
            self.assertIsNotNone(server_tls("upstream", ServerTLSConfig(cert=cert, key=key)))
        warnings = [e for e in events if e["log_level"] == LogLevel.warn]
        self.assertEqual(len(warnings), 2, warnings)
        self.assertEqual((warnings[0]["port"], warnings[0]["path"]), ("upstream", expired[0]))
        self.assertRegex(
            warnings[0]["problem"],
            r"^x509: certificate has expired or is not yet valid: current time \S+Z is after "
            r"\S+Z$",
        )
        self.assertIn("clients that verify it will refuse it", formatEvent(warnings[0]))
        self.assertEqual(warnings[1]["path"], early[0])
        self.assertIn(" is before ", warnings[1]["problem"])


YEAR = datetime.timedelta(days=365)
DAY = datetime.timedelta(days=1)
UTC = datetime.UTC


class _Peer(Protocol):
    """A TLS server connection that only says when it has gone."""

    def connectionMade(self) -> None:
        self.gone: Deferred[None] = Deferred()
        self.factory.peers.append(self)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.gone.callback(None)


class RefusedCertificateTests(TestCase):
    """
    The WebSocket client (agent, ``piko forward``, SDK) against a real TLS port on
    loopback whose certificate it must refuse: the dial error says why, in Go's words.
    """

    timeout = 30

    def setUp(self) -> None:
        self.directory = Path(self.mktemp())
        self.directory.mkdir()
        self.ca = TestCA(self.directory)

    def serve(self, cert: tuple[str, str]) -> int:
        """A TLS listener on 127.0.0.1 serving ``cert``; its port."""
        factory = Factory.forProtocol(_Peer)
        factory.peers = []  # type: ignore[attr-defined]
        options = server_tls("test", ServerTLSConfig(cert=cert[0], key=cert[1]))
        port = reactor.listenSSL(0, factory, options, interface="127.0.0.1")

        def stop() -> Deferred[list[Any]]:
            gone = [peer.gone for peer in factory.peers]  # type: ignore[attr-defined]
            return gatherResults([defer.maybeDeferred(port.stopListening), *gone])

        self.addCleanup(stop)
        return int(port.getHost().port)

    @inlineCallbacks
    def dial_error(self, url: str, tls: Any = None, endpoint: Any = None) -> Any:
        error = yield self.assertFailure(
            connect(
                reactor, url, Factory.forProtocol(Protocol), tls=tls, endpoint=endpoint, timeout=10
            ),
            WebSocketDialError,
        )
        self.assertTrue(error.retryable)  # as Go's agent, which retries
        return str(error)

    def trusting(self, host: str = "127.0.0.1") -> Any:
        return client_tls(host, ConnectTLSConfig(root_cas=str(self.ca.cert_path)))

    @inlineCallbacks
    def test_expired(self) -> Any:
        """An expired certificate: Go's message with the current time and the expiry."""
        now = datetime.datetime.now(UTC)
        end = (now - DAY).replace(microsecond=0)
        port = self.serve(self.ca.issue("expired", not_before=now - YEAR, not_after=end))
        message = yield self.dial_error(f"wss://127.0.0.1:{port}/x", self.trusting())
        self.assertRegex(
            message,
            r"^tls: failed to verify certificate: x509: certificate has expired or is not "
            r"yet valid: current time \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ is after "
            + re.escape(end.strftime("%Y-%m-%dT%H:%M:%SZ"))
            + "$",
        )

    @inlineCallbacks
    def test_not_yet_valid(self) -> Any:
        """A certificate valid only from tomorrow names its start."""
        now = datetime.datetime.now(UTC)
        start = (now + DAY).replace(microsecond=0)
        port = self.serve(self.ca.issue("early", not_before=start, not_after=now + YEAR))
        message = yield self.dial_error(f"https://127.0.0.1:{port}/x", self.trusting())
        self.assertIn(
            f" is before {start.strftime('%Y-%m-%dT%H:%M:%SZ')}",
            message,
        )
        self.assertTrue(message.startswith("tls: failed to verify certificate: x509: "))

    @inlineCallbacks
    def test_unknown_authority(self) -> Any:
        """
        A certificate from a CA not trusted, with ``root_cas`` or with the default
        trust store (no ``tls`` given), is Go's unknown authority.
        """
        port = self.serve(self.ca.issue("server"))
        other = TestCA(self.directory, "other CA")
        tls = client_tls("127.0.0.1", ConnectTLSConfig(root_cas=str(other.cert_path)))
        expected = (
            "tls: failed to verify certificate: x509: certificate signed by unknown authority"
        )
        message = yield self.dial_error(f"wss://127.0.0.1:{port}/x", tls)
        self.assertEqual(message, expected)
        message = yield self.dial_error(f"wss://127.0.0.1:{port}/x")
        self.assertEqual(message, expected)

    @inlineCallbacks
    def test_wrong_name(self) -> Any:
        """A certificate for another name (or without IP SANs) says what it is valid for."""
        port = self.serve(self.ca.issue("other.example", ip=False))
        message = yield self.dial_error(f"wss://127.0.0.1:{port}/x", self.trusting())
        self.assertEqual(
            message,
            "tls: failed to verify certificate: x509: cannot validate certificate for "
            "127.0.0.1 because it doesn't contain any IP SANs",
        )
        endpoint = wrapClientTLS(
            self.trusting("localhost"), TCP4ClientEndpoint(reactor, "127.0.0.1", port)
        )
        message = yield self.dial_error(f"wss://localhost:{port}/x", endpoint=endpoint)
        self.assertEqual(
            message,
            "tls: failed to verify certificate: x509: certificate is valid for other.example, "
            "not localhost",
        )

    @inlineCallbacks
    def test_sdk_endpoint_string(self) -> Any:
        """The SDK's ``piko:`` endpoint with ``caCertsFile`` reports an expiry the same way."""
        now = datetime.datetime.now(UTC)
        port = self.serve(self.ca.issue("expired", not_before=now - YEAR, not_after=now - DAY))
        ca = str(self.ca.cert_path).replace(":", "\\:")
        endpoint = serverFromString(
            reactor, f"piko:my-ep:url=https\\://127.0.0.1\\:{port}:caCertsFile={ca}"
        )
        # One dial with the endpoint's TLS (listen() would retry until its deadline).
        tls = endpoint.upstream.tls
        message = yield self.dial_error(f"wss://127.0.0.1:{port}/x", tls)
        self.assertIn("x509: certificate has expired or is not yet valid: current time", message)

    @inlineCallbacks
    def test_go_order(self) -> Any:
        """Several faults: the dates first, then the name, then the CA, as Go checks them."""
        other = TestCA(self.directory, "other CA")
        now = datetime.datetime.now(UTC)
        wrong_name = self.serve(other.issue("other.example", ip=False))
        message = yield self.dial_error(f"wss://127.0.0.1:{wrong_name}/x", self.trusting())
        self.assertIn("x509: cannot validate certificate for 127.0.0.1", message)
        expired = self.serve(
            other.issue("old.example", ip=False, not_before=now - YEAR, not_after=now - DAY)
        )
        message = yield self.dial_error(f"wss://127.0.0.1:{expired}/x", self.trusting())
        self.assertIn("x509: certificate has expired or is not yet valid", message)

# -*- test-case-name: piko.test.test_tls -*-
"""
TLS settings as Go's ``tls.Config`` is built: clients from a
:class:`~piko.config.ConnectTLSConfig`, server ports from a :class:`~piko.config.ServerTLSConfig`.

Used three ways: the agent to the server's upstream port (``connect.tls``), ``piko forward``
to the proxy port, and an agent HTTP listener to an ``https://`` local service (the
listener's ``tls``); the SDK's WebSocket client uses it by default too.

The client side verifies like Twisted's ``optionsForClientTLS`` (the CA chain by OpenSSL,
the host name or IP by service-identity) but with a connection creator of its own, so a
refused certificate fails the handshake with a :class:`TLSVerificationError` that says
what Go's ``crypto/x509`` says (``x509: certificate has expired or is not yet valid:
current time 2026-12-04T16:00:00Z is after 2025-01-01T00:00:00Z``, ``x509: certificate
signed by unknown authority``, ``x509: certificate is valid for other.example, not
localhost``) instead of OpenSSL's bare ``certificate verify failed``.
``insecure_skip_verify`` turns every check off, as Go's does.

The server side warns at start when a port's own certificate has expired or is not valid
yet: clients will refuse it, but it may be renewed while the server runs, so (as Go) it
still serves.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable

from cryptography import x509
from OpenSSL import SSL
from OpenSSL.crypto import FILETYPE_PEM, X509
from service_identity import CertificateError, VerificationError
from service_identity.cryptography import (
    verify_certificate_hostname,
    verify_certificate_ip_address,
)
from service_identity.hazmat import DNS_ID, IPAddress_ID
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.internet.ssl import (
    Certificate,
    CertificateOptions,
    KeyPair,
    PrivateCertificate,
    platformTrust,
    trustRootFromCertificates,
)
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from piko.config import ConfigError, ConnectTLSConfig, ServerTLSConfig, ip_version

__all__ = [
    "TLSConfigError",
    "TLSVerificationError",
    "certificate_validity_error",
    "client_tls",
    "hostname_error",
    "load_certificates",
    "server_tls",
    "tls_failure_text",
    "verify_error_text",
]

log = Logger()

#: What Go puts before every certificate verification error of a client handshake.
_VERIFY_PREFIX = "tls: failed to verify certificate: "

# OpenSSL's X509_V_ERR_* codes that get Go's wording.
_NOT_YET_VALID = 9
_EXPIRED = 10
#: The chain does not end at a trusted root: Go's ``UnknownAuthorityError``.
_UNKNOWN_AUTHORITY = frozenset({2, 18, 19, 20, 21, 27})
_INVALID_PURPOSE = 26
#: OpenSSL's text for the other codes a server certificate may fail with.
_OPENSSL_TEXT = {
    7: "certificate signature failure",
    8: "CRL signature failure",
    13: "format error in certificate's notBefore field",
    14: "format error in certificate's notAfter field",
    22: "certificate chain too long",
    23: "certificate revoked",
    24: "invalid CA certificate",
    25: "path length constraint exceeded",
    28: "certificate rejected",
    66: "EE certificate key too weak",
    67: "CA certificate key too weak",
    68: "CA signature digest algorithm too weak",
}


class TLSVerificationError(Exception):
    """
    The peer's certificate was refused during the TLS handshake.

    ``str()`` is Go's error text, ``tls: failed to verify certificate: x509: ...``,
    which the WebSocket client reports as the dial error.
    """


def _rfc3339(when: datetime.datetime) -> str:
    """Go's ``time.RFC3339`` for a UTC time, to the second."""
    return when.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def certificate_validity_error(certificate: x509.Certificate, now: float) -> str | None:
    """
    Go's error for a certificate outside its validity period at ``now``, or ``None``.

    :param now: POSIX seconds.
    :return: e.g. ``x509: certificate has expired or is not yet valid: current time
        2026-12-04T16:00:00Z is after 2025-01-01T00:00:00Z``.
    """
    current = datetime.datetime.fromtimestamp(int(now), datetime.UTC)
    if current < certificate.not_valid_before_utc:
        detail = f"is before {_rfc3339(certificate.not_valid_before_utc)}"
    elif current > certificate.not_valid_after_utc:
        detail = f"is after {_rfc3339(certificate.not_valid_after_utc)}"
    else:
        return None
    return (
        "x509: certificate has expired or is not yet valid: "
        f"current time {_rfc3339(current)} {detail}"
    )


def verify_error_text(error: int, certificate: x509.Certificate, now: float) -> str:
    """
    Go's words for OpenSSL's verification error ``error`` (an ``X509_V_ERR_*`` code)
    on ``certificate`` (the leaf, or the CA certificate the error is about).

    An expired or not-yet-valid certificate names the times, as Go does, even when
    OpenSSL first complains about the chain: Go checks the leaf's dates first.
    """
    validity = certificate_validity_error(certificate, now)
    if error in (_EXPIRED, _NOT_YET_VALID) or (error in _UNKNOWN_AUTHORITY and validity):
        return validity or "x509: certificate has expired or is not yet valid"
    if error in _UNKNOWN_AUTHORITY:
        return "x509: certificate signed by unknown authority"
    if error == _INVALID_PURPOSE:
        return "x509: certificate specifies an incompatible key usage"
    text = _OPENSSL_TEXT.get(error, "certificate verify failed")
    return f"x509: {text} (OpenSSL verify error {error})"


def hostname_error(certificate: x509.Certificate, host: str) -> str | None:
    """
    Go's ``x509.HostnameError`` text when ``certificate`` is not valid for ``host``
    (a DNS name or an IP address), or ``None`` when it is.
    """
    is_ip = ip_version(host) is not None
    try:
        if is_ip:
            verify_certificate_ip_address(certificate, host)
        else:
            verify_certificate_hostname(certificate, host)
        return None
    except (VerificationError, CertificateError):
        pass
    try:
        sans = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        names = certificate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        if names and str(names[0].value).lower() == host.lower():
            return "x509: certificate relies on legacy Common Name field, use SANs instead"
        sans = x509.SubjectAlternativeName([])
    if is_ip:
        ips = [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)]
        if not ips:
            return (
                f"x509: cannot validate certificate for {host} because it doesn't contain "
                "any IP SANs"
            )
        valid = ", ".join(ips)
    else:
        valid = ", ".join(sans.get_values_for_type(x509.DNSName))
    if not valid:
        return f"x509: certificate is not valid for any names, but wanted to match {host}"
    return f"x509: certificate is valid for {valid}, not {host}"


def tls_failure_text(error: BaseException) -> str | None:
    """
    A readable, Go-like text for a TLS handshake that failed with ``error``, or
    ``None`` when ``error`` is not a TLS failure.

    Our own creators fail with :class:`TLSVerificationError`; a creator from
    Twisted's ``optionsForClientTLS`` (an SDK user's own) fails with
    service-identity's ``VerificationError`` or OpenSSL's ``SSL.Error``, whose
    ``repr``-like texts are turned into words here.
    """
    if isinstance(error, TLSVerificationError):
        return str(error)
    if isinstance(error, VerificationError):
        wanted = []
        for mismatch in error.errors:
            service = mismatch.mismatched_id
            if isinstance(service, DNS_ID):
                wanted.append(service.hostname.decode("ascii", "replace"))
            elif isinstance(service, IPAddress_ID):
                wanted.append(str(service.ip))
        return f"{_VERIFY_PREFIX}x509: certificate is not valid for {', '.join(wanted)}"
    if isinstance(error, SSL.Error):
        reasons = [
            str(entry[2])
            for entry in (error.args[0] if error.args and isinstance(error.args[0], list) else [])
            if isinstance(entry, tuple) and len(entry) == 3
        ]
        text = "; ".join(reasons) or str(error)
        if "certificate verify failed" in reasons:
            return f"{_VERIFY_PREFIX}{text}"
        return f"tls: {text}"
    return None


_BEGIN = b"-----BEGIN CERTIFICATE-----"

_log = Logger(namespace="tls")


def load_certificates(path: str) -> list[Certificate]:
    """
    Every certificate of a PEM bundle (Go's ``AppendCertsFromPEM`` takes them all).

    :raises ValueError: when the file holds no certificate.
    """
    with open(path, "rb") as f:
        data = f.read()
    blocks = [_BEGIN + part for part in data.split(_BEGIN)[1:]]
    if not blocks:
        raise ValueError("no certificates found")
    return [Certificate.loadPEM(block) for block in blocks]


def _client_certificate(config: ConnectTLSConfig) -> PrivateCertificate | None:
    if not config.cert:
        return None
    with open(config.cert, "rb") as f:
        cert = Certificate.loadPEM(f.read())
    with open(config.key or config.cert, "rb") as f:
        key = KeyPair.load(f.read(), FILETYPE_PEM)
    return PrivateCertificate.fromCertificateAndKeyPair(cert, key)


@implementer(IOpenSSLClientConnectionCreator)
class _UnverifiedClientTLS:
    """
    TLS without any certificate check (``insecure_skip_verify``), still sending SNI so
    name-based virtual hosts pick the right certificate.
    """

    def __init__(self, hostname: str, options: CertificateOptions) -> None:
        self._hostname = hostname
        self._options = options

    def clientConnectionForTLS(self, tlsProtocol: object) -> SSL.Connection:
        connection = SSL.Connection(self._options.getContext(), None)
        connection.set_app_data(tlsProtocol)
        if self._hostname and ip_version(self._hostname) is None:
            connection.set_tlsext_host_name(self._hostname.encode("idna"))
        return connection


@implementer(IOpenSSLClientConnectionCreator)
class _VerifyingClientTLS:
    """
    TLS that checks the server's chain (OpenSSL) and name (service-identity) and, when
    either fails, aborts the handshake with a :class:`TLSVerificationError` in Go's words.

    :param now: the clock the error messages name (OpenSSL checks dates by the system's).
    """

    def __init__(
        self,
        hostname: str,
        options: CertificateOptions,
        now: Callable[[], float] = time.time,
    ) -> None:
        self._hostname = hostname
        self._context = options.getContext()
        self._now = now

    def clientConnectionForTLS(self, tlsProtocol: object) -> SSL.Connection:
        connection = SSL.Connection(self._context, None)
        connection.set_app_data(tlsProtocol)
        if self._hostname and ip_version(self._hostname) is None:
            connection.set_tlsext_host_name(self._hostname.encode("idna"))
        connection.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, self._verify)
        return connection

    def _verify(
        self, connection: SSL.Connection, certificate: X509, error: int, depth: int, ok: int
    ) -> bool:
        """
        OpenSSL's per-certificate verify callback: keep OpenSSL's verdict on the
        chain, check the leaf's name once the chain is good, and on the first
        failure hand the TLS protocol the error to report (as Twisted's own
        hostname check does).  When OpenSSL finds no trusted root for the leaf
        first, the leaf's dates and name are looked at before saying so, which
        is Go's order.  Nothing may raise out of an OpenSSL callback.
        """
        try:
            if ok and depth != 0:
                return True
            cert = certificate.to_cryptography()  # the leaf at depth 0, else a CA's
            if ok:
                problem = hostname_error(cert, self._hostname)
            else:
                now = self._now()
                problem = verify_error_text(error, cert, now)
                if (
                    depth == 0
                    and error in _UNKNOWN_AUTHORITY
                    and certificate_validity_error(cert, now) is None
                ):
                    # Go checks the leaf's dates, then its name, then the chain.
                    problem = hostname_error(cert, self._hostname) or problem
            if problem is None:
                return True
            failure = Failure(TLSVerificationError(_VERIFY_PREFIX + problem))
            connection.get_app_data().failVerification(failure)
        except BaseException:
            log.failure("while verifying the server certificate")
        return False


def client_tls(
    hostname: str, config: ConnectTLSConfig, setting: str = "connect.tls"
) -> IOpenSSLClientConnectionCreator:
    """
    A TLS connection creator for ``hostname`` honouring ``config``.

    A certificate that does not verify fails the connection with a
    :class:`TLSVerificationError` naming the reason as Go does.

    :param hostname: the name (or IP) the server certificate must match.
    :param config: ``root_cas`` (PEM bundle; default the host's trust store), ``cert``/``key``
        (client certificate for mutual TLS), ``insecure_skip_verify``.
    :param setting: where ``config`` came from, for error messages.
    :raises TLSConfigError: naming the setting and file when a file cannot be used, so the
        program refuses to start with one line instead of a traceback.
    """
    try:
        client_cert = _client_certificate(config)
    except (OSError, ValueError, SSL.Error) as error:
        raise TLSConfigError(
            f"config: {setting}: cert {config.cert}: {_describe(error)}"
        ) from error
    kwargs: dict[str, object] = {}
    if client_cert is not None:
        kwargs["privateKey"] = client_cert.privateKey.original
        kwargs["certificate"] = client_cert.original
    if config.insecure_skip_verify:
        return _UnverifiedClientTLS(
            hostname,
            CertificateOptions(verify=False, **kwargs),  # type: ignore[arg-type]
        )
    if config.root_cas:
        try:
            trust = trustRootFromCertificates(load_certificates(config.root_cas))
        except (OSError, ValueError, SSL.Error) as error:
            raise TLSConfigError(
                f"config: {setting}: root_cas {config.root_cas}: {_describe(error)}"
            ) from error
    else:
        trust = platformTrust()
    return _VerifyingClientTLS(
        hostname,
        CertificateOptions(trustRoot=trust, **kwargs),  # type: ignore[arg-type]
    )


def _describe(error: BaseException) -> str:
    """An error as one short phrase: ``No such file or directory``, not ``[Errno 2] ...``."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__


def tls_for_url(url: str, config: ConnectTLSConfig) -> IOpenSSLClientConnectionCreator | None:
    """
    The creator for a server URL: None for plain ``http``/``ws`` URLs, or for secure ones with
    no TLS option set (the WebSocket client then verifies against the host's trust store).

    TLS options given with a plain URL are still loaded, so a bad file is an error as in Go,
    and a warning says they are unused (Go ignores them silently).

    :raises TLSConfigError: when a TLS file cannot be used.
    """
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    configured = bool(config.root_cas or config.cert or config.insecure_skip_verify)
    if parts.scheme not in ("https", "wss"):
        if configured:
            client_tls(parts.hostname or "localhost", config)
            _log.warn(
                "connect.tls options are set but the url is not https: they are unused",
                url=url,
            )
        return None
    if not configured:
        return None
    return client_tls(parts.hostname or "localhost", config)


class TLSConfigError(ConfigError):
    """A port's TLS settings cannot be used; the server refuses to start (fail closed)."""


def server_tls(port: str, config: ServerTLSConfig) -> CertificateOptions | None:
    """
    The TLS options of a server port, or ``None`` when it serves plain TCP.

    ``cert`` and ``key`` are PEM files (the certificate file may carry the
    chain after the leaf); ``client_cas`` turns on mutual TLS: clients must
    present a certificate signed by one of those CAs (Go's
    ``RequireAndVerifyClientCert``).  Only HTTP/1.1 is offered by ALPN.

    :param port: the port's name, for error messages (``proxy``, ``upstream``, ``admin``).
    :raises TLSConfigError: naming the setting and file that cannot be used.
    """
    if not config.cert and not config.key:
        return None
    if not config.cert:
        raise TLSConfigError(f"config: {port}: tls: missing cert")
    if not config.key:
        raise TLSConfigError(f"config: {port}: tls: missing key")
    try:
        chain = load_certificates(config.cert)
    except (OSError, ValueError, SSL.Error) as error:
        raise TLSConfigError(f"config: {port}: tls: cert {config.cert}: {error}") from error
    _warn_if_out_of_date(port, config.cert, chain[0].original.to_cryptography())
    try:
        with open(config.key, "rb") as f:
            key = KeyPair.load(f.read(), FILETYPE_PEM)
    except (OSError, ValueError, SSL.Error) as error:
        raise TLSConfigError(f"config: {port}: tls: key {config.key}: {error}") from error
    options: dict[str, object] = {
        "privateKey": key.original,
        "certificate": chain[0].original,
        "extraCertChain": [c.original for c in chain[1:]],
        "acceptableProtocols": [b"http/1.1"],
    }
    if config.client_cas:
        try:
            cas = load_certificates(config.client_cas)
        except (OSError, ValueError, SSL.Error) as error:
            raise TLSConfigError(
                f"config: {port}: tls: client_cas {config.client_cas}: {error}"
            ) from error
        options.update(verify=True, caCerts=[c.original for c in cas], requireCertificate=True)
    try:
        tls = CertificateOptions(**options)  # type: ignore[arg-type]
        tls.getContext()  # the key must match the certificate: check now, not per connection
    except (SSL.Error, ValueError) as error:
        raise TLSConfigError(
            f"{port}: tls: cert {config.cert} and key {config.key}: {error}"
        ) from error
    return tls


def _warn_if_out_of_date(
    port: str, path: str, certificate: x509.Certificate, now: float | None = None
) -> None:
    """Warn when a port's own certificate is expired or not yet valid: clients refuse it."""
    problem = certificate_validity_error(certificate, time.time() if now is None else now)
    if problem is not None:
        log.warn(
            "certificate of a port is not valid now: clients that verify it will refuse it",
            port=port,
            path=path,
            problem=problem,
        )


def node_tls(
    config: ServerTLSConfig,
) -> Callable[[str], IOpenSSLClientConnectionCreator | None] | None:
    """
    TLS for node-to-node forwarding, used iff the proxy port itself serves TLS (as Go).

    Built from ``proxy.tls.client`` (``cert``/``key`` for mutual TLS between
    nodes, ``root_cas``, ``insecure_skip_verify``, ``server_name`` to check
    instead of the node's address).

    :return: a function from a node's host to its TLS creator, or ``None``.
    """
    if not (config.cert or config.key):
        return None
    client = config.client
    connect = ConnectTLSConfig(
        cert=client.cert,
        key=client.key,
        root_cas=client.root_cas,
        insecure_skip_verify=client.insecure_skip_verify,
    )

    def for_host(host: str) -> IOpenSSLClientConnectionCreator:
        return client_tls(client.server_name or host, connect)

    return for_host

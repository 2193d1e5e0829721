# -*- test-case-name: piko.test.test_tls -*-
"""
TLS settings as Go's ``tls.Config`` is built: clients from a
:class:`~piko.config.ConnectTLSConfig`, server ports from a :class:`~piko.config.ServerTLSConfig`.

Used three ways: the agent to the server's upstream port (``connect.tls``), ``piko forward``
to the proxy port, and an agent HTTP listener to an ``https://`` local service (the
listener's ``tls``).  Verification uses service-identity (hostname or IP checks) through
``optionsForClientTLS``; ``insecure_skip_verify`` turns every check off, as Go's does, which
needs a small creator of its own because ``optionsForClientTLS`` always verifies.
"""

from __future__ import annotations

from collections.abc import Callable

from OpenSSL import SSL
from OpenSSL.crypto import FILETYPE_PEM
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.internet.ssl import (
    Certificate,
    CertificateOptions,
    KeyPair,
    PrivateCertificate,
    optionsForClientTLS,
    trustRootFromCertificates,
)
from twisted.logger import Logger
from zope.interface import implementer

from piko.config import ConfigError, ConnectTLSConfig, ServerTLSConfig, ip_version

__all__ = ["TLSConfigError", "client_tls", "load_certificates", "server_tls"]

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


def client_tls(
    hostname: str, config: ConnectTLSConfig, setting: str = "connect.tls"
) -> IOpenSSLClientConnectionCreator:
    """
    A TLS connection creator for ``hostname`` honouring ``config``.

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
    if config.insecure_skip_verify:
        kwargs: dict[str, object] = {"verify": False}
        if client_cert is not None:
            kwargs["privateKey"] = client_cert.privateKey.original
            kwargs["certificate"] = client_cert.original
        return _UnverifiedClientTLS(hostname, CertificateOptions(**kwargs))  # type: ignore[arg-type]
    trust = None
    if config.root_cas:
        try:
            trust = trustRootFromCertificates(load_certificates(config.root_cas))
        except (OSError, ValueError, SSL.Error) as error:
            raise TLSConfigError(
                f"config: {setting}: root_cas {config.root_cas}: {_describe(error)}"
            ) from error
    return optionsForClientTLS(hostname, trustRoot=trust, clientCertificate=client_cert)


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

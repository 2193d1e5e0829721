# -*- test-case-name: piko.test.cluster.test_certs -*-
"""
A cluster CA and node certificates for gossip over mutual TLS
(``piko cluster certs``).

Each node certificate serves both ends of a gossip connection (server and
client auth) and names the node, ``localhost`` and ``127.0.0.1`` plus any
extra hosts.  Private keys are written with mode 0600.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Sequence
from pathlib import Path

from attrs import frozen
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["CA_VALIDITY", "NODE_VALIDITY", "ClusterCerts", "create_cluster_certs"]

#: How long the CA is valid.
CA_VALIDITY = datetime.timedelta(days=3650)

#: How long a node certificate is valid.
NODE_VALIDITY = datetime.timedelta(days=825)


@frozen
class ClusterCerts:
    """The files written: the CA's and each node's ``(cert, key)`` paths."""

    ca: str
    ca_key: str
    nodes: dict[str, tuple[str, str]]


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, mode)  # an existing file keeps its mode through O_CREAT


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def create_cluster_certs(
    out: str | Path,
    nodes: Sequence[str],
    hosts: Sequence[str] = (),
    *,
    now: datetime.datetime | None = None,
) -> ClusterCerts:
    """
    Write ``ca.pem``, ``ca-key.pem`` and ``<node>.pem``/``<node>-key.pem`` into ``out``.

    :param out: the directory (created if missing).
    :param nodes: node names; each becomes its certificate's common name and a SAN.
    :param hosts: extra DNS names or IPs for every node certificate.
    :raises ValueError: without nodes, or with a node name that is not a file name.
    """
    if not nodes:
        raise ValueError("no nodes given")
    for node in nodes:
        if not node or "/" in node or node.startswith(".") or node == "ca":
            raise ValueError(f"bad node name: {node!r}")
    directory = Path(out)
    directory.mkdir(parents=True, exist_ok=True)
    now = now or datetime.datetime.now(datetime.UTC)
    start = now - datetime.timedelta(minutes=5)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("piko cluster CA")
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_path, ca_key_path = directory / "ca.pem", directory / "ca-key.pem"
    _write(ca_path, ca.public_bytes(serialization.Encoding.PEM), 0o644)
    _write(ca_key_path, _key_pem(ca_key), 0o600)

    written: dict[str, tuple[str, str]] = {}
    for node in nodes:
        key = ec.generate_private_key(ec.SECP256R1())
        names: list[str] = []
        for host in (node, "localhost", "127.0.0.1", *hosts):
            if host not in names:
                names.append(host)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(node))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(now + NODE_VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(x509.SubjectAlternativeName([_san(n) for n in names]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
            )
            .sign(ca_key, hashes.SHA256())
        )
        cert_path, key_path = directory / f"{node}.pem", directory / f"{node}-key.pem"
        _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
        _write(key_path, _key_pem(key), 0o600)
        written[node] = (str(cert_path), str(key_path))
    return ClusterCerts(str(ca_path), str(ca_key_path), written)

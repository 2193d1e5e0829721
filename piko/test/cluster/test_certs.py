# -*- test-case-name: piko.test.cluster.test_certs -*-
"""Tests for :mod:`piko.cluster.certs` and ``piko cluster certs``."""

from __future__ import annotations

import io
import ipaddress
import os
import stat
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from OpenSSL import crypto
from twisted.trial.unittest import SynchronousTestCase

from piko import cli
from piko.cluster.certs import create_cluster_certs
from piko.cluster.transport import cluster_tls_options


def _load(path: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(Path(path).read_bytes())


class ClusterCertsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = Path(self.mktemp())

    def test_files_and_permissions(self) -> None:
        """The CA and every node get a certificate and a key; keys are 0600."""
        written = create_cluster_certs(self.dir, ["node-1", "node-2", "node-3"])
        names = sorted(os.listdir(self.dir))
        self.assertEqual(
            names,
            sorted(
                ["ca.pem", "ca-key.pem"]
                + [f"node-{i}{s}.pem" for i in (1, 2, 3) for s in ("", "-key")]
            ),
        )
        for name in names:
            mode = stat.S_IMODE(os.stat(self.dir / name).st_mode)
            self.assertEqual(mode, 0o600 if name.endswith("-key.pem") else 0o644, name)
        self.assertEqual(written.nodes["node-2"][0], str(self.dir / "node-2.pem"))

    def test_chain_usages_and_names(self) -> None:
        """Each node certificate verifies against the CA, serves both ends and names its hosts."""
        written = create_cluster_certs(self.dir, ["node-1"], ["10.0.0.7", "piko.internal"])
        store = crypto.X509Store()
        store.add_cert(crypto.load_certificate(crypto.FILETYPE_PEM, Path(written.ca).read_bytes()))
        cert_path, key_path = written.nodes["node-1"]
        leaf = crypto.load_certificate(crypto.FILETYPE_PEM, Path(cert_path).read_bytes())
        crypto.X509StoreContext(store, leaf).verify_certificate()
        cert = _load(cert_path)
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        self.assertEqual(
            set(usages), {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
        )
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        self.assertEqual(
            san.get_values_for_type(x509.DNSName), ["node-1", "localhost", "piko.internal"]
        )
        self.assertEqual(
            san.get_values_for_type(x509.IPAddress),
            [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("10.0.0.7")],
        )
        # The files load as a node's cluster TLS (the key matches).
        cluster_tls_options(cert_path, key_path, written.ca)

    def test_another_ca_does_not_verify(self) -> None:
        """A node certificate from another run's CA does not verify against this CA."""
        ours = create_cluster_certs(self.dir / "a", ["n"])
        theirs = create_cluster_certs(self.dir / "b", ["n"])
        store = crypto.X509Store()
        store.add_cert(crypto.load_certificate(crypto.FILETYPE_PEM, Path(ours.ca).read_bytes()))
        leaf = crypto.load_certificate(crypto.FILETYPE_PEM, Path(theirs.nodes["n"][0]).read_bytes())
        self.assertRaises(
            crypto.X509StoreContextError, crypto.X509StoreContext(store, leaf).verify_certificate
        )

    def test_bad_names(self) -> None:
        """Node names must be plain file names, and at least one is needed."""
        self.assertRaises(ValueError, create_cluster_certs, self.dir, [])
        self.assertRaises(ValueError, create_cluster_certs, self.dir, ["../x"])
        self.assertRaises(ValueError, create_cluster_certs, self.dir, ["ca"])


class ClusterCertsCommandTests(SynchronousTestCase):
    def run_cli(self, *argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        code = cli._dispatch(list(argv), out, err)
        return code, out.getvalue(), err.getvalue()

    def test_writes_certs(self) -> None:
        """``piko cluster certs --out DIR --nodes a,b`` writes the files and prints the flags."""
        out_dir = self.mktemp()
        code, out, err = self.run_cli("cluster", "certs", "--out", out_dir, "--nodes", "a,b")
        self.assertEqual((code, err), (0, ""))
        self.assertTrue(os.path.exists(os.path.join(out_dir, "b-key.pem")))
        self.assertIn(f"--cluster.tls.ca {os.path.join(out_dir, 'ca.pem')}", out)

    def test_missing_options(self) -> None:
        """Without ``--out`` or ``--nodes`` the command fails with a message."""
        self.assertEqual(
            self.run_cli("cluster", "certs", "--nodes", "a"),
            (1, "", "cluster certs: missing --out\n"),
        )
        self.assertEqual(
            self.run_cli("cluster", "certs", "--out", self.mktemp()),
            (1, "", "cluster certs: missing --nodes\n"),
        )

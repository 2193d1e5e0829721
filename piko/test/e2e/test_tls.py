"""TLS and mutual TLS on the server's ports, end to end on loopback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from attrs import evolve
from twisted.internet.defer import inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol, wrapClientTLS
from twisted.internet.protocol import Factory
from twisted.web import server

from piko.client import Dialer, Upstream
from piko.config import ConnectTLSConfig, ServerTLSConfig
from piko.server.service import make_server_service
from piko.test.certs import TestCA
from piko.test.e2e.harness import E2ETestCase, RawHTTPClient, reactor, server_config
from piko.test.e2e.test_http import Echo, get
from piko.test.e2e.test_tcp_ws import Collector
from piko.test.e2e.test_tcp_ws import Echo as TCPEcho
from piko.tls import TLSConfigError, client_tls


class TLSPortsTests(E2ETestCase):
    @inlineCallbacks
    def start_tls_server(self, client_cas: bool = False) -> Any:
        directory = Path(self.mktemp())
        directory.mkdir()
        self.ca = TestCA(directory)
        cert, key = self.ca.issue("localhost")
        tls = ServerTLSConfig(
            cert=cert, key=key, client_cas=str(self.ca.cert_path) if client_cas else ""
        )
        config = server_config()
        config = evolve(
            config,
            proxy=evolve(config.proxy, tls=tls),
            upstream=evolve(config.upstream, tls=tls),
            admin=evolve(config.admin, tls=tls),
        )
        service = make_server_service(config, reactor)
        service.startService()
        self.addCleanup(lambda: service.stopService() if service.running else None)
        yield service.started
        self.server = service
        return service

    def client_tls(self, with_cert: bool = False) -> Any:
        cert = key = ""
        if with_cert:
            cert, key = self.ca.issue("agent", server=False)
        return client_tls(
            "localhost", ConnectTLSConfig(root_cas=str(self.ca.cert_path), cert=cert, key=key)
        )

    @inlineCallbacks
    def https_request(self, raw: bytes, tls: Any) -> Any:
        endpoint = wrapClientTLS(
            tls, TCP4ClientEndpoint(reactor, "127.0.0.1", self.port_of("proxy"))
        )
        client = yield connectProtocol(endpoint, RawHTTPClient())
        self.addCleanup(lambda: client.transport.loseConnection() or client.closed)
        client.transport.write(raw)
        response = yield client.next_response()
        return response

    @inlineCallbacks
    def test_wss_upstream_and_https_proxy(self) -> Any:
        """An SDK upstream over wss and a client over https reach each other through TLS ports."""
        yield self.start_tls_server()
        upstream = Upstream(
            reactor, f"https://localhost:{self.port_of('upstream')}", tls=self.client_tls()
        )
        port = yield upstream.listen("my-ep", server.Site(Echo()))
        self.addCleanup(port.shutdown)
        response = yield self.https_request(get(b"/secure"), self.client_tls())
        self.assertEqual(json.loads(response.body)["uri"], "/secure")

    @inlineCallbacks
    def test_tcp_over_tls(self) -> Any:
        """The Dialer reaches a TCP endpoint through the proxy port's TLS."""
        yield self.start_tls_server()
        upstream = Upstream(
            reactor, f"https://localhost:{self.port_of('upstream')}", tls=self.client_tls()
        )
        port = yield upstream.listen("tcp-ep", Factory.forProtocol(TCPEcho))
        self.addCleanup(port.shutdown)
        dialer = Dialer(
            reactor, f"https://localhost:{self.port_of('proxy')}", tls=self.client_tls()
        )
        client = yield dialer.dial("tcp-ep", Factory.forProtocol(Collector))
        client.transport.write(b"over tls")
        echoed = yield client.wait_for(8)
        self.assertEqual(echoed, b"over tls")
        client.transport.loseConnection()
        yield client.lost

    @inlineCallbacks
    def test_mutual_tls_requires_client_certificate(self) -> Any:
        """With client_cas, a client needs a CA-signed certificate to connect."""
        yield self.start_tls_server(client_cas=True)
        url = f"https://localhost:{self.port_of('upstream')}"
        refused = Upstream(reactor, url, tls=self.client_tls(), connect_timeout=2.0)
        yield self.assertFailure(refused.listen("my-ep", server.Site(Echo())), Exception)
        accepted = Upstream(reactor, url, tls=self.client_tls(with_cert=True))
        port = yield accepted.listen("my-ep", server.Site(Echo()))
        self.addCleanup(port.shutdown)
        response = yield self.https_request(get(b"/mtls"), self.client_tls(with_cert=True))
        self.assertEqual(response.status, 200)


class TLSConfigTests(E2ETestCase):
    def test_unusable_tls_refuses_to_start(self) -> None:
        """A missing key file stops the server from being built, with a message naming it."""
        config = server_config()
        directory = Path(self.mktemp())
        directory.mkdir()
        cert, _ = TestCA(directory).issue("localhost")
        config = evolve(
            config,
            proxy=evolve(
                config.proxy, tls=ServerTLSConfig(cert=cert, key=str(directory / "nope.key"))
            ),
        )
        error = self.assertRaises(TLSConfigError, make_server_service, config, reactor)
        self.assertIn("config: proxy: tls: key", str(error))
        self.assertIn("nope.key", str(error))

    def test_cert_without_key(self) -> None:
        """A certificate without a key is Go's 'tls: missing key'."""
        config = server_config()
        config = evolve(config, admin=evolve(config.admin, tls=ServerTLSConfig(cert="x.pem")))
        error = self.assertRaises(TLSConfigError, make_server_service, config, reactor)
        self.assertEqual(str(error), "config: admin: tls: missing key")

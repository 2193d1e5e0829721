"""
TLS end to end: an agent over ``wss://`` with a private CA, the proxy and admin
ports over HTTPS, and node-to-node forwarding over mutual TLS, on loopback.

Two nodes serve TLS on every port from one private CA; their proxy ports
require client certificates (``client_cas``) and each forwards to the other
with its own client certificate (``proxy.tls.client.*``).  The agent runs on
node 1; a client with a certificate asks node 2, which forwards to node 1.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from attrs import evolve
from twisted.internet.defer import inlineCallbacks
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    TCP4ServerEndpoint,
    connectProtocol,
    wrapClientTLS,
)
from twisted.web import server

from piko.agent.service import make_agent_service
from piko.config import (
    AgentConfig,
    ClientTLSConfig,
    ConnectTLSConfig,
    InspectConfig,
    ListenerConfig,
    ServerTLSConfig,
)
from piko.server.service import make_server_service
from piko.test.certs import TestCA
from piko.test.e2e.harness import E2ETestCase, RawHTTPClient, reactor, server_config
from piko.test.e2e.test_gossip_cluster import endpoint_on, wait_cluster
from piko.test.e2e.test_http import Echo, get
from piko.tls import client_tls


class TLSEverywhereTests(E2ETestCase):
    timeout = 60

    def tls_config(self, ca: TestCA, name: str) -> ServerTLSConfig:
        cert, key = ca.issue(name)
        client_cert, client_key = ca.issue(f"{name}-client", server=False)
        return ServerTLSConfig(
            cert=cert,
            key=key,
            client_cas=str(ca.cert_path),
            client=ClientTLSConfig(cert=client_cert, key=client_key, root_cas=str(ca.cert_path)),
        )

    @inlineCallbacks
    def start_node(self, ca: TestCA, node_id: str, join: tuple[str, ...] = ()) -> Any:
        config = server_config()
        proxy_tls = self.tls_config(ca, "localhost")
        plain_tls = ServerTLSConfig(cert=proxy_tls.cert, key=proxy_tls.key)
        config = evolve(
            config,
            proxy=evolve(config.proxy, tls=proxy_tls),
            upstream=evolve(config.upstream, tls=plain_tls),
            admin=evolve(config.admin, tls=plain_tls),
            cluster=evolve(
                config.cluster,
                node_id=node_id,
                join=join,
                join_timeout=5.0,
                abort_if_join_fails=False,
            ),
        )
        service = make_server_service(config, reactor)
        service.startService()
        self.addCleanup(lambda: service.stopService() if service.running else None)
        yield service.started
        return service

    @inlineCallbacks
    def https(self, port: int, raw: bytes, tls: Any) -> Any:
        endpoint = wrapClientTLS(tls, TCP4ClientEndpoint(reactor, "127.0.0.1", port))
        client = yield connectProtocol(endpoint, RawHTTPClient())
        self.addCleanup(lambda: client.transport.loseConnection() or client.closed)
        client.transport.write(raw)
        response = yield client.next_response()
        return response

    @inlineCallbacks
    def test_agent_wss_https_proxy_and_admin_mutual_tls_between_nodes(self) -> Any:
        """A request to node 2 over HTTPS reaches the agent on node 1 through mutual TLS."""
        directory = Path(self.mktemp())
        directory.mkdir()
        ca = TestCA(directory)
        node1 = yield self.start_node(ca, "n1")
        node2 = yield self.start_node(ca, "n2", join=(node1.gossip.addr,))

        site = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            server.Site(Echo("behind-piko"))
        )
        self.addCleanup(site.stopListening)
        agent = make_agent_service(
            AgentConfig(
                inspect=InspectConfig(enabled=False),
                connect=evolve(
                    AgentConfig().connect,
                    url=f"https://localhost:{self.port_of('upstream', node1)}",
                    tls=ConnectTLSConfig(root_cas=str(ca.cert_path)),
                ),
                listeners=(
                    ListenerConfig(
                        endpoint_id="secure",
                        addr=f"127.0.0.1:{site.getHost().port}",
                        timeout=10.0,
                    ),
                ),
            ),
            reactor,
            stop_reactor_on_failure=False,
        )
        agent.startService()
        self.addCleanup(agent.stopService)
        yield agent.ready
        yield wait_cluster(node2.cluster, endpoint_on("n1", "secure"))

        client_cert, client_key = ca.issue("downstream", server=False)
        tls = client_tls(
            "localhost",
            ConnectTLSConfig(root_cas=str(ca.cert_path), cert=client_cert, key=client_key),
        )
        response = yield self.https(self.port_of("proxy", node2), get(b"/hello", b"secure"), tls)
        self.assertEqual(response.status, 200)
        seen = json.loads(response.body)
        self.assertEqual((seen["name"], seen["uri"]), ("behind-piko", "/hello"))
        self.assertEqual(seen["headers"]["x-piko-forward"], ["true"])

        admin_tls = client_tls("localhost", ConnectTLSConfig(root_cas=str(ca.cert_path)))
        ready = yield self.https(
            self.port_of("admin", node2), b"GET /ready HTTP/1.1\r\nHost: x\r\n\r\n", admin_tls
        )
        self.assertEqual(ready.status, 200)

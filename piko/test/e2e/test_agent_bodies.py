# -*- test-case-name: piko.test.e2e.test_agent_bodies -*-
"""
End to end, on real loopback sockets: request and response bodies pass whole through a
server node and a *cold* agent (no idle connection to its local service yet).

The agent (``make_agent_service``, as ``piko agent http`` runs it) forwards to a
``twisted.web`` site that reads every request body to its end and answers its length and
digest, or ``n`` bytes for ``/bytes/<n>``.  Bodies that arrive on a stream while the agent is
still connecting to the site, or while that connection pushes back, used to stay in the
agent's request reader: a chunked POST lost its last chunk and concurrent 200 KB POSTs were
cut short, each ending in 504 after the listener timeout.
"""

from __future__ import annotations

import hashlib
import json
import random
from typing import Any

from attrs import evolve
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.web import resource, server

from piko.agent.service import make_agent_service
from piko.config import AgentConfig, InspectConfig, ListenerConfig
from piko.test.e2e.harness import E2ETestCase, reactor, wait_for_count

ENDPOINT = b"bodies"
BLOCK = bytes(range(256)) * 1024  # 256 KiB


class Service(resource.Resource):
    """The local service: ``/bytes/<n>`` answers n bytes, anything else the body's digest."""

    isLeaf = True

    def render(self, request: Any) -> bytes:
        path = request.path
        if path.startswith(b"/bytes/"):
            return BLOCK[: int(path[7:])]
        body = request.content.read()
        return json.dumps(
            {"length": len(body), "sha256": hashlib.sha256(body).hexdigest()}
        ).encode()


def post(body: bytes, *, chunked: bool = False) -> bytes:
    """A POST of ``body`` (chunked in one chunk, or with a Content-Length), sent whole."""
    head = b"POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nx-piko-endpoint: %s\r\n" % ENDPOINT
    if chunked:
        return head + b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (
            len(body),
            body,
        )
    return head + b"Content-Length: %d\r\n\r\n" % len(body) + body


class ColdAgentBodiesTests(E2ETestCase):
    """Every byte of every body arrives, through an agent that starts with an empty pool."""

    timeout = 60

    @inlineCallbacks
    def start_stack(self) -> Any:
        """A server node, the local service and an agent for it, its pool still empty."""
        yield self.start_server()
        site = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            server.Site(Service())
        )
        self.addCleanup(site.stopListening)
        agent = make_agent_service(
            AgentConfig(
                inspect=InspectConfig(enabled=False),
                connect=evolve(
                    AgentConfig().connect, url=f"http://127.0.0.1:{self.port_of('upstream')}"
                ),
                listeners=(
                    ListenerConfig(
                        endpoint_id=ENDPOINT.decode(),
                        addr=f"127.0.0.1:{site.getHost().port}",
                        # A stranded body ends in this 504: keep it well inside the test.
                        timeout=20.0,
                    ),
                ),
            ),
            reactor,
            stop_reactor_on_failure=False,
        )
        agent.startService()
        self.addCleanup(agent.stopService)
        yield agent.ready
        yield wait_for_count(self.server, ENDPOINT.decode(), 1)

    def assert_received(self, response: Any, body: bytes) -> None:
        self.assertEqual(response.status, 200, response.body[:200])
        self.assertEqual(
            json.loads(response.body),
            {"length": len(body), "sha256": hashlib.sha256(body).hexdigest()},
        )

    @inlineCallbacks
    def test_chunked_post(self) -> Any:
        """A chunked POST, sent whole to a cold agent, reaches the service to its last chunk."""
        yield self.start_stack()
        response = yield self.request(post(b"abc", chunked=True))
        self.assert_received(response, b"abc")

    @inlineCallbacks
    def test_concurrent_large_posts(self) -> Any:
        """50 concurrent 200 KB POSTs (Content-Length and chunked) all arrive whole."""
        yield self.start_stack()
        bodies = [random.Random(n).randbytes(200_000) for n in range(50)]
        responses = yield gatherResults(
            [self.request(post(body, chunked=n % 2 == 0)) for n, body in enumerate(bodies)]
        )
        for response, body in zip(responses, bodies, strict=True):
            self.assert_received(response, body)

    @inlineCallbacks
    def test_concurrent_downloads(self) -> Any:
        """30 keep-alive clients fetching random sizes up to 256 KiB get every byte."""
        yield self.start_stack()
        rng = random.Random(7)

        @inlineCallbacks
        def client() -> Any:
            connection = yield self.http_client()
            for _ in range(6):
                size = rng.randrange(len(BLOCK) + 1)
                connection.transport.write(
                    b"GET /bytes/%d HTTP/1.1\r\nHost: 127.0.0.1\r\nx-piko-endpoint: %s\r\n\r\n"
                    % (size, ENDPOINT)
                )
                response = yield connection.next_response()
                self.assertEqual((response.status, response.body), (200, BLOCK[:size]))

        yield gatherResults([client() for _ in range(30)])

# -*- test-case-name: piko.test.http.test_large_heads_e2e -*-
"""
End to end, on real loopback sockets: 50 concurrent requests whose heads carry 59,000
distinct header names (about 770 KB, under the 1 MiB limit) all pass through a server node
and an agent whole.

Each such head used to cost about 0.4 s of CPU per rewrite (its names canonicalised one by one
through a cache they overflowed), so 50 of them kept the reactor busy long enough for the yamux
keepalive to time out: the session was torn down and most requests ended in 502.  This test
states the behaviour only (every request answered, every header delivered, within a generous
bound); the per-head cost is measured by ``benchmarks/head_rewrite.py`` and
``benchmarks/large_heads.py``, not timed here.
"""

from __future__ import annotations

from typing import Any

from attrs import evolve
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol

from piko.agent.service import make_agent_service
from piko.config import AgentConfig, ListenerConfig
from piko.http import server as http_server
from piko.test.e2e.harness import E2ETestCase, reactor, wait_for_count

ENDPOINT = b"large-heads"
HEADERS = 59_000
REQUESTS = 50


class CountingService(Protocol):
    """The local service: answers each request with the number of header lines it carried."""

    def __init__(self) -> None:
        self.buffer = b""

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
            body = b"%d" % (head.count(b"\r\n") + 1,)
            assert self.transport is not None
            self.transport.write(
                b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
            )


def large_head() -> bytes:
    lines = b"".join(b"x-h%05d: v\r\n" % i for i in range(HEADERS))
    return (
        b"GET /large HTTP/1.1\r\nHost: 127.0.0.1\r\nx-piko-endpoint: %s\r\n" % ENDPOINT
        + lines
        + b"\r\n"
    )


class LargeHeadsTests(E2ETestCase):
    """Many concurrent very large heads are all answered."""

    timeout = 180

    @inlineCallbacks
    def test_concurrent_large_heads(self) -> Any:
        """50 concurrent 770 KB heads of 59,000 headers each all reach the service whole."""
        # Server and agent share this process, and so its head budget, which in real use
        # each has for itself: give the shared one room for both.
        self.patch(http_server.PROCESS_HEAD_BUDGET, "limit", 2 * http_server.DEFAULT_HEAD_BUDGET)
        # Everything (clients, server, agent, service) shares one reactor on a shared machine
        # here, so the last answers can take longer than the default 30 s proxy timeout
        # (504); a torn-down session (502) is what this test is about.
        yield self.start_server(timeout=150.0)
        site = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            Factory.forProtocol(CountingService)
        )
        self.addCleanup(site.stopListening)
        agent = make_agent_service(
            AgentConfig(
                connect=evolve(
                    AgentConfig().connect, url=f"http://127.0.0.1:{self.port_of('upstream')}"
                ),
                listeners=(
                    ListenerConfig(
                        endpoint_id=ENDPOINT.decode(),
                        addr=f"127.0.0.1:{site.getHost().port}",
                        timeout=120.0,
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

        head = large_head()
        responses = yield gatherResults([self.request(head) for _ in range(REQUESTS)])
        # Request line, Host, x-piko-endpoint, ours, X-Forwarded-For, X-Piko-Forward.
        want = b"%d" % (1 + 2 + HEADERS + 2)
        failed = [(r.status, r.body[:80]) for r in responses if (r.status, r.body) != (200, want)]
        self.assertEqual(failed, [])

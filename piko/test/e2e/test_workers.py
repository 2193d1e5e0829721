"""
``piko server --workers 2`` as a real process: two worker nodes on shared ports.

An agent connects to one worker through the shared upstream port; requests
over new connections to the shared proxy port land on either worker, and the
one without the upstream forwards them to the other.  SIGTERM stops it all.
"""

from __future__ import annotations

import json
import os
import re
import sys
from typing import Any

import treq
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase
from twisted.web.client import HTTPConnectionPool
from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.web.static import Data

from piko.test.e2e.harness import reactor
from piko.test.e2e.test_demo import free_port_block
from piko.test.e2e.test_getting_started import ROOT, WatchedProcess

REQUESTS = 40


class ExitProcess(WatchedProcess):
    """Also keeps the exit code."""

    code: int | None = None

    def processEnded(self, reason: Any) -> None:
        self.code = reason.value.exitCode
        super().processEnded(reason)


class WorkersTests(TestCase):
    timeout = 60

    def spawn(self, argv: list[str], marker: bytes) -> tuple[ExitProcess, Any]:
        process = ExitProcess(marker)
        env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
        transport = reactor.spawnProcess(process, sys.executable, [sys.executable, *argv], env=env)

        def stop() -> Deferred[None]:
            if not process.ended.called:
                transport.signalProcess("KILL")
            return process.ended

        self.addCleanup(stop)
        return process, transport

    @inlineCallbacks
    def test_two_workers(self) -> Any:
        """Every request succeeds whichever worker accepts it; SIGTERM exits 0."""
        base = free_port_block(6)
        root = Resource()
        root.putChild(b"", Data(b"hello", "text/plain"))
        site = yield reactor.listenTCP(base + 5, Site(root), interface="127.0.0.1")
        self.addCleanup(site.stopListening)
        server, transport = self.spawn(
            [
                "-m", "piko", "server", "--workers", "2", "--grace-period", "5s",
                "--proxy.bind-addr", f"127.0.0.1:{base}",
                "--upstream.bind-addr", f"127.0.0.1:{base + 1}",
                "--admin.bind-addr", f"127.0.0.1:{base + 2}",
                "--cluster.gossip.bind-addr", f"127.0.0.1:{base + 3}",
            ],
            b'-w1","proxy"',  # worker 1's ready line (JSON: not a terminal)
        )  # fmt: skip
        yield server.ready
        agent, _ = self.spawn(
            [
                "-m", "piko", "agent", "http", "ep", str(base + 5), "--inspect=false",
                "--connect.url", f"http://127.0.0.1:{base + 1}",
            ],
            b"upstream connected",
        )  # fmt: skip
        yield agent.ready
        # Each worker's ready line (JSON, as the output is not a terminal) names its admin port.
        admins = re.findall(rb'"admin":"(127\.0\.0\.1:\d+)"', server.output)
        self.assertEqual(len(admins), 2, server.output)
        pool = HTTPConnectionPool(reactor, persistent=False)
        # Both workers know where the endpoint is before the requests.  Bounded in time, not
        # in polls: a worker that started before worker 0 listened retries its join after
        # JOIN_BACKOFF_MIN, and polls are fast.
        for admin in admins:
            deadline = reactor.seconds() + 20
            while True:
                response = yield treq.get(
                    f"http://{admin.decode()}/status/cluster/nodes", pool=pool
                )
                nodes = json.loads((yield response.content()))
                if any(node.get("endpoints") for node in nodes):
                    break
                if reactor.seconds() > deadline:
                    self.fail(f"worker {admin!r} never learnt the endpoint: {nodes}")
                yield deferLater(reactor, 0.02, lambda: None)
        headers: dict[bytes | str, bytes | str] = {b"x-piko-endpoint": b"ep"}
        for _ in range(REQUESTS):
            response = yield treq.get(f"http://127.0.0.1:{base}/", headers=headers, pool=pool)
            body = yield response.content()
            self.assertEqual((response.code, body), (200, b"hello"))
        yield pool.closeCachedConnections()
        transport.signalProcess("TERM")
        yield server.ended
        self.assertEqual(server.code, 0, server.output[-2000:])

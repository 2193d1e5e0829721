"""
The getting-started guide, run as written.

The commands of the guide's first walk-through (``docs/getting-started.md``)
are taken from the page itself and run as real processes on loopback; the
only change is the ports, moved to free ones so the test never collides
with anything.  Each process is waited for by the line it prints when ready,
and stopped by handle.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
from pathlib import Path
from typing import Any

import treq
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from twisted.web.client import HTTPConnectionPool

from piko.test.e2e.harness import reactor
from piko.test.e2e.test_demo import free_port_block

ROOT = Path(__file__).resolve().parents[3]
GUIDE = ROOT / "docs" / "getting-started.md"


class WatchedProcess(ProcessProtocol):
    """A child process whose output is searched for a readiness marker."""

    def __init__(self, marker: bytes) -> None:
        self.marker = marker
        self.output = b""
        self.ready: Deferred[None] = Deferred()
        self.ended: Deferred[None] = Deferred()

    def childDataReceived(self, fd: int, data: bytes) -> None:
        self.output += data
        if self.marker in self.output and not self.ready.called:
            self.ready.callback(None)

    def processEnded(self, reason: Failure) -> None:
        if not self.ready.called:
            self.ready.errback(RuntimeError(f"exited before ready: {self.output[-2000:]!r}"))
        self.ended.callback(None)


def walkthrough() -> list[str]:
    """The command lines of the guide's first shell block after the install block."""
    blocks = re.findall(r"```sh\n(.*?)```", GUIDE.read_text(), re.S)
    lines = [line.split("#")[0].strip().rstrip("&").strip() for line in blocks[1].splitlines()]
    return [line for line in lines if line]


class GettingStartedTests(TestCase):
    timeout = 60

    def spawn(self, argv: list[str], marker: bytes) -> WatchedProcess:
        process = WatchedProcess(marker)
        env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
        transport = reactor.spawnProcess(process, sys.executable, [sys.executable, *argv], env=env)

        def stop() -> Deferred[None]:
            if not process.ended.called:
                transport.signalProcess("TERM")
            return process.ended

        self.addCleanup(stop)
        return process

    @inlineCallbacks
    def test_walkthrough(self) -> Any:
        """Server, a local service, an agent, then the two curls answer as the guide says."""
        base = free_port_block(5)
        ports = {"8000": base, "8001": base + 1, "8002": base + 2, "3000": base + 4}
        pool = HTTPConnectionPool(reactor, persistent=False)
        commands = walkthrough()
        self.assertEqual(
            [c.split()[0] for c in commands], ["piko", "python3", "piko", "curl", "curl"]
        )
        for command in commands:
            words = shlex.split(command)
            if words[:2] == ["piko", "server"]:
                process = self.spawn(
                    [
                        "-m",
                        "piko",
                        *words[1:],
                        "--proxy.bind-addr",
                        f"127.0.0.1:{ports['8000']}",
                        "--upstream.bind-addr",
                        f"127.0.0.1:{ports['8001']}",
                        "--admin.bind-addr",
                        f"127.0.0.1:{ports['8002']}",
                        "--cluster.gossip.bind-addr",
                        f"127.0.0.1:{base + 3}",
                    ],
                    b"piko server ready",
                )
            elif words[0] == "python3":
                process = self.spawn(
                    [*words[1:3], str(ports[words[3]]), *words[4:]], b"Serving HTTP"
                )
            elif words[:2] == ["piko", "agent"]:
                process = self.spawn(
                    [
                        "-m",
                        "piko",
                        *words[1:4],
                        str(ports[words[4]]),
                        "--connect.url",
                        f"http://127.0.0.1:{ports['8001']}",
                        "--inspect.bind-addr",
                        "127.0.0.1:0",
                    ],
                    b"upstream connected",
                )
            else:
                url = words[-1]
                host, _, path = url.partition("/")
                port = ports[host.split(":")[1]]
                headers: dict[bytes | str, bytes | str] = {}
                if "-H" in words:
                    name, _, value = words[words.index("-H") + 1].partition(": ")
                    headers[name] = value
                response = yield treq.get(
                    f"http://127.0.0.1:{port}/{path}", headers=headers, pool=pool
                )
                body = yield response.content()
                self.assertEqual(response.code, 200, body)
                if path.startswith("status/upstream/endpoints"):
                    self.assertEqual(json.loads(body), {"my-endpoint": 1})
                else:
                    self.assertIn(b"Directory listing", body)
                continue
            yield process.ready
        yield pool.closeCachedConnections()

# -*- test-case-name: piko.test.e2e.test_startup_errors -*-
"""
Start-up errors as a user meets them: real ``piko`` and ``twistd`` processes, each of which
must end with a non-zero status and a short message on stderr, never a traceback, and never
keep running while it serves nothing.
"""

from __future__ import annotations

import os
import socket
import sys
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.error import ProcessDone
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from piko.test.e2e.harness import reactor

#: ``python`` arguments that run twistd as its console script does.
TWISTD = ["-c", "from twisted.scripts.twistd import run; run()"]

#: Seconds a process may take to give up; it is killed (and the test fails) after that.
EXIT_BOUND = 20.0


class _Run(ProcessProtocol):
    def __init__(self) -> None:
        self.out = b""
        self.err = b""
        self.ended: Deferred[int | None] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.out += data

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def processEnded(self, reason: Failure) -> None:
        status = 0 if reason.check(ProcessDone) else getattr(reason.value, "exitCode", None)
        self.ended.callback(status)


def _taken_port(test: TestCase) -> int:
    """A loopback port that is bound and listening for the test's duration."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    test.addCleanup(sock.close)
    port: int = sock.getsockname()[1]
    return port


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class StartupErrorTests(TestCase):
    timeout = 60

    def run_program(self, *argv: str) -> Deferred[tuple[int | None, bytes, bytes]]:
        """Run ``python -m <argv>`` (or twistd) and collect its status and output."""
        run = _Run()
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
        transport = reactor.spawnProcess(run, sys.executable, [sys.executable, *argv], env=env)
        killer = reactor.callLater(EXIT_BOUND, transport.signalProcess, "KILL")

        def ended(status: int | None) -> tuple[int | None, bytes, bytes]:
            if killer.active():
                killer.cancel()
            return status, run.out, run.err

        return run.ended.addCallback(ended)

    def server_args(self, proxy_port: int) -> list[str]:
        return [
            "--proxy.bind-addr",
            f"127.0.0.1:{proxy_port}",
            "--upstream.bind-addr",
            f"127.0.0.1:{_free_port()}",
            "--admin.bind-addr",
            f"127.0.0.1:{_free_port()}",
            "--cluster.gossip.bind-addr",
            f"127.0.0.1:{_free_port()}",
        ]

    @inlineCallbacks
    def test_twistd_server_exits_when_its_port_is_taken(self) -> Any:
        """``twistd -n piko-server`` whose proxy port is taken exits 1 instead of idling."""
        args = [*TWISTD, "-n", "--pidfile=", "piko-server"]
        status, out, err = yield self.run_program(*args, *self.server_args(_taken_port(self)))
        self.assertEqual(status, 1, (out + err)[-2000:])
        self.assertNotIn(b"Traceback", out + err)

    @inlineCallbacks
    def test_piko_server_exits_when_its_port_is_taken(self) -> Any:
        """``piko server`` whose proxy port is taken exits 1."""
        status, out, err = yield self.run_program(
            "-m", "piko", "server", *self.server_args(_taken_port(self))
        )
        self.assertEqual(status, 1, (out + err)[-2000:])
        self.assertNotIn(b"Traceback", out + err)

    @inlineCallbacks
    def test_unusable_root_cas_is_one_line(self) -> Any:
        """A CA file that cannot be read is one line naming it, status 1, under piko and twistd."""
        tls = ["--connect.url", "https://127.0.0.1:1", "--connect.tls.root-cas", "/nonexistent"]
        for argv in (
            ["-m", "piko", "agent", "http", "ep", "3000", *tls],
            ["-m", "piko", "forward", "tcp", "127.0.0.1:0", "ep", *tls],
            [
                *TWISTD,
                "-n",
                "--pidfile=",
                "piko-agent",
                "http",
                "ep",
                "3000",
                *tls,
            ],
        ):
            status, out, err = yield self.run_program(*argv)
            self.assertEqual(status, 1, argv)
            lines = [line for line in err.decode().splitlines() if line.strip()]
            self.assertEqual(len(lines), 1, err)
            self.assertIn("root_cas /nonexistent: No such file or directory", lines[0])
            self.assertNotIn(b"Traceback", out + err)

    @inlineCallbacks
    def test_twistd_forward_exits_when_its_port_is_taken(self) -> Any:
        """``twistd -n piko-forward`` whose port is taken exits 1 with one error, no traceback."""
        port = _taken_port(self)
        status, out, err = yield self.run_program(
            *TWISTD, "-n", "--pidfile=", "piko-forward", "tcp", f"127.0.0.1:{port}", "db"
        )
        self.assertEqual(status, 1, (out + err)[-2000:])
        self.assertNotIn(b"Traceback", out + err)
        self.assertIn(b"failed to listen", out + err)

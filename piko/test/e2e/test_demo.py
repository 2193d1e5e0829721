"""The README's first command: ``python -m piko.demo --once`` sends a request through."""

from __future__ import annotations

import os
import random
import socket
import sys
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from piko.test.e2e.harness import reactor


def free_port_block(size: int = 4) -> int:
    """A base port such that ``size`` consecutive loopback ports are free now."""
    for _ in range(100):
        base = random.randrange(20000, 60000)
        sockets = []
        try:
            for offset in range(size):
                s = socket.socket()
                sockets.append(s)
                s.bind(("127.0.0.1", base + offset))
            return base
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError("no free port block")


class DemoTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def test_demo_request_goes_through(self) -> Any:
        """The demo starts server, agent and service, and its request gets the service's answer."""
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
        out, err, code = yield getProcessOutputAndValue(
            sys.executable,
            ["-m", "piko.demo", "--once", "--base-port", str(free_port_block(6))],
            env=dict(os.environ, PYTHONPATH=root),
            path=root,
            reactor=reactor,
        )
        self.assertEqual(code, 0, err.decode())
        self.assertIn(b"HTTP 200\nHello from the demo service behind Piko!", out)

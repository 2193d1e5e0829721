"""The ``piko server --workers`` launcher's pure parts: flags, worker configuration, binding."""

from __future__ import annotations

import socket

from twisted.trial.unittest import SynchronousTestCase

from piko.config import (
    SERVER_COMMAND,
    ConfigValidationError,
    ServerConfig,
    build_server_config,
    resolve_command,
)
from piko.server.workers import bind_shared, gossip_addrs, worker_config


def _server(argv: list[str]) -> ServerConfig:
    inv = resolve_command(SERVER_COMMAND, argv)
    return build_server_config(inv.parsed.values, environ={}, read=lambda path: "")


class WorkerConfigTests(SynchronousTestCase):
    def test_flag(self) -> None:
        """``--workers`` defaults to 1 (this process serves) and takes 0 (one per CPU)."""
        self.assertEqual(_server([]).workers, 1)
        self.assertEqual(_server(["--workers", "0"]).workers, 0)
        self.assertEqual(_server(["--workers", "4"]).workers, 4)

    def test_negative(self) -> None:
        """A negative worker count is a configuration error."""
        self.assertRaises(ConfigValidationError, _server, ["--workers", "-1"])

    def test_worker_config(self) -> None:
        """Each worker: own node id and gossip port, private ports, joins worker 0."""
        config = _server(
            [
                "--workers", "2", "--cluster.node-id", "n", "--cluster.join", "10.0.0.9:8003",
                "--proxy.bind-addr", "127.0.0.1:8000", "--proxy.advertise-addr", "x:1",
                "--cluster.gossip.bind-addr", "127.0.0.1:8003",
            ]
        )  # fmt: skip
        gossip = gossip_addrs(config.cluster.gossip.bind_addr, 2)
        self.assertEqual(gossip, ["127.0.0.1:8003", "127.0.0.1:8004"])
        first, second = (worker_config(config, i, gossip) for i in range(2))
        self.assertEqual((first.cluster.node_id, second.cluster.node_id), ("n-w0", "n-w1"))
        self.assertEqual(first.cluster.join, ("10.0.0.9:8003",))
        self.assertEqual(second.cluster.join, ("10.0.0.9:8003", "127.0.0.1:8003"))
        self.assertEqual(second.cluster.gossip.bind_addr, "127.0.0.1:8004")
        self.assertEqual((second.proxy.bind_addr, second.proxy.advertise_addr), ("127.0.0.1:0", ""))
        self.assertEqual(second.workers, 1)

    def test_free_gossip_ports(self) -> None:
        """Gossip port 0: each worker gets a different free port on the configured host."""
        gossip = gossip_addrs(":0", 2)
        self.assertEqual(len(set(gossip)), 2)
        self.assertTrue(all(addr.startswith(":") for addr in gossip))

    def test_bind_shared(self) -> None:
        """A shared socket listens, non-blocking and inheritable; endpoint strings are refused."""
        sock = bind_shared("127.0.0.1:0")
        self.addCleanup(sock.close)
        self.assertFalse(sock.getblocking())
        self.assertTrue(sock.get_inheritable())
        self.assertEqual(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN), 1)
        self.assertRaises(ValueError, bind_shared, "tcp:0")

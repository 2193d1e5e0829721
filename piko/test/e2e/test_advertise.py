"""
A node bound where no IP names it advertises this machine's address, found by the reactor's
resolver: ``socket.gethostbyname`` blocked the whole reactor while DNS answered.
"""

from __future__ import annotations

import socket
from typing import Any

from attrs import evolve
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks, succeed

from piko.test.e2e.harness import E2ETestCase, server_config


class AdvertiseTests(E2ETestCase):
    timeout = 30

    @inlineCallbacks
    def test_own_address_from_the_reactor_resolver(self) -> Any:
        """
        The admin port on a UNIX socket (no IP) advertises the address the reactor resolved.
        """
        asked: list[str] = []

        def blocking(name: str) -> str:
            raise AssertionError(f"socket.gethostbyname({name!r}) blocks the reactor")

        def resolve(name: str, timeout: Any = None) -> Deferred[str]:
            asked.append(name)
            return succeed("10.9.8.7")

        self.patch(socket, "gethostbyname", blocking)
        self.patch(reactor, "resolve", resolve)
        config = server_config()
        path = self.mktemp()
        config = evolve(config, admin=evolve(config.admin, bind_addr=f"unix:{path}"))
        service = yield self.start_service(config)
        self.assertEqual(asked, [socket.gethostname()])
        self.assertEqual(service.routes.node.admin_addr, "10.9.8.7:0")
        self.assertEqual(
            service.routes.node.proxy_addr, f"127.0.0.1:{self.port_of('proxy', service)}"
        )

    @inlineCallbacks
    def test_named_interfaces_resolve_nothing(self) -> Any:
        """Ports bound to 127.0.0.1 need no look-up at all."""
        asked: list[str] = []
        self.patch(reactor, "resolve", lambda name, timeout=None: asked.append(name))
        service = yield self.start_service(server_config())
        self.assertEqual(asked, [])
        self.assertEqual(service.own_host, "127.0.0.1")

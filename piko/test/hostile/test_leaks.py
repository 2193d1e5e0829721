# -*- test-case-name: piko.test.hostile.test_leaks -*-
"""
End to end on 127.0.0.1: a running node takes 2,000 hostile connections of
mixed kinds and is left as it was (file descriptors back at the baseline,
resident memory within a bound) and still serves a good request.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure

from piko.http.server import HTTPServerProtocol
from piko.mux.frames import HEADER
from piko.test.e2e.harness import E2ETestCase, reactor, wait_for_count
from piko.test.hostile._node import NamedHandler
from piko.test.hostile.test_http import BAD_REQUEST_LINES, SMUGGLING
from piko.test.ws.test_server import KEY, client_frame

TOTAL = 2000
BATCH = 50


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class _Hostile(Protocol):
    """Writes its bytes on connect and fires ``done`` when the server closes."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.done: Deferred[None] = Deferred()
        self.received = b""

    def connectionMade(self) -> None:
        self.transport.write(self.data)

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.done.callback(None)


def _upgrade(endpoint: str, extra: bytes = b"") -> bytes:
    return (
        b"GET /piko/v1/upstream/%s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\n"
        b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n%s\r\n"
    ) % (endpoint.encode(), extra)


class LeakTests(E2ETestCase):
    timeout = 120

    @inlineCallbacks
    def good_request(self) -> Any:
        response = yield self.request(b"GET /good HTTP/1.1\r\nHost: ep1.example.com\r\n\r\n")
        self.assertEqual(response.status, 200)
        self.assertEqual(response.body, b"ep1 GET /good ep1.example.com")

    @inlineCallbacks
    def test_thousands_of_bad_connections_leak_nothing(self) -> Any:
        """2,000 bad HTTP, WebSocket and yamux connections leave fds and memory flat."""
        yield self.start_server()
        handler = NamedHandler("ep1")
        yield self.listen(
            "ep1",
            Factory.forProtocol(lambda: HTTPServerProtocol(handler, reactor, header_timeout=None)),
        )
        yield wait_for_count(self.server, "ep1", 1)
        proxy, upstream = self.port_of("proxy"), self.port_of("upstream")
        key = b"Sec-WebSocket-Key: " + KEY.encode() + b"\r\n"
        kinds: list[tuple[int, bytes]] = [
            *((proxy, raw) for raw in SMUGGLING.values()),
            *((proxy, raw) for raw in BAD_REQUEST_LINES.values()),
            (proxy, b"GET / HTTP/1.1\r\nX-Big: " + b"a" * (2 << 20) + b"\r\n\r\n"),  # 431
            (upstream, _upgrade("bad")),  # no key: 400
            (upstream, _upgrade("bad", b"Sec-WebSocket-Version: 99\r\n" + key)),
            (upstream, _upgrade("bad", key) + client_frame(1, b"text")),
            (upstream, _upgrade("bad", key) + client_frame(2, HEADER.pack(9, 9, 0, 0, 0))),
            (upstream, _upgrade("bad", key) + b"\x82\x05hello"),  # unmasked
        ]
        yield self.good_request()
        baseline_fds, baseline_rss = _fds(), _rss()
        for start in range(0, TOTAL, BATCH):
            waits = []
            for i in range(start, start + BATCH):
                port, data = kinds[i % len(kinds)]
                protocol = _Hostile(data)
                endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
                yield connectProtocol(endpoint, protocol)
                waits.append(protocol.done)
            yield DeferredList(waits)
        yield self.good_request()
        # The last good request's connection is still open, both ends in this process: +2.
        # The hostile ones close on the next turns; a bounded wait.
        for _ in range(100):
            if _fds() <= baseline_fds + 2:
                break
            d: Deferred[None] = Deferred()
            reactor.callLater(0.01, d.callback, None)
            yield d
        self.assertLessEqual(_fds(), baseline_fds + 2)
        self.assertLess(_rss() - baseline_rss, 64 * 1024 * 1024)
        self.assertEqual(self.server.registry.endpoints(), {"ep1": 1})
        self.assertEqual(len(handler.seen), 2)

"""
Helpers for end-to-end tests: a server node on ephemeral loopback ports,
SDK upstreams, and a small raw HTTP client built on our own response reader.

Everything is started by the test and stopped by handle in ``addCleanup``;
every wait is on an event, bounded by trial's test timeout.
"""

from __future__ import annotations

import contextlib
from typing import Any

from attrs import evolve
from twisted.internet import reactor as global_reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from piko.client import Dialer, Upstream
from piko.config import ServerConfig
from piko.http.head import ResponseHead
from piko.http.parser import NEED_DATA, PAUSED, BodyChunk, HeadEvent, MessageEnd, ResponseReader
from piko.server.service import PikoServerService, make_server_service

reactor: Any = global_reactor


def server_config(*, upstream: dict[str, Any] | None = None, **proxy: Any) -> ServerConfig:
    """A config listening on ephemeral loopback ports; overrides for proxy (and upstream)."""
    config = ServerConfig()
    return evolve(
        config,
        proxy=evolve(config.proxy, bind_addr="127.0.0.1:0", **proxy),
        upstream=evolve(config.upstream, bind_addr="127.0.0.1:0", **(upstream or {})),
        admin=evolve(config.admin, bind_addr="127.0.0.1:0"),
        cluster=evolve(
            config.cluster,
            node_id="node-e2e",
            gossip=evolve(config.cluster.gossip, bind_addr="127.0.0.1:0"),
        ),
        grace_period=5.0,
    )


class Response:
    """A parsed response: status, headers and the whole body."""

    def __init__(self, head: ResponseHead, body: bytes) -> None:
        self.head = head
        self.status = head.status
        self.body = body

    def header(self, name: bytes) -> bytes | None:
        return self.head.get(name)


class RawHTTPClient(Protocol):
    """Sends raw request bytes and parses the responses that come back, in order."""

    def __init__(self) -> None:
        self.reader = ResponseReader()
        self.reader.expect(b"GET")
        self.responses: list[Response] = []
        self.waiting: list[Deferred[Response]] = []
        self.chunks: list[bytes] = []
        self._head: ResponseHead | None = None
        self._body = bytearray()
        self.on_chunk: Any = None
        self.keep_body = True
        self.closed: Deferred[None] = Deferred()

    def expect(self, method: bytes) -> None:
        self.reader.expect(method)

    def next_response(self) -> Deferred[Response]:
        if self.responses:
            d: Deferred[Response] = Deferred()
            d.callback(self.responses.pop(0))
            return d
        d = Deferred()
        self.waiting.append(d)
        return d

    def dataReceived(self, data: bytes) -> None:
        self.reader.feed(data)
        self._drain()

    def _drain(self) -> None:
        while True:
            event = self.reader.next_event()
            if event is NEED_DATA or event is PAUSED:
                return
            if isinstance(event, HeadEvent):
                assert isinstance(event.head, ResponseHead)
                self._head = event.head
                self._body = bytearray()
            elif isinstance(event, BodyChunk):
                if self.keep_body:
                    self._body += event.data
                if self.on_chunk is not None:
                    self.on_chunk(event.data)
            elif isinstance(event, MessageEnd):
                assert self._head is not None
                response = Response(self._head, bytes(self._body))
                self.reader.start_next()
                if self.waiting:
                    self.waiting.pop(0).callback(response)
                else:
                    self.responses.append(response)

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:  # noqa: B008
        self.reader.feed_eof()
        with contextlib.suppress(Exception):
            self._drain()
        for d in self.waiting:
            d.errback(reason)
        self.waiting = []
        self.closed.callback(None)


class E2ETestCase(TestCase):
    """Starts what a test needs and stops it by handle."""

    timeout: float = 60

    @inlineCallbacks
    def start_server(self, *, upstream: dict[str, Any] | None = None, **proxy: Any) -> Any:
        service = yield self.start_service(server_config(upstream=upstream, **proxy))
        self.server: PikoServerService = service
        return service

    @inlineCallbacks
    def start_service(self, config: ServerConfig) -> Any:
        """Start a node from ``config``; it is stopped (drained) at cleanup if still running."""
        service = make_server_service(config, reactor)
        service.startService()
        self.addCleanup(lambda: service.stopService() if service.running else None)
        yield service.started
        return service

    def start_cluster_node(
        self, node_id: str, join: tuple[str, ...] = (), **cluster: Any
    ) -> Deferred[PikoServerService]:
        """Start a cluster node joining ``join``; ``cluster`` overrides more ``cluster.*`` keys."""
        config = server_config()
        config = evolve(
            config,
            cluster=evolve(config.cluster, node_id=node_id, join=join, join_timeout=5.0, **cluster),
        )
        return self.start_service(config)

    def port_of(self, name: str, service: PikoServerService | None = None) -> int:
        service = service or self.server
        port: int = getattr(service.ports[name].getHost(), "port")  # noqa: B009
        return port

    def upstream(self, **kwargs: Any) -> Upstream:
        return Upstream(reactor, f"http://127.0.0.1:{self.port_of('upstream')}", **kwargs)

    @inlineCallbacks
    def listen(self, endpoint_id: str, factory: Any, **kwargs: Any) -> Any:
        port = yield self.upstream(**kwargs).listen(endpoint_id, factory)
        self.addCleanup(port.shutdown)
        return port

    def dialer(self) -> Dialer:
        return Dialer(reactor, f"http://127.0.0.1:{self.port_of('proxy')}")

    @inlineCallbacks
    def http_client(self, port: int | None = None) -> Any:
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port or self.port_of("proxy"))
        client = yield connectProtocol(endpoint, RawHTTPClient())
        self.addCleanup(lambda: client.transport.loseConnection() or client.closed)
        return client

    @inlineCallbacks
    def request(self, raw: bytes, port: int | None = None) -> Any:
        client = yield self.http_client(port)
        if raw.startswith(b"HEAD "):
            client.expect(b"HEAD")
        client.transport.write(raw)
        response = yield client.next_response()
        return response


def wait_for_count(service: PikoServerService, endpoint_id: str, count: int) -> Deferred[None]:
    """Fire once ``endpoint_id`` has ``count`` upstreams on ``service``."""
    d: Deferred[None] = Deferred()
    if service.registry.endpoints().get(endpoint_id, 0) == count:
        d.callback(None)
        return d

    def observe(endpoint: str, now: int) -> None:
        if endpoint == endpoint_id and now == count and not d.called:
            d.callback(None)

    service.registry.observe(observe)
    return d

# -*- test-case-name: piko.test.inspect.test_service -*-
"""
Serving the inspector on the agent's inspector address: ``127.0.0.1:4040`` by default.

Several agents on one host must not collide (Go Piko issue #160): when the port of a
``host:port`` address is taken, the next ones are tried (up to :data:`PORT_ATTEMPTS`), and
the URL actually served is logged (``inspector listening``, with ``url``).  A port of 0 takes
any free port.  An endpoint description (``tcp:4040:interface=...``, ``unix:...``) is
listened on as given.  A port that cannot be had does not stop the agent: the relay matters
more than its inspector, so the failure is logged as an error and the agent carries on.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.python.failure import Failure

from piko.config import (
    InspectConfig,
    is_endpoint_description,
    is_loopback_bind,
    join_host_port,
    listen_endpoint_description,
    split_host_port,
)
from piko.inspect.api import InspectorResource, InspectorSite

__all__ = ["PORT_ATTEMPTS", "InspectorService", "inspector_service"]

#: Ports tried from the configured one when it is taken.
PORT_ATTEMPTS = 20


class InspectorService(Service):
    """
    Listens on ``bind_addr`` (or the next free port) and serves ``site`` while running.

    :ivar port: the listening port, once listening.
    :ivar url: the URL served, once listening.
    :ivar listening: fires with the port (or fails) once the listen attempt is over.
    """

    log = Logger()

    def __init__(self, reactor: Any, bind_addr: str, site: InspectorSite) -> None:
        self.reactor = reactor
        self.bind_addr = bind_addr
        self.site = site
        self.port: IListeningPort | None = None
        self.url = ""
        self.listening: Deferred[IListeningPort] = Deferred()

    def _candidates(self) -> list[tuple[str, str]]:
        """``(address shown, endpoint description)`` to try, in order."""
        if is_endpoint_description(self.bind_addr):
            return [(self.bind_addr, self.bind_addr)]
        host, port = split_host_port(self.bind_addr)
        first = int(port)
        ports = [first] if first == 0 else range(first, min(first + PORT_ATTEMPTS, 65536))
        return [
            (
                join_host_port(host, str(p)),
                listen_endpoint_description(join_host_port(host, str(p))),
            )
            for p in ports
        ]

    def startService(self) -> None:
        """Listen on the first free candidate."""
        super().startService()
        self._try(self._candidates(), None)

    def _try(self, candidates: list[tuple[str, str]], last: Failure | None) -> None:
        if not candidates:
            assert last is not None
            self.log.error(
                "inspector: failed to listen; the agent runs without it",
                addr=self.bind_addr,
                error=str(last.value),
            )
            self.listening.errback(last)
            return
        (shown, description), rest = candidates[0], candidates[1:]
        d = serverFromString(self.reactor, description).listen(self.site)

        def listening(port: IListeningPort) -> None:
            if not self.running:
                port.stopListening()
                return
            self.port = port
            self.url = _url(shown, port)
            self.log.info("inspector listening", url=self.url, addr=shown)
            self.listening.callback(port)

        def failed(reason: Failure) -> None:
            if reason.check(CannotListenError) and rest:
                self._try(rest, reason)
            else:
                self._try([], reason)

        d.addCallbacks(listening, failed)

    def stopService(self) -> Deferred[None]:
        """Stop listening and close the inspector's open connections (live streams)."""
        super().stopService()
        port, self.port = self.port, None
        if port is None:
            return succeed(None)
        for protocol in list(getattr(self.site, "connections", ())):
            protocol.transport.loseConnection()
        d = port.stopListening()
        return d if d is not None else succeed(None)


def _url(shown: str, port: IListeningPort) -> str:
    address = port.getHost()
    actual = getattr(address, "port", None)
    if actual is None:
        return shown
    try:
        host, _ = split_host_port(shown)
    except ValueError:
        host = getattr(address, "host", "") or "127.0.0.1"
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    return "http://" + join_host_port(host, str(actual)) + "/"


def inspector_service(
    config: InspectConfig,
    reactor: Any,
    inspector: Any,
    *,
    verifier: Any = None,
    proxy_url: str = "http://localhost:8000",
) -> InspectorService:
    """
    The service serving ``inspector`` as ``config`` says (the agent's).

    :param verifier: checks bearer tokens on the API (from ``inspect.auth``), if any.
    :param proxy_url: the Piko server's proxy URL, for ``curl`` exports.
    """
    resource = InspectorResource(
        inspector,
        loopback_only=is_loopback_bind(config.bind_addr),
        verifier=verifier,
        proxy_url=proxy_url,
    )
    return InspectorService(reactor, config.bind_addr, InspectorSite(resource))

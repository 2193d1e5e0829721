# -*- test-case-name: piko.test.inspect.test_capture -*-
"""
:class:`Inspector`: one agent's (or SDK program's) capture, and its replays.

It is the :class:`~piko.inspect.capture.IListenerInspector` the agent's listeners are given,
owns the :class:`~piko.inspect.store.CaptureStore`, remembers each HTTP listener's capturing
handler (replays go through it) and the counters of connections still open.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IProtocol, IReactorTime
from zope.interface import implementer

from piko.http.observe import CountedTunnel
from piko.http.server import IRequestHandler
from piko.inspect.capture import CapturingHandler, IListenerInspector, counted
from piko.inspect.replay import Modifications, ReplayError, build_request, replay
from piko.inspect.store import (
    DEFAULT_BODY_CAP,
    DEFAULT_BUDGET,
    CaptureStore,
    ConnectionRecord,
    ExchangeRecord,
)

__all__ = ["Inspector"]


@implementer(IListenerInspector)
class Inspector:
    """
    Captures what the listeners it wraps relay, and replays captured requests.

    :param clock: the reactor's clock (durations, the replay's relay).
    :param budget: bytes all records may hold.
    :param body_cap: bytes kept of each body.
    :param wall: wall-clock seconds, for the start times shown.
    """

    def __init__(
        self,
        clock: IReactorTime,
        *,
        budget: int = DEFAULT_BUDGET,
        body_cap: int = DEFAULT_BODY_CAP,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.clock = clock
        self.wall = wall
        self.store = CaptureStore(budget=budget, body_cap=body_cap, clock=wall)
        self.handlers: dict[str, IRequestHandler] = {}
        #: Counters of connections still open, by record id.
        self.live: dict[str, CountedTunnel] = {}

    # -- IListenerInspector

    def wrap_http(self, handler: IRequestHandler, endpoint_id: str) -> IRequestHandler:
        """Capture every exchange ``handler`` answers for ``endpoint_id``."""
        wrapped = CapturingHandler(
            handler, endpoint_id, self.store, self.clock, self.wall, self._websocket
        )
        self.handlers[endpoint_id] = wrapped
        return wrapped

    def wrap_tcp(self, protocol: IProtocol, endpoint_id: str, target: str) -> IProtocol:
        """Record a TCP connection to ``target``, with the bytes it carries."""
        record = ConnectionRecord(
            id=self.store.new_id("conn"),
            kind="tcp",
            endpoint_id=endpoint_id,
            started=self.wall(),
            target=target,
        )
        return counted(self.store, record, protocol, self.wall, self.live)

    def _websocket(self, exchange: ExchangeRecord, protocol: Any) -> Any:
        exchange.upgraded = True
        record = ConnectionRecord(
            id=self.store.new_id("conn"),
            kind="websocket",
            endpoint_id=exchange.endpoint_id,
            started=self.wall(),
            remote_addr=exchange.remote_addr,
            target=exchange.target.decode("latin-1"),
            exchange_id=exchange.id,
        )
        return counted(self.store, record, protocol, self.wall, self.live)

    # -- replay

    def replay(
        self, record_id: str, changes: Modifications | None = None
    ) -> Deferred[ExchangeRecord]:
        """
        Send the request of exchange ``record_id`` to its local service again (changed as
        ``changes`` says); fires with the replay's record once answered.

        :raises KeyError: no such exchange is kept.
        :raises ReplayError: it cannot be replayed (see
            :func:`~piko.inspect.replay.build_request`; an upgrade; a listener gone).
        """
        record = self.store.get(record_id)
        if not isinstance(record, ExchangeRecord):
            raise KeyError(record_id)
        if record.upgraded:
            raise ReplayError("a WebSocket upgrade cannot be replayed")
        handler = self.handlers.get(record.endpoint_id)
        if handler is None:
            raise ReplayError(f"no listener for endpoint {record.endpoint_id!r}")
        request = build_request(record, changes)
        return replay(handler, self.clock, record, request)

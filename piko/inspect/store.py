# -*- test-case-name: piko.test.inspect.test_store -*-
"""
The inspector's memory: captured HTTP exchanges and connection records, bounded in bytes.

Every record is charged what it holds (heads and the captured parts of bodies, plus a fixed
overhead), as it is captured, and once the total passes the budget (ngrok's
``inspect_db_size``) the oldest records are dropped, in arrival order, until it fits again.
An exchange still under way can be dropped too: its capture goes on into an object nobody
can reach any more, charged nowhere, and freed when the exchange ends.  So the memory the
inspector holds stays within the budget (plus one body cap per exchange in flight) whatever
passes through the agent.

Bodies are kept up to a cap each (default 64 KiB): :class:`BodyCapture` keeps the first
``cap`` bytes, counts all of them, and says whether it was truncated.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

from attrs import define

from piko.http.head import header_get

__all__ = [
    "DEFAULT_BODY_CAP",
    "DEFAULT_BUDGET",
    "RECORD_OVERHEAD",
    "BodyCapture",
    "CaptureStore",
    "ConnectionRecord",
    "ExchangeRecord",
    "parse_header_lines",
]

#: Bytes of each body kept (ngrok keeps about as much for display).
DEFAULT_BODY_CAP = 64 * 1024
#: Bytes all records may hold together (ngrok's ``inspect_db_size`` default, 50 MB).
DEFAULT_BUDGET = 50 * 1000 * 1000
#: What a record costs besides its heads and bodies (the objects themselves), for the budget.
RECORD_OVERHEAD = 1024


class BodyCapture:
    """
    The first ``cap`` bytes of a body, and its full length.

    :ivar size: bytes seen, kept or not.
    """

    __slots__ = ("cap", "data", "size")

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.data = bytearray()
        self.size = 0

    def append(self, chunk: bytes) -> int:
        """Count ``chunk`` and keep what fits under the cap; returns the bytes kept."""
        self.size += len(chunk)
        room = self.cap - len(self.data)
        if room <= 0:
            return 0
        kept = chunk[:room] if len(chunk) > room else chunk
        self.data += kept
        return len(kept)

    @property
    def truncated(self) -> bool:
        """Whether bytes were seen beyond the cap."""
        return self.size > len(self.data)

    def to_json(self) -> dict[str, Any]:
        """Length, kept length and the truncated flag (the bytes themselves go in ``raw``)."""
        return {"size": self.size, "captured": len(self.data), "truncated": self.truncated}


def parse_header_lines(block: bytes) -> tuple[tuple[bytes, bytes], ...]:
    """``(name, value)`` pairs of header lines (a head's, after its first line)."""
    pairs = []
    for line in block.split(b"\n"):
        name, sep, value = line.partition(b":")
        if sep and name and not name[:1].isspace():
            pairs.append((name.strip(), value.strip()))
    return tuple(pairs)


@define(eq=False)
class ExchangeRecord:
    """
    One HTTP exchange the agent relayed (or the inspector replayed).

    :ivar id: unique in this agent's run (``ngrok``-like, e.g. ``req_0001a``).
    :ivar endpoint_id: the listener's endpoint (ngrok's ``tunnel_name``).
    :ivar started: wall-clock seconds when the request head arrived.
    :ivar ended: wall-clock seconds when the response completed, or None while under way.
    :ivar method: the request method.
    :ivar target: the request target as the client sent it.
    :ivar version: ``1.1`` or ``1.0``.
    :ivar raw_head: the request head bytes as received (its ``X-Forwarded-For`` names the
        client, see :attr:`remote_addr`).
    :ivar status: the response status (0 before a head, or if the exchange was cut).
    :ivar response_lines: the response header lines as relayed.
    :ivar error: why the agent answered itself (502, 504) or the exchange broke.
    :ivar replay_of: the id of the exchange this one replays, if any.
    :ivar upgraded: the connection was handed over (a WebSocket): see the connection record.
    """

    id: str
    endpoint_id: str
    started: float
    method: bytes
    target: bytes
    version: bytes
    raw_head: bytes
    request_body: BodyCapture
    response_body: BodyCapture
    ended: float | None = None
    status: int = 0
    response_lines: bytes = b""
    error: str = ""
    replay_of: str = ""
    upgraded: bool = False
    cost: int = 0
    #: Called once with the record when it completes (the replay waiting for its answer).
    waiters: list[Callable[[ExchangeRecord], None]] | None = None

    # A record holds bytes, not tuples of headers: thousands of records kept must not be
    # thousands of objects more for the garbage collector to walk on every full collection.

    @property
    def request_headers(self) -> tuple[tuple[bytes, bytes], ...]:
        """The request headers in wire order and casing, read from :attr:`raw_head`."""
        return parse_header_lines(self.raw_head.partition(b"\n")[2])

    @property
    def response_headers(self) -> tuple[tuple[bytes, bytes], ...]:
        """The response headers as relayed."""
        return parse_header_lines(self.response_lines)

    @property
    def complete(self) -> bool:
        """Whether the response is over."""
        return self.ended is not None

    @property
    def remote_addr(self) -> str:
        """
        The client's address: the last ``X-Forwarded-For`` hop, the one the Piko server in
        front appended (worked out when shown, not on the relay's path).
        """
        forwarded = header_get(self.request_headers, b"x-forwarded-for")
        if not forwarded:
            return ""
        return forwarded.decode("latin-1").rsplit(",", 1)[-1].strip()

    @property
    def duration(self) -> float:
        """Seconds from request head to response end (0 while under way)."""
        return 0.0 if self.ended is None else self.ended - self.started


@define(eq=False)
class ConnectionRecord:
    """
    A TCP connection or WebSocket (upgraded HTTP) connection the agent relayed.

    :ivar kind: ``tcp`` or ``websocket``.
    :ivar bytes_in: from the client to the local service.
    :ivar bytes_out: from the local service to the client.
    :ivar exchange_id: for a WebSocket, the HTTP exchange that upgraded.
    """

    id: str
    kind: str
    endpoint_id: str
    started: float
    remote_addr: str = ""
    target: str = ""
    exchange_id: str = ""
    ended: float | None = None
    bytes_in: int = 0
    bytes_out: int = 0
    cost: int = RECORD_OVERHEAD

    @property
    def duration(self) -> float:
        """Seconds open so far (or in all, once closed)."""
        return 0.0 if self.ended is None else self.ended - self.started


Record = ExchangeRecord | ConnectionRecord


class CaptureStore:
    """
    Holds records newest last, within ``budget`` bytes, and tells subscribers what changed.

    :param budget: bytes all records may hold together.
    :param body_cap: bytes kept of each body.
    :param clock: wall-clock seconds (``time.time``; injected by tests).
    """

    def __init__(
        self,
        *,
        budget: int = DEFAULT_BUDGET,
        body_cap: int = DEFAULT_BODY_CAP,
        clock: Callable[[], float],
    ) -> None:
        self.budget = budget
        self.body_cap = body_cap
        self.clock = clock
        self.used = 0
        #: Records dropped to keep within the budget, since start.
        self.evicted = 0
        self._records: OrderedDict[str, Record] = OrderedDict()
        self._ids = itertools.count(1)
        self._subscribers: list[Callable[[str, Record | None], None]] = []

    def __len__(self) -> int:
        return len(self._records)

    def new_id(self, prefix: str) -> str:
        """A fresh id, sortable by arrival within a run."""
        return f"{prefix}_{next(self._ids):08x}"

    # -- adding and charging

    def add(self, record: Record) -> None:
        """Keep ``record`` (newest), charging its current cost, and announce it."""
        self._records[record.id] = record
        self.used += record.cost
        self._evict(keep=record.id)
        self._publish("started", record)

    def charge(self, record: Record, amount: int) -> None:
        """``record`` holds ``amount`` more bytes (if it is still kept)."""
        record.cost += amount
        if record.id in self._records:
            self.used += amount
            if self.used > self.budget:
                self._evict(keep=record.id)

    def completed(self, record: Record) -> None:
        """``record`` is over: announce it."""
        self._publish("completed", record)

    def _evict(self, keep: str) -> None:
        records = self._records
        while self.used > self.budget:
            # Oldest first; the record being charged stays (alone over budget, it is all
            # there is to show).
            victim = next((k for k in records if k != keep), None)
            if victim is None:
                break
            self.used -= records.pop(victim).cost
            self.evicted += 1

    # -- reading

    def get(self, record_id: str) -> Record | None:
        """The record called ``record_id``, if still kept."""
        return self._records.get(record_id)

    def exchanges(self) -> Iterator[ExchangeRecord]:
        """HTTP exchanges, newest first."""
        for record in reversed(self._records.values()):
            if isinstance(record, ExchangeRecord):
                yield record

    def connections(self) -> Iterator[ConnectionRecord]:
        """Connection records, newest first."""
        for record in reversed(self._records.values()):
            if isinstance(record, ConnectionRecord):
                yield record

    def clear(self, kind: type | None = None) -> None:
        """Forget every record (of ``kind``, if given) and announce it."""
        if kind is None:
            self._records.clear()
            self.used = 0
        else:
            for key in [k for k, r in self._records.items() if isinstance(r, kind)]:
                self.used -= self._records.pop(key).cost
        self._publish("cleared", None)

    # -- subscribers (the live stream)

    def subscribe(self, callback: Callable[[str, Record | None], None]) -> Callable[[], None]:
        """Call ``callback(event, record)`` on every change; returns the unsubscribe."""
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    def _publish(self, event: str, record: Record | None) -> None:
        for callback in list(self._subscribers):
            callback(event, record)

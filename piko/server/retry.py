# -*- test-case-name: piko.test.server.test_retry -*-
"""
Sending a request again when its upstream died before answering.

A request relayed to a local upstream (a yamux stream to an agent) or to
another node (a connection to its proxy port) can lose that upstream before a
single byte of the response came back: the agent's connection drops, the
other node is killed.  Go Piko answers 502 ``upstream unreachable`` then.  We
send the request again when that is safe, and answer the same 502 only when
it is not, or when nothing else can take it:

* a request that was **never written** to the failed upstream (the node
  refused the connection, the stream could not be opened) is always sent
  again: nothing of it reached anyone;
* a request that **was written** is sent again only if its method is
  idempotent (RFC 9110 §9.2.2: ``GET``, ``HEAD``, ``OPTIONS``, ``TRACE``,
  ``PUT``, ``DELETE``), it is not an upgrade, and every body byte sent so far
  is still held here to send again: requests with no body, and bodies of at
  most :data:`RETRY_BODY_LIMIT` (64 KiB), which are kept in memory while the
  request is in flight (a larger ``Content-Length`` is never held; a chunked
  body is dropped from memory, and the request stops being retryable, once it
  passes the limit).  Any other written request, a ``POST`` above all, may
  have reached the service, so it gets its 502 as before;
* a failure after any response byte, a parse error and the ``proxy.timeout``
  504 are never retried.

The failed upstream (the agent session, or the node) is not tried again for
this request.  The next attempt goes to whatever serves the endpoint now:
a local upstream first, else another node per gossip (one hop, as the first
attempt).  When there is none yet (the agents of a killed node are still
reconnecting), the request waits for the endpoint to get an upstream, here or,
per gossip, on another node, up to :data:`RETRY_WAIT` seconds from the first time
it has to wait (and never past ``proxy.timeout`` from its arrival), then gets its
502.  A request is tried
:data:`MAX_ATTEMPTS` times at most.

The body is replayed from memory, so the request's client sends it once and
sees one answer: the one of the attempt that got a response.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Hashable
from collections.abc import Set as AbstractSet
from functools import partial
from typing import Any

from attrs import frozen
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from piko.http import errors
from piko.http.head import RequestHead
from piko.http.observe import copy_request_attributes, forward_attribute
from piko.http.proxy import IUpstreamConnector, ProxyExchange
from piko.http.rewrite import BodyFraming
from piko.http.server import IRequestReceiver, IServerExchange

#: Body bytes of a request held in memory so that it can be sent again (per request).
RETRY_BODY_LIMIT = 64 * 1024
#: Attempts per request, the first included.
MAX_ATTEMPTS = 4
#: Seconds a request may wait in all for its endpoint to have an upstream again.  Agents of a
#: killed node reconnect to another one in well under a second (``docs/performance.md``,
#: the chaos run); 5 s is the failover bound the project holds itself to.
RETRY_WAIT = 5.0
#: Methods that may be sent twice (RFC 9110 §9.2.2).
IDEMPOTENT_METHODS = frozenset((b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"))


@frozen
class NodeKey:
    """Names another node among the upstreams a request's failed attempts exclude."""

    id: str


@frozen
class Route:
    """
    One way to a request's endpoint.

    :ivar key: what a failure of this route excludes for the rest of the request: the local
        upstream session, or a :class:`NodeKey`.
    :ivar connector: gives the upstream connection.
    :ivar rewrite: builds the upstream request head (as :class:`ProxyExchange` takes it).
    """

    key: Hashable
    connector: IUpstreamConnector
    rewrite: Callable[[RequestHead, BodyFraming], bytes]


#: Gives a route to the endpoint avoiding the excluded keys, or ``None`` when there is none now.
Picker = Callable[[AbstractSet[Hashable]], "Route | None"]


class UpstreamWaiters:
    """
    Requests waiting for an endpoint to get an upstream again, woken on the next change.

    Fed by the registry's count observer (:meth:`endpoint_changed`) and the node table's
    (:meth:`cluster_changed`, which says nothing of which endpoint changed, so it wakes
    every waiter to look again).  A waiter is woken once, on the next reactor turn (not
    inside the registry or gossip code that reported the change), and waits again if it
    still finds nothing.

    :param clock: schedules the wake-ups.
    """

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        self._waiting: dict[str, dict[int, Callable[[], object]]] = {}
        self._tokens = itertools.count()

    def __len__(self) -> int:
        return sum(len(waiters) for waiters in self._waiting.values())

    def wait(self, endpoint_id: str, wake: Callable[[], object]) -> Callable[[], None]:
        """
        Call ``wake()`` once, after the next change that may give ``endpoint_id`` an upstream.

        :return: cancels the wait.
        """
        token = next(self._tokens)
        self._waiting.setdefault(endpoint_id, {})[token] = wake

        def cancel() -> None:
            waiters = self._waiting.get(endpoint_id)
            if waiters is not None:
                waiters.pop(token, None)
                if not waiters:
                    del self._waiting[endpoint_id]

        return cancel

    def endpoint_changed(self, endpoint_id: str, count: int) -> None:
        """A local upstream count changed (the registry's observer)."""
        if count > 0:
            waiters = self._waiting.pop(endpoint_id, None)
            if waiters:
                self._wake(waiters.values())

    def cluster_changed(self, _: object = None) -> None:
        """The node table changed (its observer): every waiter looks again."""
        if self._waiting:
            waiting, self._waiting = self._waiting, {}
            for waiters in waiting.values():
                self._wake(waiters.values())

    def _wake(self, wakes: Any) -> None:
        for wake in list(wakes):
            self.clock.callLater(0, wake)


class _AttemptExchange:
    """
    The downstream exchange as one attempt sees it.

    Its body goes through the :class:`RetryingRelay` (which holds it for a replay), and once
    the attempt failed and was retried, what it still does to the exchange's flow control is
    ignored.  Everything else is the exchange's own.
    """

    def __init__(self, relay: RetryingRelay, exchange: IServerExchange) -> None:
        self._relay = relay
        self._exchange = exchange
        self.live = True
        copy_request_attributes(self, exchange)
        # Read for every response chunk (its cork): kept here rather than forwarded each time.
        self.transport = exchange.transport

    def __getattr__(self, name: str) -> Any:
        return forward_attribute(self, self._exchange, name)

    def set_receiver(self, receiver: IRequestReceiver) -> None:
        if self.live:
            self._relay._attach(receiver)

    def pause_body(self) -> None:
        if self.live:
            self._exchange.pause_body()

    def resume_body(self) -> None:
        if self.live:
            self._exchange.resume_body()

    def register_producer(self, producer: Any) -> None:
        if self.live:
            self._exchange.register_producer(producer)

    def unregister_producer(self) -> None:
        if self.live:
            self._exchange.unregister_producer()


@implementer(IRequestReceiver)
class RetryingRelay:
    """
    Relays one request through :class:`ProxyExchange` attempts, retrying by the module's rules.

    It is the exchange's body receiver once the first attempt wrote the request, holds the
    body for a replay while it may, and passes it to the current attempt.

    :param exchange: the downstream request.
    :param pick: gives the next route, skipping the keys of failed attempts.
    :param clock: for the timeouts and the next turn.
    :param endpoint_id: what the request waits for when no route is left.
    :param timeout: ``proxy.timeout``: every attempt's 504 bound counts from the request's
        arrival, and no wait runs past it; ``None`` for none.
    :param waiters: where to wait for the endpoint; ``None``: give up at once instead.
    :param wait: seconds the request may wait, from the first time it has to
        (:data:`RETRY_WAIT`).
    :param max_attempts: attempts in all (:data:`MAX_ATTEMPTS`).
    :param body_limit: body bytes held for a replay (:data:`RETRY_BODY_LIMIT`).
    """

    log = Logger()

    def __init__(
        self,
        exchange: IServerExchange,
        pick: Picker,
        clock: IReactorTime,
        *,
        endpoint_id: str,
        timeout: float | None,
        waiters: UpstreamWaiters | None = None,
        wait: float = RETRY_WAIT,
        max_attempts: int = MAX_ATTEMPTS,
        body_limit: int = RETRY_BODY_LIMIT,
    ) -> None:
        self.exchange = exchange
        self.pick = pick
        self.clock = clock
        self.endpoint_id = endpoint_id
        self.timeout = timeout or None
        self.waiters = waiters
        self.max_attempts = max_attempts
        self.body_limit = body_limit
        now = clock.seconds()
        self.deadline = now + self.timeout if self.timeout is not None else None
        self.wait = wait
        self._wait_until: float | None = None
        self.attempts = 0
        self.excluded: set[Hashable] = set()
        framing = exchange.framing
        holdable = (
            exchange.head.method in IDEMPOTENT_METHODS
            and not exchange.upgrade
            and (framing.chunked or (framing.length or 0) <= body_limit)
        )
        #: The body so far, while every byte of it is held (else ``None``: no replay).
        self._held: list[bytes] | None = [] if holdable else None
        self._held_size = 0
        self._consumed = False
        self._body_ended = False
        self._paused = False
        self._finished = False
        self._view: _AttemptExchange | None = None
        self._receiver: IRequestReceiver | None = None
        self._next_call: IDelayedCall | None = None
        self._give_up_call: IDelayedCall | None = None
        self._cancel_wait: Callable[[], None] | None = None

    @property
    def replayable(self) -> bool:
        """Whether the request can be sent again: none of it was read, or all of it is held."""
        return not self._consumed or self._held is not None

    def start(self, route: Route) -> None:
        """Send the request by ``route`` (the caller picked it: it answers when there is none)."""
        self._attempt(route)

    # -- attempts

    def _attempt(self, route: Route) -> None:
        self.attempts += 1
        timeout = self.timeout
        if self.deadline is not None:
            timeout = self.deadline - self.clock.seconds()
            if timeout <= 0:
                self._answer(errors.upstream_timeout)
                return
        view = self._view = _AttemptExchange(self, self.exchange)
        proxy = ProxyExchange(
            view,  # type: ignore[arg-type]
            route.connector,
            self.clock,
            route.rewrite,
            timeout=timeout,
            retry=partial(self._failed, view, route),
        )
        proxy.start()

    def _failed(self, view: _AttemptExchange, route: Route, written: bool) -> bool:
        """An attempt failed before any response byte: retry (``True``) or let it answer."""
        if view is not self._view or self._finished or not self.replayable:
            return False
        if self.attempts >= self.max_attempts:
            self.log.warn(
                "upstream failed before answering; attempts exhausted",
                endpoint_id=self.endpoint_id,
                attempts=self.attempts,
            )
            return False
        view.live = False
        self.exchange.unregister_producer()
        self._receiver = None
        if self._consumed and not self._body_ended and not self._paused:
            # Hold the rest of the body in the client's socket until the next attempt.
            self._paused = True
            self.exchange.pause_body()
        self.excluded.add(route.key)
        self.log.info(
            "upstream failed before answering; retrying",
            endpoint_id=self.endpoint_id,
            attempt=self.attempts,
            written=written,
        )
        self._next_call = self.clock.callLater(0, self._next)
        return True

    def _next(self) -> None:
        self._next_call = None
        if self._finished:
            return
        route = self.pick(self.excluded)
        if route is not None:
            self._attempt(route)
            return
        if self.waiters is None:
            self._answer(errors.upstream_unreachable)
            return
        if self._give_up_call is None:
            if self._wait_until is None:
                self._wait_until = self.clock.seconds() + self.wait
            until = self._wait_until
            if self.deadline is not None:
                until = min(until, self.deadline)
            self._give_up_call = self.clock.callLater(
                max(0.0, until - self.clock.seconds()), self._waited_out
            )
        self._cancel_wait = self.waiters.wait(self.endpoint_id, self._woken)

    def _woken(self) -> None:
        self._cancel_wait = None
        if self._finished:
            return
        route = self.pick(self.excluded)
        if route is None:
            assert self.waiters is not None
            self._cancel_wait = self.waiters.wait(self.endpoint_id, self._woken)
            return
        self._stop_waiting()
        self._attempt(route)

    def _waited_out(self) -> None:
        self._give_up_call = None
        self.log.warn(
            "no upstream came back for a retried request",
            endpoint_id=self.endpoint_id,
            attempts=self.attempts,
        )
        self._answer(errors.upstream_unreachable)

    def _stop_waiting(self) -> None:
        if self._cancel_wait is not None:
            self._cancel_wait()
            self._cancel_wait = None
        if self._give_up_call is not None:
            if self._give_up_call.active():
                self._give_up_call.cancel()
            self._give_up_call = None

    def _answer(self, build: Callable[..., bytes]) -> None:
        """Give up: answer as the failed attempt would have."""
        self._end()
        self.exchange.respond(build)

    def _end(self) -> None:
        self._finished = True
        self._held = None
        self._stop_waiting()
        if self._next_call is not None and self._next_call.active():
            self._next_call.cancel()
        self._next_call = None

    # -- the body, from the exchange

    def _attach(self, receiver: IRequestReceiver) -> None:
        """The current attempt wrote the request head and takes the body now."""
        self._receiver = receiver
        if not self._consumed:
            self._consumed = True
            self.exchange.set_receiver(self)
            return
        for data in self._held or ():
            receiver.body_data(data)
        if self._body_ended:
            receiver.body_end()
        elif self._paused:
            self._paused = False
            self.exchange.resume_body()

    def body_data(self, data: bytes) -> None:
        """Hold ``data`` while the body fits, and pass it to the current attempt."""
        if self._finished:
            return
        held = self._held
        if held is not None:
            self._held_size += len(data)
            if self._held_size > self.body_limit:
                self._held = None
            else:
                held.append(data)
        if self._receiver is not None:
            self._receiver.body_data(data)

    def body_end(self) -> None:
        """The whole body arrived."""
        self._body_ended = True
        if self._receiver is not None and not self._finished:
            self._receiver.body_end()

    def connection_lost(self, reason: Failure) -> None:
        """The client went away: stop waiting, and tell the current attempt."""
        receiver = self._receiver
        self._end()
        if receiver is not None:
            receiver.connection_lost(reason)

# -*- test-case-name: piko.test.policy.test_handler -*-
"""
Applying policies on the proxy port, before routing or forwarding.

:class:`PolicyHandler` wraps the port's :class:`~piko.http.server.IRequestHandler`
(the HTTP front end is unchanged): it finds the request's endpoint the way the
proxy does (``/_piko/v1/tcp/<id>``, ``x-piko-endpoint``, the ``Host`` label),
takes the first matching policy and checks, in this order (cheap and
brute-force-limiting checks before the costly password hash):

1. the client address (``X-Forwarded-For`` from trusted proxies only) against
   the IP rules: ``403``, or ``400`` for a malformed ``X-Forwarded-For``;
2. the rate limit: ``429`` with ``Retry-After``;
3. basic auth: ``401`` with ``WWW-Authenticate``; on success the
   ``Authorization`` header is removed before the request goes on;
4. (HTTP only) a declared body over ``max_body_bytes``: ``413``;
5. (HTTP only) ``max_concurrent`` requests of the endpoint in flight: ``503``.

A request that passes goes to the wrapped handler, through a
:class:`PolicyExchange` when the policy edits headers, counts a chunked
body as it streams (cut with ``413`` once over the limit) or holds a
concurrency slot.  On the TCP route the first three apply to the upgrade
(rate limits count connection opens); headers and limits do not.

Requests another node forwarded here (``from_node``) were checked by the node
they entered; they pass unchecked, so limits are not counted twice.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from piko.http.head import (
    RequestHead,
    endpoint_from_path,
    endpoint_id_from_request,
    header_values,
    make_request_head,
)
from piko.http.observe import copy_request_attributes, forward_attribute
from piko.http.server import IRequestHandler, IRequestReceiver, IServerExchange
from piko.policy import responses
from piko.policy.buckets import retry_after
from piko.policy.engine import (
    ACTION_BASIC_AUTH,
    ACTION_BODY_SIZE,
    ACTION_CONCURRENCY,
    ACTION_IP,
    ACTION_RATE_LIMIT,
    Policy,
    PolicySet,
)
from piko.policy.ipfilter import MALFORMED, client_address, parse_ip
from piko.policy.limits import InFlight
from piko.policy.metrics import PolicyMetrics

TCP_PREFIX = b"/_piko/v1/tcp/"
TCP_ROUTE = "/_piko/v1/tcp/"

_AUTHORIZATION = frozenset({b"authorization"})


class BodyTooLarge(Exception):
    """A streamed request body went over the policy's ``max_body_bytes``."""


@implementer(IRequestHandler)
class PolicyHandler:
    """
    Applies a :class:`~piko.policy.engine.PolicySet` in front of ``handler``.

    :param handler: the proxy port's handler.
    :param clock: the rate limits' clock.
    :param policies: the policies now in force; :attr:`policies` is replaced
        whole by a reload.
    :param metrics: counts refusals; ``None`` counts nothing.
    :param from_node: tells a request forwarded by another node of the cluster.
    """

    log = Logger()

    def __init__(
        self,
        handler: IRequestHandler,
        clock: IReactorTime,
        policies: PolicySet | None = None,
        *,
        metrics: PolicyMetrics | None = None,
        from_node: Callable[[IServerExchange], bool] | None = None,
    ) -> None:
        self.handler = handler
        self.clock = clock
        self.policies = policies if policies is not None else PolicySet()
        self.metrics = metrics
        self.from_node = from_node
        self.in_flight = InFlight()

    def request_received(self, exchange: IServerExchange) -> None:
        """Check the request against its endpoint's policy, then pass it on or refuse it."""
        policies = self.policies
        if not policies:
            self.handler.request_received(exchange)
            return
        head = exchange.head
        tcp = False
        endpoint_id: str | None = None
        if head.method == b"GET" and head.target.startswith(TCP_PREFIX):
            path = urlsplit(head.target.decode("latin-1")).path
            endpoint_id = endpoint_from_path(path, TCP_ROUTE)
            tcp = endpoint_id is not None
        if endpoint_id is None:
            endpoint_id = endpoint_id_from_request(head.headers)
        policy = policies.match(endpoint_id) if endpoint_id is not None else None
        if policy is None or endpoint_id is None:
            self.handler.request_received(exchange)
            return
        if self.from_node is not None and self.from_node(exchange):
            self.handler.request_received(exchange)
            return
        self._apply(policy, exchange, head, endpoint_id, tcp)

    def _refuse(
        self,
        exchange: IServerExchange,
        policy: Policy,
        action: str,
        endpoint_id: str,
        build: responses.Builder,
    ) -> None:
        if self.metrics is not None:
            self.metrics.refused(policy.name, action)
        note = getattr(exchange, "note_policy", None)
        if note is not None:
            note(policy.name, action)
        self.log.debug(
            "request refused by policy",
            policy=policy.name,
            action=action,
            endpoint_id=endpoint_id,
        )
        exchange.respond(build)

    def _apply(
        self,
        policy: Policy,
        exchange: IServerExchange,
        head: RequestHead,
        endpoint_id: str,
        tcp: bool,
    ) -> None:
        client: Any = None
        client_key = ""
        if policy.needs_client:
            peer = str(getattr(exchange.transport.getPeer(), "host", ""))
            forwarded: list[bytes] = []
            if policy.trusted_proxies:
                forwarded = header_values(head.headers, b"x-forwarded-for")
            client = client_address(peer, forwarded, policy.trusted_proxies)
            # The bucket key: the peer's own text when it is the client (str() of an
            # address object costs microseconds per request).
            client_key = peer if client is parse_ip(peer) else str(client)
            if client == MALFORMED:
                self._refuse(exchange, policy, ACTION_IP, endpoint_id, responses.BAD_FORWARDED_FOR)
                return
            rules = policy.ip_rules
            if rules is not None and not rules.permits(client):
                self._refuse(exchange, policy, ACTION_IP, endpoint_id, responses.FORBIDDEN)
                return
        limit = policy.rate_limit
        if limit is not None and policy.buckets is not None:
            if limit.header:
                key = (head.get(limit.header) or b"")[:256].decode("latin-1")
            elif limit.key == "endpoint":
                key = endpoint_id
            else:
                key = client_key
            wait = policy.buckets.take(key)
            if wait:
                build = responses.rate_limited(retry_after(wait))
                self._refuse(exchange, policy, ACTION_RATE_LIMIT, endpoint_id, build)
                return
        auth = policy.basic_auth
        strip = False
        if auth is not None:
            if auth.check(head.get(b"authorization")) is None:
                build = responses.unauthorized(auth.challenge)
                self._refuse(exchange, policy, ACTION_BASIC_AUTH, endpoint_id, build)
                return
            strip = True
        if tcp:
            self.handler.request_received(exchange)
            return
        max_body = policy.max_body_bytes
        if max_body and (exchange.framing.length or 0) > max_body:
            self._refuse(exchange, policy, ACTION_BODY_SIZE, endpoint_id, responses.TOO_LARGE)
            return
        slot = False
        if policy.max_concurrent:
            if not self.in_flight.acquire(endpoint_id, policy.max_concurrent):
                build = responses.TOO_MANY_CONCURRENT
                self._refuse(exchange, policy, ACTION_CONCURRENCY, endpoint_id, build)
                return
            slot = True
        ops = policy.request_headers
        if strip or ops:
            headers: Any = head.headers
            if strip:
                headers = tuple((n, v) for n, v in headers if n.lower() not in _AUTHORIZATION)
            if ops:
                headers = ops.apply(headers)
            head = make_request_head(head.method, head.target, head.version, tuple(headers))
        counted = max_body and exchange.framing.chunked
        if head is exchange.head and not slot and not counted and not policy.response_headers:
            self.handler.request_received(exchange)
            return
        wrapped = PolicyExchange(
            exchange,
            head,
            policy,
            endpoint_id,
            self,
            max_body if counted else 0,
            slot,
        )
        self.handler.request_received(wrapped)  # type: ignore[arg-type]


class PolicyExchange:
    """
    The exchange a passed request goes on with: its edited head, response
    header rules, a streamed body's size check, and the release of its
    concurrency slot when it ends.  Everything else is the wrapped exchange's.
    """

    def __init__(
        self,
        exchange: IServerExchange,
        head: RequestHead,
        policy: Policy,
        endpoint_id: str,
        handler: PolicyHandler,
        max_body: int,
        slot: bool,
    ) -> None:
        self._exchange = exchange
        copy_request_attributes(self, exchange)
        self.head = head
        self._policy = policy
        self._endpoint_id = endpoint_id
        self._handler = handler
        self._max_body = max_body
        self._slot = slot
        self._started = False
        #: Set once the body went over the limit: the relay's later calls are ignored.
        self._cut = False

    def __getattr__(self, name: str) -> Any:
        return forward_attribute(self, self._exchange, name)

    def _release(self) -> None:
        if self._slot:
            self._slot = False
            self._handler.in_flight.release(self._endpoint_id)

    def set_receiver(self, receiver: IRequestReceiver) -> None:
        if self._max_body or self._slot:
            receiver = _WatchedReceiver(self, receiver, self._max_body)
        self._exchange.set_receiver(receiver)

    def respond(self, build: Callable[..., bytes]) -> None:
        if self._cut:
            return
        self._started = True
        self._exchange.respond(build)
        self._release()

    def start_response(self, status: int, headers: tuple[tuple[bytes, bytes], ...]) -> None:
        if self._cut:
            return
        self._started = True
        ops = self._policy.response_headers
        self._exchange.start_response(status, ops.apply(headers) if ops else headers)

    def write(self, data: bytes) -> None:
        if not self._cut:
            self._exchange.write(data)

    def finish(self) -> None:
        if not self._cut:
            self._exchange.finish()
        self._release()

    def abort(self) -> None:
        if not self._cut:
            self._exchange.abort()
        self._release()

    def take_over(self, protocol: Any, replay_head: bool = False) -> None:
        self._started = True
        self._exchange.take_over(protocol, replay_head)
        self._release()

    def _too_large(self, receiver: IRequestReceiver) -> None:
        """The streamed body went over the limit: drop the relay, answer 413 if still possible."""
        self._cut = True
        receiver.connection_lost(Failure(BodyTooLarge(self._max_body)))
        handler, policy = self._handler, self._policy
        if handler.metrics is not None:
            handler.metrics.refused(policy.name, ACTION_BODY_SIZE)
        note = getattr(self._exchange, "note_policy", None)
        if note is not None:
            note(policy.name, ACTION_BODY_SIZE)
        if self._started:
            self._exchange.abort()
        else:
            self._exchange.respond(responses.TOO_LARGE)
        self._release()


@implementer(IRequestReceiver)
class _WatchedReceiver:
    """Counts body bytes on their way to the relay; tells the exchange when it is gone."""

    def __init__(self, exchange: PolicyExchange, receiver: IRequestReceiver, limit: int) -> None:
        self._exchange = exchange
        self._receiver = receiver
        self._limit = limit
        self._seen = 0

    def body_data(self, data: bytes) -> None:
        if self._exchange._cut:
            return
        self._seen += len(data)
        if self._limit and self._seen > self._limit:
            self._exchange._too_large(self._receiver)
            return
        self._receiver.body_data(data)

    def body_end(self) -> None:
        if not self._exchange._cut:
            self._receiver.body_end()

    def connection_lost(self, reason: Failure) -> None:
        if not self._exchange._cut:
            self._receiver.connection_lost(reason)
        self._exchange._release()

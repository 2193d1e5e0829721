# -*- test-case-name: piko.test.cluster.test_service -*-
"""
The gossip service: Go Piko's ``pkg/gossip`` around the sans-IO state.

The service builds and applies the messages; a transport
(:mod:`piko.cluster.transport`) carries them.  By default that is Go's wire
on one address: UDP carries the periodic digest/delta exchange (scuttlebutt
anti-entropy and, through the deltas, the failure detector's heartbeats),
TCP carries joins and leaves, byte-identical to Go Piko v0.9.0
(:mod:`piko.cluster.codec`), so Go and Python nodes form one cluster.  That
transport is neither authenticated nor encrypted (Go's isn't either); a
warning says so at start.  With ``cluster.tls`` configured every message
goes over TCP with mutual TLS instead, between nodes holding certificates
of the cluster CA.

Every ``interval`` (plus up to 10% jitter) the service sends a digest
(``request=True``) to one random live node and one random unreachable node
and updates liveness; every ten intervals it compacts the local state and
forgets expired nodes.  A delta holding an entry too large for any UDP
packet (which would otherwise block every later entry of its node) is also
sent over TCP, as a join exchange: Go's stream listener applies the delta
and digest of a join and answers with what we lack, whoever sends it.
Watcher events from the state are queued and delivered on the next reactor
turn, so watchers may call back into anything.
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Callable, Sequence
from typing import Any

from attrs import frozen
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IHostResolution,
    IListeningPort,
    IReactorTime,
    IResolutionReceiver,
)
from twisted.logger import Logger
from zope.interface import implementer

from piko.cluster.codec import (
    DEFAULT_MAX_PACKET_SIZE,
    CodecError,
    DeltaEntry,
    DeltaHeader,
    DeltaPacket,
    DigestHeader,
    DigestPacket,
    JoinHeader,
    JoinRequest,
    JoinResponse,
    LeaveHeader,
    LeaveRequest,
    LeaveResponse,
    MessageType,
    decode_packet,
    encode_delta,
    encode_digest,
    encode_join_request,
    encode_join_response,
    encode_leave_request,
    encode_leave_response,
    entries_fit,
)
from piko.cluster.failure_detector import AccrualFailureDetector
from piko.cluster.state import GossipState, IGossipWatcher, wall_clock_version
from piko.cluster.transport import (
    IO_TIMEOUT,
    Connect,
    GoTransport,
    IGossipReceiver,
    IGossipTransport,
)
from piko.net import ip_version, join_host_port, split_host_port

__all__ = [
    "DEFAULT_INTERVAL",
    "IO_TIMEOUT",
    "LEAVE_ACKS",
    "GossipService",
    "JoinError",
    "resolve_host",
]

#: Go's default gossip interval.
DEFAULT_INTERVAL = 0.1

#: A leaving node stops after this many nodes acknowledged its leave.
LEAVE_ACKS = 4

#: Compaction and expiry run every this many intervals.
SWEEP_EVERY = 10

#: Each tick is delayed by up to this fraction of the interval.
JITTER = 0.1

#: A local change (an endpoint added or removed here) is pushed at once to up to this many
#: live nodes, instead of waiting for the next round's one random node.
PUSH_FANOUT = 4

#: At most one such push per this many seconds; changes in between go out together.
PUSH_SPACING = 0.01

#: A delta with an entry too large for any UDP packet goes over a TCP exchange
#: instead, to each peer at most once per this many seconds.
STREAM_SPACING = 1.0


class JoinError(Exception):
    """No seed address could be joined."""


# -- name resolution ----------------------------------------------------------


@implementer(IResolutionReceiver)
class _Collector:
    def __init__(self) -> None:
        self.addresses: list[str] = []
        self.done: Deferred[list[str]] = Deferred()

    def resolutionBegan(self, resolutionInProgress: IHostResolution) -> None:
        """Nothing to do."""

    def addressResolved(self, address: IAddress) -> None:
        host = getattr(address, "host", None)
        if host is not None and host not in self.addresses:
            self.addresses.append(host)

    def resolutionComplete(self) -> None:
        self.done.callback(self.addresses)


def resolve_host(reactor: Any, host: str) -> Deferred[list[str]]:
    """
    Every address ``host`` resolves to, through the reactor's resolver (never blocking).

    An IP literal resolves to itself.  A DNS name gives every address it
    has, as a Kubernetes headless service lists its pods.
    """
    if ip_version(host) is not None:
        return _succeed([host])
    collector = _Collector()
    reactor.nameResolver.resolveHostName(collector, host)
    return collector.done


def _succeed(value: list[str]) -> Deferred[list[str]]:
    d: Deferred[list[str]] = Deferred()
    d.callback(value)
    return d


# -- watcher events on the next turn -----------------------------------------


@implementer(IGossipWatcher)
class _DeferredWatcher:
    """Queues the state's watcher calls and delivers them on the next reactor turn."""

    def __init__(self, clock: IReactorTime, target: IGossipWatcher) -> None:
        self._clock = clock
        self._target = target
        self._queue: list[tuple[str, tuple[str, ...]]] = []
        self._call: IDelayedCall | None = None
        self.closed = False

    def _push(self, name: str, *args: str) -> None:
        if self.closed:
            return
        self._queue.append((name, args))
        if self._call is None:
            self._call = self._clock.callLater(0, self._flush)

    def _flush(self) -> None:
        self._call = None
        queue, self._queue = self._queue, []
        for name, args in queue:
            getattr(self._target, name)(*args)

    def flush(self) -> None:
        """Deliver what is queued now and nothing after (at stop)."""
        self.closed = True
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._flush()

    def on_join(self, node_id: str) -> None:
        self._push("on_join", node_id)

    def on_leave(self, node_id: str) -> None:
        self._push("on_leave", node_id)

    def on_reachable(self, node_id: str) -> None:
        self._push("on_reachable", node_id)

    def on_unreachable(self, node_id: str) -> None:
        self._push("on_unreachable", node_id)

    def on_upsert_key(self, node_id: str, key: str, value: str) -> None:
        self._push("on_upsert_key", node_id, key, value)

    def on_delete_key(self, node_id: str, key: str) -> None:
        self._push("on_delete_key", node_id, key)

    def on_expired(self, node_id: str) -> None:
        self._push("on_expired", node_id)


@frozen
class GossipSettings:
    """
    What the service needs from ``cluster.gossip`` (and ``cluster.node_id``).

    :ivar advertise_addr: the configured advertise address, or ``""`` to
        infer it from the bound address.
    """

    node_id: str
    bind_addr: str = ":8003"
    advertise_addr: str = ""
    interval: float = DEFAULT_INTERVAL
    max_packet_size: int = DEFAULT_MAX_PACKET_SIZE


@implementer(IGossipReceiver)
class GossipService(Service):
    """
    Runs gossip for one node on one ``host:port``.

    :param reactor: provides TCP, UDP, time and name resolution.
    :param settings: node id, addresses, interval, packet size.
    :param watcher: told of remote nodes' changes on the next reactor turn.
    :param metrics: the ``piko_gossip_*`` counters, if any: an object with a
        ``gossip_<name>`` counter per :meth:`count` name, as
        ``piko.server.metrics.ServerMetrics`` has (typed loosely so that the
        cluster layer does not import the server above it).
    :param advertise: infers the advertise address from the bound TCP port
        when none is configured.
    :param connect: dials a peer for the default transport (tests replace it).
    :param transport: carries the messages; default Go Piko's UDP and TCP
        (:class:`~piko.cluster.transport.GoTransport`), or mutual TLS
        (:class:`~piko.cluster.transport.TLSTransport`).
    :param rng: randomness of peer choice, shuffles and jitter.

    :ivar state: the gossip state, once :meth:`listen` has bound the port
        (its local address is the advertise address).
    """

    log = Logger(namespace="gossip")

    def __init__(
        self,
        reactor: Any,
        settings: GossipSettings,
        watcher: IGossipWatcher,
        *,
        metrics: Any = None,
        advertise: Callable[[IListeningPort], str] | None = None,
        connect: Connect | None = None,
        transport: IGossipTransport | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.reactor = reactor
        self.clock: IReactorTime = reactor
        self.settings = settings
        self.metrics = metrics
        self.rng = rng or random.Random()
        self.failure_detector = AccrualFailureDetector(
            reactor, bootstrap_interval=2 * settings.interval
        )
        self._watcher = _DeferredWatcher(reactor, watcher)
        self._advertise = advertise
        self.transport: IGossipTransport = transport or GoTransport(reactor, connect=connect)
        self.state: GossipState | None = None
        self.tcp_port: IListeningPort | None = None
        self._tick: IDelayedCall | None = None
        self._ticks = 0
        self._push_call: IDelayedCall | None = None
        self._last_push = float("-inf")
        #: Peers (by address) a TCP exchange of a large delta is under way
        #: with, and when the last one to each started.
        self._streaming: dict[str, Deferred[Any]] = {}
        self._last_stream: dict[str, float] = {}

    # -- lifecycle ---------------------------------------------------------

    def listen(self) -> GossipState:
        """
        Start the transport on the bind address and create the state.

        :raises twisted.internet.error.CannotListenError: when it cannot bind.
        """
        host, port = split_host_port(self.settings.bind_addr)
        self.tcp_port = self.transport.listen(host, int(port), self)
        bound = self.tcp_port.getHost().port  # type: ignore[attr-defined]
        if self.settings.advertise_addr:
            addr = self.settings.advertise_addr
        elif self._advertise is not None:
            addr = self._advertise(self.tcp_port)
        else:
            addr = join_host_port(host or "127.0.0.1", str(bound))
        # A restart under the same id must win over what peers hold of the
        # previous run: versions from the wall clock, a fresh incarnation.
        self.state = GossipState(
            self.settings.node_id,
            addr,
            self.clock,
            self.failure_detector,
            self._watcher,
            initial_version=wall_clock_version(self.clock),
            # Never from ``rng`` (seeded in tests): two starts must not share one.
            incarnation=secrets.token_hex(8),
        )
        self.state.on_local_change = self._local_changed
        # Name the address actually bound (``0.0.0.0:8003`` is exposed on every
        # interface, whatever the advertise address says).
        bound_addr = join_host_port(
            getattr(self.tcp_port.getHost(), "host", host) or "0.0.0.0", str(bound)
        )
        if self.transport.authenticated:
            self.log.info("gossip with mutual TLS", bound=bound_addr, addr=addr)
        else:
            self.log.warn(
                "no cluster TLS configured: gossip is unauthenticated and unencrypted; "
                "expose it only on a trusted network",
                bound=bound_addr,
                addr=addr,
            )
        return self.state

    def startService(self) -> None:
        """Bind (if not yet) and start the gossip rounds."""
        super().startService()
        if self.state is None:
            self.listen()
        self._schedule()

    def stopService(self) -> Deferred[None]:
        """Stop gossiping and close the transport (call :meth:`leave` first to leave)."""
        super().stopService()
        if self._tick is not None and self._tick.active():
            self._tick.cancel()
        self._tick = None
        if self._push_call is not None and self._push_call.active():
            self._push_call.cancel()
        self._push_call = None
        for streaming in list(self._streaming.values()):
            streaming.cancel()
        self._watcher.flush()
        self.tcp_port = None
        return self.transport.stop()

    @property
    def addr(self) -> str:
        """The advertise address."""
        assert self.state is not None
        return self.state.local_addr

    # -- periodic ----------------------------------------------------------

    def _schedule(self) -> None:
        interval = self.settings.interval
        delay = interval + self.rng.uniform(0, JITTER * interval)
        self._tick = self.clock.callLater(delay, self._on_tick)

    def _on_tick(self) -> None:
        self._tick = None
        try:
            self.gossip_round()
            self._ticks += 1
            if self._ticks % SWEEP_EVERY == 0:
                self.sweep()
        finally:
            if self.running:
                self._schedule()

    def _local_changed(self) -> None:
        """
        A local key took a new version: push our digest now (see :meth:`push_round`),
        coalescing the changes of one reactor turn and spacing pushes by
        :data:`PUSH_SPACING`.
        """
        if self._push_call is not None or not self.running or self.tcp_port is None:
            return
        wait = max(0.0, self._last_push + PUSH_SPACING - self.clock.seconds())
        self._push_call = self.clock.callLater(wait, self.push_round)

    def push_round(self) -> None:
        """
        Send our digest to up to :data:`PUSH_FANOUT` random live nodes.

        Go waits for the next gossip round (every 100 ms), which reaches one random node;
        a change then takes one to two rounds to reach everyone.  The digest asks each
        node to answer with its own, to which we answer with the delta it lacks: a change
        made here is everywhere in a few round trips (on a LAN, a few milliseconds).  The
        packets are the same as a round's, so Go nodes take part unchanged.
        """
        self._push_call = None
        state = self.state
        if state is None or self.tcp_port is None:
            return
        self._last_push = self.clock.seconds()
        live = state.live_nodes()
        self.rng.shuffle(live)
        for node in live[:PUSH_FANOUT]:
            self._send_digest(node.addr, request=True)

    def gossip_round(self) -> None:
        """Send our digest to one random live node and one random unreachable node."""
        state = self.state
        assert state is not None
        targets = []
        live = state.live_nodes()
        if live:
            targets.append(self.rng.choice(live).addr)
        unreachable = state.unreachable_nodes()
        if unreachable:
            targets.append(self.rng.choice(unreachable).addr)
        for target in targets:
            self._send_digest(target, request=True)
        state.update_liveness()

    def sweep(self) -> None:
        """Compact the local state and forget expired nodes."""
        assert self.state is not None
        self.state.compact_local()
        self.state.remove_expired()

    # -- digests and deltas ------------------------------------------------

    def _send_digest(self, addr: str, *, request: bool) -> None:
        state = self.state
        assert state is not None
        digest = state.digest()
        self.rng.shuffle(digest)
        packet = encode_digest(
            DigestHeader(state.local_id, state.local_addr, request),
            digest,
            self.settings.max_packet_size,
        )
        self.count("digest_entries_outbound", len(digest))
        self._send(addr, packet)

    def _send(self, addr: str, packet: bytes) -> None:
        if self.tcp_port is None:
            return
        try:
            host, port = split_host_port(addr)
            port_number = int(port)
        except ValueError:
            self.log.warn("bad address", addr=addr)
            return
        self.count("packet_bytes_outbound", len(packet))
        if ip_version(host) is not None:
            self.transport.send(host, port_number, packet)
            return
        resolve_host(self.reactor, host).addCallback(
            lambda hosts: self.transport.send(hosts[0], port_number, packet) if hosts else None
        ).addErrback(lambda f: self.log.warn("failed to resolve", host=host, error=str(f.value)))

    def packet_received(self, data: bytes) -> None:
        """Handle one digest or delta (truncated to ``max_packet_size`` as Go's buffer is)."""
        state = self.state
        if state is None or self.tcp_port is None:
            return
        data = data[: self.settings.max_packet_size]
        self.count("packet_bytes_inbound", len(data))
        try:
            packet = decode_packet(data)
        except CodecError as error:
            self.log.debug("bad packet", error=str(error))
            return
        if isinstance(packet, DigestPacket):
            header = packet.header
            self.count("digest_entries_inbound", len(packet.entries))
            state.apply_digest(packet.entries, sender=header.node_id)
            self._send_delta(header.addr, state.delta(packet.entries))
            if header.request:
                self._send_digest(header.addr, request=False)
        elif isinstance(packet, DeltaPacket):
            self.count("delta_entries_inbound", sum(len(d.entries) for d in packet.entries))
            self.failure_detector.report(packet.header.node_id)
            state.apply_delta(packet.entries, sender=packet.header.node_id)

    def _send_delta(self, addr: str, delta: list[DeltaEntry]) -> None:
        """
        Send ``delta`` to ``addr`` by UDP (cut short where the packet is full:
        the peer asks again for the rest), and also over TCP when an entry
        fits in no packet, which UDP could never deliver (see
        :func:`~piko.cluster.codec.entries_fit`).
        """
        state = self.state
        assert state is not None
        header = DeltaHeader(state.local_id, state.local_addr, 0)
        size = self.settings.max_packet_size
        self.count("delta_entries_outbound", sum(len(d.entries) for d in delta))
        # The UDP delta goes anyway: it is the peer's heartbeat from us.
        self._send(addr, encode_delta(header, delta, size))
        if not entries_fit(header, delta, size):
            self._stream_delta(addr, delta)

    def _stream_delta(self, addr: str, delta: list[DeltaEntry]) -> None:
        """
        Send ``delta`` to ``addr`` as a TCP join exchange, unless one is under
        way with that peer or started less than :data:`STREAM_SPACING` ago.
        """
        now = self.clock.seconds()
        # Only the recent starts matter: forget the others (addresses come from packets).
        self._last_stream = {a: t for a, t in self._last_stream.items() if now - t < STREAM_SPACING}
        if self.tcp_port is None or addr in self._streaming or addr in self._last_stream:
            return
        try:
            host, port = split_host_port(addr)
            port_number = int(port)
        except ValueError:
            self.log.warn("gossip: bad address", addr=addr)
            return
        self._last_stream[addr] = now
        self.log.debug("gossip: delta too large for a packet: sending it over TCP", addr=addr)

        def failed(failure: Any) -> None:
            if self.tcp_port is not None:
                self.log.warn(
                    "gossip: sending a large delta failed",
                    addr=addr,
                    error=str(failure.value),
                )

        def done(_: object) -> None:
            self._streaming.pop(addr, None)

        exchange = Deferred.fromCoroutine(self.exchange_state(host, port_number, delta))
        self._streaming[addr] = exchange
        exchange.addErrback(failed).addBoth(done)

    async def exchange_state(
        self, host: str, port: int, delta: Sequence[DeltaEntry] | None = None
    ) -> str:
        """
        One join exchange with ``host:port``: send ``delta`` (default: our
        whole local state) and our full digest, apply what the peer answers
        (every entry it holds that our digest lacks).

        :return: the id of the node that answered.
        """
        state = self.state
        assert state is not None
        if delta is None:
            delta = state.local_delta()
        request = encode_join_request(
            JoinRequest(
                JoinHeader(state.local_id, state.local_addr),
                tuple(delta),
                tuple(state.digest()),
            )
        )
        response = await self._exchange(host, port, request, MessageType.JOIN)
        assert isinstance(response, JoinResponse)
        state.apply_delta(response.delta, sender=response.header.node_id)
        return response.header.node_id

    # -- joins and leaves --------------------------------------------------

    def request_received(self, request: JoinRequest | LeaveRequest) -> bytes:
        """Apply a join or leave request and return the answer's bytes."""
        state = self.state
        assert state is not None
        header = request.header
        known = state.node(header.node_id)
        state.apply_delta(request.delta, sender=header.node_id)
        if isinstance(request, JoinRequest):
            state.apply_digest(request.digest, sender=header.node_id)
            # A node we know and that has not left is exchanging a delta too
            # large for a packet (:meth:`_stream_delta`), not joining.
            if known is None or known.metadata.left:
                self.log.info("node joined", node_id=header.node_id, addr=header.addr)
            else:
                self.log.debug("state exchange", node_id=header.node_id, addr=header.addr)
            delta = state.delta(request.digest, full=True)
            return encode_join_response(
                JoinResponse(JoinHeader(state.local_id, state.local_addr), tuple(delta))
            )
        self.log.info("node left", node_id=header.node_id)
        return encode_leave_response(LeaveResponse(LeaveHeader(state.local_id, state.local_addr)))

    def _exchange(
        self, host: str, port: int, request: bytes, kind: MessageType
    ) -> Deferred[JoinResponse | LeaveResponse]:
        return self.transport.exchange(host, port, request, kind)

    async def join_addr(self, host: str, port: int) -> str:
        """Join through one address; return the id of the node that answered."""
        return await self.exchange_state(host, port)

    async def join(self, addresses: Sequence[str]) -> list[str]:
        """
        Join the cluster through seed addresses, as Go's ``Gossip.Join``.

        An address without a port takes our gossip bind port; a DNS name is
        tried at every address it resolves to.

        :return: the ids of the nodes that answered.
        :raises JoinError: when none did (or a name does not resolve, as Go).
        """
        _, bind_port = split_host_port(self.settings.bind_addr)
        joined: list[str] = []
        errors: list[str] = []
        for address in addresses:
            if ":" not in address:
                address = f"{address}:{bind_port}"
            host, port = split_host_port(address)
            try:
                hosts = await resolve_host(self.reactor, host)
            except Exception as error:
                raise JoinError(f"lookup {host}: {error}") from error
            if not hosts:
                raise JoinError(f"lookup {host}: no such host")
            for ip in hosts:
                try:
                    node_id = await self.join_addr(ip, int(port))
                except Exception as error:
                    errors.append(f"{join_host_port(ip, port)}: {error}")
                    self.log.warn(
                        "failed to join node", addr=join_host_port(ip, port), error=str(error)
                    )
                    continue
                joined.append(node_id)
        if not joined:
            raise JoinError("failed to join any node: " + "; ".join(errors))
        self.log.info("joined cluster", node_ids=list(joined))
        return joined

    async def leave(self) -> int:
        """
        Mark ourselves left and tell up to :data:`LEAVE_ACKS` random live nodes.

        :return: how many acknowledged.
        """
        state = self.state
        if state is None:
            return 0
        state.leave_local()
        live = state.live_nodes()
        self.rng.shuffle(live)
        request = encode_leave_request(
            LeaveRequest(LeaveHeader(state.local_id, state.local_addr), tuple(state.local_delta()))
        )
        acked = 0
        for node in live:
            if acked >= LEAVE_ACKS:
                break
            try:
                host, port = split_host_port(node.addr)
                await self._exchange(host, int(port), request, MessageType.LEAVE)
            except Exception as error:
                self.log.warn("failed to leave node", node_id=node.id, error=str(error))
                continue
            acked += 1
        if live and not acked:
            self.log.warn("no node acknowledged our leave")
        return acked

    # -- metrics -----------------------------------------------------------

    def count(self, name: str, amount: int = 1) -> None:
        """Add to the ``piko_gossip_<name>_total`` counter."""
        if self.metrics is not None and amount:
            getattr(self.metrics, "gossip_" + name).inc(amount)

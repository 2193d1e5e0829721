# -*- test-case-name: piko.test.cluster.test_transport -*-
"""
The gossip transports: how the service's messages travel between nodes.

:class:`GossipService <piko.cluster.service.GossipService>` builds the same
messages whatever carries them (digests and deltas, join and leave requests
and their answers, all in Go Piko's msgpack encoding) and hands them to an
:class:`IGossipTransport`; what arrives comes back through the service's
:class:`IGossipReceiver` methods.  Two transports:

:class:`GoTransport`
    Go Piko v0.9.0's wire: digests and deltas as UDP datagrams, joins and
    leaves as one TCP exchange each, both on one port.  Go and Python nodes
    form one cluster; nothing is authenticated or encrypted.

:class:`TLSTransport`
    Everything over TCP with mutual TLS: each message is the same bytes
    with a 4-byte big-endian length in front (:func:`encode_frame`).  Both
    sides present a certificate and verify the other's chain against the
    cluster CA; nodes are addressed by IP, so there is no hostname check:
    any certificate the cluster CA signed is a node.  A peer whose handshake
    fails is refused and logged.  Digests and deltas go over one persistent
    connection per peer (dialled on first use, closed after
    :data:`IDLE_TIMEOUT` unused); a join or leave dials a connection of its
    own, reads the answer and closes it.  Like UDP, a packet is dropped
    rather than buffered without bound: while connecting at most
    :data:`MAX_PENDING` wait, and while the peer is not reading they are
    dropped (the next round sends a fresh digest anyway).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from OpenSSL import SSL
from OpenSSL.crypto import FILETYPE_PEM
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    connectProtocol,
)
from twisted.internet.interfaces import (
    IDelayedCall,
    IHandshakeListener,
    IListeningPort,
    IPushProducer,
    IReactorTime,
)
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.internet.ssl import CertificateOptions, KeyPair
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from zope.interface import Attribute, Interface, implementer

from piko.cluster.codec import (
    DEFAULT_MAX_STREAM_SIZE,
    CodecError,
    JoinRequest,
    JoinResponse,
    LeaveRequest,
    LeaveResponse,
    MessageType,
    RequestDecoder,
    ResponseDecoder,
)
from piko.config import ip_version

__all__ = [
    "FRAME_HEADER",
    "IDLE_TIMEOUT",
    "IO_TIMEOUT",
    "MAX_PENDING",
    "Connect",
    "FrameDecoder",
    "GoTransport",
    "IGossipReceiver",
    "IGossipTransport",
    "TLSTransport",
    "cluster_tls_options",
    "encode_frame",
]

#: Go's TCP dial timeout and read/write deadline.
IO_TIMEOUT = 10.0

#: A persistent TLS connection to a peer unused this long is closed.
IDLE_TIMEOUT = 60.0

#: At most this many packets wait for a TLS connection being dialled.
MAX_PENDING = 16

#: The length in front of every message on a TLS gossip connection.
FRAME_HEADER = struct.Struct(">I")

#: Dial ``(host, port, protocol)`` and fire with the connected protocol.
Connect = Callable[[str, int, Protocol], "Deferred[Protocol]"]


class IGossipReceiver(Interface):
    """What a transport delivers to (the gossip service)."""

    def packet_received(data: bytes) -> None:
        """Handle one digest or delta packet."""

    def request_received(request: JoinRequest | LeaveRequest) -> bytes:
        """Apply a join or leave request and return the encoded answer."""

    def count(name: str, amount: int = 1) -> None:
        """Add to the ``piko_gossip_<name>_total`` counter."""


class IGossipTransport(Interface):
    """Carries the gossip service's messages to and from other nodes."""

    authenticated = Attribute("Whether peers are authenticated (and traffic encrypted).")

    def listen(host: str, port: int, receiver: IGossipReceiver) -> IListeningPort:
        """
        Start accepting messages on ``host:port`` for ``receiver``.

        :return: the TCP port (its address infers the advertise address).
        :raises twisted.internet.error.CannotListenError: when it cannot bind.
        """

    def send(host: str, port: int, packet: bytes) -> None:
        """Send a digest or delta packet to an IP address, best effort."""

    def exchange(
        host: str, port: int, request: bytes, kind: MessageType
    ) -> Deferred[JoinResponse | LeaveResponse]:
        """Send a join or leave request and fire with the answer."""

    def stop() -> Deferred[None]:
        """Stop listening and close every connection."""


# -- framing (TLS) --------------------------------------------------------------


def encode_frame(message: bytes) -> bytes:
    """One message with its 4-byte big-endian length in front."""
    return FRAME_HEADER.pack(len(message)) + message


class FrameDecoder:
    """
    Splits a byte stream into length-prefixed messages.

    :param max_size: the largest message accepted (a join answer carries the
        whole cluster state, so Go's stream bound applies).
    """

    def __init__(self, max_size: int = DEFAULT_MAX_STREAM_SIZE) -> None:
        self._buffer = bytearray()
        self._max_size = max_size

    def feed(self, data: bytes) -> list[bytes]:
        """
        Add received bytes and return every message now complete.

        :raises CodecError: on an empty or oversized message; the connection
            should be dropped.
        """
        buffer = self._buffer
        buffer += data
        messages = []
        offset = 0
        size = FRAME_HEADER.size
        while len(buffer) - offset >= size:
            (length,) = FRAME_HEADER.unpack_from(buffer, offset)
            if length == 0 or length > self._max_size:
                raise CodecError(f"bad frame length: {length}")
            if len(buffer) - offset - size < length:
                break
            start = offset + size
            messages.append(bytes(buffer[start : start + length]))
            offset = start + length
        if offset:
            del buffer[:offset]
        return messages


# -- shared: one request/answer exchange --------------------------------------


class _Exchange(Protocol):
    """One dialled exchange: write a request, read the answer, close."""

    def __init__(
        self, transport: GoTransport | TLSTransport, request: bytes, kind: MessageType
    ) -> None:
        self.owner = transport
        self.request = request
        self.decoder = ResponseDecoder(kind)
        self.result: Deferred[JoinResponse | LeaveResponse] = Deferred()

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.owner.count("connections_outbound")
        self.owner.count("stream_bytes_outbound", len(self.request))
        self.transport.write(self.request)

    def feed(self, data: bytes) -> None:
        if self.result.called:
            return
        self.owner.count("stream_bytes_inbound", len(data))
        try:
            response = self.decoder.feed(data)
        except CodecError as error:
            self.result.errback(Failure(error))
            self.transport.abortConnection()  # type: ignore[union-attr]
            return
        if response is not None:
            self.result.callback(response)
            self.transport.loseConnection()  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.feed(data)

    def connectionLost(self, reason: Failure | None = None) -> None:
        if not self.result.called:
            self.result.errback(reason or Failure(ConnectionError("connection lost")))


def _run_exchange(
    clock: IReactorTime, connect: Connect, host: str, port: int, protocol: _Exchange
) -> Deferred[JoinResponse | LeaveResponse]:
    result = protocol.result
    timer = clock.callLater(IO_TIMEOUT, lambda: _give_up(protocol))

    def connect_failed(failure: Failure) -> None:
        if not result.called:
            result.errback(failure)

    def done(value: Any) -> Any:
        if timer.active():
            timer.cancel()
        # Given up (timeout, cancelled, service stopping): stop dialling too; a refused
        # HostnameEndpoint attempt otherwise lingers until its next round.  Not guarded
        # by ``called`` (a Deferred waiting on a chained one counts as called);
        # cancelling a finished dial does nothing.
        connecting.cancel()
        return value

    connecting = connect(host, port, protocol)
    connecting.addErrback(connect_failed)
    return result.addBoth(done)


def dial_endpoint(reactor: Any, host: str, port: int) -> Any:
    """
    The client endpoint for a gossip peer's TCP address.

    Gossip addresses are nearly always IP literals: those get a plain TCP
    endpoint, on which a refused connection fails at once.  A
    ``HostnameEndpoint`` resolves even a literal in a thread and, after a
    refusal, only reports failure on its next attempt round (0.3 s later),
    which slowed a leave past a dead node and outlived a stopped service.
    Names still go through ``HostnameEndpoint``.
    """
    version = ip_version(host)
    if version == 4:
        return TCP4ClientEndpoint(reactor, host, port, timeout=IO_TIMEOUT)
    if version == 6:
        return TCP6ClientEndpoint(reactor, host, port, timeout=IO_TIMEOUT)
    return HostnameEndpoint(reactor, host, port, timeout=IO_TIMEOUT)


def _give_up(protocol: _Exchange) -> None:
    if not protocol.result.called:
        protocol.result.errback(Failure(TimeoutError("gossip: i/o timeout")))
    if protocol.transport is not None:
        protocol.transport.abortConnection()  # type: ignore[attr-defined]


async def _maybe(value: Any) -> None:
    if isinstance(value, Deferred):
        await value


def _stop_all(ports: list[Any]) -> Deferred[None]:
    stops = [Deferred.fromCoroutine(_maybe(p.stopListening())) for p in ports if p is not None]
    return DeferredList(stops).addCallback(lambda _: None)


def _abort(protocol: Protocol) -> None:
    if protocol.transport is not None:
        protocol.transport.abortConnection()  # type: ignore[attr-defined]


# -- Go Piko's wire: UDP + TCP ---------------------------------------------------


class _UDP(DatagramProtocol):
    noisy = False

    def __init__(self, owner: GoTransport) -> None:
        self.owner = owner

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        if self.owner.receiver is not None:
            self.owner.receiver.packet_received(datagram)


class _Inbound(Protocol):
    """One accepted TCP connection: a join or leave request, answered, then closed."""

    def __init__(self, owner: GoTransport) -> None:
        self.owner = owner
        self.decoder = RequestDecoder()
        self.timer: IDelayedCall | None = None
        self.answered = False

    def connectionMade(self) -> None:
        self.owner.inbound.add(self)
        self.owner.count("connections_inbound")
        self.timer = self.owner.clock.callLater(IO_TIMEOUT, lambda: _abort(self))

    def dataReceived(self, data: bytes) -> None:
        receiver = self.owner.receiver
        if self.answered or receiver is None:
            return
        self.owner.count("stream_bytes_inbound", len(data))
        try:
            request = self.decoder.feed(data)
        except CodecError as error:
            self.owner.log.warn("bad stream", error=str(error))
            self.answered = True
            _abort(self)
            return
        if request is None:
            return
        self.answered = True
        answer = receiver.request_received(request)
        self.owner.count("stream_bytes_outbound", len(answer))
        assert self.transport is not None
        self.transport.write(answer)
        self.transport.loseConnection()

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.owner.inbound.discard(self)
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None


@implementer(IGossipTransport)
class GoTransport:
    """
    Go Piko v0.9.0's transport: UDP datagrams and TCP exchanges on one port.

    :param reactor: provides TCP, UDP and time.
    :param connect: dials a peer (tests replace it).
    """

    authenticated = False
    log = Logger(namespace="gossip")

    def __init__(self, reactor: Any, *, connect: Connect | None = None) -> None:
        self.reactor = reactor
        self.clock: IReactorTime = reactor
        self._connect = connect or self._default_connect
        self.receiver: IGossipReceiver | None = None
        self.tcp_port: IListeningPort | None = None
        self.udp_port: Any = None
        #: Accepted TCP connections not yet closed (aborted at stop).
        self.inbound: set[_Inbound] = set()

    def count(self, name: str, amount: int = 1) -> None:
        if self.receiver is not None:
            self.receiver.count(name, amount)

    def listen(self, host: str, port: int, receiver: IGossipReceiver) -> IListeningPort:
        """Bind TCP, then UDP on the port TCP was given (so port 0 works)."""
        factory = Factory.forProtocol(lambda: _Inbound(self))
        factory.noisy = False
        self.tcp_port = self.reactor.listenTCP(port, factory, interface=host)
        bound = self.tcp_port.getHost().port  # type: ignore[union-attr]
        try:
            self.udp_port = self.reactor.listenUDP(bound, _UDP(self), interface=host)
        except Exception:
            self.tcp_port.stopListening()
            self.tcp_port = None
            raise
        self.receiver = receiver
        return self.tcp_port

    def send(self, host: str, port: int, packet: bytes) -> None:
        if self.udp_port is None:
            return
        try:
            self.udp_port.write(packet, (host, port))
        except Exception as error:  # an unroutable address must not stop gossip
            self.log.debug("failed to send", host=host, port=port, error=str(error))

    def _default_connect(self, host: str, port: int, protocol: Protocol) -> Deferred[Protocol]:
        endpoint = dial_endpoint(self.reactor, host, port)
        return connectProtocol(endpoint, protocol)

    def exchange(
        self, host: str, port: int, request: bytes, kind: MessageType
    ) -> Deferred[JoinResponse | LeaveResponse]:
        return _run_exchange(self.clock, self._connect, host, port, _Exchange(self, request, kind))

    def stop(self) -> Deferred[None]:
        self.receiver = None
        for protocol in list(self.inbound):
            _abort(protocol)
        ports = [self.tcp_port, self.udp_port]
        self.tcp_port = self.udp_port = None
        return _stop_all(ports)


# -- mutual TLS over TCP ---------------------------------------------------------


def cluster_tls_options(cert: str, key: str, ca: str) -> CertificateOptions:
    """
    TLS options for both ends of a gossip connection: present ``cert``,
    require the peer's certificate and verify its chain against ``ca``.

    Node certificates need both the server and the client auth usage
    (``piko cluster certs`` issues such); no hostname is checked.

    :raises ValueError: when a file cannot be read or the key does not match.
    """
    from piko.tls import load_certificates

    try:
        chain = load_certificates(cert)
        cas = load_certificates(ca)
        with open(key, "rb") as f:
            pair = KeyPair.load(f.read(), FILETYPE_PEM)
        options = CertificateOptions(
            privateKey=pair.original,
            certificate=chain[0].original,
            extraCertChain=[c.original for c in chain[1:]],
            verify=True,
            caCerts=[c.original for c in cas],
            requireCertificate=True,
        )
        options.getContext()  # the key must match the certificate: check now
    except (OSError, SSL.Error) as error:
        raise ValueError(f"cluster: tls: {error}") from error
    return options


def _peer_name(protocol: Protocol) -> str:
    transport = protocol.transport
    peer = transport.getPeer() if transport is not None else None
    host, port = getattr(peer, "host", "?"), getattr(peer, "port", "?")
    return f"{host}:{port}"


@implementer(IHandshakeListener)
class _TLSInbound(Protocol):
    """
    An accepted TLS connection: digests and deltas go to the service; a join
    or leave request is answered on the same connection.
    """

    def __init__(self, owner: TLSTransport) -> None:
        self.owner = owner
        self.frames = FrameDecoder()
        self.timer: IDelayedCall | None = None
        self.verified = False
        self.peer = ""

    def connectionMade(self) -> None:
        self.peer = _peer_name(self)
        self.owner.inbound.add(self)
        self.owner.count("connections_inbound")
        self.timer = self.owner.clock.callLater(IO_TIMEOUT, lambda: _abort(self))

    def handshakeCompleted(self) -> None:
        self.verified = True
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None

    def dataReceived(self, data: bytes) -> None:
        receiver = self.owner.receiver
        if receiver is None:
            return
        self.owner.count("stream_bytes_inbound", len(data))
        try:
            for message in self.frames.feed(data):
                kind = message[0]
                if kind in (MessageType.DIGEST, MessageType.DELTA):
                    receiver.packet_received(message)
                    continue
                request = RequestDecoder(len(message)).feed(message)
                if request is None:
                    raise CodecError("truncated request")
                answer = receiver.request_received(request)
                self.owner.count("stream_bytes_outbound", len(answer))
                assert self.transport is not None
                self.transport.write(encode_frame(answer))
        except CodecError as error:
            self.owner.log.warn("tls: bad stream", peer=self.peer, error=str(error))
            _abort(self)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.owner.inbound.discard(self)
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None
        if not self.verified:
            self.owner.log.warn(
                "tls: refused peer: no valid cluster certificate",
                peer=self.peer,
                error=str(reason.value) if reason is not None else "closed",
            )


@implementer(IHandshakeListener)
class _TLSExchange(_Exchange):
    """A join or leave over TLS: the request and its answer are one frame each."""

    def __init__(self, owner: TLSTransport, request: bytes, kind: MessageType) -> None:
        super().__init__(owner, encode_frame(request), kind)
        self.frames = FrameDecoder()

    def handshakeCompleted(self) -> None:
        """Nothing to do: the request is written at connection and sent after the handshake."""

    def dataReceived(self, data: bytes) -> None:
        try:
            messages = self.frames.feed(data)
        except CodecError as error:
            if not self.result.called:
                self.result.errback(Failure(error))
            _abort(self)
            return
        for message in messages[:1]:
            self.feed(message)


@implementer(IHandshakeListener, IPushProducer)
class _PeerConnection(Protocol):
    """
    The persistent connection to one peer for digests and deltas.

    Packets wait (at most :data:`MAX_PENDING`) while it connects, and are
    dropped while the peer does not keep up, as UDP would.
    """

    def __init__(self, owner: TLSTransport, key: tuple[str, int]) -> None:
        self.owner = owner
        self.key = key
        self.pending: list[bytes] = []
        self.connected = False
        self.paused = False
        self.verified = False
        self.last_used = owner.clock.seconds()
        self.timer: IDelayedCall | None = None
        #: The dial while it is under way (cancelled if the transport stops).
        self.dialing: Deferred[Any] | None = None

    def send(self, frame: bytes) -> None:
        self.last_used = self.owner.clock.seconds()
        if not self.connected:
            if len(self.pending) < MAX_PENDING:
                self.pending.append(frame)
            return
        if self.paused:
            return
        assert self.transport is not None
        self.transport.write(frame)

    def connectionMade(self) -> None:
        assert self.transport is not None
        if self.owner.port is None:  # stopped while dialling
            self.transport.abortConnection()  # type: ignore[attr-defined]
            return
        self.owner.count("connections_outbound")
        self.connected = True
        self.transport.registerProducer(self, True)  # type: ignore[attr-defined]
        pending, self.pending = self.pending, []
        self.transport.writeSequence(pending)
        self.timer = self.owner.clock.callLater(self.owner.idle_timeout, self._check_idle)

    def handshakeCompleted(self) -> None:
        self.verified = True

    def _check_idle(self) -> None:
        idle = self.owner.clock.seconds() - self.last_used
        if idle >= self.owner.idle_timeout:
            self.timer = None
            if self.transport is not None:
                self.transport.loseConnection()
            return
        self.timer = self.owner.clock.callLater(self.owner.idle_timeout - idle, self._check_idle)

    def dataReceived(self, data: bytes) -> None:
        """Peers do not answer on this connection; anything sent is ignored."""

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False

    def stopProducing(self) -> None:
        self.paused = True

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.connected = False
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None
        self.owner.peer_gone(self)
        if not self.verified and reason is not None and reason.check(SSL.Error):
            self.owner.log.warn(
                "tls: handshake failed",
                host=self.key[0],
                port=self.key[1],
                error=str(reason.value),
            )


@implementer(IGossipTransport)
class TLSTransport:
    """
    Gossip over TCP with mutual TLS, every message length-prefixed.

    :param reactor: provides TCP and time.
    :param options: from :func:`cluster_tls_options`, for both sides.
    :param connect: dials a peer, TLS included (tests replace it).
    :param idle_timeout: closes a peer connection unused this long.
    """

    authenticated = True
    log = Logger(namespace="gossip")

    def __init__(
        self,
        reactor: Any,
        options: CertificateOptions,
        *,
        connect: Connect | None = None,
        idle_timeout: float = IDLE_TIMEOUT,
    ) -> None:
        self.reactor = reactor
        self.clock: IReactorTime = reactor
        self.options = options
        self.idle_timeout = idle_timeout
        self._connect = connect or self._default_connect
        self.receiver: IGossipReceiver | None = None
        self.port: IListeningPort | None = None
        self.inbound: set[_TLSInbound] = set()
        #: The persistent connections for digests and deltas, by peer address.
        self.peers: dict[tuple[str, int], _PeerConnection] = {}

    def count(self, name: str, amount: int = 1) -> None:
        if self.receiver is not None:
            self.receiver.count(name, amount)

    def server_factory(self) -> TLSMemoryBIOFactory:
        """The accepting side: TLS around :class:`_TLSInbound` (tests dial it in memory)."""
        inner = Factory.forProtocol(lambda: _TLSInbound(self))
        inner.noisy = False
        factory = TLSMemoryBIOFactory(self.options, False, inner, clock=self.clock)
        factory.noisy = False
        return factory

    def listen(self, host: str, port: int, receiver: IGossipReceiver) -> IListeningPort:
        self.port = self.reactor.listenTCP(port, self.server_factory(), interface=host)
        self.receiver = receiver
        assert self.port is not None
        return self.port

    def _default_connect(self, host: str, port: int, protocol: Protocol) -> Deferred[Protocol]:
        # TLS buffers small writes on a clock: ours, not the global reactor.
        endpoint = dial_endpoint(self.reactor, host, port)
        inner = Factory.forProtocol(lambda: protocol)
        inner.noisy = False  # one factory per connection: no "Starting factory" line for each
        factory = TLSMemoryBIOFactory(self.options, True, inner, clock=self.clock)
        return endpoint.connect(factory).addCallback(lambda _: protocol)

    def send(self, host: str, port: int, packet: bytes) -> None:
        if self.port is None:
            return
        key = (host, port)
        peer = self.peers.get(key)
        if peer is None:
            peer = self.peers[key] = _PeerConnection(self, key)

            def failed(failure: Failure) -> None:
                self.log.debug(
                    "tls: failed to connect", host=host, port=port, error=str(failure.value)
                )
                self.peer_gone(peer)

            peer.dialing = self._connect(host, port, peer).addErrback(failed)
        peer.send(encode_frame(packet))

    def peer_gone(self, peer: _PeerConnection) -> None:
        """Forget a peer's connection (closed or never made); the next packet dials again."""
        if self.peers.get(peer.key) is peer:
            del self.peers[peer.key]

    def exchange(
        self, host: str, port: int, request: bytes, kind: MessageType
    ) -> Deferred[JoinResponse | LeaveResponse]:
        protocol = _TLSExchange(self, request, kind)
        return _run_exchange(self.clock, self._connect, host, port, protocol)

    def stop(self) -> Deferred[None]:
        self.receiver = None
        for protocol in list(self.inbound):
            _abort(protocol)
        for peer in list(self.peers.values()):
            # A dial to a dead peer may still be under way (HostnameEndpoint
            # keeps trying for a while): cancel it rather than leave it running.
            # (Not guarded by ``called``: a Deferred waiting on a chained one
            # counts as called; cancelling a finished dial does nothing.)
            if peer.dialing is not None:
                peer.dialing.cancel()
            _abort(peer)
        self.peers.clear()
        port, self.port = self.port, None
        return _stop_all([port])

# -*- test-case-name: piko.test.cluster.test_state -*-
"""
Go Piko's gossip state (``pkg/gossip/state.go``), sans-IO.

Every node owns a set of versioned key/values that only it writes; each
write takes the node's next version.  Nodes converge by scuttlebutt
anti-entropy: a node sends a *digest* (for each node it knows, the highest
version it has applied), the receiver answers with a *delta* (every entry
newer than those versions, per node in ascending version order) and applies
entries only above the version it already holds, so a delta cut short by the
packet size is still a consistent prefix.

Deleted keys stay as tombstones so that the deletion propagates; when a node
has piled up enough of them it *compacts*: drops them, re-versions the
surviving entries and publishes ``_internal:compact`` = V so that everyone
else drops whatever they hold at or below V.  A node leaving publishes
``_internal:left``; left and unreachable nodes are forgotten a minute later.

A node restarted under the same id (a fixed ``cluster.node_id``, as a
Kubernetes StatefulSet gives) is a new *incarnation*: its new state must win
over whatever its peers still hold of the old one (a ``left`` tombstone,
or the old endpoints after a crash), or they ignore it until the old state
expires, a minute or more.  Go never meets the problem (it picks a new
random id on every start); we solve it on Go's wire with two rules:

* the local node starts its versions at a wall-clock number (microseconds
  since the epoch, :func:`wall_clock_version`) rather than 0, so a new
  incarnation's entries are newer than anything the previous one wrote
  (it would have had to write more than a million entries a second), and
  if a peer still reports a higher version for our id (a clock stepped
  back), we re-version our entries above it (:meth:`GossipState._bump_local`);
* it publishes ``_internal:incarnation`` = a random token as its first
  entry.  A peer applying an incarnation that differs from the one it
  holds (or arriving for a node it already has other state for) knows the
  node restarted: it forgets the old incarnation's state (``on_expired``,
  then ``on_join``) and takes the new one, left and unreachable flags
  cleared, at the address the new state came with (a restarted pod often
  has a new IP).  Go peers store this internal key and ignore it (they treat a
  restarted node as Go always does: as ``left`` until the old state expires,
  then as new).

One departure from Go (its issue #314, "ghost nodes"): once a node has been
forgotten, a peer that still mentions it at a version we had already seen
(a stale digest or delta) does not bring it back.  We keep a bounded record
of departed nodes and their last version for a while; only news newer than
that, or the node itself talking to us, brings a departed node back.

The watcher is called synchronously from the mutating methods, like Go's
(which holds its state lock meanwhile): an :class:`IGossipWatcher` must not
call back into the state it watches; it should record the change or defer it
to the next reactor turn.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable

from attrs import define, evolve, field, frozen
from twisted.internet.interfaces import IReactorTime
from zope.interface import Interface, implementer

from piko.cluster.codec import DeltaEntry, DigestEntry, Entry
from piko.cluster.failure_detector import DEFAULT_SUSPICION_THRESHOLD, IFailureDetector

__all__ = [
    "COMPACT_KEY",
    "DEFAULT_COMPACTION_THRESHOLD",
    "DEFAULT_DEPARTED_RETENTION",
    "DEFAULT_MAX_DEPARTED",
    "INCARNATION_KEY",
    "LEFT_KEY",
    "MAX_OBSERVED_VERSION",
    "NODE_EXPIRY",
    "GossipState",
    "IGossipWatcher",
    "NodeMetadata",
    "NodeState",
    "NullWatcher",
    "wall_clock_version",
]

#: The internal key a node publishes when it leaves the cluster.
LEFT_KEY = "_internal:left"

#: The internal key whose value is the version at and below which entries
#: may be discarded after a compaction.
COMPACT_KEY = "_internal:compact"

#: The internal key whose value names the local node's incarnation (a fresh
#: random token each start): a peer seeing it change knows the node restarted.
INCARNATION_KEY = "_internal:incarnation"

#: A peer reporting a version of our own node above this is ignored rather
#: than bumped past: versions travel as uint64, and a corrupt or hostile
#: report must not push ours to where the next write would not encode.
#: (A wall-clock version, in microseconds, is about 2**51 today.)
MAX_OBSERVED_VERSION = 2**62

#: How long a left or unreachable node is kept before it is forgotten (Go: 1 min).
NODE_EXPIRY = 60.0

#: How many tombstones make the local node compact (Go: 100).
DEFAULT_COMPACTION_THRESHOLD = 100

#: How long a forgotten node's last version is remembered, so that stale
#: gossip about it is recognised.  Peers forget a node within about a minute
#: of each other (it goes unreachable or left everywhere at once, give or
#: take the detection time); ten minutes is well past that.
DEFAULT_DEPARTED_RETENTION = 600.0

#: At most this many departed nodes are remembered; the oldest go first.
DEFAULT_MAX_DEPARTED = 4096


class IGossipWatcher(Interface):
    """
    Told of changes to *remote* nodes' state, as Go's ``gossip.Watcher``.

    Called synchronously while the state changes: implementations must not
    block nor call back into the state.
    """

    def on_join(node_id: str) -> None:
        """A node we did not know appeared."""

    def on_leave(node_id: str) -> None:
        """A node announced it left the cluster."""

    def on_reachable(node_id: str) -> None:
        """A node considered unreachable is heard from again."""

    def on_unreachable(node_id: str) -> None:
        """A node has been silent for too long."""

    def on_upsert_key(node_id: str, key: str, value: str) -> None:
        """A node set ``key`` to ``value``."""

    def on_delete_key(node_id: str, key: str) -> None:
        """A node deleted ``key`` (or compacted it away before we saw the delete)."""

    def on_expired(node_id: str) -> None:
        """A left or unreachable node's state was forgotten."""


@implementer(IGossipWatcher)
class NullWatcher:
    """A watcher that ignores everything."""

    def on_join(self, node_id: str) -> None:
        """Ignore."""

    def on_leave(self, node_id: str) -> None:
        """Ignore."""

    def on_reachable(self, node_id: str) -> None:
        """Ignore."""

    def on_unreachable(self, node_id: str) -> None:
        """Ignore."""

    def on_upsert_key(self, node_id: str, key: str, value: str) -> None:
        """Ignore."""

    def on_delete_key(self, node_id: str, key: str) -> None:
        """Ignore."""

    def on_expired(self, node_id: str) -> None:
        """Ignore."""


@frozen
class NodeMetadata:
    """
    What we know about a node besides its entries (Go's ``NodeMetadata``).

    :ivar addr: its gossip advertise address.
    :ivar version: the highest version of its entries we have applied.
    :ivar left: it announced it left.
    :ivar unreachable: the failure detector suspects it.
    :ivar expiry: when left or unreachable, the clock time after which it is
        forgotten; else ``None``.
    """

    id: str
    addr: str
    version: int = 0
    left: bool = False
    unreachable: bool = False
    expiry: float | None = None


@frozen
class NodeState:
    """A snapshot of a node: its metadata and its entries in version order."""

    metadata: NodeMetadata
    entries: tuple[Entry, ...] = ()

    def get(self, key: str) -> Entry | None:
        """Return the entry for ``key`` (possibly a tombstone), if any."""
        for entry in self.entries:
            if entry.key == key:
                return entry
        return None


@define
class _Node:
    id: str
    addr: str
    version: int = 0
    left: bool = False
    unreachable: bool = False
    expiry: float | None = None
    entries: dict[str, Entry] = field(factory=dict)

    def metadata(self) -> NodeMetadata:
        return NodeMetadata(
            self.id, self.addr, self.version, self.left, self.unreachable, self.expiry
        )

    def sorted_entries(self, after: int = 0) -> tuple[Entry, ...]:
        return tuple(
            sorted(
                (e for e in self.entries.values() if e.version > after),
                key=lambda e: e.version,
            )
        )


@frozen
class _Departed:
    version: int
    until: float


def _version_key(entry: Entry) -> int:
    return entry.version


def wall_clock_version(clock: IReactorTime) -> int:
    """
    The version a new incarnation of the local node starts at: ``clock``'s
    time in microseconds.

    Versions only grow by one per local write, so an incarnation started
    later starts above every version an earlier one reached unless that
    one wrote more than a million entries a second on average; peers then
    take the new incarnation's entries at once (see the module docstring).
    A test clock at 0 gives Go's start at 0.
    """
    return max(0, int(clock.seconds() * 1_000_000))


@define
class GossipState:
    """
    The known state of every node in the cluster, ours included.

    The local node's state is always current (only we write it); remote
    nodes' state is eventually consistent.  Time comes from ``clock``; the
    service calls :meth:`update_liveness` every gossip interval and
    :meth:`compact_local` and :meth:`remove_expired` every ten.

    :ivar failure_detector: asked by :meth:`update_liveness`, and told to
        forget expired nodes; the service reports heartbeats to it directly.
    :ivar node_expiry: how long left and unreachable nodes are kept.
    :ivar departed_retention: how long forgotten nodes are remembered as
        departed, against stale gossip.
    :ivar max_departed: the most departed nodes remembered.
    :ivar initial_version: the local node's version before its first write
        (Go: 0; the gossip service passes :func:`wall_clock_version`).
    :ivar incarnation: when given, published first as
        ``_internal:incarnation`` so that peers recognise a restart under
        the same id; ``None`` publishes nothing (Go's behaviour).
    """

    local_id: str
    local_addr: str
    clock: IReactorTime
    failure_detector: IFailureDetector
    watcher: IGossipWatcher = field(factory=NullWatcher)
    node_expiry: float = NODE_EXPIRY
    departed_retention: float = DEFAULT_DEPARTED_RETENTION
    max_departed: int = DEFAULT_MAX_DEPARTED
    initial_version: int = 0
    incarnation: str | None = None
    _nodes: dict[str, _Node] = field(init=False, factory=dict)
    _departed: OrderedDict[str, _Departed] = field(init=False, factory=OrderedDict)

    def __attrs_post_init__(self) -> None:
        node = _Node(self.local_id, self.local_addr, self.initial_version)
        self._nodes[self.local_id] = node
        if self.incarnation is not None:
            node.version += 1
            node.entries[INCARNATION_KEY] = Entry(
                INCARNATION_KEY, self.incarnation, node.version, internal=True
            )

    # -- reading -----------------------------------------------------------

    def node(self, node_id: str) -> NodeState | None:
        """Return a snapshot of ``node_id``, or ``None`` if unknown."""
        node = self._nodes.get(node_id)
        if node is None:
            return None
        return NodeState(node.metadata(), node.sorted_entries())

    def local_node(self) -> NodeState:
        """Return a snapshot of the local node."""
        node = self.node(self.local_id)
        assert node is not None
        return node

    def local_metadata(self) -> NodeMetadata:
        """Return the local node's metadata."""
        return self._nodes[self.local_id].metadata()

    def nodes(self) -> list[NodeMetadata]:
        """Return every known node's metadata, the local node's included."""
        return [node.metadata() for node in self._nodes.values()]

    def live_nodes(self) -> list[NodeMetadata]:
        """Return the remote nodes neither left nor unreachable: gossip targets."""
        return [
            node.metadata()
            for node in self._nodes.values()
            if node.id != self.local_id and not node.left and not node.unreachable
        ]

    def unreachable_nodes(self) -> list[NodeMetadata]:
        """
        Return the remote nodes considered unreachable.

        Go gossips with one of these each round too, so that two healthy
        nodes that each think the other is down still find out otherwise.
        """
        return [
            node.metadata()
            for node in self._nodes.values()
            if node.id != self.local_id and node.unreachable
        ]

    def is_departed(self, node_id: str) -> bool:
        """Whether ``node_id`` was forgotten recently enough to be remembered as gone."""
        return node_id in self._departed

    # -- local writes ------------------------------------------------------

    #: Called after every local write that took a new version (the gossip
    #: service pushes the change at once instead of waiting for its next round).
    on_local_change: Callable[[], None] | None = None

    def _local_changed(self) -> None:
        if self.on_local_change is not None:
            self.on_local_change()

    def upsert_local(self, key: str, value: str) -> None:
        """Set a local key, taking the next version; a no-op if unchanged."""
        node = self._nodes[self.local_id]
        existing = node.entries.get(key)
        # Go compares the value only: re-setting a deleted key to "" is a no-op.
        if existing is not None and existing.value == value:
            return
        node.version += 1
        node.entries[key] = Entry(key, value, node.version)
        self._local_changed()

    def delete_local(self, key: str) -> None:
        """Replace a local key by a tombstone; a no-op if absent or deleted."""
        node = self._nodes[self.local_id]
        existing = node.entries.get(key)
        if existing is None or existing.deleted:
            return
        node.version += 1
        node.entries[key] = Entry(key, "", node.version, existing.internal, True)
        self._local_changed()

    def leave_local(self) -> None:
        """Mark the local node left and publish ``_internal:left``; idempotent."""
        node = self._nodes[self.local_id]
        if node.left:
            return
        node.left = True
        node.version += 1
        node.entries[LEFT_KEY] = Entry(LEFT_KEY, "", node.version, internal=True)

    def compact_local(self, threshold: int = DEFAULT_COMPACTION_THRESHOLD) -> bool:
        """
        Drop the local tombstones once there are at least ``threshold``.

        The surviving entries are re-versioned in their version order and
        ``_internal:compact`` is set to the highest version discarded, so a
        peer drops everything it holds at or below it and then receives the
        survivors again under their new versions.

        :return: whether a compaction happened.
        """
        node = self._nodes[self.local_id]
        deleted = sum(1 for e in node.entries.values() if e.deleted)
        if deleted < max(threshold, 1):
            return False
        entries = node.sorted_entries()
        compact_version = entries[-1].version
        node.entries = {}
        for entry in entries:
            if entry.deleted or (entry.internal and entry.key == COMPACT_KEY):
                continue
            node.version += 1
            node.entries[entry.key] = Entry(
                entry.key, entry.value, node.version, entry.internal, entry.deleted
            )
        node.version += 1
        node.entries[COMPACT_KEY] = Entry(
            COMPACT_KEY, str(compact_version), node.version, internal=True
        )
        return True

    # -- anti-entropy ------------------------------------------------------

    def digest(self) -> list[DigestEntry]:
        """
        Return, for every known node, the version we hold.

        The service shuffles it before a UDP send: only a prefix may fit.
        """
        return [
            DigestEntry(node.id, node.addr, node.version, node.left)
            for node in self._nodes.values()
        ]

    def delta(self, digest: Iterable[DigestEntry], full: bool = False) -> list[DeltaEntry]:
        """
        Return what the sender of ``digest`` is missing.

        For each node in the digest that we know, our entries above the
        digest's version, in ascending version order (nodes with none are
        left out).  With ``full`` (a TCP join, where the digest lists every
        node the joiner knows) also the whole state of every node the digest
        does not mention.
        """
        seen: set[str] = set()
        delta = []
        for entry in digest:
            seen.add(entry.id)
            node = self._nodes.get(entry.id)
            if node is None:
                continue
            entries = node.sorted_entries(entry.version)
            if entries:
                delta.append(DeltaEntry(node.id, node.addr, entries))
        if full:
            for node in self._nodes.values():
                if node.id not in seen:
                    delta.append(DeltaEntry(node.id, node.addr, node.sorted_entries()))
        return delta

    def local_delta(self) -> list[DeltaEntry]:
        """Return the local node's full state, as sent in a join or leave."""
        node = self._nodes[self.local_id]
        return [DeltaEntry(node.id, node.addr, node.sorted_entries())]

    def apply_digest(self, digest: Iterable[DigestEntry], sender: str | None = None) -> None:
        """
        Learn the nodes a digest mentions that we do not know, at version 0,
        so that our next digest asks for their whole state.

        A version of our own node above ours is a previous incarnation's:
        we re-version our entries above it (:meth:`_bump_local`).

        Nodes marked left are not learnt (they would be rediscovered forever),
        nor are recently departed nodes at a version we had already seen,
        unless the entry is about ``sender`` itself: a node's own digest
        proves it is alive.

        :param sender: the node that sent the digest (its header's ``node_id``).
        """
        for entry in digest:
            if entry.id == self.local_id:
                self._bump_local(entry.version)
                continue
            if entry.id in self._nodes or entry.left:
                continue
            if not self._may_return(entry.id, entry.version, sender):
                continue
            self._nodes[entry.id] = _Node(entry.id, entry.addr)
            self.watcher.on_join(entry.id)

    def apply_delta(self, delta: Iterable[DeltaEntry], sender: str | None = None) -> None:
        """
        Apply remote nodes' entries newer than the versions we hold.

        Entries about the local node are ignored, but one above our version
        makes us re-version ours above it (a previous incarnation's state,
        see :meth:`_bump_local`).  An unknown node is
        created (``on_join``) unless it recently departed and the delta has
        nothing newer than what we last saw of it (a ghost), and it is not
        ``sender`` itself.  Entries are applied in ascending version order
        (Go relies on the sender's order; sorting costs nothing and cannot
        lose an entry to a misordered delta).

        :param sender: the node that sent the delta, when known.
        """
        for node_delta in delta:
            if node_delta.id == self.local_id:
                self._bump_local(max((e.version for e in node_delta.entries), default=0))
                continue
            node = self._nodes.get(node_delta.id)
            if node is None:
                newest = max((e.version for e in node_delta.entries), default=0)
                if not self._may_return(node_delta.id, newest, sender):
                    continue
                node = _Node(node_delta.id, node_delta.addr)
                self._nodes[node.id] = node
                self.watcher.on_join(node.id)
            self._apply_entries(node, sorted(node_delta.entries, key=_version_key), node_delta.addr)

    def _may_return(self, node_id: str, version: int, sender: str | None) -> bool:
        departed = self._departed.get(node_id)
        if departed is None:
            return True
        if node_id != sender and version <= departed.version:
            return False
        del self._departed[node_id]
        return True

    def _bump_local(self, version: int) -> None:
        """
        A peer holds our node at ``version``, above ours: it is a previous
        incarnation's (started before ours with a clock ahead of ours now).
        Re-version every local entry, in order, above it, so that peers take
        our state (and, seeing our incarnation, drop the old one).
        """
        node = self._nodes[self.local_id]
        if version <= node.version or version > MAX_OBSERVED_VERSION:
            return
        entries = node.sorted_entries()
        node.version = version
        for entry in entries:
            node.version += 1
            node.entries[entry.key] = evolve(entry, version=node.version)
        self._local_changed()

    @staticmethod
    def _is_restart(node: _Node, entry: Entry) -> bool:
        """
        Whether ``entry`` (an incarnation) is a new incarnation of ``node``:
        one that differs from the incarnation we hold, or that arrives for a
        node we already hold other state of (a node publishes its
        incarnation first, so we would have it unless the node restarted
        from a version that did not publish one).
        """
        previous = node.entries.get(INCARNATION_KEY)
        if previous is not None:
            return previous.value != entry.value
        return node.left or bool(node.entries)

    def _restart(self, node: _Node, addr: str) -> None:
        """
        Forget what we hold of ``node``'s previous incarnation, as if it had
        expired and joined again: its entries, its left or unreachable
        status, its failure-detector history and its address (``addr``, the
        one the new state came with: a restarted pod often has a new IP).
        """
        node.addr = addr
        node.entries.clear()
        node.left = False
        node.unreachable = False
        node.expiry = None
        self.failure_detector.remove(node.id)
        self.watcher.on_expired(node.id)
        self.watcher.on_join(node.id)

    def _apply_entries(self, node: _Node, entries: list[Entry], addr: str) -> None:
        for entry in entries:
            if entry.version <= node.version:
                continue
            if entry.internal and entry.key == INCARNATION_KEY and self._is_restart(node, entry):
                self._restart(node, addr)
            node.entries[entry.key] = entry
            node.version = entry.version
            if not entry.internal:
                if entry.deleted:
                    self.watcher.on_delete_key(node.id, entry.key)
                else:
                    self.watcher.on_upsert_key(node.id, entry.key, entry.value)
            elif entry.key == LEFT_KEY:
                node.left = True
                node.expiry = self.clock.seconds() + self.node_expiry
                self.watcher.on_leave(node.id)
            elif entry.key == COMPACT_KEY:
                try:
                    compact_version = int(entry.value, 10)
                except ValueError:
                    # Go stops applying this node's delta here.
                    return
                self._compact_remote(node, compact_version)

    def _compact_remote(self, node: _Node, compact_version: int) -> None:
        for key, existing in list(node.entries.items()):
            if existing.version <= compact_version:
                del node.entries[key]
                # A tombstone was already reported; internal keys never are.
                if not existing.deleted and not existing.internal:
                    self.watcher.on_delete_key(node.id, key)

    # -- time --------------------------------------------------------------

    def update_liveness(self, threshold: float = DEFAULT_SUSPICION_THRESHOLD) -> None:
        """
        Mark remote nodes unreachable or reachable by the failure detector.

        A node whose suspicion exceeds ``threshold`` becomes unreachable and
        will expire after :attr:`node_expiry`; one at or below it is
        reachable again.  Left nodes are not checked.
        """
        for node in list(self._nodes.values()):
            if node.id == self.local_id or node.left:
                continue
            if self.failure_detector.suspicion_level(node.id) > threshold:
                if not node.unreachable:
                    node.unreachable = True
                    node.expiry = self.clock.seconds() + self.node_expiry
                    self.watcher.on_unreachable(node.id)
            elif node.unreachable:
                node.unreachable = False
                node.expiry = None
                self.watcher.on_reachable(node.id)

    def remove_expired(self) -> None:
        """
        Forget nodes whose expiry has passed, remembering them as departed.

        Also forgets departed records older than :attr:`departed_retention`.
        """
        now = self.clock.seconds()
        expired = [
            node for node in self._nodes.values() if node.expiry is not None and now > node.expiry
        ]
        for node in expired:
            del self._nodes[node.id]
            self._departed.pop(node.id, None)
            self._departed[node.id] = _Departed(node.version, now + self.departed_retention)
            self.watcher.on_expired(node.id)
            self.failure_detector.remove(node.id)
        while self._departed:
            node_id, departed = next(iter(self._departed.items()))
            if departed.until > now and len(self._departed) <= self.max_departed:
                break
            del self._departed[node_id]

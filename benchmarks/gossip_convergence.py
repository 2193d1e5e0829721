"""
How long an endpoint added to (and removed from) one node takes to reach every other node.

Two parts, both in this one process:

``real``
    3- and 5-node clusters of full :class:`~piko.server.service.PikoServerService`
    nodes on loopback (real UDP digests/deltas and TCP joins, Go's wire, the
    default 100 ms interval), on the global reactor.  Each round registers an
    upstream for endpoint ``bench`` in node 1's registry (what an agent
    connecting does) and takes, for every other node, the time until its
    :class:`~piko.cluster.nodes.ClusterState` shows node 1 serving ``bench``
    (event-driven: no polling); then the same for the removal.  The round's
    figure is the slowest node (pikobench's ``add_max_ms``/``remove_max_ms``);
    p50/p99 over ``--rounds``.

``sim``
    A simulated ``--sim-nodes`` (100) node cluster: real
    :class:`~piko.cluster.service.GossipService` objects (state, codec, round
    logic, Go transport) on one :class:`twisted.internet.task.Clock` with an
    in-memory network (UDP datagrams delivered at the end of each 1 ms step,
    TCP joins through :mod:`twisted.test.iosim`; no sockets).  Every node joins
    node 0; then, after membership converged, node 0 adds a key and we step
    until all nodes have it, then delete it and step until all have the
    tombstone.  Reports simulated ms and gossip rounds (ms / interval).

Run: ``python benchmarks/gossip_convergence.py [--rounds 20] [--sizes 3,5]
[--sim-nodes 100] [--sim-reps 5] [--skip-real] [--skip-sim]``.  It stops by
itself (every wait is bounded; an alarm kills it after ``--max-seconds``).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._bench import arm_watchdog, percentile, table

ENDPOINT = "bench"

# -- real loopback clusters -------------------------------------------------------


def run_real(sizes: list[int], rounds: int, timeout: float) -> list[list[object]]:
    """Start each cluster size in turn on the global reactor and measure ``rounds`` rounds."""
    from attrs import evolve
    from twisted.internet import reactor
    from twisted.internet.defer import Deferred, inlineCallbacks
    from twisted.internet.task import deferLater

    from piko.cluster.nodes import ClusterState, NodeStatus
    from piko.server.service import make_server_service
    from piko.test.e2e.harness import server_config

    rows: list[list[object]] = []

    def wait(cluster: ClusterState, predicate: Any) -> Deferred[float]:
        """Fire with ``time.perf_counter()`` once ``predicate(cluster)`` holds."""
        d: Deferred[float] = Deferred()
        if predicate(cluster):
            d.callback(time.perf_counter())
            return d

        def changed(state: ClusterState) -> None:
            if not d.called and predicate(state):
                d.callback(time.perf_counter())

        cluster.observe(changed)
        return d

    def bounded(d: Deferred[Any]) -> Deferred[Any]:
        return d.addTimeout(timeout, reactor)

    def serving(node_id: str, present: bool) -> Any:
        def check(cluster: ClusterState) -> bool:
            node = cluster.node(node_id)
            has = node is not None and node.endpoints.get(ENDPOINT, 0) > 0
            return has is present

        return check

    def active(others: set[str]) -> Any:
        def check(cluster: ClusterState) -> bool:
            return all(
                (n := cluster.node(o)) is not None and n.status is NodeStatus.ACTIVE for o in others
            )

        return check

    @inlineCallbacks
    def start(node_id: str, join: tuple[str, ...]) -> Any:
        config = server_config()
        config = evolve(
            config,
            cluster=evolve(config.cluster, node_id=node_id, join=join, join_timeout=5.0),
            grace_period=1.0,
        )
        service = make_server_service(config, reactor)
        service.startService()
        yield bounded(service.started)
        return service

    @inlineCallbacks
    def one_size(size: int) -> Any:
        nodes: list[Any] = []
        try:
            first = yield start("n1", ())
            nodes.append(first)
            for i in range(2, size + 1):
                node = yield start(f"n{i}", (first.gossip.addr,))
                nodes.append(node)
            ids = {n.cluster.local.id for n in nodes}
            t0 = time.perf_counter()
            for node in nodes:
                yield bounded(wait(node.cluster, active(ids - {node.cluster.local.id})))
            join_ms = (time.perf_counter() - t0) * 1000
            adds: list[float] = []
            removes: list[float] = []
            per_node_add: list[float] = []
            upstream = object()
            phase = random.Random(size)
            for _ in range(rounds):
                for present, samples in ((True, adds), (False, removes)):
                    waits = [wait(n.cluster, serving("n1", not present)) for n in nodes[1:]]
                    for d in waits:  # every node agrees on the previous state first
                        yield bounded(d)
                    # Start at a random phase of the gossip rounds, not right after one.
                    yield deferLater(reactor, phase.uniform(0, 0.2), lambda: None)
                    waits = [wait(n.cluster, serving("n1", present)) for n in nodes[1:]]
                    start_at = time.perf_counter()
                    if present:
                        first.registry.add(ENDPOINT, upstream)
                    else:
                        first.registry.remove(ENDPOINT, upstream)
                    times = []
                    for d in waits:
                        at = yield bounded(d)
                        times.append((at - start_at) * 1000)
                    samples.append(max(times))
                    if present:
                        per_node_add.extend(times)
            rows.append(
                [
                    f"{size} nodes",
                    rounds,
                    join_ms,
                    percentile(per_node_add, 50),
                    percentile(adds, 50),
                    percentile(adds, 99),
                    percentile(removes, 50),
                    percentile(removes, 99),
                ]
            )
        finally:
            for node in reversed(nodes):
                if node.running:
                    yield node.stopService()

    @inlineCallbacks
    def main() -> Any:
        try:
            for size in sizes:
                yield one_size(size)
        finally:
            reactor.stop()

    def failed(failure: Any) -> None:
        sys.stderr.write(failure.getTraceback())

    reactor.callWhenRunning(lambda: main().addErrback(failed))
    reactor.run()
    return rows


# -- simulated cluster on a Clock ---------------------------------------------------


def run_sim(nodes: int, reps: int, interval: float, max_sim_seconds: float) -> list[list[object]]:
    """Simulate ``reps`` clusters of ``nodes`` nodes; one row per repetition."""
    rows: list[list[object]] = []
    for rep in range(reps):
        rows.append(_sim_once(nodes, rep, interval, max_sim_seconds))
    return rows


def _sim_once(size: int, seed: int, interval: float, max_sim_seconds: float) -> list[object]:
    from twisted.internet.address import IPv4Address
    from twisted.internet.defer import Deferred, succeed
    from twisted.internet.testing import MemoryReactorClock
    from twisted.python.failure import Failure
    from twisted.test import iosim

    from piko.cluster.service import GossipService, GossipSettings
    from piko.cluster.state import NullWatcher

    step = 0.001

    class UDPPort:
        def __init__(self, net: SimNet, protocol: Any) -> None:
            self.net = net
            self.protocol = protocol

        def write(self, packet: bytes, addr: tuple[str, int]) -> None:
            self.net.queue.append((packet, addr))
            self.net.datagrams += 1

        def stopListening(self) -> None:
            """Nothing to release."""

    class SimNet(MemoryReactorClock):
        """A clock and an in-memory network: datagrams wait until the end of the step."""

        def __init__(self) -> None:
            super().__init__()
            self.ports: dict[tuple[str, int], UDPPort] = {}
            self.queue: list[tuple[bytes, tuple[str, int]]] = []
            self.datagrams = 0
            self.factories: dict[tuple[str, int], Any] = {}

        def listenUDP(self, port: int, protocol: Any, interface: str = "") -> UDPPort:
            udp = self.ports[(interface, port)] = UDPPort(self, protocol)
            return udp

        def listenTCP(self, port: int, factory: Any, backlog: int = 50, interface: str = "") -> Any:
            self.factories[(interface, port)] = factory
            return super().listenTCP(port, factory, backlog, interface)

        def deliver(self) -> None:
            for _ in range(1_000_000):  # bounded: replies are added while delivering
                if not self.queue:
                    return
                packet, addr = self.queue.pop(0)
                port = self.ports.get(addr)
                if port is not None:
                    port.protocol.datagramReceived(packet, ("127.0.0.1", 1))

        def connect(self, host: str, port: int, protocol: Any) -> Deferred[Any]:
            factory = self.factories[(host, port)]
            server = factory.buildProtocol(IPv4Address("TCP", host, port))
            pump = iosim.connect(
                server,
                iosim.FakeTransport(server, isServer=True),
                protocol,
                iosim.FakeTransport(protocol, isServer=False),
            )
            self.callLater(0, pump.flush)
            return succeed(protocol)

        def tick(self) -> None:
            self.advance(step)
            self.deliver()

    net = SimNet()
    rng = random.Random(seed)
    services = []
    for i in range(size):
        service = GossipService(
            net,
            GossipSettings(f"node-{i}", f"127.0.0.1:{10000 + i}", interval=interval),
            NullWatcher(),
            connect=net.connect,
            rng=random.Random(rng.random()),
        )
        service.startService()
        services.append(service)
    max_steps = round(max_sim_seconds / step)

    def run_until(predicate: Any) -> float:
        """Step until ``predicate()``; return simulated seconds taken (bounded)."""
        start = net.seconds()
        for _ in range(max_steps):
            if predicate():
                return net.seconds() - start
            net.tick()
        raise RuntimeError("simulation did not converge")

    # Everyone joins node 0 over (simulated) TCP, one after the other.
    origin = services[0]
    for service in services[1:]:
        joined = Deferred.fromCoroutine(service.join(["127.0.0.1:10000"]))
        for _ in range(50):
            if joined.called:
                break
            net.tick()
        if not joined.called or isinstance(joined.result, Failure):
            raise RuntimeError("simulated join failed")
    states = [s.state for s in services]
    assert all(s is not None for s in states)
    join_s = run_until(lambda: all(len(s.nodes()) == size for s in states))  # type: ignore[union-attr]

    # Let membership settle a little so the add starts at a random phase.
    for _ in range(rng.randrange(round(interval / step))):
        net.tick()

    key = "endpoint:" + ENDPOINT

    def everyone(value: str | None) -> bool:
        for state in states[1:]:
            assert state is not None
            node = state.node("node-0")
            entry = node.get(key) if node is not None else None
            if value is None:
                if entry is None or not entry.deleted:
                    return False
            elif entry is None or entry.deleted or entry.value != value:
                return False
        return True

    assert origin.state is not None
    sent_before = net.datagrams
    origin.state.upsert_local(key, "1")
    add_s = run_until(lambda: everyone("1"))
    add_datagrams = net.datagrams - sent_before
    origin.state.delete_local(key)
    remove_s = run_until(lambda: everyone(None))
    unreachable = sum(len(s.unreachable_nodes()) for s in states if s is not None)  # type: ignore[misc]
    for service in services:
        service.stopService()
    return [
        f"{size} nodes, seed {seed}",
        join_s * 1000,
        add_s * 1000,
        add_s / interval,
        remove_s * 1000,
        remove_s / interval,
        add_datagrams,
        unreachable,
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20, help="add+remove rounds per real cluster")
    parser.add_argument("--sizes", default="3,5", help="real cluster sizes")
    parser.add_argument("--timeout", type=float, default=10.0, help="bound on each real wait (s)")
    parser.add_argument("--sim-nodes", type=int, default=100)
    parser.add_argument("--sim-reps", type=int, default=5)
    parser.add_argument("--sim-interval", type=float, default=0.1, help="gossip interval (s)")
    parser.add_argument("--skip-real", action="store_true")
    parser.add_argument("--skip-sim", action="store_true")
    parser.add_argument("--max-seconds", type=float, default=600)
    args = parser.parse_args()
    arm_watchdog(args.max_seconds)

    if not args.skip_sim:
        began = time.perf_counter()
        rows = run_sim(args.sim_nodes, args.sim_reps, args.sim_interval, max_sim_seconds=120)
        print(
            f"simulated cluster on a Clock (interval {args.sim_interval * 1000:.0f} ms, "
            f"1 ms steps, {time.perf_counter() - began:.1f} s wall)"
        )
        headers = [
            "cluster",
            "join ms",
            "add ms",
            "add rounds",
            "remove ms",
            "remove rounds",
            "datagrams/add",
            "unreachable",
        ]
        adds = [float(r[2]) for r in rows]  # type: ignore[arg-type]
        removes = [float(r[4]) for r in rows]  # type: ignore[arg-type]
        print(table(headers, rows))
        print(
            f"median add {percentile(adds, 50):.0f} ms "
            f"({percentile(adds, 50) / 1000 / args.sim_interval:.1f} rounds), "
            f"median remove {percentile(removes, 50):.0f} ms "
            f"({percentile(removes, 50) / 1000 / args.sim_interval:.1f} rounds)"
        )
        print()

    if not args.skip_real:
        sizes = [int(s) for s in args.sizes.split(",") if s]
        rows = run_real(sizes, args.rounds, args.timeout)
        print("real loopback clusters, one process (Go wire: UDP + TCP, interval 100 ms)")
        headers = [
            "cluster",
            "rounds",
            "join ms",
            "add p50/node",
            "add p50",
            "add p99",
            "remove p50",
            "remove p99",
        ]
        print(table(headers, rows))
        print(
            "add/remove = ms until the slowest other node saw it; Go v0.9.0 (pikobench): "
            "3 nodes add 92-102 / remove ~102 ms, 5 nodes add 162 (worst 204) / remove 142 ms"
        )


if __name__ == "__main__":
    main()

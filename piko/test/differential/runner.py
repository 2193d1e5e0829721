"""
Runs batches over topologies and judges them.

Every topology is started once and kept; each batch runs first on its
reference (the all-Go topology of the same shape), then on every other
topology in turn, alone on the machine.  After each round the local
services must have no connection left open, and every process of the
topology must be back to its file-descriptor baseline and within a bound of
its RSS baseline.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from piko.test.differential import oracle
from piko.test.differential.client import run_exchange
from piko.test.differential.service import LocalHTTPService, LocalTCPService
from piko.test.differential.spec import Batch, Exchange, MiB, make_batch
from piko.test.differential.topology import TOPOLOGIES, Process, Topology, stop_all

#: A process may hold this many more descriptors after a round than at its
#: baseline (runtimes open a few lazily, once).
FD_SLACK = 4
#: A process's RSS may grow this much over its baseline and still count as back.
RSS_SLACK = 160 * MiB
SETTLE_BOUND = 5.0


@dataclass
class Mismatch:
    topology: str
    seed: int
    index: int
    exchange: Exchange
    problems: list[str]
    ours: dict[str, Any] = field(default_factory=dict)
    go: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 0

    @property
    def hang(self) -> bool:
        return any(p.startswith("hang") for p in self.problems)

    def summary(self) -> str:
        lines = [
            f"[{self.topology}] seed {self.seed} exchange {self.index}: {self.exchange.describe()}"
        ]
        lines += [f"    {p}" for p in self.problems]
        lines.append(
            f"    replay: python -m piko.test.differential --replay {self.seed} "
            f"--size {self.batch_size} --only {self.index} --topology {self.topology}"
        )
        return "\n".join(lines)

    def kind(self) -> str:
        """
        A coarse class for grouping: what went wrong (hang, client, service,
        resource), how the client's status and ending changed from Go's, and
        the traits of the exchange that decide its path through a proxy.
        """

        def status(record: dict[str, Any]) -> str:
            code = record.get("status")
            if code is None:
                return "no head"
            return str(code) if code in (502, 503, 504) else "service's answer"

        what = "hang" if self.hang else self.problems[0].split(":", 1)[0]
        e = self.exchange
        traits = f"{e.kind}"
        if e.kind == "http":
            traits += (
                f", request body {e.framing}, service {e.service}, response {e.response_framing}"
            )
        elif e.kind == "tcp":
            traits += ", half-close" if e.tcp_half_close else ""
        return (
            f"{what}: {status(self.go)} -> {status(self.ours)}, end {self.go.get('end')} -> "
            f"{self.ours.get('end')} ({traits})"
        )


@dataclass
class Report:
    exchanges: int = 0
    rounds: int = 0
    reference_failures: int = 0
    coverage: dict[str, int] = field(default_factory=dict)
    mismatches: list[Mismatch] = field(default_factory=list)
    resources: list[str] = field(default_factory=list)
    failed_seeds: set[int] = field(default_factory=set)
    started: float = field(default_factory=time.monotonic)

    @property
    def hangs(self) -> list[Mismatch]:
        return [m for m in self.mismatches if m.hang]

    @property
    def ok(self) -> bool:
        return not self.mismatches and not self.resources

    def text(self, limit: int = 20) -> str:
        lines = [
            f"exchanges run: {self.exchanges} in {self.rounds} rounds, "
            f"{time.monotonic() - self.started:.1f} s",
            f"mismatches: {len(self.mismatches)} (hangs: {len(self.hangs)})",
            f"resource problems: {len(self.resources)}",
            f"exchanges Go itself failed (not judged): {self.reference_failures}",
            "per topology, exchanges with: "
            + ", ".join(f"{k} {v}" for k, v in sorted(self.coverage.items())),
        ]
        classes: dict[tuple[str, str], list[Mismatch]] = {}
        for m in self.mismatches:
            classes.setdefault((m.topology, m.kind()), []).append(m)
        for (topology, kind), members in sorted(classes.items()):
            smallest = min(members, key=lambda m: m.exchange.body_size + m.exchange.response_size)
            lines.append(f"  {len(members)} x [{topology}] {kind}")
            lines.append("    smallest: " + smallest.summary().replace("\n", "\n    "))
        for m in self.mismatches[:limit]:
            lines.append(m.summary())
        lines += [f"RESOURCE {r}" for r in self.resources[:limit]]
        if self.failed_seeds:
            seeds = " ".join(str(s) for s in sorted(self.failed_seeds))
            lines.append(f"seeds to replay: {seeds}")
        return "\n".join(lines)


class Runner:
    """Owns the local services and the running topologies for one run."""

    def __init__(self, topology_names: Iterable[str], log: Callable[[str], None] = print) -> None:
        names = list(topology_names)
        wanted = set(names) | {TOPOLOGIES[n].reference for n in names}
        self.specs = [t for name, t in TOPOLOGIES.items() if name in wanted]
        self.log = log
        self.http = LocalHTTPService()
        self.tcp = LocalTCPService()
        self.topologies: dict[str, Topology] = {}
        self.baselines: dict[int, tuple[int, int]] = {}
        self.batches_run: dict[str, int] = {}
        self.report = Report()
        self.logdir = Path(tempfile.mkdtemp(prefix="piko-diff-"))

    async def start(self) -> None:
        await self.http.start()
        await self.tcp.start()
        started = time.monotonic()
        for spec in self.specs:
            self.topologies[spec.name] = Topology(
                spec, self.http.port, self.tcp.port, logdir=self.logdir
            )
        # Started side by side: a Python process takes seconds to import on a busy machine.
        results = await asyncio.gather(
            *(t.start() for t in self.topologies.values()), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result
        await self._settle()
        for topology in self.topologies.values():
            self._take_baselines(topology)
        self.log(
            f"started {', '.join(self.topologies)} in {time.monotonic() - started:.1f} s "
            f"(logs in {self.logdir})"
        )

    async def stop(self) -> None:
        stop_all([p for t in self.topologies.values() for p in t.processes()])
        await self.http.stop()
        await self.tcp.stop()

    def _take_baselines(self, topology: Topology) -> None:
        for process in topology.processes():
            if process.pid not in self.baselines:
                self.baselines[process.pid] = (process.fds(), process.rss())

    async def run_batch(self, batch: Batch) -> None:
        """Run ``batch`` on every reference, then on every topology; judge each."""
        observed: dict[str, list[dict[str, Any]]] = {}
        for name, topology in self.topologies.items():
            observed[name] = await self._run_on(topology, batch)
        for name, topology in self.topologies.items():
            reference = observed[topology.spec.reference]
            for i, exchange in enumerate(batch.exchanges):
                mine = observed[name][i]
                if name != topology.spec.reference and oracle.reference_failed(
                    exchange, reference[i]
                ):
                    self.report.reference_failures += 1
                if name == topology.spec.reference:
                    # Go against itself: only a hang counts (Go ends some early answers
                    # short as if whole, see oracle.go_completes_cut_early_answer).
                    problems = [
                        p
                        for p in oracle.compare(exchange, topology.spec, mine, mine)
                        if p.startswith("hang")
                    ]
                else:
                    problems = oracle.compare(exchange, topology.spec, mine, reference[i])
                if problems:
                    index = int(exchange.key.rsplit("-", 1)[1])
                    self.report.mismatches.append(
                        Mismatch(
                            name,
                            batch.seed,
                            index,
                            exchange,
                            problems,
                            ours=mine["client"],
                            go=reference[i]["client"],
                            batch_size=batch.size,
                        )
                    )
                    self.report.failed_seeds.add(batch.seed)
        self.report.exchanges += len(batch.exchanges) * len(self.topologies)
        self._count(batch)
        self.report.rounds += 1

    def _count(self, batch: Batch) -> None:
        traits: list[str] = []
        if batch.cold:
            traits.append("cold agent")
        for e in batch.exchanges:
            traits.append(e.kind)
            if e.kind == "http":
                traits += [f"body {e.framing}", f"client {e.client}", f"service {e.service}"]
                traits += ["expect 100-continue"] * e.expect_continue
                traits += ["trailers"] * bool(e.trailers)
                traits += ["> 1 MiB"] * (max(e.body_size, e.response_size) > MiB)
            if e.tcp_half_close:
                traits.append("tcp half-close")
        for trait in traits:
            self.report.coverage[trait] = self.report.coverage.get(trait, 0) + 1

    async def _run_on(self, topology: Topology, batch: Batch) -> list[dict[str, Any]]:
        name = topology.spec.name
        if batch.cold and self.batches_run.get(name, 0):
            await topology.restart_http_agent()
            await self._settle()
            self._take_baselines(topology)
        self.batches_run[name] = self.batches_run.get(name, 0) + 1
        self.http.expect(batch.exchanges)
        self.tcp.expect(batch.exchanges)
        clients = await asyncio.gather(
            *(run_exchange(e, topology.entry_port, topology.forward_port) for e in batch.exchanges)
        )
        self.http.end_round()
        self.tcp.end_round()
        if await self._settle():
            keys = sorted(self.http.open_keys() | self.tcp.open_keys())
            self.http.quarantine()
            self.tcp.quarantine()
            self._resource(
                batch,
                name,
                f"connections to the local services still open {SETTLE_BOUND:.0f} s after "
                f"the round, last exchanges on them: {', '.join(keys)}",
            )
        await self._check_processes(topology, batch)
        records: dict[str, list[dict[str, Any]]] = {}
        for service in (self.http, self.tcp):
            records.update(service.records)
        return [
            {"client": c, "service": records.get(e.key, []), "topology": topology.spec}
            for e, c in zip(batch.exchanges, clients, strict=True)
        ]

    async def _settle(self) -> int:
        """Wait (bounded) until no connection to the local services is open; return how many are."""
        deadline = time.monotonic() + SETTLE_BOUND
        while time.monotonic() < deadline:
            if not (self.http.open_connections or self.tcp.open_connections):
                return 0
            await asyncio.sleep(0.05)
        return self.http.open_connections + self.tcp.open_connections

    async def _check_processes(self, topology: Topology, batch: Batch) -> None:
        deadline = time.monotonic() + SETTLE_BOUND
        pending = list(topology.processes())
        while pending and time.monotonic() < deadline:
            pending = [p for p in pending if not self._back(p)]
            if pending:
                await asyncio.sleep(0.05)
        for process in pending:
            if not process.alive():
                problem = f"{process.name} exited: {process.tail(5)}"
            else:
                fds, rss = self.baselines[process.pid]
                problem = (
                    f"{process.name}: {process.fds()} fds (baseline {fds}), "
                    f"RSS {process.rss() // MiB} MiB (baseline {rss // MiB} MiB)"
                )
            self._resource(batch, topology.spec.name, problem)

    def _back(self, process: Process) -> bool:
        if not process.alive():
            return False
        fds, rss = self.baselines[process.pid]
        return process.fds() <= fds + FD_SLACK and process.rss() <= rss + RSS_SLACK

    def _resource(self, batch: Batch, topology: str, problem: str) -> None:
        self.report.resources.append(f"[{topology}] seed {batch.seed}: {problem}")
        self.report.failed_seeds.add(batch.seed)


async def run(
    topology_names: Iterable[str],
    seeds: Iterable[int],
    *,
    deadline: float | None = None,
    only: int | None = None,
    big: bool = True,
    sizes: Iterable[int | None] | None = None,
    log: Callable[[str], None] = print,
) -> Report:
    """
    Run the batches of ``seeds`` (until ``deadline``, a ``time.monotonic``
    value, if given) over the topologies and their references; return the report.
    """
    runner = Runner(topology_names, log)
    size_list = list(sizes) if sizes is not None else None
    try:
        await runner.start()
        for n, seed in enumerate(seeds):
            if deadline is not None and time.monotonic() > deadline:
                break
            size = size_list[n % len(size_list)] if size_list else None
            batch = make_batch(seed, size=size, big=big)
            if only is not None:
                batch.exchanges = batch.exchanges[only : only + 1]
            started = time.monotonic()
            before = len(runner.report.mismatches)
            await runner.run_batch(batch)
            log(
                f"seed {seed}: {len(batch.exchanges)} exchanges"
                f"{' (cold)' if batch.cold else ''} x {len(runner.topologies)} topologies, "
                f"{len(runner.report.mismatches) - before} mismatches, "
                f"{time.monotonic() - started:.1f} s"
            )
    finally:
        await runner.stop()
        if runner.report.ok:  # logs are kept only for a run that has something to show
            shutil.rmtree(runner.logdir, ignore_errors=True)
    return runner.report

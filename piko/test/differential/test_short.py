# -*- test-case-name: piko.test.differential.test_short -*-
"""
The short seeded differential run: the same generated exchanges through the
all-Go topology and through every mixed and all-ours one, compared.

Real processes on loopback (ours via ``python -m piko``, Go's v0.9.0 binary);
skipped, saying why, where the Go binary is absent.  A failure prints the
mismatches with the command that replays each.  The long run is
``python -m piko.test.differential --duration 1200 --seed N``.
"""

from __future__ import annotations

import asyncio

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from piko.test.differential import client
from piko.test.differential.runner import run
from piko.test.differential.topology import go_binary

#: The fixed master seed of the short run and the batch sizes it forces: a
#: first (cold) round of 20, then 50 at once on warm agents, then 5.
SHORT_SEED = 20261204
SHORT_SIZES = (20, 50, 5)
#: The per-exchange base bound for the short run: its bodies are at most 600 KiB.
SHORT_BOUND = 8.0

SINGLE_NODE = ("go-server+ours-agent", "ours-server+go-agent", "ours")
CLUSTERS = ("ours-cluster", "mixed-cluster", "mixed-cluster-rev")


def _seeds(master: int, count: int) -> list[int]:
    return [master * 100 + n for n in range(count)]


class ShortDifferentialRun(SynchronousTestCase):
    def setUp(self) -> None:
        if go_binary() is None:
            raise SkipTest(
                "Go Piko binary not found at ../shared/tools/go-piko/piko: set PIKO_GO_BINARY"
            )
        bound = client.BASE_BOUND
        client.BASE_BOUND = SHORT_BOUND
        self.addCleanup(setattr, client, "BASE_BOUND", bound)

    def short_run(self, topologies: tuple[str, ...], master: int) -> None:
        lines: list[str] = []
        report = asyncio.run(
            run(
                topologies,
                _seeds(master, len(SHORT_SIZES)),
                big=False,
                sizes=SHORT_SIZES,
                log=lines.append,
            )
        )
        if not report.ok:
            self.fail("\n".join([*lines, report.text(limit=10)]))

    def test_single_node(self) -> None:
        """Go and our servers and agents in every pairing answer the batch as all-Go does."""
        self.short_run(SINGLE_NODE, SHORT_SEED)

    def test_clusters(self) -> None:
        """Two-node clusters, ours and mixed, entered at the node without the upstream."""
        self.short_run(CLUSTERS, SHORT_SEED + 1)

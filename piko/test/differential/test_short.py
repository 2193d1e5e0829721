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

from twisted.trial.unittest import SynchronousTestCase

from piko.test.differential import client
from piko.test.differential.runner import run
from piko.test.interop import require_go_piko

#: The fixed master seed of the short run and the batch sizes it forces: a
#: first (cold) round of 20, then 50 at once on warm agents, then 5.
SHORT_SEED = 20261204
SHORT_SIZES = (20, 50, 5)
#: The per-exchange base bound for the short run: its bodies are at most 600 KiB.
SHORT_BOUND = 8.0

#: Every topology but the go-twin calibrations; one run, so they start side by side.
TOPOLOGIES = (
    "go-server+ours-agent",
    "ours-server+go-agent",
    "ours",
    "ours-cluster",
    "mixed-cluster",
    "mixed-cluster-rev",
)


class ShortDifferentialRun(SynchronousTestCase):
    def setUp(self) -> None:
        require_go_piko()
        bound = client.BASE_BOUND
        client.BASE_BOUND = SHORT_BOUND
        self.addCleanup(setattr, client, "BASE_BOUND", bound)

    def test_every_topology_answers_as_all_go(self) -> None:
        """
        Go and our servers, agents and forwards in every pairing, and two-node
        clusters entered at the node without the upstream, answer a seeded
        batch as the all-Go topology of the same shape does, with no hang and
        every process back to its descriptor baseline.
        """
        lines: list[str] = []
        seeds = [SHORT_SEED * 100 + n for n in range(len(SHORT_SIZES))]
        report = asyncio.run(run(TOPOLOGIES, seeds, big=False, sizes=SHORT_SIZES, log=lines.append))
        if not report.ok:
            self.fail("\n".join([*lines, report.text(limit=10)]))

# -*- test-case-name: piko.test.hostile.test_table -*-
"""``docs/hostile-input.md``: every row names a test that exists."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

DOC = Path(__file__).resolve().parents[3] / "docs" / "hostile-input.md"
_TEST_ID = re.compile(r"`(piko\.test\.[\w.]+)`")


class TableTests(SynchronousTestCase):
    def test_every_row_names_an_existing_test(self) -> None:
        """Each table row cites a test, and each cited test can be loaded."""
        rows = [line for line in DOC.read_text().splitlines() if line.startswith("| ")]
        rows = [row for row in rows if not row.startswith("| Input")]
        self.assertGreater(len(rows), 50)
        for row in rows:
            match = _TEST_ID.search(row)
            self.assertIsNotNone(match, row)
            assert match is not None
            module_name, class_name, method = match.group(1).rsplit(".", 2)
            cls = getattr(importlib.import_module(module_name), class_name)
            self.assertTrue(callable(getattr(cls, method, None)), match.group(1))

"""
Access to the golden transcripts recorded from Go Piko v0.9.0.

The transcripts live outside the repository, in ``shared/interop`` next to
the checkout (CI lays a copy of ``shared/`` beside the clone).  Set
``PIKO_INTEROP_DIR`` to point elsewhere.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SkipTest


def interop_dir() -> Path:
    """
    Return the directory holding the Go Piko transcripts.

    :raises SkipTest: when no copy of the transcripts can be found, so that a
        checkout without ``shared/`` still runs every other test.
    """
    env = os.environ.get("PIKO_INTEROP_DIR")
    candidates = [Path(env)] if env else []
    repo_root = Path(__file__).resolve().parents[2]
    candidates.append(repo_root.parent / "shared" / "interop")
    for candidate in candidates:
        if (candidate / "MANIFEST.json").is_file():
            return candidate
    raise SkipTest("Go Piko transcripts not found: set PIKO_INTEROP_DIR to shared/interop")


def read_bytes(relative: str) -> bytes:
    """Return the bytes of a transcript file, by its path inside the interop directory."""
    return (interop_dir() / relative).read_bytes()


def read_json(relative: str) -> Any:
    """Return a decoded JSON transcript file."""
    return json.loads((interop_dir() / relative).read_text())


def read_jsonl(relative: str) -> list[Any]:
    """Return the records of a JSON-lines transcript file."""
    lines = (interop_dir() / relative).read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]

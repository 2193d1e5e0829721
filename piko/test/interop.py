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


def websocket_payloads(raw: bytes, head_len: int) -> bytes:
    """
    Join the payloads of the binary WebSocket frames in a captured byte stream.

    A deliberately small, independent RFC 6455 reader (unmasking included)
    used only to turn recorded captures into the byte stream the yamux layer
    saw, so the yamux tests do not depend on our own WebSocket code.

    :param raw: the bytes one side sent, starting with its HTTP head.
    :param head_len: the length of that head.
    """
    out = bytearray()
    offset = head_len
    while offset < len(raw):
        opcode = raw[offset] & 0x0F
        length = raw[offset + 1] & 0x7F
        masked = raw[offset + 1] & 0x80
        offset += 2
        if length == 126:
            length = int.from_bytes(raw[offset : offset + 2], "big")
            offset += 2
        elif length == 127:
            length = int.from_bytes(raw[offset : offset + 8], "big")
            offset += 8
        mask = b""
        if masked:
            mask = raw[offset : offset + 4]
            offset += 4
        payload = raw[offset : offset + length]
        offset += length
        if mask:
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        if opcode in (0, 2):
            out += payload
    return bytes(out)


def go_piko_binary() -> Path | None:
    """
    The real Go Piko v0.9.0 binary: ``$PIKO_GO_BINARY``, else ``shared/tools/go-piko/piko``
    beside the checkout (CI has it there); ``None`` when neither is an executable file.
    """
    env = os.environ.get("PIKO_GO_BINARY")
    candidates = [Path(env)] if env else []
    repo_root = Path(__file__).resolve().parents[2]
    candidates.append(repo_root.parent / "shared" / "tools" / "go-piko" / "piko")
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def require_go_piko() -> Path:
    """
    The Go Piko binary for a test that runs against it.

    :raises SkipTest: when it is absent, on a developer's machine.
    :raises RuntimeError: when it is absent under ``CI=true``: CI has it, and a check that
        quietly skipped there would prove nothing.
    """
    binary = go_piko_binary()
    if binary is not None:
        return binary
    reason = "Go Piko binary not found at ../shared/tools/go-piko/piko: set PIKO_GO_BINARY"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        raise RuntimeError(reason)
    raise SkipTest(reason)

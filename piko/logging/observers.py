# -*- test-case-name: piko.test.test_logging -*-
"""
Log observers for ``twisted.logger`` events.

:func:`go_json_observer` writes one JSON object per line with the keys Go
Piko's zap logger uses (``level``, ``ts``, ``subsystem``, ``msg``, then the
event's own fields), so the same log pipelines parse both; Twisted's own
JSON observer writes its internal event structure, which nothing downstream
expects.  :func:`readable_observer` is for a terminal.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import IO, Any

from twisted.logger import (
    ILogFilterPredicate,
    ILogObserver,
    LogEvent,
    LogLevel,
    PredicateResult,
    formatEvent,
)
from zope.interface import implementer, provider

_LEVELS = {"debug": "debug", "info": "info", "warn": "warn", "error": "error", "critical": "error"}


def _subsystem(event: LogEvent) -> str:
    namespace = str(event.get("log_namespace", ""))
    if namespace.startswith("piko."):
        # piko.server.upstream_port.UpstreamSession -> server.upstream_port
        parts = namespace.split(".")[1:]
        if parts and parts[-1][:1].isupper():
            parts = parts[:-1]
        return ".".join(parts)
    return namespace


def _fields(event: LogEvent) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for key, value in event.items():
        if key.startswith("log_") or key in ("message", "system", "time", "isError", "format"):
            continue
        if isinstance(value, (str, int, float, bool)) or value is None:
            fields[key] = value
        elif isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            fields[key] = list(value)
        elif isinstance(value, dict):
            # Structured fields (the access log's ``request``) stay objects, as zap writes them.
            fields[key] = value
    return fields


def _timestamp(seconds: float) -> str:
    """Go's ``2006-01-02T15:04:05.999Z07:00`` in UTC."""
    whole = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    millis = f"{seconds % 1:.3f}"[1:].rstrip("0").rstrip(".")
    return f"{whole}{millis}Z"


def go_json_observer(stream: IO[str]) -> ILogObserver:
    """One Go-style JSON object per line on ``stream``."""

    @provider(ILogObserver)
    def observe(event: LogEvent) -> None:
        level = event.get("log_level")
        record: dict[str, Any] = {
            "level": _LEVELS.get(getattr(level, "name", "info"), "info"),
            "ts": _timestamp(float(event.get("log_time", time.time()))),
            "subsystem": _subsystem(event),
            "msg": formatEvent(event),
        }
        record.update(_fields(event))
        failure = event.get("log_failure")
        if failure is not None:
            record["error"] = failure.getErrorMessage()
        stream.write(json.dumps(record, default=str) + "\n")
        stream.flush()

    return observe


def readable_observer(stream: IO[str]) -> ILogObserver:
    """``ts LEVEL subsystem: message`` lines for a terminal."""

    @provider(ILogObserver)
    def observe(event: LogEvent) -> None:
        level = _LEVELS.get(getattr(event.get("log_level"), "name", "info"), "info")
        stamp = _timestamp(float(event.get("log_time", time.time())))
        line = f"{stamp} {level.upper():5} {_subsystem(event)}: {formatEvent(event)}"
        failure = event.get("log_failure")
        if failure is not None:
            line += "\n" + failure.getTraceback()
        stream.write(line + "\n")
        stream.flush()

    return observe


@implementer(ILogFilterPredicate)
class SubsystemLevelPredicate:
    """
    Go's ``--log.level`` and ``--log.subsystems``: a minimum level, except that
    the named subsystems (exact names, as Go matches them, e.g. ``proxy.access``
    or ``server.upstream_port``) log at every level.
    """

    def __init__(self, level: LogLevel, subsystems: Iterable[str] = ()) -> None:
        self.level = level
        self.subsystems = frozenset(subsystems)

    def __call__(self, event: LogEvent) -> PredicateResult:
        level = event.get("log_level", LogLevel.info)
        if level >= self.level:
            return PredicateResult.maybe
        if self.subsystems and _subsystem(event) in self.subsystems:
            return PredicateResult.yes
        return PredicateResult.no


LEVELS = {
    "debug": LogLevel.debug,
    "info": LogLevel.info,
    "warn": LogLevel.warn,
    "error": LogLevel.error,
}


def kept_from(level: str, subsystems: Iterable[str], subsystem: str) -> LogLevel | None:
    """
    The lowest level :class:`SubsystemLevelPredicate` keeps for ``subsystem``.

    :return: ``None`` when every level is kept (the subsystem is named).
    """
    if subsystem in subsystems:
        return None
    return LEVELS.get(level, LogLevel.info)

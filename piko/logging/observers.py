# -*- test-case-name: piko.test.test_logging -*-
"""
Log observers for ``twisted.logger`` events: Go Piko's JSON lines, or a console line.

:func:`go_json_observer` writes one JSON object per line with the keys Go
Piko's zap logger uses (``level``, ``ts``, ``subsystem``, ``msg``, then the
event's own fields, compact as zap writes them), so the same log pipelines
parse both; Twisted's own JSON observer writes its internal event structure,
which nothing downstream expects.

:func:`console_observer` is for a person at a terminal: the same event as one
line, ``ts LEVEL subsystem: message key=value ...``, its structured fields
after the message rather than lost, and an access record as a one-line
summary in the manner of ngrok (``GET /path 200 12.3 ms ep=my-endpoint``).

Both write ``ts`` with exactly three fractional digits (``…:54.630Z``).  Go's
layout (``2006-01-02T15:04:05.999Z07:00``) drops trailing zeros, which makes
lines of one log ragged and sorts ``54.63`` after ``54.625`` as text; a fixed
width is still RFC 3339 and parses with Go's layout.

Call sites pass Go's field names as Python keywords (``endpoint_id=``); both
observers write them as Go does (``endpoint-id``, see :data:`GO_KEYS`).

Event keys that start with ``log_`` are Twisted's and never written as fields;
:data:`ACCESS_SUMMARY` (``log_access``) uses that to carry what only the
console line shows (the endpoint and client of a server access record, and
the duration in seconds), so the JSON record stays exactly Go's.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Mapping
from string import Formatter
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

__all__ = [
    "ACCESS_SUMMARY",
    "GO_KEYS",
    "LEVELS",
    "SubsystemLevelPredicate",
    "console_observer",
    "format_console",
    "format_duration_ms",
    "format_json",
    "go_json_observer",
    "kept_from",
    "readable_observer",
    "subsystem",
    "timestamp",
]

#: The event key of an access record's console-only summary: a mapping with
#: ``seconds`` (float), and optionally ``endpoint-id`` and ``client-ip``; or a
#: function returning one, so that only the console pays for it.
ACCESS_SUMMARY = "log_access"

_LEVEL_NAMES = {"debug": "debug", "info": "info", "warn": "warn", "error": "error"}

#: Keys of legacy (``twisted.python.log``) events that are not fields.
_NOT_FIELDS = frozenset({"message", "system", "time", "isError", "format", "why", "failure"})


def _level_name(event: LogEvent) -> str:
    name = getattr(event.get("log_level"), "name", "info")
    return _LEVEL_NAMES.get(name, "error" if name == "critical" else "info")


def subsystem(event: LogEvent) -> str:
    """
    The ``subsystem`` of an event: its logger namespace, shortened for piko's own
    (``piko.server.upstream_port.UpstreamSession`` -> ``server.upstream_port``).
    """
    namespace = str(event.get("log_namespace", ""))
    if namespace.startswith("piko."):
        parts = namespace.split(".")[1:]
        if parts and parts[-1][:1].isupper():
            parts = parts[:-1]
        return ".".join(parts)
    return namespace


#: Go's field names for the keyword arguments call sites pass (a Python keyword cannot
#: hold a ``-``).  Go also has ``local_conns`` and ``avg_conns``, which stay as they are.
GO_KEYS = {
    "endpoint_id": "endpoint-id",
    "client_ip": "client-ip",
    "node_id": "node-id",
    "node_ids": "node-ids",
    "tenant_id": "tenant-id",
    "token_endpoints": "token-endpoints",
    "bind_addr": "bind-addr",
    "advertise_addr": "advertise-addr",
    "auth_type": "auth-type",
}


def _fields(event: LogEvent) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for key, value in event.items():
        if key.startswith("log_") or key in _NOT_FIELDS:
            continue
        key = GO_KEYS.get(key, key)
        if isinstance(value, (str, int, float, bool)) or value is None:
            fields[key] = value
        elif isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            fields[key] = list(value)
        elif isinstance(value, dict):
            # Structured fields (the access log's ``request``) stay objects, as zap writes them.
            fields[key] = value
    return fields


def timestamp(seconds: float) -> str:
    """``2006-01-02T15:04:05.000Z``: UTC, always three fractional digits."""
    millis = int(seconds * 1000)
    whole = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(millis // 1000))
    return f"{whole}.{millis % 1000:03d}Z"


def _failure_fields(event: LogEvent, fields: dict[str, Any]) -> None:
    failure = event.get("log_failure")
    if failure is not None:
        fields.setdefault("error", failure.getErrorMessage())
        fields.setdefault("stacktrace", failure.getTraceback())


def format_json(event: LogEvent) -> str:
    """One event as Go Piko's zap writes it (without the newline)."""
    record: dict[str, Any] = {
        "level": _level_name(event),
        "ts": timestamp(float(event.get("log_time", time.time()))),
        "subsystem": subsystem(event),
        "msg": formatEvent(event),
    }
    fields = _fields(event)
    _failure_fields(event, fields)
    for key, value in fields.items():
        # zap writes a repeated key twice; a JSON object cannot, so the envelope wins.
        record.setdefault(key, value)
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False, default=str)


def _needs_quotes(text: str) -> bool:
    return not text or any(c in text for c in ' ="\\') or not text.isprintable()


def _console_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        value = ",".join(value)
    elif isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
    elif not isinstance(value, str):
        return str(value)
    return json.dumps(value, ensure_ascii=False) if _needs_quotes(value) else value


def format_duration_ms(seconds: float) -> str:
    """A duration for people: ``0.42 ms``, ``12.3 ms``, ``1.25 s``."""
    ms = seconds * 1000
    if ms < 1:
        return f"{ms:.2f} ms"
    if ms < 1000:
        return f"{ms:.1f} ms"
    return f"{seconds:.2f} s"


def _access_summary(event: LogEvent, fields: dict[str, Any]) -> str | None:
    """``GET /path 200 12.3 ms`` for an access record (its fields consumed), else None."""
    request = fields.get("request")
    if not isinstance(request, dict) or "status" not in request:
        return None
    summary = event.get(ACCESS_SUMMARY) or {}
    if callable(summary):
        summary = summary()
    if not isinstance(summary, Mapping):
        summary = {}
    seconds = summary.get("seconds")
    duration = format_duration_ms(seconds) if seconds is not None else request.get("duration")
    del fields["request"]
    for key in ("endpoint-id", "client-ip"):
        value = summary.get(key)
        if value and key not in fields:
            fields[key] = value
    endpoint = fields.pop("endpoint-id", None)
    ordered: dict[str, Any] = {"ep": endpoint} if endpoint else {}
    ordered.update(fields)
    fields.clear()
    fields.update(ordered)
    method, path = request.get("method", "-"), request.get("path", "-")
    return f"{method} {path} {request.get('status')} {duration}"


def _format_names(format: object) -> set[str]:
    """The event keys a (third-party) format string interpolates: ``{reactor}`` -> reactor."""
    if not isinstance(format, str) or "{" not in format:
        return set()
    try:
        parsed = list(Formatter().parse(format))
    except ValueError:
        return set()
    return {re.split(r"[.\[]", name, maxsplit=1)[0] for _, name, _, _ in parsed if name}


def format_console(event: LogEvent) -> str:
    """
    One event as a console line (without the final newline):
    ``ts LEVEL subsystem: message key=value ...``, a failure's traceback on the lines after.
    Empty fields, and fields a message already interpolates (Twisted's own), are left out.
    """
    level = _level_name(event)
    stamp = timestamp(float(event.get("log_time", time.time())))
    fields = _fields(event)
    for name in _format_names(event.get("log_format")):
        fields.pop(GO_KEYS.get(name, name), None)
    message = _access_summary(event, fields) or formatEvent(event)
    failure = event.get("log_failure")
    if failure is not None:
        fields.setdefault("error", failure.getErrorMessage())
    pairs = "".join(
        f" {key}={_console_value(value)}"
        for key, value in fields.items()
        if value is not None and value != "" and value != []
    )
    line = f"{stamp} {level.upper():5} {subsystem(event)}: {message}{pairs}"
    if failure is not None:
        line += "\n" + failure.getTraceback().rstrip("\n")
    return line


def go_json_observer(stream: IO[str]) -> ILogObserver:
    """One Go-style JSON object per line on ``stream``."""

    @provider(ILogObserver)
    def observe(event: LogEvent) -> None:
        stream.write(format_json(event) + "\n")
        stream.flush()

    return observe


def console_observer(stream: IO[str]) -> ILogObserver:
    """One :func:`format_console` line per event on ``stream``."""

    @provider(ILogObserver)
    def observe(event: LogEvent) -> None:
        stream.write(format_console(event) + "\n")
        stream.flush()

    return observe


#: The console observer's former name.
readable_observer = console_observer


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
        if self.subsystems and subsystem(event) in self.subsystems:
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

# -*- test-case-name: piko.test.config.test_duration -*-
"""
Go duration strings (``time.ParseDuration`` / ``Duration.String``).

Piko's flags and YAML files spell durations the Go way (``20s``, ``1h30m``,
``100ms``).  Configuration files written for the Go binary must load
unchanged, so the grammar and the error messages follow Go's exactly; the
models hold the result as a float number of seconds, which is what
``reactor.callLater`` and friends take.
"""

from __future__ import annotations

import json
from decimal import Decimal

__all__ = ["format_duration", "parse_duration"]

_UNITS: dict[str, int] = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,  # U+00B5 micro sign
    "\u03bcs": 1_000,  # U+03BC Greek mu
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60 * 1_000_000_000,
    "h": 3600 * 1_000_000_000,
}


def _quote(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def parse_duration(text: str) -> float:
    """
    Parse a Go duration string into seconds.

    :param text: a string such as ``"1h30m"``, ``"1.5s"``, ``"-100ms"`` or ``"0"``.
    :return: the duration in seconds.
    :raises ValueError: with Go's message (``time: invalid duration "x"``,
        ``time: missing unit in duration "5"``, ``time: unknown unit "x" in
        duration "5x"``) so operators see the same text as with Go Piko.
    """
    orig = text
    s = text
    negative = False
    if s and s[0] in "+-":
        negative = s[0] == "-"
        s = s[1:]
    if s == "0":
        return 0.0
    if not s:
        raise ValueError(f"time: invalid duration {_quote(orig)}")
    total = Decimal(0)
    while s:
        if not (s[0] == "." or s[0].isdigit()):
            raise ValueError(f"time: invalid duration {_quote(orig)}")
        i = 0
        while i < len(s) and s[i].isdigit():
            i += 1
        whole = s[:i]
        s = s[i:]
        fraction = ""
        if s.startswith("."):
            s = s[1:]
            i = 0
            while i < len(s) and s[i].isdigit():
                i += 1
            fraction = s[:i]
            s = s[i:]
        if not whole and not fraction:
            raise ValueError(f"time: invalid duration {_quote(orig)}")
        i = 0
        while i < len(s) and not (s[i] == "." or s[i].isdigit()):
            i += 1
        unit = s[:i]
        s = s[i:]
        if not unit:
            raise ValueError(f"time: missing unit in duration {_quote(orig)}")
        if unit not in _UNITS:
            raise ValueError(f"time: unknown unit {_quote(unit)} in duration {_quote(orig)}")
        number = Decimal(f"{whole or '0'}.{fraction or '0'}")
        total += number * _UNITS[unit]
    nanoseconds = int(total)
    if negative:
        nanoseconds = -nanoseconds
    return nanoseconds / 1_000_000_000


def _fmt_frac(value: int, precision: int) -> str:
    digits = str(value).rjust(precision, "0")
    whole, frac = digits[:-precision] or "0", digits[-precision:].rstrip("0")
    return f"{whole}.{frac}" if frac else whole


def format_duration(seconds: float) -> str:
    """
    Format seconds the way Go's ``time.Duration.String`` does.

    Used for the defaults shown in ``--help`` so that they read like Go
    Piko's (``30s``, ``1m0s``, ``100ms``).

    :param seconds: a duration in seconds.
    """
    ns = round(seconds * 1_000_000_000)
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    ns = abs(ns)
    if ns < 1_000:
        return f"{sign}{ns}ns"
    if ns < 1_000_000:
        return f"{sign}{_fmt_frac(ns, 3)}\u00b5s"
    if ns < 1_000_000_000:
        return f"{sign}{_fmt_frac(ns, 6)}ms"
    hours, rest = divmod(ns, 3600 * 1_000_000_000)
    minutes, rest = divmod(rest, 60 * 1_000_000_000)
    secs = _fmt_frac(rest, 9)
    if hours:
        return f"{sign}{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{sign}{minutes}m{secs}s"
    return f"{sign}{secs}s"

"""
Logging for every program: Go Piko's JSON lines, or a console line on a terminal.

:mod:`piko.logging.observers` formats events; :mod:`piko.logging.setup` is the
one setup ``piko`` and the twistd plugins share.
"""

from piko.logging.observers import (
    ACCESS_SUMMARY,
    SubsystemLevelPredicate,
    console_observer,
    format_console,
    format_json,
    go_json_observer,
    kept_from,
    readable_observer,
)
from piko.logging.setup import make_observer, start_logging, use_for_twistd

__all__ = [
    "ACCESS_SUMMARY",
    "SubsystemLevelPredicate",
    "console_observer",
    "format_console",
    "format_json",
    "go_json_observer",
    "kept_from",
    "make_observer",
    "readable_observer",
    "start_logging",
    "use_for_twistd",
]

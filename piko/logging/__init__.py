"""Log observers: Go Piko's JSON lines for production, readable lines for a terminal."""

from piko.logging.observers import (
    SubsystemLevelPredicate,
    go_json_observer,
    kept_from,
    readable_observer,
)

__all__ = ["SubsystemLevelPredicate", "go_json_observer", "kept_from", "readable_observer"]

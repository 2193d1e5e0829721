"""Log observers: Go Piko's JSON lines for production, readable lines for a terminal."""

from piko.logging.observers import go_json_observer, readable_observer

__all__ = ["go_json_observer", "readable_observer"]

"""Tests for :mod:`piko.logging`."""

import io
import json

from twisted.logger import LogLevel
from twisted.trial.unittest import SynchronousTestCase

from piko.logging import go_json_observer, readable_observer


def event(**extra: object) -> dict[str, object]:
    base: dict[str, object] = {
        "log_level": LogLevel.warn,
        "log_time": 1795700000.25,
        "log_namespace": "piko.server.upstream_port.UpstreamSession",
        "log_format": "upstream connected: endpoint {endpoint_id}",
        "endpoint_id": "ep1",
    }
    base.update(extra)
    return base


class ObserverTests(SynchronousTestCase):
    def test_go_json_keys(self) -> None:
        """A JSON line carries Go's level, ts, subsystem and msg keys plus the event's fields."""
        stream = io.StringIO()
        go_json_observer(stream)(event())
        record = json.loads(stream.getvalue())
        self.assertEqual(
            record,
            {
                "level": "warn",
                "ts": "2026-11-26T13:33:20.25Z",
                "subsystem": "server.upstream_port",
                "msg": "upstream connected: endpoint ep1",
                "endpoint_id": "ep1",
            },
        )

    def test_readable_line(self) -> None:
        """A terminal line shows time, level, subsystem and the message."""
        stream = io.StringIO()
        readable_observer(stream)(event())
        line = (
            "2026-11-26T13:33:20.25Z WARN  server.upstream_port: upstream connected: endpoint ep1"
        )
        self.assertEqual(stream.getvalue(), line + "\n")


class SubsystemPredicateTests(SynchronousTestCase):
    def test_level_and_exact_subsystems(self) -> None:
        """Events below the level pass only for subsystems named exactly, as Go's flag does."""
        from twisted.logger import PredicateResult

        from piko.logging import SubsystemLevelPredicate

        predicate = SubsystemLevelPredicate(LogLevel.warn, ["server.upstream_port"])
        self.assertEqual(predicate(event()), PredicateResult.maybe)
        debug = event(log_level=LogLevel.debug)
        self.assertEqual(predicate(debug), PredicateResult.yes)
        other = event(log_level=LogLevel.debug, log_namespace="piko.server.proxy_port.X")
        self.assertEqual(predicate(other), PredicateResult.no)
        prefix = SubsystemLevelPredicate(LogLevel.warn, ["server"])
        self.assertEqual(prefix(debug), PredicateResult.no)

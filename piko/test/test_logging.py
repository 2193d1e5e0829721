# -*- test-case-name: piko.test.test_logging -*-
"""Tests for :mod:`piko.logging`: formats, the shared setup, twistd, and the call sites."""

from __future__ import annotations

import ast
import io
import json
import sys
from pathlib import Path
from typing import Any

import twisted.internet.protocol as protocol_module
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import Logger, LogLevel, LogPublisher
from twisted.logger._legacy import publishToNewObserver
from twisted.python import log as legacy_log
from twisted.python.failure import Failure
from twisted.python.reflect import namedAny
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

import piko
from piko.config import AccessLogConfig, LogConfig
from piko.http import errors
from piko.http.access_log import AccessLog, AccessLoggedHandler
from piko.http.server import HTTPServerProtocol, IRequestHandler, IServerExchange
from piko.logging import (
    console_observer,
    format_console,
    format_json,
    go_json_observer,
    make_observer,
)
from piko.logging import setup as log_setup

TS = 1795700000.25


def event(**extra: object) -> dict[str, object]:
    base: dict[str, object] = {
        "log_level": LogLevel.warn,
        "log_time": TS,
        "log_namespace": "piko.server.upstream_port.UpstreamSession",
        "log_format": "upstream connected",
        "endpoint_id": "ep1",
        "client_ip": "10.0.0.7",
        "tenant_id": "",
    }
    base.update(extra)
    return base


class TTY(io.StringIO):
    """A text stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


class JSONFormatTests(SynchronousTestCase):
    def test_go_keys_and_compact(self) -> None:
        """A JSON line is compact as zap's, with Go's envelope keys and Go's field names."""
        line = format_json(event())
        self.assertEqual(
            line,
            '{"level":"warn","ts":"2026-11-26T13:33:20.250Z","subsystem":"server.upstream_port",'
            '"msg":"upstream connected","endpoint-id":"ep1","client-ip":"10.0.0.7",'
            '"tenant-id":""}',
        )

    def test_timestamp_fixed_width(self) -> None:
        """``ts`` always has three fractional digits, whole seconds included."""
        for seconds, text in (
            (TS, "2026-11-26T13:33:20.250Z"),
            (1795700000.0, "2026-11-26T13:33:20.000Z"),
            (1795700000.63, "2026-11-26T13:33:20.630Z"),
            (1795700000.001, "2026-11-26T13:33:20.001Z"),
        ):
            record = json.loads(format_json(event(log_time=seconds)))
            self.assertEqual(record["ts"], text)

    def test_failure_error_and_stacktrace(self) -> None:
        """A logged failure gives ``error`` (its message) and ``stacktrace``, zap's keys."""
        try:
            raise ZeroDivisionError("division by zero")
        except ZeroDivisionError:
            failure = Failure()
        record = json.loads(format_json(event(log_failure=failure, log_level=LogLevel.critical)))
        self.assertEqual(record["level"], "error")
        self.assertEqual(record["error"], "division by zero")
        self.assertIn("ZeroDivisionError", record["stacktrace"])


class ConsoleFormatTests(SynchronousTestCase):
    def test_fields_after_message(self) -> None:
        """A console line shows the structured fields as key=value, empty ones left out."""
        self.assertEqual(
            format_console(event()),
            "2026-11-26T13:33:20.250Z WARN  server.upstream_port: upstream connected "
            "endpoint-id=ep1 client-ip=10.0.0.7",
        )

    def test_values_quoted_when_needed(self) -> None:
        """Values with spaces, quotes or ``=`` are quoted; lists are comma-joined."""
        line = format_console(
            event(error='connection refused: "x"', node_ids=["a", "b"], count=3, ok=True)
        )
        self.assertTrue(
            line.endswith(r' error="connection refused: \"x\"" node-ids=a,b count=3 ok=true'),
            line,
        )

    def test_failure_traceback_follows(self) -> None:
        """A failure's message is a field and its traceback follows the line."""
        try:
            raise ZeroDivisionError("division by zero")
        except ZeroDivisionError:
            failure = Failure()
        text = format_console(event(log_failure=failure, log_format="failed to run"))
        first, rest = text.split("\n", 1)
        self.assertIn("failed to run", first)
        self.assertIn('error="division by zero"', first)
        self.assertIn("ZeroDivisionError", rest)


@implementer(IRequestHandler)
class Answering:
    """Answers 200 (or the canned 502) after ``delay`` seconds of the clock."""

    def __init__(self, clock: Clock, status: int, delay: float) -> None:
        self.clock = clock
        self.status = status
        self.delay = delay

    def request_received(self, exchange: IServerExchange) -> None:
        self.clock.advance(self.delay)
        if self.status == 502:
            exchange.respond(errors.upstream_unreachable)
            return
        exchange.start_response(200, ((b"content-type", b"text/plain"),))
        exchange.write(b"hi")
        exchange.finish()


REQUEST = (
    b"GET /path?q=1 HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nx-piko-endpoint: my-endpoint\r\n"
    b"x-forwarded-for: 198.51.100.1, 203.0.113.9\r\n\r\n"
)


def access(observer_for: Any, status: int = 200, delay: float = 0.0123, **kwargs: Any) -> str:
    """Serve REQUEST through an access log writing to ``observer_for(stream)``."""
    stream = io.StringIO()
    clock = Clock()
    access_log = AccessLog(
        AccessLogConfig(), "proxy.access", observer=observer_for(stream), **kwargs
    )
    handler = AccessLoggedHandler(Answering(clock, status, delay), access_log, clock)
    protocol = HTTPServerProtocol(handler, clock)
    protocol.makeConnection(StringTransport(peerAddress=_peer("192.0.2.5")))
    protocol.dataReceived(REQUEST)
    return stream.getvalue()


def _peer(host: str) -> Any:
    from twisted.internet.address import IPv4Address

    return IPv4Address("TCP", host, 40000)


class AccessLineTests(SynchronousTestCase):
    def test_console_access_line(self) -> None:
        """A server access record reads ``GET /path 200 12.3 ms ep=... client-ip=...``."""
        line = access(console_observer)
        self.assertRegex(
            line,
            r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO  proxy\.access: "
            r"GET /path 200 12\.3 ms ep=my-endpoint client-ip=192\.0\.2\.5\n$",
        )

    def test_console_access_line_agent(self) -> None:
        """On the agent the endpoint is its own and the client the server's last forwarded hop."""
        line = access(
            console_observer,
            status=502,
            delay=0.3049,
            fields={"endpoint-id": "dead-endpoint"},
            behind_server=True,
        )
        self.assertIn(
            "WARN  proxy.access: GET /path 502 304.9 ms ep=dead-endpoint client-ip=203.0.113.9\n",
            line,
        )

    def test_json_access_record_is_gos(self) -> None:
        """The JSON record has Go's keys only: no console summary, no ``Host`` header."""
        [record] = [json.loads(x) for x in access(go_json_observer).splitlines()]
        self.assertEqual(list(record), ["level", "ts", "subsystem", "msg", "request"])
        self.assertNotIn("Host", record["request"]["request_headers"])
        self.assertEqual(record["request"]["path"], "/path")

    def test_json_agent_record_order(self) -> None:
        """The agent's record has ``endpoint-id`` before ``request``, as Go writes it."""
        [record] = [
            json.loads(x)
            for x in access(go_json_observer, fields={"endpoint-id": "e"}).splitlines()
        ]
        self.assertEqual(list(record)[4:], ["endpoint-id", "request"])


class SetupTests(SynchronousTestCase):
    def emit(self, observer: Any, level: LogLevel = LogLevel.info, **kw: Any) -> None:
        publisher = LogPublisher(observer)
        Logger(namespace="piko.agent.service.AgentService", observer=publisher).emit(
            level, "starting reverse proxy", endpoint_id="e", **kw
        )

    def test_console_on_a_terminal(self) -> None:
        """On a terminal the shared observer writes console lines."""
        stream = TTY()
        self.emit(make_observer(LogConfig(), stream))
        self.assertIn(
            "INFO  agent.service: starting reverse proxy endpoint-id=e", stream.getvalue()
        )

    def test_json_when_piped_or_asked(self) -> None:
        """Not on a terminal, or with ``log.format: json``, it writes Go's JSON lines."""
        for stream, config in ((io.StringIO(), LogConfig()), (TTY(), LogConfig(format="json"))):
            self.emit(make_observer(config, stream))
            self.assertEqual(json.loads(stream.getvalue())["endpoint-id"], "e")

    def test_console_when_asked(self) -> None:
        """``log.format: console`` writes console lines even to a pipe."""
        stream = io.StringIO()
        self.emit(make_observer(LogConfig(format="console"), stream))
        self.assertIn("starting reverse proxy endpoint-id=e", stream.getvalue())

    def test_level_filter(self) -> None:
        """``log.level`` applies: debug lines are dropped at info."""
        stream = io.StringIO()
        self.emit(make_observer(LogConfig(), stream), LogLevel.debug)
        self.assertEqual(stream.getvalue(), "")

    def test_factory_noise_demoted(self) -> None:
        """Twisted's ``Starting factory`` lines are debug: gone at info, shown at debug."""
        for level, shown in (("info", False), ("debug", True)):
            stream = io.StringIO()
            publisher = LogPublisher(make_observer(LogConfig(level=level), stream))
            factory = Factory.forProtocol(Protocol)  # noisy, as Twisted's default
            self.patch(protocol_module, "_loggerFor", lambda obj, p=publisher: Logger(observer=p))
            factory.doStart()
            factory.doStop()
            text = stream.getvalue()
            self.assertEqual("Starting factory" in text, shown, text)
            if shown:
                self.assertEqual(json.loads(text.splitlines()[0])["level"], "debug")

    def test_port_lines_demoted(self) -> None:
        """Twisted's legacy ``X starting on N`` / ``(TCP Port N Closed)`` lines are debug."""
        stream = io.StringIO()
        observer = make_observer(LogConfig(), stream)
        for text in (
            "HTTPPortFactory starting on 8000",
            "(TCP Port 8000 Closed)",
            "something else",
        ):
            # What ``twisted.python.log.msg(text)`` publishes, converted as Twisted does.
            legacy = {"message": (text,), "isError": 0, "system": "-", "time": TS}
            publishToNewObserver(observer, legacy, legacy_log.textFromEventDict)
        lines = [json.loads(x)["msg"] for x in stream.getvalue().splitlines()]
        self.assertEqual(lines, ["something else"])


class TwistdTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.patch(log_setup, "_twistd_factory", None)

    def parse(self, *argv: str) -> Any:
        """Parse a twistd command line for the piko-server plugin."""
        from twisted.scripts._twistd_unix import ServerOptions

        options = ServerOptions()
        options.parseOptions(list(argv))
        return options

    def test_twistd_uses_the_same_formatter(self) -> None:
        """``twistd -n piko-server`` resolves its logger to piko's observer, on stdout."""
        options = self.parse("-n", "--pidfile=", "piko-server", "--cluster.node-id=n")
        self.assertIs(options["logger"], log_setup.twistd_logger)
        stdout = TTY()
        self.patch(sys, "stdout", stdout)
        observer = options["logger"]()
        SetupTests.emit(self, observer)  # type: ignore[arg-type]
        self.assertIn(
            "INFO  agent.service: starting reverse proxy endpoint-id=e", stdout.getvalue()
        )

    def test_twistd_piped_is_json_and_filtered(self) -> None:
        """Under twistd, piped output is Go's JSON and ``--log.level`` applies."""
        options = self.parse("-n", "piko-agent", "--log.level=warn", "http", "e", "3000")
        stdout = io.StringIO()
        self.patch(sys, "stdout", stdout)
        observer = options["logger"]()
        SetupTests.emit(self, observer)  # type: ignore[arg-type]
        SetupTests.emit(self, observer, LogLevel.warn)  # type: ignore[arg-type]
        [record] = [json.loads(x) for x in stdout.getvalue().splitlines()]
        self.assertEqual(record["level"], "warn")

    def test_explicit_logger_and_syslog_win(self) -> None:
        """An explicit ``--logger`` or ``--syslog`` is left alone."""
        options = self.parse("-n", "--logger=twisted.logger.globalLogPublisher", "piko-server")
        self.assertIs(options["logger"], namedAny("twisted.logger.globalLogPublisher"))
        options = self.parse("-n", "--syslog", "piko-server")
        self.assertIsNone(options["logger"])

    def test_logfile(self) -> None:
        """With ``--logfile`` the lines go to that file, as JSON."""
        path = self.mktemp()
        options = self.parse("--logfile", path, "piko-server")
        observer = options["logger"]()
        SetupTests.emit(self, observer)  # type: ignore[arg-type]
        with open(path) as f:
            self.assertEqual(json.loads(f.readline())["msg"], "starting reverse proxy")


class PooledConnectionNoiseTests(SynchronousTestCase):
    def test_no_starting_factory_for_pooled_connections(self) -> None:
        """Connecting through the agent's pool logs no ``Starting factory`` event at all."""
        from twisted.internet.endpoints import TCP4ClientEndpoint
        from twisted.logger import globalLogPublisher

        from piko.http.pool import ConnectionPool

        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)  # type: ignore[arg-type]
        self.addCleanup(globalLogPublisher.removeObserver, events.append)  # type: ignore[arg-type]
        reactor = MemoryReactorClock()
        pool = ConnectionPool(reactor, TCP4ClientEndpoint(reactor, "127.0.0.1", 1))
        pool.connect(Protocol())
        _, _, factory, _, _ = reactor.tcpClients[0]
        factory.buildProtocol(None).makeConnection(StringTransport())
        factory.doStart()
        factory.doStop()
        starting = [e for e in events if "Starting factory" in str(e.get("log_format", ""))]
        self.assertEqual(starting, [])

    def test_per_connection_factories_are_quiet(self) -> None:
        """Every factory made per connection or per listener has ``noisy = False``."""
        from piko.agent.http_listener import HTTPListenerFactory
        from piko.agent.tcp_listener import TCPListenerFactory
        from piko.client.upstream import _SessionFactory
        from piko.forward.service import ForwardFactory
        from piko.http.pool import ConnectionFactory

        for cls in (
            ConnectionFactory,
            _SessionFactory,
            HTTPListenerFactory,
            TCPListenerFactory,
            ForwardFactory,
        ):
            self.assertFalse(cls.noisy, cls)


_LOG_METHODS = frozenset({"debug", "info", "warn", "error", "critical", "failure"})


def _log_calls(tree: ast.AST) -> list[ast.Call]:
    calls = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in _LOG_METHODS
            and "log" in ast.unparse(node.func.value).lower()
            and node.args
        ):
            calls.append(node)
    return calls


class CallSiteTests(SynchronousTestCase):
    """Every log call in piko/ has a constant message and Go's key names."""

    def sources(self) -> list[tuple[str, ast.AST]]:
        root = Path(piko.__file__).parent
        return [
            (str(path.relative_to(root)), ast.parse(path.read_text()))
            for path in sorted(root.rglob("*.py"))
            if "test" not in path.relative_to(root).parts
        ]

    def test_messages_are_constant(self) -> None:
        """No message bakes values into its text (no ``{field}``, no f-string)."""
        baked = []
        for name, tree in self.sources():
            for call in _log_calls(tree):
                message = call.args[0]
                if isinstance(message, ast.JoinedStr) or (
                    isinstance(message, ast.Constant)
                    and isinstance(message.value, str)
                    and "{" in message.value
                ):
                    baked.append(f"{name}:{call.lineno}")
        self.assertEqual(baked, [])

    def test_field_names_are_gos(self) -> None:
        """Fields passed by keyword are written under Go's names (``endpoint-id``, ...)."""
        from piko.logging.observers import GO_KEYS

        names: set[str] = set()
        for _, tree in self.sources():
            for call in _log_calls(tree):
                names.update(k.arg for k in call.keywords if k.arg is not None)
        for python_name in names:
            written = GO_KEYS.get(python_name, python_name)
            self.assertNotIn(
                written,
                {"endpoint_id", "client_ip", "node_id", "tenant_id", "node_ids"},
                python_name,
            )
        record = json.loads(format_json(event(node_id="n", node_ids=["a"])))
        for key in ("endpoint-id", "client-ip", "tenant-id", "node-id", "node-ids"):
            self.assertIn(key, record)


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


class ThirdPartyConsoleTests(SynchronousTestCase):
    def test_interpolated_fields_not_repeated(self) -> None:
        """Fields a Twisted message already interpolates are not repeated after it."""
        line = format_console(
            {
                "log_level": LogLevel.info,
                "log_time": TS,
                "log_namespace": "twisted.scripts._twistd_unix.UnixAppLogger",
                "log_format": "reactor class: {reactor}.",
                "reactor": "twisted.internet.epollreactor.EPollReactor",
                "extra": "kept",
            }
        )
        self.assertTrue(
            line.endswith("reactor class: twisted.internet.epollreactor.EPollReactor. extra=kept"),
            line,
        )

# -*- test-case-name: piko.test.test_logging -*-
"""
The one logging setup of every program, under ``piko`` and under ``twistd``.

:func:`make_observer` builds the observer both paths install: the format
(``log.format``: a console line on a terminal, Go's JSON lines otherwise or
when asked), Go's ``log.level`` and ``log.subsystems`` filter, and
:func:`demote_twisted_noise`, which turns Twisted's per-port and per-factory
announcements into debug lines.  ``piko`` calls :func:`start_logging` on
stderr, as Go does.  Under ``twistd`` the plugin's options call
:func:`use_for_twistd`, which hands twistd the same observer through its
``--logger`` hook (:func:`twistd_logger`; unless ``--logger`` or ``--syslog``
was given), writing where
twistd would have: stdout under ``-n``, else ``--logfile`` (default
``twistd.log``, rotated on SIGUSR1 as twistd does).
"""

from __future__ import annotations

import re
import signal
import sys
from collections.abc import Callable, MutableMapping
from typing import IO, Any

from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogEvent,
    LogLevel,
    globalLogBeginner,
)
from zope.interface import provider

from piko.config import LogConfig
from piko.logging.observers import (
    LEVELS,
    SubsystemLevelPredicate,
    console_observer,
    go_json_observer,
)

__all__ = [
    "FORMATS",
    "choose_format",
    "demote_twisted_noise",
    "make_observer",
    "start_logging",
    "twistd_logger",
    "twistd_observer_factory",
    "use_for_twistd",
]

#: ``log.format`` values: ``auto`` is ``console`` on a terminal, else ``json``.
FORMATS = ("auto", "console", "json")

#: Twisted's ``Factory.doStart``/``doStop`` lines (one pair per connection for client factories).
_FACTORY_FORMATS = frozenset({"Starting factory {factory!r}", "Stopping factory {factory!r}"})

#: Twisted's legacy port lines: ``HTTPPortFactory starting on 8000``, ``(TCP Port 8000 Closed)``.
_PORT_LINE = re.compile(r".+ starting on .+|\((?:\w+ )?Port .+ Closed\)")


def _is_noise(event: LogEvent) -> bool:
    if event.get("log_format") in _FACTORY_FORMATS:
        return True
    if event.get("log_namespace") == "log_legacy":
        text = event.get("log_text")
        return isinstance(text, str) and _PORT_LINE.fullmatch(text) is not None
    return False


def demote_twisted_noise(observer: ILogObserver) -> ILogObserver:
    """
    Pass events to ``observer``, with Twisted's factory start/stop and port
    open/close announcements lowered from info to debug.

    A client factory announces every connection it makes, and each listening
    port prints a legacy line on start and stop; the programs log what they
    listen on themselves, with structured fields.  Lowered rather than dropped,
    they still show with ``--log.level debug``.
    """

    @provider(ILogObserver)
    def observe(event: LogEvent) -> None:
        if event.get("log_level") == LogLevel.info and _is_noise(event):
            event = dict(event, log_level=LogLevel.debug)
        observer(event)

    return observe


def choose_format(format: str, stream: object) -> str:
    """``console`` or ``json`` for ``log.format`` on ``stream`` (a terminal or not)."""
    if format in ("console", "json"):
        return format
    isatty = getattr(stream, "isatty", None)
    try:
        return "console" if isatty is not None and isatty() else "json"
    except ValueError:  # a closed stream
        return "json"


def make_observer(config: LogConfig, stream: IO[str], format: str | None = None) -> ILogObserver:
    """
    The observer every program logs through.

    :param config: ``log.level``, ``log.subsystems`` and ``log.format``.
    :param stream: where lines go.
    :param format: overrides ``config.format``.
    """
    chosen = choose_format(format or config.format, stream)
    formatter = console_observer(stream) if chosen == "console" else go_json_observer(stream)
    predicate = SubsystemLevelPredicate(LEVELS.get(config.level, LogLevel.info), config.subsystems)
    return demote_twisted_noise(FilteringLogObserver(formatter, [predicate]))


def start_logging(config: LogConfig, stream: IO[str]) -> None:
    """Begin logging every ``twisted.logger`` event through :func:`make_observer`."""
    globalLogBeginner.beginLoggingTo([make_observer(config, stream)], redirectStandardIO=False)


def _twistd_stream(twistd: MutableMapping[str, Any]) -> IO[str] | None:
    """Where twistd itself would log (``None`` when that is not a stream: daemon and ``-``)."""
    logfile = twistd.get("logfile") or ""
    if logfile == "-" or (twistd.get("nodaemon") and not logfile):
        return sys.stdout if twistd.get("nodaemon") else None
    from twisted.python.logfile import LogFile

    log_file = LogFile.fromFullPath(logfile or "twistd.log")
    if not signal.getsignal(signal.SIGUSR1):

        def rotate(signum: int, frame: object) -> None:
            from twisted.internet import reactor

            reactor.callFromThread(log_file.rotate)  # type: ignore[attr-defined]

        signal.signal(signal.SIGUSR1, rotate)
    return log_file


def twistd_observer_factory(
    config: LogConfig, twistd: MutableMapping[str, Any]
) -> Callable[[], ILogObserver] | None:
    """
    A ``--logger`` factory for twistd that logs as ``piko`` does, or None to
    leave twistd's own (``--syslog``, or a daemon told to log to stdout, which
    twistd refuses with its own message).

    :param twistd: twistd's parsed ``ServerOptions`` (``logfile``, ``nodaemon``, ``syslog``).
    """
    if twistd.get("syslog"):
        return None
    if twistd.get("logfile") == "-" and not twistd.get("nodaemon"):
        return None

    def factory() -> ILogObserver:
        stream = _twistd_stream(twistd)
        assert stream is not None
        return make_observer(config, stream)

    return factory


#: The factory :func:`use_for_twistd` chose, for :func:`twistd_logger` (one twistd, one plugin).
_twistd_factory: Callable[[], ILogObserver] | None = None


def twistd_logger() -> ILogObserver:
    """
    The observer for ``twistd --logger=piko.logging.setup.twistd_logger``, which
    :func:`use_for_twistd` passes for a plugin: twistd takes the option as a
    name to import, hence a module-level function.
    """
    if _twistd_factory is None:
        raise RuntimeError("piko.logging.setup.twistd_logger is set by the piko twistd plugins")
    return _twistd_factory()


def use_for_twistd(options: Any) -> None:
    """
    Make twistd log through :func:`make_observer`, from a plugin's parsed options.

    twistd parses a plugin's options before it resolves its own ``logger``
    option (``--logger``) and starts logging, so setting that option here takes
    effect for this run; an explicit ``--logger`` wins, and ``--syslog`` keeps
    twistd's own.

    :param options: the plugin's ``usage.Options``, with ``config.log`` and ``parent``.
    """
    global _twistd_factory
    twistd = getattr(options, "parent", None)
    config = getattr(options, "config", None)
    if twistd is None or config is None or twistd.get("logger"):
        return
    factory = twistd_observer_factory(config.log, twistd)
    if factory is not None:
        _twistd_factory = factory
        twistd["logger"] = f"{__name__}.twistd_logger"

"""Tests for piko._reactor."""

from __future__ import annotations

import errno
from typing import Any

from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IReactorCore
from twisted.plugin import getPlugins
from twisted.python import context
from twisted.python.log import ILogContext
from twisted.trial.unittest import SynchronousTestCase

try:
    from piko._reactor import PikoEPollReactor
except ImportError:  # pragma: no cover - no epoll here
    PikoEPollReactor = None  # type: ignore[assignment,misc]


class _FakePoller:
    """Stands in for ``select.epoll``: returns canned events or raises."""

    def __init__(self, events: list[tuple[int, int]], error: OSError | None = None) -> None:
        self.events = events
        self.error = error
        self.calls: list[tuple[float, int]] = []
        self.registered: dict[int, int] = {}

    def poll(self, timeout: float, maxevents: int) -> list[tuple[int, int]]:
        self.calls.append((timeout, maxevents))
        if self.error is not None:
            raise self.error
        return self.events

    def unregister(self, fd: int) -> None:
        self.registered.pop(fd, None)

    def register(self, fd: int, flags: int) -> None:
        self.registered[fd] = flags

    def modify(self, fd: int, flags: int) -> None:
        self.registered[fd] = flags


def _system() -> str:
    """The ``system`` of the legacy log context in force (what ``log.msg`` would use)."""
    return str(context.get(ILogContext)["system"])


class _Selectable:
    """A readable descriptor that records reads (and the log system they ran in) and may fail."""

    def __init__(self, fd: int, fail: bool = False) -> None:
        self.fd = fd
        self.fail = fail
        self.reads = 0
        self.systems: list[str] = []
        self.lost: list[Any] = []

    def fileno(self) -> int:
        return self.fd

    def doRead(self) -> None:
        self.reads += 1
        self.systems.append(_system())
        if self.fail:
            raise RuntimeError("broken doRead")

    def logPrefix(self) -> str:
        return f"selectable {self.fd}"

    def connectionLost(self, reason: Any) -> None:
        self.lost.append(reason)


class _ReactorTestCase(SynchronousTestCase):
    """A fresh, never-run :class:`PikoEPollReactor` per test, its epoll and waker closed after."""

    if PikoEPollReactor is None:  # pragma: no cover - not Linux
        skip = "epoll is Linux-only"

    def setUp(self) -> None:
        self.reactor = PikoEPollReactor()
        self.real_poller = self.reactor._poller
        self.addCleanup(self._close)

    def _close(self) -> None:
        self.reactor._poller = self.real_poller
        self.real_poller.close()
        self.reactor.waker.connectionLost(None)


class PikoEPollReactorTests(_ReactorTestCase):
    def test_is_a_reactor(self) -> None:
        """The reactor provides the core interface twisted code relies on."""
        self.assertTrue(IReactorCore.providedBy(self.reactor))

    def _add(self, selectable: _Selectable) -> None:
        self.reactor._selectables[selectable.fd] = selectable
        self.reactor._reads.add(selectable.fd)

    def test_dispatches_in_log_context(self) -> None:
        """
        A read event reaches ``doRead`` with the selectable's ``logPrefix()``
        as the legacy log ``system``, as stock epoll's ``callWithLogger``
        gives it, and the context is gone after the poll; an event for an
        unknown descriptor is ignored; the poll is bounded by the number of
        selectables.
        """
        first, second = _Selectable(1000), _Selectable(1002)
        self._add(first)
        self._add(second)
        poller = _FakePoller(
            [
                (1000, self.reactor._POLL_IN),
                (1001, self.reactor._POLL_IN),
                (1002, self.reactor._POLL_IN),
            ]
        )
        self.reactor._poller = poller
        before = _system()
        self.reactor.doPoll(0.5)
        self.assertEqual((first.reads, second.reads), (1, 1))
        self.assertEqual(first.systems, ["selectable 1000"])
        self.assertEqual(second.systems, ["selectable 1002"])
        self.assertEqual(_system(), before)
        self.assertEqual(poller.calls, [(0.5, len(self.reactor._selectables))])

    def test_buggy_log_prefix(self) -> None:
        """
        A ``logPrefix`` that raises is logged and replaced by Twisted's
        ``"(buggy logPrefix method)"``; the event is still handled.
        """

        class Buggy(_Selectable):
            def logPrefix(self) -> str:
                raise ValueError("no prefix")

        buggy = Buggy(1000)
        self._add(buggy)
        self.reactor._poller = _FakePoller([(1000, self.reactor._POLL_IN)])
        self.reactor.doPoll(0)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        self.assertEqual(buggy.systems, ["(buggy logPrefix method)"])

    def test_error_escaping_dispatch_is_logged(self) -> None:
        """
        An exception that escapes ``_doReadOrWrite`` (here from
        ``connectionLost``) is logged, as ``callWithLogger`` does, and the
        next event of the same poll is still handled.
        """

        class BadLoss(_Selectable):
            def connectionLost(self, reason: Any) -> None:
                raise KeyError("broken connectionLost")

        broken, healthy = BadLoss(1000, fail=True), _Selectable(1001)
        self._add(broken)
        self._add(healthy)
        self.reactor._poller = _FakePoller(
            [(1000, self.reactor._POLL_IN), (1001, self.reactor._POLL_IN)]
        )
        self.reactor.doPoll(0)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)
        self.assertEqual(healthy.reads, 1)

    def test_none_timeout_waits(self) -> None:
        """``None`` becomes epoll's "wait forever" (-1)."""
        poller = _FakePoller([])
        self.reactor._poller = poller
        self.reactor.doIteration(None)
        self.assertEqual(poller.calls[0][0], -1)

    def test_failing_read_disconnects_only_that_selectable(self) -> None:
        """
        An exception in ``doRead`` is logged and drops that selectable; the
        others in the same poll are still served.
        """
        broken, healthy = _Selectable(1000, fail=True), _Selectable(1001)
        self._add(broken)
        self._add(healthy)
        self.reactor._poller = _FakePoller(
            [(1000, self.reactor._POLL_IN), (1001, self.reactor._POLL_IN)]
        )
        self.reactor.doPoll(0)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(len(broken.lost), 1)
        self.assertFalse(broken.lost[0].check(ConnectionDone))
        self.assertEqual(healthy.reads, 1)
        self.assertEqual(healthy.lost, [])

    def test_eintr_is_ignored(self) -> None:
        """An interrupted poll returns quietly; other errors propagate."""
        self.reactor._poller = _FakePoller([], OSError(errno.EINTR, "interrupted"))
        self.reactor.doPoll(0)
        self.reactor._poller = _FakePoller([], OSError(errno.EBADF, "bad fd"))
        self.assertRaises(OSError, self.reactor.doPoll, 0)


class ReactorPluginTests(SynchronousTestCase):
    def test_twistd_can_select_it(self) -> None:
        """``twistd --reactor=piko-epoll`` names piko's reactor module."""
        from twisted.application.reactors import IReactorInstaller

        installers = {r.shortName: r for r in getPlugins(IReactorInstaller)}
        self.assertIn("piko-epoll", installers)
        self.assertEqual(installers["piko-epoll"].moduleName, "piko._reactor")  # type: ignore[attr-defined]


class _Writer:
    """A connected descriptor whose socket takes ``accept`` writes before it is full."""

    def __init__(self, reactor: Any, fd: int, accept: int) -> None:
        self.reactor = reactor
        self.fd = fd
        self.accept = accept
        self.connected = True
        self.writes = 0
        self.systems: list[str] = []
        self.lost: list[Any] = []

    def fileno(self) -> int:
        return self.fd

    def logPrefix(self) -> str:
        return f"writer {self.fd}"

    def write(self) -> None:
        self.reactor.addWriter(self)

    def doWrite(self) -> None:
        self.writes += 1
        self.systems.append(_system())
        if self.writes <= self.accept:
            self.reactor.removeWriter(self)  # everything sent: stopWriting

    def connectionLost(self, reason: Any) -> None:
        self.lost.append(reason)


class EagerWriteTests(_ReactorTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.poller = _FakePoller([])
        self.reactor._poller = self.poller

    def test_write_sent_after_events_without_epollout(self) -> None:
        """A write made while handling events is sent in the same poll; EPOLLOUT is never set."""
        writer = _Writer(self.reactor, 1000, accept=1)
        writer.write()
        self.assertEqual(self.poller.registered, {})
        self.assertIn(writer, self.reactor.getWriters())
        self.reactor.doPoll(1.0)
        self.assertEqual(writer.writes, 1)
        self.assertEqual(writer.systems, ["writer 1000"])
        self.assertEqual(self.poller.registered, {})
        self.assertEqual(self.reactor.getWriters(), [])

    def test_pending_writes_flushed_before_polling_without_waiting(self) -> None:
        """Writes made by timed calls go out before the poll, which then does not block."""
        writer = _Writer(self.reactor, 1000, accept=1)
        writer.write()
        self.reactor.doPoll(30.0)
        self.assertEqual(writer.writes, 1)
        self.assertEqual(self.poller.calls[0][0], 0)

    def test_full_socket_falls_back_to_epollout(self) -> None:
        """A socket that did not take everything is watched for writability as usual."""
        writer = _Writer(self.reactor, 1000, accept=0)
        writer.write()
        self.reactor.doPoll(0)
        self.assertEqual(writer.writes, 1)
        self.assertIn(1000, self.poller.registered)
        self.assertIn(1000, self.reactor._writes)
        # The writable event then writes again; Twisted's own path from here.
        writer.accept = 2
        self.reactor._selectables[1000] = writer
        self.poller.events = [(1000, self.reactor._POLL_OUT)]
        self.reactor.doPoll(0)
        self.assertEqual(writer.writes, 2)
        self.assertNotIn(1000, self.reactor._writes)

    def test_unconnected_descriptor_waits_for_epollout(self) -> None:
        """A connecting socket (doWrite is doConnect) is never written to eagerly."""
        writer = _Writer(self.reactor, 1000, accept=1)
        writer.connected = False
        writer.write()
        self.assertIn(1000, self.poller.registered)
        self.reactor.doPoll(0)
        self.assertEqual(writer.writes, 0)

    def test_removed_before_flush(self) -> None:
        """A writer that stops writing (or closes) before the flush is not written to."""
        writer = _Writer(self.reactor, 1000, accept=1)
        writer.write()
        self.reactor.removeWriter(writer)
        self.reactor.doPoll(0)
        self.assertEqual(writer.writes, 0)
        self.assertEqual(self.reactor.removeAll(), [])

    def test_remove_all_includes_pending(self) -> None:
        """removeAll (reactor shutdown) returns pending writers too."""
        writer = _Writer(self.reactor, 1000, accept=1)
        writer.write()
        self.assertEqual(self.reactor.removeAll(), [writer])


class _ReadThenWrite:
    """A readable descriptor whose read makes ``writer`` write; logs into ``log``."""

    def __init__(self, fd: int, writer: _Writer, log: list[str]) -> None:
        self.fd = fd
        self.writer = writer
        self.log = log

    def fileno(self) -> int:
        return self.fd

    def logPrefix(self) -> str:
        return f"reader {self.fd}"

    def doRead(self) -> None:
        self.log.append(f"read {self.fd}")
        self.writer.write()


class MidBatchFlushTests(_ReactorTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.log: list[str] = []

    def _batch(self, interval: float) -> None:
        reactor = self.reactor
        reactor.flush_interval = interval
        log = self.log

        class LoggedWriter(_Writer):
            def doWrite(self) -> None:
                log.append(f"write {self.fd}")
                super().doWrite()

        events = []
        for fd in (1000, 1001, 1002):
            readable = _ReadThenWrite(fd, LoggedWriter(reactor, fd + 100, accept=1), log)
            reactor._selectables[fd] = readable
            reactor._reads.add(fd)
            events.append((fd, reactor._POLL_IN))
        reactor._poller = _FakePoller(events)
        reactor.doPoll(0)

    def test_writes_sent_during_a_long_batch(self) -> None:
        """Once flush_interval has passed, writes go out before the next event is handled."""
        self._batch(0.0)
        self.assertEqual(
            self.log,
            ["read 1000", "write 1100", "read 1001", "write 1101", "read 1002", "write 1102"],
        )

    def test_short_batch_written_at_its_end(self) -> None:
        """Within flush_interval, a batch's writes all go out after its last event."""
        self._batch(60.0)
        self.assertEqual(
            self.log,
            ["read 1000", "read 1001", "read 1002", "write 1100", "write 1101", "write 1102"],
        )


#: Run in a fresh interpreter: import every piko module (not the tests or
#: ``python -m piko``), then report which reactor ``twisted.internet.reactor``
#: gives, the way a program embedding piko would get it.
_IMPORT_EVERYTHING = """
import importlib, pkgutil, sys
import piko
for module in pkgutil.walk_packages(piko.__path__, "piko."):
    if module.name.startswith("piko.test") or module.name == "piko.__main__":
        continue
    importlib.import_module(module.name)
installed_by_import = "twisted.internet.reactor" in sys.modules
from twisted.internet import reactor
print(installed_by_import, type(reactor).__module__ + "." + type(reactor).__name__)
"""


class LibraryImportTests(SynchronousTestCase):
    def test_importing_piko_installs_no_reactor(self) -> None:
        """
        Importing all of piko as a library leaves the reactor choice to the
        program: the global reactor is Twisted's default, not piko's (only
        the ``piko`` command and ``twistd --reactor=piko-epoll`` install it).
        """
        import os
        import subprocess
        import sys

        env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
        result = subprocess.run(
            [sys.executable, "-c", _IMPORT_EVERYTHING],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            check=False,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        installed_by_import, reactor = result.stdout.split()
        self.assertNotEqual(reactor, "piko._reactor.PikoEPollReactor")
        self.assertEqual(installed_by_import, "False", f"importing piko installed {reactor}")

    def test_cli_installs_it(self) -> None:
        """The ``piko`` command installs piko's reactor when none is installed yet."""
        import os
        import subprocess
        import sys

        code = (
            "from piko.run import install_reactor\n"
            "install_reactor()\n"
            "from twisted.internet import reactor\n"
            "print(type(reactor).__name__)\n"
        )
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
        result = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            check=False,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout.strip(), "PikoEPollReactor")

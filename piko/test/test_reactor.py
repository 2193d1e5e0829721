"""Tests for piko._reactor."""

from __future__ import annotations

import errno
from typing import Any

from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IReactorCore
from twisted.plugin import getPlugins
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

    def poll(self, timeout: float, maxevents: int) -> list[tuple[int, int]]:
        self.calls.append((timeout, maxevents))
        if self.error is not None:
            raise self.error
        return self.events

    def unregister(self, fd: int) -> None:
        pass


class _Selectable:
    """A readable descriptor that records reads and may fail."""

    def __init__(self, fd: int, fail: bool = False) -> None:
        self.fd = fd
        self.fail = fail
        self.reads = 0
        self.lost: list[Any] = []

    def fileno(self) -> int:
        return self.fd

    def doRead(self) -> None:
        self.reads += 1
        if self.fail:
            raise RuntimeError("broken doRead")

    def logPrefix(self) -> str:
        raise AssertionError("the legacy log context must not be asked for")

    def connectionLost(self, reason: Any) -> None:
        self.lost.append(reason)


class PikoEPollReactorTests(SynchronousTestCase):
    def setUp(self) -> None:
        if PikoEPollReactor is None:  # pragma: no cover
            raise self.skipTest("epoll is not available")
        self.reactor = PikoEPollReactor()
        self.real_poller = self.reactor._poller
        self.addCleanup(self._close)

    def _close(self) -> None:
        self.reactor._poller = self.real_poller
        self.real_poller.close()
        self.reactor.waker.connectionLost(None)

    def _add(self, selectable: _Selectable) -> None:
        self.reactor._selectables[selectable.fd] = selectable
        self.reactor._reads.add(selectable.fd)

    def test_dispatches_without_log_context(self) -> None:
        """
        A read event reaches ``doRead`` without asking ``logPrefix``; an
        event for an unknown descriptor is ignored; the poll is bounded by the
        number of selectables.
        """
        readable = _Selectable(1000)
        self._add(readable)
        poller = _FakePoller([(1000, self.reactor._POLL_IN), (1001, self.reactor._POLL_IN)])
        self.reactor._poller = poller
        self.reactor.doPoll(0.5)
        self.assertEqual(readable.reads, 1)
        self.assertEqual(poller.calls, [(0.5, len(self.reactor._selectables))])

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

    def test_is_a_reactor(self) -> None:
        """The reactor provides the core interface twisted code relies on."""
        if PikoEPollReactor is None:  # pragma: no cover
            raise self.skipTest("epoll is not available")
        reactor = PikoEPollReactor()
        self.addCleanup(reactor.waker.connectionLost, None)
        self.addCleanup(reactor._poller.close)
        self.assertTrue(IReactorCore.providedBy(reactor))

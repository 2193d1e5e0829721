# -*- test-case-name: piko.test.test_deadlines -*-
"""
Many timeouts of one length sharing one reactor timer.

Per-request timers (a stream's open and close timeouts, a proxy's response timeout) are
nearly always disarmed long before they fall due.  A ``callLater`` plus ``cancel`` for each
costs a :class:`~twisted.internet.base.DelayedCall`, a heap push and, later, a heap rebuild;
:class:`Deadlines` keeps the deadlines in a dict instead and runs one call for the earliest.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from twisted.internet.interfaces import IDelayedCall, IReactorTime

K = TypeVar("K", bound=Hashable)


class Deadlines(Generic[K]):
    """
    Timeouts of ``timeout`` seconds for any number of keys, on at most one delayed call.

    Keys are kept in the order they were armed, which is the order they fall due (one length,
    and a clock that does not go back), so the one call is armed for the first key.  Disarming
    is a dict deletion: the call stays armed, and when it fires it expires the keys that are
    due, if any, and re-arms for the next one.  Expiry is exact (not rounded), so timeouts are
    observed exactly as with one ``callLater`` per key.

    :param clock: the reactor time source.
    :param timeout: seconds from :meth:`arm` to expiry.
    :param expired: called with each key that falls due (after it was disarmed).
    """

    def __init__(self, clock: IReactorTime, timeout: float, expired: Callable[[K], object]) -> None:
        self.clock = clock
        self.timeout = timeout
        self._expired = expired
        self._due: dict[K, float] = {}
        self._call: IDelayedCall | None = None
        self._firing = False

    def __contains__(self, key: K) -> bool:
        return key in self._due

    def __len__(self) -> int:
        return len(self._due)

    def arm(self, key: K) -> None:
        """Start (or restart) ``key``'s timeout."""
        due = self._due
        if key in due:
            del due[key]
        due[key] = self.clock.seconds() + self.timeout
        if self._call is None and not self._firing:
            self._call = self.clock.callLater(self.timeout, self._fire)

    def disarm(self, key: K) -> bool:
        """Stop ``key``'s timeout; return whether it was armed."""
        return self._due.pop(key, None) is not None

    def stop(self) -> None:
        """Disarm every key and cancel the call."""
        self._due.clear()
        call, self._call = self._call, None
        if call is not None and call.active():
            call.cancel()

    def _fire(self) -> None:
        self._call = None
        self._firing = True
        due = self._due
        try:
            while due:
                key = next(iter(due))
                when = due[key]
                now = self.clock.seconds()
                if when > now:
                    break
                del due[key]
                self._expired(key)
        finally:
            self._firing = False
            if due and self._call is None:
                when = due[next(iter(due))]
                delay = max(0.0, when - self.clock.seconds())
                self._call = self.clock.callLater(delay, self._fire)

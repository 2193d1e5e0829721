"""Tests for piko._deadlines."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from piko._deadlines import Deadlines


class DeadlinesTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.expired: list[str] = []
        self.deadlines: Deadlines[str] = Deadlines(self.clock, 10.0, self.expired.append)

    def test_expires_exactly(self) -> None:
        """A key expires exactly ``timeout`` after it was armed, not before."""
        self.deadlines.arm("a")
        self.clock.advance(3)
        self.deadlines.arm("b")
        self.clock.advance(6.9)
        self.assertEqual(self.expired, [])
        self.clock.advance(0.1)
        self.assertEqual(self.expired, ["a"])
        self.clock.advance(2.9)
        self.assertEqual(self.expired, ["a"])
        self.clock.advance(0.1)
        self.assertEqual(self.expired, ["a", "b"])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_one_call(self) -> None:
        """However many keys are armed, one delayed call serves them."""
        for i in range(100):
            self.deadlines.arm(str(i))
            self.clock.advance(0.01)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.assertEqual(len(self.deadlines), 100)

    def test_disarm(self) -> None:
        """A disarmed key never expires; the call then re-arms for the next key."""
        self.deadlines.arm("a")
        self.clock.advance(5)
        self.deadlines.arm("b")
        self.assertTrue(self.deadlines.disarm("a"))
        self.assertFalse(self.deadlines.disarm("a"))
        self.assertNotIn("a", self.deadlines)
        self.clock.advance(5)
        self.assertEqual(self.expired, [])
        self.clock.advance(5)
        self.assertEqual(self.expired, ["b"])

    def test_rearm_restarts(self) -> None:
        """Arming an armed key restarts its timeout."""
        self.deadlines.arm("a")
        self.deadlines.arm("b")
        self.clock.advance(5)
        self.deadlines.arm("a")
        self.clock.advance(5)
        self.assertEqual(self.expired, ["b"])
        self.clock.advance(5)
        self.assertEqual(self.expired, ["b", "a"])

    def test_arm_while_expiring(self) -> None:
        """A key armed by the expiry callback gets its own full timeout."""
        deadlines: Deadlines[str] = Deadlines(
            self.clock, 10.0, lambda key: self._expire_and_rearm(deadlines, key)
        )
        deadlines.arm("a")
        self.clock.advance(10)
        self.assertEqual(self.expired, ["a"])
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(10)
        self.assertEqual(self.expired, ["a", "a'"])

    def _expire_and_rearm(self, deadlines: Deadlines[str], key: str) -> None:
        self.expired.append(key)
        deadlines.arm(key + "'")

    def test_stop(self) -> None:
        """stop() disarms everything and leaves no delayed call."""
        self.deadlines.arm("a")
        self.deadlines.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(20)
        self.assertEqual(self.expired, [])

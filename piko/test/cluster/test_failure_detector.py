"""Tests for :mod:`piko.cluster.failure_detector`."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from piko.cluster.failure_detector import (
    DEFAULT_SAMPLE_SIZE,
    AccrualFailureDetector,
    ArrivalWindow,
    IFailureDetector,
)

# Go's failuredetector_test.go: (timestamps, now, sample size, expected phi),
# with a bootstrap interval of 2000 (the unit does not matter).
GO_CASES = [
    ("bootstrap", [100], 200, 10, 0.05),
    ("low phi", [100, 200, 300, 400, 500, 600], 700, 5, 1.0),
    ("high phi", [100, 200, 300, 400, 500, 600], 2000, 5, 14.0),
]


class ArrivalWindowTests(SynchronousTestCase):
    def test_go_values(self) -> None:
        """The window gives Go's phi values: bootstrap 0.05, steady 1.0, late 14.0."""
        for name, timestamps, now, size, expected in GO_CASES:
            window = ArrivalWindow(2000, size)
            for ts in timestamps:
                window.add(ts)
            self.assertAlmostEqual(window.phi(now), expected, places=9, msg=name)

    def test_ring_keeps_last_samples(self) -> None:
        """Only the last ``sample_size`` intervals count towards the mean."""
        window = ArrivalWindow(1.0, 3)
        for ts in [0, 10, 20, 21, 22, 23]:
            window.add(ts)
        self.assertEqual(window.mean(), 1.0)

    def test_no_sample(self) -> None:
        """Phi before any heartbeat is an error, as Go's panic."""
        self.assertRaises(ValueError, ArrivalWindow(1.0).phi, 5.0)
        self.assertRaises(ValueError, ArrivalWindow, 1.0, 0)

    def test_zero_mean(self) -> None:
        """A window of zero intervals is not suspect at once, and fully suspect later."""
        window = ArrivalWindow(0.0, 2)
        window.add(5.0)
        window.add(5.0)
        self.assertEqual(window.phi(5.0), 0.0)
        self.assertEqual(window.phi(5.1), float("inf"))


class AccrualFailureDetectorTests(SynchronousTestCase):
    def test_interface(self) -> None:
        """The detector provides IFailureDetector, with Go's 50-sample default."""
        detector = AccrualFailureDetector(Clock(), 0.2)
        self.assertTrue(verifyObject(IFailureDetector, detector))
        self.assertEqual(detector.sample_size, DEFAULT_SAMPLE_SIZE)

    def test_go_values_on_a_clock(self) -> None:
        """Reports at clock times give Go's suspicion levels."""
        for name, timestamps, now, size, expected in GO_CASES:
            clock = Clock()
            detector = AccrualFailureDetector(clock, 2000, size)
            for ts in timestamps:
                clock.advance(ts - clock.seconds())
                detector.report("node-1")
            clock.advance(now - clock.seconds())
            self.assertAlmostEqual(detector.suspicion_level("node-1"), expected, msg=name)

    def test_unknown_node_starts_window(self) -> None:
        """A node never heard from becomes suspect after 20 bootstrap intervals of silence."""
        clock = Clock()
        detector = AccrualFailureDetector(clock, 0.2)
        self.assertEqual(detector.suspicion_level("n"), 0.0)
        self.assertIn("n", detector)
        clock.advance(4.0)
        self.assertAlmostEqual(detector.suspicion_level("n"), 20.0)

    def test_remove(self) -> None:
        """A removed node's history is forgotten; removing twice is harmless."""
        clock = Clock()
        detector = AccrualFailureDetector(clock, 0.2)
        detector.report("n")
        clock.advance(10)
        detector.remove("n")
        detector.remove("n")
        self.assertNotIn("n", detector)
        self.assertEqual(detector.suspicion_level("n"), 0.0)

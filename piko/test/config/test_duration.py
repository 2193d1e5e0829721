# -*- test-case-name: piko.test.config.test_duration -*-
"""
Tests for Go duration parsing and formatting.
"""

from twisted.trial.unittest import SynchronousTestCase

from piko.config import format_duration, parse_duration


class ParseDurationTests(SynchronousTestCase):
    def test_units(self):
        """Every Go unit parses to seconds, including compound and fractional values."""
        self.assertEqual(parse_duration("20s"), 20.0)
        self.assertEqual(parse_duration("2m"), 120.0)
        self.assertEqual(parse_duration("100ms"), 0.1)
        self.assertEqual(parse_duration("1h30m"), 5400.0)
        self.assertEqual(parse_duration("1.5s"), 1.5)
        self.assertEqual(parse_duration("10us"), 0.00001)
        self.assertEqual(parse_duration("5\u00b5s"), 0.000005)
        self.assertEqual(parse_duration("7ns"), 7e-9)
        self.assertEqual(parse_duration("-1m"), -60.0)
        self.assertEqual(parse_duration("0"), 0.0)
        self.assertEqual(parse_duration(".5s"), 0.5)

    def test_errors(self):
        """Bad durations raise ValueError with Go's message."""
        cases = {
            "": 'time: invalid duration ""',
            "abc": 'time: invalid duration "abc"',
            "5": 'time: missing unit in duration "5"',
            "5x": 'time: unknown unit "x" in duration "5x"',
            ".s": 'time: invalid duration ".s"',
        }
        for text, message in cases.items():
            e = self.assertRaises(ValueError, parse_duration, text)
            self.assertEqual(str(e), message)


class FormatDurationTests(SynchronousTestCase):
    def test_go_spelling(self):
        """Durations are formatted as Go's Duration.String does."""
        self.assertEqual(format_duration(0), "0s")
        self.assertEqual(format_duration(30), "30s")
        self.assertEqual(format_duration(60), "1m0s")
        self.assertEqual(format_duration(0.1), "100ms")
        self.assertEqual(format_duration(300), "5m0s")
        self.assertEqual(format_duration(5400.5), "1h30m0.5s")

"""Tests for :mod:`piko.cluster`."""

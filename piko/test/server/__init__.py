"""Tests for :mod:`piko.server`."""

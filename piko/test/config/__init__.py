"""Tests for :mod:`piko.config`."""

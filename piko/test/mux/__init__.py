"""Tests for :mod:`piko.mux`."""

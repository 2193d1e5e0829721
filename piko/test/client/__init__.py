"""Tests for :mod:`piko.client`."""

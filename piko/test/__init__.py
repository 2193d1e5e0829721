"""Trial tests for :mod:`piko`, mirroring the package layout."""

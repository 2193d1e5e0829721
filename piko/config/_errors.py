"""
Configuration errors.  ``str(error)`` is the line the programs print on
stderr before exiting with status 1, worded as Go Piko words it.
"""

from __future__ import annotations

__all__ = ["ConfigError", "ConfigLoadError", "ConfigValidationError", "FlagError"]


class ConfigError(Exception):
    """
    Base class: the configuration cannot be used.
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class FlagError(ConfigError):
    """
    The command line is wrong (``unknown flag: --x``, ``invalid argument ...``).
    """


class ConfigLoadError(ConfigError):
    """
    The YAML file cannot be read or decoded (``read file: ...``,
    ``parse config: <path>: ...``).
    """


class ConfigValidationError(ConfigError):
    """
    The assembled configuration is invalid.

    :ivar reason: Go's ``Validate()`` text, e.g. ``proxy: missing bind addr``;
        ``str()`` adds the ``"config: "`` prefix Go prints.
    """

    @property
    def reason(self) -> str:
        return str(self.args[0]) if self.args else ""

    def __str__(self) -> str:
        return f"config: {self.reason}"

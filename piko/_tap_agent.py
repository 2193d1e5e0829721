# -*- test-case-name: piko.test.config.test_twistd -*-
"""
``twistd piko-agent``: the command-line options and the service factory.

The options come from the same table as ``piko agent`` (see
:mod:`piko.config`); this module only picks the global reactor, inside
:func:`makeService`, as only the ``_tap_*`` modules and the CLI may.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from piko._twistd import make_options_class
from piko.config import AGENT_COMMAND, AgentConfig, Invocation, build_agent_config

if TYPE_CHECKING:
    from twisted.application.service import IService
    from twisted.python import usage

__all__ = ["Options", "makeService"]


def _build(invocation: Invocation) -> AgentConfig:
    return build_agent_config(
        invocation.names[0], invocation.parsed.positionals, invocation.parsed.values
    )


Options: type[usage.Options] = make_options_class("piko-agent", AGENT_COMMAND, _build)


def makeService(options: usage.Options) -> IService:
    """
    Build the piko agent service from parsed twistd options.

    :param options: an :data:`Options` instance; its ``config`` attribute
        holds the validated configuration.
    """
    from twisted.internet import reactor

    from piko._tap_exit import build_or_exit, exit_when_failed
    from piko.agent.service import make_agent_service

    config: AgentConfig = options.config  # type: ignore[attr-defined]
    service = build_or_exit("twistd piko-agent", lambda: make_agent_service(config, reactor))
    exit_when_failed(service, reactor)
    return service

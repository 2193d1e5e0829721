# -*- test-case-name: piko.test.config.test_twistd -*-
"""
``twistd piko-server``: the command-line options and the service factory.

The options come from the same table as ``piko server`` (see
:mod:`piko.config`); this module only picks the global reactor, inside
:func:`makeService`, as only the ``_tap_*`` modules and the CLI may.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from piko._twistd import make_options_class
from piko.config import (
    SERVER_COMMAND,
    Invocation,
    ServerConfig,
    build_server_config,
)

if TYPE_CHECKING:
    from twisted.application.service import IService
    from twisted.python import usage

__all__ = ["Options", "makeService"]


def _build(invocation: Invocation) -> ServerConfig:
    return build_server_config(invocation.parsed.values)


Options: type[usage.Options] = make_options_class("piko-server", SERVER_COMMAND, _build)


def makeService(options: usage.Options) -> IService:
    """
    Build the piko server service from parsed twistd options.

    :param options: an :data:`Options` instance; its ``config`` attribute
        holds the validated configuration.
    :raises SystemExit: with the one-line reason (printed on stderr, status 1)
        when a setting cannot be used (a weak or unparsable auth key,
        an unreadable certificate): the server fails closed, as ``piko
        server`` does, instead of dying with twistd's traceback.
    """
    from twisted.internet import reactor

    from piko._tap_exit import build_or_exit, exit_when_failed
    from piko.server.service import make_server_service

    config: ServerConfig = options.config  # type: ignore[attr-defined]
    from piko.config import LOAD_OPTIONS, LoadConfig, apply_values

    invocation = options.invocation  # type: ignore[attr-defined]
    source = apply_values(LoadConfig(), LOAD_OPTIONS, invocation.parsed.values)
    service = build_or_exit("twistd piko-server", lambda: make_server_service(config, reactor))
    # Traffic policies reload from the same file on SIGHUP (piko.policy.reload).
    reloader = getattr(service, "policy_reloader", None)
    if reloader is not None:
        reloader.source = source
        reloader.on_sighup(reactor)
    exit_when_failed(service, reactor)
    return service

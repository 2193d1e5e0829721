# -*- test-case-name: piko.test.config.test_twistd -*-
"""
How the twistd plugins end with an error: one line, a non-zero status, no traceback.

twistd prints a traceback for any exception out of ``makeService`` and exits 0 after
``reactor.stop()`` whatever stopped it, so a server whose port is taken would keep running
(listening on nothing) or end "successfully", and systemd's ``Restart=on-failure`` would never
fire.  ``piko`` itself already exits 1 in both cases; these helpers give twistd the same
contract:

* :func:`build_or_exit` turns a :class:`~piko.config.ConfigError` raised while building the
  service (a TLS file that cannot be read, say) into ``SystemExit`` with the message, which
  Python prints on stderr before exiting 1;
* :func:`exit_when_failed` stops the reactor when the service's ``failed`` Deferred fires (a
  port that cannot listen, a cluster that cannot be joined, an agent refused with ``401``)
  and makes the process exit 1 once the reactor has shut down.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet.error import ReactorNotRunning

from piko.config import ConfigError

__all__ = ["build_or_exit", "exit_when_failed"]

_T = TypeVar("_T")


def build_or_exit(program: str, build: Callable[[], _T]) -> _T:
    """
    Call ``build``; a :class:`ConfigError` becomes ``SystemExit("<program>: <error>")``.
    """
    try:
        return build()
    except ConfigError as e:
        raise SystemExit(f"{program}: {e}") from None


def _exit_now(status: int) -> None:  # pragma: no cover - ends the process
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(status)


def _stop(reactor: Any) -> None:
    with contextlib.suppress(ReactorNotRunning):
        reactor.stop()


def exit_when_failed(service: Any, reactor: Any, exit: Callable[[int], None] = _exit_now) -> None:
    """
    When ``service.failed`` fires (the service already logged why), stop the reactor and
    exit with status 1 once it has shut down (after twistd's own shutdown steps ran).

    :param exit: ends the process with a status (tests pass a recorder).
    """
    failed = getattr(service, "failed", None)
    if failed is None:
        return

    def fail(_: object) -> None:
        reactor.addSystemEventTrigger("after", "shutdown", exit, 1)
        if not reactor.running:
            # twistd starts the services before the reactor runs: a port that cannot listen
            # fails right there, and stopping must wait for the reactor to be running.
            reactor.callWhenRunning(_stop, reactor)
            return
        _stop(reactor)

    failed.addCallback(fail)

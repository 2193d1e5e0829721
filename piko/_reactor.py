# -*- test-case-name: piko.test.test_reactor -*-
"""
The epoll reactor ``piko`` runs on: Twisted's, minus the legacy log context.

Twisted's ``EPollReactor.doPoll`` wraps every readiness event in
``log.callWithLogger``: it asks the selectable for its ``logPrefix()`` and
pushes a ``{"system": prefix}`` context around ``doRead``/``doWrite``, so that
legacy ``twisted.python.log.msg`` calls made inside are prefixed with it.  A
proxied HTTP request is about six such events in each of the server and the
agent, and the context push costs more than the epoll call itself.  Piko logs
through :mod:`twisted.logger` with its own fields and never reads the legacy
``system`` context, so :class:`PikoEPollReactor` dispatches events directly.

Nothing else changes: ``_doReadOrWrite`` still catches and logs an exception
raised by ``doRead``/``doWrite`` and disconnects that selectable, and a
``logPrefix`` that raises can no longer break event dispatch.

``piko`` installs this reactor by default (:func:`install`); with ``twistd``
choose it with ``--reactor=piko-epoll`` (a reactor plugin in
``twisted/plugins/piko_reactor.py``).  It is Linux-only, as epoll is.
"""

from __future__ import annotations

import errno
from typing import Any

from twisted.internet.epollreactor import EPollReactor


class PikoEPollReactor(EPollReactor):
    """
    An :class:`~twisted.internet.epollreactor.EPollReactor` that dispatches
    readiness events without the legacy per-event log context.
    """

    def doPoll(self, timeout: float | None) -> None:
        """
        Poll for events and hand each to ``_doReadOrWrite``.

        :param timeout: the longest wait in seconds, or ``None`` to wait
            until an event arrives.
        """
        if timeout is None:
            timeout = -1
        try:
            events = self._poller.poll(timeout, len(self._selectables))
        except OSError as err:
            if err.errno == errno.EINTR:
                return
            raise
        selectables = self._selectables
        dispatch = self._doReadOrWrite
        for fd, event in events:
            selectable = selectables.get(fd)
            if selectable is not None:
                dispatch(selectable, fd, event)

    doIteration = doPoll


def install() -> Any:
    """
    Install :class:`PikoEPollReactor` as the global reactor.

    :return: the reactor.
    :raises twisted.internet.error.ReactorAlreadyInstalledError: if another
        reactor was installed (imported) first.
    """
    from twisted.internet.main import installReactor

    reactor = PikoEPollReactor()
    installReactor(reactor)
    return reactor


def install_if_possible() -> None:
    """
    Install :class:`PikoEPollReactor` unless a reactor is installed already or
    epoll is unavailable (not Linux), in which case Twisted's default is used.
    """
    import sys

    if "twisted.internet.reactor" in sys.modules:
        return
    try:
        install()
    except (AttributeError, ImportError, OSError):  # pragma: no cover - not Linux
        return

# -*- test-case-name: piko.test.test_reactor -*-
"""
The epoll reactor ``piko`` runs on: Twisted's, with two costs taken out of
every proxied request.

* **The legacy log context, set once per poll.**  Twisted's
  ``EPollReactor.doPoll`` wraps every readiness event in
  ``log.callWithLogger``, which copies the current ``ILogContext``, pushes
  ``{"system": selectable.logPrefix()}`` on the context stack and pops it
  again, a few microseconds per event.  Here one context dictionary is pushed
  for the whole poll and only its ``"system"`` entry is set before each event,
  so legacy ``twisted.python.log.msg`` calls made inside ``doRead``/``doWrite``
  (and Twisted's ``test_logPrefix``) see the same ``system`` as with stock
  epoll.  As in ``callWithLogger``, a failing ``logPrefix`` is logged and
  replaced by ``"(buggy logPrefix method)"``, and an exception escaping
  ``_doReadOrWrite`` is logged and the next event is still handled.

* **Writes go out in the turn they are made.**  A Twisted transport's
  ``write`` only buffers and calls ``startWriting``; the reactor registers
  ``EPOLLOUT`` (one ``epoll_ctl``), waits for the next ``epoll_wait`` to say
  the socket is writable (it nearly always is), sends, and unregisters
  (another ``epoll_ctl``): three system calls and a loop iteration per write,
  and a proxied request writes four times in each process.  Here a connected
  descriptor that starts writing is remembered instead, and written to right
  after the current batch of events (or, for writes made by timed calls,
  before the next poll, which then does not block); only if the socket does
  not take everything is ``EPOLLOUT`` registered, as Twisted would.  This is
  what asyncio's transports do (try to send at once, then watch).  The order
  of writes to one descriptor and all backpressure (``bufferSize``,
  producers) are Twisted's own, since the same ``doWrite`` runs.

The ``piko`` command installs this reactor (:func:`install_if_possible`);
with ``twistd`` choose it with ``--reactor=piko-epoll`` (a reactor plugin in
``twisted/plugins/piko_reactor.py``).  Importing :mod:`piko` as a library
never installs it: a program that embeds piko keeps whatever reactor it chose.
It is Linux-only, as epoll is.

``doPoll`` is a copy of Twisted's with the two changes above, so
``piko.test.test_upstream_sources`` fails when Twisted's own ``doPoll`` (or
``_doReadOrWrite``) changes: re-read it and carry the change over.
``piko.test.test_twisted_reactor`` runs Twisted's own reactor tests against
this reactor.
"""

from __future__ import annotations

import errno
from select import EPOLLOUT as _EPOLLOUT
from time import perf_counter
from typing import Any

from twisted.internet.epollreactor import EPollReactor
from twisted.python import context, log
from twisted.python.log import ILogContext


class PikoEPollReactor(EPollReactor):
    """
    An :class:`~twisted.internet.epollreactor.EPollReactor` that sets the
    legacy log context once per poll and writes without waiting for a poll to
    report writability (see the module docstring).
    """

    #: Seconds of event handling after which the writes made so far are sent, even in the
    #: middle of a batch of events (see :meth:`doPoll`).
    flush_interval = 0.001

    #: Flushing pending writes may make more (a resumed producer); at most
    #: this many rounds run before the rest waits for EPOLLOUT as usual.
    _MAX_FLUSH_ROUNDS = 4

    def __init__(self) -> None:
        #: Connected descriptors that started writing since the last flush.
        self._pending_writers: dict[Any, None] = {}
        #: The descriptor being flushed, and whether it stopped writing.
        self._flushing: Any = None
        self._flushed_all = False
        super().__init__()

    def addWriter(self, writer: Any) -> None:
        """
        Watch ``writer`` for writability; a connected descriptor is written to
        after the current events instead (see :meth:`_flush_writes`).
        """
        if writer is self._flushing:
            # Still has data after an eager write (or wrote again from a callback).
            self._flushed_all = False
            return
        if getattr(writer, "connected", False) and writer.fileno() not in self._writes:
            self._pending_writers[writer] = None
            return
        super().addWriter(writer)

    def removeWriter(self, writer: Any) -> None:
        """Stop watching ``writer`` (or forget its pending eager write)."""
        if writer is self._flushing:
            self._flushed_all = True
        self._pending_writers.pop(writer, None)
        super().removeWriter(writer)

    def getWriters(self) -> list[Any]:
        """Every descriptor waiting to write, eager or watched."""
        writers: list[Any] = super().getWriters()
        return writers + [w for w in self._pending_writers if w not in writers]

    def removeAll(self) -> list[Any]:
        """Remove every descriptor, pending writers included."""
        pending = list(self._pending_writers)
        self._pending_writers.clear()
        removed: list[Any] = super().removeAll()
        return removed + [w for w in pending if w not in removed]

    def _flush_writes(self, log_context: dict[str, Any]) -> None:
        """
        Write what connected descriptors buffered, as a writable event would;
        those the socket did not take in full are watched for EPOLLOUT.

        :param log_context: the legacy log context pushed for this poll; its
            ``"system"`` is set to each writer's ``logPrefix()``.
        """
        dispatch = self._dispatch
        for _ in range(self._MAX_FLUSH_ROUNDS):
            pending = self._pending_writers
            if not pending:
                return
            self._pending_writers = {}
            for writer in pending:
                fd = writer.fileno()
                if fd == -1 or not getattr(writer, "connected", False):
                    continue
                self._flushing = writer
                self._flushed_all = False
                try:
                    dispatch(writer, fd, _EPOLLOUT, log_context)
                finally:
                    self._flushing = None
                if not self._flushed_all and getattr(writer, "connected", False):
                    super().addWriter(writer)
        for writer in self._pending_writers:
            super().addWriter(writer)
        self._pending_writers = {}

    def _dispatch(self, selectable: Any, fd: int, event: int, log_context: dict[str, Any]) -> None:
        """
        Handle one event as ``log.callWithLogger(selectable, _doReadOrWrite,
        ...)`` does, without pushing a context of its own.

        :param log_context: the legacy log context pushed for this poll; its
            ``"system"`` becomes ``selectable.logPrefix()``.
        """
        try:
            prefix = selectable.logPrefix()
        except KeyboardInterrupt:
            raise
        except BaseException:
            prefix = "(buggy logPrefix method)"
            log.err(system=prefix)
        log_context["system"] = prefix
        try:
            self._doReadOrWrite(selectable, fd, event)
        except KeyboardInterrupt:
            raise
        except BaseException:
            log.err(system=prefix)

    def doPoll(self, timeout: float | None) -> None:
        """
        Poll for events, hand each to ``_doReadOrWrite``, then write what the
        handlers wrote.

        Within a long batch of events, the writes made so far are also sent
        every :attr:`flush_interval` seconds.  Under load a batch is, say,
        fifty requests read from fifty connections; sending each one's frame
        only after all fifty are handled leaves the next process (the agent)
        idle meanwhile, and the server idle while the agent then handles them
        all: the two took turns on two cores.  Sending every millisecond lets
        them overlap, for some 40 % more requests per second at the same CPU
        per request (``benchmarks``, wrk ``-c50``), while a quiet connection's
        write still waits for nothing.

        :param timeout: the longest wait in seconds, or ``None`` to wait
            until an event arrives.  Writes made since the last poll (by timed
            calls) are sent first, and the poll then does not wait, since
            what they set off may have scheduled more calls.
        """
        log_context = dict(context.get(ILogContext) or {})
        context.call({ILogContext: log_context}, self._poll, timeout, log_context)

    def _poll(self, timeout: float | None, log_context: dict[str, Any]) -> None:
        """:meth:`doPoll`, run inside the poll's legacy log context."""
        if self._pending_writers:
            self._flush_writes(log_context)
            timeout = 0
        elif timeout is None:
            timeout = -1
        try:
            events = self._poller.poll(timeout, len(self._selectables))
        except OSError as err:
            if err.errno == errno.EINTR:
                return
            raise
        selectables = self._selectables
        dispatch = self._dispatch
        interval = self.flush_interval
        clock = perf_counter
        flush_at = clock() + interval
        for fd, event in events:
            selectable = selectables.get(fd)
            if selectable is not None:
                dispatch(selectable, fd, event, log_context)
                if self._pending_writers and clock() >= flush_at:
                    self._flush_writes(log_context)
                    flush_at = clock() + interval
        if self._pending_writers:
            self._flush_writes(log_context)

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

"""
Twisted's own reactor tests, run against :class:`piko._reactor.PikoEPollReactor`.

Twisted tests each reactor through ``ReactorBuilder`` mixins: every module in
:mod:`twisted.internet.test` turns its builders into one test case class per
reactor it knows.  This module makes, for each builder that Twisted runs
against its stock ``EPollReactor``, the same class with ``PikoEPollReactor``
as the reactor, so the fork passes everything stock epoll passes.  The
modules are the ones whose behaviour the fork touches (dispatch, the legacy
log context, writes: TCP, UNIX, TLS, UDP, pipes to processes, stdio) plus
the core, time and thread tests: 301 tests, about 20 seconds.

Where stock epoll is excused, so is this reactor:

* a builder's ``skippedReactors`` entry for stock epoll applies here too;
* ``test_lostFileDescriptor`` is skipped by Twisted for any class named
  ``EPollReactor`` (epoll drops a closed descriptor silently); it names the
  class, so the skip is repeated here;
* ``test_changeUID`` makes the child switch to uid 1 and fails with stock
  epoll too when the interpreter lives where uid 1 cannot read it (as root,
  under ``/root``); it is skipped when run as root.

The tests need PyHamcrest (part of the ``test`` extra), which Twisted's
connection tests import.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from twisted.trial.unittest import SkipTest, SynchronousTestCase

#: Twisted's stock reactor whose test classes are mirrored.
_STOCK = "twisted.internet.epollreactor.EPollReactor"

#: The modules of :mod:`twisted.internet.test` mirrored here.
MODULES = (
    "test_core",
    "test_time",
    "test_threads",
    "test_fdset",
    "test_tcp",
    "test_unix",
    "test_tls",
    "test_newtls",
    "test_socket",
    "test_udp",
    "test_process",
    "test_stdio",
)

#: Tests Twisted excuses stock epoll from by other means than ``skippedReactors``.
_EXCUSED = {
    "test_lostFileDescriptor": (
        True,
        "Twisted skips it for EPollReactor by class name: epoll drops a closed descriptor"
        " without an event, so the loss cannot be detected",
    ),
    "test_changeUID": (
        hasattr(os, "getuid") and os.getuid() == 0,
        "as root the child (uid 1) may not read the interpreter; fails with stock epoll too",
    ),
}


def _mirror(module_name: str, reactor: Any) -> dict[str, type]:
    """
    The test case classes Twisted makes for stock epoll in ``module_name``,
    remade with ``reactor`` as the reactor under test.
    """
    module = importlib.import_module(f"twisted.internet.test.{module_name}")
    classes: dict[str, type] = {}
    for name, stock in sorted(vars(module).items()):
        if not (
            isinstance(stock, type)
            and name.endswith("_EPollReactorTests")
            and issubclass(stock, SynchronousTestCase)
        ):
            continue
        builder: Any = stock.__bases__[0]
        attributes: dict[str, Any] = {"__module__": __name__, "reactorFactory": reactor}
        if _STOCK in builder.skippedReactors:
            attributes["skip"] = builder.skippedReactors[_STOCK]
        for test, (excused, why) in _EXCUSED.items():
            if excused and hasattr(builder, test):
                attributes[test] = _skipped(why)
        mirrored = f"{module_name}_{name.removesuffix('_EPollReactorTests')}"
        classes[mirrored] = type(mirrored, (builder, SynchronousTestCase), attributes)
    return classes


def _skipped(why: str) -> Any:
    """A test method that Twisted would skip (or that fails alike) with stock epoll."""

    def test(self: SynchronousTestCase) -> None:
        raise SkipTest(why)

    return test


try:
    from piko._reactor import PikoEPollReactor
except ImportError:  # pragma: no cover - no epoll here
    PikoEPollReactor = None  # type: ignore[assignment,misc]

#: Modules that could not be imported for want of PyHamcrest.
_MISSING_HAMCREST: list[str] = []

if PikoEPollReactor is not None:
    for _module_name in MODULES:
        try:
            globals().update(_mirror(_module_name, PikoEPollReactor))
        except ModuleNotFoundError as error:
            if error.name != "hamcrest":
                raise
            _MISSING_HAMCREST.append(_module_name)


class MirrorTests(SynchronousTestCase):
    if PikoEPollReactor is None:  # pragma: no cover - not Linux
        skip = "epoll is Linux-only"

    def test_every_module_mirrored(self) -> None:
        """
        Each listed module gave at least one class: a Twisted release that
        renames its stock epoll classes must not make this module vacuous.
        """
        if _MISSING_HAMCREST:
            raise SkipTest(
                "PyHamcrest is not installed (pip install '.[test]'), so Twisted's tests in "
                + ", ".join(_MISSING_HAMCREST)
                + " cannot run against PikoEPollReactor"
            )
        for module_name in MODULES:
            self.assertTrue(
                any(name.startswith(f"{module_name}_") for name in globals()),
                f"no EPollReactor test classes found in twisted.internet.test.{module_name}",
            )

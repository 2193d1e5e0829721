# -*- test-case-name: piko.test.config.test_twistd -*-
"""
twistd ``usage.Options`` generated from the same command trees as ``piko``.

``usage.Options`` accepts dotted long names (``--proxy.bind-addr``) but its
getopt parsing cannot give a boolean both a bare form and ``=false``, as Go's
pflag does.  The generated classes therefore keep ``usage.Options`` for its
interface (``options["proxy.bind-addr"]``, ``optParameters``/``optFlags``
for introspection, ``UsageError``) and override :meth:`parseOptions` to call
the shared :func:`~piko.config._options.resolve_command`; the assembled,
validated model is then on ``options.config`` for ``makeService``, and twistd
is told to log through :func:`piko.logging.setup.use_for_twistd`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import attrs
from twisted.python import usage

from piko.config import (
    CommandSpec,
    ConfigError,
    Invocation,
    format_help,
    resolve_command,
    visible_options,
)

__all__ = ["make_options_class"]


def _all_options(command: CommandSpec) -> list[Any]:
    seen: dict[str, Any] = {}

    def walk(chain: list[CommandSpec]) -> None:
        for o in visible_options(chain):
            seen.setdefault(o.flag, o)
        for child in chain[-1].children:
            walk([*chain, child])

    walk([command])
    return list(seen.values())


def make_options_class(
    name: str,
    command: CommandSpec,
    build: Callable[[Invocation], Any],
) -> type[usage.Options]:
    """
    Build the twistd ``Options`` class for one program.

    :param name: the twistd subcommand name, e.g. ``piko-server``.
    :param command: the program's command tree (its root is renamed ``name``).
    :param build: turns the parsed invocation into the configuration model;
        raises :class:`ConfigError` to report a problem.
    """
    root = attrs.evolve(command, name=f"twistd {name}")
    options = _all_options(root)

    class Options(usage.Options):
        # twistd prefixes a subcommand's synopsis with "Usage: twistd [options] <name>".
        synopsis = "[command] [flags]"
        optParameters: ClassVar[list[list[Any]]] = [
            [o.flag, None, o.default_text() or None, o.help] for o in options if o.kind != "bool"
        ]
        optFlags: ClassVar[list[list[Any]]] = [
            [o.flag, None, o.help] for o in options if o.kind == "bool"
        ]

        config: Any = None
        invocation: Invocation | None = None

        def parseOptions(self, options: Sequence[str] | None = None) -> None:
            argv = list(sys.argv[1:] if options is None else options)
            try:
                invocation = resolve_command(root, argv)
            except ConfigError as e:
                # Not UsageError: twistd would print its whole help text before the error.
                raise SystemExit(f"{root.name}: {e}\nRun '{root.name} --help' for usage.") from None
            self.invocation = invocation
            if invocation.parsed.help:
                self.opt_help()
            if not invocation.command.runnable:
                words = ", ".join(c.name for c in invocation.command.children)
                raise SystemExit(
                    f"{root.name}: missing command: one of {words}\n"
                    f"Run '{root.name} --help' for usage."
                )
            self.update(invocation.parsed.values)
            self.postOptions()

        def postOptions(self) -> None:
            assert self.invocation is not None
            try:
                self.config = build(self.invocation)
            except ConfigError as e:
                raise SystemExit(f"{root.name}: {e}") from None
            # Log as ``piko`` does (console or Go's JSON, ``log.*`` honoured), not twistd's way.
            from piko.logging.setup import use_for_twistd

            use_for_twistd(self)

        def getUsage(self, width: int | None = None) -> str:
            chain = self.invocation.chain if self.invocation is not None else (root,)
            return format_help(chain)

    Options.__name__ = Options.__qualname__ = "Options"
    return Options

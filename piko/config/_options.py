# -*- test-case-name: piko.test.config.test_options -*-
"""
Declarative option tables and the one command-line parser both front ends use.

An :class:`Option` names a model field by its YAML path (``proxy.bind_addr``)
and gives its help; the flag name (``--proxy.bind-addr``), its type and its
default are *derived* from the model, so flags, YAML keys and defaults cannot
drift.  :func:`parse_args` implements the parts of Go's pflag/cobra syntax
Piko users rely on (``--flag value``, ``--flag=value``, bare ``--flag`` and
``--flag=true|false`` for booleans, comma-separated and repeatable lists,
``--`` to end flags, flags anywhere between arguments), and
:func:`resolve_command` walks a :class:`CommandSpec` tree the way cobra does.
The ``piko`` console script and the twistd plugins both call these.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import attrs
from attrs import frozen

from piko.config._duration import format_duration, parse_duration
from piko.config._errors import FlagError
from piko.config._load import field_kind

__all__ = [
    "CommandSpec",
    "Invocation",
    "Option",
    "OptionTable",
    "ParsedArgs",
    "ResolvedOption",
    "apply_values",
    "format_help",
    "parse_args",
    "parse_value",
    "resolve_command",
    "set_path",
]

T = TypeVar("T")


class _Unset:
    def __repr__(self) -> str:
        return "<model default>"


_UNSET: Any = _Unset()


@frozen
class Option:
    """
    One command-line option, described by the model field it sets.

    :ivar path: the dotted YAML/model path, e.g. ``proxy.bind_addr``.
    :ivar help: one or two sentences for ``--help``.
    :ivar flag: the flag name without dashes; defaults to ``path`` with
        ``_`` replaced by ``-`` (Go's convention).
    :ivar default: overrides the model's default for this flag only (the
        agent ``http``/``tcp`` ``--timeout`` is 10s where YAML has none).
    """

    path: str
    help: str
    flag: str = ""
    default: Any = _UNSET


@frozen
class ResolvedOption:
    """
    An :class:`Option` with its flag name, kind and default filled in.

    ``kind`` is one of ``str``, ``bool``, ``int``, ``float``, ``duration``, ``list``.
    """

    flag: str
    path: str
    kind: str
    default: Any
    help: str

    def default_text(self) -> str:
        """
        The default as ``--help`` shows it (Go spelling for durations).
        """
        if self.kind == "duration":
            return format_duration(self.default)
        if self.kind == "list":
            return ",".join(self.default)
        if self.kind == "bool":
            return "true" if self.default else "false"
        return str(self.default)


def _resolve_field(model: type, path: str) -> tuple[str, Any]:
    instance: Any = model()
    cls = model
    parts = path.split(".")
    for i, part in enumerate(parts):
        fields = {a.name: a for a in attrs.fields(cls)}
        if part not in fields:
            raise KeyError(f"{model.__name__} has no field {path}")
        a = fields[part]
        instance = getattr(instance, part)
        if i == len(parts) - 1:
            kind = field_kind(a)
            if kind in ("section", "sections"):
                raise KeyError(f"{path} is not a scalar field of {model.__name__}")
            return kind, instance
        cls = a.type
    raise KeyError(path)


@frozen
class OptionTable:
    """
    The options that set fields of one model class.
    """

    model: type
    options: tuple[Option, ...]

    def resolve(self) -> tuple[ResolvedOption, ...]:
        """
        Derive flag names, kinds and defaults from :attr:`model`.
        """
        resolved = []
        for option in self.options:
            kind, default = _resolve_field(self.model, option.path)
            if option.default is not _UNSET:
                default = option.default
            flag = option.flag or option.path.replace("_", "-")
            resolved.append(ResolvedOption(flag, option.path, kind, default, option.help))
        return tuple(resolved)


def set_path(instance: T, path: str, value: Any) -> T:
    """
    Return a copy of the frozen model ``instance`` with the dotted ``path`` set.
    """
    head, _, rest = path.partition(".")
    if rest:
        value = set_path(getattr(instance, head), rest, value)
    return attrs.evolve(instance, **{head: value})  # type: ignore[misc]


def apply_values(
    instance: T,
    table: OptionTable,
    values: Mapping[str, Any],
    with_defaults: bool = False,
) -> T:
    """
    Set on ``instance`` the fields of ``table`` whose flags are in ``values``.

    :param values: explicit flag values, keyed by flag name (see :class:`ParsedArgs`).
    :param with_defaults: also set the flag defaults of options not given
        (for subcommand tables whose defaults differ from the model's).
    """
    for option in table.resolve():
        if option.flag in values:
            instance = set_path(instance, option.path, values[option.flag])
        elif with_defaults:
            instance = set_path(instance, option.path, option.default)
    return instance


_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})


def parse_value(option: ResolvedOption, text: str) -> Any:
    """
    Parse one flag argument as pflag would.

    :raises FlagError: ``invalid argument "x" for "--flag" flag: <reason>``.
    """

    def bad(reason: str) -> FlagError:
        return FlagError(f'invalid argument "{text}" for "--{option.flag}" flag: {reason}')

    if option.kind == "str":
        return text
    if option.kind == "bool":
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise bad(f'strconv.ParseBool: parsing "{text}": invalid syntax')
    if option.kind == "int":
        try:
            return (
                int(text, 0) if text.lstrip("+-")[:2].lower() in ("0x", "0o", "0b") else int(text)
            )
        except ValueError:
            raise bad(f'strconv.ParseInt: parsing "{text}": invalid syntax') from None
    if option.kind == "float":
        try:
            return float(text)
        except ValueError:
            raise bad(f'strconv.ParseFloat: parsing "{text}": invalid syntax') from None
    if option.kind == "duration":
        try:
            return parse_duration(text)
        except ValueError as e:
            raise bad(str(e)) from None
    if option.kind == "list":
        if text == "":
            return ()
        try:
            rows = list(csv.reader([text], strict=True))
        except csv.Error as e:
            raise bad(str(e)) from None
        return tuple(rows[0]) if rows else ()
    raise AssertionError(option.kind)


@frozen
class ParsedArgs:
    """
    The outcome of :func:`parse_args`.

    :ivar values: the flags given explicitly, by flag name, parsed; a flag
        absent here was not on the command line, which is how "explicit
        flags beat YAML" is decided.
    :ivar positionals: the non-flag arguments, in order.
    :ivar help: ``-h``/``--help`` was given.
    :ivar version: ``-v``/``--version`` was given (only when allowed).
    """

    values: Mapping[str, Any]
    positionals: tuple[str, ...]
    help: bool = False
    version: bool = False


def parse_args(
    options: Sequence[ResolvedOption],
    argv: Sequence[str],
    allow_version: bool = False,
) -> ParsedArgs:
    """
    Parse ``argv`` against ``options`` with pflag's syntax.

    :param allow_version: accept ``--version``/``-v`` (the root command).
    :raises FlagError: ``unknown flag: --x``, ``flag needs an argument: --x``,
        ``unknown shorthand flag: 'x' in -x`` or an invalid argument.
    """
    by_flag = {o.flag: o for o in options}
    values: dict[str, Any] = {}
    positionals: list[str] = []
    show_help = False
    version = False
    i = 0
    args = list(argv)
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--":
            positionals.extend(args[i:])
            break
        if arg.startswith("--"):
            name, has_value, text = arg[2:].partition("=")
            if name == "help" and not has_value:
                show_help = True
                continue
            if name == "version" and allow_version and not has_value:
                version = True
                continue
            option = by_flag.get(name)
            if option is None:
                raise FlagError(f"unknown flag: --{name}")
            if not has_value:
                if option.kind == "bool":
                    text = "true"
                elif i < len(args):
                    text = args[i]
                    i += 1
                else:
                    raise FlagError(f"flag needs an argument: --{name}")
            value = parse_value(option, text)
            if option.kind == "list" and name in values:
                value = tuple(values[name]) + tuple(value)
            values[name] = value
            continue
        if arg.startswith("-") and arg != "-":
            for short in arg[1:]:
                if short == "h":
                    show_help = True
                elif short == "v" and allow_version:
                    version = True
                else:
                    raise FlagError(f"unknown shorthand flag: '{short}' in {arg}")
            continue
        positionals.append(arg)
    return ParsedArgs(values, tuple(positionals), show_help, version)


@frozen
class CommandSpec:
    """
    A command in a cobra-like tree.

    :ivar name: the word that selects it (``agent``, ``http``).
    :ivar summary: one line for the parent's command list.
    :ivar usage: the argument synopsis, e.g. ``<endpoint> <addr>``.
    :ivar tables: options of this command only.
    :ivar persistent: options of this command inherited by its children.
    :ivar children: subcommands.
    :ivar nargs: exact number of positional arguments, or ``None`` for none
        (a stray word is then an unknown command).
    :ivar runnable: ``False`` for pure groups (``piko server status cluster``).
    """

    name: str
    summary: str = ""
    usage: str = ""
    tables: tuple[OptionTable, ...] = ()
    persistent: tuple[OptionTable, ...] = ()
    children: tuple[CommandSpec, ...] = ()
    nargs: int | None = None
    runnable: bool = True
    description: str = ""

    def child(self, name: str) -> CommandSpec | None:
        """
        The subcommand called ``name``, if any.
        """
        for c in self.children:
            if c.name == name:
                return c
        return None


@frozen
class Invocation:
    """
    The command selected from a tree and its parsed arguments.

    :ivar chain: the commands from the root to the selected one.
    """

    chain: tuple[CommandSpec, ...]
    parsed: ParsedArgs

    @property
    def names(self) -> tuple[str, ...]:
        """
        The command words below the root, e.g. ``("agent", "http")``.
        """
        return tuple(c.name for c in self.chain[1:])

    @property
    def command(self) -> CommandSpec:
        """
        The selected command.
        """
        return self.chain[-1]

    def title(self) -> str:
        """
        The full command name, e.g. ``piko agent http``.
        """
        return " ".join(c.name for c in self.chain)


def visible_options(chain: Sequence[CommandSpec]) -> tuple[ResolvedOption, ...]:
    """
    The options usable at the end of ``chain``: inherited plus local.
    """
    out: list[ResolvedOption] = []
    for c in chain[:-1]:
        for t in c.persistent:
            out.extend(t.resolve())
    for t in chain[-1].persistent + chain[-1].tables:
        out.extend(t.resolve())
    return tuple(out)


def resolve_command(
    root: CommandSpec, argv: Sequence[str], allow_version: bool = False
) -> Invocation:
    """
    Select the subcommand named by ``argv`` and parse the rest, as cobra does.

    The first word that is not a flag (or a flag's value) selects a child;
    flags may come before or after command words.

    :raises FlagError: with cobra's wording for unknown commands, flags and
        wrong argument counts.
    """
    chain = [root]
    rest: list[str] = []
    args = list(argv)
    descending = True
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--":
            rest.append(arg)
            rest.extend(args[i:])
            break
        if arg.startswith("--") and "=" not in arg:
            rest.append(arg)
            kinds = {o.flag: o.kind for o in visible_options(chain)}
            kind = kinds.get(arg[2:])
            if kind is not None and kind != "bool" and i < len(args):
                rest.append(args[i])
                i += 1
            continue
        if arg.startswith("-") and arg != "-":
            rest.append(arg)
            continue
        child = chain[-1].child(arg) if descending else None
        if child is not None:
            chain.append(child)
            continue
        descending = False
        rest.append(arg)
    parsed = parse_args(
        visible_options(chain), rest, allow_version=allow_version and len(chain) == 1
    )
    invocation = Invocation(tuple(chain), parsed)
    command = chain[-1]
    if parsed.help or parsed.version:
        return invocation
    if command.nargs is None:
        if parsed.positionals:
            raise FlagError(f'unknown command "{parsed.positionals[0]}" for "{invocation.title()}"')
    elif len(parsed.positionals) != command.nargs:
        raise FlagError(f"accepts {command.nargs} arg(s), received {len(parsed.positionals)}")
    return invocation


def format_help(chain: Sequence[CommandSpec]) -> str:
    """
    Render ``--help`` for the last command of ``chain``.
    """
    command = chain[-1]
    title = " ".join(c.name for c in chain)
    lines: list[str] = []
    if command.description or command.summary:
        lines += [command.description or command.summary, ""]
    lines.append("Usage:")
    if command.runnable:
        lines.append(f"  {title} {command.usage + ' ' if command.usage else ''}[flags]".rstrip())
    if command.children:
        lines.append(f"  {title} [command]")
        lines += ["", "Available Commands:"]
        width = max(len(c.name) for c in command.children)
        lines += [f"  {c.name.ljust(width)}  {c.summary}" for c in command.children]
    options = visible_options(chain)
    if options:
        lines += ["", "Flags:"]
        for o in options:
            metavar = "" if o.kind == "bool" else f" {o.kind}"
            default = o.default_text()
            shown = f" (default {default})" if default not in ("", "false") else ""
            lines.append(f"  --{o.flag}{metavar}")
            lines.append(f"        {o.help}{shown}")
    lines.append("  -h, --help")
    return "\n".join(lines) + "\n"

"""
Sphinx directives that render the CLI and YAML reference from the option tables.

The flags, YAML keys, types, defaults and help of every program live in one
place, :mod:`piko.config._programs` (one :class:`~piko.config.OptionTable` per
command, each naming fields of the frozen configuration models).  These
directives read those tables and models at build time, so the reference pages
cannot drift from what ``piko --help`` and the YAML loader accept:

``.. piko-command:: server``
    a section per command of the tree under ``piko server`` with its usage,
    its subcommands and a table of its flags (flag, YAML key, type, default,
    help).

``.. piko-yaml:: server``
    every YAML key of the program's model, walked field by field, with its
    type, default, the flag that sets it (if any) and its help.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

import attrs
from docutils import nodes
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles

from piko.config import (
    AGENT_COMMAND,
    AGENT_HTTP_OPTIONS,
    AGENT_OPTIONS,
    AGENT_TCP_OPTIONS,
    FORWARD_COMMAND,
    FORWARD_OPTIONS,
    SERVER_COMMAND,
    SERVER_OPTIONS,
    AgentConfig,
    CommandSpec,
    ForwardConfig,
    ListenerConfig,
    LoadConfig,
    OptionTable,
    ResolvedOption,
    ServerConfig,
    StatusConfig,
)
from piko.config._duration import format_duration
from piko.config._load import field_kind

#: The programs, by the word after ``piko``.
COMMANDS = {"server": SERVER_COMMAND, "agent": AGENT_COMMAND, "forward": FORWARD_COMMAND}

#: Where the options of a table over each model sit in the YAML file: a key
#: prefix, or ``None`` for flags that have no YAML key (``--config.*`` and
#: the status client).  A table over another model fails the build.
YAML_PREFIX: dict[type, str | None] = {
    ServerConfig: "",
    AgentConfig: "",
    ForwardConfig: "",
    ListenerConfig: "listeners[].",
    LoadConfig: None,
    StatusConfig: None,
}

#: Each program's model and the tables whose help describes its YAML keys.
MODELS: dict[str, tuple[type, tuple[OptionTable, ...]]] = {
    "server": (ServerConfig, (SERVER_OPTIONS,)),
    "agent": (AgentConfig, (AGENT_OPTIONS, AGENT_HTTP_OPTIONS, AGENT_TCP_OPTIONS)),
    "forward": (ForwardConfig, (FORWARD_OPTIONS,)),
}

_SPECIAL = str.maketrans({c: "\\" + c for c in "\\*`|_[]<>"})


def escape(text: str) -> str:
    """
    Make ``text`` literal in reST body text.
    """
    return text.translate(_SPECIAL)


def literal(text: str) -> str:
    """
    ``text`` as an inline literal, or an em dash for nothing.
    """
    if text == "":
        return "—"
    return ":code:`" + text.replace("\\", "\\\\").replace("`", "\\`") + "`"


def format_default(kind: str, value: Any) -> str:
    """
    A default as a user would write it: Go durations, comma-joined lists.
    """
    if kind == "duration":
        return format_duration(value)
    if kind == "list":
        return ",".join(value)
    if kind == "bool":
        return "true" if value else "false"
    if kind == "str":
        return json.dumps(value) if value == "" else value
    return str(value)


def table(header: Sequence[str], rows: Sequence[Sequence[str]], widths: str) -> list[str]:
    """
    A ``list-table`` whose cells are already reST.
    """
    lines = [".. list-table::", "   :header-rows: 1", f"   :widths: {widths}", ""]
    for row in (header, *rows):
        lines.append(f"   * - {row[0]}")
        lines.extend(f"     - {cell}" for cell in row[1:])
    return [*lines, ""]


def flag_rows(tables: Sequence[OptionTable]) -> list[list[str]]:
    """
    One row per flag: flag, YAML key, type, default, help.
    """
    rows = []
    for t in tables:
        prefix = YAML_PREFIX[t.model]
        for o in t.resolve():
            yaml_key = "(flag only)" if prefix is None else literal(prefix + o.path)
            metavar = "" if o.kind == "bool" else f" {o.kind}"
            rows.append(
                [
                    literal(f"--{o.flag}{metavar}"),
                    yaml_key,
                    o.kind,
                    literal(o.default_text()),
                    escape(o.help),
                ]
            )
    return rows


def walk(chain: tuple[CommandSpec, ...]) -> Iterator[tuple[CommandSpec, ...]]:
    """
    Every command of the tree under ``chain[-1]``, depth first.
    """
    yield chain
    for child in chain[-1].children:
        yield from walk((*chain, child))


_UNDERLINES = '=-~^"'


def command_lines(root: CommandSpec) -> list[str]:
    """
    The reST for the whole command tree under ``piko <root>``.
    """
    piko = CommandSpec("piko", children=(root,))
    lines: list[str] = []
    for chain in walk((piko, root)):
        command = chain[-1]
        title = " ".join(c.name for c in chain)
        depth = len(chain) - 2
        lines += [title, _UNDERLINES[min(depth, len(_UNDERLINES) - 1)] * len(title), ""]
        if command.summary:
            lines += [escape(command.summary[0].upper() + command.summary[1:]) + ".", ""]
        usage = []
        if command.runnable:
            usage.append(f"{title} {command.usage} [flags]".replace("  ", " "))
        if command.children:
            usage.append(f"{title} [command]")
        lines += ["::", "", *(f"   {u}" for u in usage), ""]
        if command.children:
            lines += table(
                ["Command", "Does"],
                [[literal(f"{title} {c.name}"), escape(c.summary)] for c in command.children],
                "30 70",
            )
        own = command.persistent + command.tables
        if own:
            if command.persistent and command.children:
                lines += ["These flags apply to this command and all its subcommands.", ""]
            lines += table(
                ["Flag", "YAML key", "Type", "Default", "Help"],
                flag_rows(own),
                "28 24 8 12 28",
            )
        inherited = [c for c in chain[1:-1] if c.persistent]
        if inherited:
            names = ", ".join(
                literal(" ".join(x.name for x in chain[: chain.index(c) + 1])) for c in inherited
            )
            lines += [f"Also takes the flags of {names}.", ""]
        lines.append("")
    return lines


def yaml_rows(model: type, tables: Sequence[OptionTable]) -> list[list[str]]:
    """
    One row per scalar YAML key of ``model``: key, type, default, flag, help.
    """
    by_path: dict[str, ResolvedOption] = {}
    for t in tables:
        prefix = YAML_PREFIX[t.model] or ""
        for o in t.resolve():
            by_path.setdefault(prefix + o.path, o)
    rows: list[list[str]] = []

    def visit(cls: type, instance: Any, prefix: str) -> None:
        for a in attrs.fields(cls):
            kind = field_kind(a)
            key = prefix + a.name
            value = getattr(instance, a.name)
            if kind == "section":
                visit(a.type, value, key + ".")
            elif kind == "sections":
                item = a.type.__args__[0]
                rows.append([literal(key), "list of mappings", literal("[]"), "—", ""])
                visit(item, item(), key + "[].")
            else:
                option = by_path.get(key)
                rows.append(
                    [
                        literal(key),
                        kind,
                        literal(format_default(kind, value)),
                        literal(f"--{option.flag}") if option else "(YAML only)",
                        escape(option.help) if option else "",
                    ]
                )

    visit(model, model(), "")
    return rows


class PikoCommandDirective(SphinxDirective):
    """
    ``.. piko-command:: server|agent|forward``: the command tree and its flags.
    """

    required_arguments = 1

    def run(self) -> list[Any]:
        name = self.arguments[0]
        if name not in COMMANDS:
            raise self.error(f"unknown program {name!r}; one of {sorted(COMMANDS)}")
        return self._parse(command_lines(COMMANDS[name]))

    def _parse(self, lines: list[str]) -> list[Any]:
        source = f"<piko-command {self.arguments[0]}>"
        content = StringList(lines, source=source)
        node = nodes.section()  # a container for the nested sections
        node.document = self.state.document
        nested_parse_with_titles(self.state, content, node)
        return list(node.children)


class PikoYAMLDirective(PikoCommandDirective):
    """
    ``.. piko-yaml:: server|agent|forward``: every YAML key of the program.
    """

    def run(self) -> list[Any]:
        name = self.arguments[0]
        if name not in MODELS:
            raise self.error(f"unknown program {name!r}; one of {sorted(MODELS)}")
        model, tables = MODELS[name]
        lines = table(
            ["YAML key", "Type", "Default", "Flag", "Help"],
            yaml_rows(model, tables),
            "30 8 14 22 26",
        )
        return self._parse(lines)


def setup(app: Sphinx) -> dict[str, Any]:
    """
    Register the directives.
    """
    app.add_directive("piko-command", PikoCommandDirective)
    app.add_directive("piko-yaml", PikoYAMLDirective)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}

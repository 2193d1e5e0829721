# -*- test-case-name: piko.test.config.test_load -*-
"""
Strict YAML decoding onto the configuration models.

Go Piko decodes with ``yaml.v3`` and ``KnownFields(true)``: unknown keys are
fatal, scalars must fit the field type, and the file is decoded *on top of*
the current values, so absent keys keep their defaults.  We walk PyYAML's node
tree (not its constructed objects) so that quoting and line numbers are
known: ``"true"`` is a string, ``port: 3000`` may fill a string field like in
yaml.v3, and every error names the line and the dotted key path.
"""

from __future__ import annotations

import os
import typing
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import attrs
import yaml

from piko.config._duration import parse_duration
from piko.config._errors import ConfigLoadError
from piko.config._expand import expand_env
from piko.config._models import is_duration

__all__ = ["apply_yaml", "field_kind", "load_file", "read_text"]

T = TypeVar("T")

_NULLS = frozenset({"", "~", "null", "Null", "NULL"})
_TRUE = frozenset({"true", "True", "TRUE", "yes", "Yes", "YES", "on", "On", "ON"})
_FALSE = frozenset({"false", "False", "FALSE", "no", "No", "NO", "off", "Off", "OFF"})


class _NodeError(Exception):
    def __init__(self, node: yaml.Node, message: str) -> None:
        super().__init__(f"line {node.start_mark.line + 1}: {message}")


def field_kind(a: attrs.Attribute[Any]) -> str:
    """
    Classify a model field: ``str``, ``bool``, ``int``, ``float``,
    ``duration``, ``list`` (of strings), ``section`` (a nested model) or
    ``sections`` (a list of nested models).
    """
    tp = a.type
    if isinstance(tp, type) and attrs.has(tp):
        return "section"
    if typing.get_origin(tp) is tuple:
        (item, _ellipsis) = typing.get_args(tp)
        if isinstance(item, type) and attrs.has(item):
            return "sections"
        return "list"
    if tp is bool:
        return "bool"
    if tp is int:
        return "int"
    if tp is float:
        return "duration" if is_duration(a) else "float"
    if tp is str:
        return "str"
    raise TypeError(f"unsupported configuration field type {tp!r} for {a.name}")


def _item_type(a: attrs.Attribute[Any]) -> type:
    return typing.cast(type, typing.get_args(a.type)[0])


def _is_null(node: yaml.Node) -> bool:
    return (
        isinstance(node, yaml.ScalarNode)
        and getattr(node, "style", None) is None
        and (node.value in _NULLS or node.tag == "tag:yaml.org,2002:null")
    )


def _scalar(node: yaml.Node, key: str, what: str) -> str:
    if not isinstance(node, yaml.ScalarNode):
        raise _NodeError(node, f"{key}: expected {what}, got a {_describe(node)}")
    return typing.cast(str, node.value)


def _describe(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "mapping"
    if isinstance(node, yaml.SequenceNode):
        return "list"
    if getattr(node, "style", None) is None:
        return f"value `{node.value}`"
    return f"string `{node.value}`"


def _parse_int(text: str) -> int:
    body = text.replace("_", "")
    sign = 1
    if body[:1] in "+-":
        sign = -1 if body[0] == "-" else 1
        body = body[1:]
    lowered = body.lower()
    for prefix, base in (("0x", 16), ("0o", 8), ("0b", 2)):
        if lowered.startswith(prefix):
            return sign * int(body[2:], base)
    if not body.isdigit():
        raise ValueError(text)
    return sign * int(body, 10)


def _convert(current: Any, a: attrs.Attribute[Any], node: yaml.Node, key: str) -> Any:
    kind = field_kind(a)
    if kind == "section":
        if _is_null(node):
            return current
        if not isinstance(node, yaml.MappingNode):
            raise _NodeError(node, f"{key}: expected a mapping, got a {_describe(node)}")
        return _overlay(current, node, key)
    if kind in ("sections", "list"):
        if _is_null(node):
            return ()
        if not isinstance(node, yaml.SequenceNode):
            raise _NodeError(node, f"{key}: expected a list, got a {_describe(node)}")
        items: list[Any] = []
        for index, item in enumerate(node.value):
            item_key = f"{key}[{index}]"
            if kind == "list":
                if _is_null(item):
                    items.append("")
                else:
                    items.append(_scalar(item, item_key, "a string"))
                continue
            if not isinstance(item, yaml.MappingNode):
                raise _NodeError(item, f"{item_key}: expected a mapping, got a {_describe(item)}")
            items.append(_overlay(_item_type(a)(), item, item_key))
        return tuple(items)
    if _is_null(node):
        return current
    if kind == "str":
        return _scalar(node, key, "a string")
    text = _scalar(node, key, f"a {kind}")
    quoted = getattr(node, "style", None) is not None
    if kind == "duration":
        try:
            return parse_duration(text)
        except ValueError as e:
            raise _NodeError(node, f"{key}: {e}") from None
    if quoted:
        raise _NodeError(node, f"{key}: cannot use string `{text}` as {kind}")
    try:
        if kind == "bool":
            if text in _TRUE:
                return True
            if text in _FALSE:
                return False
            raise ValueError(text)
        if kind == "int":
            return _parse_int(text)
        try:
            return float(text.replace("_", ""))
        except ValueError:
            return float(_parse_int(text))
    except ValueError:
        raise _NodeError(node, f"{key}: cannot use `{text}` as {kind}") from None


def _overlay(instance: T, node: yaml.MappingNode, path: str) -> T:
    fields = {a.name: a for a in attrs.fields(type(instance))}  # type: ignore[arg-type]
    changes: dict[str, Any] = {}
    seen: dict[str, int] = {}
    for key_node, value_node in node.value:
        name = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
        key = f"{path}.{name}" if path else str(name)
        if name is None or name not in fields:
            shown = key if name is not None else f"{path or '<top level>'}.<{_describe(key_node)}>"
            raise _NodeError(key_node, f"unknown key {shown}")
        if name in seen:
            raise _NodeError(key_node, f"key {key} already defined at line {seen[name]}")
        seen[name] = key_node.start_mark.line + 1
        changes[name] = _convert(getattr(instance, name), fields[name], value_node, key)
    return attrs.evolve(instance, **changes)  # type: ignore[misc]


def apply_yaml(instance: T, text: str, source: str) -> T:
    """
    Decode YAML ``text`` on top of ``instance`` (a model) and return the result.

    Keys absent from the file keep the value ``instance`` has; lists in the
    file replace lists in ``instance``.

    :param source: the file name, used in error messages.
    :raises ConfigLoadError: ``parse config: <source>: line N: ...`` naming
        the dotted key path for unknown keys and wrong types, or
        ``parse config: <source>: yaml: line N: ...`` for invalid YAML.
    """
    prefix = f"parse config: {source}"
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = f"line {mark.line + 1}: " if mark is not None else ""
        raise ConfigLoadError(f"{prefix}: yaml: {line}{e.problem or e.context}") from None
    except yaml.YAMLError as e:
        raise ConfigLoadError(f"{prefix}: yaml: {e}") from None
    if root is None or _is_null(root):
        return instance
    try:
        if not isinstance(root, yaml.MappingNode):
            raise _NodeError(root, f"expected a mapping at the top level, got a {_describe(root)}")
        return _overlay(instance, root, "")
    except _NodeError as e:
        raise ConfigLoadError(f"{prefix}: {e}") from None


def read_text(path: str) -> str:
    """
    Read a configuration file as UTF-8 text.

    :raises ConfigLoadError: ``read file: <path>: open <path>: no such file
        or directory``, worded as Go.
    """
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        reason = (e.strerror or str(e)).lower() if e.strerror else str(e)
        raise ConfigLoadError(f"read file: {path}: open {path}: {reason}") from None
    except UnicodeDecodeError as e:
        raise ConfigLoadError(f"read file: {path}: {e}") from None


def load_file(
    instance: T,
    path: str,
    expand: bool,
    environ: Mapping[str, str] | None = None,
    read: Callable[[str], str] = read_text,
) -> T:
    """
    Overlay the YAML file at ``path`` (if any) on ``instance``, as Go's
    ``config.Load``.

    :param path: ``--config.path``; empty means no file.
    :param expand: ``--config.expand-env``: expand ``$VAR``, ``${VAR}`` and
        ``${VAR:default}`` in the raw text first.
    :param environ: the environment for expansion (default ``os.environ``).
    :param read: reads the file; replaceable for tests.
    """
    if not path:
        return instance
    text = read(path)
    if expand:
        text = expand_env(text, os.environ if environ is None else environ)
    return apply_yaml(instance, text, path)

# -*- test-case-name: piko.test.config.test_load -*-
"""
Environment expansion of a configuration file's raw text, as Go's ``os.Expand``.

Go Piko expands ``$VAR``, ``${VAR}`` and ``${VAR:default}`` over the whole
file before YAML parsing (``--config.expand-env``).  Helm charts and
Kubernetes manifests written for Go Piko depend on the exact rules, including
the odd ones (shell-special names such as ``$1`` are looked up too, a ``$``
not followed by a name is kept, ``${}`` is eaten), so they are copied here.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["expand_env"]

_SPECIAL = set("*#$@!?-0123456789")


def _is_alnum(c: str) -> bool:
    return c == "_" or ("0" <= c <= "9") or ("a" <= c <= "z") or ("A" <= c <= "Z")


def _shell_name(s: str) -> tuple[str, int]:
    """
    Return the variable name at the start of ``s`` and how many characters it spans.

    A return of ``("", n)`` with ``n > 0`` means bad syntax whose characters
    are dropped; ``("", 0)`` means no name at all (the ``$`` is kept).
    """
    if s.startswith("{"):
        if len(s) > 2 and s[1] in _SPECIAL and s[2] == "}":
            return s[1:2], 3
        end = s.find("}", 1)
        if end == -1:
            return "", 1
        if end == 1:
            return "", 2
        return s[1:end], end + 1
    if s and s[0] in _SPECIAL:
        return s[0:1], 1
    i = 0
    while i < len(s) and _is_alnum(s[i]):
        i += 1
    return s[:i], i


def _lookup(name: str, environ: Mapping[str, str]) -> str:
    key, sep, default = name.partition(":")
    value = environ.get(key, "")
    if value == "" and sep:
        return default
    return value


def expand_env(text: str, environ: Mapping[str, str]) -> str:
    """
    Expand environment references in ``text`` like Go Piko's ``expandEnv``.

    ``$VAR`` and ``${VAR}`` become the variable's value, or ``""`` when it is
    unset; ``${VAR:default}`` becomes ``default`` when the variable is unset
    or empty.  Names are case-sensitive.

    :param text: the raw configuration file text.
    :param environ: the environment to read, normally ``os.environ``; passed
        in so tests do not touch the process environment.
    """
    out: list[str] = []
    i = 0
    start = 0
    while i < len(text):
        if text[i] == "$" and i + 1 < len(text):
            out.append(text[start:i])
            name, width = _shell_name(text[i + 1 :])
            if name == "" and width > 0:
                pass
            elif name == "":
                out.append("$")
            else:
                out.append(_lookup(name, environ))
            i += 1 + width
            start = i
        else:
            i += 1
    out.append(text[start:])
    return "".join(out)

# -*- test-case-name: piko.test.server.test_admin -*-
"""JSON encoded byte for byte as Go's ``encoding/json`` (and so gin's ``c.JSON``) writes it."""

from __future__ import annotations

import json
from typing import Any

_GO_ESCAPES = {
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}


def go_json(value: Any) -> bytes:
    """
    Compact JSON with map keys sorted and HTML characters escaped, as Go does.

    Go keeps non-ASCII text as UTF-8 and escapes ``<``, ``>``, ``&``, U+2028
    and U+2029.  Struct field order is the caller's (pass dicts in Go's field
    order with ``sort_keys=False`` semantics by using :class:`GoStruct`).
    """
    text = json.dumps(_prepare(value), separators=(",", ":"), ensure_ascii=False)
    for char, escape in _GO_ESCAPES.items():
        text = text.replace(char, escape)
    return text.encode()


class GoStruct(dict[str, Any]):
    """A JSON object whose keys keep their order (a Go struct), unlike a Go map."""


def _prepare(value: Any) -> Any:
    if isinstance(value, GoStruct):
        return {key: _prepare(item) for key, item in value.items()}
    if isinstance(value, dict):
        return {key: _prepare(value[key]) for key in sorted(value)}
    if isinstance(value, (list, tuple)):
        return [_prepare(item) for item in value]
    return value

# -*- test-case-name: piko.test.policy.test_headers -*-
"""
Header rules: remove, then set (replacing every value), then add (appending).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from attrs import field, frozen

Pairs = tuple[tuple[bytes, bytes], ...]

_TOKEN = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _check_name(name: str, where: str) -> bytes:
    raw = name.strip().encode("latin-1", "replace")
    if not raw or any(c not in _TOKEN for c in raw):
        raise ValueError(f"{where}: invalid header name {name!r}")
    return raw


def parse_pair(text: str, where: str) -> tuple[bytes, bytes]:
    """``"Name: value"`` as bytes; :raises ValueError: on a bad name or a line break."""
    name, colon, value = text.partition(":")
    if not colon:
        raise ValueError(f"{where}: expected 'Name: value', got {text!r}")
    if "\r" in value or "\n" in value or "\0" in value:
        raise ValueError(f"{where}: header value may not hold a line break: {text!r}")
    return _check_name(name, where), value.strip().encode("utf-8")


@frozen
class HeaderOps:
    """One direction's edits; names compared case-insensitively."""

    remove: frozenset[bytes] = frozenset()
    set: Pairs = ()
    add: Pairs = ()
    #: the names whose values go: ``remove`` and those ``set`` replaces (computed once)
    drop: frozenset[bytes] = field(init=False, eq=False)

    @drop.default
    def _drop_default(self) -> frozenset[bytes]:
        return self.remove | {n.lower() for n, _ in self.set}

    @classmethod
    def parse(
        cls, add: Iterable[str], set_: Iterable[str], remove: Iterable[str], where: str
    ) -> HeaderOps:
        """From the configuration's strings; :raises ValueError: naming ``where``."""
        return cls(
            frozenset(_check_name(n, where).lower() for n in remove),
            tuple(parse_pair(p, where) for p in set_),
            tuple(parse_pair(p, where) for p in add),
        )

    def __bool__(self) -> bool:
        return bool(self.remove or self.set or self.add)

    def apply(self, headers: Sequence[tuple[bytes, bytes]]) -> Pairs:
        """The edited headers (order kept; removed and set ones dropped, set and added last)."""
        drop = self.drop
        out = [(n, v) for n, v in headers if n.lower() not in drop]
        out.extend(self.set)
        out.extend(self.add)
        return tuple(out)

"""
Guards on the library code piko copies, replaces or leans on.

Piko replaces a few Twisted and autobahn methods for speed or for Go's exact
bytes, and its WebSocket fast path mirrors autobahn's frame checks.  Nothing
in those libraries promises that the code copied, or the internals relied
on, stays the same, so a new release could change behaviour that piko then
silently lacks (a check autobahn adds to ``succeedHandshake`` would be
skipped by piko's own).  This test hashes the source of each such upstream
function and fails when it changes, naming what to re-read and re-check:
upgrading Twisted or autobahn is then a decision, not an accident.

After reviewing a change (and carrying it over), add the new hash printed by
the failure to that entry in ``_REVIEWED``, with the version it belongs to
in a comment.  Old hashes stay, so the suite still passes at the minimum
versions ``setup.cfg`` allows (``tox -e py311-min``).
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import textwrap
from typing import Any

from attrs import frozen
from twisted.python.reflect import namedAny
from twisted.trial.unittest import SynchronousTestCase

#: The reviewed hashes, by name (see ``UPSTREAM``).
_REVIEWED: dict[str, frozenset[str]] = {
    "twisted.internet.epollreactor.EPollReactor.doPoll": frozenset({"63d8cd39bc3446b4"}),
    "twisted.python.log.callWithLogger": frozenset({"ffb987fad68effff"}),
    "twisted.internet.posixbase._PollLikeMixin._doReadOrWrite": frozenset({"1c2b886057898f07"}),
    "twisted.internet.epollreactor.EPollReactor.addWriter": frozenset({"a3c186b70b902f4e"}),
    "twisted.internet.epollreactor.EPollReactor.removeWriter": frozenset({"bf3c5a7b70972f6e"}),
    "twisted.internet.epollreactor.EPollReactor.getWriters": frozenset({"cc85772afb7d1728"}),
    "twisted.internet.epollreactor.EPollReactor.removeAll": frozenset({"09e66e7727b58560"}),
    "twisted.internet.epollreactor.EPollReactor._add": frozenset({"23908fbd277f6b56"}),
    "twisted.internet.epollreactor.EPollReactor._remove": frozenset({"4ad82b12475a7ae6"}),
    "twisted.internet.tcp.Connection.doRead": frozenset({"6416367d705a8288", "e438377fb7c2ca5f"}),
    "twisted.internet.tcp.Connection._dataReceived": frozenset(
        {"804e7d7ce31a10ee", "a8e71caf089ab002"}
    ),
    "autobahn.websocket.protocol.WebSocketServerProtocol.succeedHandshake": frozenset(
        {"d80d7bb94434d6b5"}
    ),
    "autobahn.websocket.protocol.WebSocketServerProtocol.failHandshake": frozenset(
        {"a4f0a0d88f7ebbfe"}
    ),
    "autobahn.websocket.protocol.WebSocketServerProtocol.processHandshake": frozenset(
        {"7740c536d8ffcec0"}
    ),
    "autobahn.websocket.protocol.WebSocketProtocol.processData": frozenset({"6537ebbb275389c8"}),
    "autobahn.websocket.protocol.WebSocketProtocol.onFrameBegin": frozenset({"46d0401fae0a055d"}),
    "autobahn.websocket.protocol.WebSocketProtocol.onFrameData": frozenset({"985119e8c5a1e5bd"}),
    "autobahn.websocket.xormasker.XorMaskerNull": frozenset({"3f492bf38417fd77"}),
    "autobahn.websocket.protocol.WebSocketProtocol.onCloseFrame": frozenset({"a9b9de18fd72ff3a"}),
    "autobahn.websocket.protocol.WebSocketProtocol._protocol_violation": frozenset(
        {"a2c441d5dc842f59"}
    ),
    "autobahn.websocket.protocol.WebSocketProtocol._invalid_payload": frozenset(
        {"c96e51438f3f8d5a"}
    ),
    "autobahn.websocket.protocol.WebSocketProtocol._max_message_size_exceeded": frozenset(
        {"1025b05a08bbd565"}
    ),
    "autobahn.websocket.protocol.WebSocketProtocol._fail_connection": frozenset(
        {"37a99216876e6a1b"}
    ),
    "autobahn.websocket.protocol.WebSocketProtocol.sendCloseFrame": frozenset({"87263bcf45886d71"}),
    "autobahn.websocket.protocol.WebSocketProtocol.dropConnection": frozenset({"e6c8450f49082095"}),
    "autobahn.websocket.protocol.WebSocketProtocol._dataReceived": frozenset({"0467c40d9ef378a4"}),
    "autobahn.websocket.protocol.WebSocketProtocol.consumeData": frozenset({"51229b5ed481c347"}),
    "autobahn.twisted.websocket.WebSocketAdapterProtocol.dataReceived": frozenset(
        {"e77da7fff8b9b0b6"}
    ),
    "autobahn.twisted.websocket.WebSocketAdapterProtocol.connectionLost": frozenset(
        {"6cffec71d0d21c0a"}
    ),
}


@frozen
class Upstream:
    """
    One upstream function piko depends on in detail.

    :ivar name: its fully qualified name.
    :ivar recheck: what in piko to re-read when it changes, and why.
    """

    name: str
    recheck: str

    @property
    def reviewed(self) -> frozenset[str]:
        """The hashes (:func:`source_hash`) of the versions checked."""
        return _REVIEWED.get(self.name, frozenset())


class _CodeOnly(ast.NodeTransformer):
    """Drops docstrings and annotations, which do not change what the code does."""

    def _drop_docstring(self, node: Any) -> Any:
        self.generic_visit(node)
        body = node.body
        first = body[0] if body else None
        value = first.value if isinstance(first, ast.Expr) else None
        if isinstance(value, ast.Constant) and isinstance(value.value, str):
            node.body = body[1:] or [ast.Pass()]
        return node

    def visit_FunctionDef(self, node: ast.FunctionDef) -> Any:
        node.returns = None
        return self._drop_docstring(node)

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]
    visit_ClassDef = _drop_docstring

    def visit_arg(self, node: ast.arg) -> Any:
        node.annotation = None
        return node


def source_hash(name: str) -> str:
    """
    The first 16 hex digits of the SHA-256 of the code of ``name``: its
    ``inspect.getsource``, parsed and unparsed without docstrings, comments
    and annotations: re-indenting, re-wrapping or re-documenting is not a
    change, rewritten code is (autobahn's move to f-strings in 26.x shows).
    """
    source = textwrap.dedent(inspect.getsource(namedAny(name)))
    code = ast.unparse(_CodeOnly().visit(ast.parse(source)))
    return hashlib.sha256(code.encode("utf-8")).hexdigest()[:16]


_EPOLL = "twisted.internet.epollreactor.EPollReactor"
_TCP = "twisted.internet.tcp.Connection"
_WS = "autobahn.websocket.protocol.WebSocketProtocol"
_WS_SERVER = "autobahn.websocket.protocol.WebSocketServerProtocol"
_WS_ADAPTER = "autobahn.twisted.websocket.WebSocketAdapterProtocol"

# Each ``reviewed`` set holds the hash at the minimum versions (Twisted 24.3.0,
# autobahn 26.10.2) and, where it differs, at Twisted 26.10.0 / autobahn 26.11.1.
# The Twisted differences were read: ``return None`` in doRead, and
# _dataReceived no longer warning about a protocol's return value.  Autobahn's
# 24.4.2 and 25.9.1 sources (older minimums) differed from 26.x only by
# f-strings and permessage-deflate limits (piko never negotiates compression).
UPSTREAM = (
    # -- piko._reactor ------------------------------------------------------
    Upstream(
        f"{_EPOLL}.doPoll",
        "piko._reactor.PikoEPollReactor.doPoll/_poll is a copy of it (log context once per"
        " poll, eager writes): carry the change over",
    ),
    Upstream(
        "twisted.python.log.callWithLogger",
        "piko._reactor.PikoEPollReactor._dispatch re-implements it per event: match it",
    ),
    Upstream(
        "twisted.internet.posixbase._PollLikeMixin._doReadOrWrite",
        "piko._reactor.PikoEPollReactor._flush_writes calls it with a made-up EPOLLOUT"
        " event for eager writes: check that is still a plain doWrite",
    ),
    *(
        Upstream(
            f"{_EPOLL}.{method}",
            f"piko._reactor.PikoEPollReactor.{method} (or the eager writes) rely on it and on"
            " EPollReactor's _writes/_selectables bookkeeping",
        )
        for method in ("addWriter", "removeWriter", "getWriters", "removeAll", "_add", "_remove")
    ),
    # -- piko._tcp ----------------------------------------------------------
    Upstream(
        f"{_TCP}.doRead",
        "piko._tcp._bounded_read replaces it on WebSocket connections: carry the change over",
    ),
    Upstream(
        f"{_TCP}._dataReceived",
        "piko._tcp._bounded_read calls it with what it read",
    ),
    # -- piko.ws.server -----------------------------------------------------
    Upstream(
        f"{_WS_SERVER}.succeedHandshake",
        "piko.ws.server._ServerProtocol.succeedHandshake re-implements it (Go's 101 bytes):"
        " carry over any new check or state it sets",
    ),
    Upstream(
        f"{_WS_SERVER}.failHandshake",
        "piko.ws.server._ServerProtocol.failHandshake re-implements it (gorilla's answer)",
    ),
    Upstream(
        f"{_WS_SERVER}.processHandshake",
        "piko.ws.server._ServerProtocol relies on what it validates and sets (_wskey,"
        " http_request_uri) and on it calling onConnect, succeedHandshake, failHandshake",
    ),
    # -- piko.ws._stream ----------------------------------------------------
    Upstream(
        f"{_WS}.processData",
        "piko.ws._stream.ByteStreamWebSocketMixin._receive_frames mirrors its frame checks,"
        " in its order (test_fast_path_equivalence compares them): carry new checks over",
    ),
    Upstream(
        f"{_WS}.onFrameBegin",
        "ByteStreamWebSocketMixin._within_size_limits mirrors its size checks;"
        " dataReceived reads inside_message and message_data_total_length",
    ),
    Upstream(
        f"{_WS}.onFrameData",
        "ByteStreamWebSocketMixin.onFrameData unmasks with current_frame_masker.pointer()",
    ),
    Upstream(
        "autobahn.websocket.xormasker.XorMaskerNull",
        "ByteStreamWebSocketMixin.onFrameData assumes its pointer() counts the bytes processed",
    ),
    Upstream(
        f"{_WS}.onCloseFrame",
        "ByteStreamWebSocketMixin._accept_close_frame re-implements its close code and"
        " reason checks for half-closes, and onCloseFrame calls it",
    ),
    *(
        Upstream(
            f"{_WS}.{method}",
            f"ByteStreamWebSocketMixin calls {method} to fail or close the connection as"
            " autobahn does",
        )
        for method in (
            "_protocol_violation",
            "_invalid_payload",
            "_max_message_size_exceeded",
            "_fail_connection",
            "sendCloseFrame",
            "dropConnection",
        )
    ),
    Upstream(
        f"{_WS}._dataReceived",
        "ByteStreamWebSocketMixin hands it the handshake, partial frames and whole control frames",
    ),
    Upstream(
        f"{_WS}.consumeData",
        "ByteStreamWebSocketMixin.dataReceived takes over between frames (current_frame is"
        " None, data is empty) and server.succeedHandshake calls it",
    ),
    Upstream(
        f"{_WS_ADAPTER}.dataReceived",
        "ByteStreamWebSocketMixin.dataReceived replaces it",
    ),
    Upstream(
        f"{_WS_ADAPTER}.connectionLost",
        "ByteStreamWebSocketMixin.connectionLost wraps it",
    ),
)


class UpstreamSourceTests(SynchronousTestCase):
    def test_upstream_unchanged(self) -> None:
        """Every upstream function piko copies or leans on is a version someone reviewed."""
        changed = []
        for upstream in UPSTREAM:
            digest = source_hash(upstream.name)
            if digest not in upstream.reviewed:
                changed.append(f"  {upstream.name} (source hash {digest}):\n    {upstream.recheck}")
        if changed:
            self.fail(
                "upstream code piko copies or relies on has changed; re-read each and re-check,"
                " then add the new hash to its entry in _REVIEWED in"
                " piko/test/test_upstream_sources.py:\n" + "\n".join(changed)
            )

    def test_guard_detects_a_change(self) -> None:
        """The hash follows the source: a different function gives a different hash."""
        self.assertNotEqual(
            source_hash(f"{_EPOLL}.doPoll"), source_hash("piko._reactor.PikoEPollReactor._poll")
        )
        self.assertEqual(source_hash(f"{_EPOLL}.doPoll"), source_hash(f"{_EPOLL}.doPoll"))


if __name__ == "__main__":  # pragma: no cover - a maintainer's tool
    for _upstream in UPSTREAM:
        print(source_hash(_upstream.name), _upstream.name)

"""Tests for :mod:`piko.interfaces`: declared capabilities, checked with ``providedBy``."""

from __future__ import annotations

from twisted.internet.interfaces import ITCPTransport
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import directlyProvides, implementer
from zope.interface.verify import verifyClass

from piko.http.pool import _Lease
from piko.interfaces import (
    IAbortableTransport,
    ICorkableTransport,
    IHalfCloseableTransport,
    IUnwaitedCloseTransport,
    abort,
    can_half_close,
    lose_write,
)
from piko.mux.stream import Stream
from piko.ws._stream import WebSocketStreamTransport


class Recorder(StringTransport):
    """Records which close was asked for, and has every capability's method (undeclared)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def loseConnection(self) -> None:
        self.calls.append("loseConnection")

    def loseWriteConnection(self) -> None:
        self.calls.append("loseWriteConnection")

    def abortConnection(self) -> None:
        self.calls.append("abortConnection")


@implementer(IHalfCloseableTransport, IAbortableTransport)
class Declaring(Recorder):
    """The same methods, declared."""


class DeclarationTests(SynchronousTestCase):
    def test_stream(self) -> None:
        """A yamux stream declares every capability it has, and has what it declares."""
        for interface in (
            IHalfCloseableTransport,
            IAbortableTransport,
            ICorkableTransport,
            IUnwaitedCloseTransport,
        ):
            self.assertTrue(verifyClass(interface, Stream))

    def test_websocket_stream(self) -> None:
        """A WebSocket byte stream can half-close (a Close frame) and abort."""
        self.assertTrue(verifyClass(IHalfCloseableTransport, WebSocketStreamTransport))
        self.assertTrue(verifyClass(IAbortableTransport, WebSocketStreamTransport))
        self.assertFalse(ICorkableTransport.implementedBy(WebSocketStreamTransport))

    def test_lease(self) -> None:
        """A pooled connection's lease passes a half-close and an abort on."""
        self.assertTrue(verifyClass(IHalfCloseableTransport, _Lease))
        self.assertTrue(verifyClass(IAbortableTransport, _Lease))


class HelperTests(SynchronousTestCase):
    def test_undeclared_is_closed(self) -> None:
        """A method that merely exists is not a capability: the transport is closed instead."""
        t = Recorder()
        self.assertFalse(can_half_close(t))
        lose_write(t)
        abort(t)
        self.assertEqual(t.calls, ["loseConnection", "loseConnection"])

    def test_declared(self) -> None:
        """A declared capability is used."""
        t = Declaring()
        self.assertTrue(can_half_close(t))
        lose_write(t)
        abort(t)
        self.assertEqual(t.calls, ["loseWriteConnection", "abortConnection"])

    def test_tcp(self) -> None:
        """Twisted's ``ITCPTransport`` counts for both."""
        t = Recorder()
        directlyProvides(t, ITCPTransport)
        lose_write(t)
        abort(t)
        self.assertEqual(t.calls, ["loseWriteConnection", "abortConnection"])

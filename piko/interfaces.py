# -*- test-case-name: piko.test.test_interfaces -*-
"""
Capabilities a transport declares, beyond :class:`~twisted.internet.interfaces.ITransport`.

Code that can do better with a capability (half-close a relay instead of closing it, reset a
connection instead of closing it cleanly, batch writes into one frame) checks the interface
with ``providedBy`` instead of probing for a method with ``getattr``: a capability is a promise
the class makes with ``@implementer``, not an attribute that happens to exist (a
:class:`~twisted.protocols.policies.ProtocolWrapper` forwards *every* attribute lookup to what
it wraps, so a probe says yes to anything the wrapped transport has).

Twisted's :class:`~twisted.internet.interfaces.ITCPTransport` already promises
``loseWriteConnection`` and ``abortConnection``, and TCP, UNIX and TLS transports provide it;
transports that are not TCP (a yamux stream, a WebSocket byte stream, a pooled connection's
lease) cannot claim the rest of ``ITCPTransport`` and declare :class:`IHalfCloseableTransport`
and :class:`IAbortableTransport` instead.  :func:`lose_write` and :func:`abort` accept either.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import ITCPTransport
from zope.interface import Interface

__all__ = [
    "IAbortableTransport",
    "ICorkableTransport",
    "IHalfCloseableTransport",
    "IUnwaitedCloseTransport",
    "abort",
    "can_half_close",
    "lose_write",
]


class IHalfCloseableTransport(Interface):
    """A transport that can close its writing side and go on reading (a FIN)."""

    def loseWriteConnection() -> None:
        """Send what is buffered, then end the writing direction; reading goes on."""


class IAbortableTransport(Interface):
    """A transport that can be reset: closed at once, buffered data dropped."""

    def abortConnection() -> None:
        """Close at once, discarding what is not sent yet (a TCP RST, a yamux RST)."""


class ICorkableTransport(Interface):
    """A transport that can hold several writes (and a close) and send them as one."""

    def cork() -> None:
        """Hold what is written, and a half-close, until :meth:`uncork`."""

    def uncork() -> None:
        """Send what was held since :meth:`cork` (one frame, where the transport frames)."""


class IUnwaitedCloseTransport(Interface):
    """A transport whose close may wait a little to ride with other traffic."""

    def loseConnectionUnwaited() -> None:
        """
        ``loseConnection``, when nothing on the other side waits for it: the transport may
        delay the close to send it with its next frame rather than on its own.
        """


def can_half_close(transport: Any) -> bool:
    """Whether ``transport`` declares ``loseWriteConnection`` (ours or Twisted's TCP one)."""
    return IHalfCloseableTransport.providedBy(transport) or ITCPTransport.providedBy(transport)


def lose_write(transport: Any) -> None:
    """Half-close ``transport`` if it can, else close it: the relay's end of one direction."""
    if can_half_close(transport):
        transport.loseWriteConnection()
    else:
        transport.loseConnection()


def abort(transport: Any) -> None:
    """Reset ``transport`` if it can be reset, else close it."""
    if IAbortableTransport.providedBy(transport) or ITCPTransport.providedBy(transport):
        transport.abortConnection()
    else:
        transport.loseConnection()

# -*- test-case-name: piko.test.mux -*-
"""
Errors raised or reported by the yamux session.

They double as ``connectionLost`` reasons, so the ones that end a stream or
a session derive from Twisted's :class:`~twisted.internet.error.ConnectionLost`
and protocols that only look for that still behave.
"""

from twisted.internet.error import ConnectionLost


class MuxError(Exception):
    """Base class of every yamux error."""


class ProtocolError(MuxError):
    """The peer broke the yamux protocol; the session answers GoAway(1) and closes."""


class SessionClosed(MuxError, ConnectionLost):
    """The session is closed (or closing): no stream can be opened or used."""

    def __str__(self) -> str:
        return " ".join(str(arg) for arg in self.args) or "session closed"


class RemoteGoAway(MuxError):
    """The peer sent GoAway(0): it accepts no new streams, existing ones go on."""


class KeepAliveTimeout(SessionClosed):
    """Our ping was not answered in time; the peer is presumed dead."""


class StreamOpenTimeout(SessionClosed):
    """A stream we opened was not acknowledged in time; Go closes the whole session then."""


class WriteTimeout(SessionClosed):
    """The transport would not take our frames for longer than the write timeout."""


class StreamReset(MuxError, ConnectionLost):
    """The stream was reset (RST) by the peer, or abandoned by a close timeout."""

    def __str__(self) -> str:
        return " ".join(str(arg) for arg in self.args) or "stream reset"

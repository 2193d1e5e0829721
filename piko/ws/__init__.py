"""
Autobahn WebSocket connections presented as plain byte streams.

Go Piko carries yamux (and raw TCP for ``/_piko/v1/tcp/``) over WebSocket
binary messages whose boundaries mean nothing.  This package gives a Twisted
``IProtocol`` that view on both ends:

* :class:`WebSocketAcceptor` takes over a connection from our HTTP front end
  once it has read a WebSocket upgrade request, and answers exactly as Go does;
* :func:`connect` dials a Piko server like Go's ``pkg/websocket.Dial``.
"""

from piko.ws._options import WebSocketOptions
from piko.ws._stream import WebSocketProtocolError, WebSocketStreamTransport
from piko.ws.client import (
    RETRYABLE_STATUSES,
    USER_AGENT,
    WebSocketDialError,
    WebSocketTarget,
    connect,
)
from piko.ws.server import HandshakeRejected, HandshakeRequest, WebSocketAcceptor

__all__ = [
    "RETRYABLE_STATUSES",
    "USER_AGENT",
    "HandshakeRejected",
    "HandshakeRequest",
    "WebSocketAcceptor",
    "WebSocketDialError",
    "WebSocketOptions",
    "WebSocketProtocolError",
    "WebSocketStreamTransport",
    "WebSocketTarget",
    "connect",
]

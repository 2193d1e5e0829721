"""
Piko for Twisted: a reverse proxy for services with no public route.

Upstreams open an outbound WebSocket to a Piko server and multiplex yamux
streams over it; the server routes downstream HTTP requests and TCP
connections to them. Wire-compatible with Go Piko v0.9.0.
"""

__version__ = "0.1.0"

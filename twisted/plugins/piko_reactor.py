"""
``twistd --reactor=piko-epoll``: Twisted's epoll reactor without the legacy
per-event log context (see :mod:`piko._reactor`).
"""

from twisted.application.reactors import Reactor

piko_epoll = Reactor(
    "piko-epoll",
    "piko._reactor",
    "epoll reactor without the legacy per-event log context (Linux; piko's default)",
)

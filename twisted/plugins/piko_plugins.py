"""
twistd plugins for Piko: ``twistd -n piko-server``, ``piko-agent``, ``piko-forward``.

Lazy ``ServiceMaker`` lines only; the options and services live in
``piko._tap_*`` and are imported when twistd runs the plugin.
"""

from twisted.application.service import ServiceMaker

pikoServer = ServiceMaker(
    "Piko server",
    "piko._tap_server",
    "A Piko server node: proxy, upstream, admin and gossip ports.",
    "piko-server",
)

pikoAgent = ServiceMaker(
    "Piko agent",
    "piko._tap_agent",
    "A Piko agent: register endpoints and forward requests to local services.",
    "piko-agent",
)

pikoForward = ServiceMaker(
    "Piko forward",
    "piko._tap_forward",
    "Piko forward: listen on local ports and forward to upstream endpoints.",
    "piko-forward",
)

# The ``piko:`` endpoint-string parsers are in piko_endpoints.py, and the
# ``piko-epoll`` reactor in piko_reactor.py.

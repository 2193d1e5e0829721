"""
The Piko SDK for Twisted: serve any ``Factory`` on a Piko endpoint, or dial one.

- :class:`Upstream` with :meth:`Upstream.listen` registers a listener on a
  Piko server and serves each proxied connection with your factory,
  reconnecting by itself (Go's ``client.Upstream.Listen``);
- :class:`Dialer` connects your factory to an endpoint through the proxy
  port's ``/_piko/v1/tcp/`` route (Go's ``client.Dialer``);
- :class:`PikoServerEndpoint` and :class:`PikoClientEndpoint` wrap both as
  Twisted endpoints, and the ``piko:`` endpoint-string parsers make
  ``serverFromString(reactor, "piko:my-endpoint:url=http\\://...")`` work.
"""

from piko.client.backoff import Backoff
from piko.client.dialer import Dialer
from piko.client.endpoints import PikoAddress, PikoClientEndpoint, PikoServerEndpoint
from piko.client.upstream import PikoListeningPort, Upstream

__all__ = [
    "Backoff",
    "Dialer",
    "PikoAddress",
    "PikoClientEndpoint",
    "PikoListeningPort",
    "PikoServerEndpoint",
    "Upstream",
]

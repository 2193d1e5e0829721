"""
Serve a twisted.web Site on a Piko endpoint: no public port, no inbound connection.

Run a Piko server (``piko server``), then::

    python docs/examples/serve_site.py http://localhost:8001 my-site

and ``curl -H 'x-piko-endpoint: my-site' localhost:8000/`` reaches this site
through the proxy port.  The listener reconnects by itself if the server
restarts.
"""

from __future__ import annotations

import sys
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.web.static import Data


def make_site() -> Site:
    """An ordinary twisted.web site: nothing here knows about Piko."""
    root = Resource()
    root.putChild(b"", Data(b"Hello from a twisted.web Site behind Piko\n", "text/plain"))
    return Site(root)


def serve(reactor: Any, upstream_url: str, endpoint_id: str) -> Deferred[IListeningPort]:
    """Listen on ``endpoint_id`` through the Piko server's upstream port at ``upstream_url``."""
    escaped = upstream_url.replace(":", r"\:")
    endpoint = serverFromString(reactor, f"piko:{endpoint_id}:url={escaped}")
    return endpoint.listen(make_site())


if __name__ == "__main__":
    from twisted.internet import reactor
    from twisted.python import log

    log.startLogging(sys.stderr)
    args = sys.argv[1:]
    url = args[0] if args else "http://localhost:8001"
    endpoint_id = args[1] if len(args) > 1 else "my-site"
    serve(reactor, url, endpoint_id).addErrback(lambda f: (log.err(f), reactor.stop()))
    reactor.run()

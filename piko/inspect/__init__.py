"""
The request inspector: what the agent relays, captured, shown, and replayable.

ngrok's agent inspector (``127.0.0.1:4040``), for Piko: :class:`Inspector` captures every
HTTP exchange (headers and bodies up to a cap) and every WebSocket and TCP connection of the
listeners it wraps, within a byte budget; :class:`InspectorResource` serves a single-page UI,
ngrok's API and a live stream of it; replays go to the local service through the listener's
own relay.  See ``docs/inspector.md``.

* :mod:`piko.inspect.store`: records and the bounded store;
* :mod:`piko.inspect.capture`: the hooks in the relay;
* :mod:`piko.inspect.replay`: replays, as they were or modified;
* :mod:`piko.inspect.render`: JSON and ``curl``;
* :mod:`piko.inspect.api`: the web resource;
* :mod:`piko.inspect.service`: listening on the inspector address.
"""

from piko.inspect.api import InspectorResource, InspectorSite
from piko.inspect.capture import IListenerInspector
from piko.inspect.inspector import Inspector
from piko.inspect.service import InspectorService, inspector_service

__all__ = [
    "IListenerInspector",
    "Inspector",
    "InspectorResource",
    "InspectorService",
    "InspectorSite",
    "inspector_service",
]

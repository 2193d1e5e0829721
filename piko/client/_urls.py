"""Building the WebSocket URLs of Piko's routes from a base URL, as Go does."""

from __future__ import annotations

from urllib.parse import quote, urlsplit, urlunsplit


def route_url(base: str, route: str, endpoint_id: str) -> str:
    """
    Append ``route`` and the escaped endpoint id to the path of ``base``.

    A base path prefix and query string are kept, like Go's
    ``URL.Path += "/piko/v1/upstream/" + endpointID``.

    :param route: ``"/piko/v1/upstream/"`` or ``"/_piko/v1/tcp/"``.
    """
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https", "ws", "wss"):
        raise ValueError(f"unsupported url scheme: {parts.scheme!r} in {base!r}")
    path = parts.path.rstrip("/") + route + quote(endpoint_id, safe="")
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))

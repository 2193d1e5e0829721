# -*- test-case-name: piko.test.config.test_addr -*-
"""
Network helpers: Go ``host:port`` strings, agent/forward targets, Twisted
endpoint strings, and listening on any of them.

Go Piko takes ``--proxy.bind-addr :8000``-style addresses; Twisted listens on
endpoint descriptions (``tcp:8000:interface=127.0.0.1``).  Every bind address
in our configuration may be either, and :func:`listen_endpoint_description`
turns it into the one form the services hand to
``twisted.internet.endpoints.serverFromString``.
"""

from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import urlsplit

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory
from twisted.internet.ssl import CertificateOptions
from twisted.protocols.tls import TLSMemoryBIOFactory

__all__ = [
    "ENDPOINT_TYPES",
    "ip_version",
    "is_endpoint_description",
    "is_loopback_bind",
    "join_host_port",
    "listen",
    "listen_endpoint_description",
    "local_host",
    "local_url",
    "split_host_port",
]

#: Prefixes that make a bind address a Twisted endpoint description rather
#: than a Go ``host:port``.  A host literally named like one of these would be
#: misread, which no real deployment does.
ENDPOINT_TYPES: frozenset[str] = frozenset(
    {"tcp", "tcp6", "ssl", "tls", "unix", "systemd", "onion", "tor", "le", "lets", "piko"}
)


def split_host_port(addr: str) -> tuple[str, str]:
    """
    Split ``host:port`` the way Go's ``net.SplitHostPort`` does.

    :raises ValueError: when there is no port, too many colons, or bad brackets.
    """
    if addr.startswith("["):
        end = addr.find("]")
        if end == -1:
            raise ValueError(f"address {addr}: missing ']' in address")
        host = addr[1:end]
        rest = addr[end + 1 :]
        if not rest.startswith(":"):
            if rest == "":
                raise ValueError(f"address {addr}: missing port in address")
            raise ValueError(f"address {addr}: unexpected ']' in address")
        port = rest[1:]
        if ":" in port:
            raise ValueError(f"address {addr}: too many colons in address")
        return host, port
    colon = addr.rfind(":")
    if colon == -1:
        raise ValueError(f"address {addr}: missing port in address")
    host, port = addr[:colon], addr[colon + 1 :]
    if ":" in host:
        raise ValueError(f"address {addr}: too many colons in address")
    if "[" in host or "]" in host or "[" in port or "]" in port:
        raise ValueError(f"address {addr}: unexpected bracket in address")
    return host, port


def ip_version(host: str) -> int | None:
    """Return 4 or 6 if ``host`` is an IP address literal, else ``None`` (a name)."""
    try:
        return ipaddress.ip_address(host).version
    except ValueError:
        return None


def join_host_port(host: str, port: str) -> str:
    """
    Join a host and port like Go's ``net.JoinHostPort`` (IPv6 hosts bracketed).
    """
    if ":" in host:
        return f"[{host}]:{port}"
    return f"{host}:{port}"


def _bare_port(addr: str) -> bool:
    # Go: strconv.Atoi(addr) succeeds and 0 <= port < 0xffff (sic: 65535 is
    # rejected, a quirk we keep so the same files mean the same thing).
    body = addr[1:] if addr[:1] in "+-" else addr
    if not body.isascii() or not body.isdigit():
        return False
    return 0 <= int(addr) < 0xFFFF


def local_host(addr: str) -> str | None:
    """
    Resolve a TCP target or forward port address like Go's ``Host()``.

    A bare port means ``localhost:<port>``; ``host:port`` is kept.

    :return: ``host:port``, or ``None`` when ``addr`` is neither form.
    """
    if _bare_port(addr):
        return "localhost:" + addr
    try:
        split_host_port(addr)
    except ValueError:
        return None
    return addr


def local_url(addr: str) -> str | None:
    """
    Resolve an HTTP listener target like Go's agent ``ListenerConfig.URL()``.

    ``"3000"`` becomes ``http://localhost:3000``; a URL with a scheme and a
    host (``https://10.0.0.1:3000/prefix``) is kept; ``host:port`` becomes
    ``http://host:port``.

    :return: the URL, or ``None`` when ``addr`` is none of these.
    """
    if _bare_port(addr):
        return "http://localhost:" + addr
    try:
        parts = urlsplit(addr)
    except ValueError:
        parts = None
    if parts is not None and parts.scheme and parts.netloc:
        return addr
    try:
        host, port = split_host_port(addr)
    except ValueError:
        return None
    return "http://" + join_host_port(host, port)


def is_endpoint_description(addr: str) -> bool:
    """
    Whether ``addr`` is a Twisted endpoint description rather than ``host:port``.
    """
    prefix, sep, _ = addr.partition(":")
    return bool(sep) and prefix.lower() in ENDPOINT_TYPES


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:").replace("=", "\\=")


def listen_endpoint_description(bind_addr: str) -> str:
    """
    Map a bind address to a Twisted server endpoint description.

    Endpoint descriptions (``tcp:...``, ``ssl:...``, ``unix:...``,
    ``systemd:...``) pass through unchanged.  Go-style addresses map to TCP:
    ``:8000`` -> ``tcp:8000`` (all IPv4 interfaces; Go would also listen on
    IPv6), ``10.0.0.1:8000`` -> ``tcp:8000:interface=10.0.0.1`` and
    ``[::1]:8000`` -> ``tcp6:8000:interface=\\:\\:1``.

    :raises ValueError: when the address is neither form or its port is not
        a number (Go also accepts service names; Twisted does not).
    """
    if is_endpoint_description(bind_addr):
        return bind_addr
    host, port = split_host_port(bind_addr)
    if not (port.isascii() and port.isdigit()) or int(port) > 65535:
        raise ValueError(f"address {bind_addr}: invalid port {port!r}")
    port = str(int(port))
    if host == "":
        return f"tcp:{port}"
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        ip = None
    kind = "tcp6" if ip is not None and ip.version == 6 else "tcp"
    return f"{kind}:{port}:interface={_escape(host)}"


def listen(
    reactor: Any, bind_addr: str, factory: Factory, tls: CertificateOptions | None = None
) -> Deferred[IListeningPort]:
    """
    Listen on a Go-style ``host:port`` or a Twisted endpoint string, with TLS if given.

    TLS wraps whatever the endpoint is (TCP, UNIX, systemd), so every listen
    form can serve TLS.

    :raises ValueError: for an address that is neither.
    """
    endpoint = serverFromString(reactor, listen_endpoint_description(bind_addr))
    if tls is None:
        return endpoint.listen(factory)
    return endpoint.listen(TLSMemoryBIOFactory(tls, False, factory))


def is_loopback_bind(bind_addr: str) -> bool:
    """
    Whether ``bind_addr`` listens on loopback only: a ``host:port`` whose host is
    ``localhost`` or a loopback IP, or a ``tcp``/``tcp6`` endpoint description whose
    ``interface`` is one, or a ``unix`` socket.  An empty host (every interface) is not.
    """
    if is_endpoint_description(bind_addr):
        kind, _, rest = bind_addr.partition(":")
        if kind.lower() == "unix":
            return True
        if kind.lower() not in ("tcp", "tcp6"):
            return False
        host = ""
        for part in rest.replace("\\:", "\0").split(":"):
            name, eq, value = part.partition("=")
            if eq and name == "interface":
                host = value.replace("\0", ":").replace("\\", "")
    else:
        try:
            host, _ = split_host_port(bind_addr)
        except ValueError:
            return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False

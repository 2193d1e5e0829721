# -*- test-case-name: piko.test.config.test_models -*-
"""
The configuration models: one frozen attrs tree per program.

Field names are the YAML keys of Go Piko v0.9.0 (``proxy.bind_addr``), and
the defaults are Go's ``Default()`` values, so a Go configuration file maps
onto these classes one to one.  Durations are floats in seconds (see
:func:`duration`); lists are tuples so the models stay hashable and frozen.

The loader (:mod:`piko.config._load`) and the flag tables
(:mod:`piko.config._options`) read the field types and defaults from here,
which is what keeps flags, YAML and defaults from drifting apart.
"""

from __future__ import annotations

from typing import Any

import attrs
from attrs import field, frozen

from piko.config._policies import PolicyConfig

__all__ = [
    "AccessLogConfig",
    "AccessLogHeaderConfig",
    "AdminConfig",
    "AgentConfig",
    "AgentServerConfig",
    "AuthConfig",
    "ClientTLSConfig",
    "ClusterCertsConfig",
    "ClusterConfig",
    "ClusterTLSConfig",
    "ConnectConfig",
    "ConnectTLSConfig",
    "ForwardConfig",
    "ForwardConnectConfig",
    "GossipConfig",
    "HTTPServerConfig",
    "InspectConfig",
    "JWKSConfig",
    "ListenerConfig",
    "ListenerHTTPClientConfig",
    "LoadConfig",
    "LogConfig",
    "PortConfig",
    "ProxyConfig",
    "RebalanceConfig",
    "ServerConfig",
    "ServerTLSConfig",
    "StatusConfig",
    "StatusServerConfig",
    "TenantConfig",
    "UpstreamConfig",
    "duration",
    "is_duration",
]

_DURATION = "piko.duration"


def duration(default: float) -> Any:
    """
    Declare a duration field (seconds), read from Go duration strings.

    The marker lets the loader and the flag parser tell ``timeout: 30s``
    apart from a plain float such as ``shed_rate: 0.005``.

    :param default: the default in seconds.
    """
    return field(default=default, metadata={_DURATION: True})


def is_duration(a: attrs.Attribute[Any]) -> bool:
    """
    Whether the attrs field was declared with :func:`duration`.
    """
    return bool(a.metadata.get(_DURATION, False))


# --- shared pieces ---------------------------------------------------------


@frozen
class LogConfig:
    """
    Logging: ``log.level`` (debug|info|warn|error) and ``log.subsystems``,
    the logger namespaces that get every level; and ``log.format`` (not in Go
    Piko): ``auto`` (a console line on a terminal, else Go's JSON lines),
    ``console`` or ``json``.
    """

    level: str = "info"
    subsystems: tuple[str, ...] = ()
    format: str = "auto"


@frozen
class AccessLogHeaderConfig:
    """
    Which headers an access log record carries: an allow list XOR a block list.
    """

    block_list: tuple[str, ...] = ()
    allow_list: tuple[str, ...] = ()


@frozen
class AccessLogConfig:
    """
    The per-request access log (``proxy.access_log``, agent listeners).
    """

    level: str = "info"
    request_headers: AccessLogHeaderConfig = field(factory=AccessLogHeaderConfig)
    response_headers: AccessLogHeaderConfig = field(factory=AccessLogHeaderConfig)
    disable: bool = False


@frozen
class JWKSConfig:
    """
    A JWK Set to verify tokens with: ``http(s)://`` (refreshed every
    ``cache_ttl``, 0 meaning the library default of one hour) or ``file://``.
    """

    endpoint: str = ""
    cache_ttl: float = duration(0.0)
    timeout: float = duration(0.0)


@frozen
class AuthConfig:
    """
    JWT verification for one port.  Keys are PEM *text* (not paths) and the
    HMAC secret is used as raw bytes, as in Go.
    """

    hmac_secret_key: str = ""
    rsa_public_key: str = ""
    ecdsa_public_key: str = ""
    audience: str = ""
    issuer: str = ""
    disable_disconnect_on_expiry: bool = False
    jwks: JWKSConfig = field(factory=JWKSConfig)

    def enabled(self) -> bool:
        """
        Whether any verification key is configured, which turns auth on.
        """
        return bool(
            self.hmac_secret_key
            or self.rsa_public_key
            or self.ecdsa_public_key
            or self.jwks.endpoint
        )


@frozen
class ConnectTLSConfig:
    """
    Client TLS for the agent and forward (to the server) and for agent
    listeners (to the local HTTPS service).  Paths to PEM files.
    """

    cert: str = ""
    key: str = ""
    root_cas: str = ""
    insecure_skip_verify: bool = False


# --- server ----------------------------------------------------------------


@frozen
class ClientTLSConfig:
    """
    Client TLS for node-to-node forwarding (only ``proxy.tls.client`` is used,
    as in Go).
    """

    cert: str = ""
    key: str = ""
    root_cas: str = ""
    insecure_skip_verify: bool = False
    server_name: str = ""


@frozen
class ServerTLSConfig:
    """
    TLS for one server port: on when ``cert`` or ``key`` is set; ``client_cas``
    turns on mutual TLS.
    """

    cert: str = ""
    key: str = ""
    client_cas: str = ""
    client: ClientTLSConfig = field(factory=ClientTLSConfig)

    def enabled(self) -> bool:
        """
        Whether the port serves TLS.
        """
        return bool(self.cert or self.key)


@frozen
class HTTPServerConfig:
    """
    HTTP server limits of the proxy port (Go ``http.Server`` fields).

    ``read_timeout`` and ``write_timeout`` are enforced as no-progress timeouts rather than
    Go's absolute deadlines (see :class:`piko.http.server.HTTPServerProtocol`); zero or
    negative disables a timeout, as in Go.
    """

    read_timeout: float = duration(10.0)
    read_header_timeout: float = duration(10.0)
    write_timeout: float = duration(10.0)
    idle_timeout: float = duration(300.0)
    max_header_bytes: int = 1 << 20

    def header_timeout(self) -> float | None:
        """The head timeout in force: Go uses ``read_timeout`` when ``read_header_timeout`` is 0."""
        seconds = self.read_header_timeout if self.read_header_timeout else self.read_timeout
        return seconds if seconds > 0 else None

    def keep_alive_timeout(self) -> float | None:
        """The idle timeout in force: Go uses ``read_timeout`` when ``idle_timeout`` is 0."""
        seconds = self.idle_timeout if self.idle_timeout else self.read_timeout
        return seconds if seconds > 0 else None

    def body_timeout(self) -> float | None:
        """``read_timeout`` as seconds, or None when it is off."""
        return self.read_timeout if self.read_timeout > 0 else None

    def response_timeout(self) -> float | None:
        """``write_timeout`` as seconds, or None when it is off."""
        return self.write_timeout if self.write_timeout > 0 else None


@frozen
class ProxyConfig:
    """
    The proxy port (downstream clients, node-to-node forwarding target).
    """

    bind_addr: str = ":8000"
    advertise_addr: str = ""
    timeout: float = duration(30.0)
    access_log: AccessLogConfig = field(factory=AccessLogConfig)
    auth: AuthConfig = field(factory=AuthConfig)
    http: HTTPServerConfig = field(factory=HTTPServerConfig)
    tls: ServerTLSConfig = field(factory=ServerTLSConfig)


@frozen
class RebalanceConfig:
    """
    Upstream connection rebalancing; a ``threshold`` of 0 disables it.
    """

    threshold: float = 0.0
    shed_rate: float = 0.005
    min_conns: int = 50


@frozen
class TenantConfig:
    """
    An upstream tenant (experimental, YAML only): its own verifier.
    """

    id: str = ""
    auth: AuthConfig = field(factory=AuthConfig)
    #: Endpoint ids or globs this tenant owns (not in Go): its upstreams may register only
    #: these, and no other tenant may register them.  Empty: Go's behaviour.
    endpoints: tuple[str, ...] = ()


@frozen
class UpstreamConfig:
    """
    The upstream port agents connect to.
    """

    bind_addr: str = ":8001"
    advertise_addr: str = ""
    auth: AuthConfig = field(factory=AuthConfig)
    rebalance: RebalanceConfig = field(factory=RebalanceConfig)
    tls: ServerTLSConfig = field(factory=ServerTLSConfig)
    tenants: tuple[TenantConfig, ...] = ()


@frozen
class AdminConfig:
    """
    The admin port (health, metrics, status).
    """

    bind_addr: str = ":8002"
    advertise_addr: str = ""
    auth: AuthConfig = field(factory=AuthConfig)
    tls: ServerTLSConfig = field(factory=ServerTLSConfig)


@frozen
class GossipConfig:
    """
    The gossip port (TCP and UDP on the same address).
    """

    bind_addr: str = ":8003"
    advertise_addr: str = ""
    interval: float = duration(0.1)
    max_packet_size: int = 1400


@frozen
class ClusterTLSConfig:
    """
    Mutual TLS for gossip (not in Go Piko): PEM paths of this node's
    certificate and key and of the cluster CA.  When set, all gossip goes
    over TCP with TLS and only nodes with a certificate signed by ``ca``
    are heard; the cluster is then not wire-compatible with Go nodes.
    """

    cert: str = ""
    key: str = ""
    ca: str = ""

    def enabled(self) -> bool:
        """Whether any of the three is set (validation wants all three)."""
        return bool(self.cert or self.key or self.ca)


@frozen
class ClusterConfig:
    """
    Cluster membership.  ``node_id`` is filled in at load time when empty
    (``node_id_prefix`` + 7 random characters).
    """

    node_id: str = ""
    node_id_prefix: str = ""
    join: tuple[str, ...] = ()
    join_timeout: float = duration(60.0)
    abort_if_join_fails: bool = True
    gossip: GossipConfig = field(factory=GossipConfig)
    tls: ClusterTLSConfig = field(factory=ClusterTLSConfig)


@frozen
class ServerConfig:
    """
    Everything ``piko server`` / ``twistd piko-server`` needs.
    """

    proxy: ProxyConfig = field(factory=ProxyConfig)
    upstream: UpstreamConfig = field(factory=UpstreamConfig)
    admin: AdminConfig = field(factory=AdminConfig)
    cluster: ClusterConfig = field(factory=ClusterConfig)
    log: LogConfig = field(factory=LogConfig)
    grace_period: float = duration(60.0)
    #: Worker processes sharing the listening ports (1: this process serves; 0: one per CPU).
    workers: int = 1
    #: Traffic policies per endpoint (not in Go; see :mod:`piko.policy`).
    policies: tuple[PolicyConfig, ...] = ()


# --- agent -----------------------------------------------------------------


@frozen
class ListenerHTTPClientConfig:
    """
    The agent's HTTP client to the local service.  ``max_idle_conns`` of 0
    means unlimited (YAML ``-1``; YAML ``0`` means the default 100, as in Go).
    """

    keep_alive_timeout: float = duration(30.0)
    idle_conn_timeout: float = duration(90.0)
    max_idle_conns: int = 100
    disable_compression: bool = False


@frozen
class ListenerConfig:
    """
    One agent listener: one WebSocket to the server for ``endpoint_id``,
    forwarding to ``addr``.  ``timeout`` has no default in YAML (Go reports
    ``missing timeout``); the ``http``/``tcp`` subcommands default it to 10s.
    """

    endpoint_id: str = ""
    addr: str = ""
    protocol: str = "http"
    access_log: AccessLogConfig = field(factory=AccessLogConfig)
    timeout: float = duration(0.0)
    http_client: ListenerHTTPClientConfig = field(factory=ListenerHTTPClientConfig)
    tls: ConnectTLSConfig = field(factory=ConnectTLSConfig)

    def url(self) -> str | None:
        """
        The HTTP target URL (``3000`` -> ``http://localhost:3000``), or
        ``None`` if ``addr`` is invalid.
        """
        from piko.net import local_url

        return local_url(self.addr)

    def host(self) -> str | None:
        """
        The TCP target ``host:port`` (``3000`` -> ``localhost:3000``), or
        ``None`` if ``addr`` is invalid.
        """
        from piko.net import local_host

        return local_host(self.addr)


@frozen
class ConnectConfig:
    """
    How the agent reaches the server's upstream port.
    """

    url: str = "http://localhost:8001"
    token: str = ""
    tenant_id: str = ""
    timeout: float = duration(30.0)
    tls: ConnectTLSConfig = field(factory=ConnectTLSConfig)
    proxy_url: str = ""


@frozen
class AgentServerConfig:
    """
    The agent's optional metrics server (``GET /metrics``).
    """

    enabled: bool = False
    bind_addr: str = ":5000"


@frozen
class InspectConfig:
    """
    The agent's request inspector (not in Go Piko): a web UI and ngrok's API on
    ``bind_addr`` (the next free port if it is taken), capturing every exchange
    the agent relays.  ``body_size`` bytes of each body are kept; ``db_size``
    bounds the memory of all records (oldest dropped first).  A bind address
    that is not loopback needs ``allow_remote``; ``auth`` (the admin JWT auth
    keys) then protects the API.
    """

    enabled: bool = True
    bind_addr: str = "127.0.0.1:4040"
    allow_remote: bool = False
    body_size: int = 64 * 1024
    db_size: int = 50 * 1000 * 1000
    auth: AuthConfig = field(factory=AuthConfig)


@frozen
class AgentConfig:
    """
    Everything ``piko agent`` / ``twistd piko-agent`` needs.
    """

    listeners: tuple[ListenerConfig, ...] = ()
    connect: ConnectConfig = field(factory=ConnectConfig)
    server: AgentServerConfig = field(factory=AgentServerConfig)
    log: LogConfig = field(factory=LogConfig)
    grace_period: float = duration(60.0)
    inspect: InspectConfig = field(factory=InspectConfig)


# --- forward ---------------------------------------------------------------


@frozen
class PortConfig:
    """
    One local port to forward to ``endpoint_id``.
    """

    addr: str = ""
    endpoint_id: str = ""

    def host(self) -> str | None:
        """
        The local ``host:port`` to listen on (``3000`` -> ``localhost:3000``),
        or ``None`` if ``addr`` is invalid.
        """
        from piko.net import local_host

        return local_host(self.addr)

    def listen_endpoint(self) -> str:
        """
        The Twisted server endpoint description for this port.

        :raises ValueError: if ``addr`` is invalid.
        """
        from piko.net import listen_endpoint_description

        host = self.host()
        return listen_endpoint_description(host if host is not None else self.addr)


@frozen
class ForwardConnectConfig:
    """
    How ``piko forward`` reaches the server's *proxy* port.  ``timeout`` is
    validated but unused, as in Go.
    """

    url: str = "http://localhost:8000"
    token: str = ""
    timeout: float = duration(30.0)
    tls: ConnectTLSConfig = field(factory=ConnectTLSConfig)


@frozen
class ForwardConfig:
    """
    Everything ``piko forward`` / ``twistd piko-forward`` needs.
    """

    ports: tuple[PortConfig, ...] = ()
    connect: ForwardConnectConfig = field(factory=ForwardConnectConfig)
    log: LogConfig = field(factory=LogConfig)


# --- command-line only -----------------------------------------------------


@frozen
class LoadConfig:
    """
    ``--config.path`` and ``--config.expand-env``: where the YAML comes from.
    """

    path: str = ""
    expand_env: bool = False


@frozen
class StatusServerConfig:
    """
    The admin URL and (our addition) a bearer token for ``piko server status``.
    """

    url: str = "http://localhost:8002"
    token: str = ""


@frozen
class StatusConfig:
    """
    Options shared by the ``piko server status`` commands.
    """

    server: StatusServerConfig = field(factory=StatusServerConfig)
    forward: str = ""
    status: str = ""


@frozen
class ClusterCertsConfig:
    """
    Options of ``piko cluster certs``: where to write the cluster CA and
    node certificates, the node names, and extra names or IPs for every node.
    """

    out: str = ""
    nodes: tuple[str, ...] = ()
    hosts: tuple[str, ...] = ()


for _cls in list(globals().values()):
    if isinstance(_cls, type) and attrs.has(_cls):
        attrs.resolve_types(_cls, globals())
del _cls

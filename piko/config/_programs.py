# -*- test-case-name: piko.test.config.test_programs -*-
"""
The option tables and command trees of ``piko server``, ``piko agent`` and
``piko forward``, and the functions that turn parsed arguments into a
validated configuration.

Precedence (documented divergence from Go): built-in defaults, then the YAML
file (``--config.path``), then the flags given explicitly on the command line.
Go decodes the YAML *over* the parsed flags, so a key in the file silently
beats the flag an operator just typed (reference section 2.2); here the
command line wins, which is what operators expect and what lets a flag
override one value of a shared file.

To add an option: add the field (with its Go default) to the model in
:mod:`piko.config._models`, then one :class:`~piko.config._options.Option`
line with its YAML path and help to the table below.  The flag name, type,
default, YAML key, twistd option and ``piko`` flag all follow.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from piko.config._errors import ConfigError
from piko.config._load import load_file, read_text
from piko.config._models import (
    AgentConfig,
    ClusterCertsConfig,
    ForwardConfig,
    ListenerConfig,
    LoadConfig,
    PortConfig,
    ServerConfig,
    StatusConfig,
)
from piko.config._options import CommandSpec, Option, OptionTable, apply_values
from piko.config._validate import (
    fill_node_id,
    validate_agent,
    validate_forward,
    validate_server,
)

__all__ = [
    "AGENT_COMMAND",
    "AGENT_HTTP_OPTIONS",
    "AGENT_OPTIONS",
    "AGENT_TCP_OPTIONS",
    "CLUSTER_CERTS_OPTIONS",
    "CLUSTER_COMMAND",
    "CLUSTER_NODES_OPTIONS",
    "FORWARD_COMMAND",
    "FORWARD_OPTIONS",
    "LOAD_OPTIONS",
    "SERVER_COMMAND",
    "SERVER_OPTIONS",
    "STATUS_COMMAND",
    "STATUS_OPTIONS",
    "build_agent_config",
    "build_forward_config",
    "build_server_config",
]

# --- shared fragments ------------------------------------------------------

LOAD_OPTIONS = OptionTable(
    LoadConfig,
    (
        Option("path", "YAML config file path.", flag="config.path"),
        Option(
            "expand_env",
            "Expand $VAR, ${VAR} and ${VAR:default} in the config file.",
            flag="config.expand-env",
        ),
    ),
)


def _log(prefix: str = "") -> tuple[Option, ...]:
    return (
        Option(f"{prefix}log.level", "Minimum log level: debug, info, warn or error."),
        Option(
            f"{prefix}log.subsystems",
            "Subsystems (logger namespaces) that log at every level, comma-separated.",
        ),
        Option(
            f"{prefix}log.format",
            "auto (console lines on a terminal, else JSON lines as Go), console or json "
            "(not in Go Piko).",
        ),
    )


def _access_log(prefix: str) -> tuple[Option, ...]:
    p = f"{prefix}access_log"
    return (
        Option(f"{p}.level", "Access log record level: debug, info, warn or error."),
        Option(f"{p}.request_headers.allow_list", "The only request headers to log."),
        Option(f"{p}.request_headers.block_list", "Request headers not to log."),
        Option(f"{p}.response_headers.allow_list", "The only response headers to log."),
        Option(f"{p}.response_headers.block_list", "Response headers not to log."),
        Option(f"{p}.disable", "Disable the access log."),
    )


def _auth(port: str) -> tuple[Option, ...]:
    p = f"{port}.auth"
    return (
        Option(f"{p}.hmac_secret_key", "Secret key to verify HMAC-signed JWTs."),
        Option(f"{p}.rsa_public_key", "PEM public key to verify RSA-signed JWTs."),
        Option(f"{p}.ecdsa_public_key", "PEM public key to verify ECDSA-signed JWTs."),
        Option(f"{p}.audience", "Required JWT audience (aud), if set."),
        Option(f"{p}.issuer", "Required JWT issuer (iss), if set."),
        Option(
            f"{p}.disable_disconnect_on_expiry",
            "Keep connections open after their token expires.",
        ),
        Option(f"{p}.jwks.endpoint", "JWK Set URL: http(s):// or file://."),
        Option(f"{p}.jwks.cache_ttl", "How long to cache the JWK Set (0 = 1h)."),
        Option(f"{p}.jwks.timeout", "Timeout fetching the JWK Set."),
    )


def _server_tls(port: str) -> tuple[Option, ...]:
    p = f"{port}.tls"
    return (
        Option(f"{p}.cert", "PEM certificate file; serve TLS when set."),
        Option(f"{p}.key", "PEM private key file."),
        Option(f"{p}.client_cas", "PEM CA file; require and verify client certificates."),
        Option(f"{p}.client.cert", "PEM client certificate for node-to-node forwarding."),
        Option(f"{p}.client.key", "PEM client key for node-to-node forwarding."),
        Option(f"{p}.client.root_cas", "PEM root CAs to verify other nodes (default: host CAs)."),
        Option(f"{p}.client.insecure_skip_verify", "Do not verify other nodes' certificates."),
        Option(
            f"{p}.client.server_name", "Server name to verify other nodes' certificates against."
        ),
    )


def _connect_tls(prefix: str) -> tuple[Option, ...]:
    p = f"{prefix}.tls"
    return (
        Option(f"{p}.cert", "PEM client certificate to present to the server."),
        Option(f"{p}.key", "PEM client key."),
        Option(f"{p}.root_cas", "PEM root CAs to verify the server (default: host CAs)."),
        Option(f"{p}.insecure_skip_verify", "Accept any server certificate."),
    )


def _bind(port: str, what: str) -> tuple[Option, ...]:
    return (
        Option(
            f"{port}.bind_addr",
            f"Address to listen for {what}: host:port, :port or a Twisted endpoint string.",
        ),
        Option(
            f"{port}.advertise_addr",
            "Address other nodes reach this port at (default: inferred).",
        ),
    )


# --- server ----------------------------------------------------------------

SERVER_OPTIONS = OptionTable(
    ServerConfig,
    (
        Option("cluster.node_id", "Unique node id (default: random)."),
        Option("cluster.node_id_prefix", "Prefix for the generated node id."),
        Option(
            "cluster.join",
            "Cluster members to join (host, host:port or DNS name), comma-separated.",
        ),
        Option("cluster.join_timeout", "How long to keep trying to join the cluster."),
        Option("cluster.abort_if_join_fails", "Exit if the node cannot join any member."),
        *_bind("cluster.gossip", "gossip traffic (TCP and UDP)"),
        Option("cluster.gossip.interval", "Gossip interval."),
        Option("cluster.gossip.max_packet_size", "Maximum gossip UDP packet size in bytes."),
        Option("cluster.tls.cert", "PEM node certificate: gossip over mutual TLS (not Go-wire)."),
        Option("cluster.tls.key", "PEM node key for gossip over mutual TLS."),
        Option("cluster.tls.ca", "PEM cluster CA: only nodes it signed may gossip."),
        *_bind("proxy", "proxy requests"),
        Option("proxy.timeout", "Timeout forwarding requests to upstreams (0 disables)."),
        *_access_log("proxy."),
        Option(
            "proxy.http.read_timeout",
            "Maximum time a request body may make no progress (fewer than 16 KiB arrive).",
        ),
        Option("proxy.http.read_header_timeout", "Maximum time to read request headers."),
        Option(
            "proxy.http.write_timeout",
            "Maximum time the client may take none of the response bytes queued for it.",
        ),
        Option("proxy.http.idle_timeout", "Maximum keep-alive idle time."),
        Option("proxy.http.max_header_bytes", "Maximum request header size in bytes."),
        *_auth("proxy"),
        *_server_tls("proxy"),
        *_bind("upstream", "upstream listener connections"),
        *_auth("upstream"),
        Option(
            "upstream.rebalance.threshold",
            "Rebalance above this excess over the mean (0 disables).",
        ),
        Option("upstream.rebalance.shed_rate", "Fraction of connections to shed per second (0-1)."),
        Option("upstream.rebalance.min_conns", "Do not rebalance below this many connections."),
        *_server_tls("upstream"),
        *_bind("admin", "admin requests"),
        *_auth("admin"),
        *_server_tls("admin"),
        *_log(),
        Option("grace_period", "Maximum time to shut down gracefully."),
        Option(
            "workers",
            "Worker processes sharing the ports, each a cluster node (0: one per CPU).",
        ),
    ),
)

# --- agent -----------------------------------------------------------------

AGENT_OPTIONS = OptionTable(
    AgentConfig,
    (
        Option("connect.url", "Piko server URL (its upstream port)."),
        Option("connect.token", "Token to authenticate with the server."),
        Option("connect.tenant_id", "Tenant id (optional)."),
        Option(
            "connect.timeout",
            "Timeout of each attempt to connect a listener (a server that is down at start "
            "is retried until it answers; Go gives up after this long).",
        ),
        *_connect_tls("connect"),
        Option(
            "connect.proxy_url",
            "HTTP(S) proxy to reach the server through (CONNECT; user:password@ for Basic auth).",
        ),
        Option("server.enabled", "Enable the agent metrics server."),
        Option("server.bind_addr", "Address of the agent metrics server."),
        *_log(),
        Option("grace_period", "Maximum time to shut each listener down gracefully."),
        Option(
            "inspect.enabled",
            "Serve the request inspector (web UI and API); --inspect=false turns it off.",
            flag="inspect",
        ),
        Option(
            "inspect.bind_addr",
            "Address of the request inspector (the next free port if taken).",
        ),
        Option(
            "inspect.allow_remote",
            "Allow a non-loopback inspector address (use inspect.auth to protect it).",
        ),
        Option("inspect.body_size", "Bytes kept of each captured request and response body."),
        Option("inspect.db_size", "Bytes of memory all captured records may hold."),
    ),
)

_LISTENER_TIMEOUT = 10.0

AGENT_HTTP_OPTIONS = OptionTable(
    ListenerConfig,
    (
        *_access_log(""),
        Option(
            "timeout", "Timeout forwarding requests to the upstream.", default=_LISTENER_TIMEOUT
        ),
        Option("http_client.keep_alive_timeout", "HTTP dialer keep-alive timeout."),
        Option("http_client.idle_conn_timeout", "HTTP idle connection timeout."),
        Option("http_client.max_idle_conns", "Maximum idle connections to the upstream."),
        Option("http_client.disable_compression", "Do not accept compressed responses."),
    ),
)

AGENT_TCP_OPTIONS = OptionTable(
    ListenerConfig,
    (
        Option("access_log.level", "Access log record level: debug, info, warn or error."),
        Option("access_log.disable", "Disable the access log."),
        Option("timeout", "Timeout connecting to the upstream.", default=_LISTENER_TIMEOUT),
    ),
)

# --- forward ---------------------------------------------------------------

FORWARD_OPTIONS = OptionTable(
    ForwardConfig,
    (
        Option("connect.url", "Piko server URL (its proxy port)."),
        Option("connect.token", "Token to authenticate with the server."),
        Option("connect.timeout", "Timeout connecting to the server."),
        *_connect_tls("connect"),
        *_log(),
    ),
)

# --- server status ---------------------------------------------------------

STATUS_OPTIONS = OptionTable(
    StatusConfig,
    (
        Option("server.url", "Piko server admin URL."),
        Option("server.token", "Bearer token for the admin port (not in Go Piko)."),
        Option("forward", "Node id to forward the request to."),
    ),
)

CLUSTER_NODES_OPTIONS = OptionTable(
    StatusConfig,
    (Option("status", "Only show nodes with this status: active, unreachable or left."),),
)

# --- command trees ---------------------------------------------------------

STATUS_COMMAND = CommandSpec(
    "status",
    summary="inspect server status",
    persistent=(STATUS_OPTIONS,),
    runnable=False,
    children=(
        CommandSpec(
            "upstream",
            summary="inspect connected upstreams",
            runnable=False,
            children=(CommandSpec("endpoints", summary="inspect endpoints"),),
        ),
        CommandSpec(
            "cluster",
            summary="inspect proxy cluster",
            runnable=False,
            children=(
                CommandSpec(
                    "nodes", summary="inspect cluster nodes", tables=(CLUSTER_NODES_OPTIONS,)
                ),
                CommandSpec("node", summary="inspect cluster node", usage="<id|local>", nargs=1),
            ),
        ),
        CommandSpec(
            "gossip",
            summary="inspect gossip state",
            runnable=False,
            children=(
                CommandSpec("nodes", summary="inspect gossip nodes"),
                CommandSpec("node", summary="inspect a gossip node", usage="<id>", nargs=1),
            ),
        ),
    ),
)

CLUSTER_CERTS_OPTIONS = OptionTable(
    ClusterCertsConfig,
    (
        Option("out", "Directory to write ca.pem, ca-key.pem and <node>.pem/<node>-key.pem to."),
        Option("nodes", "Node names, comma-separated (each gets a certificate)."),
        Option("hosts", "Extra DNS names or IPs in every node certificate, comma-separated."),
    ),
)

CLUSTER_COMMAND = CommandSpec(
    "cluster",
    summary="manage cluster gossip TLS",
    runnable=False,
    children=(
        CommandSpec(
            "certs",
            summary="create a cluster CA and node certificates for gossip over mutual TLS",
            tables=(CLUSTER_CERTS_OPTIONS,),
        ),
    ),
)

SERVER_COMMAND = CommandSpec(
    "server",
    summary="start a server node",
    tables=(SERVER_OPTIONS, LOAD_OPTIONS),
    children=(STATUS_COMMAND,),
)

AGENT_COMMAND = CommandSpec(
    "agent",
    summary="register endpoints and forward requests to your upstream services",
    persistent=(AGENT_OPTIONS, LOAD_OPTIONS),
    runnable=False,
    children=(
        CommandSpec("start", summary="register the configured listeners"),
        CommandSpec(
            "http",
            summary="register a http listener",
            usage="<endpoint> <addr>",
            tables=(AGENT_HTTP_OPTIONS,),
            nargs=2,
        ),
        CommandSpec(
            "tcp",
            summary="register a tcp listener",
            usage="<endpoint> <addr>",
            tables=(AGENT_TCP_OPTIONS,),
            nargs=2,
        ),
    ),
)

FORWARD_COMMAND = CommandSpec(
    "forward",
    summary="forward local ports to an upstream endpoint",
    persistent=(FORWARD_OPTIONS, LOAD_OPTIONS),
    runnable=False,
    children=(
        CommandSpec("start", summary="open the configured ports"),
        CommandSpec("tcp", summary="open a tcp port", usage="<addr> <endpoint>", nargs=2),
    ),
)

# --- builders ----------------------------------------------------------------


def _load(
    instance: Any,
    values: Mapping[str, Any],
    environ: Mapping[str, str] | None,
    read: Callable[[str], str],
) -> Any:
    load = apply_values(LoadConfig(), LOAD_OPTIONS, values)
    return load_file(instance, load.path, load.expand_env, environ, read)


def build_server_config(
    values: Mapping[str, Any],
    environ: Mapping[str, str] | None = None,
    read: Callable[[str], str] = read_text,
    rng: secrets.SystemRandom | None = None,
) -> ServerConfig:
    """
    Assemble and validate the server configuration: defaults < YAML < flags.

    :param values: explicit flags (``ParsedArgs.values``) of :data:`SERVER_COMMAND`.
    :param environ: environment for ``--config.expand-env`` (default ``os.environ``).
    :param read: file reader, replaceable in tests.
    :param rng: randomness for the generated node id.
    :raises ConfigError: a load or validation error, ready to print.
    """
    config: ServerConfig = _load(ServerConfig(), values, environ, read)
    config = apply_values(config, SERVER_OPTIONS, values)
    config = fill_node_id(config, rng)
    validate_server(config)
    return config


def _normalise_listener(listener: ListenerConfig) -> ListenerConfig:
    # Go fills zero values of YAML listeners after decoding: a YAML 0 means
    # "default" and max_idle_conns -1 means unlimited (0 for the HTTP
    # client).  Listeners built from http/tcp flags are taken as given.
    client = listener.http_client
    if client.keep_alive_timeout == 0:
        client = attrs.evolve(client, keep_alive_timeout=30.0)
    if client.idle_conn_timeout == 0:
        client = attrs.evolve(client, idle_conn_timeout=90.0)
    if client.max_idle_conns == 0:
        client = attrs.evolve(client, max_idle_conns=100)
    if client.max_idle_conns == -1:
        client = attrs.evolve(client, max_idle_conns=0)
    access_log = listener.access_log
    if not access_log.level:
        access_log = attrs.evolve(access_log, level="info")
    return attrs.evolve(
        listener,
        protocol=listener.protocol or "http",
        access_log=access_log,
        http_client=client,
    )


def build_agent_config(
    command: str,
    args: Sequence[str],
    values: Mapping[str, Any],
    environ: Mapping[str, str] | None = None,
    read: Callable[[str], str] = read_text,
) -> AgentConfig:
    """
    Assemble and validate the agent configuration for ``start``, ``http`` or ``tcp``.

    ``http``/``tcp`` replace any YAML listeners with the one given by
    ``args`` (``<endpoint> <addr>``) and the subcommand's flags.

    :raises ConfigError: a load or validation error, or ``no listeners
        configured`` for ``start`` without listeners.
    """
    config: AgentConfig = _load(AgentConfig(), values, environ, read)
    config = attrs.evolve(
        config, listeners=tuple(_normalise_listener(li) for li in config.listeners)
    )
    config = apply_values(config, AGENT_OPTIONS, values)
    if command in ("http", "tcp"):
        table = AGENT_HTTP_OPTIONS if command == "http" else AGENT_TCP_OPTIONS
        endpoint_id, addr = args
        listener = ListenerConfig(endpoint_id=endpoint_id, addr=addr, protocol=command)
        listener = apply_values(listener, table, values, with_defaults=True)
        config = attrs.evolve(config, listeners=(listener,))
    elif command != "start":
        raise ConfigError(f'unknown command "{command}" for "piko agent"')
    validate_agent(config)
    if not config.listeners:
        raise ConfigError("no listeners configured")
    return config


def build_forward_config(
    command: str,
    args: Sequence[str],
    values: Mapping[str, Any],
    environ: Mapping[str, str] | None = None,
    read: Callable[[str], str] = read_text,
) -> ForwardConfig:
    """
    Assemble and validate the forward configuration for ``start`` or ``tcp``.

    ``tcp <addr> <endpoint>`` replaces any YAML ports (note the argument
    order, which differs from ``agent``, as in Go).

    :raises ConfigError: a load or validation error, or ``no ports
        configured`` for ``start`` without ports.
    """
    config: ForwardConfig = _load(ForwardConfig(), values, environ, read)
    config = apply_values(config, FORWARD_OPTIONS, values)
    if command == "tcp":
        addr, endpoint_id = args
        config = attrs.evolve(config, ports=(PortConfig(addr=addr, endpoint_id=endpoint_id),))
    elif command != "start":
        raise ConfigError(f'unknown command "{command}" for "piko forward"')
    validate_forward(config)
    if not config.ports:
        raise ConfigError("no ports configured")
    return config

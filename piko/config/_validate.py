# -*- test-case-name: piko.test.config.test_validate -*-
"""
Validation of assembled configurations, with Go Piko's messages.

Each function raises :class:`ConfigValidationError` whose ``reason`` is the
text Go's ``Validate()`` returns (``proxy: missing bind addr``), checked in
Go's order so the first reported problem is the same.  Checks that need I/O
(loading certificate files, parsing PEM keys, fetching JWKS) are left to the
services that use them.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from urllib.parse import urlsplit

import attrs

from piko.config._errors import ConfigValidationError
from piko.config._models import (
    AccessLogConfig,
    AccessLogHeaderConfig,
    AgentConfig,
    AuthConfig,
    ClusterTLSConfig,
    ConnectTLSConfig,
    ForwardConfig,
    InspectConfig,
    ListenerConfig,
    LogConfig,
    PortConfig,
    ServerConfig,
    ServerTLSConfig,
)
from piko.net import is_loopback_bind, listen_endpoint_description

__all__ = [
    "LOG_LEVELS",
    "NODE_ID_ALPHABET",
    "fill_node_id",
    "generate_node_id",
    "validate_agent",
    "validate_forward",
    "validate_server",
]

#: The levels Go Piko accepts for ``log.level`` and access logs.
LOG_LEVELS = ("debug", "info", "warn", "error")

#: Go's ``alphaNumericChars`` for node ids.
NODE_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz1234567890"


#: A node id rides in every gossip packet (each digest entry names its node).  253 bytes, the
#: longest DNS name, admits any Kubernetes pod or host name, and is far below the ~1,300 bytes
#: at which a default 1400-byte packet cannot hold one digest entry (Go has no bound, and such
#: a node stops gossiping as soon as it has a peer).
MAX_NODE_ID_BYTES = 253


def generate_node_id(prefix: str = "", rng: secrets.SystemRandom | None = None) -> str:
    """
    Generate a node id: ``prefix`` + 7 random ``[a-z0-9]`` characters, as Go.

    :param rng: the randomness source (a cryptographic one by default, as Go).
    """
    chooser = rng if rng is not None else secrets.SystemRandom()
    return prefix + "".join(chooser.choice(NODE_ID_ALPHABET) for _ in range(7))


def fill_node_id(config: ServerConfig, rng: secrets.SystemRandom | None = None) -> ServerConfig:
    """
    Give ``config`` a node id when it has none (``node_id_prefix`` + random).
    """
    if config.cluster.node_id:
        return config
    node_id = generate_node_id(config.cluster.node_id_prefix, rng)
    return attrs.evolve(config, cluster=attrs.evolve(config.cluster, node_id=node_id))


class _Invalid(Exception):
    pass


def _fail(reason: str) -> None:
    raise _Invalid(reason)


def _wrap(prefix: str, check: Callable[..., None], *args: object) -> None:
    try:
        check(*args)
    except _Invalid as e:
        raise _Invalid(f"{prefix}: {e}") from None


def _level(level: str) -> None:
    if not level:
        _fail("missing level")
    if level not in LOG_LEVELS:
        _fail(f"unsupported level: {level}")


#: ``log.format`` values (an extension of Go Piko's ``log`` section).
LOG_FORMATS = ("auto", "console", "json")


def _log(c: LogConfig) -> None:
    _level(c.level)
    if c.format not in LOG_FORMATS:
        _fail(f"unsupported format: {c.format}")


def _headers(c: AccessLogHeaderConfig) -> None:
    if c.allow_list and c.block_list:
        _fail("cannot define both allow list and block list")


def _access_log(c: AccessLogConfig) -> None:
    if c.disable:
        return
    _level(c.level)
    _wrap("request headers", _headers, c.request_headers)
    _wrap("response headers", _headers, c.response_headers)


def _server_tls(c: ServerTLSConfig) -> None:
    if not c.enabled():
        return
    if not c.cert:
        _fail("missing cert")
    if not c.key:
        _fail("missing key")


def _cluster_tls(c: ClusterTLSConfig) -> None:
    if not c.enabled():
        return
    if not c.cert:
        _fail("missing cert")
    if not c.key:
        _fail("missing key")
    if not c.ca:
        _fail("missing ca")


def _client_tls(c: ConnectTLSConfig) -> None:
    if c.cert and not c.key:
        _fail("missing key")


def _auth(c: AuthConfig) -> None:
    if c.jwks.endpoint and (c.hmac_secret_key or c.rsa_public_key or c.ecdsa_public_key):
        _fail("no other verification key can be set when JWKS.Endpoint is set")


def _bind(addr: str) -> None:
    if not addr:
        _fail("missing bind addr")
    try:
        listen_endpoint_description(addr)
    except ValueError as e:
        _fail(f"invalid bind addr: {e}")


def _url(url: str) -> None:
    if not url:
        _fail("missing url")
    try:
        urlsplit(url)
    except ValueError as e:
        _fail(f"invalid url: {e}")


def _server(c: ServerConfig) -> None:
    cluster = c.cluster
    if not cluster.node_id:
        _fail("cluster: missing node id")
    if len(cluster.node_id.encode()) > MAX_NODE_ID_BYTES:
        _fail(
            f"cluster: node id too long: {len(cluster.node_id.encode())} bytes, "
            f"at most {MAX_NODE_ID_BYTES}"
        )
    if cluster.join_timeout == 0:
        _fail("cluster: missing join timeout")
    gossip = cluster.gossip
    _wrap("cluster: gossip", _bind, gossip.bind_addr)
    if gossip.interval == 0:
        _fail("cluster: gossip: missing interval")
    if gossip.max_packet_size == 0:
        _fail("cluster: gossip: missing max packet size")
    _wrap("cluster: tls", _cluster_tls, cluster.tls)

    _wrap("proxy", _bind, c.proxy.bind_addr)
    _wrap("proxy: tls", _server_tls, c.proxy.tls)
    _wrap("proxy: access log", _access_log, c.proxy.access_log)
    _wrap("proxy: auth", _auth, c.proxy.auth)

    up = c.upstream
    _wrap("upstream", _bind, up.bind_addr)
    if up.rebalance.threshold < 0:
        _fail("upstream: rebalance: threshold cannot be negative")
    if up.rebalance.shed_rate < 0:
        _fail("upstream: rebalance: shed-rate cannot be negative")
    if up.rebalance.shed_rate > 1:
        _fail("upstream: rebalance: shed-rate cannot exceed 1")
    if up.rebalance.min_conns < 0:
        _fail("upstream: rebalance: min-conns cannot be negative")
    _wrap("upstream: tls", _server_tls, up.tls)
    _wrap("upstream: auth", _auth, up.auth)
    for tenant in up.tenants:
        if not tenant.id:
            _fail("upstream: tenant: missing tenant id")
        if not tenant.auth.enabled():
            _fail("upstream: tenant: tenant auth disabled")
        _wrap(f"upstream: tenant: {tenant.id}: auth", _auth, tenant.auth)

    _wrap("admin", _bind, c.admin.bind_addr)
    _wrap("admin: tls", _server_tls, c.admin.tls)
    _wrap("admin: auth", _auth, c.admin.auth)

    _wrap("log", _log, c.log)
    if c.grace_period == 0:
        _fail("missing grace period")
    if c.workers < 0:
        _fail("workers: must not be negative")


def _inspect(c: InspectConfig) -> None:
    _bind(c.bind_addr)
    if not c.allow_remote and not is_loopback_bind(c.bind_addr):
        _fail(
            f"bind addr {c.bind_addr} is not loopback: the inspector shows every request "
            "and replays them; pass --inspect.allow-remote (and set inspect.auth) to serve it "
            "there"
        )
    if c.body_size < 0:
        _fail("body size must not be negative")
    if c.db_size <= 0:
        _fail("db size must be positive")


def _listener(c: ListenerConfig) -> None:
    if not c.endpoint_id:
        _fail("missing endpoint id")
    if not c.addr:
        _fail("missing addr")
    if c.protocol in ("", "http"):
        if c.url() is None:
            _fail("invalid addr")
    elif c.protocol == "tcp":
        if c.host() is None:
            _fail("invalid addr")
    else:
        _fail("unsupported protocol")
    if c.timeout == 0:
        _fail("missing timeout")
    _wrap("tls", _client_tls, c.tls)
    _wrap("access log", _access_log, c.access_log)


def _agent(c: AgentConfig) -> None:
    for listener in c.listeners:
        prefix = f"listener: {listener.endpoint_id}" if listener.endpoint_id else "listener"
        _wrap(prefix, _listener, listener)
    _wrap("connect", _url, c.connect.url)
    if c.connect.proxy_url:
        try:
            proxy = urlsplit(c.connect.proxy_url)
        except ValueError as e:
            _fail(f"connect: invalid proxy url: {e}")
        if proxy.scheme not in ("http", "https") or not proxy.hostname:
            _fail("connect: invalid proxy url: want http://[user:password@]host:port or https://")
    if c.connect.timeout == 0:
        _fail("connect: missing timeout")
    _wrap("connect: tls", _client_tls, c.connect.tls)
    if c.server.enabled:
        _wrap("server", _bind, c.server.bind_addr)
    _wrap("log", _log, c.log)
    if c.grace_period == 0:
        _fail("missing grace period")
    if c.inspect.enabled:
        _wrap("inspect", _inspect, c.inspect)


def _port(c: PortConfig) -> None:
    if not c.addr:
        _fail("missing addr")
    if c.host() is None:
        _fail("invalid addr")
    if not c.endpoint_id:
        _fail("missing endpoint id")


def _forward(c: ForwardConfig) -> None:
    for port in c.ports:
        prefix = f"port: {port.endpoint_id}" if port.endpoint_id else "port"
        _wrap(prefix, _port, port)
    _wrap("connect", _url, c.connect.url)
    if c.connect.timeout == 0:
        _fail("connect: missing timeout")
    _wrap("connect: tls", _client_tls, c.connect.tls)
    _wrap("log", _log, c.log)


def _run(check: Callable[..., None], config: object) -> None:
    try:
        check(config)
    except _Invalid as e:
        raise ConfigValidationError(str(e)) from None


def validate_server(config: ServerConfig) -> None:
    """
    Check a server configuration (after :func:`fill_node_id`).

    :raises ConfigValidationError: e.g. ``config: proxy: missing bind addr``.
    """
    _run(_server, config)


def validate_agent(config: AgentConfig) -> None:
    """
    Check an agent configuration, its listeners first.

    :raises ConfigValidationError: e.g. ``config: listener: my-endpoint: missing timeout``.
    """
    _run(_agent, config)


def validate_forward(config: ForwardConfig) -> None:
    """
    Check a forward configuration, its ports first.

    :raises ConfigValidationError: e.g. ``config: port: my-endpoint: invalid addr``.
    """
    _run(_forward, config)

# -*- test-case-name: piko.test.config.test_programs -*-
"""
Tests for flag parsing, precedence and validation of the three programs.
"""

import random

import attrs
from twisted.trial.unittest import SynchronousTestCase

from piko.config import (
    AGENT_COMMAND,
    FORWARD_COMMAND,
    SERVER_COMMAND,
    SERVER_OPTIONS,
    CommandSpec,
    ConfigError,
    ConfigValidationError,
    FlagError,
    ServerConfig,
    apply_values,
    build_agent_config,
    build_forward_config,
    build_server_config,
    generate_node_id,
    parse_args,
    resolve_command,
    validate_server,
)

ROOT = CommandSpec(
    "piko", runnable=False, children=(SERVER_COMMAND, AGENT_COMMAND, FORWARD_COMMAND)
)


def _reader(files):
    return lambda path: files[path]


def _server(argv, files=None):
    inv = resolve_command(ROOT, ["server", *argv])
    return build_server_config(inv.parsed.values, environ={}, read=_reader(files or {}))


class FlagParsingTests(SynchronousTestCase):
    def test_every_server_flag(self):
        """Every server flag parses and sets the model field its table names."""
        for option in SERVER_OPTIONS.resolve():
            text = {
                "str": "x",
                "bool": "false" if option.default else "true",
                "int": "7",
                "float": "0.5",
                "duration": "3s",
                "list": "a,b",
            }[option.kind]
            parsed = parse_args(SERVER_OPTIONS.resolve(), [f"--{option.flag}={text}"])
            config = apply_values(ServerConfig(), SERVER_OPTIONS, parsed.values)
            value = config
            for part in option.path.split("."):
                value = getattr(value, part)
            expected = {
                "str": "x",
                "bool": not option.default,
                "int": 7,
                "float": 0.5,
                "duration": 3.0,
                "list": ("a", "b"),
            }[option.kind]
            self.assertEqual(value, expected, option.flag)

    def test_go_flag_names(self):
        """Flag names follow Go's (dots for nesting, dashes for underscores)."""
        flags = {o.flag for o in SERVER_OPTIONS.resolve()}
        for name in (
            "proxy.bind-addr",
            "proxy.access-log.request-headers.allow-list",
            "upstream.auth.jwks.cache-ttl",
            "admin.tls.client.insecure-skip-verify",
            "cluster.gossip.max-packet-size",
            "cluster.abort-if-join-fails",
            "cluster.tls.cert",
            "cluster.tls.key",
            "cluster.tls.ca",
            "grace-period",
            "log.subsystems",
            "workers",
        ):
            self.assertIn(name, flags)
        # Go's 87, ``--workers`` (ours: worker processes sharing the ports) and
        # ``--log.format`` (ours: console or JSON lines).
        self.assertEqual(len(flags), 89)

    def test_bool_forms(self):
        """Booleans accept a bare flag and ``=true|false``, and do not eat the next word."""
        c = _server(["--cluster.abort-if-join-fails=false", "--proxy.access-log.disable"])
        self.assertFalse(c.cluster.abort_if_join_fails)
        self.assertTrue(c.proxy.access_log.disable)
        inv = resolve_command(ROOT, ["agent", "--server.enabled", "http", "e", "3000"])
        self.assertEqual(inv.names, ("agent", "http"))
        self.assertEqual(inv.parsed.values["server.enabled"], True)

    def test_value_forms(self):
        """Values may follow as ``--flag value`` or ``--flag=value``."""
        c = _server(["--proxy.bind-addr", ":9000", "--admin.bind-addr=:9002"])
        self.assertEqual(c.proxy.bind_addr, ":9000")
        self.assertEqual(c.admin.bind_addr, ":9002")

    def test_lists(self):
        """Lists are comma-separated and repeated flags append."""
        c = _server(["--cluster.join", "a:1,b:2", "--cluster.join=c"])
        self.assertEqual(c.cluster.join, ("a:1", "b:2", "c"))

    def test_errors(self):
        """Bad flags give pflag/cobra messages."""
        cases = {
            ("server", "--nope"): "unknown flag: --nope",
            ("server", "--proxy.bind-addr"): "flag needs an argument: --proxy.bind-addr",
            ("server", "--proxy.timeout=x"): (
                'invalid argument "x" for "--proxy.timeout" flag: time: invalid duration "x"'
            ),
            ("server", "--cluster.abort-if-join-fails=maybe"): (
                'invalid argument "maybe" for "--cluster.abort-if-join-fails" flag: '
                'strconv.ParseBool: parsing "maybe": invalid syntax'
            ),
            ("server", "-x"): "unknown shorthand flag: 'x' in -x",
            ("server", "extra"): 'unknown command "extra" for "piko server"',
            ("agent", "http", "e"): "accepts 2 arg(s), received 1",
            ("agent", "tcp", "e", "1", "--access-log.request-headers.allow-list=a"): (
                "unknown flag: --access-log.request-headers.allow-list"
            ),
        }
        for argv, message in cases.items():
            e = self.assertRaises(FlagError, resolve_command, ROOT, list(argv))
            self.assertEqual(str(e), message)


class PrecedenceTests(SynchronousTestCase):
    def test_defaults_yaml_flags(self):
        """Defaults are overridden by YAML, and YAML by flags given on the command line."""
        files = {
            "s.yaml": "proxy:\n  bind_addr: :7000\n  timeout: 5s\nadmin:\n  bind_addr: :7002\n"
        }
        c = _server(["--config.path", "s.yaml", "--proxy.bind-addr=:9000"], files)
        self.assertEqual(c.proxy.bind_addr, ":9000")  # flag beats YAML
        self.assertEqual(c.proxy.timeout, 5.0)  # YAML beats default
        self.assertEqual(c.admin.bind_addr, ":7002")
        self.assertEqual(c.upstream.bind_addr, ":8001")  # default

    def test_flag_equal_to_default_still_wins(self):
        """A flag given explicitly wins over YAML even when it repeats the default."""
        files = {"s.yaml": "proxy:\n  bind_addr: :7000\n"}
        c = _server(["--config.path=s.yaml", "--proxy.bind-addr=:8000"], files)
        self.assertEqual(c.proxy.bind_addr, ":8000")

    def test_expand_env_flag(self):
        """``--config.expand-env`` expands the file with the given environment."""
        inv = resolve_command(ROOT, ["server", "--config.path=s.yaml", "--config.expand-env"])
        c = build_server_config(
            inv.parsed.values,
            environ={"NODE": "n1"},
            read=_reader({"s.yaml": "cluster:\n  node_id: ${NODE}\n"}),
        )
        self.assertEqual(c.cluster.node_id, "n1")


class NodeIdTests(SynchronousTestCase):
    def test_generated(self):
        """Without a node id, one of 7 characters from [a-z0-9] is generated."""
        node_id = _server([]).cluster.node_id
        self.assertEqual(len(node_id), 7)
        self.assertTrue(set(node_id) <= set("abcdefghijklmnopqrstuvwxyz1234567890"))

    def test_prefix(self):
        """The prefix is prepended to the generated id."""
        c = _server(["--cluster.node-id-prefix=pod-"])
        self.assertTrue(c.cluster.node_id.startswith("pod-"))
        self.assertEqual(len(c.cluster.node_id), 11)

    def test_given(self):
        """An explicit node id is kept."""
        self.assertEqual(_server(["--cluster.node-id=me"]).cluster.node_id, "me")

    def test_deterministic_rng(self):
        """The randomness source is injectable."""
        self.assertEqual(
            generate_node_id("p", random.Random(1)), generate_node_id("p", random.Random(1))
        )


class ServerValidationTests(SynchronousTestCase):
    def assertInvalid(self, config, reason):
        e = self.assertRaises(ConfigValidationError, validate_server, config)
        self.assertEqual(str(e), f"config: {reason}")

    def test_messages(self):
        """Validation reports Go's messages."""
        base = attrs.evolve(
            ServerConfig(), cluster=attrs.evolve(ServerConfig().cluster, node_id="n")
        )
        validate_server(base)
        ev = attrs.evolve
        c = base
        self.assertInvalid(ev(c, cluster=ev(c.cluster, node_id="")), "cluster: missing node id")
        self.assertInvalid(
            ev(c, cluster=ev(c.cluster, node_id="n" * 254)),
            "cluster: node id too long: 254 bytes, at most 253",
        )
        self.assertInvalid(
            ev(c, cluster=ev(c.cluster, join_timeout=0.0)), "cluster: missing join timeout"
        )
        self.assertInvalid(
            ev(c, cluster=ev(c.cluster, gossip=ev(c.cluster.gossip, bind_addr=""))),
            "cluster: gossip: missing bind addr",
        )
        self.assertInvalid(
            ev(c, cluster=ev(c.cluster, gossip=ev(c.cluster.gossip, interval=0.0))),
            "cluster: gossip: missing interval",
        )
        self.assertInvalid(
            ev(c, cluster=ev(c.cluster, gossip=ev(c.cluster.gossip, max_packet_size=0))),
            "cluster: gossip: missing max packet size",
        )
        tls = c.cluster.tls
        self.assertInvalid(
            ev(c, cluster=ev(c.cluster, tls=ev(tls, key="k", ca="a"))), "cluster: tls: missing cert"
        )
        self.assertInvalid(
            ev(c, cluster=ev(c.cluster, tls=ev(tls, cert="c", ca="a"))), "cluster: tls: missing key"
        )
        self.assertInvalid(
            ev(c, cluster=ev(c.cluster, tls=ev(tls, cert="c", key="k"))), "cluster: tls: missing ca"
        )
        validate_server(ev(c, cluster=ev(c.cluster, tls=ev(tls, cert="c", key="k", ca="a"))))
        self.assertInvalid(ev(c, proxy=ev(c.proxy, bind_addr="")), "proxy: missing bind addr")
        self.assertInvalid(
            ev(c, proxy=ev(c.proxy, tls=ev(c.proxy.tls, key="k"))), "proxy: tls: missing cert"
        )
        self.assertInvalid(
            ev(c, admin=ev(c.admin, tls=ev(c.admin.tls, cert="c"))), "admin: tls: missing key"
        )
        headers = ev(c.proxy.access_log.request_headers, allow_list=("a",), block_list=("b",))
        self.assertInvalid(
            ev(c, proxy=ev(c.proxy, access_log=ev(c.proxy.access_log, request_headers=headers))),
            "proxy: access log: request headers: cannot define both allow list and block list",
        )
        up = c.upstream
        self.assertInvalid(
            ev(c, upstream=ev(up, rebalance=ev(up.rebalance, threshold=-1.0))),
            "upstream: rebalance: threshold cannot be negative",
        )
        self.assertInvalid(
            ev(c, upstream=ev(up, rebalance=ev(up.rebalance, shed_rate=-0.1))),
            "upstream: rebalance: shed-rate cannot be negative",
        )
        self.assertInvalid(
            ev(c, upstream=ev(up, rebalance=ev(up.rebalance, shed_rate=1.5))),
            "upstream: rebalance: shed-rate cannot exceed 1",
        )
        from piko.config import TenantConfig

        self.assertInvalid(
            ev(c, upstream=ev(up, tenants=(TenantConfig(),))), "upstream: tenant: missing tenant id"
        )
        self.assertInvalid(
            ev(c, upstream=ev(up, tenants=(TenantConfig(id="t"),))),
            "upstream: tenant: tenant auth disabled",
        )
        self.assertInvalid(ev(c, log=ev(c.log, level="verbose")), "log: unsupported level: verbose")
        self.assertInvalid(ev(c, grace_period=0.0), "missing grace period")
        auth = ev(
            c.proxy.auth, hmac_secret_key="k", jwks=ev(c.proxy.auth.jwks, endpoint="file:///j")
        )
        self.assertInvalid(
            ev(c, proxy=ev(c.proxy, auth=auth)),
            "proxy: auth: no other verification key can be set when JWKS.Endpoint is set",
        )

    def test_from_flags(self):
        """Validation runs when building from flags."""
        e = self.assertRaises(ConfigValidationError, _server, ["--proxy.bind-addr="])
        self.assertEqual(str(e), "config: proxy: missing bind addr")

    def test_endpoint_bind_addrs(self):
        """Twisted endpoint strings are accepted as bind addresses."""
        c = _server(
            ["--proxy.bind-addr=tcp:0:interface=127.0.0.1", "--admin.bind-addr=unix:/tmp/a"]
        )
        self.assertEqual(c.proxy.bind_addr, "tcp:0:interface=127.0.0.1")


def _agent(argv, files=None):
    inv = resolve_command(ROOT, ["agent", *argv])
    return build_agent_config(
        inv.names[1],
        inv.parsed.positionals,
        inv.parsed.values,
        environ={},
        read=_reader(files or {}),
    )


class AgentTests(SynchronousTestCase):
    def test_http(self):
        """``agent http`` builds one HTTP listener from its arguments and flags."""
        c = _agent(
            [
                "http",
                "my-endpoint",
                "3000",
                "--timeout=5s",
                "--access-log.level=debug",
                "--access-log.request-headers.block-list=authorization",
                "--http-client.max-idle-conns=7",
                "--http-client.disable-compression",
                "--connect.url=https://piko:8001",
                "--connect.token=tok",
            ]
        )
        (li,) = c.listeners
        self.assertEqual((li.endpoint_id, li.addr, li.protocol), ("my-endpoint", "3000", "http"))
        self.assertEqual(li.timeout, 5.0)
        self.assertEqual(li.access_log.level, "debug")
        self.assertEqual(li.access_log.request_headers.block_list, ("authorization",))
        self.assertEqual(li.http_client.max_idle_conns, 7)
        self.assertTrue(li.http_client.disable_compression)
        self.assertEqual(li.url(), "http://localhost:3000")
        self.assertEqual(c.connect.url, "https://piko:8001")
        self.assertEqual(c.connect.token, "tok")

    def test_http_defaults(self):
        """``agent http`` defaults its timeout to 10s and the client to Go's values."""
        (li,) = _agent(["http", "e", "3000"]).listeners
        self.assertEqual(li.timeout, 10.0)
        self.assertEqual(li.http_client.keep_alive_timeout, 30.0)
        self.assertEqual(li.http_client.idle_conn_timeout, 90.0)
        self.assertEqual(li.http_client.max_idle_conns, 100)

    def test_tcp(self):
        """``agent tcp`` builds one TCP listener."""
        (li,) = _agent(
            ["tcp", "e", "10.0.0.1:22", "--access-log.disable", "--timeout=1s"]
        ).listeners
        self.assertEqual(li.protocol, "tcp")
        self.assertTrue(li.access_log.disable)
        self.assertEqual(li.timeout, 1.0)
        self.assertEqual(li.host(), "10.0.0.1:22")

    def test_subcommand_replaces_yaml_listeners(self):
        """``agent http`` replaces listeners from the YAML file."""
        files = {"a.yaml": "listeners:\n  - {endpoint_id: y, addr: '1', timeout: 1s}\n"}
        c = _agent(["http", "e", "3000", "--config.path=a.yaml"], files)
        self.assertEqual([li.endpoint_id for li in c.listeners], ["e"])

    def test_start_yaml(self):
        """``agent start`` runs the YAML listeners, with Go's zero-value defaults filled in."""
        files = {
            "a.yaml": (
                "listeners:\n"
                "  - endpoint_id: a\n    addr: https://host:8443/prefix\n    timeout: 2s\n"
                "  - endpoint_id: b\n    addr: '3000'\n    protocol: tcp\n    timeout: 1s\n"
                "    http_client: {max_idle_conns: -1}\n"
            )
        }
        c = _agent(["start", "--config.path=a.yaml"], files)
        a, b = c.listeners
        self.assertEqual(a.protocol, "http")
        self.assertEqual(a.url(), "https://host:8443/prefix")
        self.assertEqual(b.protocol, "tcp")
        self.assertEqual(b.http_client.max_idle_conns, 0)

    def test_start_without_listeners(self):
        """``agent start`` without listeners fails like Go."""
        e = self.assertRaises(ConfigError, _agent, ["start"])
        self.assertEqual(str(e), "no listeners configured")

    def test_missing_timeout(self):
        """A YAML listener without a timeout is invalid."""
        files = {"a.yaml": "listeners:\n  - {endpoint_id: my-endpoint, addr: '3000'}\n"}
        e = self.assertRaises(
            ConfigValidationError, _agent, ["start", "--config.path=a.yaml"], files
        )
        self.assertEqual(str(e), "config: listener: my-endpoint: missing timeout")

    def test_invalid_listeners(self):
        """Invalid listener addresses and protocols give Go's messages."""
        e = self.assertRaises(ConfigValidationError, _agent, ["http", "e", "not valid"])
        self.assertEqual(str(e), "config: listener: e: invalid addr")
        files = {
            "a.yaml": "listeners:\n  - {endpoint_id: e, addr: '1', protocol: udp, timeout: 1s}\n"
        }
        e = self.assertRaises(
            ConfigValidationError, _agent, ["start", "--config.path=a.yaml"], files
        )
        self.assertEqual(str(e), "config: listener: e: unsupported protocol")
        files = {"a.yaml": "listeners:\n  - {addr: '1', timeout: 1s}\n"}
        e = self.assertRaises(
            ConfigValidationError, _agent, ["start", "--config.path=a.yaml"], files
        )
        self.assertEqual(str(e), "config: listener: missing endpoint id")

    def test_connect_validation(self):
        """Agent connect and server settings are validated."""
        e = self.assertRaises(ConfigValidationError, _agent, ["http", "e", "1", "--connect.url="])
        self.assertEqual(str(e), "config: connect: missing url")
        e = self.assertRaises(
            ConfigValidationError, _agent, ["http", "e", "1", "--connect.tls.cert=c"]
        )
        self.assertEqual(str(e), "config: connect: tls: missing key")


def _forward(argv, files=None):
    inv = resolve_command(ROOT, ["forward", *argv])
    return build_forward_config(
        inv.names[1],
        inv.parsed.positionals,
        inv.parsed.values,
        environ={},
        read=_reader(files or {}),
    )


class ForwardTests(SynchronousTestCase):
    def test_tcp(self):
        """``forward tcp <addr> <endpoint>`` builds one port."""
        c = _forward(["tcp", "3000", "my-endpoint", "--connect.url=http://piko:8000"])
        (port,) = c.ports
        self.assertEqual((port.addr, port.endpoint_id), ("3000", "my-endpoint"))
        self.assertEqual(port.host(), "localhost:3000")
        self.assertEqual(c.connect.url, "http://piko:8000")

    def test_start(self):
        """``forward start`` uses the YAML ports."""
        files = {
            "f.yaml": (
                "ports:\n  - {addr: 3000, endpoint_id: a}\n"
                "  - {addr: '0.0.0.0:3001', endpoint_id: b}\n"
            )
        }
        c = _forward(["start", "--config.path=f.yaml"], files)
        self.assertEqual([p.host() for p in c.ports], ["localhost:3000", "0.0.0.0:3001"])

    def test_no_ports(self):
        """``forward start`` without ports fails like Go."""
        e = self.assertRaises(ConfigError, _forward, ["start"])
        self.assertEqual(str(e), "no ports configured")

    def test_invalid_port(self):
        """An invalid port address gives Go's message."""
        e = self.assertRaises(ConfigValidationError, _forward, ["tcp", "nope", "e"])
        self.assertEqual(str(e), "config: port: e: invalid addr")

# -*- test-case-name: piko.test.config.test_load -*-
"""
Tests for YAML loading and environment expansion.
"""

from twisted.trial.unittest import SynchronousTestCase

from piko.config import (
    AgentConfig,
    ConfigLoadError,
    ForwardConfig,
    ServerConfig,
    apply_yaml,
    expand_env,
    load_file,
)

FULL_SERVER_YAML = """
proxy:
  bind_addr: 10.15.104.25:8000
  advertise_addr: 1.2.3.4:8000
  timeout: 20s
  access_log:
    level: debug
    request_headers:
      block_list: [abc]
    response_headers:
      allow_list: [def]
    disable: false
  http:
    read_timeout: 5s
    read_header_timeout: 5s
    write_timeout: 5s
    idle_timeout: 2s
    max_header_bytes: 2097152
  auth:
    hmac_secret_key: k
    rsa_public_key: rsa
    ecdsa_public_key: ecdsa
    audience: a
    issuer: i
    disable_disconnect_on_expiry: false
    jwks:
      endpoint: https://example.com/jwks
      cache_ttl: 1m
      timeout: 5s
  tls:
    cert: /piko/cert.pem
    key: /piko/key.pem
    client_cas: /ca.pem
    client:
      cert: c
      key: k
      root_cas: ca
      insecure_skip_verify: false
      server_name: piko.example.com
upstream:
  bind_addr: 10.15.104.25:8001
  advertise_addr: 1.2.3.4:8001
  auth:
    hmac_secret_key: k
  tls:
    cert: /piko/cert.pem
    key: /piko/key.pem
  rebalance:
    threshold: 0.2
    shed_rate: 0.005
    min_conns: 100
  tenants:
    - id: tenant-1
      auth:
        hmac_secret_key: k
    - id: tenant-2
      auth:
        rsa_public_key: "rsa"
admin:
  bind_addr: 10.15.104.25:8002
  advertise_addr: 1.2.3.4:8002
  auth:
    hmac_secret_key: k
  tls:
    cert: /piko/cert.pem
    key: /piko/key.pem
cluster:
  node_id: my-node
  join: [10.26.104.12:8003, 10.26.104.73:8003]
  join_timeout: 2m
  abort_if_join_fails: true
  gossip:
    bind_addr: 10.15.104.25:8003
    advertise_addr: 1.2.3.4:8003
    interval: 100ms
    max_packet_size: 1400
log:
  level: info
  subsystems: [foo, bar]
grace_period: 2m
"""


class ServerYAMLTests(SynchronousTestCase):
    def test_full(self):
        """The full server YAML of the Go tests maps onto the model field for field."""
        c = apply_yaml(ServerConfig(), FULL_SERVER_YAML, "server.yaml")
        self.assertEqual(c.proxy.bind_addr, "10.15.104.25:8000")
        self.assertEqual(c.proxy.advertise_addr, "1.2.3.4:8000")
        self.assertEqual(c.proxy.timeout, 20.0)
        self.assertEqual(c.proxy.access_log.level, "debug")
        self.assertEqual(c.proxy.access_log.request_headers.block_list, ("abc",))
        self.assertEqual(c.proxy.access_log.response_headers.allow_list, ("def",))
        self.assertEqual(c.proxy.http.read_timeout, 5.0)
        self.assertEqual(c.proxy.http.idle_timeout, 2.0)
        self.assertEqual(c.proxy.http.max_header_bytes, 2097152)
        self.assertEqual(c.proxy.auth.hmac_secret_key, "k")
        self.assertEqual(c.proxy.auth.rsa_public_key, "rsa")
        self.assertEqual(c.proxy.auth.ecdsa_public_key, "ecdsa")
        self.assertEqual(c.proxy.auth.audience, "a")
        self.assertEqual(c.proxy.auth.issuer, "i")
        self.assertEqual(c.proxy.auth.jwks.endpoint, "https://example.com/jwks")
        self.assertEqual(c.proxy.auth.jwks.cache_ttl, 60.0)
        self.assertEqual(c.proxy.auth.jwks.timeout, 5.0)
        self.assertEqual(c.proxy.tls.cert, "/piko/cert.pem")
        self.assertEqual(c.proxy.tls.client_cas, "/ca.pem")
        self.assertEqual(c.proxy.tls.client.server_name, "piko.example.com")
        self.assertEqual(c.proxy.tls.client.root_cas, "ca")
        self.assertEqual(c.upstream.rebalance.threshold, 0.2)
        self.assertEqual(c.upstream.rebalance.min_conns, 100)
        self.assertEqual([t.id for t in c.upstream.tenants], ["tenant-1", "tenant-2"])
        self.assertEqual(c.upstream.tenants[1].auth.rsa_public_key, "rsa")
        self.assertEqual(c.admin.tls.key, "/piko/key.pem")
        self.assertEqual(c.cluster.node_id, "my-node")
        self.assertEqual(c.cluster.join, ("10.26.104.12:8003", "10.26.104.73:8003"))
        self.assertEqual(c.cluster.join_timeout, 120.0)
        self.assertEqual(c.cluster.gossip.interval, 0.1)
        self.assertEqual(c.cluster.gossip.advertise_addr, "1.2.3.4:8003")
        self.assertEqual(c.log.subsystems, ("foo", "bar"))
        self.assertEqual(c.grace_period, 120.0)

    def test_absent_keys_keep_defaults(self):
        """Keys absent from the file keep their defaults."""
        c = apply_yaml(ServerConfig(), "proxy:\n  timeout: 1s\n", "f")
        self.assertEqual(c.proxy.timeout, 1.0)
        self.assertEqual(c.proxy.bind_addr, ":8000")
        self.assertEqual(c.proxy.http, ServerConfig().proxy.http)

    def test_empty_file(self):
        """An empty file changes nothing."""
        self.assertEqual(apply_yaml(ServerConfig(), "", "f"), ServerConfig())

    def test_unknown_key(self):
        """An unknown key is rejected with its dotted path and line."""
        e = self.assertRaises(
            ConfigLoadError, apply_yaml, ServerConfig(), "proxy:\n  http:\n    nope: 1\n", "s.yaml"
        )
        self.assertEqual(str(e), "parse config: s.yaml: line 3: unknown key proxy.http.nope")

    def test_unknown_key_in_list(self):
        """An unknown key inside a list item names the item index."""
        e = self.assertRaises(
            ConfigLoadError,
            apply_yaml,
            ServerConfig(),
            "upstream:\n  tenants:\n    - id: a\n      secret: b\n",
            "s.yaml",
        )
        self.assertIn("unknown key upstream.tenants[0].secret", str(e))

    def test_wrong_type(self):
        """A value of the wrong type is rejected, naming the key."""
        cases = {
            "upstream:\n  rebalance:\n    min_conns: lots\n": "upstream.rebalance.min_conns",
            "cluster:\n  abort_if_join_fails: 'yes please'\n": "cluster.abort_if_join_fails",
            "cluster:\n  join: 10.0.0.1\n": "cluster.join: expected a list",
            "proxy: 5\n": "proxy: expected a mapping",
            "proxy:\n  bind_addr: [a]\n": "proxy.bind_addr: expected a string",
        }
        for text, fragment in cases.items():
            e = self.assertRaises(ConfigLoadError, apply_yaml, ServerConfig(), text, "s.yaml")
            self.assertIn(fragment, str(e))

    def test_bad_duration(self):
        """A bad duration is rejected with Go's duration message and the key."""
        e = self.assertRaises(
            ConfigLoadError, apply_yaml, ServerConfig(), "grace_period: 5\n", "s.yaml"
        )
        self.assertEqual(
            str(e), 'parse config: s.yaml: line 1: grace_period: time: missing unit in duration "5"'
        )

    def test_scalars_fill_strings(self):
        """Numbers fill string fields like yaml.v3 (``addr: 3000``)."""
        c = apply_yaml(ForwardConfig(), "ports:\n  - addr: 3000\n    endpoint_id: e\n", "f")
        self.assertEqual(c.ports[0].addr, "3000")

    def test_invalid_yaml(self):
        """Invalid YAML gives a parse error with the line number."""
        e = self.assertRaises(ConfigLoadError, apply_yaml, ServerConfig(), "proxy: [\n", "s.yaml")
        self.assertTrue(str(e).startswith("parse config: s.yaml: yaml: line "), str(e))

    def test_duplicate_key(self):
        """A key given twice is rejected."""
        e = self.assertRaises(
            ConfigLoadError, apply_yaml, ServerConfig(), "log: {level: info}\nlog: {}\n", "s.yaml"
        )
        self.assertIn("key log already defined at line 1", str(e))


class AgentYAMLTests(SynchronousTestCase):
    def test_listeners(self):
        """Agent listeners load from YAML with their nested sections."""
        text = (
            "listeners:\n"
            "  - endpoint_id: my-endpoint\n"
            "    addr: localhost:3000\n"
            "    protocol: tcp\n"
            "    timeout: 15s\n"
            "    access_log: {level: warn}\n"
            "    http_client: {max_idle_conns: -1}\n"
            "    tls: {root_cas: /ca.pem}\n"
            "connect:\n  url: https://piko:8001\n  tenant_id: t\n"
            "server: {enabled: true, bind_addr: ':5001'}\n"
        )
        c = apply_yaml(AgentConfig(), text, "a.yaml")
        (listener,) = c.listeners
        self.assertEqual(listener.endpoint_id, "my-endpoint")
        self.assertEqual(listener.protocol, "tcp")
        self.assertEqual(listener.timeout, 15.0)
        self.assertEqual(listener.access_log.level, "warn")
        self.assertEqual(listener.http_client.max_idle_conns, -1)
        self.assertEqual(listener.tls.root_cas, "/ca.pem")
        self.assertEqual(c.connect.tenant_id, "t")
        self.assertTrue(c.server.enabled)


class LoadFileTests(SynchronousTestCase):
    def test_missing_file(self):
        """A missing file gives Go's read error."""
        path = self.mktemp()
        e = self.assertRaises(ConfigLoadError, load_file, ServerConfig(), path, False)
        self.assertEqual(str(e), f"read file: {path}: open {path}: no such file or directory")

    def test_no_path(self):
        """Without a path nothing is read."""
        self.assertEqual(load_file(ServerConfig(), "", False), ServerConfig())

    def test_real_file(self):
        """A file on disk is read and applied."""
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("grace_period: 3s\n")
        self.assertEqual(load_file(ServerConfig(), path, False).grace_period, 3.0)

    def test_expand(self):
        """With expansion on, the raw text is expanded before parsing."""
        text = "proxy:\n  bind_addr: ${ADDR:127.0.0.1:9000}\n  timeout: ${T}\n"
        c = load_file(ServerConfig(), "x", True, {"T": "4s"}, read=lambda path: text)
        self.assertEqual(c.proxy.bind_addr, "127.0.0.1:9000")
        self.assertEqual(c.proxy.timeout, 4.0)

    def test_no_expand(self):
        """Without expansion, ``$`` references stay literal."""
        text = "cluster:\n  node_id: $NODE\n"
        c = load_file(ServerConfig(), "x", False, {"NODE": "n"}, read=lambda path: text)
        self.assertEqual(c.cluster.node_id, "$NODE")


class ExpandEnvTests(SynchronousTestCase):
    def test_cases(self):
        """Expansion follows Go's os.Expand with Piko's ``:default`` rule."""
        env = {"VAR": "value", "EMPTY": ""}
        cases = {
            "$VAR": "value",
            "${VAR}": "value",
            "a${VAR}b": "avalueb",
            "${VAR:5}": "value",
            "${UNSET:5}": "5",
            "${EMPTY:5}": "5",
            "${UNSET:a:b}": "a:b",
            "$UNSET": "",
            "${UNSET}": "",
            "$$": "",
            "$": "$",
            "a $ b": "a $ b",
            "${}x": "x",
            "${VAR": "VAR",
            "$VAR_x-y": "-y",
            "cost: 5$": "cost: 5$",
        }
        for text, expected in cases.items():
            self.assertEqual(expand_env(text, env), expected, text)

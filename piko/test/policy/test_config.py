# -*- test-case-name: piko.test.policy.test_config -*-
"""Tests for the ``policies:`` section, reloads, the observers' hooks and tenant ownership."""

from prometheus_client import CollectorRegistry
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel
from twisted.trial.unittest import SynchronousTestCase

from piko.auth.token import Token
from piko.config import AccessLogConfig, ConfigError, LoadConfig, ServerConfig, apply_yaml
from piko.http.access_log import AccessLog
from piko.http.server import HTTPServerProtocol
from piko.policy.config import PolicyConfigError, compile_policies
from piko.policy.handler import PolicyHandler
from piko.policy.metrics import PolicyMetrics
from piko.policy.reload import PolicyReloader
from piko.server.metrics import MeteredHandler, ServerMetrics
from piko.server.traffic import Traffic
from piko.test.http.test_server import Handler

GO_CONFIG = """
proxy:
  bind_addr: ":8000"
  timeout: 30s
upstream:
  bind_addr: ":8001"
  tenants:
    - id: t
      auth: {hmac_secret_key: "0123456789abcdef0123456789abcdef"}
cluster:
  node_id: n
"""


def compile_text(text):
    return compile_policies(apply_yaml(ServerConfig(), text, "f.yaml").policies, lambda: 0.0)


class ConfigTests(SynchronousTestCase):
    def test_go_config_unchanged(self):
        """A Go configuration (no policies:) loads as before, with no policy."""
        config = apply_yaml(ServerConfig(), GO_CONFIG, "go.yaml")
        self.assertEqual(config.policies, ())
        self.assertEqual(config.upstream.tenants[0].endpoints, ())
        self.assertFalse(compile_policies(config.policies, lambda: 0.0))

    def test_unknown_key(self):
        """An unknown key in a policy is refused with its line and path."""
        with self.assertRaisesRegex(ConfigError, r"line 4: unknown key policies\[0\]\.rate"):
            apply_yaml(
                ServerConfig(), "policies:\n  - name: a\n    endpoints: [x]\n    rate: 1\n", "f"
            )

    def test_errors_name_the_policy(self):
        """Bad values are refused naming the policy and key."""
        head = "  - name: a\n    endpoints: [x]\n"
        cases = {
            "  - endpoints: [x]\n": r"policies\[0\]: missing name",
            "  - name: a\n": r"policies\[0\] \(a\): endpoints: at least one",
            head + "    ip: {allow: [1.2.3]}\n": "invalid CIDR '1.2.3'",
            head + "    rate_limit: {requests: 1, key: ip}\n": "key must be",
            head + "    basic_auth: {users: [{user: u, hash: x}]}\n": "unsupported hash",
            head + '    headers: {request: {add: ["X: a\\r\\nY: b"]}}\n': "line break",
            head + "  - name: a\n    endpoints: [y]\n": "used twice",
        }
        for body, message in cases.items():
            with self.assertRaisesRegex(PolicyConfigError, message):
                compile_text("policies:\n" + body)

    def test_first_match_wins(self):
        """The first policy matching an endpoint is the one applied; globs work."""
        policies = compile_text(
            "policies:\n  - name: a\n    endpoints: ['api-*']\n"
            "  - name: b\n    endpoints: [api-x, other]\n"
        )
        self.assertEqual(policies.match("api-x").name, "a")
        self.assertEqual(policies.match("other").name, "b")
        self.assertIsNone(policies.match("nope"))


class ReloadTests(SynchronousTestCase):
    def test_bad_file_keeps_old_policies(self):
        """A reload of a bad file is refused with the error and the old policies stay."""
        files = {"good": "policies:\n  - name: a\n    endpoints: [x]\n", "bad": "policies: [1"}
        handler = PolicyHandler(Handler(), Clock())
        registry = CollectorRegistry()

        def read(source):
            return apply_yaml(ServerConfig(), files[source.path], source.path)

        reloader = PolicyReloader(
            handler,
            LoadConfig(path="good"),
            lambda: 0.0,
            metrics=PolicyMetrics(registry),
            read=read,
        )
        self.assertTrue(reloader.reload().ok)
        before = handler.policies
        reloader.source = LoadConfig(path="bad")
        result = reloader.reload()
        self.assertFalse(result.ok)
        self.assertIn("parse config: bad", result.message)
        self.assertIs(handler.policies, before)
        self.assertEqual(result.policies, ("a",))
        self.assertEqual(
            registry.get_sample_value("piko_policy_reloads_total", {"result": "error"}), 1
        )

    def test_buckets_survive_reload(self):
        """A reload keeping a policy's limit keeps its buckets (no fresh burst for anyone)."""
        text = "policies:\n  - name: a\n    endpoints: [x]\n    rate_limit: {requests: 1}\n"
        old = compile_text(text)
        new = compile_policies(apply_yaml(ServerConfig(), text, "f").policies, lambda: 0.0, old)
        self.assertIs(new.policies[0].buckets, old.policies[0].buckets)

    def test_no_file(self):
        """Without --config.path a reload says there is nothing to reload from."""
        result = PolicyReloader(
            PolicyHandler(Handler(), Clock()), LoadConfig(), lambda: 0.0
        ).reload()
        self.assertFalse(result.ok)
        self.assertIn("--config.path", result.message)


class ObserverTests(SynchronousTestCase):
    def test_access_log_and_dashboard_name_the_refusal(self):
        """The access log line and the dashboard's endpoint figures name the refusing policy."""
        events = []
        clock = Clock()
        traffic = Traffic(clock.seconds)
        log = AccessLog(
            AccessLogConfig(), "proxy.access", observer=events.append, min_level=LogLevel.debug
        )
        policies = compile_text(
            "policies:\n  - name: deny\n    endpoints: [api]\n    ip: {deny: [0.0.0.0/0]}\n"
        )
        inner = PolicyHandler(Handler(), clock, policies)
        handler = MeteredHandler(inner, ServerMetrics(), clock, also=log.record, traffic=traffic)
        proto = HTTPServerProtocol(handler, clock, date=lambda: b"D")
        proto.makeConnection(StringTransport(peerAddress=IPv4Address("TCP", "192.0.2.1", 1)))
        proto.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\nx-piko-endpoint: api\r\n\r\n")
        (event,) = events
        self.assertEqual((event["policy"], event["policy_action"]), ("deny", "ip"))
        (entry,) = traffic.snapshot()["endpoints"]
        self.assertEqual(
            (entry["endpoint"], entry["refused"], entry["refused_by"]), ("api", 1, {"ip": 1})
        )


class TenantTests(SynchronousTestCase):
    def test_owned_and_foreign(self):
        """A tenant's token permits only its own patterns, never another tenant's."""
        blue = Token(tenant_id="blue", owned=("blue-*",), foreign=("green-*",))
        self.assertTrue(blue.endpoint_permitted("blue-app"))
        self.assertFalse(blue.endpoint_permitted("green-app"))
        self.assertFalse(blue.endpoint_permitted("other"))
        loose = Token(tenant_id="red", foreign=("green-*", "blue-*"))
        self.assertTrue(loose.endpoint_permitted("red-app"))
        self.assertFalse(loose.endpoint_permitted("blue-app"))
        self.assertTrue(Token().endpoint_permitted("anything"), "Go's behaviour without owners")

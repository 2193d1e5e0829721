# -*- test-case-name: piko.test.inspect.test_config -*-
"""The inspector's flags and YAML keys (``inspect.*``), and their validation."""

from twisted.trial.unittest import SynchronousTestCase

from piko.config import AgentConfig, ConfigValidationError, is_loopback_bind
from piko.test.config.test_programs import _agent


class InspectConfigTests(SynchronousTestCase):
    def test_default_on_loopback_4040(self):
        """The inspector is on by default, on 127.0.0.1:4040, with ngrok-like limits."""
        inspect = AgentConfig().inspect
        self.assertEqual((inspect.enabled, inspect.bind_addr), (True, "127.0.0.1:4040"))
        self.assertEqual((inspect.body_size, inspect.db_size), (64 * 1024, 50 * 1000 * 1000))
        self.assertFalse(inspect.allow_remote)

    def test_flags(self):
        """--inspect=false turns it off; --inspect.bind-addr and the sizes set it."""
        self.assertFalse(_agent(["http", "e", "3000", "--inspect=false"]).inspect.enabled)
        c = _agent(
            [
                "http",
                "e",
                "3000",
                "--inspect.bind-addr",
                "127.0.0.1:0",
                "--inspect.body-size=10",
                "--inspect.db-size=1000",
            ]
        )
        self.assertEqual(
            (c.inspect.bind_addr, c.inspect.body_size, c.inspect.db_size), ("127.0.0.1:0", 10, 1000)
        )

    def test_yaml(self):
        """The YAML keys sit under ``inspect``; explicit flags win over them."""
        files = {
            "a.yaml": (
                "listeners:\n- endpoint_id: e\n  addr: '3000'\n  timeout: 1s\n"
                "inspect:\n  enabled: false\n  bind_addr: 127.0.0.1:4999\n"
                "  auth:\n    hmac_secret_key: s\n"
            )
        }
        c = _agent(["start", "--config.path", "a.yaml"], files)
        self.assertFalse(c.inspect.enabled)
        self.assertEqual(c.inspect.bind_addr, "127.0.0.1:4999")
        self.assertEqual(c.inspect.auth.hmac_secret_key, "s")
        c = _agent(["start", "--config.path", "a.yaml", "--inspect"], files)
        self.assertTrue(c.inspect.enabled)

    def test_non_loopback_needs_explicit_flag(self):
        """A non-loopback address is refused unless --inspect.allow-remote is given."""
        for addr in (":4040", "0.0.0.0:4040", "10.1.2.3:4040", "tcp:4040"):
            e = self.assertRaises(
                ConfigValidationError,
                _agent,
                ["http", "e", "3000", "--inspect.bind-addr", addr],
            )
            self.assertIn(f"config: inspect: bind addr {addr} is not loopback", str(e))
        c = _agent(["http", "e", "3000", "--inspect.bind-addr=:4040", "--inspect.allow-remote"])
        self.assertEqual(c.inspect.bind_addr, ":4040")
        # Off, the address is not checked.
        _agent(["http", "e", "3000", "--inspect=false", "--inspect.bind-addr=:4040"])

    def test_is_loopback_bind(self):
        """Loopback hosts and endpoint interfaces, and unix sockets, are loopback."""
        for addr in ("127.0.0.1:1", "localhost:1", "[::1]:1", "tcp:1:interface=127.0.0.1",
                     "tcp6:1:interface=\\:\\:1", "unix:/tmp/s"):  # fmt: skip
            self.assertTrue(is_loopback_bind(addr), addr)
        for addr in (":1", "10.0.0.1:1", "tcp:1", "ssl:1:interface=127.0.0.1", "bad"):
            self.assertFalse(is_loopback_bind(addr), addr)

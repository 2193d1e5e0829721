# -*- test-case-name: piko.test.config.test_twistd -*-
"""
Tests for the twistd Options generated from the shared option tables.
"""

from twisted.trial.unittest import SynchronousTestCase

from piko import _tap_agent, _tap_forward, _tap_server


class TwistdOptionsTests(SynchronousTestCase):
    def test_server(self):
        """piko-server Options parse Go flags into a validated ServerConfig."""
        o = _tap_server.Options()
        o.parseOptions(["--proxy.bind-addr=tcp:0:interface=127.0.0.1", "--cluster.node-id=n"])
        self.assertEqual(o.config.proxy.bind_addr, "tcp:0:interface=127.0.0.1")
        self.assertEqual(o.config.cluster.node_id, "n")
        self.assertEqual(o["proxy.bind-addr"], "tcp:0:interface=127.0.0.1")

    def test_server_bool_false(self):
        """Booleans accept ``=false`` under twistd too."""
        o = _tap_server.Options()
        o.parseOptions(["--cluster.abort-if-join-fails=false"])
        self.assertFalse(o.config.cluster.abort_if_join_fails)

    def test_agent_subcommand(self):
        """piko-agent Options take the same subcommands as ``piko agent``."""
        o = _tap_agent.Options()
        o.parseOptions(["--connect.url=http://127.0.0.1:8001", "tcp", "e", "3000"])
        (li,) = o.config.listeners
        self.assertEqual((li.protocol, li.endpoint_id, li.addr), ("tcp", "e", "3000"))

    def test_agent_needs_subcommand(self):
        """piko-agent without a subcommand is a usage error."""
        self.assertRaises(SystemExit, _tap_agent.Options().parseOptions, [])

    def test_forward(self):
        """piko-forward Options build the ports."""
        o = _tap_forward.Options()
        o.parseOptions(["tcp", "3000", "e"])
        self.assertEqual(o.config.ports[0].endpoint_id, "e")

    def test_errors_are_one_line_exits(self):
        """
        Flag and validation errors end twistd with Go's message and a pointer to the help,
        not the whole help text (twistd prints that for a UsageError).
        """
        e = self.assertRaises(SystemExit, _tap_server.Options().parseOptions, ["--nope"])
        self.assertEqual(
            str(e),
            "twistd piko-server: unknown flag: --nope\nRun 'twistd piko-server --help' for usage.",
        )
        e = self.assertRaises(
            SystemExit, _tap_server.Options().parseOptions, ["--proxy.bind-addr="]
        )
        self.assertEqual(str(e), "twistd piko-server: config: proxy: missing bind addr")

    def test_help_synopsis_said_once(self):
        """Under twistd the synopsis reads ``Usage: twistd [options] piko-server ...`` once."""
        from twisted.scripts.twistd import ServerOptions

        config = ServerOptions()
        config.subCommand = "piko-server"
        options = _tap_server.Options()
        options.parent = config
        self.assertEqual(
            options.getSynopsis(), "Usage: twistd [options] piko-server [command] [flags]"
        )

    def test_usage_lists_flags(self):
        """The usage text lists the Go flag names."""
        text = str(_tap_server.Options())
        self.assertIn("--proxy.bind-addr", text)
        self.assertIn("--config.expand-env", text)

    def test_make_service(self):
        """makeService passes the config and a reactor to the service factory."""
        calls = []
        fake_module(
            self,
            "piko.server.service",
            make_server_service=lambda config, reactor: calls.append((config, reactor)) or "svc",
        )
        o = _tap_server.Options()
        o.parseOptions(["--cluster.node-id=n"])
        self.assertEqual(_tap_server.makeService(o), "svc")
        self.assertIs(calls[0][0], o.config)
        self.assertIsNotNone(calls[0][1])


def fake_module(case, name, **attributes):
    """
    Install a stand-in module ``name`` (and its parents if missing) in
    ``sys.modules`` for the duration of ``case``.
    """
    import importlib
    import sys
    import types

    parts = name.split(".")
    for i in range(1, len(parts)):
        parent = ".".join(parts[:i])
        if parent not in sys.modules:
            try:
                importlib.import_module(parent)
            except ImportError:
                sys.modules[parent] = types.ModuleType(parent)
                case.addCleanup(sys.modules.pop, parent, None)
    previous = sys.modules.get(name)
    module = types.ModuleType(name)
    for key, value in attributes.items():
        setattr(module, key, value)
    sys.modules[name] = module

    def restore():
        if previous is None:
            sys.modules.pop(name, None)
        else:
            sys.modules[name] = previous

    case.addCleanup(restore)
    return module

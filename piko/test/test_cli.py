# -*- test-case-name: piko.test.test_cli -*-
"""
Tests for the ``piko`` console script.
"""

import gc
import io
import json

from twisted.internet.defer import fail, succeed
from twisted.trial.unittest import SynchronousTestCase

import piko
from piko import cli, run
from piko.config import AgentConfig, ForwardConfig, ServerConfig
from piko.test.config.test_twistd import fake_module


class CLITestMixin:
    def setUp(self):
        self.out = io.StringIO()
        self.err = io.StringIO()
        self.services = []
        self.requests = []
        self.responses = {}

        def run_service(program, config, log_config, stderr, prepare=None):
            self.services.append((program, config, log_config))
            return 0

        def http_get(reactor, url, headers):
            self.requests.append((url, dict(headers)))
            response = self.responses.get(url)
            if isinstance(response, Exception):
                return fail(response)
            return succeed(response)

        def react(run):
            d = run(object())
            return self.successResultOf(d)

        self.patch(cli, "run_service", run_service)
        self.patch(cli, "_http_get", http_get)
        self.patch(cli, "_react", react)

    def run_cli(self, *argv):
        return cli._dispatch(list(argv), self.out, self.err)


class CommandTests(CLITestMixin, SynchronousTestCase):
    def test_version(self):
        """``piko --version`` prints the package version."""
        self.assertEqual(self.run_cli("--version"), 0)
        self.assertEqual(self.out.getvalue(), f"piko version {piko.__version__}\n")

    def test_help(self):
        """``piko`` alone and ``--help`` print the command list."""
        self.assertEqual(self.run_cli(), 0)
        self.assertIn("server", self.out.getvalue())
        self.assertIn("agent", self.out.getvalue())
        self.out.truncate(0)
        self.assertEqual(self.run_cli("server", "--help"), 0)
        self.assertIn("--proxy.bind-addr", self.out.getvalue())
        self.assertEqual(self.services, [])

    def test_server(self):
        """``piko server`` runs the server service with the built config."""
        self.assertEqual(self.run_cli("server", "--proxy.bind-addr=:9000", "--log.level=debug"), 0)
        ((program, config, log_config),) = self.services
        self.assertEqual(program, "server")
        self.assertIsInstance(config, ServerConfig)
        self.assertEqual(config.proxy.bind_addr, ":9000")
        self.assertEqual(log_config.level, "debug")

    def test_agent(self):
        """``piko agent http`` runs the agent service with one listener."""
        self.assertEqual(self.run_cli("agent", "http", "my-endpoint", "3000"), 0)
        ((program, config, _),) = self.services
        self.assertEqual(program, "agent")
        self.assertIsInstance(config, AgentConfig)
        self.assertEqual(config.listeners[0].url(), "http://localhost:3000")

    def test_forward(self):
        """``piko forward tcp`` runs the forward service with one port."""
        self.assertEqual(self.run_cli("forward", "tcp", "3000", "my-endpoint"), 0)
        ((program, config, _),) = self.services
        self.assertEqual(program, "forward")
        self.assertIsInstance(config, ForwardConfig)

    def test_errors(self):
        """Errors go to stderr in Go's words with exit status 1."""
        cases = {
            ("server", "--proxy.bind-addr="): "config: proxy: missing bind addr\n",
            ("agent", "start"): "no listeners configured\n",
            ("forward", "start"): "no ports configured\n",
            ("server", "--nope"): "Error: unknown flag: --nope\n",
            (
                "bench",
            ): 'Error: unknown command "bench" for "piko"\nRun \'piko --help\' for usage.\n',
            (
                "agent",
                "frob",
            ): 'Error: unknown command "frob" for "piko agent"\n'
            "Run 'piko agent --help' for usage.\n",
        }
        for argv, message in cases.items():
            self.err.truncate(0)
            self.err.seek(0)
            self.assertEqual(self.run_cli(*argv), 1, argv)
            self.assertEqual(self.err.getvalue(), message)
        self.assertEqual(self.services, [])

    def test_missing_config_file(self):
        """A missing config file is reported with Go's read error."""
        path = self.mktemp()
        self.assertEqual(self.run_cli("server", f"--config.path={path}"), 1)
        self.assertEqual(
            self.err.getvalue(), f"read file: {path}: open {path}: no such file or directory\n"
        )


class LoadFactoryTests(SynchronousTestCase):
    def test_lazy_lookup(self):
        """The service factory is looked up by its module and name when needed."""
        fake_module(self, "piko.agent.service", make_agent_service="factory")
        self.assertEqual(run.load_factory("agent"), "factory")


class StatusTests(CLITestMixin, SynchronousTestCase):
    def test_upstream_endpoints(self):
        """``status upstream endpoints`` prints the endpoint map as YAML."""
        url = "http://localhost:8002/status/upstream/endpoints"
        self.responses[url] = (200, json.dumps({"b": 2, "a": 1}).encode())
        self.assertEqual(self.run_cli("server", "status", "upstream", "endpoints"), 0)
        self.assertEqual(self.out.getvalue(), "a: 1\nb: 2\n")
        self.assertEqual(self.requests, [(url, {})])

    def test_empty_endpoints(self):
        """An empty endpoint map prints as ``{}``."""
        self.responses["http://localhost:8002/status/upstream/endpoints"] = (200, b"{}")
        self.assertEqual(self.run_cli("server", "status", "upstream", "endpoints"), 0)
        self.assertEqual(self.out.getvalue(), "{}\n")

    def test_url_forward_token(self):
        """``--server.url``, ``--forward`` and ``--server.token`` shape the request."""
        url = "https://admin:9002/base/status/upstream/endpoints?forward=n1"
        self.responses[url] = (200, b"{}")
        code = self.run_cli(
            "server",
            "status",
            "--server.url=https://admin:9002/base",
            "upstream",
            "endpoints",
            "--forward",
            "n1",
            "--server.token=t",
        )
        self.assertEqual(code, 0)
        self.assertEqual(self.requests, [(url, {"Authorization": "Bearer t"})])

    def test_cluster_nodes(self):
        """``status cluster nodes`` prints ``nodes`` sorted by id, filtered by ``--status``."""
        nodes = [
            {"id": "b", "status": "active"},
            {"id": "c", "status": "left"},
            {"id": "a", "status": "active"},
        ]
        self.responses["http://localhost:8002/status/cluster/nodes"] = (
            200,
            json.dumps(nodes).encode(),
        )
        self.assertEqual(self.run_cli("server", "status", "cluster", "nodes", "--status=active"), 0)
        self.assertEqual(
            self.out.getvalue(), "nodes:\n- id: a\n  status: active\n- id: b\n  status: active\n"
        )

    def test_node(self):
        """``status cluster node <id>`` and ``gossip node <id>`` fetch one node."""
        self.responses["http://localhost:8002/status/cluster/nodes/local"] = (200, b'{"id": "x"}')
        self.responses["http://localhost:8002/status/gossip/nodes/x"] = (200, b'{"id": "x"}')
        self.assertEqual(self.run_cli("server", "status", "cluster", "node", "local"), 0)
        self.assertEqual(self.run_cli("server", "status", "gossip", "node", "x"), 0)
        self.assertEqual(self.out.getvalue(), "id: x\nid: x\n\n")

    def test_bad_status(self):
        """A non-200 answer is reported as Go does, with exit status 1."""
        self.responses["http://localhost:8002/status/gossip/nodes"] = (500, b"")
        self.assertEqual(self.run_cli("server", "status", "gossip", "nodes"), 1)
        self.assertEqual(
            self.err.getvalue(), "failed to get gossip nodes: request: bad status: 500\n"
        )

    def test_connection_error(self):
        """A failed request is reported with exit status 1."""
        self.responses["http://localhost:8002/status/gossip/nodes"] = ConnectionRefusedError(
            "refused"
        )
        self.assertEqual(self.run_cli("server", "status", "gossip", "nodes"), 1)
        self.assertIn("failed to get gossip nodes: request:", self.err.getvalue())

    def test_node_needs_id(self):
        """``status cluster node`` without an id is an argument error."""
        self.assertEqual(self.run_cli("server", "status", "cluster", "node"), 1)
        self.assertEqual(self.err.getvalue(), "Error: accepts 1 arg(s), received 0\n")


class FreezeHeapTests(SynchronousTestCase):
    def test_freezes_the_start_up_heap(self) -> None:
        """After start-up, the surviving heap is moved out of the cyclic collector's reach."""
        self.addCleanup(gc.unfreeze)
        run.freeze_heap()
        self.assertGreater(gc.get_freeze_count(), 0)

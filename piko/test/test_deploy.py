# -*- test-case-name: piko.test.test_deploy -*-
"""
Every example configuration in ``docs/`` and ``deploy/`` loads and validates,
and the deployment files (Kubernetes manifests, Dockerfile, systemd units)
agree with the server they run.

A Piko configuration example says which program reads it on its first line,
as the command that would load it: ``# piko server --config.expand-env``,
``# piko agent start``, ``# piko forward start``.  The YAML files, the YAML
blocks of the Markdown pages and the ConfigMap entries are all found by
walking the folders, so a new example is tested without being listed here;
a YAML file that is neither a marked Piko configuration nor a Kubernetes
manifest fails the test.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from piko.auth import load_port_authenticator
from piko.config import (
    AGENT_COMMAND,
    FORWARD_COMMAND,
    SERVER_COMMAND,
    CommandSpec,
    ConfigError,
    ServerConfig,
    build_agent_config,
    build_forward_config,
    build_server_config,
    resolve_command,
    split_host_port,
)
from piko.server.admin import AdminRoutes, LocalNode
from piko.server.registry import UpstreamRegistry

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
DEPLOY = ROOT / "deploy"

#: The environment that ``--config.expand-env`` examples are expanded with:
#: what the Kubernetes downward API, systemd's EnvironmentFile or an operator
#: would provide.  A ``${VAR}`` without a default that is not here fails.
ENVIRON = {
    "POD_NAME": "piko-0",
    "POD_IP": "10.0.0.7",
    "HOSTNAME": "piko-1",
    "PIKO_URL": "https://piko.example.com:8001",
    "PIKO_TOKEN": "eyJhbGciOiJIUzI1NiJ9.e30.c2lnbmF0dXJl",
    "PIKO_PROXY_HMAC_KEY": "not-a-real-secret",
}

_PROGRAMS: dict[str, CommandSpec] = {
    "server": SERVER_COMMAND,
    "agent": AGENT_COMMAND,
    "forward": FORWARD_COMMAND,
}

_MARKER = re.compile(r"\A#\s*piko\s+(server|agent|forward)\b(.*)$", re.MULTILINE)
_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:[^}]*)?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def load_example(
    text: str,
    source: str,
    extra_args: Sequence[str] = (),
    environ: Mapping[str, str] = ENVIRON,
) -> Any:
    """
    Load a marked example through its program's flags, loader and validation.

    :param extra_args: flags the example is run with besides its marker's
        (a Kubernetes container's ``args``, a unit's ``ExecStart``).
    :raises ConfigError: the example does not load or validate.
    :raises ValueError: the example has no marker, or uses ``$`` without
        ``--config.expand-env``, or a variable ``environ`` lacks.
    """
    match = _MARKER.match(text)
    if match is None:
        raise ValueError(f"{source}: first line must be '# piko server|agent|forward ...'")
    root = _PROGRAMS[match.group(1)]
    marked = resolve_command(root, shlex.split(match.group(2)))
    # The real command line wins; ours comes last so that --config.path is ``source``.
    args = [*(extra_args or shlex.split(match.group(2))), "--config.path", source]
    invocation = resolve_command(root, args)
    if invocation.names != marked.names or bool(
        invocation.parsed.values.get("config.expand-env")
    ) != bool(marked.parsed.values.get("config.expand-env")):
        raise ValueError(f"{source}: the first line does not say how the file is loaded")
    program = match.group(1)
    values = invocation.parsed.values
    if values.get("config.expand-env"):
        for name, default, bare in _REFERENCE.findall(_strip_comments(text)):
            if not default and (name or bare) not in environ:
                raise ValueError(f"{source}: ${{{name or bare}}} is not in the test environment")
    elif _REFERENCE.search(_strip_comments(text)):
        # A variable reference, not any ``$``: a bcrypt hash (``$2b$10$...``) is a literal.
        raise ValueError(f"{source}: uses $ but is not loaded with --config.expand-env")

    def read(path: str) -> str:
        return text

    if program == "server":
        config = build_server_config(values, environ, read)
        # What the service checks when it starts: auth that is set must be usable.
        for port in ("proxy", "upstream", "admin"):
            load_port_authenticator(config, port, Clock(), http_client=object())
        return config
    command = invocation.names[-1] if invocation.names else ""
    build: Callable[..., Any] = build_agent_config if program == "agent" else build_forward_config
    return build(command, invocation.parsed.positionals, values, environ, read)


def _strip_comments(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))


def _yaml_files() -> Iterator[Path]:
    for top in (DOCS, DEPLOY):
        for path in sorted(top.rglob("*")):
            if path.suffix in (".yaml", ".yml") and "_build" not in path.parts:
                yield path


def _is_kubernetes(text: str) -> bool:
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError:
        return False
    return bool(documents) and all(
        isinstance(d, dict) and "apiVersion" in d and "kind" in d for d in documents
    )


def _markdown_yaml_blocks() -> Iterator[tuple[str, str]]:
    fence = re.compile(r"^```ya?ml\s*\n(.*?)^```", re.MULTILINE | re.DOTALL)
    for page in sorted(DOCS.rglob("*.md")):
        if "_build" in page.parts:
            continue
        for i, block in enumerate(fence.findall(page.read_text(encoding="utf-8"))):
            yield f"{page.relative_to(ROOT)}[yaml block {i}]", block


def _documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]


def _one(documents: Sequence[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [d for d in documents if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def _port(addr: str) -> int:
    return int(split_host_port(addr)[1])


class ExampleConfigTests(SynchronousTestCase):
    """
    The YAML examples of the docs and deploy folders.
    """

    def test_every_yaml_file_is_a_valid_config_or_manifest(self) -> None:
        """Each YAML file in docs/ and deploy/ is a marked config that validates, or a manifest."""
        configs = manifests = 0
        for path in _yaml_files():
            text = path.read_text(encoding="utf-8")
            source = str(path.relative_to(ROOT))
            if _MARKER.match(text):
                try:
                    load_example(text, source)
                except (ConfigError, ValueError) as e:
                    self.fail(f"{source}: {e}")
                configs += 1
            elif _is_kubernetes(text):
                manifests += 1
            else:
                self.fail(f"{source}: neither a marked Piko config nor a Kubernetes manifest")
        self.assertGreaterEqual(configs, 8)
        self.assertGreaterEqual(manifests, 1)

    def test_markdown_yaml_blocks_are_valid_configs(self) -> None:
        """Every YAML block written inline in a docs page is a marked config that validates."""
        for source, block in _markdown_yaml_blocks():
            try:
                load_example(block, source)
            except (ConfigError, ValueError) as e:
                self.fail(f"{source}: {e}")

    def test_configmap_entries_are_valid_configs(self) -> None:
        """Every YAML entry of every ConfigMap in deploy/ is a marked config that validates."""
        count = 0
        for path in DEPLOY.rglob("*.yaml"):
            text = path.read_text(encoding="utf-8")
            if not _is_kubernetes(text):
                continue
            for document in _documents(path):
                if document["kind"] != "ConfigMap":
                    continue
                for key, value in document.get("data", {}).items():
                    if key.endswith((".yaml", ".yml")):
                        load_example(value, f"{path.name}:{key}")
                        count += 1
        self.assertGreaterEqual(count, 1)

    def test_checker_rejects_a_bad_example(self) -> None:
        """The checker itself fails an unknown key, a missing marker and a $ without expansion."""
        self.assertRaises(ConfigError, load_example, "# piko server\nproxy:\n  nope: 1\n", "x")
        self.assertRaises(ValueError, load_example, "proxy:\n  bind_addr: :8000\n", "x")
        self.assertRaises(ValueError, load_example, "# piko server\nlog:\n  level: $L\n", "x")
        unset = "# piko server --config.expand-env\nlog: {level: $NOPE}\n"
        self.assertRaises(ValueError, load_example, unset, "x")
        self.assertRaises(ConfigError, load_example, "# piko agent start\n", "x")


class KubernetesTests(SynchronousTestCase):
    """
    ``deploy/kubernetes/piko.yaml`` runs the server it configures.
    """

    def setUp(self) -> None:
        self.documents = _documents(DEPLOY / "kubernetes" / "piko.yaml")
        self.statefulset = _one(self.documents, "StatefulSet")
        self.pod = self.statefulset["spec"]["template"]
        (self.container,) = self.pod["spec"]["containers"]
        self.config = self._server_config()

    def _server_config(self) -> ServerConfig:
        """The configuration the container starts with, from its args, mounts and env."""
        args = self.container["args"]
        invocation = resolve_command(SERVER_COMMAND, args)
        path = invocation.parsed.values["config.path"]
        mounts = {m["name"]: m["mountPath"] for m in self.container["volumeMounts"]}
        files = {}
        for volume in self.pod["spec"]["volumes"]:
            if "configMap" not in volume:
                continue
            configmap = next(
                d
                for d in self.documents
                if d["kind"] == "ConfigMap" and d["metadata"]["name"] == volume["configMap"]["name"]
            )
            for key, value in configmap["data"].items():
                files[f"{mounts[volume['name']]}/{key}"] = value
        self.assertIn(path, files, "--config.path is not a mounted ConfigMap entry")
        # Only the variables the pod defines are in its environment.
        environ = {}
        for env in self.container.get("env", []):
            self.assertIn(env["name"], ENVIRON)
            environ[env["name"]] = ENVIRON[env["name"]]
        config = load_example(files[path], path, args, environ)
        assert isinstance(config, ServerConfig)
        return config

    def test_node_id_from_pod_name(self) -> None:
        """The node id is generated from the pod's name, through --config.expand-env."""
        self.assertEqual(self.config.cluster.node_id, "piko-0")
        self.assertEqual(self.config.admin.advertise_addr, "10.0.0.7:8002")

    def test_probes_on_admin_routes_that_exist(self) -> None:
        """Readiness is /ready and liveness /health on the admin port, and both routes answer."""
        ports = {p["name"]: p["containerPort"] for p in self.container["ports"]}
        admin_port = _port(self.config.admin.bind_addr)
        routes = AdminRoutes(LocalNode("n", "", ""), UpstreamRegistry(), lambda: True)
        scheme = "HTTPS" if self.config.admin.tls.enabled() else "HTTP"
        for probe, path in (("readinessProbe", "/ready"), ("livenessProbe", "/health")):
            get = self.container[probe]["httpGet"]
            self.assertEqual(get["path"], path)
            self.assertEqual(ports.get(get["port"], get["port"]), admin_port)
            self.assertEqual(get.get("scheme", "HTTP"), scheme)
            self.assertEqual(routes.handle(b"GET", path.encode()).status, 200)
        self.assertFalse(
            self.config.admin.auth.enabled(), "admin auth would make the probes fail (no token)"
        )

    def test_container_ports_match_config(self) -> None:
        """The named container ports are the ports the configuration binds."""
        ports = {p["name"]: p["containerPort"] for p in self.container["ports"]}
        self.assertEqual(ports["proxy"], _port(self.config.proxy.bind_addr))
        self.assertEqual(ports["upstream"], _port(self.config.upstream.bind_addr))
        self.assertEqual(ports["admin"], _port(self.config.admin.bind_addr))
        self.assertEqual(ports["gossip-tcp"], _port(self.config.cluster.gossip.bind_addr))
        self.assertEqual(ports["gossip-udp"], _port(self.config.cluster.gossip.bind_addr))

    def test_grace_period_within_termination_grace(self) -> None:
        """Kubernetes waits longer than the server's drain before it kills the pod."""
        termination = self.pod["spec"]["terminationGracePeriodSeconds"]
        self.assertIn("--grace-period=50s", self.container["args"])
        self.assertEqual(self.config.grace_period, 50.0)
        self.assertGreater(termination, self.config.grace_period)

    def test_headless_service_for_join(self) -> None:
        """The StatefulSet's headless Service lists unready pods and is what cluster.join names."""
        name = self.statefulset["spec"]["serviceName"]
        services = {d["metadata"]["name"]: d for d in self.documents if d["kind"] == "Service"}
        headless = services[name]["spec"]
        self.assertEqual(headless["clusterIP"], "None")
        self.assertTrue(headless["publishNotReadyAddresses"])
        self.assertIn(name, self.config.cluster.join)
        gossip = _port(self.config.cluster.gossip.bind_addr)
        protocols = {p["protocol"] for p in headless["ports"] if p["port"] == gossip}
        self.assertEqual(protocols, {"TCP", "UDP"})

    def test_selectors_match_pods(self) -> None:
        """Every Service and the PodDisruptionBudget select the StatefulSet's pods."""
        labels = self.pod["metadata"]["labels"]
        selectors = [d["spec"]["selector"] for d in self.documents if d["kind"] == "Service"]
        pdb = _one(self.documents, "PodDisruptionBudget")
        selectors.append(pdb["spec"]["selector"]["matchLabels"])
        selectors.append(self.statefulset["spec"]["selector"]["matchLabels"])
        for selector in selectors:
            self.assertLessEqual(selector.items(), labels.items())
        self.assertEqual(pdb["spec"]["maxUnavailable"], 1)


class DockerfileTests(SynchronousTestCase):
    """
    ``deploy/Dockerfile`` runs ``twistd -n --pidfile= --reactor=piko-epoll piko-server``
    with a valid default config.
    """

    def test_entrypoint_and_default_config(self) -> None:
        """ENTRYPOINT is twistd in the foreground without a pidfile; CMD loads the copied config."""
        text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
        instructions = dict(re.findall(r"^(ENTRYPOINT|CMD|FROM) (.*)$", text, re.MULTILINE))
        self.assertEqual(instructions["FROM"], "python:3.11-slim")
        self.assertEqual(
            json.loads(instructions["ENTRYPOINT"]),
            ["twistd", "-n", "--pidfile=", "--reactor=piko-epoll", "piko-server"],
        )
        args = json.loads(instructions["CMD"])
        path = resolve_command(SERVER_COMMAND, args).parsed.values["config.path"]
        copies = dict(
            (dest, src) for src, dest in re.findall(r"^COPY (\S+) (\S+)$", text, re.MULTILINE)
        )
        source = (ROOT / copies[path]).read_text(encoding="utf-8")
        load_example(source, path, args)


class SystemdTests(SynchronousTestCase):
    """
    The systemd units start twistd with flags and configs that validate.
    """

    def _unit(self, name: str) -> dict[str, str]:
        text = (DEPLOY / "systemd" / name).read_text(encoding="utf-8")
        return dict(re.findall(r"^(\w+)=(.*)$", text, re.MULTILINE))

    def _check(self, unit_name: str, plugin: str) -> None:
        unit = self._unit(unit_name)
        argv = shlex.split(unit["ExecStart"])
        self.assertEqual(argv[1:5], ["-n", "--pidfile=", "--reactor=piko-epoll", plugin])
        args = argv[5:]
        program = plugin.removeprefix("piko-")
        invocation = resolve_command(_PROGRAMS[program], args)
        path = invocation.parsed.values["config.path"]
        source = (DEPLOY / "systemd" / Path(path).name).read_text(encoding="utf-8")
        config = load_example(source, path, args)
        self.assertGreater(int(unit["TimeoutStopSec"]), config.grace_period)

    def test_server_unit(self) -> None:
        """piko-server.service runs piko-server on server.yaml; stops within its timeout."""
        self._check("piko-server.service", "piko-server")

    def test_agent_unit(self) -> None:
        """piko-agent.service runs piko-agent start on agent.yaml; stops within its timeout."""
        self._check("piko-agent.service", "piko-agent")

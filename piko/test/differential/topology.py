"""
Topology launchers: real ``piko`` processes, ours (``sys.executable -m
piko``) and Go's (the v0.9.0 binary), on free 127.0.0.1 ports, each stopped
by its handle.

A topology is one or two server nodes, an HTTP agent and a TCP agent
connected to the first node, and a ``piko forward`` connected to the last;
clients enter at the last node, so in a cluster every request crosses the
node without the upstream first.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import piko
from piko.test.differential.spec import HTTP_ENDPOINT, TCP_ENDPOINT
from piko.test.interop import go_piko_binary

REPO_ROOT = Path(piko.__file__).resolve().parents[1]
START_BOUND = 30.0


def go_binary() -> Path | None:
    """The Go Piko v0.9.0 binary (:func:`piko.test.interop.go_piko_binary`)."""
    return go_piko_binary()


def free_port() -> int:
    """A port free on 127.0.0.1 for both TCP and UDP (gossip listens on both)."""
    for _ in range(50):
        with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            tcp.bind(("127.0.0.1", 0))
            port = tcp.getsockname()[1]
            try:
                udp.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port pair found")


@dataclass(frozen=True)
class TopologySpec:
    """What runs where: implementations of the nodes (first holds the agents), agents, forward."""

    name: str
    servers: tuple[str, ...]
    agent: str
    forward: str
    reference: str

    @property
    def impls(self) -> set[str]:
        return {*self.servers, self.agent, self.forward}


TOPOLOGIES: dict[str, TopologySpec] = {
    t.name: t
    for t in (
        TopologySpec("go", ("go",), "go", "go", "go"),
        # A second all-Go instance judged against the first: what differs here is
        # Go's own nondeterminism, and the oracle must not count it (calibration).
        TopologySpec("go-twin", ("go",), "go", "go", "go"),
        TopologySpec("go-server+ours-agent", ("go",), "ours", "ours", "go"),
        TopologySpec("ours-server+go-agent", ("ours",), "go", "go", "go"),
        TopologySpec("ours", ("ours",), "ours", "ours", "go"),
        TopologySpec("go-cluster", ("go", "go"), "go", "go", "go-cluster"),
        TopologySpec("go-cluster-twin", ("go", "go"), "go", "go", "go-cluster"),
        TopologySpec("ours-cluster", ("ours", "ours"), "ours", "ours", "go-cluster"),
        TopologySpec("mixed-cluster", ("go", "ours"), "go", "ours", "go-cluster"),
        TopologySpec("mixed-cluster-rev", ("ours", "go"), "ours", "go", "go-cluster"),
    )
}


class Process:
    """One child process, its output in a log file, stopped by handle."""

    def __init__(self, name: str, argv: list[str], logdir: Path) -> None:
        self.name = name
        self.argv = argv
        self.log = logdir / f"{name}.log"
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO_ROOT) + (
            os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
        )
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                preexec_fn=_die_with_parent,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        self.terminate()
        self.reap(time.monotonic() + 5)

    def terminate(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()

    def reap(self, deadline: float) -> None:
        """Wait for the exit until ``deadline`` (``time.monotonic``), then kill."""
        try:
            self.proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def rss(self) -> int:
        """Resident set size in bytes, from /proc."""
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def tail(self, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""


def _die_with_parent() -> None:
    """In the child: SIGTERM when the harness dies, so no process outlives a killed run."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _command(impl: str) -> list[str]:
    if impl == "go":
        binary = go_binary()
        if binary is None:
            raise RuntimeError("the Go Piko binary is absent")
        return [str(binary)]
    return [sys.executable, "-m", "piko"]


@dataclass
class Node:
    impl: str
    proxy: int
    upstream: int
    admin: int
    gossip: int
    process: Process | None = None


@dataclass
class Topology:
    """A running topology; ``start`` launches it, ``stop`` ends every process it started."""

    spec: TopologySpec
    http_service_port: int
    tcp_service_port: int
    logdir: Path
    nodes: list[Node] = field(default_factory=list)
    agents: dict[str, Process] = field(default_factory=dict)
    forward: Process | None = None
    forward_port: int = 0
    restarts: int = 0

    @property
    def entry_port(self) -> int:
        return self.nodes[-1].proxy

    def processes(self) -> list[Process]:
        out = [n.process for n in self.nodes if n.process is not None]
        out += list(self.agents.values())
        if self.forward is not None:
            out.append(self.forward)
        return out

    async def start(self) -> None:
        for i, impl in enumerate(self.spec.servers):
            node = Node(impl, free_port(), free_port(), free_port(), free_port())
            argv = [
                *_command(impl),
                "server",
                "--proxy.bind-addr",
                f"127.0.0.1:{node.proxy}",
                "--upstream.bind-addr",
                f"127.0.0.1:{node.upstream}",
                "--admin.bind-addr",
                f"127.0.0.1:{node.admin}",
                "--cluster.gossip.bind-addr",
                f"127.0.0.1:{node.gossip}",
                "--cluster.node-id",
                f"diff-{i}-{impl}",
            ]
            if self.nodes:
                argv += ["--cluster.join", f"127.0.0.1:{self.nodes[0].gossip}"]
            node.process = Process(f"{self.spec.name}.node{i}.{impl}", argv, self.logdir)
            self.nodes.append(node)
            await self._wait(
                lambda node=node: isinstance(
                    _admin_json(node.admin, "/status/upstream/endpoints"), dict
                )
            )
        self.start_agents()
        self.forward_port = free_port()
        self.forward = Process(
            f"{self.spec.name}.forward.{self.spec.forward}",
            [
                *_command(self.spec.forward),
                "forward",
                "tcp",
                f"127.0.0.1:{self.forward_port}",
                TCP_ENDPOINT,
                "--connect.url",
                f"http://127.0.0.1:{self.entry_port}",
            ],
            self.logdir,
        )
        await self.wait_ready()

    def start_agents(self) -> None:
        self.start_agent("http")
        self.start_agent("tcp")

    def start_agent(self, kind: str) -> None:
        endpoint, port = {
            "http": (HTTP_ENDPOINT, self.http_service_port),
            "tcp": (TCP_ENDPOINT, self.tcp_service_port),
        }[kind]
        self.agents[kind] = Process(
            f"{self.spec.name}.agent-{kind}.{self.spec.agent}.{self.restarts}",
            [
                *_command(self.spec.agent),
                "agent",
                kind,
                endpoint,
                f"127.0.0.1:{port}",
                "--connect.url",
                f"http://127.0.0.1:{self.nodes[0].upstream}",
                *(["--inspect=false"] if self.spec.agent != "go" else []),
            ],
            self.logdir,
        )

    async def restart_http_agent(self) -> None:
        """Replace the HTTP agent by a fresh one: its pool to the local service is cold."""
        self.agents.pop("http").stop()
        await self._wait(lambda: self._endpoint_count(HTTP_ENDPOINT) == 0)
        self.restarts += 1
        self.start_agent("http")
        await self.wait_ready()

    def _endpoint_count(self, endpoint: str) -> int:
        counts = _admin_json(self.nodes[0].admin, "/status/upstream/endpoints")
        return int(counts.get(endpoint, 0)) if isinstance(counts, dict) else 0

    async def wait_ready(self) -> None:
        """Until both endpoints are registered and reachable through the entry node."""
        await self._wait(
            lambda: (
                self._endpoint_count(HTTP_ENDPOINT) == 1 and self._endpoint_count(TCP_ENDPOINT) == 1
            )
        )
        if len(self.nodes) > 1:
            await self._wait_async(self._probe_http)
        await self._wait_async(self._probe_tcp)

    async def _probe_http(self) -> bool:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.entry_port)
        try:
            writer.write(
                f"GET /probe HTTP/1.1\r\nHost: probe\r\nx-piko-endpoint: {HTTP_ENDPOINT}\r\n"
                "Connection: close\r\n\r\n".encode()
            )
            data = await asyncio.wait_for(reader.read(), 5)
            return data.startswith(b"HTTP/1.1 200")
        finally:
            writer.transport.abort()

    async def _probe_tcp(self) -> bool:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.forward_port)
        try:
            writer.write(b"probe\n")
            return await asyncio.wait_for(reader.readexactly(6), 5) == b"probe\n"
        finally:
            writer.transport.abort()

    async def _wait(self, check: object) -> None:
        async def run() -> bool:
            return bool(check())  # type: ignore[operator]

        await self._wait_async(run)

    async def _wait_async(self, check: object) -> None:
        deadline = time.monotonic() + START_BOUND
        delay = 0.02
        last: object = None
        while time.monotonic() < deadline:
            for process in self.processes():
                if not process.alive():
                    raise RuntimeError(f"{process.name} exited:\n{process.tail()}")
            try:
                if await check():  # type: ignore[operator]
                    return
            except (OSError, ValueError, asyncio.IncompleteReadError, TimeoutError) as e:
                last = e
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 0.25)
        tails = "\n".join(f"--- {p.name}\n{p.tail()}" for p in self.processes())
        raise RuntimeError(f"{self.spec.name}: not ready within {START_BOUND}s ({last!r})\n{tails}")

    def stop(self) -> None:
        stop_all(self.processes())


def stop_all(processes: list[Process]) -> None:
    """Terminate every process at once, then reap each, killing any still up after 5 s."""
    for process in processes:
        process.terminate()
    deadline = time.monotonic() + 5
    for process in processes:
        process.reap(deadline)


def _admin_json(port: int, path: str) -> object:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
        return json.loads(response.read())

# -*- test-case-name: piko.test.e2e.test_workers -*-
"""
``piko server --workers N``: N server processes sharing the listening ports.

One Python process uses one core.  With ``--workers N`` (0: one per CPU) the
parent process binds the proxy, upstream and admin sockets once and starts N
worker processes (``python -m piko.server.workers``) that inherit them.  Each
worker is a whole :class:`~piko.server.service.PikoServerService` and a
cluster node of its own:

* node id ``<node-id>-w<i>``;
* gossip on the configured gossip port + ``i`` (free ports when it is 0),
  every worker joining worker 0 as well as ``cluster.join``;
* the shared sockets adopted next to private proxy, upstream and admin ports
  on the configured hosts with port 0.  Those private ports are what the
  worker advertises (configured advertise addresses do not apply), so a
  request that lands on a worker without the endpoint's upstream is forwarded
  once, to the worker that has it, as between any two nodes.

The kernel spreads accepted connections of a shared socket over the workers.
The parent only supervises: SIGTERM or SIGINT is passed on to every worker and
the parent waits for them (``grace_period`` plus a margin, then SIGKILL).  If a
worker exits on its own the others are stopped too and the parent exits 1.
Bind addresses must be ``host:port`` forms, not Twisted endpoint strings.
"""

from __future__ import annotations

import os
import pickle
import signal
import socket
import subprocess
import sys
from types import FrameType
from typing import IO, Any

from attrs import evolve

from piko.config import ServerConfig, is_endpoint_description, join_host_port, split_host_port

#: Seconds on top of ``grace_period`` before workers still running are killed.
KILL_MARGIN = 10

#: The shared listening ports, in the order a node starts them.
SHARED = ("admin", "upstream", "proxy")


def bind_shared(bind_addr: str) -> socket.socket:
    """
    Bind and listen on a Go-style ``host:port``, inheritable by child processes.

    :raises ValueError: for a Twisted endpoint string or an invalid port.
    :raises OSError: when the address cannot be bound.
    """
    if is_endpoint_description(bind_addr):
        raise ValueError(f"{bind_addr}: --workers needs a host:port bind address")
    host, port = split_host_port(bind_addr)
    if not (port.isascii() and port.isdigit()):
        raise ValueError(f"address {bind_addr}: invalid port {port!r}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host or "0.0.0.0", int(port)))
        sock.listen(socket.SOMAXCONN)
    except OSError:
        sock.close()
        raise
    # Non-blocking in the open file description every worker shares: a worker's
    # reactor accepts until EAGAIN, and a blocking accept would stall it.
    sock.setblocking(False)
    sock.set_inheritable(True)
    return sock


def gossip_addrs(bind_addr: str, count: int) -> list[str]:
    """The gossip bind address of each worker: the configured port + i, or free ports."""
    host, port = split_host_port(bind_addr)
    base = int(port)
    if base:
        return [join_host_port(host, str(base + i)) for i in range(count)]
    addrs = []
    probes = []
    for _ in range(count):
        # Held until all are picked so that they differ; the worker binds it again.
        probe = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        probe.bind((host or "127.0.0.1", 0))
        probes.append(probe)
        addrs.append(join_host_port(host, str(probe.getsockname()[1])))
    for probe in probes:
        probe.close()
    return addrs


def _reachable(addr: str) -> str:
    host, port = split_host_port(addr)
    return join_host_port(host or "127.0.0.1", port)


def _private(bind_addr: str) -> str:
    host, _ = split_host_port(bind_addr)
    return join_host_port(host, "0")


def worker_config(config: ServerConfig, index: int, gossip: list[str]) -> ServerConfig:
    """Worker ``index``'s configuration (see the module docstring)."""
    cluster = config.cluster
    join = cluster.join + ((_reachable(gossip[0]),) if index else ())
    return evolve(
        config,
        workers=1,
        proxy=evolve(config.proxy, bind_addr=_private(config.proxy.bind_addr), advertise_addr=""),
        upstream=evolve(
            config.upstream, bind_addr=_private(config.upstream.bind_addr), advertise_addr=""
        ),
        admin=evolve(config.admin, bind_addr=_private(config.admin.bind_addr), advertise_addr=""),
        cluster=evolve(
            cluster,
            node_id=f"{cluster.node_id}-w{index}",
            join=join,
            gossip=evolve(cluster.gossip, bind_addr=gossip[index], advertise_addr=""),
        ),
    )


def run_workers(config: ServerConfig, stderr: IO[str]) -> int:
    """Bind the shared ports, run the workers until a signal; the program's exit status."""
    count = config.workers or os.cpu_count() or 1
    sockets: dict[str, socket.socket] = {}
    try:
        for name in SHARED:
            sockets[name] = bind_shared(getattr(config, name).bind_addr)
        gossip = gossip_addrs(config.cluster.gossip.bind_addr, count)
    except (OSError, ValueError) as error:
        stderr.write(f"piko server: {error}\n")
        for sock in sockets.values():
            sock.close()
        return 1
    shared = {name: (sock.fileno(), int(sock.family)) for name, sock in sockets.items()}
    fds = tuple(fd for fd, _ in shared.values())
    workers: dict[int, subprocess.Popen[bytes]] = {}
    stopping: list[int] = []

    def stop(signum: int, frame: FrameType | None = None) -> None:
        if not stopping:
            signal.alarm(int(config.grace_period) + KILL_MARGIN)
        stopping.append(signum)
        for worker in workers.values():
            if worker.returncode is None:
                worker.send_signal(signal.SIGTERM)

    def kill(signum: int, frame: FrameType | None) -> None:
        for worker in workers.values():
            if worker.returncode is None:
                worker.kill()

    signal.signal(signal.SIGALRM, kill)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for index in range(count):
        worker = subprocess.Popen(
            [sys.executable, "-m", "piko.server.workers"],
            stdin=subprocess.PIPE,
            pass_fds=fds,
            # Its own session: a terminal's Ctrl-C reaches the parent only, which passes it on.
            start_new_session=True,
        )
        assert worker.stdin is not None
        worker.stdin.write(pickle.dumps((worker_config(config, index, gossip), shared)))
        worker.stdin.close()
        workers[worker.pid] = worker
    for sock in sockets.values():
        sock.close()
    status = 0
    while any(worker.returncode is None for worker in workers.values()):
        pid, wait_status = os.wait()
        worker = workers[pid]
        worker.returncode = os.waitstatus_to_exitcode(wait_status)
        if worker.returncode != 0:
            status = 1
        if not stopping:
            stderr.write(f"piko server: worker {pid} exited ({worker.returncode})\n")
            status = 1
            stop(signal.SIGTERM)
    signal.alarm(0)
    return status


def worker_main(stdin: IO[bytes]) -> int:
    """One worker: its configuration and shared sockets come pickled on ``stdin``."""
    config: ServerConfig
    shared: dict[str, tuple[int, int]]
    config, shared = pickle.load(stdin)
    from piko.run import run_service
    from piko.server.service import PikoServerService

    def factory(config: ServerConfig, reactor: Any) -> PikoServerService:
        return PikoServerService(
            config, reactor, stop_reactor_on_failure=True, shared_sockets=shared
        )

    return run_service("server", config, config.log, sys.stderr, factory)


if __name__ == "__main__":
    raise SystemExit(worker_main(sys.stdin.buffer))

# -*- test-case-name: piko.test.test_cli -*-
"""
The ``piko`` console script, mirroring Go Piko's command tree.

``piko server``, ``piko agent start|http|tcp`` and ``piko forward start|tcp``
build the same configuration and service as the twistd plugins and run it
under the reactor, logging to stderr; ``piko server status ...`` queries the
admin port with treq and prints YAML like Go.  Errors are printed on stderr
in Go's words and give exit status 1.

This module, :mod:`piko.run` and ``piko._tap_*`` are the only places that import the global
reactor, always inside functions.
"""

from __future__ import annotations

import json
import posixpath
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import yaml
from twisted.internet.defer import Deferred, maybeDeferred

import piko
from piko.config import (
    AGENT_COMMAND,
    CLUSTER_CERTS_OPTIONS,
    CLUSTER_COMMAND,
    CLUSTER_NODES_OPTIONS,
    FORWARD_COMMAND,
    SERVER_COMMAND,
    STATUS_OPTIONS,
    CommandSpec,
    ConfigError,
    FlagError,
    Invocation,
    StatusConfig,
    apply_values,
    build_agent_config,
    build_forward_config,
    build_server_config,
    format_help,
    resolve_command,
)
from piko.run import run_service

if TYPE_CHECKING:
    pass

__all__ = ["PIKO_COMMAND", "main"]

PIKO_COMMAND = CommandSpec(
    "piko",
    summary="Piko is a reverse proxy for services without a public route (tunnelling).",
    runnable=False,
    children=(SERVER_COMMAND, AGENT_COMMAND, FORWARD_COMMAND, CLUSTER_COMMAND),
)

_STATUS_TIMEOUT = 15.0


#: The file ``piko server`` reloads its traffic policies from (set by :func:`_dispatch`).
_POLICY_SOURCE: list[Any] = []


def _policy_source(values: Mapping[str, Any]) -> Any:
    """``--config.path`` and ``--config.expand-env``, for reloading the traffic policies."""
    from piko.config import LOAD_OPTIONS, LoadConfig, apply_values

    return apply_values(LoadConfig(), LOAD_OPTIONS, values)


def _watch_policies(service: Any, reactor: Any) -> None:
    """Reload the server's traffic policies on ``SIGHUP`` (see :mod:`piko.policy.reload`)."""
    reloader = getattr(service, "policy_reloader", None)
    if reloader is None or not _POLICY_SOURCE:
        return
    reloader.source = _POLICY_SOURCE[0]
    reloader.on_sighup(reactor)


def _http_get(reactor: Any, url: str, headers: Mapping[str, str]) -> Deferred[tuple[int, bytes]]:
    """
    GET ``url`` with treq and return ``(status, body)`` (tests replace this).
    """
    import treq
    from twisted.web.http_headers import Headers

    async def get() -> tuple[int, bytes]:
        response = await treq.get(
            url,
            headers=Headers({k: [v] for k, v in headers.items()}),
            timeout=_STATUS_TIMEOUT,
            reactor=reactor,
        )
        body = await treq.content(response)
        return response.code, body

    return Deferred.fromCoroutine(get())


def _react(run: Callable[[Any], Deferred[int]]) -> int:
    """
    Run ``run(reactor)`` under the global reactor and return its exit code
    (tests replace this).
    """
    from twisted.internet import reactor
    from twisted.python.failure import Failure

    outcome: list[Any] = []

    def go() -> None:
        d = maybeDeferred(run, reactor)

        def done(result: object) -> None:
            outcome.append(result)
            reactor.stop()

        d.addBoth(done)

    reactor.callWhenRunning(go)
    reactor.run()
    if not outcome or isinstance(outcome[0], Failure):
        if outcome:
            outcome[0].printTraceback(file=sys.stderr)
        return 1
    return int(outcome[0])


def _status_url(base: str, path: str, forward: str) -> str:
    parts = urlsplit(base)
    query = f"forward={forward}" if forward else parts.query
    return urlunsplit(
        (parts.scheme, parts.netloc, posixpath.join(parts.path or "/", path.lstrip("/")), query, "")
    )


def _dump(data: object) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True)


def _status(invocation: Invocation, out: IO[str], err: IO[str]) -> int:
    words = invocation.names[2:]
    values = invocation.parsed.values
    config = apply_values(StatusConfig(), STATUS_OPTIONS, values)
    config = apply_values(config, CLUSTER_NODES_OPTIONS, values)
    if not config.server.url:
        err.write("config: server: missing url\n")
        return 1
    args = invocation.parsed.positionals
    if words == ("upstream", "endpoints"):
        path, what = "/status/upstream/endpoints", "failed to get upstream endpoints"
    elif words == ("cluster", "nodes"):
        path, what = "/status/cluster/nodes", "failed to get cluster nodes"
    elif words == ("cluster", "node"):
        path, what = f"/status/cluster/nodes/{args[0]}", f"failed to get cluster nodes: {args[0]}"
    elif words == ("gossip", "nodes"):
        path, what = "/status/gossip/nodes", "failed to get gossip nodes"
    elif words == ("gossip", "node"):
        path, what = f"/status/gossip/nodes/{args[0]}", f"failed to get gossip node: {args[0]}"
    else:  # pragma: no cover - the command tree only has the above
        raise AssertionError(words)
    url = _status_url(config.server.url, path, config.forward)
    headers = {"Authorization": f"Bearer {config.server.token}"} if config.server.token else {}

    async def run(reactor: Any) -> int:
        try:
            code, body = await _http_get(reactor, url, headers)
        except Exception as e:
            err.write(f"{what}: request: {e}\n")
            return 1
        if code != 200:
            err.write(f"{what}: request: bad status: {code}\n")
            return 1
        try:
            data = json.loads(body)
        except ValueError as e:
            err.write(f"{what}: decode response: {e}\n")
            return 1
        if words == ("upstream", "endpoints"):
            data = dict(sorted((data or {}).items()))
        elif words[1] == "nodes":
            nodes = [
                n for n in (data or []) if not config.status or n.get("status") == config.status
            ]
            data = {"nodes": sorted(nodes, key=lambda n: str(n.get("id", "")))}
        text = _dump(data)
        # Go prints gossip output with Println (one extra newline).
        out.write(text + ("\n" if words[0] == "gossip" else ""))
        return 0

    return _react(lambda reactor: Deferred.fromCoroutine(run(reactor)))


def _cluster_certs(invocation: Invocation, out: IO[str], err: IO[str]) -> int:
    from piko.cluster.certs import create_cluster_certs
    from piko.config import ClusterCertsConfig

    config = apply_values(ClusterCertsConfig(), CLUSTER_CERTS_OPTIONS, invocation.parsed.values)
    if not config.out:
        err.write("cluster certs: missing --out\n")
        return 1
    if not config.nodes:
        err.write("cluster certs: missing --nodes\n")
        return 1
    try:
        written = create_cluster_certs(config.out, config.nodes, config.hosts)
    except (OSError, ValueError) as e:
        err.write(f"cluster certs: {e}\n")
        return 1
    out.write(f"cluster CA: {written.ca} (key {written.ca_key}: keep it off the nodes)\n")
    for node, (cert, key) in written.nodes.items():
        out.write(
            f"{node}: --cluster.tls.cert {cert} --cluster.tls.key {key} "
            f"--cluster.tls.ca {written.ca}\n"
        )
    return 0


def _dispatch(argv: Sequence[str], out: IO[str], err: IO[str]) -> int:
    try:
        invocation = resolve_command(PIKO_COMMAND, argv, allow_version=True)
    except FlagError as e:
        err.write(f"Error: {e}\n")
        if str(e).startswith("unknown command"):
            # Go's cobra points to the help of the command the word was given to.
            parent = re.search(r'for "([^"]+)"$', str(e))
            err.write(f"Run '{parent.group(1) if parent else 'piko'} --help' for usage.\n")
        return 1
    parsed = invocation.parsed
    if parsed.version:
        out.write(f"piko version {piko.__version__}\n")
        return 0
    if parsed.help or not invocation.command.runnable:
        out.write(format_help(invocation.chain))
        return 0
    names = invocation.names
    try:
        if names == ("cluster", "certs"):
            return _cluster_certs(invocation, out, err)
        if names[:2] == ("server", "status"):
            return _status(invocation, out, err)
        if names == ("server",):
            server = build_server_config(parsed.values)
            if server.workers != 1:
                from piko.server.workers import run_workers

                return run_workers(server, err)
            _POLICY_SOURCE[:] = [_policy_source(parsed.values)]
            return run_service("server", server, server.log, err, prepare=_watch_policies)
        if names[0] == "agent":
            agent = build_agent_config(names[1], parsed.positionals, parsed.values)
            return run_service("agent", agent, agent.log, err)
        if names[0] == "forward":
            forward = build_forward_config(names[1], parsed.positionals, parsed.values)
            return run_service("forward", forward, forward.log, err)
    except ConfigError as e:
        err.write(f"{e}\n")
        return 1
    raise AssertionError(names)  # pragma: no cover


def main(argv: Sequence[str] | None = None) -> int:
    """
    Run the ``piko`` command line.

    :param argv: the arguments after the program name (default ``sys.argv[1:]``).
    :return: the process exit status.
    """
    return _dispatch(sys.argv[1:] if argv is None else list(argv), sys.stdout, sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

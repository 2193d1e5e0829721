"""
A guided first run: a Piko server, an agent and a demo service, and one request through them.

``python -m piko.demo`` starts, in one process and on loopback only:

- a Piko server (proxy ``127.0.0.1:8000``, upstream ``:8001``, admin ``:8002``),
  the same service ``piko server`` / ``twistd -n piko-server`` runs;
- a demo HTTP service on ``127.0.0.1:3000`` that has no public route;
- an agent connecting ``my-endpoint`` to it, the same service
  ``piko agent http my-endpoint 3000`` runs;

then sends one request through the proxy port, prints it, and keeps running
so you can try ``curl -H 'x-piko-endpoint: my-endpoint' localhost:8000/``.
``--once`` stops after the request; ``--base-port`` moves all six ports (the
fifth, base + 4, is the server's gossip port, on loopback too; the sixth, base + 5,
the agent's request inspector, which otherwise takes ``127.0.0.1:4040`` or the next
free port).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from attrs import evolve
from twisted.internet.defer import inlineCallbacks
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
)
from twisted.web import resource, server

from piko.config import AgentConfig, ListenerConfig, ServerConfig


class DemoService(resource.Resource):
    """The service behind Piko: says hello and shows what the proxy added."""

    isLeaf = True

    def render(self, request: Any) -> bytes:
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        forwarded = request.getHeader(b"x-forwarded-for") or b"-"
        return (
            b"Hello from the demo service behind Piko!\n"
            b"You asked for %s %s; X-Forwarded-For: %s\n" % (request.method, request.uri, forwarded)
        )


def _configs(base: int) -> tuple[ServerConfig, AgentConfig]:
    server_config = ServerConfig()
    server_config = evolve(
        server_config,
        proxy=evolve(server_config.proxy, bind_addr=f"127.0.0.1:{base}"),
        upstream=evolve(server_config.upstream, bind_addr=f"127.0.0.1:{base + 1}"),
        admin=evolve(server_config.admin, bind_addr=f"127.0.0.1:{base + 2}"),
        cluster=evolve(
            server_config.cluster,
            node_id="demo",
            gossip=evolve(server_config.cluster.gossip, bind_addr=f"127.0.0.1:{base + 4}"),
        ),
        grace_period=2.0,
    )
    agent_config = AgentConfig()
    agent_config = evolve(
        agent_config,
        connect=evolve(agent_config.connect, url=f"http://127.0.0.1:{base + 1}"),
        listeners=(
            ListenerConfig(endpoint_id="my-endpoint", addr=f"127.0.0.1:{base + 3}", timeout=10.0),
        ),
        grace_period=2.0,
        # The agent's default (4040, or the next free port), unless the ports were moved.
        inspect=evolve(
            agent_config.inspect,
            bind_addr=agent_config.inspect.bind_addr if base == 8000 else f"127.0.0.1:{base + 5}",
        ),
    )
    return server_config, agent_config


@inlineCallbacks
def run(reactor: Any, base: int, once: bool) -> Any:
    """Start everything, send one request through, and report."""
    import treq
    from twisted.web.client import HTTPConnectionPool

    from piko.agent.service import make_agent_service
    from piko.server.service import make_server_service

    server_config, agent_config = _configs(base)
    piko_server = make_server_service(server_config, reactor)
    piko_server.startService()
    yield piko_server.started
    demo_port = yield TCP4ServerEndpoint(reactor, base + 3, interface="127.0.0.1").listen(
        server.Site(DemoService())
    )
    agent = make_agent_service(agent_config, reactor)
    agent.startService()
    yield agent.ready

    url = f"http://127.0.0.1:{base}/hello?from=piko-demo"
    print(f"\n$ curl -H 'x-piko-endpoint: my-endpoint' '{url}'")
    pool = HTTPConnectionPool(reactor, persistent=False)
    headers: dict[bytes | str, bytes | str] = {"x-piko-endpoint": "my-endpoint"}
    response = yield treq.get(url, headers=headers, pool=pool)
    body = yield response.text()
    print(f"HTTP {response.code}\n{body}")
    print(
        "The request went: curl -> proxy port -> yamux stream over the agent's WebSocket\n"
        "-> agent -> demo service, which has no public route of its own.\n"
    )
    if once:
        yield agent.stopService()
        yield demo_port.stopListening()
        yield piko_server.stopService()
        reactor.stop()
        return
    inspector = agent.inspector.url if agent.inspector is not None else "off"
    print(
        f"Running. Try: curl -H 'x-piko-endpoint: my-endpoint' http://127.0.0.1:{base}/\n"
        f"       or: curl http://127.0.0.1:{base + 2}/status/upstream/endpoints\n"
        f"See every request, and replay it, in the inspector: {inspector}\n"
        "Ctrl-C stops."
    )
    reactor.addSystemEventTrigger("before", "shutdown", agent.stopService)
    reactor.addSystemEventTrigger("before", "shutdown", piko_server.stopService)


def main(argv: list[str] | None = None) -> int:
    """Run the demo under the global reactor."""
    from twisted.internet import reactor

    from piko.logging import console_observer

    parser = argparse.ArgumentParser(prog="python -m piko.demo", description=__doc__)
    parser.add_argument("--base-port", type=int, default=8000)
    parser.add_argument("--once", action="store_true", help="exit after the first request")
    args = parser.parse_args(argv)
    predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)
    globalLogBeginner.beginLoggingTo(
        [FilteringLogObserver(console_observer(sys.stderr), [predicate])],
        redirectStandardIO=False,
    )
    status = [0]

    def failed(failure: Any) -> None:
        print(f"demo failed: {failure.getErrorMessage()}", file=sys.stderr)
        status[0] = 1
        if reactor.running:
            reactor.stop()

    reactor.callWhenRunning(lambda: run(reactor, args.base_port, args.once).addErrback(failed))
    reactor.run()
    return status[0]


if __name__ == "__main__":
    raise SystemExit(main())

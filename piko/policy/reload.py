# -*- test-case-name: piko.test.policy.test_reload -*-
"""
Reloading the policies from the configuration file, atomically.

A reload reads the whole file again with the same strict loader as at start
(``--config.expand-env`` included), checks and compiles its ``policies:``,
and only then replaces the handler's :class:`~piko.policy.engine.PolicySet`
with one assignment.  Any error (unreadable file, bad YAML, a bad CIDR or
hash) leaves the policies in force untouched and is reported: logged, counted
in ``piko_policy_reloads_total{result="error"}``, and returned to the admin
route's caller.  Only ``policies:`` is reloaded; other settings need a restart.

Requests in flight keep the policy they were admitted under; the next request
sees the new set.  Rate-limit buckets of a policy whose name and limit did not
change are carried over, so a reload gives nobody a fresh burst.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

from attrs import frozen
from twisted.logger import Logger

from piko.config import ConfigError, LoadConfig, ServerConfig, load_file
from piko.policy.config import compile_policies
from piko.policy.engine import names
from piko.policy.handler import PolicyHandler
from piko.policy.metrics import PolicyMetrics


@frozen
class ReloadResult:
    """
    :ivar ok: whether the new policies are in force.
    :ivar message: what happened (the error, for a refused file).
    :ivar policies: the names of the policies in force afterwards.
    """

    ok: bool
    message: str
    policies: tuple[str, ...]


class PolicyReloader:
    """
    Reloads ``handler``'s policies from the file the server started with.

    :param handler: the proxy port's policy handler.
    :param source: ``--config.path`` and ``--config.expand-env``; no path
        means there is nothing to reload from.
    :param seconds: the rate limits' clock.
    :param read: loads the file onto a :class:`ServerConfig` (tests replace it).
    """

    log = Logger()

    def __init__(
        self,
        handler: PolicyHandler,
        source: LoadConfig,
        seconds: Callable[[], float],
        *,
        metrics: PolicyMetrics | None = None,
        read: Callable[[LoadConfig], ServerConfig] | None = None,
    ) -> None:
        self.handler = handler
        self.source = source
        self.seconds = seconds
        self.metrics = metrics
        self._read = read or _read

    def reload(self) -> ReloadResult:
        """Load and swap in the file's policies, or keep the current ones and say why."""
        current = self.handler.policies
        try:
            if not self.source.path:
                raise ConfigError("no configuration file to reload (--config.path is not set)")
            config = self._read(self.source)
            fresh = compile_policies(config.policies, self.seconds, previous=current)
        except ConfigError as error:
            kept = tuple(names(current.policies))
            self.log.error(
                "policy reload refused; keeping the policies in force",
                error=str(error),
                policies=list(kept),
            )
            self._count("error")
            return ReloadResult(False, str(error), kept)
        self.handler.policies = fresh
        loaded = tuple(names(fresh.policies))
        self.log.info("policies reloaded", policies=list(loaded))
        self._count("ok")
        return ReloadResult(True, f"loaded {len(loaded)} policies", loaded)

    def _count(self, result: str) -> None:
        if self.metrics is not None:
            self.metrics.reloads_total.labels(result=result).inc()

    def on_sighup(self, reactor: Any) -> None:
        """
        Reload on ``SIGHUP`` (the handler only schedules the reload on the reactor).

        Only the CLI and the twistd plugin call this, with the global reactor.
        """

        def handle(signum: int, frame: object) -> None:
            reactor.callFromThread(self.reload)

        signal.signal(signal.SIGHUP, handle)


def _read(source: LoadConfig) -> ServerConfig:
    config: ServerConfig = load_file(ServerConfig(), source.path, source.expand_env)
    return config

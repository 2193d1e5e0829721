# -*- test-case-name: piko.test.http.test_access_log -*-
"""
Go Piko's access log (``pkg/middleware/logger.go``): one ``request`` record per request.

The record carries ``request: {proto, method, host, path, request_headers, response_headers,
status, duration}`` with headers as Go's ``http.Header`` (``{"Canonical-Name": ["v"]}``),
filtered by an allow list or else a block list, and ``duration`` as a Go duration string
(``1.234ms``).  It is emitted at the configured level, raised to at least ``warn`` for a 5xx.
As in Go, ``request_headers`` never has ``Host`` (Go's ``http.Request`` keeps it apart, in
``host``), and header names come sorted, as Go's JSON writes a map.

The event also carries, under :data:`~piko.logging.ACCESS_SUMMARY`, what only the console
line shows: the duration in seconds, the endpoint (the agent's own, or the one the request
names on the server) and the client's address; the JSON record stays Go's.

Unlike Go, credentials never reach a log line whatever the lists say: the values of
``Authorization``, ``Proxy-Authorization``, ``X-Piko-Authorization``, ``Cookie`` and
``Set-Cookie`` are replaced by :data:`REDACTED` (the header names stay, so a reader still sees
that a request was authenticated).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

from attrs import frozen
from twisted.internet.interfaces import IReactorTime
from twisted.logger import ILogObserver, Logger, LogLevel
from zope.interface import implementer

from piko.config import AccessLogConfig, AccessLogHeaderConfig, format_duration
from piko.http.head import canonical_columns, canonical_key, endpoint_id_from_request
from piko.http.observe import ExchangeOutcome, ObservedExchange
from piko.http.server import IRequestHandler, IServerExchange
from piko.logging.observers import ACCESS_SUMMARY

__all__ = [
    "REDACTED",
    "AccessLog",
    "AccessLoggedHandler",
    "HeaderFilter",
    "go_duration",
    "log_level",
]

#: What a credential header's value is logged as.
REDACTED = "[REDACTED]"

#: Headers whose values are secrets (canonical names).
SECRET_HEADERS = frozenset(
    {"Authorization", "Proxy-Authorization", "X-Piko-Authorization", "Cookie", "Set-Cookie"}
)

_LEVELS = {
    "debug": LogLevel.debug,
    "info": LogLevel.info,
    "warn": LogLevel.warn,
    "error": LogLevel.error,
}


def log_level(name: str) -> LogLevel:
    """The :class:`LogLevel` for a Go level name (``info`` when empty or unknown)."""
    return _LEVELS.get(name.lower(), LogLevel.info)


def _canonical(name: str | bytes) -> str:
    raw = name.encode("latin-1") if isinstance(name, str) else name
    return canonical_key(raw).decode("latin-1")


#: Go's ``time.Duration.String()`` (``1.234ms``), for the record's ``duration``.
go_duration = format_duration


def _decode_all(items: list[bytes]) -> list[str]:
    """``[b.decode("latin-1") for b in items]``, in one decode when no item has a line feed."""
    block = b"\n".join(items)
    if block.count(b"\n") != len(items) - 1:
        return [b.decode("latin-1") for b in items]
    return block.decode("latin-1").split("\n")


@frozen
class HeaderFilter:
    """
    Which headers a record carries: only ``allow`` when it is set, else all but ``block``.

    Names are compared in canonical form; secret headers are always redacted.
    """

    allow: frozenset[str] = frozenset()
    block: frozenset[str] = frozenset()

    @classmethod
    def from_config(cls, config: AccessLogHeaderConfig) -> HeaderFilter:
        """The filter of ``access_log.request_headers`` or ``.response_headers``."""
        return cls(
            frozenset(_canonical(n) for n in config.allow_list),
            frozenset(_canonical(n) for n in config.block_list),
        )

    def apply(
        self, headers: Sequence[tuple[bytes, bytes]], *, request: bool = False
    ) -> dict[str, list[str]]:
        """
        Go's ``http.Header`` of ``headers``, filtered, with secrets redacted, names sorted.

        :param request: these are request headers, which never include ``Host`` in Go.
        """
        # Keys and values decoded in bulk, not header by header: a head can carry tens of
        # thousands of headers, and a record is built for every request at ``info``.
        keys, values, clean = canonical_columns(headers)
        names = _decode_all(keys)
        texts = _decode_all(values) if clean else [v.decode("latin-1") for v in values]
        allow, block = self.allow, self.block
        out: dict[str, list[str]] = {}
        for name, value in zip(names, texts, strict=True):
            if allow:
                if name not in allow:
                    continue
            elif name in block:
                continue
            if name in SECRET_HEADERS:
                value = REDACTED
            out.setdefault(name, []).append(value)
        if request:
            out.pop("Host", None)
        return dict(sorted(out.items()))


def _client_ip(transport: object, forwarded: bytes | None) -> str:
    """
    The client's address: the last ``X-Forwarded-For`` hop when ``forwarded`` is given (the
    one the Piko server in front appended), else the transport's peer.
    """
    if forwarded is not None:
        return forwarded.decode("latin-1").rsplit(",", 1)[-1].strip()
    peer = getattr(transport, "getPeer", None)
    host = getattr(peer(), "host", None) if peer is not None else None
    return host if isinstance(host, str) else ""


class AccessLog:
    """
    Emits access log records for one server or listener.

    :param config: the ``access_log`` settings.
    :param namespace: the logger namespace, printed as the record's ``subsystem``
        (``proxy.access`` on the server, ``proxy.http.access`` on the agent).
    :param fields: extra fields on every record (the agent's ``endpoint-id``).
    :param skip_prefix: requests whose path starts with it are not logged (``/_piko``).
    :param observer: where records go (default: the global log publisher).
    :param min_level: the lowest level the program's logging keeps for this
        namespace (``log.level``, unless ``log.subsystems`` names it); records
        below it are not even built, which matters on the hot path.
    :param behind_server: requests come through a Piko server (the agent), so the client is
        the last ``X-Forwarded-For`` hop, not the peer (the console line's ``client-ip``).
    """

    def __init__(
        self,
        config: AccessLogConfig,
        namespace: str,
        *,
        fields: Mapping[str, Any] | None = None,
        skip_prefix: str | None = None,
        observer: ILogObserver | None = None,
        min_level: LogLevel | None = None,
        behind_server: bool = False,
    ) -> None:
        self.behind_server = behind_server
        self.disabled = config.disable
        self.min_level = min_level
        self.level = log_level(config.level)
        self.request_headers = HeaderFilter.from_config(config.request_headers)
        self.response_headers = HeaderFilter.from_config(config.response_headers)
        self.fields = dict(fields or {})
        self.skip_prefix = skip_prefix
        self.log = Logger(namespace=namespace, observer=observer)

    def record(self, outcome: ExchangeOutcome) -> None:
        """Log one answered request (unless disabled or skipped)."""
        if self.disabled:
            return
        level = self.level
        if outcome.status >= 500 and level < LogLevel.warn:
            level = LogLevel.warn
        if self.min_level is not None and level < self.min_level:
            return
        head = outcome.head
        target = head.target.decode("latin-1")
        path = unquote(urlsplit(target).path) if target != "*" else target
        if self.skip_prefix is not None and path.startswith(self.skip_prefix):
            return
        host = head.get(b"host")
        request = {
            "proto": "HTTP/" + head.version.decode("latin-1"),
            "method": head.method.decode("latin-1"),
            "host": host.decode("latin-1") if host is not None else "",
            "path": path,
            "request_headers": self.request_headers.apply(head.headers, request=True),
            "response_headers": self.response_headers.apply(outcome.headers),
            "status": outcome.status,
            "duration": go_duration(outcome.duration),
        }

        def summary() -> dict[str, Any]:
            # Only the console line calls this: the JSON record is Go's alone.
            return {
                "seconds": outcome.duration,
                "endpoint-id": self.fields.get("endpoint-id")
                or endpoint_id_from_request(head.headers)
                or "",
                "client-ip": _client_ip(
                    outcome.transport,
                    (head.get(b"x-forwarded-for") or b"") if self.behind_server else None,
                ),
            }

        # Go's order: the logger's fields (the agent's ``endpoint-id``), then ``request``.
        fields = {**self.fields, "request": request, ACCESS_SUMMARY: summary}
        if outcome.policy:
            # Not in Go: which traffic policy refused the request (piko.policy).
            fields["policy"] = outcome.policy
            fields["policy_action"] = outcome.policy_action
        self.log.emit(level, "request", **fields)


@implementer(IRequestHandler)
class AccessLoggedHandler:
    """Logs every request a wrapped handler answers, after it is answered (Go's middleware)."""

    def __init__(
        self, handler: IRequestHandler, access_log: AccessLog, clock: IReactorTime
    ) -> None:
        self.handler = handler
        self.access_log = access_log
        self.clock = clock

    def request_received(self, exchange: IServerExchange) -> None:
        """Pass the request on through an exchange that reports its outcome."""
        if self.access_log.disabled:
            self.handler.request_received(exchange)
            return
        observed = ObservedExchange(exchange, self.clock, self.access_log.record)
        self.handler.request_received(observed)  # type: ignore[arg-type]

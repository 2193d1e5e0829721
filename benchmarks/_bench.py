"""
Shared plumbing for the multi-process benchmarks in this directory.

The orchestrating process never runs a reactor: it starts each role as a child
process (``python <script> --role ...``), reads ``PORT <n>`` and ``RESULT
<json>`` lines from the children's stdout, and kills every child it started
when it finishes.  Each child arms ``signal.alarm`` so it exits by itself even
if the orchestrator dies.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import resource
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MiB = 1024 * 1024

_children: list[subprocess.Popen] = []


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (
        os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
    )
    # Fail at start instead of crawling if autobahn's native masker is missing.
    env.setdefault("AUTOBAHN_USE_NVX", "1")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


class Child:
    """A child process whose stdout is read line by line, with timeouts."""

    def __init__(self, argv: list[str], name: str) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            [sys.executable, *argv],
            stdout=subprocess.PIPE,
            stderr=None,  # inherit: tracebacks show up on the console
            env=child_env(),
            cwd=str(ROOT),
            start_new_session=False,
        )
        _children.append(self.proc)
        self._sel = selectors.DefaultSelector()
        self._sel.register(self.proc.stdout, selectors.EVENT_READ)
        self._buf = b""
        self.lines: list[str] = []

    def _readline(self, deadline: float) -> str | None:
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            if not self._sel.select(left):
                return None
            chunk = os.read(self.proc.stdout.fileno(), 65536)
            if not chunk:
                return None
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        text = line.decode("utf-8", "replace")
        self.lines.append(text)
        return text

    def expect(self, prefix: str, timeout: float) -> str:
        """Return the rest of the first stdout line starting with ``prefix``."""
        deadline = time.monotonic() + timeout
        while True:
            line = self._readline(deadline)
            if line is None:
                rc = self.proc.poll()
                raise RuntimeError(
                    f"{self.name}: no {prefix!r} line within {timeout:.0f}s (rc={rc}); "
                    f"stdout: {self.lines[-5:]}"
                )
            if line.startswith(prefix):
                return line[len(prefix) :].strip()

    def port(self, timeout: float = 20) -> int:
        return int(self.expect("PORT ", timeout))

    def result(self, timeout: float) -> dict:
        return json.loads(self.expect("RESULT ", timeout))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(3)


@atexit.register
def _kill_children() -> None:
    for p in _children:
        if p.poll() is None:
            p.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(2)


def arm_watchdog(seconds: float) -> None:
    """In a child: die after ``seconds`` whatever happens."""
    signal.signal(signal.SIGALRM, lambda *_: os._exit(3))
    signal.alarm(max(1, int(seconds)))


def emit(tag: str, value: object) -> None:
    """In a child: print one machine-readable line."""
    text = json.dumps(value) if not isinstance(value, (int, str)) else str(value)
    sys.stdout.write(f"{tag} {text}\n")
    sys.stdout.flush()


def cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def proc_cpu_seconds(pid: int) -> float:
    """CPU seconds (user+system) of another process, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def table(headers: list[str], rows: list[list[object]]) -> str:
    """A plain aligned text table."""
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    out = []
    for n, r in enumerate(cells):
        out.append(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )
        )
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def _fmt(c: object) -> str:
    if isinstance(c, float):
        if c >= 100:
            return f"{c:,.0f}"
        if c >= 1:
            return f"{c:.2f}"
        return f"{c:.3f}"
    return "-" if c is None else str(c)


class Profiler:
    """cProfile over a measurement window in a child, dumped to ``path``."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self._prof = None

    def start(self) -> None:
        if self.path:
            import cProfile

            self._prof = cProfile.Profile()
            self._prof.enable()

    def stop(self) -> None:
        if self._prof is not None:
            self._prof.disable()
            self._prof.dump_stats(self.path)
            self._prof = None


def run_piko_server(max_seconds: float, nodelay: bool = False) -> None:
    """
    In a child: run a Piko server node on ephemeral loopback ports, print
    ``RESULT {"proxy": p, "upstream": u, "admin": a}`` and serve until killed
    (or ``max_seconds``).
    """
    from attrs import evolve
    from twisted.internet import reactor
    from twisted.internet.defer import inlineCallbacks

    from piko.config import ServerConfig
    from piko.server.service import make_server_service

    arm_watchdog(max_seconds)
    if nodelay:
        patch_nodelay()

    @inlineCallbacks
    def main():
        cfg = ServerConfig()
        cfg = evolve(
            cfg,
            proxy=evolve(cfg.proxy, bind_addr="127.0.0.1:0"),
            upstream=evolve(cfg.upstream, bind_addr="127.0.0.1:0"),
            admin=evolve(cfg.admin, bind_addr="127.0.0.1:0"),
            cluster=evolve(cfg.cluster, node_id="bench"),
        )
        svc = make_server_service(cfg, reactor)
        svc.startService()
        yield svc.started
        emit("RESULT", {k: svc.ports[k].getHost().port for k in ("proxy", "upstream", "admin")})

    def failed(f):
        sys.stderr.write(f.getTraceback())
        reactor.stop()

    reactor.callWhenRunning(lambda: main().addErrback(failed))
    reactor.run()


def percentile(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = min(len(xs) - 1, max(0, round(p / 100 * (len(xs) - 1))))
    return xs[k]


def patch_nodelay() -> None:
    """
    EXPERIMENT (``--patch-nodelay``): set TCP_NODELAY on every piko TCP socket,
    as Go does by default.  Without it, autobahn's own attempt fails silently
    (``WebSocketAdapterProtocol.connectionMade`` reads ``self.tcpNoDelay``
    before ``_connectionMade`` copies the factory options; the AttributeError
    is swallowed) and the proxy port never asks, so small writes wait for
    delayed ACKs (~40 ms).  This mimics the proposed fix in piko/ from the
    benchmark side only.
    """
    from piko.http.listening import TrackedHTTPServerProtocol
    from piko.ws.client import _ClientProtocol

    def nodelay(transport) -> None:
        for t in (transport, getattr(transport, "getHandle", lambda: None)()):
            try:
                t.setTcpNoDelay(True)
                return
            except Exception:
                pass

    for cls in (TrackedHTTPServerProtocol, _ClientProtocol):
        original = cls.connectionMade

        def connectionMade(self, _original=original) -> None:
            nodelay(self.transport)
            _original(self)

        cls.connectionMade = connectionMade

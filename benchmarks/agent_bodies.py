"""
Whole bodies through a Piko server and agent, checked byte for byte, from outside.

Real processes on 127.0.0.1: a Piko server (ours, or Go's binary with ``--server go``), a
Piko agent (ours, or Go's with ``--agent go``) exposing a local HTTP/1.1 service, and
concurrent raw-socket clients.  The service (asyncio, keep-alive) reads every request body to
its end (``Content-Length`` or chunked) and answers how many bytes it got; ``GET /bytes/<n>``
answers ``n`` bytes with a ``Content-Length``.  Scenarios:

``chunked``
    one chunked POST (``3\\r\\nabc\\r\\n0\\r\\n\\r\\n``, sent whole) through an agent that has
    no idle connection to the service: the service must get ``abc``.
``posts``
    ``--concurrency`` concurrent 200 KB POSTs (``Content-Length``) to a just-started agent;
    every one must reach the service whole (``got 200000``).
``downloads``
    ``--clients`` keep-alive clients fetching random sizes up to 256 KiB for ``--duration``
    seconds; a response that is cut short, broken or late counts as lost.
``soak``
    the same clients mixing downloads, Content-Length uploads and chunked uploads (random
    sizes up to 256 KiB); an answer slower than ``--slow`` seconds counts as a stall.

Each scenario starts a fresh server and agent, so the agent's pool is cold.  ``--code DIR``
runs the ``piko`` package of another checkout (say, an older commit from ``git worktree``)
for a before/after comparison.  Exit status 1 if any request failed::

    python benchmarks/agent_bodies.py                         # our server and agent
    python benchmarks/agent_bodies.py --server go --rounds 3  # Go's server, our agent
    python benchmarks/agent_bodies.py --agent go --scenario downloads
    python benchmarks/agent_bodies.py --scenario soak --duration 300
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import itertools
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GO_PIKO = ROOT.parent.parent / "shared" / "tools" / "go-piko" / "piko"
if not GO_PIKO.exists():  # a checkout at /work/main rather than a worktree
    GO_PIKO = ROOT.parent / "shared" / "tools" / "go-piko" / "piko"
ENDPOINT = "bodies"
POST_SIZE = 200_000
MAX_DOWNLOAD = 256 * 1024
MIXED = ("get", "post", "chunked")
PATTERN = bytes(range(256)) * (MAX_DOWNLOAD // 256 + 1)


# ----------------------------------------------------------------------------
# the local service
# ----------------------------------------------------------------------------


async def _read_head(reader: asyncio.StreamReader) -> tuple[bytes, dict[bytes, bytes]] | None:
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    lines = raw.split(b"\r\n")
    headers = {}
    for line in lines[1:]:
        if b":" in line:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
    return lines[0], headers


async def _read_body(reader: asyncio.StreamReader, headers: dict[bytes, bytes]) -> bytes:
    if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        body = bytearray()
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")  # no trailers from our clients
                return bytes(body)
            body += await reader.readexactly(size)
            await reader.readexactly(2)
    return await reader.readexactly(int(headers.get(b"content-length", b"0")))


async def _serve_one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            got = await _read_head(reader)
            if got is None:
                return
            request_line, headers = got
            method, target, _ = request_line.split(b" ", 2)
            body = await _read_body(reader, headers)
            if method == b"GET" and target.startswith(b"/bytes/"):
                out = PATTERN[: int(target[7:].partition(b"?")[0])]
            else:
                out = b"got %d %s\n" % (len(body), body[:16].hex().encode())
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                b"Content-Length: %d\r\n\r\n" % len(out) + out
            )
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, ValueError):
        pass
    finally:
        writer.close()


def run_service(port_file: str) -> None:
    """Child role: serve on an ephemeral port, write it to ``port_file``, run until killed."""

    async def main() -> None:
        server = await asyncio.start_server(_serve_one, "127.0.0.1", 0)
        Path(port_file).write_text(str(server.sockets[0].getsockname()[1]))
        await server.serve_forever()

    signal.alarm(3600)
    asyncio.run(main())


# ----------------------------------------------------------------------------
# processes
# ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


#: The checkout whose ``piko`` package the server and agent run (``--code``).
CODE = ROOT


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(CODE)
    env.setdefault("PIKO_GO_CACHE", str(Path.home() / ".cache" / "piko-go-ref"))
    return env


def _piko(kind: str) -> list[str]:
    if kind == "go":
        return [str(GO_PIKO)]
    return [sys.executable, "-m", "piko"]


class Stack:
    """A server and an agent for one scenario, stopped by their handles."""

    def __init__(self, args: argparse.Namespace, service_port: int, log_dir: Path) -> None:
        self.args = args
        self.procs: list[subprocess.Popen[bytes]] = []
        self.proxy, self.upstream, self.admin, gossip = (free_port() for _ in range(4))
        self.log_dir = log_dir
        self._start(
            "server",
            [
                *_piko(args.server),
                "server",
                "--proxy.bind-addr",
                f"127.0.0.1:{self.proxy}",
                "--upstream.bind-addr",
                f"127.0.0.1:{self.upstream}",
                "--admin.bind-addr",
                f"127.0.0.1:{self.admin}",
                "--cluster.gossip.bind-addr",
                f"127.0.0.1:{gossip}",
                "--proxy.timeout",
                f"{args.server_timeout}s",
                "--log.level",
                "warn",
            ],
        )
        self._wait(lambda: self._get(f"http://127.0.0.1:{self.admin}/status/upstream/endpoints"))
        self._start(
            "agent",
            [
                *_piko(args.agent),
                "agent",
                "http",
                ENDPOINT,
                str(service_port),
                "--connect.url",
                f"http://127.0.0.1:{self.upstream}",
                "--timeout",
                f"{args.agent_timeout}s",
                "--log.level",
                "warn",
                "--access-log.disable",
            ],
        )
        self._wait(self._registered)

    def _start(self, name: str, argv: list[str]) -> None:
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115
        self.procs.append(subprocess.Popen(argv, stdout=log, stderr=log, env=_env(), cwd=str(CODE)))

    @staticmethod
    def _get(url: str) -> bytes | None:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return r.read()
        except OSError:
            return None

    def _registered(self) -> bool:
        body = self._get(f"http://127.0.0.1:{self.admin}/status/upstream/endpoints")
        return bool(body) and ENDPOINT in json.loads(body)

    def _wait(self, ready: object, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready():  # type: ignore[operator]
                return
            if any(p.poll() is not None for p in self.procs):
                break
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"stack did not come up; see logs in {self.log_dir}")

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)


# ----------------------------------------------------------------------------
# clients
# ----------------------------------------------------------------------------


class Lost(Exception):
    """A response that did not arrive whole."""


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """Read one response (Content-Length or chunked); :class:`Lost` if it is cut short."""
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as e:
        raise Lost(f"head cut after {len(e.partial)} bytes") from None
    lines = raw.split(b"\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if b":" in line:
            n, _, v = line.partition(b":")
            headers[n.strip().lower()] = v.strip()
    if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        body = bytearray()
        try:
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    await reader.readuntil(b"\r\n")
                    return status, bytes(body)
                body += await reader.readexactly(size)
                await reader.readexactly(2)
        except asyncio.IncompleteReadError as e:
            raise Lost(f"chunked body cut after {len(body) + len(e.partial)} bytes") from None
    length = int(headers.get(b"content-length", b"0"))
    try:
        return status, await reader.readexactly(length)
    except asyncio.IncompleteReadError as e:
        raise Lost(f"body cut at {len(e.partial)} of {length} bytes (head {len(raw)})") from None


def _head(method: str, target: str, extra: str = "") -> bytes:
    return (
        f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nx-piko-endpoint: {ENDPOINT}\r\n"
        f"{extra}\r\n"
    ).encode()


async def one_post(port: int, chunked: bool, timeout: float) -> str:
    """One POST on a new connection; returns ``ok`` or what went wrong."""
    start = time.monotonic()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError as e:
        return f"connect: {e}"
    try:
        if chunked:
            head = _head("POST", "/post", "Transfer-Encoding: chunked\r\n")
            writer.write(head + b"3\r\nabc\r\n0\r\n\r\n")
            want = b"got 3 616263"
        else:
            body = PATTERN[:POST_SIZE] if len(PATTERN) >= POST_SIZE else os.urandom(POST_SIZE)
            writer.write(_head("POST", "/post", f"Content-Length: {POST_SIZE}\r\n") + body)
            want = b"got %d %s" % (POST_SIZE, body[:16].hex().encode())
        await writer.drain()
        status, got = await asyncio.wait_for(read_response(reader), timeout)
        if status == 200 and got.startswith(want):
            return "ok"
        took = time.monotonic() - start
        return f"{status} after {took:.1f}s: {got[:60]!r}"
    except TimeoutError:
        return f"client timeout ({timeout:.0f}s)"
    except (Lost, OSError) as e:
        return f"{type(e).__name__}: {e}"
    finally:
        writer.close()


async def posts(port: int, n: int, chunked: bool, timeout: float) -> list[str]:
    return list(await asyncio.gather(*(one_post(port, chunked, timeout) for _ in range(n))))


async def one_exchange(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    kind: str,
    size: int,
    tag: int,
    timeout: float,
) -> None:
    """
    One request of ``kind`` on a kept-alive connection: ``get`` downloads ``size`` bytes,
    ``post`` uploads them with a Content-Length, ``chunked`` in chunks written apart.
    Raises :class:`Lost` (or a timeout or socket error) unless the answer is whole.
    """
    body = PATTERN[:size]
    if kind == "get":
        writer.write(_head("GET", f"/bytes/{size}?id={tag}"))
        want = body
    elif kind == "post":
        writer.write(_head("POST", f"/post?id={tag}", f"Content-Length: {size}\r\n") + body)
        want = b"got %d %s\n" % (size, body[:16].hex().encode())
    else:
        writer.write(_head("POST", f"/post?id={tag}", "Transfer-Encoding: chunked\r\n"))
        for i in range(0, size, 50_000):
            piece = body[i : i + 50_000]
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        want = b"got %d %s\n" % (size, body[:16].hex().encode())
    status, got = await asyncio.wait_for(read_response(reader), timeout)
    if status != 200 or got != want:
        raise Lost(f"status {status}, {len(got)} bytes: {got[:40]!r}")


async def mixed(
    port: int,
    clients: int,
    duration: float,
    timeout: float,
    kinds: tuple[str, ...],
    slow: float,
) -> tuple[int, list[str], list[str]]:
    """
    Keep-alive clients making random requests of ``kinds`` (sizes up to 256 KiB) for
    ``duration`` seconds; returns (whole answers, losses, answers slower than ``slow``).
    """
    ok = 0
    lost: list[str] = []
    slow_ones: list[str] = []
    stop_at = time.monotonic() + duration
    rng = random.Random(1)
    ids = itertools.count()

    async def client() -> None:
        nonlocal ok
        conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        while time.monotonic() < stop_at:
            if conn is None:
                try:
                    conn = await asyncio.open_connection("127.0.0.1", port)
                except OSError as e:
                    lost.append(f"connect: {e}")
                    await asyncio.sleep(0.1)
                    continue
            reader, writer = conn
            kind = rng.choice(kinds)
            size = rng.randrange(MAX_DOWNLOAD + 1)
            tag = next(ids)
            start = time.monotonic()
            try:
                await one_exchange(reader, writer, kind, size, tag, timeout)
                ok += 1
            except (TimeoutError, Lost, OSError) as e:
                lost.append(
                    f"{kind} {size} (id {tag}) after {time.monotonic() - start:.1f}s: "
                    f"{type(e).__name__}: {e}"
                )
                writer.close()
                conn = None
                continue
            took = time.monotonic() - start
            if took > slow:
                slow_ones.append(f"{kind} {size} (id {tag}): {took:.1f}s")
        if conn is not None:
            conn[1].close()

    await asyncio.gather(*(client() for _ in range(clients)))
    return ok, lost, slow_ones


# ----------------------------------------------------------------------------
# orchestration
# ----------------------------------------------------------------------------


def summarize(results: list[str]) -> str:
    failed = [r for r in results if r != "ok"]
    kinds = collections.Counter(r.split(":")[0] if "cut" not in r else r for r in failed)
    out = f"{len(failed)} of {len(results)} failed"
    if failed:
        out += "; " + "; ".join(f"{k} x{v}" for k, v in kinds.most_common(6))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--role", default="main", choices=["main", "service"])
    parser.add_argument("--port-file")
    parser.add_argument("--server", choices=["ours", "go"], default="ours")
    parser.add_argument("--agent", choices=["ours", "go"], default="ours")
    parser.add_argument(
        "--scenario",
        action="append",
        choices=["chunked", "posts", "downloads", "soak"],
        default=None,
    )
    parser.add_argument("--concurrency", type=int, action="append", default=None)
    parser.add_argument("--rounds", type=int, default=1, help="fresh stacks per scenario")
    parser.add_argument("--clients", type=int, default=30)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--agent-timeout", type=float, default=10.0)
    parser.add_argument("--server-timeout", type=float, default=30.0)
    parser.add_argument("--request-timeout", type=float, default=60.0)
    parser.add_argument("--slow", type=float, default=5.0, help="seconds that count as a stall")
    parser.add_argument(
        "--code", default=str(ROOT), help="checkout whose piko package runs (default: this one)"
    )
    args = parser.parse_args()
    global CODE
    CODE = Path(args.code).resolve()
    if args.role == "service":
        run_service(args.port_file)
        return 0
    if "go" in (args.server, args.agent) and not GO_PIKO.exists():
        print(f"Go Piko not found at {GO_PIKO}", file=sys.stderr)
        return 2
    scenarios = args.scenario or ["chunked", "posts", "downloads"]
    concurrency = args.concurrency or [50, 200]
    log_dir = Path(os.environ.get("TMPDIR", "/tmp")) / f"agent_bodies.{os.getpid()}"
    log_dir.mkdir(parents=True, exist_ok=True)
    port_file = log_dir / "service.port"
    service = subprocess.Popen(
        [sys.executable, __file__, "--role", "service", "--port-file", str(port_file)],
        env=_env(),
    )
    failures = 0
    try:
        deadline = time.monotonic() + 10
        while not port_file.exists() or not port_file.read_text():
            if time.monotonic() > deadline:
                raise RuntimeError("service did not start")
            time.sleep(0.05)
        service_port = int(port_file.read_text())
        print(f"server={args.server} agent={args.agent} (logs in {log_dir})")
        timeout = args.agent_timeout + args.server_timeout + 5
        for scenario in scenarios:
            for round_ in range(args.rounds):
                runs = concurrency if scenario == "posts" else [1]
                for n in runs:
                    stack = Stack(args, service_port, log_dir)
                    try:
                        if scenario == "chunked":
                            results = asyncio.run(posts(stack.proxy, 1, True, timeout))
                            label = "chunked POST, cold agent"
                            failures += results != ["ok"]
                            print(f"{label} (round {round_ + 1}): {summarize(results)}")
                        elif scenario == "posts":
                            results = asyncio.run(posts(stack.proxy, n, False, timeout))
                            label = f"{n} concurrent {POST_SIZE // 1000} KB POSTs, cold agent"
                            failures += sum(r != "ok" for r in results)
                            print(f"{label} (round {round_ + 1}): {summarize(results)}")
                        else:
                            kinds = ("get",) if scenario == "downloads" else MIXED
                            ok, lost, slow = asyncio.run(
                                mixed(
                                    stack.proxy,
                                    args.clients,
                                    args.duration,
                                    args.request_timeout,
                                    kinds,
                                    args.slow,
                                )
                            )
                            failures += len(lost) + len(slow)
                            what = "random downloads" if scenario == "downloads" else "soak"
                            print(
                                f"{args.clients} clients x {args.duration:.0f}s {what} "
                                f"(round {round_ + 1}): {len(lost)} lost, "
                                f"{len(slow)} slower than {args.slow:.0f}s, {ok} whole"
                            )
                            for line in (lost + slow)[:8]:
                                print(f"    {line}")
                    finally:
                        stack.stop()
    finally:
        service.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            service.wait(5)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

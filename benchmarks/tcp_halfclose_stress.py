"""
TCP half-close under load, from outside: ``piko server``, ``piko agent tcp`` and
``piko forward`` as real processes on loopback, an echo service, and rounds of
concurrent clients that send a body (up to 8 MB), shut their write side, and read
the echo to EOF.  Prints per round the connections whose echo came back short.

It found the reply cut at yamux window boundaries when the local service closed
right after its last write (issue 11): run it on an older checkout with
``--code DIR`` to see the difference.

    python benchmarks/tcp_halfclose_stress.py [--rounds 8] [--clients 30] [--seed 1]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EchoService:
    """Echoes each connection's bytes and closes once it read EOF and wrote the echo."""

    def __init__(self) -> None:
        self.received: dict[str, int] = {}

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await reader.readuntil(b"\n")
            key = line[:-1].decode()
            self.received[key] = 0
            writer.write(line)
            while data := await reader.read(65536):
                self.received[key] += len(data)
                writer.write(data)
                await writer.drain()
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


async def client(port: int, key: str, size: int) -> tuple[str, int, int]:
    """Send ``key\\n`` and ``size`` bytes, shut the write side once all is out, read to EOF."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    payload = f"{key}\n".encode() + os.urandom(size)

    async def send() -> None:
        writer.write(payload)
        await writer.drain()
        while writer.transport.get_write_buffer_size():  # all handed to the kernel
            await asyncio.sleep(0.005)
        writer.get_extra_info("socket").shutdown(socket.SHUT_WR)

    sender = asyncio.ensure_future(send())
    got = 0
    try:
        while chunk := await reader.read(65536):
            got += len(chunk)
    except ConnectionError:
        pass
    await asyncio.gather(sender, return_exceptions=True)
    writer.close()
    return key, len(payload), got


async def wait_port(port: int, bound: float) -> None:
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise SystemExit(f"port {port} not listening within {bound} s")


async def wait_endpoint(admin: int, endpoint: str, bound: float) -> None:
    """Until the server's admin status lists an upstream for ``endpoint``."""
    import json
    import urllib.request

    url = f"http://127.0.0.1:{admin}/status/upstream/endpoints"
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        try:
            body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=2).read())
            if json.loads(body).get(endpoint):
                return
        except OSError:
            pass
        await asyncio.sleep(0.1)
    raise SystemExit(f"endpoint {endpoint!r} not registered within {bound} s")


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--clients", type=int, default=30)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--code", default=str(ROOT), help="checkout whose piko to run")
    args = parser.parse_args()
    proxy, upstream, admin, gossip, forward = (free_port() for _ in range(5))
    service = EchoService()
    server = await asyncio.start_server(service.serve, "127.0.0.1", 0)
    service_port = server.sockets[0].getsockname()[1]
    env = dict(os.environ, PYTHONPATH=args.code)
    piko = [sys.executable, "-m", "piko"]
    # Checkouts from before the request inspector have no --inspect flag.
    inspect_off = ["--inspect=false"] if (Path(args.code) / "piko" / "inspect").exists() else []
    log = open(os.devnull, "w")  # noqa: SIM115
    procs = [
        subprocess.Popen(
            [
                *piko,
                "server",
                "--proxy.bind-addr",
                f"127.0.0.1:{proxy}",
                "--upstream.bind-addr",
                f"127.0.0.1:{upstream}",
                "--admin.bind-addr",
                f"127.0.0.1:{admin}",
                "--cluster.gossip.bind-addr",
                f"127.0.0.1:{gossip}",
            ],
            env=env,
            cwd=args.code,
            stdout=log,
            stderr=log,
        )
    ]
    try:
        await wait_port(upstream, 30)
        procs.append(
            subprocess.Popen(
                [
                    *piko,
                    "agent",
                    "tcp",
                    "echo",
                    f"127.0.0.1:{service_port}",
                    "--connect.url",
                    f"http://127.0.0.1:{upstream}",
                    *inspect_off,
                ],
                env=env,
                cwd=args.code,
                stdout=log,
                stderr=log,
            )
        )
        procs.append(
            subprocess.Popen(
                [
                    *piko,
                    "forward",
                    "tcp",
                    f"127.0.0.1:{forward}",
                    "echo",
                    "--connect.url",
                    f"http://127.0.0.1:{proxy}",
                ],
                env=env,
                cwd=args.code,
                stdout=log,
                stderr=log,
            )
        )
        await wait_port(forward, 30)
        await wait_endpoint(admin, "echo", 30)
        rnd = random.Random(args.seed)
        total = short = 0
        for r in range(args.rounds):
            sizes = [
                rnd.choice([rnd.randrange(0, 300_000), rnd.randrange(200_000, 8_000_000)])
                for _ in range(args.clients)
            ]
            results = await asyncio.wait_for(
                asyncio.gather(*(client(forward, f"{r}-{i}", n) for i, n in enumerate(sizes))),
                300,
            )
            cut = [(k, want, got) for k, want, got in results if got != want]
            total += len(results)
            short += len(cut)
            print(f"round {r}: {len(cut)} of {len(results)} short", flush=True)
            for key, want, got in cut[:5]:
                print(f"  {key}: sent {want}, echo {got}, service read {service.received.get(key)}")
        print(f"connections: {total}, echo short: {short}")
        return 1 if short else 0
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(10)
        server.close()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

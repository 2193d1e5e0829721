"""
The raw-socket client: sends one exchange byte by byte as generated and
records exactly what comes back, within a time bound.

Every exchange ends: complete, cut by the peer, or stopped by the bound (a
*hang*).  The record says which, so a hang is never mistaken for a
difference in content or the other way round.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import time
from typing import Any

from piko.test.differential import wire
from piko.test.differential.service import KEY_HEADER
from piko.test.differential.spec import HTTP_ENDPOINT, Exchange, MiB, body_bytes

#: How long a client waits for ``100 Continue`` before sending the body anyway
#: (Go's and curl's default is 1 s).
CONTINUE_WAIT = 1.0
#: The time bound of one exchange: a base plus the time its bytes need at a
#: pace well below what any topology sustains on a loaded 2-core machine.
BASE_BOUND = 15.0
SLOW_PAUSE = 0.002


def bound_for(exchange: Exchange) -> float:
    size = exchange.body_size + exchange.response_size
    size += sum(n for _, n in exchange.ws_messages) * 2
    extra = 0.0
    if exchange.client == "slow_read":
        extra = (exchange.response_size / 8192) * SLOW_PAUSE * 3
    if exchange.expect_continue:
        extra += CONTINUE_WAIT
    return BASE_BOUND + size / (2 * MiB) + extra


async def run_exchange(exchange: Exchange, http_port: int, tcp_port: int) -> dict[str, Any]:
    """Run one exchange; return what the client saw, with ``end`` and ``seconds``."""
    started = time.monotonic()
    record: dict[str, Any] = {"end": "complete"}
    writer: asyncio.StreamWriter | None = None
    try:
        port = tcp_port if exchange.kind == "tcp" else http_port
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=wire.MAX_HEAD)
        runner = {"http": _http, "ws": _websocket, "tcp": _tcp}[exchange.kind]
        await asyncio.wait_for(runner(exchange, reader, writer, record), bound_for(exchange))
    except TimeoutError:
        record["end"] = "hang"
    except (ConnectionError, OSError) as e:
        record["end"] = f"error:{type(e).__name__}"
    except (asyncio.IncompleteReadError, wire.Truncated):
        record["end"] = "eof"
    finally:
        if writer is not None:
            writer.transport.abort()
    record["seconds"] = round(time.monotonic() - started, 3)
    return record


def _request_head(exchange: Exchange, extra: list[tuple[str, str]]) -> bytes:
    lines = [f"{exchange.method} {exchange.target} HTTP/1.1", "Host: diff.test"]
    fields = [("x-piko-endpoint", HTTP_ENDPOINT), (KEY_HEADER, exchange.key)]
    fields += list(exchange.headers) + extra
    lines += [f"{k}: {v}" for k, v in fields]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _http(
    exchange: Exchange,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    record: dict[str, Any],
) -> None:
    data = body_bytes(exchange.key, exchange.body_size)
    extra: list[tuple[str, str]] = []
    if exchange.framing == "length":
        extra.append(("Content-Length", str(len(data))))
    elif exchange.framing == "chunked":
        extra.append(("Transfer-Encoding", "chunked"))
        if exchange.trailers:
            extra.append(("Trailer", ", ".join(k for k, _ in exchange.trailers)))
    if exchange.expect_continue:
        extra.append(("Expect", "100-continue"))
    writer.write(_request_head(exchange, extra))
    if exchange.framing == "chunked":
        sizes = random.Random(exchange.key).choices((1, 10, 4096, 65536, 100000), k=8)
        payload = wire.chunked(data, sizes, exchange.chunk_ext, list(exchange.trailers))
    else:
        payload = data
    if exchange.client == "close_after_head":
        writer.write(payload[: len(payload) // 3])
        await writer.drain()
        record["end"] = "client-closed"
        return
    interim: list[int] = []
    record["interim"] = interim
    head: wire.Head | None = None
    if exchange.expect_continue:
        await writer.drain()
        try:
            head = await asyncio.wait_for(wire.read_head(reader), CONTINUE_WAIT)
        except TimeoutError:
            head = None
        if head is not None and _status(head) == 100:
            interim.append(100)
            head = None
    sender = None
    if head is None:  # no final answer yet: send the body while reading
        sender = asyncio.ensure_future(_send(writer, payload))
    try:
        while head is None or 100 <= _status(head) < 200:
            if head is not None:
                interim.append(_status(head))
            head = await wire.read_head(reader)
            if head is None:
                record["end"] = "eof-before-head"
                return
        record["status"] = _status(head)
        record["headers"] = head.headers
        no_body = exchange.method == "HEAD" or record["status"] in (204, 304)
        if exchange.client == "close_mid_body":
            record["end"] = "client-closed"
            return
        slow = exchange.client == "slow_read"
        body = await wire.read_body(
            reader,
            head,
            no_body=no_body,
            until_close=True,
            piece=8192 if slow else 65536,
            pause=SLOW_PAUSE if slow else 0.0,
        )
        record.update(
            framing=body.framing,
            body_len=len(body.data),
            body=wire.digest(body.data),
            trailers=body.trailers,
        )
        if not body.complete:
            record["end"] = "truncated"
    finally:
        if sender is not None:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError, OSError):
                await sender


async def _send(writer: asyncio.StreamWriter, payload: bytes) -> None:
    view = memoryview(payload)
    for i in range(0, len(view), 256 * 1024):
        writer.write(view[i : i + 256 * 1024])
        await writer.drain()


def _status(head: wire.Head) -> int:
    return int(head.start.split(" ", 2)[1])


async def _websocket(
    exchange: Exchange,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    record: dict[str, Any],
) -> None:
    key = "ZGlmZi0" + exchange.key.replace("-", "A")[:15].ljust(15, "A") + "=="
    extra = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", key),
    ]
    writer.write(_request_head(exchange, extra))
    head = await wire.read_head(reader)
    if head is None:
        record["end"] = "eof-before-head"
        return
    record["status"] = _status(head)
    record["headers"] = head.headers
    if record["status"] != 101:
        body = await wire.read_body(reader, head, until_close=False)
        record.update(body_len=len(body.data), body=wire.digest(body.data))
        return
    messages: list[tuple[int, int, str]] = []
    record["messages"] = messages
    opcode, payload = await wire.ws_read(reader)
    messages.append((opcode, len(payload), wire.digest(payload)))
    for n, (op, size) in enumerate(exchange.ws_messages):
        data = body_bytes(f"{exchange.key}.{n}", size, "w")
        if op == 1:
            data = data.hex().encode()[:size]
        writer.write(wire.ws_frame(op, data, mask=True))
        opcode, payload = await wire.ws_read(reader)
        messages.append((opcode, len(payload), wire.digest(payload)))
    writer.write(wire.ws_frame(8, b"\x03\xe8", mask=True))
    opcode, payload = await wire.ws_read(reader)
    record["close"] = (opcode, payload.hex())
    tail = await reader.read(1)
    record["after_close"] = "eof" if not tail else "data"


async def _tcp(
    exchange: Exchange,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    record: dict[str, Any],
) -> None:
    line = f"{exchange.key}\n".encode()
    data = body_bytes(exchange.key, exchange.body_size, "t")
    expected = len(line) + len(data)
    sender = asyncio.ensure_future(_send(writer, line + data))
    received = bytearray()
    try:
        if exchange.tcp_half_close:
            await sender
            sock = writer.get_extra_info("socket")
            sock.shutdown(socket.SHUT_WR)
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                received += chunk
        else:
            while len(received) < expected:
                chunk = await reader.read(65536)
                if not chunk:
                    record["end"] = "eof"
                    break
                received += chunk
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError, OSError):
            await sender
    record.update(len=len(received), body=wire.digest(received[len(line) :]))

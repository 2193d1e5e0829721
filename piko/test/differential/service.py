"""
The instrumented local services behind the agents.

:class:`LocalHTTPService` records exactly what each request looks like when
it arrives (method, target, header fields in order and case, body framing,
body bytes, trailers) and answers as the exchange says: normally, before
reading the body, or by closing mid-response; it also terminates WebSocket
upgrades and echoes messages.  :class:`LocalTCPService` records the bytes a
``forward`` connection delivers and echoes them.  Records are keyed by the
exchange key the client put in ``X-Diff-Key`` (or the first line, for TCP).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from piko.test.differential import wire
from piko.test.differential.spec import Exchange, body_bytes

#: How long a kept-alive connection may sit idle between rounds before the
#: service closes it, so the agents' idle pools (and their file descriptors)
#: drain.  Never during a round: an origin that closes an idle connection races
#: the proxy's next request on it, which Go's transport and ours fail alike
#: (``502``, ``http: server closed idle connection``) unless the request is
#: replayable, and which of them loses the race differs run to run.
IDLE_CLOSE = 0.5
KEY_HEADER = "X-Diff-Key"
RESPONSE_CHUNKS = [1000, 65536, 7, 16384, 100000]


class _Service:
    def __init__(self) -> None:
        self.exchanges: dict[str, Exchange] = {}
        self.records: dict[str, list[dict[str, Any]]] = {}
        self.server: asyncio.Server | None = None
        self.open: dict[int, str] = {}  # open connection -> key of its last exchange
        self.leaked: set[int] = set()  # reported already: not blamed on later rounds
        self.port = 0
        self.in_round = False  # idle connections are closed only while False

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._guarded, "127.0.0.1", 0, limit=wire.MAX_HEAD)
        self.port = self.server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 2)

    def expect(self, exchanges: list[Exchange]) -> None:
        """Forget earlier records and learn how to answer the next batch."""
        self.exchanges = {e.key: e for e in exchanges}
        self.records = {}
        self.in_round = True

    def end_round(self) -> None:
        """Every client of the round has ended: idle connections may now be closed."""
        self.in_round = False

    def record(self, key: str, entry: dict[str, Any]) -> dict[str, Any]:
        self.records.setdefault(key, []).append(entry)
        return entry

    @property
    def open_connections(self) -> int:
        return len(self.open.keys() - self.leaked)

    def open_keys(self) -> set[str]:
        return {key for conn, key in self.open.items() if conn not in self.leaked}

    def quarantine(self) -> None:
        """Count the connections open now as reported leaks, not open ones."""
        self.leaked |= self.open.keys()

    async def _guarded(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open[id(writer)] = "-"
        try:
            await self.serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, wire.Truncated, ValueError):
            pass
        finally:
            del self.open[id(writer)]
            self.leaked.discard(id(writer))
            writer.close()  # flushes what was written, then FIN

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError


class LocalHTTPService(_Service):
    """An HTTP/1.1 origin that records what reaches it and answers per exchange."""

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await self._next_head(reader)
            if head is None:
                return
            if not await self._one(head, reader, writer):
                return

    async def _next_head(self, reader: asyncio.StreamReader) -> wire.Head | None:
        """The next request head; ``None`` at EOF, or once idle ``IDLE_CLOSE`` between rounds."""
        reading = asyncio.ensure_future(wire.read_head(reader))
        while True:
            done, _ = await asyncio.wait({reading}, timeout=IDLE_CLOSE)
            if done:
                return reading.result()
            if not self.in_round:
                reading.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reading
                return None

    async def _one(
        self, head: wire.Head, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        method, _, rest = head.start.partition(" ")
        target, _, version = rest.rpartition(" ")
        key = head.get(KEY_HEADER) or ""
        self.open[id(writer)] = key
        exchange = self.exchanges.get(key)
        entry = self.record(
            key,
            {"method": method, "target": target, "version": version, "headers": head.headers},
        )
        if exchange is None:  # a readiness probe, or a stray
            await wire.read_body(reader, head)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
            return True
        if exchange.kind == "ws":
            await self._websocket(exchange, head, entry, reader, writer)
            return False
        if exchange.service == "early":
            # Answer first, then drain the body so the close is a FIN, not a reset
            # that could destroy the answer in the agent's receive queue.
            await self._respond(exchange, method, writer, close=True)
            body = await wire.read_body(reader, head)
            entry.update(early=True, body_len=len(body.data), body_complete=body.complete)
            return False
        if "100-continue" in head.tokens("expect"):
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        body = await wire.read_body(reader, head)
        entry.update(
            framing=body.framing,
            body_len=len(body.data),
            body=wire.digest(body.data),
            trailers=body.trailers,
            body_complete=body.complete,
        )
        if not body.complete:
            return False
        return await self._respond(exchange, method, writer, close=False)

    async def _respond(
        self, exchange: Exchange, method: str, writer: asyncio.StreamWriter, close: bool
    ) -> bool:
        data = body_bytes(exchange.key, exchange.response_size, "r")
        lines = [f"HTTP/1.1 {exchange.status} {_REASONS.get(exchange.status, 'X')}"]
        lines += [f"{k}: {v}" for k, v in exchange.response_headers]
        framing = exchange.response_framing
        bodyless = method == "HEAD" or exchange.status in (204, 304)
        if exchange.status == 302:
            lines.append("Location: /elsewhere?x=1")
        if exchange.status == 204:
            pass  # RFC 9110 8.6: no Content-Length in a 204
        elif framing == "length" or bodyless:
            lines.append(f"Content-Length: {len(data)}")
        elif framing == "chunked":
            lines.append("Transfer-Encoding: chunked")
        if framing == "close" or close:
            lines.append("Connection: close")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        if bodyless:
            await writer.drain()
            return not (close or framing == "close")
        if exchange.service == "cut":
            cut = len(data) // 2
            payload = (
                wire.chunked(data, RESPONSE_CHUNKS, False, [])[: cut + 8]
                if framing == "chunked"
                else data[:cut]
            )
            writer.write(payload)
            await writer.drain()
            return False  # the caller closes: a FIN, so every byte written arrives
        if framing == "chunked":
            writer.write(wire.chunked(data, RESPONSE_CHUNKS, False, []))
        else:
            writer.write(data)
        await writer.drain()
        return not (close or framing == "close")

    async def _websocket(
        self,
        exchange: Exchange,
        head: wire.Head,
        entry: dict[str, Any],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        accept = wire.ws_accept(head.get("sec-websocket-key") or "")
        writer.write(
            (
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
            ).encode()
        )
        writer.write(wire.ws_frame(1, f"hello {exchange.key}".encode(), mask=False))
        messages: list[tuple[int, int, str]] = []
        entry["messages"] = messages
        while True:
            opcode, payload = await wire.ws_read(reader)
            if opcode == 8:
                writer.write(wire.ws_frame(8, payload[:2], mask=False))
                await writer.drain()
                entry["closed"] = True
                return
            messages.append((opcode, len(payload), wire.digest(payload)))
            writer.write(wire.ws_frame(opcode, payload[::-1], mask=False))
            await writer.drain()


class LocalTCPService(_Service):
    """Records the bytes each ``forward`` connection carries and echoes them back."""

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = await reader.readuntil(b"\n")
        key = line[:-1].decode()
        self.open[id(writer)] = key
        received = bytearray()
        entry = self.record(key, {"eof": False})
        writer.write(line)
        while True:
            data = await reader.read(65536)
            if not data:
                entry["eof"] = True
                break
            received += data
            entry["len"] = len(received)
            writer.write(data)
            await writer.drain()
        entry.update(len=len(received), body=wire.digest(received))
        await writer.drain()


_REASONS = {
    200: "OK",
    201: "Created",
    204: "No Content",
    302: "Found",
    404: "Not Found",
    500: "Internal Server Error",
    503: "Service Unavailable",
}

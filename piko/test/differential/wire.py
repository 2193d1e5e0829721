"""
Small, independent HTTP/1.1 and WebSocket readers and writers for the harness.

They are deliberately not piko's own parser: the harness must judge our
proxy, so it reads bytes with code that shares nothing with it.  Everything
here works on :class:`asyncio.StreamReader` / :class:`asyncio.StreamWriter`.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import struct
from dataclasses import dataclass, field

MAX_HEAD = 64 * 1024
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class Truncated(Exception):
    """The peer closed before the message it announced was complete."""

    def __init__(self, got: bytes) -> None:
        super().__init__(f"truncated after {len(got)} bytes")
        self.got = got


@dataclass
class Head:
    """A parsed request or response head, header fields exactly as they came."""

    start: str
    headers: list[tuple[str, str]] = field(default_factory=list)

    def get(self, name: str) -> str | None:
        lowered = name.lower()
        for key, value in self.headers:
            if key.lower() == lowered:
                return value
        return None

    def all(self, name: str) -> list[str]:
        lowered = name.lower()
        return [value for key, value in self.headers if key.lower() == lowered]

    def tokens(self, name: str) -> set[str]:
        """The comma-separated, lower-cased tokens of every ``name`` field."""
        out: set[str] = set()
        for value in self.all(name):
            out.update(t.strip().lower() for t in value.split(",") if t.strip())
        return out


async def read_head(reader: asyncio.StreamReader) -> Head | None:
    """Read one head; ``None`` on a clean EOF before any byte."""
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as e:
        if not e.partial:
            return None
        raise Truncated(e.partial) from None
    except asyncio.LimitOverrunError:
        raise ValueError("head too large") from None
    lines = raw[:-4].decode("latin-1").split("\r\n")
    head = Head(lines[0])
    for line in lines[1:]:
        name, _, value = line.partition(":")
        head.headers.append((name, value.strip(" \t")))
    return head


@dataclass
class Body:
    """A body as received: its bytes (or only a digest for large ones) and its framing."""

    framing: str
    data: bytearray = field(default_factory=bytearray)
    trailers: list[tuple[str, str]] = field(default_factory=list)
    complete: bool = True


async def read_body(
    reader: asyncio.StreamReader,
    head: Head,
    *,
    no_body: bool = False,
    until_close: bool = False,
    piece: int = 65536,
    pause: float = 0.0,
) -> Body:
    """
    Read the body ``head`` announces.  A peer that closes early gives a body
    with ``complete=False`` rather than an exception, so the harness records
    how much arrived.

    :param until_close: a response without length or chunking runs to EOF.
    :param pause: a slow reader waits this long between ``piece``-sized reads.
    """
    te = head.tokens("transfer-encoding")
    if no_body:
        return Body("none")
    if "chunked" in te:
        body = Body("chunked")
        try:
            while True:
                line = await reader.readuntil(b"\r\n")
                size = int(line.split(b";", 1)[0].strip(), 16)
                if size == 0:
                    break
                await _read_into(reader, body, size, piece, pause)
                await reader.readexactly(2)
            while True:
                line = await reader.readuntil(b"\r\n")
                if line == b"\r\n":
                    break
                name, _, value = line[:-2].decode("latin-1").partition(":")
                body.trailers.append((name, value.strip(" \t")))
        except (asyncio.IncompleteReadError, ConnectionError):
            body.complete = False
        return body
    length = head.get("content-length")
    if length is not None:
        body = Body("length")
        try:
            await _read_into(reader, body, int(length), piece, pause)
        except (asyncio.IncompleteReadError, ConnectionError):
            body.complete = False
        return body
    if not until_close:
        return Body("none")
    body = Body("close")
    try:
        while True:
            data = await reader.read(piece)
            if not data:
                break
            body.data += data
            if pause:
                await asyncio.sleep(pause)
    except ConnectionError:
        body.complete = False
    return body


async def _read_into(
    reader: asyncio.StreamReader, body: Body, size: int, piece: int, pause: float
) -> None:
    left = size
    while left:
        data = await reader.read(min(left, piece))
        if not data:
            raise asyncio.IncompleteReadError(b"", left)
        body.data += data
        left -= len(data)
        if pause:
            await asyncio.sleep(pause)


def chunked(data: bytes, sizes: list[int], ext: bool, trailers: list[tuple[str, str]]) -> bytes:
    """Frame ``data`` in chunks of the given sizes (cycled), with extensions and trailers."""
    out = bytearray()
    i = n = 0
    while i < len(data):
        size = sizes[n % len(sizes)]
        piece = data[i : i + size]
        extension = f";ext{n}=v{n}" if ext and n % 2 == 0 else ""
        out += f"{len(piece):x}{extension}\r\n".encode() + piece + b"\r\n"
        i += size
        n += 1
    out += b"0" + (b";last" if ext else b"") + b"\r\n"
    for name, value in trailers:
        out += f"{name}: {value}\r\n".encode("latin-1")
    out += b"\r\n"
    return bytes(out)


def digest(data: bytes | bytearray) -> str:
    """A short content digest for records (bodies up to 16 MiB are never kept whole)."""
    return hashlib.sha256(data).hexdigest()[:16]


def ws_accept(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode() + WS_GUID).digest()).decode()


def ws_frame(opcode: int, payload: bytes, mask: bool) -> bytes:
    """One final WebSocket frame; clients mask, servers do not (RFC 6455 5.1)."""
    first = 0x80 | opcode
    n = len(payload)
    mask_bit = 0x80 if mask else 0
    if n < 126:
        header = struct.pack("!BB", first, mask_bit | n)
    elif n < 65536:
        header = struct.pack("!BBH", first, mask_bit | 126, n)
    else:
        header = struct.pack("!BBQ", first, mask_bit | 127, n)
    if not mask:
        return header + payload
    key = os.urandom(4)
    return header + key + _mask(payload, key)


def _mask(payload: bytes, key: bytes) -> bytes:
    if not payload:
        return b""
    stream = (key * (len(payload) // 4 + 1))[: len(payload)]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(stream, "big")).to_bytes(
        len(payload), "big"
    )


async def ws_read(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """Read one whole message (continuation frames joined): ``(opcode, payload)``."""
    opcode = -1
    payload = bytearray()
    while True:
        b0, b1 = await reader.readexactly(2)
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", await reader.readexactly(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", await reader.readexactly(8))
        key = await reader.readexactly(4) if b1 & 0x80 else b""
        data = await reader.readexactly(n)
        if key:
            data = _mask(data, key)
        if b0 & 0x0F:
            opcode = b0 & 0x0F
        payload += data
        if b0 & 0x80:
            return opcode, bytes(payload)

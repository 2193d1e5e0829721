"""
The seeded generator: one batch of exchanges from one integer seed.

A batch is everything one round sends at once; it is a pure function of its
seed, so a failing seed replays exactly (``--replay SEED``).  Each exchange
says what the client sends and how it behaves, and what the instrumented
local service does when the request reaches it (answer normally, answer
before reading the body, close mid-response), so the same batch can be run
against every topology and the observations compared.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from typing import Any

KiB = 1024
MiB = 1024 * KiB

#: Methods a client may send; HEAD changes how the response is framed.
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD", "PURGE")
#: Characters legal unencoded in a path segment (RFC 3986 pchar less ALPHA/DIGIT).
PCHARS = "-._~!$&'()*+,;=:@"
#: Sizes on and around the boundaries a relay chops bodies at.
EDGE_SIZES = (1, 2, 100, 4095, 4096, 16383, 16384, 32768, 65535, 65536, 65537, 131072, 262145)

HTTP_ENDPOINT = "diff-http"
TCP_ENDPOINT = "diff-tcp"


@dataclass(frozen=True)
class Exchange:
    """
    One generated exchange: the client's input and both ends' behaviour.

    Body contents are not stored: they are derived from ``(key, size)`` by
    :func:`body_bytes`, so a 16 MiB body costs nothing until it is sent.
    """

    key: str
    kind: str  # "http", "ws" or "tcp"
    method: str = "GET"
    target: str = "/"
    headers: tuple[tuple[str, str], ...] = ()
    framing: str = "none"  # request body: "none", "length" or "chunked"
    body_size: int = 0
    chunk_ext: bool = False
    trailers: tuple[tuple[str, str], ...] = ()
    expect_continue: bool = False
    client: str = "normal"  # "normal", "slow_read", "close_after_head", "close_mid_body"
    service: str = "normal"  # "normal", "early", "cut"
    status: int = 200
    response_framing: str = "length"  # "length", "chunked" or "close"
    response_size: int = 0
    response_headers: tuple[tuple[str, str], ...] = ()
    ws_messages: tuple[tuple[int, int], ...] = ()  # (opcode, size) from the client
    tcp_half_close: bool = False

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary for reports (everything needed to see the case)."""
        return {k: v for k, v in asdict(self).items() if v not in ((), False, None)}

    @property
    def checked(self) -> bool:
        """Whether the content of this exchange is compared (clients that quit are not)."""
        return self.client in ("normal", "slow_read")


@dataclass
class Batch:
    """The exchanges of one round, all started at once."""

    seed: int
    cold: bool
    size: int = 0  # as generated (``--size`` to replay it; ``--only`` may keep fewer)
    exchanges: list[Exchange] = field(default_factory=list)


def body_bytes(key: str, size: int, salt: str = "q") -> bytes:
    """The deterministic body of ``size`` bytes for an exchange (cheap to rebuild and check)."""
    if size <= 0:
        return b""
    unit = f"<{salt}:{key}:".encode() + bytes(range(256)) + b">"
    reps = size // len(unit) + 1
    return (unit * reps)[:size]


def _size(rnd: random.Random, big: bool) -> int:
    roll = rnd.random()
    if roll < 0.2:
        return 0
    if roll < 0.45:
        return rnd.randint(1, 2000)
    if roll < 0.7:
        return rnd.choice(EDGE_SIZES) + rnd.choice((-1, 0, 0, 1))
    if roll < 0.93 or not big:
        return rnd.randint(2000, 600 * KiB)
    return rnd.randint(1 * MiB, 16 * MiB)


def _segment(rnd: random.Random) -> str:
    pieces = []
    for _ in range(rnd.randint(0, 6)):
        roll = rnd.random()
        if roll < 0.5:
            pieces.append(rnd.choice("abcXYZ019"))
        elif roll < 0.75:
            pieces.append(rnd.choice(PCHARS))
        else:
            pieces.append(rnd.choice(("%20", "%2F", "%25", "%C3%A9", "%3F", "%23", "%7e")))
    return "".join(pieces)


def _target(rnd: random.Random) -> str:
    segments = [_segment(rnd) for _ in range(rnd.randint(0, 4))]
    path = "/" + "/".join(segments)
    if rnd.random() < 0.6:
        params = []
        for _ in range(rnd.randint(0, 4)):
            name = rnd.choice(("a", "B", "x-y", "%20k", "", "q.q"))
            value = rnd.choice(("1", "", "x=y", "%26", "a+b", "%E2%82%AC", "~!$'()*,;:@/?"))
            params.append(f"{name}={value}" if rnd.random() < 0.8 else name)
        path += "?" + "&".join(params)
    return path


def _headers(rnd: random.Random, prefix: str) -> list[tuple[str, str]]:
    headers: list[tuple[str, str]] = []
    for i in range(rnd.randint(0, 5)):
        name = rnd.choice((f"{prefix}-Plain", f"{prefix}-miXed-CASE", f"{prefix.lower()}-lower"))
        name = f"{name}-{i}" if rnd.random() < 0.5 else name
        value = rnd.choice(("v", "a, b", "  spaced  value", "x=1; y=2", '"quoted"', "é"))
        headers.append((name, value.strip()))
        if rnd.random() < 0.3:  # a repeat of the same field, possibly in another case
            headers.append((name.swapcase() if rnd.random() < 0.5 else name, "again"))
    return headers


def make_batch(
    seed: int, size: int | None = None, cold: bool | None = None, big: bool = True
) -> Batch:
    """
    Generate the batch for ``seed``: 1 to 200 exchanges started together.

    :param size: force the number of exchanges (``None``: drawn from the seed).
    :param cold: whether the runner restarts the HTTP agent first (``None``: drawn).
    :param big: allow bodies up to 16 MiB (the short run keeps them smaller).
    """
    rnd = random.Random(seed)
    drawn_size = rnd.choice((1, 1, 2, 5, 10, 20, 50, 200))
    drawn_cold = rnd.random() < 0.3
    size = drawn_size if size is None else size
    cold = drawn_cold if cold is None else cold
    batch = Batch(seed=seed, cold=cold, size=size)
    budget = 48 * MiB  # total body bytes in one batch, so 200 at once stays light
    for i in range(size):
        key = f"{seed}-{i}"
        roll = rnd.random()
        if roll < 0.08:
            batch.exchanges.append(_ws(rnd, key))
        elif roll < 0.16:
            n = min(_size(rnd, big), budget)
            budget -= n
            batch.exchanges.append(
                Exchange(key=key, kind="tcp", body_size=n, tcp_half_close=rnd.random() < 0.3)
            )
        else:
            exchange = _http(rnd, key, big and budget > 16 * MiB)
            budget -= exchange.body_size + exchange.response_size
            batch.exchanges.append(exchange)
    return batch


def _ws(rnd: random.Random, key: str) -> Exchange:
    messages = tuple(
        (rnd.choice((1, 2)), rnd.choice((0, 1, 125, 126, 1000, 65535, 65536, 70000)))
        for _ in range(rnd.randint(1, 5))
    )
    return Exchange(
        key=key,
        kind="ws",
        target=_target(rnd),
        headers=tuple(_headers(rnd, "X-Ws")),
        ws_messages=messages,
    )


def _http(rnd: random.Random, key: str, big: bool) -> Exchange:
    method = rnd.choice(METHODS)
    framing = rnd.choice(("none", "none", "length", "chunked"))
    body_size = 0 if framing == "none" else _size(rnd, big)
    if framing == "chunked" and body_size == 0 and rnd.random() < 0.5:
        body_size = 1
    service = rnd.choices(("normal", "early", "cut"), (0.85, 0.08, 0.07))[0]
    client = rnd.choices(
        ("normal", "slow_read", "close_after_head", "close_mid_body"), (0.8, 0.1, 0.05, 0.05)
    )[0]
    status = rnd.choice((200, 200, 200, 201, 204, 302, 404, 500, 503))
    response_size = 0 if status == 204 else _size(rnd, big)
    response_framing = rnd.choice(("length", "length", "chunked", "close"))
    if service == "cut":
        response_size = max(response_size, 10)
        if response_framing == "close":
            response_framing = "length"
    if client == "slow_read":
        response_size = min(response_size, 2 * MiB)
    response_headers = _headers(rnd, "X-Resp")
    if rnd.random() < 0.3:
        response_headers += [("Set-Cookie", "a=1; Path=/"), ("Set-Cookie", "b=2")]
    if rnd.random() < 0.5:
        response_headers.append(("Content-Type", rnd.choice(("text/plain", "application/x-y"))))
    trailers: tuple[tuple[str, str], ...] = ()
    if framing == "chunked" and rnd.random() < 0.4:
        trailers = (("X-Trailer-One", "t1"), ("x-trailer-two", "t 2"))
    return Exchange(
        key=key,
        kind="http",
        method=method,
        target=_target(rnd),
        headers=tuple(_headers(rnd, "X-Req")),
        framing=framing,
        body_size=body_size,
        chunk_ext=framing == "chunked" and rnd.random() < 0.4,
        trailers=trailers,
        expect_continue=framing != "none" and body_size > 0 and rnd.random() < 0.15,
        client=client,
        service=service,
        status=status,
        response_framing=response_framing,
        response_size=response_size,
        response_headers=tuple(response_headers),
    )


def batch_seeds(master: int, count: int) -> list[int]:
    """The per-round seeds of a run, derived from its master seed (each replays alone)."""
    rnd = random.Random(master)
    return [rnd.randrange(1, 2**31) for _ in range(count)]

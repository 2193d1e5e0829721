"""
Micro-benchmark: parse one typical proxied request head with httptools (llhttp) and h11.

Run: ``python benchmarks/http_parser.py``.  Prints microseconds per head and heads per second for
each parser.  This is what chose httptools for ``piko.http.parser``: the proxy parses one head per
request on the reactor thread, so the per-head cost is the ceiling on requests per second.
"""

from __future__ import annotations

import timeit

import h11
import httptools

HEAD = (
    b"POST /upload?name=piko&x=1 HTTP/1.1\r\n"
    b"Host: ep1.example.com:8000\r\n"
    b"User-Agent: curl/7.88.1\r\n"
    b"Accept: */*\r\n"
    b"x-piko-endpoint: ep1\r\n"
    b"Content-Length: 11\r\n"
    b"Content-Type: application/x-www-form-urlencoded\r\n"
    b"Authorization: Bearer aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n"
    b"Cookie: session=0123456789abcdef; theme=dark\r\n"
    b"\r\n"
)


class _Collect:
    def __init__(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.url = b""

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        pass


def parse_httptools() -> None:
    c = _Collect()
    p = httptools.HttpRequestParser(c)
    p.feed_data(HEAD)
    p.get_method()
    p.get_http_version()


def parse_h11() -> None:
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(HEAD)
    ev = conn.next_event()
    assert isinstance(ev, h11.Request)


def main() -> None:
    for name, fn in (("httptools (llhttp)", parse_httptools), ("h11", parse_h11)):
        n = 20000
        best = min(timeit.repeat(fn, number=n, repeat=5)) / n
        print(f"{name:20s} {best * 1e6:8.2f} us/head  {1 / best:12,.0f} heads/s")


if __name__ == "__main__":
    main()

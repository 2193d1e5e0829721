"""Byte-exact checks of :mod:`piko.http.rewrite` against the Go Piko transcripts."""

import re

from twisted.trial.unittest import SynchronousTestCase

from piko.http.parser import HeadEvent, RequestReader, ResponseReader
from piko.http.rewrite import (
    go_response_head,
    join_target,
    response_headers_for_relay,
    rewrite_request,
    upgrade_response_head,
)
from piko.test.interop import read_bytes

STREAMS = "upstream-http/upstream-conn/conn1.streams"


def parse_request(data):
    reader = RequestReader()
    reader.feed(data)
    ev = reader.next_event()
    assert isinstance(ev, HeadEvent)
    return ev


def parse_response(data):
    reader = ResponseReader()
    reader.feed(data)
    ev = reader.next_event()
    assert isinstance(ev, HeadEvent)
    return ev


def head_of(data):
    return data[: data.index(b"\r\n\r\n") + 4]


def date_of(data):
    return re.search(rb"Date: ([^\r]*)\r\n", data).group(1)


class ServerRewriteTests(SynchronousTestCase):
    """The server writes on the stream what Go Piko writes."""

    def test_http_requests(self):
        """Each downstream request becomes exactly Go's stream request head."""
        for n in (1, 2, 3):
            ev = parse_request(read_bytes(f"upstream-http/downstream/conn{n}.client-to-proxy.bin"))
            got = rewrite_request(
                ev.head, ev.framing, "127.0.0.1", close=True, add_accept_encoding=True
            )
            want = head_of(read_bytes(f"{STREAMS}/stream-{2 * n}.server-to-agent.bin"))
            self.assertEqual(got, want)

    def test_no_accept_encoding_by_default(self):
        """By default no Accept-Encoding is invented, so clients never get unasked-for gzip."""
        ev = parse_request(read_bytes("upstream-http/downstream/conn1.client-to-proxy.bin"))
        got = rewrite_request(ev.head, ev.framing, "127.0.0.1", close=True)
        self.assertNotIn(b"Accept-Encoding", got)
        self.assertTrue(got.endswith(b"X-Piko-Forward: true\r\nConnection: close\r\n\r\n"))

    def test_websocket_upgrade(self):
        """An upgrade keeps Connection/Upgrade sorted in and gets no Connection: close."""
        base = "upstream-websocket-passthrough"
        ev = parse_request(read_bytes(f"{base}/downstream/conn1.client-to-proxy.bin"))
        got = rewrite_request(
            ev.head, ev.framing, "127.0.0.1", close=True, add_accept_encoding=True
        )
        want = head_of(
            read_bytes(f"{base}/upstream-conn/conn1.streams/stream-2.server-to-agent.bin")
        )
        self.assertEqual(got, want)

    def test_forwarded_for_appends(self):
        """An existing X-Forwarded-For gets the client IP appended; hop-by-hop headers go."""
        ev = parse_request(
            b"DELETE /x HTTP/1.1\r\nHost: a.b\r\n"
            b"x-forwarded-for: 1.2.3.4\r\nConnection: x-drop, keep-alive\r\n"
            b"X-Drop: 1\r\nKeep-Alive: 5\r\nTe: trailers, gzip\r\n\r\n"
        )
        got = rewrite_request(ev.head, ev.framing, "10.0.0.1", close=True)
        self.assertEqual(
            got,
            b"DELETE /x HTTP/1.1\r\nHost: a.b\r\n"
            b"Te: trailers\r\nX-Forwarded-For: 1.2.3.4, 10.0.0.1\r\n"
            b"X-Piko-Forward: true\r\nConnection: close\r\n\r\n",
        )

    def test_chunked_request(self):
        """A chunked body is declared chunked; an empty POST gets Content-Length: 0."""
        ev = parse_request(b"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n")
        got = rewrite_request(ev.head, ev.framing, None, close=True)
        self.assertTrue(
            got.startswith(b"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nX-Piko")
        )
        ev = parse_request(b"POST /x HTTP/1.1\r\nHost: h\r\n\r\n")
        self.assertIn(
            b"Content-Length: 0\r\n", rewrite_request(ev.head, ev.framing, None, close=True)
        )


class AgentRewriteTests(SynchronousTestCase):
    """The agent sends the local service what the Go agent sends."""

    def test_local_service_requests(self):
        """Each stream request becomes exactly the local service's request head (keep-alive)."""
        for n in (1, 2, 3):
            ev = parse_request(read_bytes(f"{STREAMS}/stream-{2 * n}.server-to-agent.bin"))
            got = rewrite_request(ev.head, ev.framing, "127.0.0.1", close=False)
            want = head_of(read_bytes(f"upstream-http/local-service/req{n}.bin"))
            self.assertEqual(got, want)

    def test_target_path_join(self):
        """The target URL's path and query are joined as Go's NewSingleHostReverseProxy does."""
        self.assertEqual(join_target(b"/base", b"", b"/x?a=1"), b"/base/x?a=1")
        self.assertEqual(join_target(b"/base/", b"k=v", b"/x?a=1"), b"/base/x?k=v&a=1")
        self.assertEqual(join_target(b"/base/", b"k=v", b"/x"), b"/base/x?k=v")

    def test_agent_answer(self):
        """The agent answers on the stream with handler headers sorted, Date, Connection: close."""
        for n in (1, 2, 3):
            local = read_bytes(f"{STREAMS}/stream-{2 * n}.agent-to-server.bin")
            want = head_of(local)
            # The local service's own response (as the agent's handler saw it): no Date.
            resp = parse_response(
                want.replace(b"Date: " + date_of(local) + b"\r\n", b"").replace(
                    b"Connection: close\r\n", b""
                )
            )
            got = go_response_head(
                200, response_headers_for_relay(resp.head), date_of(local), close=True
            )
            self.assertEqual(got, want)

    def test_proxy_answer(self):
        """The proxy re-serialises the agent's answer with all headers sorted and no Connection."""
        for n in (1, 2, 3):
            resp = parse_response(read_bytes(f"{STREAMS}/stream-{2 * n}.agent-to-server.bin"))
            got = go_response_head(200, response_headers_for_relay(resp.head), b"unused")
            want = head_of(read_bytes(f"upstream-http/downstream/conn{n}.proxy-to-client.bin"))
            self.assertEqual(got, want)

    def test_upgrade_answer(self):
        """A 101 reaches the client re-cased and sorted, as Go relays it."""
        base = "upstream-websocket-passthrough"
        resp = parse_response(
            read_bytes(f"{base}/upstream-conn/conn1.streams/stream-2.agent-to-server.bin")
        )
        want = head_of(read_bytes(f"{base}/downstream/conn1.proxy-to-client.bin"))
        self.assertEqual(upgrade_response_head(resp.head), want)

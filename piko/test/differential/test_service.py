# -*- test-case-name: piko.test.differential.test_service -*-
"""
Tests for the harness's instrumented local HTTP service, on loopback with
asyncio (the harness's own world), each bounded in time.
"""

from __future__ import annotations

import asyncio

from twisted.trial.unittest import SynchronousTestCase

from piko.test.differential import service, wire
from piko.test.differential.spec import Exchange

#: Bound on every wait for something that must happen.
BOUND = 5.0


def _request(key: str) -> bytes:
    return f"GET / HTTP/1.1\r\nHost: diff.test\r\n{service.KEY_HEADER}: {key}\r\n\r\n".encode()


async def _answer(reader: asyncio.StreamReader) -> int:
    head = await asyncio.wait_for(wire.read_head(reader), BOUND)
    assert head is not None
    await asyncio.wait_for(wire.read_body(reader, head), BOUND)
    return int(head.start.split(" ")[1])


class IdleCloseTests(SynchronousTestCase):
    """
    The service closes idle kept-alive connections only between rounds: one
    closed during a round races the proxy's next request on it, and Go and
    ours then fail a non-replayable request with 502 at random (seed 16824817).
    """

    def setUp(self) -> None:
        self.patch(service, "IDLE_CLOSE", 0.01)

    def test_kept_during_round_closed_after(self) -> None:
        async def scenario() -> tuple[int, bytes | None, int, bytes]:
            http = service.LocalHTTPService()
            port = await http.start()
            try:
                http.expect([Exchange(key="k-0", kind="http"), Exchange(key="k-1", kind="http")])
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(_request("k-0"))
                first = await _answer(reader)
                # Idle for many IDLE_CLOSE periods: a close would show as EOF here.
                try:
                    early: bytes | None = await asyncio.wait_for(
                        reader.read(1), 20 * service.IDLE_CLOSE
                    )
                except TimeoutError:
                    early = None
                writer.write(_request("k-1"))
                second = await _answer(reader)
                http.end_round()
                late = await asyncio.wait_for(reader.read(1), BOUND)
                writer.close()
                return first, early, second, late
            finally:
                await http.stop()

        first, early, second, late = asyncio.run(scenario())
        self.assertEqual((first, early, second), (200, None, 200))
        self.assertEqual(late, b"")

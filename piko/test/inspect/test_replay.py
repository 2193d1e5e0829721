# -*- test-case-name: piko.test.inspect.test_replay -*-
"""Tests for :mod:`piko.inspect.replay`: building replayed requests, replays through the relay."""

from twisted.trial.unittest import SynchronousTestCase

from piko.inspect.replay import Modifications, ReplayError, build_request
from piko.test.agent.helpers import take
from piko.test.inspect.test_capture import POST, exchange, setup


def captured(body=b'{"a": 1}\n', body_cap=64 * 1024):
    """An inspector holding one answered POST; returns ``(pair, endpoint, inspector, record)``."""
    pair, endpoint, inspector = setup(body_cap=body_cap)
    recorder = pair.open()
    recorder.transport.write(POST % len(body) + body)
    pair.pump()
    take(endpoint.transports[0])
    endpoint.protocols[0].dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    pair.pump()
    return pair, endpoint, inspector, exchange(inspector)


class BuildRequestTests(SynchronousTestCase):
    def test_exact(self):
        """The same method, target and headers; the body framed with Content-Length."""
        _, _, _, record = captured()
        self.assertEqual(
            build_request(record),
            b"POST /hook?x=1 HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\n"
            b"X-Forwarded-For: 203.0.113.9\r\nContent-Length: 9\r\nConnection: close\r\n\r\n"
            b'{"a": 1}\n',
        )

    def test_modified(self):
        """Method, path, headers and body replaced; a missing Host gets one."""
        _, _, _, record = captured()
        changes = Modifications(
            method=b"PUT", target=b"/other", headers=((b"X-Test", b"1"),), body=b"new"
        )
        self.assertEqual(
            build_request(record, changes),
            b"PUT /other HTTP/1.1\r\nHost: localhost\r\nX-Test: 1\r\nContent-Length: 3\r\n"
            b"Connection: close\r\n\r\nnew",
        )

    def test_invalid_modifications_refused(self):
        """Header injection, a bad method or a path without ``/`` is a clear error."""
        _, _, _, record = captured()
        for changes, message in (
            (Modifications(headers=((b"X", b"a\r\nInjected: 1"),)), "invalid value for header X"),
            (Modifications(headers=((b"Bad Name", b"v"),)), "invalid header name"),
            (Modifications(method=b"GE T"), "invalid method"),
            (Modifications(target=b"http://elsewhere/"), "must start with /"),
        ):
            error = self.assertRaises(ReplayError, build_request, record, changes)
            self.assertIn(message, str(error))

    def test_truncated_body_needs_a_new_one(self):
        """A truncated body cannot be replayed as it was, only with a body given."""
        _, _, _, record = captured(body=b"z" * 50, body_cap=10)
        error = self.assertRaises(ReplayError, build_request, record)
        self.assertIn("truncated (50 bytes, 10 kept)", str(error))
        self.assertTrue(build_request(record, Modifications(body=b"ok")).endswith(b"\r\n\r\nok"))


class ReplayTests(SynchronousTestCase):
    def test_replay_goes_through_the_relay(self):
        """
        A replay reaches the local service rewritten as a relayed request would be, and is
        captured as a new exchange marked as the original's replay.
        """
        pair, endpoint, inspector, record = captured()
        results = []
        inspector.replay(
            record.id, Modifications(headers=((b"Host", b"h"), (b"X-Test", b"2")))
        ).addCallback(results.append)
        pair.pump()
        sent = take(endpoint.transports[-1])
        self.assertTrue(sent.startswith(b"POST /hook?x=1 HTTP/1.1\r\nHost: h\r\n"), sent)
        self.assertIn(b"\r\nX-Test: 2\r\n", sent)
        self.assertIn(b"\r\nX-Forwarded-For: 127.0.0.1\r\n", sent)
        self.assertTrue(sent.endswith(b'\r\n\r\n{"a": 1}\n'))
        self.assertEqual(results, [])
        endpoint.protocols[-1].dataReceived(
            b"HTTP/1.1 202 Accepted\r\nContent-Length: 3\r\n\r\nyes"
        )
        pair.pump()
        [replayed] = results
        self.assertEqual((replayed.replay_of, replayed.status), (record.id, 202))
        self.assertEqual(bytes(replayed.response_body.data), b"yes")
        self.assertEqual([r.id for r in inspector.store.exchanges()], [replayed.id, record.id])

    def test_unknown_id(self):
        """Replaying an id not kept raises KeyError."""
        pair, endpoint, inspector, record = captured()
        self.assertRaises(KeyError, inspector.replay, "req_nope")

    def test_refused_head_fails_the_replay(self):
        """A request the HTTP reader refuses (no exchange) fails the replay with why."""
        pair, endpoint, inspector, record = captured()
        failures = []
        # A head over the reader's limit (1 MiB).
        changes = Modifications(headers=((b"Host", b"h"), (b"X-Big", b"v" * (2 << 20))))
        inspector.replay(record.id, changes).addErrback(failures.append)
        pair.pump()
        [failure] = failures
        self.assertIn("the request was refused: HTTP/1.1 431", str(failure.value))

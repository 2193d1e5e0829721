# -*- test-case-name: piko.test.agent.test_pool -*-
"""Tests for :class:`piko.http.pool.ConnectionPool`."""

from twisted.internet.error import ConnectionLost, ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from piko.http.pool import ConnectionPool, StaleConnection
from piko.http.proxy import IUpstreamConnector
from piko.test.agent.helpers import FakeEndpoint
from piko.test.mux.helpers import HalfCloseRecorder


def make(mode="ok", **kwargs):
    clock = Clock()
    endpoint = FakeEndpoint(mode)
    return clock, endpoint, ConnectionPool(clock, endpoint, **kwargs)


def lease(pool):
    user = HalfCloseRecorder()
    d = pool.connect(user)
    results = []
    d.addBoth(results.append)
    return user, results[0]


class PoolTests(SynchronousTestCase):
    def test_interface(self):
        """The pool provides IUpstreamConnector."""
        verifyObject(IUpstreamConnector, make()[2])

    def test_reuses_released_connection(self):
        """A connection released as reusable serves the next request without a new dial."""
        clock, endpoint, pool = make()
        u1, _ = lease(pool)
        u1.transport.write(b"one")
        pool.release(u1, True)
        u2, _ = lease(pool)
        u2.transport.write(b"two")
        self.assertEqual(len(endpoint.transports), 1)
        self.assertEqual(endpoint.transports[0].value(), b"onetwo")
        self.assertTrue(u2.made)

    def test_not_reusable_closes(self):
        """A connection released as not reusable is closed and never handed out again."""
        clock, endpoint, pool = make()
        u1, _ = lease(pool)
        pool.release(u1, False)
        self.assertTrue(endpoint.transports[0].disconnecting)
        lease(pool)
        self.assertEqual(len(endpoint.transports), 2)

    def test_idle_timeout(self):
        """An idle connection is closed after idle_timeout seconds."""
        clock, endpoint, pool = make(idle_timeout=90)
        u1, _ = lease(pool)
        pool.release(u1, True)
        clock.advance(89)
        self.assertFalse(endpoint.transports[0].disconnecting)
        clock.advance(1)
        self.assertTrue(endpoint.transports[0].disconnecting)
        self.assertEqual(len(pool.idle), 0)

    def test_reuse_cancels_idle_timer(self):
        """A reused connection is not closed by the idle timer of its idle period."""
        clock, endpoint, pool = make(idle_timeout=90)
        u1, _ = lease(pool)
        pool.release(u1, True)
        clock.advance(50)
        lease(pool)
        clock.advance(100)
        self.assertFalse(endpoint.transports[0].disconnecting)

    def test_max_idle(self):
        """Beyond max_idle idle connections the oldest is closed."""
        clock, endpoint, pool = make(max_idle=1)
        u1, _ = lease(pool)
        u2, _ = lease(pool)
        pool.release(u1, True)
        pool.release(u2, True)
        self.assertTrue(endpoint.transports[0].disconnecting)
        self.assertFalse(endpoint.transports[1].disconnecting)

    def test_max_idle_unlimited(self):
        """max_idle of 0 or less keeps every idle connection."""
        clock, endpoint, pool = make(max_idle=-1)
        users = [lease(pool)[0] for _ in range(5)]
        for u in users:
            pool.release(u, True)
        self.assertEqual(len(pool.idle), 5)

    def test_newest_idle_reused_first(self):
        """The most recently released connection is reused first, as Go does."""
        clock, endpoint, pool = make()
        u1, _ = lease(pool)
        u2, _ = lease(pool)
        pool.release(u1, True)
        pool.release(u2, True)
        u3, _ = lease(pool)
        u3.transport.write(b"x")
        self.assertEqual(endpoint.transports[1].value(), b"x")

    def test_idle_eof_discards(self):
        """An idle connection the service closes is dropped from the pool."""
        clock, endpoint, pool = make()
        u1, _ = lease(pool)
        pool.release(u1, True)
        endpoint.protocols[0].readConnectionLost()
        self.assertEqual(len(pool.idle), 0)
        self.assertTrue(endpoint.transports[0].disconnecting)

    def test_stale_lease_is_inert(self):
        """A released lease cannot close the connection it no longer holds."""
        clock, endpoint, pool = make()
        u1, _ = lease(pool)
        old = u1.transport
        pool.release(u1, True)
        old.loseConnection()
        old.stopProducing()
        old.write(b"late")
        self.assertFalse(endpoint.transports[0].disconnecting)
        self.assertEqual(endpoint.transports[0].value(), b"")

    def test_reused_connection_lost_before_response_is_stale(self):
        """A reused connection lost before any response byte reports StaleConnection."""
        clock, endpoint, pool = make()
        u1, _ = lease(pool)
        pool.release(u1, True)
        u2, _ = lease(pool)
        endpoint.protocols[0].connectionLost(Failure(ConnectionLost()))
        self.assertTrue(u2.lost.check(StaleConnection))

    def test_first_use_loss_not_stale(self):
        """A new connection lost before the response is an ordinary loss, not stale."""
        clock, endpoint, pool = make()
        u1, _ = lease(pool)
        endpoint.protocols[0].connectionLost(Failure(ConnectionLost()))
        self.assertFalse(u1.lost.check(StaleConnection))

    def test_loss_after_response_bytes_not_stale(self):
        """Once a response byte arrived, a loss is not stale (the request must not be resent)."""
        clock, endpoint, pool = make()
        u1, _ = lease(pool)
        pool.release(u1, True)
        u2, _ = lease(pool)
        endpoint.protocols[0].dataReceived(b"HTTP/1.1")
        endpoint.protocols[0].connectionLost(Failure(ConnectionLost()))
        self.assertFalse(u2.lost.check(StaleConnection))

    def test_fresh_skips_idle(self):
        """connect(fresh=True) dials a new connection even if one is idle."""
        clock, endpoint, pool = make()
        u1, _ = lease(pool)
        pool.release(u1, True)
        pool.connect(HalfCloseRecorder(), fresh=True)
        self.assertEqual(len(endpoint.transports), 2)

    def test_refused_fails(self):
        """A refused dial fails the Deferred."""
        clock, endpoint, pool = make("refuse")
        user, result = lease(pool)
        self.assertTrue(result.check(ConnectionRefusedError))

    def test_close_drops_idle(self):
        """close() closes every idle connection."""
        clock, endpoint, pool = make()
        u1, _ = lease(pool)
        pool.release(u1, True)
        pool.close()
        self.assertTrue(endpoint.transports[0].disconnecting)

# -*- test-case-name: piko.test.inspect.test_store -*-
"""Tests for :mod:`piko.inspect.store`: body caps, the byte budget and eviction."""

from twisted.trial.unittest import SynchronousTestCase

from piko.inspect.store import (
    RECORD_OVERHEAD,
    BodyCapture,
    CaptureStore,
    ConnectionRecord,
    ExchangeRecord,
)


def exchange(store, cost=RECORD_OVERHEAD):
    record = ExchangeRecord(
        id=store.new_id("req"),
        endpoint_id="ep",
        started=0.0,
        method=b"GET",
        target=b"/",
        version=b"1.1",
        raw_head=b"",
        request_body=BodyCapture(store.body_cap),
        response_body=BodyCapture(store.body_cap),
        cost=cost,
    )
    return record


def capture(store, record, body, data):
    """Capture ``data`` into ``body`` of ``record``, charging as the capture does."""
    kept = body.append(data)
    if kept:
        store.charge(record, kept)


class BodyCaptureTests(SynchronousTestCase):
    def test_keeps_up_to_cap_and_counts_all(self):
        """The first ``cap`` bytes are kept, every byte is counted, and truncation is flagged."""
        body = BodyCapture(5)
        self.assertEqual(body.append(b"abc"), 3)
        self.assertFalse(body.truncated)
        self.assertEqual(body.append(b"defgh"), 2)
        self.assertEqual(body.append(b"ijk"), 0)
        self.assertEqual((bytes(body.data), body.size, body.truncated), (b"abcde", 11, True))
        self.assertEqual(body.to_json(), {"size": 11, "captured": 5, "truncated": True})

    def test_zero_cap_keeps_nothing(self):
        """A cap of 0 keeps no byte but still counts them."""
        body = BodyCapture(0)
        body.append(b"xyz")
        self.assertEqual((bytes(body.data), body.size, body.truncated), (b"", 3, True))


class CaptureStoreTests(SynchronousTestCase):
    def test_oldest_evicted_past_budget(self):
        """Past the budget the oldest records go first, and the total stays within it."""
        store = CaptureStore(budget=3 * RECORD_OVERHEAD, clock=lambda: 0.0)
        records = [exchange(store) for _ in range(5)]
        for r in records:
            store.add(r)
        self.assertEqual([r.id for r in store.exchanges()], [r.id for r in records[:1:-1]])
        self.assertEqual((store.used, store.evicted), (3 * RECORD_OVERHEAD, 2))

    def test_growing_body_evicts_others(self):
        """Bytes captured into a record in flight are charged, and evict older records."""
        store = CaptureStore(budget=3 * RECORD_OVERHEAD, body_cap=10_000, clock=lambda: 0.0)
        old, new = exchange(store), exchange(store)
        store.add(old)
        store.add(new)
        capture(store, new, new.response_body, b"x" * RECORD_OVERHEAD)
        self.assertIsNotNone(store.get(old.id))
        capture(store, new, new.response_body, b"x")
        self.assertIsNone(store.get(old.id))
        self.assertEqual(store.used, new.cost)

    def test_single_record_over_budget_is_kept(self):
        """A record alone over the budget stays (it is all there is to show)."""
        store = CaptureStore(budget=10, clock=lambda: 0.0)
        record = exchange(store)
        store.add(record)
        self.assertIs(store.get(record.id), record)

    def test_evicted_record_charges_nothing(self):
        """Once evicted, a record still capturing costs the store nothing."""
        store = CaptureStore(budget=RECORD_OVERHEAD, body_cap=100, clock=lambda: 0.0)
        first, second = exchange(store), exchange(store)
        store.add(first)
        store.add(second)
        self.assertIsNone(store.get(first.id))
        used = store.used
        store.charge(first, 50)
        self.assertEqual(store.used, used)

    def test_clear_by_kind(self):
        """Clearing exchanges keeps connection records, and announces the clear."""
        store = CaptureStore(clock=lambda: 0.0)
        events = []
        store.subscribe(lambda kind, record: events.append(kind))
        store.add(exchange(store))
        conn = ConnectionRecord(id=store.new_id("conn"), kind="tcp", endpoint_id="e", started=0)
        store.add(conn)
        store.clear(ExchangeRecord)
        self.assertEqual(list(store.exchanges()), [])
        self.assertEqual(list(store.connections()), [conn])
        self.assertEqual(store.used, conn.cost)
        self.assertEqual(events, ["started", "started", "cleared"])

    def test_unsubscribe(self):
        """An unsubscribed callback hears nothing more."""
        store = CaptureStore(clock=lambda: 0.0)
        events = []
        unsubscribe = store.subscribe(lambda kind, record: events.append(kind))
        unsubscribe()
        unsubscribe()
        store.add(exchange(store))
        self.assertEqual(events, [])

# -*- test-case-name: piko.test.policy.test_limits -*-
"""
Concurrent requests per endpoint, and the body-size counter.

In-flight counts live in :class:`InFlight`, owned by the handler rather than
a policy, so a reload neither resets them nor lets the new policy admit a
second full quota beside requests the old one admitted.  An endpoint's entry
goes when its count returns to 0, so the table is bounded by the requests in
flight.
"""

from __future__ import annotations


class InFlight:
    """Requests in flight by endpoint."""

    __slots__ = ("counts",)

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def acquire(self, endpoint_id: str, limit: int) -> bool:
        """Count one more request unless ``limit`` are in flight already."""
        count = self.counts.get(endpoint_id, 0)
        if count >= limit:
            return False
        self.counts[endpoint_id] = count + 1
        return True

    def release(self, endpoint_id: str) -> None:
        """One request ended."""
        count = self.counts.get(endpoint_id, 0) - 1
        if count <= 0:
            self.counts.pop(endpoint_id, None)
        else:
            self.counts[endpoint_id] = count

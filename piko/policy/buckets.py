# -*- test-case-name: piko.test.policy.test_buckets -*-
"""
Token buckets by key, in bounded memory.

A rate limit keyed by client address meets as many keys as the internet has
addresses.  The store is an LRU (:class:`~collections.OrderedDict`, O(1) to
touch and to drop the oldest) with two bounds:

* a bucket idle long enough to have refilled completely holds no
  information (a new bucket would be identical), so it is dropped as soon as
  it is the oldest: the store holds only the keys seen in about the last
  ``burst / rate`` seconds;
* a hard cap, ``max_keys``: a new key beyond it evicts the least recently
  used bucket even if not yet full (which gives that key a fresh bucket; a
  flood of new addresses can so weaken the limit for the keys it evicts, but
  can never grow memory).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable

#: Buckets examined for idleness per :meth:`TokenBucketStore.take`: the sweep is
#: amortised over the requests that arrive, with no timer.
SWEEP_PER_TAKE = 2


class TokenBucketStore:
    """
    Token buckets of ``burst`` tokens refilled at ``rate`` tokens a second, by key.

    :param seconds: the clock (``reactor.seconds``, or a ``task.Clock``'s).
    :param rate: tokens added per second.
    :param burst: the bucket size (at least 1).
    :param max_keys: the most buckets held.
    """

    __slots__ = ("_buckets", "_full_after", "burst", "evicted", "max_keys", "rate", "seconds")

    def __init__(
        self, seconds: Callable[[], float], rate: float, burst: int, max_keys: int
    ) -> None:
        if rate <= 0 or burst < 1 or max_keys < 1:
            raise ValueError("rate, burst and max_keys must be positive")
        self.seconds = seconds
        self.rate = rate
        self.burst = float(burst)
        self.max_keys = max_keys
        #: Seconds after which an untouched bucket is full again, whatever it held.
        self._full_after = self.burst / rate
        #: key -> (tokens after the last take, time of the last take)
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        #: buckets dropped by the hard cap (not by idleness)
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str) -> float:
        """
        Take one token from ``key``'s bucket.

        :returns: 0.0 when the token was taken, else the seconds until one
            will be there (for ``Retry-After``).
        """
        now = self.seconds()
        buckets = self._buckets
        state = buckets.get(key)
        if state is None:
            tokens = self.burst
            self._sweep(now)
            if len(buckets) >= self.max_keys:
                buckets.popitem(last=False)
                self.evicted += 1
        else:
            tokens, last = state
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            buckets.move_to_end(key)
        if tokens >= 1.0:
            buckets[key] = (tokens - 1.0, now)
            return 0.0
        buckets[key] = (tokens, now)
        return (1.0 - tokens) / self.rate

    def _sweep(self, now: float) -> None:
        """Drop up to :data:`SWEEP_PER_TAKE` of the oldest buckets that are full again."""
        buckets = self._buckets
        horizon = now - self._full_after
        for _ in range(SWEEP_PER_TAKE):
            if not buckets:
                return
            key, (_, last) = next(iter(buckets.items()))
            if last > horizon:
                return
            del buckets[key]


def retry_after(seconds: float) -> int:
    """``Retry-After`` in whole seconds (at least 1) for a wait of ``seconds``."""
    return max(1, math.ceil(seconds))

# -*- test-case-name: piko.test.client.test_backoff -*-
"""
Exponential backoff with full jitter, for reconnecting upstreams.

Go Piko waits ``min * 2**n`` times a jitter of 1.0-1.1; after a server
restart every agent then comes back in the same instant.  Full jitter
(a uniform draw between 0 and the exponential ceiling) spreads them out.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from attrs import define, field


@define
class Backoff:
    """
    Successive reconnect delays.

    :param minimum: the ceiling of the first delay, in seconds.
    :param maximum: the largest ceiling.
    :param uniform: draws a float between its two arguments (injected in tests).
    """

    minimum: float = 0.1
    maximum: float = 15.0
    uniform: Callable[[float, float], float] = random.uniform
    attempts: int = field(default=0, init=False)

    def next_delay(self) -> float:
        """The delay before the next attempt; each call raises the ceiling."""
        ceiling = min(self.maximum, self.minimum * (2 ** min(self.attempts, 60)))
        self.attempts += 1
        return self.uniform(0.0, ceiling)

    def reset(self) -> None:
        """Start again from the minimum (after a successful connection)."""
        self.attempts = 0

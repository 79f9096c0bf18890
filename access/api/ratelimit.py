"""Token buckets per key (a credential, a client address): a burst is allowed, a sustained flood gets 429
with Retry-After."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class _Bucket:
    tokens: float
    at: float


@dataclass
class RateLimiter:
    rate_per_s: float
    burst: float
    clock: Callable[[], float] = time.monotonic
    max_keys: int = 100_000
    _buckets: dict[str, _Bucket] = field(default_factory=dict)

    def take(self, key: str) -> float:
        """0 if the request may proceed, else seconds until one token is back."""
        b = self._refilled(key)
        if b.tokens >= 1.0:
            b.tokens -= 1.0
            return 0.0
        return (1.0 - b.tokens) / self.rate_per_s

    def wait(self, key: str) -> float:
        """What ``take`` would answer, taking nothing: for limits charged only when something fails."""
        b = self._buckets.get(key)
        if b is None:
            return 0.0
        tokens = min(self.burst, b.tokens + (self.clock() - b.at) * self.rate_per_s)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate_per_s

    def _refilled(self, key: str) -> _Bucket:
        t = self.clock()
        b = self._buckets.get(key)
        if b is None:
            if len(self._buckets) >= self.max_keys:
                self._buckets.clear()  # memory bound: forgetting grants a fresh burst, never a refusal
            b = self._buckets[key] = _Bucket(self.burst, t)
        b.tokens = min(self.burst, b.tokens + (t - b.at) * self.rate_per_s)
        b.at = t
        return b

    @staticmethod
    def retry_after_header(seconds: float) -> str:
        return str(max(1, math.ceil(seconds)))

"""Request-per-minute and token-per-minute limits shared by every call in the process.

One `RateLimiter` per provider endpoint and model (see `limiter_for`), whatever engine or thread uses
it: token buckets that refill continuously, so bursts up to one minute's allowance are allowed and the
long-run rate never exceeds the limit. Waiting is `asyncio.sleep`, so waiting calls never block others.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field


@dataclass
class _Bucket:
    per_minute: float
    level: float
    updated: float = field(default_factory=time.monotonic)

    def _refill(self, now: float) -> None:
        self.level = min(self.per_minute, self.level + (now - self.updated) * self.per_minute / 60.0)
        self.updated = now

    def wait_for(self, amount: float, now: float) -> float:
        """Seconds until `amount` is available (0 if it is available now)."""
        self._refill(now)
        # A single request larger than a minute's allowance waits for a full bucket, then runs.
        amount = min(amount, self.per_minute)
        return 0.0 if self.level >= amount else (amount - self.level) * 60.0 / self.per_minute

    def take(self, amount: float) -> None:
        """Consume `amount` (call only after `wait_for` returned 0)."""
        self.level -= min(amount, self.per_minute)


class RateLimiter:
    """Token buckets for requests and tokens per minute; `None` or 0 means unlimited."""

    def __init__(self, requests_per_minute: int | None = None, tokens_per_minute: int | None = None):
        self._lock = threading.Lock()
        self._requests = _Bucket(requests_per_minute, requests_per_minute) if requests_per_minute else None
        self._tokens = _Bucket(tokens_per_minute, tokens_per_minute) if tokens_per_minute else None
        self.waited_seconds = 0.0

    async def acquire(self, tokens: int) -> None:
        """Wait until one request and `tokens` tokens fit within the limits, then take them."""
        buckets = [(bucket, amount) for bucket, amount in ((self._requests, 1), (self._tokens, tokens)) if bucket]
        while True:
            with self._lock:
                now = time.monotonic()
                wait = max((bucket.wait_for(amount, now) for bucket, amount in buckets), default=0.0)
                if wait == 0:
                    for bucket, amount in buckets:
                        bucket.take(amount)
                    return
                self.waited_seconds += wait
            await asyncio.sleep(wait)


_limiters: dict[tuple[str, str, int | None, int | None], RateLimiter] = {}
_registry_lock = threading.Lock()


def limiter_for(endpoint: str, model: str, rpm: int | None, tpm: int | None) -> RateLimiter:
    """The process-wide limiter of one endpoint and model (created on first use)."""
    key = (endpoint, model, rpm, tpm)
    with _registry_lock:
        if key not in _limiters:
            _limiters[key] = RateLimiter(rpm, tpm)
        return _limiters[key]

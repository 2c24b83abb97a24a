"""Request-per-minute and token-per-minute limits shared by every process and worker using one store.

One `RateLimiter` per store, provider endpoint and model (see `limiter_for`), whatever engine, thread
or process uses it: token buckets that refill continuously, kept in the store (`pipeline.store.rate_limits`),
so N processes of a deployment together stay within the provider's limit instead of sending N times it.
Buckets hold `burst_seconds` of the allowance (default one minute); the long-run rate never exceeds the
limit. Waiting is `asyncio.sleep` and the store is asked from a worker thread, so waiting calls never
block others on the engine's event loop.
"""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipeline.store.rate_limits import RateLimitsStore

DEFAULT_BURST_SECONDS = 60.0


class RateLimiter:
    """Token buckets for requests and tokens per minute of one endpoint and model, in `store`; `None` or 0
    means unlimited."""

    def __init__(
        self,
        store: RateLimitsStore,
        key: str,
        requests_per_minute: int | None = None,
        tokens_per_minute: int | None = None,
        *,
        burst_seconds: float = DEFAULT_BURST_SECONDS,
    ):
        if burst_seconds <= 0:
            raise ValueError("burst_seconds must be positive")
        self.store = store
        self.key = key
        self.burst_seconds = burst_seconds
        self._limits = {
            f"{key}|{kind}": float(limit)
            for kind, limit in (("requests", requests_per_minute), ("tokens", tokens_per_minute))
            if limit
        }
        self._lock = threading.Lock()
        self.waited_seconds = 0.0

    async def acquire(self, tokens: int) -> None:
        """Wait until one request and `tokens` tokens fit within the limits, then take them (both or none)."""
        if not self._limits:
            return
        amounts = {f"{self.key}|requests": 1.0, f"{self.key}|tokens": float(tokens)}
        while True:
            # The store call blocks on the database (and, under contention, on other takers' row locks):
            # off the event loop, so the engine's other calls keep running meanwhile.
            wait = await asyncio.to_thread(self.store.take_rate, amounts, self._limits, self.burst_seconds)
            if wait == 0:
                return
            with self._lock:
                self.waited_seconds += wait
            await asyncio.sleep(wait)


_limiters: dict[tuple[str, str, str, int | None, int | None, float], RateLimiter] = {}
_registry_lock = threading.Lock()


def bucket_key(endpoint: str, model: str) -> str:
    """The store key of an endpoint and model's buckets (`|requests` and `|tokens` are appended)."""
    return f"{endpoint}|{model}"


def limiter_for(
    store: RateLimitsStore,
    endpoint: str,
    model: str,
    rpm: int | None,
    tpm: int | None,
    burst_seconds: float = DEFAULT_BURST_SECONDS,
) -> RateLimiter:
    """The limiter of one endpoint and model in `store` (created on first use in this process; its budget
    is shared with every process using the same store)."""
    key = (store.url, endpoint, model, rpm, tpm, burst_seconds)
    with _registry_lock:
        if key not in _limiters:
            _limiters[key] = RateLimiter(store, bucket_key(endpoint, model), rpm, tpm, burst_seconds=burst_seconds)
        return _limiters[key]

"""The concurrent call window: the engine's event loop thread, its semaphore, backlog and slow start.

Calls run on an asyncio loop in one background thread; the caller's thread prepares calls, stores results
and writes the ledger. Up to `concurrency` calls run at once behind a semaphore, with a backlog of prepared
calls (`BACKLOG_FACTOR` times that) waiting so a finished call's slot is refilled on the loop at once.
Until one call has succeeded the window is one call wide, doubling with each call that ends without
success, so a wrong key, model or endpoint costs one request instead of `concurrency` of them.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import enum
import gc
import queue
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pipeline.llm.tasks import ModelCallFailed
from pipeline.llm.wire import Provider, ProviderError

I = TypeVar("I")  # noqa: E741 - the item type of a window of calls
R = TypeVar("R")  # what a provider call returns
O = TypeVar("O")  # noqa: E741 - what the caller is handed per item: a result or a `ModelCallFailed`

BACKLOG_FACTOR = 4
# Each refill claims its items and each hand-over stores its results in one transaction, whose fixed cost
# (~0.5 ms on SQLite) is paid under the GIL the loop needs too. So the window is refilled once a quarter of
# the backlog is free (one claim per ~`concurrency` calls once the window is open, while three quarters
# still wait behind the semaphore), and a hand-over waits up to `LINGER_S` for more results to join it
# (at most `concurrency` of them). Measured: about a tenth as many transactions per stage.
REFILL_SHARE = 4
LINGER_S = 0.05


class Wait(enum.Enum):
    """A call that may not start yet (the budget cannot take it beside the calls in flight): the window
    offers the item again once those calls have settled their real cost."""

    WAIT = "wait"


WAIT = Wait.WAIT


class _Nothing(enum.Enum):
    NOTHING = "nothing"  # no item: the source is exhausted, or none is waiting for the budget


_NOTHING = _Nothing.NOTHING


@dataclass(frozen=True)
class Attempt(Generic[R]):
    """What a call's coroutine returns, on the loop, for the caller's thread to record: never raises."""

    value: R | None
    error: ProviderError | None
    latency: float


@dataclass
class PendingCall(Generic[I, R, O]):
    """A call prepared for the window: what to finish with when the provider answers."""

    item: I
    coroutine: Coroutine[Any, Any, Attempt[R]]
    reserved_usd: float
    finish: Callable[[Attempt[R]], O]
    lease: str | None = None  # the item ref to claim in the store before paying for it
    cache_key: str | None = None  # its response-cache key: another run may have answered it meanwhile
    from_cache: Callable[[], tuple[I, O] | None] | None = None  # the cached answer as a result, if any


# What preparing an item gives: a call to make, a result without a call (cache hit, refusal), or wait.
Prepared = PendingCall[I, R, O] | tuple[I, O] | Wait


class CallWindow:
    """Bounded concurrency for one engine: the loop thread, the slow-start window, money in flight."""

    def __init__(self, concurrency: int):
        self.concurrency = concurrency
        self.proven = False  # one call has succeeded: the whole window is open
        self.calls_in_flight = 0
        self.reserved_usd = 0.0  # budget reservations of the calls in flight
        self._window_size = 1
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._slots: asyncio.Semaphore | None = None

    def batches(
        self,
        items: Iterable[I],
        prepare: Callable[[I], Prepared[I, R, O]],
        claim: Callable[[list[PendingCall[I, R, O]]], tuple[list[PendingCall[I, R, O]], list[tuple[I, O]]]],
        flush: Callable[[], None],
    ) -> Iterator[list[tuple[I, O]]]:
        """Keep up to `concurrency` calls in flight; hand over everything finished since the last hand-over.

        `claim` returns the prepared calls that may be paid for and results served without a call (the
        others are dropped); `flush` writes the ledger before each hand-over. A batch holds what finished
        within `LINGER_S` of its first result (up to `concurrency` results, everything left once no call
        is in flight), and more when results arrive faster than the caller stores them, so persistence
        cost per item stays small exactly when it limits throughput.
        """
        source = iter(items)
        in_flight: dict[concurrent.futures.Future[Attempt[R]], PendingCall[I, R, O]] = {}
        # Calls report themselves here when done: waiting costs O(1) per result, where
        # `concurrent.futures.wait` would hook into every future in flight on every wake-up.
        finished: queue.SimpleQueue[concurrent.futures.Future[Attempt[R]]] = queue.SimpleQueue()
        ready: collections.deque[tuple[I, O]] = collections.deque()
        exhausted = False
        deferred: I | _Nothing = _NOTHING  # an item the budget could not take while other calls were in flight
        ready_since = 0.0  # when the oldest result in `ready` arrived
        try:
            while True:
                # The window is refilled before results are handed over, so calls run while the caller
                # stores (and at the first success the whole window opens at once).
                prepared_calls: list[PendingCall[I, R, O]] = []
                backlog = self._backlog()
                refill = not in_flight or backlog - max(len(in_flight), len(ready)) >= max(1, backlog // REFILL_SHARE)
                while (
                    refill
                    and (deferred is not _NOTHING or not exhausted)
                    and max(len(in_flight) + len(prepared_calls), len(ready)) < backlog
                ):
                    item, deferred = (
                        (deferred, _NOTHING) if deferred is not _NOTHING else (next(source, _NOTHING), _NOTHING)
                    )
                    if item is _NOTHING:
                        exhausted = True
                        break
                    prepared = prepare(item)
                    if prepared is WAIT:
                        deferred = item  # retried once the calls in flight have settled their cost
                        break
                    if isinstance(prepared, PendingCall):
                        self.calls_in_flight += 1
                        self.reserved_usd += prepared.reserved_usd
                        prepared_calls.append(prepared)
                    else:
                        ready.append(prepared)
                for call in self._claimed(prepared_calls, claim, ready):
                    future = self._submit(self._bounded(call.coroutine))
                    in_flight[future] = call
                    future.add_done_callback(finished.put)
                lingered = 0.0
                if ready:
                    ready_since = ready_since or time.monotonic()
                    lingered = time.monotonic() - ready_since
                    if not in_flight or len(ready) >= self.concurrency or lingered >= LINGER_S:
                        batch = list(ready)
                        ready.clear()
                        ready_since = 0.0
                        # Paid calls are on record before the caller stores (or crashes on) their results.
                        flush()
                        yield batch
                        continue
                elif not in_flight:
                    if deferred is not _NOTHING or not exhausted:
                        continue  # the budget check is now definitive / claimed items were skipped
                    return
                try:
                    done = [finished.get(timeout=LINGER_S - lingered if ready else None)]
                except queue.Empty:
                    continue  # lingered long enough: hand over what is ready
                while not finished.empty():
                    done.append(finished.get_nowait())
                for future in done:
                    call = in_flight.pop(future)
                    self._settle(call)
                    outcome = call.finish(future.result())
                    if isinstance(outcome, ModelCallFailed):
                        self._window_size = min(self._window_size * 2, self.concurrency * BACKLOG_FACTOR)
                    else:
                        self.proven = True
                    ready.append((call.item, outcome))
        finally:
            for future, call in in_flight.items():
                future.cancel()
                self._settle(call)
            self.reserved_usd = self.reserved_usd if self.calls_in_flight else 0.0
            flush()

    def _claimed(
        self,
        calls: list[PendingCall[I, R, O]],
        claim: Callable[[list[PendingCall[I, R, O]]], tuple[list[PendingCall[I, R, O]], list[tuple[I, O]]]],
        ready: collections.deque[tuple[I, O]],
    ) -> list[PendingCall[I, R, O]]:
        """The calls to start: `claim`'s choice; served results join `ready`, dropped calls never start."""
        if not calls:
            return calls
        kept, served = claim(calls)
        ready.extend(served)
        starting = {id(call) for call in kept}
        for call in calls:
            if id(call) not in starting:
                call.coroutine.close()  # never started
                self._settle(call)
        return kept

    def _settle(self, call: PendingCall[I, R, O]) -> None:
        """A call left the window: release its budget reservation."""
        self.calls_in_flight -= 1
        # Reset, not subtract, at zero: float residue must not look like money in flight.
        self.reserved_usd = self.reserved_usd - call.reserved_usd if self.calls_in_flight else 0.0

    def _backlog(self) -> int:
        # Calls prepared and handed to the loop; the loop's semaphore runs `concurrency` of them at once.
        # Queuing more than can run means a finished call's slot is taken at once, without waiting for the
        # caller to store results and prepare more. Until one call succeeded, the slow-start window.
        return self.concurrency * BACKLOG_FACTOR if self.proven else self._window_size

    async def _bounded(self, coroutine: Coroutine[Any, Any, Attempt[R]]) -> Attempt[R]:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.concurrency)
        async with self._slots:
            return await coroutine

    def _submit(self, coroutine: Coroutine[Any, Any, Attempt[R]]) -> concurrent.futures.Future[Attempt[R]]:
        if self._loop is None:
            self._loop = new_event_loop()
            self._thread = threading.Thread(target=self._loop.run_forever, name="model-engine", daemon=True)
            self._thread.start()
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop)

    def close(self, providers: Sequence[Provider]) -> None:
        """Close the providers' connections on the loop, then stop the loop and its thread."""
        if self._loop is None:
            return
        for provider in providers:
            asyncio.run_coroutine_threadsafe(provider.aclose(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        assert self._thread is not None
        self._thread.join(timeout=30)
        self._loop.close()
        self._loop = self._thread = None


def one_by_one(batches: Iterator[list[tuple[I, O]]]) -> Iterator[tuple[I, O]]:
    """The results of `CallWindow.batches`, handed over one at a time in completion order."""
    for batch in batches:
        yield from batch


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop when installed (it comes with the webserver's uvicorn): less CPU per call than asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


_tuned = False


def tune_process_for_runs() -> None:
    """Tune this process for model calls; call it where a run starts (idempotent, once per process).

    - Two busy threads share the GIL (the engine's loop, the stage storing results): a 1 ms switch
      interval instead of 5 ms lets each get it back promptly (measured ~10% more calls/s).
    - Everything alive (imports, Dagster, the definitions, ~300k objects) leaves the garbage collector's
      view (`gc.freeze`): a full collection of that heap takes 50-170 ms on these machines, during which
      no call in flight is read or sent (measured: ~5% more calls/s at 32 calls in flight). The objects
      stay alive anyway; a little garbage pending at that moment is kept, once.
    """
    global _tuned
    if not _tuned:
        _tuned = True
        sys.setswitchinterval(min(sys.getswitchinterval(), 0.001))
        gc.freeze()

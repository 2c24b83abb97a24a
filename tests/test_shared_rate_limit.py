"""Rate limits shared through the store: separate OS processes using one store stay within one budget.

Each multi-process test starts its workers with the `spawn` context (fresh interpreters, nothing shared
but the store), releases them at once, and checks the acquisitions' wall times against the token bucket's
promise: in any window of T seconds at most `burst + rate × T` requests. A control run with one bucket per
process (what the process-wide limiter did) breaks that promise, so the check can tell the two apart.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from collections.abc import Callable, Sequence
from multiprocessing.synchronize import Barrier
from typing import Any

import pytest
from sqlalchemy import select

from pipeline.llm.limits import RateLimiter, limiter_for
from pipeline.models import RateLimitBucket
from pipeline.store import Store
from tests.openai_server import LoopbackOpenAI

SPAWN = multiprocessing.get_context("spawn")
RPM = 600  # 10 requests a second
BURST_S = 1.0  # so a bucket holds 10 requests
RUN_S = 1.5
# Wall times are read just after a take commits (and, for the engine, when the request reaches the server):
# one request and 50 ms of refill of slack for that, far below what one bucket per process adds.
SLACK_S = 0.05
# A request reaches the server a little after its take: the SDK's send shares each process's event loop
# with seven other calls. 250 ms of refill is 2.5 requests, still far below the 10 a second bucket adds.
ARRIVAL_SLACK_S = 0.25


def excess_over_limit(times: Sequence[float], per_minute: float, burst_s: float) -> float:
    """How far the busiest window of `times` goes beyond `burst + rate × window` (negative: within it)."""
    rate, capacity = per_minute / 60.0, per_minute * burst_s / 60.0
    ordered = sorted(times)
    return max(
        (i - j + 1) - (capacity + rate * (ordered[i] - ordered[j])) for i in range(len(ordered)) for j in range(i + 1)
    )


def _acquire_until(url: str, key: str, run_s: float, go: Barrier, times: Any) -> None:
    """Worker: take one request at a time from `key`'s buckets for `run_s` seconds after `go`."""
    limiter = RateLimiter(Store(url), key, requests_per_minute=RPM, burst_seconds=BURST_S)

    async def run() -> list[float]:
        taken: list[float] = []
        go.wait()
        deadline = time.time() + run_s
        while time.time() < deadline:
            await limiter.acquire(0)
            taken.append(time.time())
        return taken

    times.put(asyncio.run(run()))


def _generate_ideas(url: str, base_url: str, worker: int, count: int, go: Barrier, done: Any) -> None:
    """Worker: one engine from the LLM resource with `requests_per_minute` set, `count` idea calls."""
    from resources import LLMResource
    from tests.test_openai_engine import API_KEY, idea_task

    llm = LLMResource(
        provider="openai",
        api_key=API_KEY,
        base_url=base_url,
        concurrency=8,
        requests_per_minute=RPM,
        rate_limit_burst_s=BURST_S,
    )
    store = Store(url)
    go.wait()
    with llm.engine(store, run_id=f"worker-{worker}", partition="sample") as engine:
        answers = [r for _, r in engine.generate_each("ideas", [idea_task(worker * 1000 + n) for n in range(count)])]
    done.put(sum(1 for answer in answers if hasattr(answer, "answer")))


def run_workers(target: Callable[..., None], args: Sequence[tuple[Any, ...]], timeout_s: float = 60.0) -> list[Any]:
    """Start one spawned process per `args` (each gets the `go` barrier and a result queue appended),
    release them together once all are up, and return what each put on the queue."""
    go, results = SPAWN.Barrier(len(args) + 1), SPAWN.Queue()
    processes = [SPAWN.Process(target=target, args=(*a, go, results)) for a in args]
    for process in processes:
        process.start()
    try:
        go.wait(timeout=timeout_s)  # every interpreter has imported the store (and Dagster) and opened it
        return [results.get(timeout=timeout_s) for _ in processes]
    finally:
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()


def test_three_processes_share_one_budget_per_endpoint_and_model(env):
    per_worker = run_workers(_acquire_until, [(env.url, "loopback|gpt-5", RUN_S)] * 3)

    times = [t for worker in per_worker for t in worker]
    assert all(worker for worker in per_worker), "every process got requests through"
    assert excess_over_limit(times, RPM, BURST_S) <= 1 + RPM / 60 * SLACK_S
    elapsed = max(times) - min(times)
    # The shared budget was used, not left idle: close to burst + rate × elapsed in total.
    assert len(times) >= 10 + 10 * elapsed - 3


def test_one_bucket_per_process_would_exceed_the_limit(env):
    # The control: the same workers with a key each, i.e. what a process-wide limiter gives N processes.
    per_worker = run_workers(_acquire_until, [(env.url, f"loopback|gpt-5|process-{n}", RUN_S) for n in range(3)])

    times = [t for worker in per_worker for t in worker]
    assert excess_over_limit(times, RPM, BURST_S) > 10  # two extra bursts at least
    # Each process alone stayed within its own bucket: the limit is per process, which is the bug.
    assert all(excess_over_limit(worker, RPM, BURST_S) <= 1 + RPM / 60 * SLACK_S for worker in per_worker)


def bucket_levels(store: Store) -> dict[str, float]:
    with store.transaction() as session:
        return {b.key.rsplit("|", 1)[1]: b.level for b in session.scalars(select(RateLimitBucket))}


def test_a_request_needing_more_tokens_than_the_bucket_holds_waits(env):
    limiter = RateLimiter(env.store, "loopback|gpt-5", 600, 6_000, burst_seconds=1.0)  # 10 requests, 100 tokens

    async def spend() -> float:
        started = time.monotonic()
        await limiter.acquire(100)
        await limiter.acquire(50)  # 100 tokens a second refill: half a second after the first
        return time.monotonic() - started

    assert asyncio.run(spend()) >= 0.49
    assert limiter.waited_seconds >= 0.4


def test_request_and_token_buckets_are_taken_all_or_nothing(env):
    limits = {"m|requests": 600.0, "m|tokens": 6_000.0}  # 1 s burst: 10 requests, 100 tokens
    assert env.store.take_rate({"m|requests": 1, "m|tokens": 90}, limits, 1.0) == 0.0

    # Tokens short: waits about (40 - 10) / 100 s, and the request bucket keeps its request.
    wait = env.store.take_rate({"m|requests": 1, "m|tokens": 40}, limits, 1.0)
    assert 0.2 < wait <= 0.3
    levels = bucket_levels(env.store)
    assert levels["requests"] == pytest.approx(9, abs=0.01) and levels["tokens"] == pytest.approx(10, abs=0.01)

    # Requests short: nine more leave none, and the next request's tokens stay in their bucket.
    for _ in range(9):
        assert env.store.take_rate({"m|requests": 1, "m|tokens": 0}, limits, 1.0) == 0.0
    assert env.store.take_rate({"m|requests": 1, "m|tokens": 1}, limits, 1.0) > 0
    assert bucket_levels(env.store)["tokens"] == pytest.approx(10, abs=1)


def test_a_request_larger_than_the_burst_waits_for_a_full_bucket_then_runs(env):
    limits = {"m|tokens": 6_000.0}  # 100 tokens a second, 1 s burst
    assert env.store.take_rate({"m|tokens": 50}, limits, 1.0) == 0.0
    assert env.store.take_rate({"m|tokens": 500}, limits, 1.0) == pytest.approx(0.5, abs=0.05)
    time.sleep(0.5)
    assert env.store.take_rate({"m|tokens": 500}, limits, 1.0) == 0.0
    assert bucket_levels(env.store)["tokens"] == pytest.approx(0, abs=1)


def test_limiters_of_different_stores_do_not_share_a_budget(env, tmp_path):
    other = Store(f"sqlite:///{tmp_path / 'other.db'}")
    assert limiter_for(env.store, "e", "gpt-5", 60, None) is not limiter_for(other, "e", "gpt-5", 60, None)
    assert limiter_for(env.store, "e", "gpt-5", 60, None) is limiter_for(env.store, "e", "gpt-5", 60, None)
    other.engine.dispose()


def test_engines_in_two_processes_keep_the_servers_requests_within_the_shared_limit(env):
    env.add_site()
    with LoopbackOpenAI() as server:
        answered = run_workers(_generate_ideas, [(env.url, server.base_url, n, 15) for n in range(2)])
        arrivals = [r.time for r in server.log.records("chat")]

    assert answered == [15, 15]
    assert len(arrivals) == 30
    assert excess_over_limit(arrivals, RPM, BURST_S) <= 1 + RPM / 60 * ARRIVAL_SLACK_S
    # Without the shared budget the two engines' 16 concurrent calls would all arrive within the first burst.
    assert max(arrivals) - min(arrivals) >= (30 - 10) / 10 - 0.2

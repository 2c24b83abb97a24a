"""Monthly budgets: reserved in blocks across runs and processes, never overshot together, lapsing when a
holder dies, and the nightly fill-in skipping sites over budget."""

from __future__ import annotations

import asyncio
import concurrent.futures
import multiprocessing
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
import pytest
from sqlalchemy import func, select

import resources.llm
from pipeline.llm.catalog import DEFAULT_CATALOG, Usage
from pipeline.llm.engine import ModelEngine
from pipeline.llm.offline import OfflineProvider
from pipeline.llm.tasks import EngineOptions, ModelCallFailed, Task
from pipeline.llm.wire import Completion, CompletionRequest
from pipeline.models import BudgetReservation, ModelCall, utcnow
from pipeline.prompts import PromptRegistry
from pipeline.prompts.schemas import IdeaBatch
from resources import LLMResource
from sensors.schedules import nightly_fill_in

# gpt-5-mini, 1000 input + 500 output tokens: $0.00125 per call; a call reserves ~$0.0031 before it starts
# (its expected 1500 output tokens).
CALL_COST = 0.00125


class Priced(OfflineProvider):
    """The offline composer as a paid, cacheable provider: every call costs `CALL_COST`."""

    name = "priced"
    identity = "priced@test"
    cacheable = True

    async def complete(self, request: CompletionRequest) -> Completion:
        await asyncio.sleep(0.005)
        completion = await super().complete(request)
        return Completion(completion.answer, "gpt-5-mini", Usage(input_tokens=1000, output_tokens=500))


def engine(env, *, run_id="run-1", partition="sample", budget=0.01, **options) -> ModelEngine:
    return ModelEngine(
        Priced(),
        catalog=DEFAULT_CATALOG,
        prompts=PromptRegistry(),
        store=env.store,
        run_id=run_id,
        partition=partition,
        options=EngineOptions(**options),
        monthly_budget_usd=budget,
    )


def tasks(count: int, prefix: str = "c") -> list[Task[IdeaBatch]]:
    return [
        Task(
            ref=f"cluster:{prefix}{i}",
            prompt_name="ideas",
            data={"cluster": {"name": f"topic {prefix}{i}"}, "count": 1, "keywords": [{"keyword": f"kw {prefix}{i}"}]},
            schema=IdeaBatch,
        )
        for i in range(count)
    ]


def ledger_total(env, partition="sample") -> float:
    with env.store.transaction() as session:
        return float(session.scalar(select(func.sum(ModelCall.cost_usd)).where(ModelCall.partition == partition)) or 0)


def reservations(env) -> list[BudgetReservation]:
    with env.store.transaction() as session:
        return list(session.scalars(select(BudgetReservation)))


def paid_row(cost: float, partition="sample", when: datetime | None = None, **values) -> dict[str, Any]:
    return {
        "stage": "content",
        "provider": "openai",
        "model": "gpt-5",
        "prompt_name": "article",
        "prompt_version": "article@1",
        "cost_usd": cost,
        "outcome": "ok",
        "item_ref": None,
        "run_id": "earlier",
        "partition": partition,
        "created_at": when or utcnow(),
        **values,
    }


@pytest.mark.parametrize("concurrency", [1, 4])
def test_the_monthly_budget_stops_calls_before_the_cap_keeps_finished_work_and_says_why(env, concurrency):
    env.add_site()
    # Spent earlier this month by another run; last month's spend does not count.
    env.store.record_calls([paid_row(0.002), paid_row(5.0, when=utcnow().replace(day=1) - timedelta(days=3))])
    with engine(env, budget=0.01, concurrency=concurrency) as capped:
        results = [o for _, o in capped.generate_each("ideas", tasks(12))]
    done = [r for r in results if not isinstance(r, ModelCallFailed)]
    refused = [r for r in results if isinstance(r, ModelCallFailed)]
    assert done and refused and len(done) + len(refused) == 12
    assert {r.error_class for r in refused} == {"BudgetExceeded"} and capped.budget_exhausted
    month_spend = env.store.month_spend("sample")
    assert month_spend == pytest.approx(0.002 + CALL_COST * len(done)) and month_spend <= 0.01
    # Stopped before the cap: one more call (reserved at ~$0.0031) would not fit.
    assert month_spend + 0.0031 > 0.01
    message = str(refused[0])
    assert "site 'sample'" in message and "monthly budget of $0.0100" in message
    assert f"spent ${month_spend:.4f} this month" in message and "finished work is kept" in message
    assert [c.outcome for c in env.store.model_calls(run_id="run-1")] == ["ok"] * len(done)  # all on record
    assert reservations(env) == []  # released on close


def test_reservations_are_blocks_not_a_row_per_call(env):
    env.add_site()
    with engine(env, budget=1.0, concurrency=1) as big:
        first = list(big.generate_each("ideas", tasks(1)))
        [held] = reservations(env)
        # One block covers many calls: 10 calls' expected cost, more than 5% of $1.
        assert held.amount_usd > 0.03 and held.amount_usd < 0.06
        # The row is shrunk as a quarter of the block reaches the ledger, not per call: it never holds less
        # than the engine may still spend.
        assert big.monthly_budget is not None and big.monthly_budget.granted_usd <= held.amount_usd
        assert held.amount_usd - big.monthly_budget.granted_usd == pytest.approx(CALL_COST)
        list(big.generate_each("ideas", tasks(5, "d")))
    assert len(first) == 1 and reservations(env) == []
    assert ledger_total(env) == pytest.approx(6 * CALL_COST)


def test_two_concurrent_engines_never_overshoot_the_budget_together(env):
    env.add_site()
    budget = 0.02
    outcomes: dict[str, list[Any]] = {}
    start = threading.Barrier(2)

    def run(run_id: str) -> None:
        with engine(env, run_id=run_id, budget=budget, concurrency=4) as each:
            start.wait()
            outcomes[run_id] = [o for _, o in each.generate_each("ideas", tasks(20, run_id))]

    threads = [threading.Thread(target=run, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    done = sum(not isinstance(o, ModelCallFailed) for results in outcomes.values() for o in results)
    assert set(outcomes) == {"a", "b"}
    assert ledger_total(env) == pytest.approx(done * CALL_COST) and ledger_total(env) <= budget
    assert 0 < done < 40  # both stopped: 40 calls would cost $0.05
    assert reservations(env) == []


def _spend_in_a_process(url: str, run_id: str, budget: float, start: Any) -> int:
    """A run in its own process: its engine spends on the shared site until the monthly budget stops it."""
    from pipeline.store import Store

    store = Store(url)
    with ModelEngine(
        Priced(),
        catalog=DEFAULT_CATALOG,
        prompts=PromptRegistry(),
        store=store,
        run_id=run_id,
        partition="sample",
        options=EngineOptions(concurrency=4),
        monthly_budget_usd=budget,
    ) as each:
        start.wait()
        return sum(not isinstance(o, ModelCallFailed) for _, o in each.generate_each("ideas", tasks(20, run_id)))


def test_two_processes_never_overshoot_the_budget_together(env):
    env.add_site()
    budget = 0.02
    context = multiprocessing.get_context("spawn")
    start = context.Manager().Barrier(2)
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=context) as pool:
        futures = [pool.submit(_spend_in_a_process, env.url, name, budget, start) for name in ("p1", "p2")]
        done = [future.result(timeout=120) for future in futures]
    assert sum(done) > 0
    assert ledger_total(env) == pytest.approx(sum(done) * CALL_COST) and ledger_total(env) <= budget
    assert sum(done) < 40 and reservations(env) == []


def test_a_dead_holders_reservation_lapses_and_a_live_ones_is_respected(env):
    env.add_site()
    now = utcnow()
    with env.store.transaction() as session:
        session.add(
            BudgetReservation(
                holder="killed@elsewhere:1",
                partition="sample",
                amount_usd=0.01,
                expires_at=now - timedelta(seconds=1),
                updated_at=now,
            )
        )
    with engine(env, budget=0.01, concurrency=1) as after_crash:
        results = [o for _, o in after_crash.generate_each("ideas", tasks(2))]
    assert not any(isinstance(r, ModelCallFailed) for r in results)
    assert all(r.holder != "killed@elsewhere:1" for r in reservations(env))

    with env.store.transaction() as session:
        session.add(
            BudgetReservation(
                holder="live@elsewhere:1",
                partition="sample",
                amount_usd=0.009,
                expires_at=now + timedelta(minutes=5),
                updated_at=now,
            )
        )
    with engine(env, run_id="run-2", budget=0.01, concurrency=1) as beside_live:
        [(_, refused)] = list(beside_live.generate_each("ideas", tasks(1, "x")))
    assert isinstance(refused, ModelCallFailed) and refused.error_class == "BudgetExceeded"
    assert "reserved by other runs $0.0090" in str(refused)
    assert [r.holder for r in reservations(env)] == ["live@elsewhere:1"]


def test_an_asset_run_over_the_monthly_budget_fails_clearly_and_keeps_its_articles(env):
    site = env.add_site()
    assert env.materialize(selection=["keywords", "clusters"]).success
    env.store.update_site_settings(site.id, {"monthly_budget_usd": 0.008})
    resources.llm.PROVIDERS["priced"] = lambda _resource, _endpoint: Priced()
    try:
        env.resources["llm"] = LLMResource(provider="priced", concurrency=2)
        result = env.materialize(selection=["ideas"], raise_on_error=False)
    finally:
        del resources.llm.PROVIDERS["priced"]
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure).step_failure_data.user_failure_data
    assert "BudgetExceeded" in failure.description and "site 'sample'" in failure.description
    assert "monthly budget of $0.0080" in failure.description
    assert env.store.ideas(site.id)  # finished work kept
    assert 0 < env.store.month_spend("sample") <= 0.008


def test_the_nightly_fill_in_skips_sites_over_their_monthly_budget(env):
    for slug in ("alpha", "beta"):
        env.store.upsert_site(slug, slug.title(), "keywords.csv")
    alpha = env.store.site("alpha")
    env.store.update_site_settings(alpha.id, {"monthly_budget_usd": 1.0})
    env.store.record_calls([paid_row(1.25, partition="alpha")])
    when = datetime.now(UTC)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("sites", ["alpha", "beta"])
        resources_ = {"store": env.resources["store"]}
        with dg.build_schedule_context(instance=instance, scheduled_execution_time=when, resources=resources_) as ctx:
            requests = nightly_fill_in(ctx)
        assert isinstance(requests, list) and [r.partition_key for r in requests] == ["beta"]
        instance.delete_dynamic_partition("sites", "beta")
        with dg.build_schedule_context(instance=instance, scheduled_execution_time=when, resources=resources_) as ctx:
            skipped = nightly_fill_in(ctx)
    assert isinstance(skipped, dg.SkipReason)
    assert "alpha: spent $1.2500 of $1.0000" in (skipped.skip_message or "")

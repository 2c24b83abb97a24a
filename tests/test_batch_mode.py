"""Batch mode against the loopback server's Files and Batches endpoints, through the real `openai` SDK.

The sample site's content stage sends its 93 articles as one batch, the step ends without waiting, the
batch advances as the provider is polled, and a batch-mode run ingests it: every article stored once, at
exactly half the ledger cost of the same articles written in real time; a second ingestion changes
nothing. Around it: a crash between creating the batch and recording it, failed and invalid lines, an
expired batch, and the sensor requesting one ingestion run however often it ticks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import dagster as dg
import pytest
from sqlalchemy import func, select, update

from pipeline.models import BatchStatus, Content, ModelBatch, ModelBatchItem, ModelCall, utcnow
from sensors.batches import model_batches
from tests.conftest import Env
from tests.openai_server import LoopbackOpenAI
from tests.test_openai_engine import openai_llm

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def server() -> Iterator[LoopbackOpenAI]:
    with LoopbackOpenAI() as running:
        yield running


def planned(env: Env, server: LoopbackOpenAI) -> None:
    """The sample site planned as the demo plans it (offline: 93 ideas), its articles then written through
    the loopback server."""
    env.add_site()
    assert env.materialize(selection=["keywords", "clusters", "ideas"]).success
    env.resources["llm"] = openai_llm(server, timeout_s=5.0)


def content_run(env: Env, *, batch: bool) -> dg.ExecuteInProcessResult:
    return env.materialize(
        selection=["content"], run_config={"ops": {"content": {"config": {"batch": batch}}}}, raise_on_error=False
    )


def articles(env: Env) -> int:
    with env.store.transaction() as session:
        return session.scalar(select(func.count()).select_from(Content)) or 0


def ledger(env: Env, stage: str = "content") -> list[ModelCall]:
    with env.store.transaction() as session:
        return list(session.scalars(select(ModelCall).where(ModelCall.stage == stage, ModelCall.outcome == "ok")))


def content_metadata(result: dg.ExecuteInProcessResult) -> dict[str, object]:
    [materialization] = result.asset_materializations_for_node("content")
    return {key: value.value for key, value in materialization.metadata.items()}


def poll_until_finished(env: Env, server: LoopbackOpenAI, polls: int = 10) -> None:
    """What the sensor does between runs: ask the provider until every open batch has finished."""
    from pipeline.llm.batch_mode import FINISHED, follow_batch

    api = openai_llm(server).batch_api()
    assert api is not None
    for _ in range(polls):
        pending = [b for b in env.store.batches_to_follow() if b.status not in FINISHED]
        if not pending:
            return
        for batch in pending:
            follow_batch(env.store, api, batch)
    raise AssertionError("batches did not finish")


def test_the_sample_site_in_batch_mode_stores_every_article_once_at_half_the_real_time_cost(
    env: Env, server: LoopbackOpenAI, tmp_path: Path
) -> None:
    planned(env, server)
    ideas = env.store.ideas(env.store.site("sample").id)
    assert len(ideas) == 93

    submitted = content_run(env, batch=True)
    assert submitted.success
    assert articles(env) == 0, "the step ends without waiting for the answers"
    meta = content_metadata(submitted)
    assert meta["batch_items_submitted"] == 93 and meta["batch_items_ingested"] == 0
    [created] = server.batches()
    assert len(created.custom_ids) == 93 and created.metadata and "pipeline_batch" in created.metadata
    [batch] = env.store.batches(partition="sample")
    assert batch.status == BatchStatus.SUBMITTED and batch.remote_id == created.id and batch.requests == 93

    again = content_run(env, batch=True)  # a run while the provider still works: nothing is sent twice
    assert again.success and len(server.batches()) == 1
    assert content_metadata(again)["batch_items_waiting"] == 93

    poll_until_finished(env, server)
    ingested = content_run(env, batch=True)
    assert ingested.success
    assert articles(env) == 93
    assert content_metadata(ingested)["batch_items_ingested"] == 93
    calls = ledger(env)
    assert len(calls) == 93 and {c.batch_id for c in calls} == {batch.id}
    assert env.store.batch(batch.id).status == BatchStatus.INGESTED
    assert env.store.batch(batch.id).answered == 93

    before = env.row_counts()
    assert content_run(env, batch=True).success  # a second ingestion changes nothing
    assert env.row_counts() == before and len(server.batches()) == 1

    # The same site written in real time, against the same server: the ledger costs exactly twice as much.
    other = Env(tmp_path / "real-time")
    server.state.reset()  # the server's prompt cache forgets the batch's prompts: both runs start cold
    try:
        planned(other, server)
        assert content_run(other, batch=False).success
        real_time = ledger(other)
        assert len(real_time) == 93 and all(c.batch_id is None for c in real_time)
        batch_cost = sum(c.cost_usd for c in calls)
        real_cost = sum(c.cost_usd for c in real_time)
        assert real_cost > 0
        assert batch_cost == pytest.approx(real_cost / 2, abs=1e-6)
        assert sorted(c.input_tokens for c in calls) == sorted(c.input_tokens for c in real_time)
    finally:
        other.close()


def test_failed_and_invalid_lines_go_back_to_pending_and_the_next_batch_sends_only_them(
    env: Env, server: LoopbackOpenAI
) -> None:
    planned(env, server)
    assert content_run(env, batch=True).success
    [first] = server.batches()
    failing, invalid = first.custom_ids[0], first.custom_ids[1]
    server.batch.fail_custom_ids = {failing}
    server.batch.invalid_custom_ids = {invalid}
    poll_until_finished(env, server)

    ingested = content_run(env, batch=True)
    assert ingested.success
    assert articles(env) == 91
    meta = content_metadata(ingested)
    assert meta["batch_items_ingested"] == 91 and meta["batch_items_submitted"] == 2
    second = server.batches()[0] if server.batches()[0].id != first.id else server.batches()[1]
    assert set(second.custom_ids) == {failing, invalid}
    with env.store.transaction() as session:
        states = set(
            session.execute(
                select(ModelBatchItem.batch_id, ModelBatchItem.custom_id, ModelBatchItem.state).where(
                    ModelBatchItem.custom_id.in_([failing, invalid])
                )
            ).all()
        )
        invalid_row = session.scalars(select(ModelCall).where(ModelCall.outcome == "invalid")).one()
    first_id = env.store.batches(partition="sample")[-1].id
    assert {(b == first_id, state) for b, _, state in states} == {(True, "failed"), (False, "pending")}
    assert invalid_row.batch_id is not None and invalid_row.output_tokens > 0, "an invalid answer is paid for"

    server.batch.fail_custom_ids, server.batch.invalid_custom_ids = set(), set()
    poll_until_finished(env, server)
    assert content_run(env, batch=True).success
    assert articles(env) == 93


def test_an_expired_batch_returns_its_unanswered_items(env: Env, server: LoopbackOpenAI) -> None:
    planned(env, server)
    server.batch.expire_next = True
    assert content_run(env, batch=True).success
    poll_until_finished(env, server)
    [batch] = env.store.batches(partition="sample")
    assert batch.status == BatchStatus.EXPIRED

    ingested = content_run(env, batch=True)
    assert ingested.success
    answered = articles(env)
    assert 0 < answered < 93
    meta = content_metadata(ingested)
    assert meta["batch_items_ingested"] == answered and meta["batch_items_submitted"] == 93 - answered
    assert env.store.batch(batch.id).ingested_at is not None


CRASH_AFTER_CREATE = textwrap.dedent(
    """
    import os, sys
    import pipeline.llm.batch_api as batch_api

    created = batch_api.BatchAPI.submit

    def submit_then_die(self, *arguments):
        created(self, *arguments)
        os._exit(9)  # killed after the provider created the batch, before the store recorded it

    batch_api.BatchAPI.submit = submit_then_die
    import dagster as dg
    from assets import ALL_ASSETS
    from resources import LLMResource, MediaResource, StoreResource

    dg.materialize(
        ALL_ASSETS,
        selection=["content"],
        partition_key="sample",
        resources={
            "store": StoreResource(database_url=os.environ["DATABASE_URL"]),
            "llm": LLMResource(provider="openai", api_key="test", base_url=os.environ["BASE_URL"]),
            "media": MediaResource(root=os.environ["MEDIA"]),
        },
        instance=dg.DagsterInstance.get(),
        run_config={"ops": {"content": {"config": {"batch": True}}}},
    )
    """
)


def test_a_crash_between_creating_the_batch_and_recording_it_never_sends_the_work_twice(
    env: Env, server: LoopbackOpenAI
) -> None:
    planned(env, server)
    environment = os.environ | {
        "DAGSTER_HOME": str(env.dagster_home()),
        "DATABASE_URL": env.url,
        "BASE_URL": server.base_url,
        "MEDIA": str(env.media),
        "PYTHONPATH": str(REPO),
    }
    died = subprocess.run([sys.executable, "-c", CRASH_AFTER_CREATE], env=environment, cwd=REPO, timeout=300)
    assert died.returncode == 9
    assert len(server.batches()) == 1
    [intent] = env.store.batches(partition="sample")
    assert intent.status == BatchStatus.INTENT and intent.remote_id is None

    # A run soon after leaves the young intent alone (its items wait): nothing is sent again.
    assert content_run(env, batch=True).success
    assert len(server.batches()) == 1 and articles(env) == 0

    # Once the intent is old enough to be stale, the next look reconciles it by its key: adopted.
    with env.store.transaction() as session:
        session.execute(
            update(ModelBatch).where(ModelBatch.id == intent.id).values(created_at=utcnow() - timedelta(minutes=10))
        )
    poll_until_finished(env, server)
    adopted = env.store.batch(intent.id)
    assert adopted.remote_id == server.batches()[0].id
    assert content_run(env, batch=True).success
    assert articles(env) == 93 and len(server.batches()) == 1


def test_the_sensor_requests_one_ingestion_run_per_finished_batch_however_often_it_ticks(
    env: Env, server: LoopbackOpenAI
) -> None:
    planned(env, server)
    assert content_run(env, batch=True).success
    [batch] = env.store.batches(partition="sample")
    resources = {"store": env.resources["store"], "llm": openai_llm(server)}

    def tick() -> dg.SensorResult:
        with dg.build_sensor_context(instance=env.instance, resources=resources) as context:
            result = model_batches(context)
        assert isinstance(result, dg.SensorResult)
        return result

    run_keys = [request.run_key for _ in range(6) for request in tick().run_requests or []]
    # Dagster launches one run per run key: every tick names the same one until the batch is ingested.
    assert run_keys and set(run_keys) == {f"batch:{batch.id}"}
    [request] = tick().run_requests or []
    assert request.partition_key == "sample" and request.tags["pipeline/run_kind"] == "batch-ingestion"

    # The run the sensor requests (content, batch mode) ingests; the batch is then out of the sensor's view.
    assert content_run(env, batch=True).success and articles(env) == 93
    assert not tick().run_requests


@pytest.mark.parametrize(
    ("tags", "nightly", "configured", "expected"),
    [
        ({"pipeline/run_kind": "fill-in"}, True, None, True),
        ({"dagster/backfill": "abc"}, True, None, True),
        ({}, True, None, False),  # a run launched by hand calls in real time unless it asks
        ({"pipeline/run_kind": "fill-in"}, False, None, False),
        ({"pipeline/run_kind": "fill-in"}, True, False, False),  # run config wins
        ({}, False, True, True),
    ],
)
def test_the_site_setting_sends_nightly_and_backfill_runs_as_batches(
    env: Env, tags: dict[str, str], nightly: bool, configured: bool | None, expected: bool
) -> None:
    from types import SimpleNamespace
    from typing import Any, cast

    from assets.reporting import StageConfig
    from pipeline.stages import RunSite

    site = env.add_site()
    env.store.update_site_settings(site.id, {"batch": {"nightly": nightly}})
    context = cast(Any, SimpleNamespace(run=SimpleNamespace(tags=tags), log=SimpleNamespace(warning=print)))
    run_site = RunSite.of(env.store, "sample")
    assert StageConfig(batch=configured).options(context, run_site, batchable=True).batch is expected
    assert StageConfig(batch=configured).options(context, run_site, batchable=False).batch is False


def test_images_follow_the_batch_path_at_half_the_image_price(env: Env, server: LoopbackOpenAI) -> None:
    from pipeline.llm.catalog import DEFAULT_CATALOG
    from pipeline.models import Image, ImagePrompt

    env.add_site()
    assert env.materialize(selection=["keywords", "clusters", "ideas", "content", "image_prompts"]).success
    env.resources["llm"] = openai_llm(server, timeout_s=5.0)
    config = {"ops": {"images": {"config": {"batch": True}}}}

    def count(model: type[Image] | type[ImagePrompt]) -> int:
        with env.store.transaction() as session:
            return session.scalar(select(func.count()).select_from(model)) or 0

    prompts = count(ImagePrompt)
    assert env.materialize(selection=["images"], run_config=config).success
    assert count(Image) == 0
    [created] = server.batches()
    assert created.endpoint == "/v1/images/generations" and len(created.custom_ids) == prompts

    poll_until_finished(env, server)
    assert env.materialize(selection=["images"], run_config=config).success
    assert count(Image) == prompts
    calls = ledger(env, "images")
    price = DEFAULT_CATALOG.prices[DEFAULT_CATALOG.stage("images").model].per_image
    assert len(calls) == prompts and all(c.batch_id is not None for c in calls)
    assert all(c.cost_usd == pytest.approx(price / 2) for c in calls)
    before = env.row_counts()
    assert env.materialize(selection=["images"], run_config=config).success
    assert env.row_counts() == before and len(server.batches()) == 1


def test_the_monthly_budget_counts_batches_in_flight_until_their_answers_reach_the_ledger(
    env: Env, server: LoopbackOpenAI
) -> None:
    planned(env, server)
    site = env.store.site("sample")
    env.store.update_site_settings(site.id, dict(site.settings) | {"monthly_budget_usd": 100.0})
    assert env.store.month_spend("sample") == 0.0
    assert content_run(env, batch=True).success
    [batch] = env.store.batches(partition="sample")
    assert batch.expected_cost_usd > 0
    assert env.store.month_spend("sample") == pytest.approx(batch.expected_cost_usd)

    # A budget the batch in flight has used up stops the next run's calls before any is made.
    env.store.update_site_settings(site.id, dict(site.settings) | {"monthly_budget_usd": batch.expected_cost_usd})
    refused = env.materialize(
        selection=["content"], run_config={"ops": {"content": {"config": {"force": True}}}}, raise_on_error=False
    )
    assert not refused.success and len(ledger(env)) == 0

    poll_until_finished(env, server)
    assert content_run(env, batch=True).success
    paid = sum(c.cost_usd for c in ledger(env))
    assert env.store.month_spend("sample") == pytest.approx(paid)


def test_pipeline_batches_lists_and_cancels_and_a_cancelled_batch_returns_its_unanswered_items(
    env: Env, server: LoopbackOpenAI, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipeline.cli import main

    planned(env, server)
    monkeypatch.setenv("DATABASE_URL", env.url)
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "test-key-not-shown")
    server.batch.polls_until_done = 10  # the provider takes its time
    assert content_run(env, batch=True).success
    [batch] = env.store.batches(partition="sample")

    assert main(["batches", "list"]) == 0  # one poll: the batch is in progress now, some lines answered
    listed = capsys.readouterr().out
    assert f"{batch.id} " in listed and "sample" in listed and "in_progress" in listed
    assert "test-key-not-shown" not in listed

    assert main(["batches", "cancel", str(batch.id)]) == 0
    assert "cancelling" in capsys.readouterr().out
    poll_until_finished(env, server)
    assert env.store.batch(batch.id).status == BatchStatus.CANCELLED
    assert main(["batches", "cancel", str(batch.id)]) == 2  # nothing left to cancel
    assert "cancelled already" in capsys.readouterr().err

    ingested = content_run(env, batch=True)
    answered = articles(env)
    assert ingested.success and 0 < answered < 93
    assert content_metadata(ingested)["batch_items_submitted"] == 93 - answered
    assert main(["batches", "list", "--all", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["id"], r["status"]) for r in rows][-1] == (batch.id, "cancelled") and len(rows) == 2

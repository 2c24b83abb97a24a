"""The OpenAI provider through the real `openai` SDK over HTTP, against the loopback server with faults."""

from __future__ import annotations

import asyncio
import time

import pytest
from sqlalchemy import delete, select

from pipeline.llm.limits import RateLimiter, limiter_for
from pipeline.llm.tasks import ImageTask, ModelCallFailed, Task
from pipeline.models import Content, ContentVariant, Idea, ImagePrompt, ModelCall, RateLimitBucket
from pipeline.prompts.schemas import IdeaBatch
from resources import LLMResource
from tests.conftest import SIX_ASSETS
from tests.openai_server import NON_JSON_BODY, REFUSAL_TEXT, Fault, FaultKind, FaultPlan, LoopbackOpenAI

API_KEY = "sk-test-NEVER-LOGGED-0123456789abcdef"
RECOVERABLE: tuple[FaultKind, ...] = ("rate_limit", "server_error", "hang", "non_json", "schema_invalid", "truncated")


@pytest.fixture(scope="module")
def server():
    with LoopbackOpenAI() as running:
        yield running


@pytest.fixture
def openai_env(env, server):
    """An isolated environment whose LLM resource calls the loopback server through the SDK."""
    server.reset()
    server.plan = FaultPlan()
    env.resources["llm"] = openai_llm(server)
    env.server = server
    env.add_site()
    return env


def openai_llm(server, **overrides) -> LLMResource:
    """The LLM resource pointed at the loopback server (fresh: Dagster resources are immutable config)."""
    config = {
        "provider": "openai",
        "api_key": API_KEY,
        "base_url": server.base_url,
        "max_retries": 3,
        "timeout_s": 0.5,
        "repair_attempts": 3,
        "concurrency": 8,
        "image_size": "256x256",
    }
    return LLMResource(**(config | overrides))


def chat_requests(server) -> int:
    return len(server.log.records("chat"))


def idea_task(n: int = 0) -> Task[IdeaBatch]:
    return Task(
        ref=f"cluster:{n}",
        prompt_name="ideas",
        data={
            "cluster": {"name": "Cold Brew", "description": ""},
            "count": 2,
            "keywords": [{"keyword": f"cold brew ratio {n}"}, {"keyword": "how long to steep cold brew"}],
        },
        schema=IdeaBatch,
    )


def engine(env, **config):
    return openai_llm(env.server, **config).engine(env.store, run_id="run-test", partition="sample")


def stored_text(env) -> str:
    with env.store.transaction() as s:
        parts = [v.body_html + v.title + v.meta_description for v in s.scalars(select(ContentVariant))]
        parts += [i.title + i.angle + " ".join(i.outline) for i in s.scalars(select(Idea))]
        parts += [p.prompt + p.alt_text for p in s.scalars(select(ImagePrompt))]
    return "\n".join(parts)


def test_full_chain_through_the_sdk_survives_20_percent_faults_and_a_rerun_calls_nothing(openai_env):
    env, server = openai_env, openai_env.server
    server.plan = FaultPlan(rate=0.2, kinds=RECOVERABLE, seed=11, hang_seconds=4.0)
    # Which request gets which fault depends on arrival order under concurrency; with 3 SDK retries about
    # one run in seven would see an item draw 4 transport faults in a row. 6 retries make that ~1 in 1,000.
    # The server shares this process (and its GIL) with the run: on a slow, loaded machine 0.5 s can pass
    # before it has even read a request, which the SDK then counts as an attempt the server never logged.
    # 1.5 s keeps every request readable in time; a hang (4 s) still times out.
    env.resources["llm"] = openai_llm(server, max_retries=6, timeout_s=1.5)
    env.add_site()

    result = env.materialize()

    assert result.success
    counts = env.store.counts(env.store.site("sample").id)
    assert all(getattr(counts, stage) > 0 for stage in SIX_ASSETS)
    assert counts.images == counts.image_prompts
    assert counts.content == counts.ideas
    faults = server.log.by_fault()
    assert sum(faults.values()) >= 0.15 * len(server.log), faults
    assert set(faults) >= {"rate_limit", "server_error", "non_json", "schema_invalid", "truncated"}
    calls = env.store.model_calls(partition="sample")
    assert {c.provider for c in calls} == {"openai"} and {c.outcome for c in calls} == {"ok"}
    assert sum(c.attempts for c in calls) == len(server.log), "every HTTP request is accounted for in the ledger"
    assert any(c.attempts > 1 for c in calls) and sum(c.cost_usd for c in calls) > 0
    text = stored_text(env)
    assert NON_JSON_BODY not in text and REFUSAL_TEXT not in text and "unexpected" not in text

    rows, requests = env.row_counts(), len(server.log)
    again = env.materialize()
    assert again.success
    assert len(server.log) == requests, "a second run makes zero model calls"
    assert env.row_counts() == rows


@pytest.mark.parametrize(
    ("fault", "attempts", "requests"),
    [
        ("rate_limit", 2, 2),  # SDK retry honouring Retry-After
        ("server_error", 2, 2),  # SDK retry
        ("hang", 2, 2),  # timeout, then SDK retry
        ("non_json", 2, 2),  # our repair attempt
        ("schema_invalid", 2, 2),  # our repair attempt
        ("truncated", 2, 2),  # our retry with a larger token limit
    ],
)
def test_recoverable_faults_are_retried_and_recorded_with_their_attempts(openai_env, fault, attempts, requests):
    openai_env.server.plan = FaultPlan(hang_seconds=2.0).push(Fault(fault))
    with engine(openai_env) as llm:
        generation = llm.generate("ideas", idea_task())
    assert len(generation.answer.ideas) == 2
    [call] = openai_env.store.model_calls()
    assert (call.outcome, call.attempts) == ("ok", attempts)
    assert chat_requests(openai_env.server) == requests


@pytest.mark.parametrize(
    ("fault", "outcome", "error_class"),
    [("refusal", "refused", "Refusal"), ("bad_request", "error", "BadRequestError")],
)
def test_refusals_and_bad_requests_fail_the_item_at_once_and_others_go_on(openai_env, fault, outcome, error_class):
    openai_env.server.plan = FaultPlan().push(Fault(fault))
    with engine(openai_env, concurrency=1) as llm:
        results = [r for _, r in llm.generate_each("ideas", [idea_task(1), idea_task(2)])]
    assert isinstance(results[0], ModelCallFailed) and results[0].outcome == outcome
    assert not isinstance(results[1], ModelCallFailed)
    assert chat_requests(openai_env.server) == 2
    first = openai_env.store.model_calls()[0]
    assert (first.outcome, first.error_class, first.attempts) == (outcome, error_class, 1)


def test_repeated_malformed_answers_fail_after_the_bounded_repairs(openai_env):
    malformed: list[FaultKind] = ["non_json"] * 4
    openai_env.server.plan = FaultPlan().push(*malformed)
    with engine(openai_env) as llm, pytest.raises(ModelCallFailed) as caught:
        llm.generate("ideas", idea_task())
    assert caught.value.outcome == "malformed"
    assert chat_requests(openai_env.server) == 4  # first try + repair_attempts=3


def test_bad_credentials_stop_all_calls_and_the_key_is_never_stored_or_logged(openai_env):
    env, server = openai_env, openai_env.server
    env.add_site()
    assert env.materialize(selection=["keywords", "clusters"]).success
    server.reset()
    server.plan = FaultPlan(rate=1.0, kinds=("unauthorized",))

    result = env.materialize(selection=["ideas"], raise_on_error=False)

    assert not result.success
    assert chat_requests(server) == 1, "401 is not retried, and the slow start means no other call was in flight"
    failure = next(e for e in result.all_events if e.is_step_failure).step_failure_data.user_failure_data
    assert "AuthenticationError" in failure.description and "no further calls made" in failure.description
    assert "not started" in failure.description, "one clear message says what was left undone"
    logs = "\n".join(str(entry.dagster_event or entry.user_message) for entry in env.instance.all_logs(result.run_id))
    assert API_KEY not in logs and API_KEY not in failure.description
    assert API_KEY.encode() not in env.database_bytes()
    with env.store.transaction() as s:
        assert s.scalars(select(ModelCall.error_class).where(ModelCall.outcome != "ok")).all() == [
            "AuthenticationError"
        ]


def test_an_unchanged_request_is_served_from_the_cache_and_force_bypasses_it(openai_env):
    env, server = openai_env, openai_env.server
    env.add_site()
    assert env.materialize(selection=["keywords", "clusters", "ideas", "content"]).success
    with env.store.transaction() as s:  # lose one article: its idea needs writing again
        victim = s.scalars(select(Content)).first()
        s.execute(delete(ContentVariant).where(ContentVariant.content_id == victim.id))
        s.execute(delete(Content).where(Content.id == victim.id))
    server.reset()

    assert env.materialize(selection=["content"]).success
    assert chat_requests(server) == 0
    assert [c.outcome for c in env.store.model_calls()][-1] == "cache_hit"
    counts = env.store.counts(env.store.site("sample").id)
    assert counts.content == counts.ideas

    with env.store.transaction() as s:
        victim = s.scalars(select(Content)).first()
        s.execute(delete(ContentVariant).where(ContentVariant.content_id == victim.id))
        s.execute(delete(Content).where(Content.id == victim.id))
    config = {"force": True, "item_id": victim.idea_id}
    forced = env.materialize(selection=["content"], run_config={"ops": {"content": {"config": config}}})
    assert forced.success and chat_requests(server) == 1


def test_dry_run_estimates_calls_and_cost_without_calling_or_writing(openai_env):
    env, server = openai_env, openai_env.server
    env.add_site()
    assert env.materialize(selection=["keywords", "clusters"]).success
    server.reset()
    clusters = [c for c in env.store.clusters(env.store.site("sample").id) if c.key != "unclustered"]

    result = env.materialize(selection=["ideas"], run_config={"ops": {"ideas": {"config": {"dry_run": True}}}})

    assert result.success and len(server.log) == 0
    assert env.store.ideas(env.store.site("sample").id) == []
    metadata = result.get_asset_materialization_events()[0].materialization.metadata
    assert metadata["estimated_calls"].value == len(clusters)
    assert metadata["estimated_cost_usd"].value > 0 and metadata["model_calls"].value == 0


def test_the_run_budget_stops_calls_keeps_finished_articles_and_fails_clearly(openai_env):
    env = openai_env
    env.add_site()
    assert env.materialize(selection=["keywords", "clusters", "ideas"]).success
    env.resources["llm"] = openai_llm(env.server, max_run_cost_usd=0.2, concurrency=2)

    result = env.materialize(selection=["content"], raise_on_error=False)

    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure).step_failure_data.user_failure_data
    assert "BudgetExceeded" in failure.description and "finished work is kept" in failure.description
    counts = env.store.counts(env.store.site("sample").id)
    assert 0 < counts.content < counts.ideas
    assert env.store.run_cost(result.run_id) <= 0.2


def test_images_come_from_the_images_api_as_real_pngs(openai_env):
    with engine(openai_env) as llm:
        [(_, image)] = list(llm.generate_images("images", [ImageTask(ref="image_prompt:1", prompt="a moka pot")]))
    assert image.png.startswith(b"\x89PNG") and image.model == "gpt-image-2"
    [call] = openai_env.store.model_calls()
    assert (call.stage, call.images, call.cost_usd) == ("images", 1, 0.04)


def test_rate_limiter_spaces_requests_beyond_the_per_minute_allowance(env):
    limiter = RateLimiter(env.store, "loopback|gpt-5", requests_per_minute=60, tokens_per_minute=None)

    async def burst() -> float:
        started = time.monotonic()
        for _ in range(60):  # a full minute's allowance is available at once
            await limiter.acquire(10)
        await limiter.acquire(10)  # the 61st waits for one request's worth of refill (1 s after the first)
        return time.monotonic() - started

    # Measured from the first request: the 60 before it take a few ms each on the store, which refill too.
    assert asyncio.run(burst()) >= 0.98
    assert limiter.waited_seconds >= 0.5


def test_token_limit_waits_for_enough_tokens(env):
    limiter = RateLimiter(env.store, "loopback|gpt-5", requests_per_minute=None, tokens_per_minute=60_000)

    async def spend() -> float:
        started = time.monotonic()
        await limiter.acquire(60_000)
        await limiter.acquire(500)  # 1,000 tokens/s refill: half a second after the first
        return time.monotonic() - started

    assert asyncio.run(spend()) >= 0.49


def test_limits_are_shared_by_every_engine_in_the_process_through_the_store(openai_env):
    llm = openai_llm(openai_env.server, requests_per_minute=500)
    first = llm.engine(openai_env.store, run_id="a", partition=None)
    second = llm.engine(openai_env.store, run_id="b", partition=None)
    assert first._limiter is not None and second._limiter is not None
    shared = limiter_for(openai_env.store, first.provider.identity, "gpt-5", 500, None)
    assert first._limiter("gpt-5") is second._limiter("gpt-5") is shared
    assert shared.store is openai_env.store and shared.burst_seconds == 60.0
    # Other processes find the budget by its key in the store: the endpoint's identity and the model.
    asyncio.run(shared.acquire(10))
    with openai_env.store.transaction() as session:
        [bucket] = session.scalars(select(RateLimitBucket))
    assert bucket.key == f"{first.provider.identity}|gpt-5|requests" and bucket.per_minute == 500
    assert bucket.level == pytest.approx(499, abs=0.1)


def test_with_a_provider_clusters_use_its_embeddings_and_a_rerun_embeds_nothing(openai_env):
    env, server = openai_env, openai_env.server
    assert env.materialize(selection=["keywords", "clusters"]).success
    embedding_calls = [c for c in env.store.model_calls() if c.stage == "embeddings"]
    assert len(embedding_calls) == 2, "397 keywords in batches of 256"
    assert all(c.input_tokens > 0 and c.cost_usd > 0 and c.model == "text-embedding-3-small" for c in embedding_calls)
    assert len(server.log.records("embeddings")) == 2
    keywords = env.store.keywords(env.store.site("sample").id)
    assert all(k.cluster_id is not None for k in keywords)

    assert env.materialize(selection=["clusters"]).success
    assert len(server.log.records("embeddings")) == 2


def test_the_lexical_backend_can_be_chosen_per_site_even_with_a_provider(openai_env):
    env = openai_env
    env.store.update_site_settings(env.store.site("sample").id, {"clustering_backend": "lexical"})
    assert env.materialize(selection=["keywords", "clusters"]).success
    assert [c for c in env.store.model_calls() if c.stage == "embeddings"] == []
    assert len(env.server.log.records("embeddings")) == 0

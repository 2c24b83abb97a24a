"""Model answers and the engine against providers as they really behave (issue 10, items 1-10).

Everything goes through the real `openai` SDK over HTTP to the loopback server, in the modes real
providers show: answers that follow only the JSON schema, empty answers, hostile text, servers that
only know `json_object` (llama.cpp), endpoints that hang, close the connection or are not there. The
store-side behaviours run on both backends (the suite's two passes).
"""

from __future__ import annotations

import itertools
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from sqlalchemy import select

from pipeline.cli import main as cli
from pipeline.llm.ledger import Leases
from pipeline.llm.openai_provider import forget_endpoints
from pipeline.llm.structured_output import response_format
from pipeline.llm.tasks import Task
from pipeline.models import Cluster, Content, ContentVariant, Idea, ImagePrompt, ItemLease, ResponseCache
from pipeline.prompts.schemas import ArticleDraft, ArticleSection, ClusterNames
from pipeline.stages.clusters import FALLBACK_MODEL
from pipeline.stages.content import variant_row
from resources import LLMResource
from resources.llm import EndpointConfig, llm_from_environment
from tests.conftest import REPO, SIX_ASSETS
from tests.openai_server import DeadEndpoint, Fault, FaultPlan, LoopbackOpenAI

API_KEY = "sk-test-hardening-0123456789"
BIN = Path(sys.executable).parent


@pytest.fixture
def server():
    forget_endpoints()
    with LoopbackOpenAI(latency_ms=0) as running:
        yield running
    forget_endpoints()


def real(server_or_url, **overrides) -> LLMResource:
    """The LLM resource pointed at a loopback or dead endpoint through the SDK."""
    base_url = server_or_url if isinstance(server_or_url, str) else server_or_url.base_url
    config: dict[str, Any] = {
        "provider": "openai",
        "api_key": API_KEY,
        "base_url": base_url,
        "max_retries": 1,
        "timeout_s": 5,
        "concurrency": 8,
        "image_size": "256x256",
    }
    return LLMResource(**(config | overrides))


def stage_calls(env, stage: str, run_id: str | None = None):
    return [c for c in env.store.model_calls(partition="sample", run_id=run_id) if c.stage == stage]


def check_result(result: dg.ExecuteInProcessResult, asset: str, check: str = "items_ok") -> dg.AssetCheckEvaluation:
    """The evaluation of the asset's `check` (`items_ok`, the model-call check; `content` has content checks too)."""
    [evaluation] = [
        e for e in result.get_asset_check_evaluations() if e.asset_key == dg.AssetKey(asset) and e.check_name == check
    ]
    return evaluation


def materialization_metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict[str, Any]:
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey(asset)]
    return {key: value.value for key, value in event.materialization.metadata.items()}


# -- 1. identifiers the model must echo are constrained ------------------------------------------------


def test_choices_reach_the_provider_as_enums_of_a_per_request_schema():
    plain = response_format(ClusterNames)
    constrained = response_format(ClusterNames, (("clusters.key", ("c-1", "c-2")),))
    key = constrained["json_schema"]["schema"]["properties"]["clusters"]["items"]["properties"]["key"]
    assert key["enum"] == ["c-1", "c-2"]
    assert "enum" not in str(plain), "the class-wide schema is not changed by a request's choices"
    nested = response_format(ArticleDraft, (("secondary_keywords", ("a", "b")), ("tags", ("x",))))
    properties = nested["json_schema"]["schema"]["properties"]
    assert properties["secondary_keywords"]["items"]["enum"] == ["a", "b"]
    assert properties["tags"]["items"]["enum"] == ["x"]


def test_a_server_that_only_follows_the_schema_completes_all_six_stages_in_one_run(env, server):
    server.answers = "schema_only"
    env.resources["llm"] = real(server)
    env.add_site()
    result = env.materialize(selection=SIX_ASSETS)
    assert result.success

    with env.store.transaction() as s:
        clusters = s.scalars(select(Cluster).where(Cluster.key != "unclustered")).all()
        ideas = s.scalars(select(Idea)).all()
        variants = s.scalars(select(ContentVariant)).all()
        prompts = s.scalars(select(ImagePrompt)).all()
    assert clusters and all(c.name for c in clusters)
    # Keys are enum-constrained and the batch size is fixed, so names come back; a key the model repeats
    # instead of another is named after its top keyword, counted, and asked again on the next run.
    fallbacks = [c for c in clusters if c.model == FALLBACK_MODEL]
    assert len(fallbacks) < len(clusters) / 2
    assert materialization_metadata(result, "clusters")["clusters_with_fallback_names_total"] == len(fallbacks)
    assert len(variants) == len(ideas) > 0
    idea_targets = {i.id: set(i.target_keywords) for i in ideas}
    with env.store.transaction() as s:
        idea_of = dict(s.execute(select(Content.id, Content.idea_id)).all())
    for variant in variants:
        assert "<h2>" in variant.body_html
        assert variant.primary_keyword in idea_targets[idea_of[variant.content_id]]
    headings = {v.id: set(_headings(v.body_html)) for v in variants}
    for prompt in prompts:
        if prompt.kind == "in_article":
            assert prompt.anchor_heading in headings[prompt.variant_id]
    assert env.row_counts()["images"] == len(prompts)


def _headings(body_html: str) -> list[str]:
    from pipeline.article_html import read_sections

    return [heading for heading, _ in read_sections(body_html)]


def test_clusters_the_model_does_not_name_keep_a_counted_fallback_and_a_rerun_asks_again(env, server):
    server.answers = "empty"  # {"clusters": []}: no name comes back, even after the repair attempt
    env.resources["llm"] = real(server, repair_attempts=1)
    env.add_site()
    first = env.materialize(selection=["keywords", "clusters"])
    assert first.success, "fallback names let downstream stages run"
    with env.store.transaction() as s:
        clusters = s.scalars(select(Cluster).where(Cluster.key != "unclustered")).all()
    assert clusters and {c.model for c in clusters} == {FALLBACK_MODEL}
    assert all(c.name == " ".join(w[:1].upper() + w[1:] for w in c.top_keywords[0].split()) for c in clusters)
    metadata = materialization_metadata(first, "clusters")
    assert metadata["clusters_named_by_fallback"] == len(clusters)
    check = check_result(first, "clusters")
    assert not check.passed and check.metadata["fallback_items"].value == len(clusters)

    rejected = stage_calls(env, "clusters", first.run_id)
    assert rejected and {c.outcome for c in rejected} == {"rejected"}
    assert all(c.cost_usd > 0 for c in rejected), "a rejected answer was paid for and says so"
    with env.store.transaction() as s:
        assert not s.scalars(select(ResponseCache).where(ResponseCache.stage == "clusters")).all()

    server.answers = "composer"
    assert env.materialize(selection=["ideas"]).success
    assert env.row_counts()["ideas"] > 0, "ideas were planned for fallback-named clusters"
    second = env.materialize(selection=["clusters"])
    assert second.success
    asked = stage_calls(env, "clusters", second.run_id)
    assert asked and {c.outcome for c in asked} == {"ok"}, "the re-run asked the model again"
    with env.store.transaction() as s:
        renamed = s.scalars(select(Cluster).where(Cluster.key != "unclustered")).all()
    assert {c.model for c in renamed} != {FALLBACK_MODEL} and not [c for c in renamed if c.model == FALLBACK_MODEL]


# -- 2. rejected answers are never cached nor recorded as ok -------------------------------------------


def test_an_article_answer_the_stage_rejects_is_not_cached_and_a_rerun_writes_the_article(env, server):
    env.resources["llm"] = real(server)
    env.add_site()
    assert env.materialize(selection=["keywords", "clusters", "ideas"]).success
    server.answers = "empty"  # every article: no sections, no words
    first = env.materialize(selection=["content"], raise_on_error=False)
    assert not first.success
    calls = stage_calls(env, "content", first.run_id)
    assert calls and {c.outcome for c in calls} == {"rejected"}
    assert env.row_counts()["content_variants"] == 0
    with env.store.transaction() as s:
        assert not s.scalars(select(ResponseCache).where(ResponseCache.stage == "content")).all()

    server.answers = "composer"
    second = env.materialize(selection=["content"])
    assert second.success
    rerun = stage_calls(env, "content", second.run_id)
    assert Counter(c.outcome for c in rerun) == {"ok": env.row_counts()["ideas"]}, "asked again, not replayed"
    assert env.row_counts()["content_variants"] == env.row_counts()["ideas"]


# -- 3. a provider that hangs or closes the connection ends in bounded time ----------------------------


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("hang", "did not answer within"),
        ("close", "closed the connection without an answer"),
        ("refuse", "refused the connection"),
    ],
)
def test_a_dead_endpoint_fails_the_stage_once_with_a_clear_message(env, mode, message):
    env.add_site()
    assert env.materialize(selection=["keywords"]).success
    with DeadEndpoint(mode) as dead:
        env.resources["llm"] = real(dead.base_url, timeout_s=1, item_timeout_s=2, max_retries=1)
        result = env.materialize(selection=["clusters"], raise_on_error=False)
        connections = dead.connections
        url = dead.base_url.removesuffix("/v1")
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    description = failure.event_specific_data.error.message + str(failure.event_specific_data.user_failure_data)
    assert message in description and "no further calls made" in description
    assert url in description
    if mode == "close":
        assert "did not answer within" not in description, "a closed connection is not a timeout"
    # Only the first call was tried (with its SDK retry): the other naming batches were never sent.
    assert connections <= 4
    # One call was made (the embeddings request of `auto` clustering); nothing after it was sent.
    calls = env.store.model_calls(run_id=result.run_id)
    assert [c.outcome for c in calls] == ["error"]


def test_first_failures_open_the_window_instead_of_serialising_the_rest(env, server):
    env.add_site()
    env.resources["llm"] = real(server)
    assert env.materialize(selection=["keywords", "clusters"]).success
    server.latency_ms = 250
    server.plan = FaultPlan().push(*(Fault("bad_request", path="chat") for _ in range(3)))
    result = env.materialize(selection=["ideas"], raise_on_error=False, run_config=_share(1.0))
    assert result.success
    chat = server.log.records("chat")
    after_failures = sorted(r.time for r in chat[3:])
    assert len(after_failures) > 8
    overlapping = sum(1 for a, b in itertools.pairwise(after_failures) if b - a < 0.1)
    assert overlapping >= len(after_failures) // 2, "calls after the first failures ran concurrently"


def _share(share: float, asset: str = "ideas") -> dict[str, Any]:
    return {"ops": {asset: {"config": {"max_failure_share": share}}}}


# -- 4. run config never changes the provider ----------------------------------------------------------


def test_run_config_overrides_change_only_what_they_name(env, server, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    env.resources["llm"] = llm_from_environment()
    env.add_site()
    result = env.materialize(
        selection=["keywords", "clusters", "ideas"],
        run_config={"resources": {"llm": {"config": {"max_run_cost_usd": 5.0, "timeout_s": 7, "max_retries": 1}}}},
    )
    assert result.success
    calls = env.store.model_calls(run_id=result.run_id)
    assert calls and {c.provider for c in calls} == {"openai"}
    with env.store.transaction() as s:
        assert {i.provider for i in s.scalars(select(Idea))} == {"openai"}
    tags = env.instance.get_run_by_id(result.run_id).tags
    assert tags["pipeline/text_endpoint"] == f"openai {server.base_url}"
    metadata = materialization_metadata(result, "ideas")
    assert metadata["provider"] == "openai" and metadata["endpoint"] == server.base_url
    assert API_KEY not in str(tags) + str(metadata)


def test_images_can_stay_offline_beside_a_real_text_endpoint(env, server):
    env.resources["llm"] = real(server, images=EndpointConfig(provider="offline"))
    env.add_site()
    result = env.materialize(selection=SIX_ASSETS)
    assert result.success
    with env.store.transaction() as s:
        assert {v.provider for v in s.scalars(select(ContentVariant))} == {"openai"}
    assert not server.log.records("images")
    assert {c.provider for c in stage_calls(env, "images")} == {"offline"}
    tags = env.instance.get_run_by_id(result.run_id).tags
    assert tags["pipeline/images_endpoint"].startswith("offline")


# -- 5. one failed item does not stop a site -----------------------------------------------------------


def test_item_failures_under_the_share_are_reported_by_a_failing_check_and_downstream_runs(env, server):
    env.resources["llm"] = real(server, repair_attempts=0)
    env.add_site()
    assert env.materialize(selection=["keywords", "clusters", "ideas"]).success
    server.plan = FaultPlan().push(Fault("bad_request", schema="ArticleDraft"))
    result = env.materialize(selection=["content", "image_prompts", "images"])
    assert result.success, "one failed article of 93 (about 1%) is under the 5% default"
    ideas = env.row_counts()["ideas"]
    assert env.row_counts()["content_variants"] == ideas - 1
    check = check_result(result, "content")
    assert not check.passed and check.metadata["failed_items"].value == 1
    failed = check.metadata["failed"].value
    assert isinstance(failed, str) and "idea:" in failed
    assert check_result(result, "images").passed
    assert env.row_counts()["images"] > 0, "downstream stages worked on what exists"

    server.plan = FaultPlan()
    strict = env.materialize(
        selection=["content"], run_config={"ops": {"content": {"config": {"max_failure_share": 0.0}}}}
    )
    assert strict.success and check_result(strict, "content").passed, "the missing article was written"
    assert env.row_counts()["content_variants"] == ideas


def test_failures_above_the_share_fail_the_step(env, server):
    env.resources["llm"] = real(server, repair_attempts=0)
    env.add_site()
    assert env.materialize(selection=["keywords", "clusters"]).success
    server.plan = FaultPlan().push(*(Fault("bad_request", schema="IdeaBatch") for _ in range(5)))
    result = env.materialize(selection=["ideas"], raise_on_error=False)
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "5 item(s) failed" in failure.event_specific_data.error.message
    assert env.row_counts()["ideas"] > 0, "the clusters that succeeded kept their ideas"


# -- 6. article keywords are the idea's keywords -------------------------------------------------------


def test_article_keywords_are_filtered_to_the_ideas_target_keywords():
    draft = ArticleDraft(
        title="Cold brew ratio",
        meta_title="Cold brew ratio",
        meta_description="How much coffee for cold brew.",
        intro_html="<p>" + "word " * 40 + "</p>",
        sections=[ArticleSection(heading="Ratio", html="<p>" + "coffee " * 60 + "</p>")],
        conclusion_html="<p>Done.</p>",
        primary_keyword="free casino bonus",
        secondary_keywords=["<script>kw</script>", "=HYPERLINK(1)", "cold brew strength", "Cold Brew Ratio"],
        tags=[],
        categories=[],
    )
    row = variant_row(draft, ["cold brew ratio", "cold brew strength"], None)
    assert row["primary_keyword"] == "cold brew ratio", "an invented primary keyword falls back to the idea's"
    assert row["secondary_keywords"] == ["cold brew strength"]
    assert row["dropped_keywords"] == 3


def test_hostile_answers_store_only_keywords_from_the_keyword_file(env, server):
    server.answers = "hostile"
    env.resources["llm"] = real(server)
    env.add_site()
    result = env.materialize(selection=["keywords", "clusters", "ideas", "content"], raise_on_error=False)
    with env.store.transaction() as s:
        ideas = {i.id: set(i.target_keywords) for i in s.scalars(select(Idea))}
        variants = s.scalars(select(ContentVariant)).all()
        idea_of = dict(s.execute(select(Content.id, Content.idea_id)).all())
    assert variants, f"hostile answers still produce articles (run success: {result.success})"
    keywords = {k.keyword for k in env.store.keywords(env.store.site("sample").id)}
    assert all(targets <= keywords for targets in ideas.values())
    for variant in variants:
        targets = ideas[idea_of[variant.content_id]]
        assert variant.primary_keyword in targets
        assert set(variant.secondary_keywords) <= targets
        # Hostile text survives only as escaped text: no live script tag or event-handler attribute.
        assert not re.search(r"<script|<[a-z]+[^>]*\son[a-z]+=", variant.body_html)


# -- 7. no destructive result from an empty answer -----------------------------------------------------


def test_a_forced_replan_answered_with_no_ideas_keeps_the_existing_ideas(env, server):
    env.resources["llm"] = real(server)
    env.add_site()
    assert env.materialize(selection=["keywords", "clusters", "ideas"]).success
    with env.store.transaction() as s:
        before = sorted((i.cluster_id, i.key) for i in s.scalars(select(Idea)))
    server.answers = "empty"
    result = env.materialize(
        selection=["ideas"], raise_on_error=False, run_config={"ops": {"ideas": {"config": {"force": True}}}}
    )
    assert not result.success, "every cluster's answer was unusable: a failure, not a silent success"
    with env.store.transaction() as s:
        assert sorted((i.cluster_id, i.key) for i in s.scalars(select(Idea))) == before


def test_a_forced_image_prompt_redo_without_valid_anchors_keeps_the_in_article_prompts(env, server):
    env.resources["llm"] = real(server)
    env.add_site()
    assert env.materialize(selection=["keywords", "clusters", "ideas", "content", "image_prompts"]).success
    with env.store.transaction() as s:
        before = sorted((p.variant_id, p.kind, p.anchor_heading) for p in s.scalars(select(ImagePrompt)))
    assert any(kind == "in_article" for _, kind, _ in before)
    server.answers = "empty"
    result = env.materialize(
        selection=["image_prompts"],
        raise_on_error=False,
        run_config={"ops": {"image_prompts": {"config": {"force": True, "limit": 3}}}},
    )
    assert not result.success
    with env.store.transaction() as s:
        assert sorted((p.variant_id, p.kind, p.anchor_heading) for p in s.scalars(select(ImagePrompt))) == before


# -- 8. concurrent runs of one site do not pay twice ---------------------------------------------------


def test_two_runs_of_one_site_started_together_pay_for_each_article_once(env, server, tmp_path):
    env.resources["llm"] = real(server)
    env.add_site()
    assert env.materialize(selection=["keywords", "clusters", "ideas"]).success
    # Long enough that the work (~90 articles, 8 at a time: ~9 s) outlasts the gap between the two processes'
    # starts on a loaded machine (seconds): at 100 ms one run could finish everything before the other began.
    server.latency_ms = 800
    # Two `dagster asset materialize` processes, as a user starts them, against the same store.
    command = [str(BIN / "dagster"), "asset", "materialize", "-m", "pipeline.definitions"]
    command += ["--select", "content", "--partition", "sample"]
    environment = env.subprocess_environment(
        OPENAI_BASE_URL=server.base_url, OPENAI_API_KEY=API_KEY, PIPELINE_LLM_CONCURRENCY="8"
    )
    logs = [tmp_path / f"run-{n}.log" for n in range(2)]
    processes = [
        subprocess.Popen(command, cwd=REPO, env=environment, stdout=log.open("w"), stderr=subprocess.STDOUT)
        for log in logs
    ]
    for process, log in zip(processes, logs, strict=True):
        assert process.wait(timeout=300) == 0, log.read_text()[-3000:]

    ideas = env.row_counts()["ideas"]
    paid = [c for c in stage_calls(env, "content") if c.outcome == "ok"]
    assert Counter(c.item_ref for c in paid).most_common(1)[0][1] == 1, "no article was paid for twice"
    assert len(paid) == ideas == env.row_counts()["content_variants"]
    assert len([r for r in server.log.records("chat") if r.schema == "ArticleDraft"]) == ideas
    runs = {c.run_id for c in paid}
    assert len(runs) == 2, "both runs worked: each skipped what the other had claimed"
    with env.store.transaction() as s:
        assert not s.scalars(select(ItemLease)).all(), "every lease was released"


def test_a_lease_is_granted_once_until_released_expired_or_its_holder_is_gone(env):
    store = env.store
    assert store.claim_items("content", "sample", ["idea:1", "idea:2"], "run-a", 60) == {"idea:1", "idea:2"}
    assert store.claim_items("content", "sample", ["idea:2", "idea:3"], "run-b", 60) == {"idea:3"}
    assert store.claim_items("content", "sample", ["idea:2"], "run-a", 60) == {"idea:2"}, "its holder renews it"
    assert store.claim_items("content", "sample", ["idea:1"], "run-b", 60, take_over=["run-a"]) == {"idea:1"}
    store.release_leases("run-a")
    assert store.claim_items("content", "sample", ["idea:2"], "run-b", 60) == {"idea:2"}
    store.claim_items("images", "sample", ["image_prompt:9"], "run-a", -1)  # already expired
    assert store.claim_items("images", "sample", ["image_prompt:9"], "run-b", 60) == {"image_prompt:9"}
    assert store.claim_items("content", "other-site", ["idea:2"], "run-a", 60) == {"idea:2"}, "per partition"


def test_a_step_retried_in_another_process_waits_for_its_earlier_attempts_leases_but_not_another_runs(env):
    # A Celery worker on another host died mid-step: its leases look alive (no pid to check there) until
    # they expire; a copy still running beside its retry releases them when its stage ends.
    store = env.store
    store.claim_items("content", "sample", ["idea:1"], "run-a@other-host:41", 1.5)
    store.claim_items("content", "sample", ["idea:2"], "run-b@other-host:42", 600)
    retry = Leases(store, "run-a", "sample")
    started = time.monotonic()
    assert retry.claim("content", ["idea:1", "idea:2"], 600) == {"idea:1"}, "another run's item is left alone"
    assert 1.0 <= time.monotonic() - started < 10, "it waited for the earlier attempt's lease to expire"
    assert store.lease_holders("content", "sample", ["idea:1", "idea:2"]) == {
        "idea:1": retry.holder,
        "idea:2": "run-b@other-host:42",
    }


# -- 9. pipeline estimate calls nothing ----------------------------------------------------------------


def test_estimate_with_a_real_provider_configured_calls_nothing(env, server, monkeypatch, capsys):
    monkeypatch.setenv("DATABASE_URL", env.url)
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    env.add_site()
    assert env.materialize(selection=["keywords"]).success
    site = env.store.site("sample")
    env.store.update_site_settings(site.id, {"clustering_backend": "semantic"})
    assert cli(["estimate", "--site", "sample"]) == 0
    out = capsys.readouterr().out
    assert "Nothing was called." in out and "Provider: openai" in out
    assert len(server.log) == 0, "no request reached the provider (embeddings included)"
    assert env.store.model_calls() == []
    assert API_KEY not in out


# -- 10. real compatible servers: structured-output forms and embeddings are learnt once ---------------


def test_a_server_without_json_schema_is_answered_in_json_object_form_learnt_once(env, server):
    server.structured_outputs = "json_object"
    server.embeddings_available = False
    env.resources["llm"] = real(server, images=EndpointConfig(provider="offline"))
    env.add_site()
    result = env.materialize(selection=SIX_ASSETS)
    assert result.success
    forms = Counter(r.response_format for r in server.log.records("chat"))
    assert forms["json_schema"] == 2, "json_schema was tried once per model (gpt-5-mini, gpt-5), never again"
    assert forms["json_object"] > 90
    metadata = materialization_metadata(result, "clusters")
    assert "json_object with schema" in metadata["structured_output[gpt-5-mini]"]
    assert metadata["clustering_backend"].startswith("lexical (embeddings unavailable")
    assert len(server.log.records("embeddings")) == 1, "the missing embeddings endpoint was asked once"
    assert not server.log.records("images")
    assert {c.outcome for c in stage_calls(env, "content")} == {"ok"}

    again = env.materialize(selection=["clusters"], run_config={"ops": {"clusters": {"config": {"recluster": True}}}})
    assert again.success
    assert len(server.log.records("embeddings")) == 1, "remembered for the process: not asked again"


def test_request_choices_are_part_of_the_cache_key(env, server):
    llm = real(server)
    env.add_site()
    data = {"site": "x", "existing_names": [], "clusters": [{"key": "c-1", "keywords": ["a"], "dominant_intent": None}]}
    with llm.engine(env.store, run_id="r1", partition="sample") as engine:
        first = engine.generate("clusters", Task("t", "cluster_names", data, ClusterNames, {"clusters.key": ["c-1"]}))
        second = engine.generate("clusters", Task("t", "cluster_names", data, ClusterNames, {"clusters.key": ["c-2"]}))
    assert not first.cached and not second.cached


def test_status_counts_offline_variants_apart_from_real_ones_and_names_the_endpoints(env, server, monkeypatch, capsys):
    env.add_site()
    assert env.materialize(selection=["keywords", "clusters", "ideas"]).success
    env.resources["llm"] = real(server)
    assert env.materialize(selection=["content"], run_config={"ops": {"content": {"config": {"limit": 5}}}}).success
    env.resources["llm"] = LLMResource(provider="offline")
    assert env.materialize(selection=["content"], run_config={"ops": {"content": {"config": {"limit": 3}}}}).success
    monkeypatch.setenv("DATABASE_URL", env.url)
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    monkeypatch.setenv("PIPELINE_IMAGES_PROVIDER", "offline")
    assert cli(["status", "--site", "sample"]) == 0
    out = capsys.readouterr().out
    assert "sample: offline 3, openai 5" in out
    assert f"text openai {server.base_url}" in out and "images offline" in out

"""`pipeline estimate` and dry runs: expected calls, tokens and cost per stage, with nothing called or written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from pipeline.estimate import estimate_site
from pipeline.stages import MODEL_STAGES
from resources import LLMResource
from tests.conftest import REPO, SAMPLE_KEYWORDS


def offline_engine(env):
    return LLMResource().engine(env.store, run_id=None, partition="sample")


def test_a_new_site_is_projected_from_its_keyword_file_without_any_call(env):
    env.add_site()
    with offline_engine(env) as engine:
        estimates = {e.stage: e for e in estimate_site(env.store, engine, "sample")}
    assert list(estimates) == list(MODEL_STAGES)
    clusters = estimates["clusters"].projected_items
    assert clusters == -(-397 // 12)  # keywords / target cluster size
    assert estimates["ideas"].calls == clusters
    assert estimates["content"].calls == clusters * 3  # ideas per cluster
    assert estimates["images"].images == clusters * 3 * 3  # featured + 2 in-article per article
    assert all(e.cost_usd > 0 for e in estimates.values())
    assert env.store.model_calls() == [] and env.store.counts(env.store.site("sample").id).keywords == 0


def test_pending_items_are_estimated_exactly_from_the_prompts_a_run_would_send(env):
    env.add_site()
    assert env.materialize(selection=["keywords", "clusters", "ideas"]).success
    ideas = len(env.store.ideas(env.store.site("sample").id))
    with offline_engine(env) as engine:
        content = next(e for e in estimate_site(env.store, engine, "sample", ("content",)))
    assert (content.pending_items, content.projected_items, content.calls) == (ideas, 0, ideas)
    assert content.input_tokens > ideas * 200 and content.model == "gpt-5"


def test_a_finished_site_needs_no_calls(sample_run):
    env, _ = sample_run
    with offline_engine(env) as engine:
        estimates = estimate_site(env.store, engine, "sample")
    assert [(e.stage, e.calls, e.cost_usd) for e in estimates] == [(s, 0, 0.0) for s in MODEL_STAGES]


def test_estimate_command_prints_json_per_stage(tmp_path):
    environment = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'store.db'}",
        "DAGSTER_HOME": str(tmp_path / "home"),
        "PIPELINE_MEDIA_DIR": str(tmp_path / "media"),
    }
    bin_dir = Path(sys.executable).parent
    added = subprocess.run(
        [str(bin_dir / "pipeline"), "sites", "add", "coffee", "--keywords", str(SAMPLE_KEYWORDS)],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
    )
    assert added.returncode == 0, added.stderr
    result = subprocess.run(
        [str(bin_dir / "pipeline"), "estimate", "--site", "coffee", "--stage", "content", "--json"],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    [content] = json.loads(result.stdout)
    assert content["stage"] == "content" and content["calls"] == 34 * 3 and content["cost_usd"] > 0

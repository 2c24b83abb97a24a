"""Crash safety: a run killed mid-stage (SIGKILL, as the OOM killer or a lost machine does it) loses no
finished work, and re-running the partition completes it without duplicates or paying twice.

The content stage runs in a real `dagster asset materialize` process calling the loopback OpenAI-compatible
server through the `openai` SDK, with enough latency that the kill lands while articles are being written.
Runs on both backends.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from sqlalchemy import func, select

from pipeline.models import Content, ContentVariant, Idea
from resources import LLMResource
from tests.conftest import REPO
from tests.openai_server import LoopbackOpenAI

BIN = Path(sys.executable).parent
MATERIALIZE_CONTENT = ["asset", "materialize", "-m", "pipeline.definitions", "--select", "content", "--partition"]
KILL_AFTER_ARTICLES = 5


def articles_by_idea(env) -> dict[int, int]:
    with env.store.transaction() as s:
        return dict(s.execute(select(Content.idea_id, func.count()).group_by(Content.idea_id)).all())


def test_a_content_run_killed_mid_stage_is_completed_by_a_rerun_without_duplicates_or_paying_twice(env, tmp_path):
    env.add_site()
    assert env.materialize(selection=["keywords", "clusters", "ideas"]).success
    ideas = {idea.id for idea in env.store.ideas(env.store.site("sample").id)}

    with LoopbackOpenAI(latency_ms=300) as server:
        log = tmp_path / "killed-run.log"
        with log.open("w") as output:
            process = subprocess.Popen(
                [str(BIN / "dagster"), *MATERIALIZE_CONTENT, "sample"],
                cwd=REPO,
                env=env.subprocess_environment(OPENAI_BASE_URL=server.base_url, PIPELINE_LLM_CONCURRENCY="4"),
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 180
        while len(articles_by_idea(env)) < KILL_AFTER_ARTICLES:
            assert process.poll() is None, f"the run ended before the kill:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"no articles written in time:\n{log.read_text()[-3000:]}"
            time.sleep(0.05)
        os.killpg(process.pid, signal.SIGKILL)
        assert process.wait(timeout=30) == -signal.SIGKILL

        finished = set(articles_by_idea(env))
        paid_before_kill = len(server.log.records("chat"))
        ledger_before_kill = [c for c in env.store.model_calls(partition="sample") if c.stage == "content"]
        assert 0 < len(finished) < len(ideas), "the kill landed mid-stage"
        assert paid_before_kill >= len(finished)
        # Every stored article's call is on record (the ledger is written before results are handed over);
        # only calls still in flight at the kill can be missing, and nothing is recorded that was not asked.
        recorded = {c.item_ref for c in ledger_before_kill}
        assert {f"idea:{i}" for i in finished} <= recorded
        assert len(finished) <= len(ledger_before_kill) <= paid_before_kill

        server.latency_ms = 10
        env.resources["llm"] = LLMResource(provider="openai", api_key="sk-test-key", base_url=server.base_url)
        rerun = env.materialize(selection=["content"])
        assert rerun.success
        paid_by_rerun = len(server.log.records("chat")) - paid_before_kill

    missing = ideas - finished
    assert paid_by_rerun == len(missing), "the re-run asked the model once per unfinished idea, nothing else"
    rerun_calls = [c for c in env.store.model_calls(run_id=rerun.run_id) if c.stage == "content"]
    called = Counter(c.item_ref for c in rerun_calls)
    assert set(called) == {f"idea:{i}" for i in missing} and set(called.values()) == {1}
    assert not {f"idea:{i}" for i in finished} & set(called), "no finished article was paid for again"
    assert {c.outcome for c in rerun_calls} == {"ok"}

    assert articles_by_idea(env) == dict.fromkeys(ideas, 1), "every idea has exactly one article"
    with env.store.transaction() as s:
        variants = Counter(s.scalars(select(ContentVariant.content_id)).all())
        versions = set(s.execute(select(ContentVariant.version, ContentVariant.variant)).all())
        assert s.scalar(select(func.count()).select_from(Idea)) == len(ideas)
    assert len(variants) == len(ideas) and set(variants.values()) == {1}, "one current variant per article"
    assert versions == {(1, "A")}

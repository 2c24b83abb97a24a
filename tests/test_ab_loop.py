"""The A/B loop end to end, as a team runs it: a regenerated article of the sample site published in a
time-split experiment, Search Console exports imported for A's and B's periods, the decision made once with
B published through the publishing path, later decay in a further export firing a trend rule once, and the
regeneration it requests, through the real `openai` SDK against the loopback server, given the experiment's
result, both variants' numbers and the trend as data.

Times are frozen in 2030 (the experiment tests' calendar: periods on Los Angeles midnights, summer time
starting on 10 March).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from sqlalchemy import select

import tests.openai_server
from assets import ALL_ASSETS
from pipeline import experiments, publishing, review
from pipeline.metric_exports import DateRange
from pipeline.metrics import import_metrics_bytes
from pipeline.models import Content, Experiment, PostMetric, TriggerFiring, as_utc
from pipeline.triggers import evaluate, fire, site_rule_set
from tests.conftest import Env
from tests.openai_server import LoopbackOpenAI
from tests.test_openai_engine import openai_llm
from tests.test_review import regenerate

BASE_URL = "https://coffee.example"
PUBLISHED_AT = datetime(2030, 3, 1, 18, 0, tzinfo=UTC)  # 10:00 in Los Angeles
FIRST_MIDNIGHT = datetime(2030, 3, 2, 8, 0, tzinfo=UTC)  # 00:00 PST: period 1 (A) starts
SECOND_MIDNIGHT = datetime(2030, 3, 16, 7, 0, tzinfo=UTC)  # 00:00 PDT: period 2 (B)
THIRD_MIDNIGHT = datetime(2030, 3, 30, 7, 0, tzinfo=UTC)  # 00:00 PDT: one cycle done
HEADER = "Top pages,Clicks,Impressions,CTR,Position\n"


@pytest.fixture(scope="module")
def server() -> Iterator[LoopbackOpenAI]:
    with LoopbackOpenAI() as running:
        yield running


def search_console_pages(url: str, clicks: int, impressions: int, position: float) -> bytes:
    """A Search Console "Pages" table as the UI exports it (CTR rounded as text), with a page we do not know."""
    ctr = f"{100 * clicks / impressions:.1f}%"
    return (
        HEADER
        + f"{url},{clicks},{impressions},{ctr},{position}\n{BASE_URL}/some-old-page/?utm_source=x,3,100,3%,20.1\n"
    ).encode()


def content_row(env: Env, content_id: int) -> Content:
    with env.store.transaction() as session:
        found = session.get(Content, content_id)
    assert found is not None
    return found


def stored_metrics(env: Env, content_id: int) -> list[tuple[str, str, float, datetime | None, datetime]]:
    with env.store.transaction() as session:
        rows = session.scalars(
            select(PostMetric).where(PostMetric.content_id == content_id).order_by(PostMetric.observed_at)
        ).all()
    return [
        (r.variant, r.metric, r.value, as_utc(r.period_start) if r.period_start else None, as_utc(r.observed_at))
        for r in rows
    ]


def test_a_b_test_decides_b_once_then_decay_fires_a_trend_rule_once_and_the_rewrite_gets_the_evidence(
    sample_run, server, tmp_path: Path, monkeypatch
):
    env: Env = sample_run[0]
    site = env.store.site("sample")
    env.store.update_site_settings(
        site.id,
        dict(site.settings)
        | {
            "base_url": BASE_URL,
            "ab_test": {"enabled": True, "period_days": 14, "max_days": 84, "min_impressions": 1000},
            "triggers": [
                {
                    "metric": "clicks",
                    "comparison": "<",
                    "threshold": 0.7,
                    "kind": "trend",
                    "window_days": 28,
                    "min_volume": 40,
                    "instruction": "Win back the clicks.",
                }
            ],
        },
    )
    publish_root = tmp_path / "publish"
    content_id = review.review_list(env.store, site="sample", status="draft")[0].id
    review.approve(env.store, content_id, actor="editor:ana")
    publishing.publish(env.store, content_id, publish_root, actor="editor:ana", now=PUBLISHED_AT - timedelta(days=30))
    regenerate(env, content_id, in_article=1)  # version 2 with A and B, as a regeneration run writes it
    review.approve(env.store, content_id, variant="A", actor="editor:ana")
    publishing.publish(env.store, content_id, publish_root, actor="editor:ana", now=PUBLISHED_AT)
    experiment = env.store.experiment_of(content_id)
    assert experiment is not None and experiment.version == 2 and experiment.control == "A"
    url = f"{BASE_URL}/{review.load_article(env.store, content_id).slug}/"

    experiments.advance(env.store, "sample", SECOND_MIDNIGHT + timedelta(minutes=5), publish_root)
    assert content_row(env, content_id).published_variant == "B", "period 2: B is live"

    # Search Console exports of each period (the UI's Pages table; the days given as --from/--to would).
    after_cycle = THIRD_MIDNIGHT + timedelta(minutes=10)
    first = import_metrics_bytes(
        env.store,
        search_console_pages(url, 10, 1000, 8.4),
        "gsc-period-1.csv",
        now=after_cycle,
        site="sample",
        days=DateRange(date(2030, 3, 2), date(2030, 3, 15)),
    )
    second = import_metrics_bytes(
        env.store,
        search_console_pages(url + "?utm_campaign=ab#top", 40, 1000, 6.1),
        "gsc-period-2.csv",
        now=after_cycle,
        site="sample",
        days=DateRange(date(2030, 3, 16), date(2030, 3, 29)),
    )
    assert first.unmatched == second.unmatched == {f"{BASE_URL}/some-old-page/?utm_source=x": 1}
    assert not first.rejected and not second.rejected
    stored = stored_metrics(env, content_id)
    assert ("A", "clicks", 10.0, FIRST_MIDNIGHT, SECOND_MIDNIGHT) in stored
    assert ("B", "clicks", 40.0, SECOND_MIDNIGHT, THIRD_MIDNIGHT) in stored
    assert ("B", "ctr", 0.04, SECOND_MIDNIGHT, THIRD_MIDNIGHT) in stored, "CTR from the counts, not the text"

    decided_at = THIRD_MIDNIGHT + timedelta(minutes=30)
    report = experiments.advance(env.store, "sample", decided_at, publish_root)
    [decision] = [d for d in report.decided if d["experiment"] == experiment.id]
    assert (decision["winner"], decision["outcome"]) == ("B", "winner")
    with env.store.transaction() as session:
        row = session.get(Experiment, experiment.id)
    assert row is not None and (row.status, row.winner, row.looks) == ("decided", "B", 1)
    assert row.decision is not None and row.decision["a"]["ctr"] == 0.01 and row.decision["b"]["ctr"] == 0.04
    assert content_row(env, content_id).published_variant == "B"
    events = len(env.store.review_events(content_id))
    again = experiments.advance(env.store, "sample", decided_at + timedelta(days=3), publish_root)
    assert [d for d in again.decided if d["experiment"] == experiment.id] == []
    assert len(env.store.review_events(content_id)) == events, "decided once, nothing switched again"

    # Four weeks later clicks have fallen to less than half (20 against 50): the trend rule fires, once.
    decay_end = datetime(2030, 4, 27, 7, 0, tzinfo=UTC)
    decay = import_metrics_bytes(
        env.store,
        search_console_pages(url, 20, 1000, 9.8),
        "gsc-decay.csv",
        now=decay_end + timedelta(hours=2),
        site="sample",
        days=DateRange(date(2030, 3, 30), date(2030, 4, 26)),
    )
    assert decay.added > 0 and not decay.rejected
    assert ("B", "clicks", 20.0, THIRD_MIDNIGHT, decay_end) in stored_metrics(env, content_id)
    rules = {site.id: site_rule_set(env.store, env.store.site("sample"))}
    due = [d for d in evaluate(env.store, rules, [content_id], decay_end + timedelta(hours=3)) if d.rule.metric]
    assert len(due) == 1 and due[0].rule.key.startswith("site:")
    [fired] = fire(env.store, due)
    assert fire(env.store, evaluate(env.store, rules, [content_id], decay_end + timedelta(days=1))) == []
    with env.store.transaction() as session:
        firings = session.scalars(select(TriggerFiring).where(TriggerFiring.content_id == content_id)).all()
    assert len(firings) == 1 and firings[0].observed["trend"]["ratio"] == pytest.approx(0.4)

    # The regeneration it requests, through the SDK: the analysis gets the evidence as data.
    seen: list[dict[str, Any]] = []
    composer = tests.openai_server.COMPOSERS["MetricsAnalysis"]

    def recording(data: dict[str, Any]) -> Any:
        seen.append(data)
        return composer(data)

    monkeypatch.setitem(tests.openai_server.COMPOSERS, "MetricsAnalysis", recording)
    result = dg.materialize(
        ALL_ASSETS,
        selection=["content", "image_prompts", "images"],
        partition_key="sample",
        resources={**env.resources, "llm": openai_llm(server)},
        instance=env.instance,
        run_config={"ops": {"content": {"config": {"regenerate_firings": [fired.firing_id]}}}},
    )
    assert result.success
    [data] = seen
    assert data["experiment"]["winner"] == "B" and data["experiment"]["status"] == "decided"
    assert data["experiment"]["variants"]["A"]["ctr"] == 0.01 and data["experiment"]["variants"]["B"]["ctr"] == 0.04
    assert data["trend"]["ratio"] == pytest.approx(0.4)
    assert {v["variant"] for v in data["variants"]} == {"A", "B"}, "both variants of version 2, with their numbers"
    assert data["latest"]["B"]["clicks"] == 20.0 and data["latest"]["A"]["clicks"] == 10.0
    assert review.load_article(env.store, content_id).version == 3
    assert content_row(env, content_id).status == "draft", "the rewrite goes back to review"

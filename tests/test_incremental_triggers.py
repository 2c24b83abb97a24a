"""Trigger evaluation at volume: a tick evaluates only what changed since its cursor, at most a configured
number of articles (the rest waits in the cursor, visible as a backlog), and metric files load in batches.
Fire-once stays the store's: fresh cursors and fresh instances evaluate everything again and fire nothing
twice. Both backends."""

from __future__ import annotations

import hashlib
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from sqlalchemy import event, insert, update

from pipeline.metrics import import_metrics_file
from pipeline.models import Cluster, Content, ContentVariant, Idea, ReviewEvent
from pipeline.trigger_cursor import TriggerCursor
from pipeline.trigger_tick import TickLimits, run_tick
from pipeline.triggers import site_rule_set
from resources import StoreResource
from sensors.metrics import metric_triggers

NOW = datetime.now(UTC).replace(microsecond=0)
PUBLISHED = NOW - timedelta(days=10)
HEADER = "content_id,variant,metric,value,observed_at,source"
GENERATED = {"provider": "offline", "model": "offline", "prompt_version": "test@1"}
RULE = {"metric": "ctr", "comparison": "<", "threshold": 0.02, "min_age_hours": 24.0, "instruction": "title"}


def add_articles(env, count: int, slug: str = "coffee", published_at: datetime = PUBLISHED) -> list[int]:
    """`count` articles of site `slug` published as the review gate does (status, version, events), in bulk."""
    site = env.store.site(slug) if slug in {s.slug for s in env.store.sites()} else env.add_site(slug, name=slug)
    with env.store.transaction() as s:
        cluster = Cluster(
            site_id=site.id, key=f"{slug}-{count}-{int(published_at.timestamp())}", name="c", top_keywords=[]
        )
        s.add(cluster)
        s.flush()
        ideas = [
            {
                "site_id": site.id,
                "cluster_id": cluster.id,
                "key": f"idea-{i}",
                "title": f"Idea {i}",
                "angle": "how",
                "content_type": "guide",
                "outline": ["one"],
                "target_keywords": ["k"],
                "estimated_word_count": 800,
                **GENERATED,
            }
            for i in range(count)
        ]
        idea_ids = s.scalars(insert(Idea).returning(Idea.id, sort_by_parameter_order=True), ideas).all()
        contents = [
            {
                "site_id": site.id,
                "idea_id": idea_id,
                "status": "published",
                "published_at": published_at,
                "published_version": 1,
                "published_variant": "A",
            }
            for idea_id in idea_ids
        ]
        ids = list(s.scalars(insert(Content).returning(Content.id, sort_by_parameter_order=True), contents).all())
        s.execute(insert(ContentVariant), [variant(content_id) for content_id in ids])
        s.execute(
            insert(ReviewEvent),
            [
                {
                    "content_id": content_id,
                    "from_status": "approved",
                    "to_status": "published",
                    "version": 1,
                    "variant": "A",
                    "actor": "test",
                    "created_at": published_at + timedelta(seconds=2),
                }
                for content_id in ids
            ],
        )
    return ids


def variant(content_id: int) -> dict[str, Any]:
    return {
        "content_id": content_id,
        "version": 1,
        "variant": "A",
        "title": "t",
        "body_html": "<p>x</p>",
        "meta_title": "t",
        "meta_description": "d",
        "primary_keyword": "k",
        "secondary_keywords": [],
        "tags": [],
        "categories": [],
        "word_count": 1,
        **GENERATED,
    }


def metrics_file(path: Path, values: dict[int, float], observed: datetime = NOW - timedelta(days=1)) -> Path:
    when = observed.strftime("%Y-%m-%dT%H:%M:%SZ")
    path.write_text("\n".join([HEADER, *(f"{c},A,ctr,{v},{when},gsc" for c, v in values.items())]) + "\n")
    return path


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "metrics"
    path.mkdir()
    monkeypatch.setenv("PIPELINE_METRICS_DIR", str(path))
    return path


def tick(env, cursor: str | None = None, instance: dg.DagsterInstance | None = None) -> dg.SensorResult:
    with dg.build_sensor_context(
        instance=instance or env.instance, cursor=cursor, resources={"store": StoreResource(database_url=env.url)}
    ) as context:
        result = metric_triggers(context)
    assert isinstance(result, dg.SensorResult)
    return result


def fired(result: dg.SensorResult) -> list[int]:
    return sorted(
        i for r in result.run_requests or [] for i in r.run_config["ops"]["content"]["config"]["regenerate_firings"]
    )


def fired_content(env, result: dg.SensorResult) -> set[int]:
    ids = set(fired(result))
    return {f.content_id for f in env.store.firings() if f.id in ids}


def state(env) -> dict[str, Any]:
    recorded: dict[str, Any] | None = env.store.sensor_state("metric_triggers")
    assert recorded is not None, "every tick records what it evaluated and what is left"
    return recorded


def catch_up(env, cursor: str | None = None) -> str | None:
    for _ in range(20):
        cursor = tick(env, cursor).cursor
        if state(env)["caught_up"]:
            return cursor
    raise AssertionError("the sensor never caught up")


def add_rule(env, content_id: int | None = None, slug: str = "coffee", **changes: Any) -> None:
    env.store.add_trigger_rule({**RULE, **changes, "site_id": env.store.site(slug).id, "content_id": content_id})


# -- bounded work --------------------------------------------------------------------------------------


def test_a_tick_with_a_large_backlog_ends_early_with_its_cursor_and_the_next_tick_continues_from_there(
    env, folder, monkeypatch, cli, capsys
):
    monkeypatch.setenv("PIPELINE_TRIGGER_MAX_ARTICLES", "10")
    ids = add_articles(env, 25)
    add_rule(env)
    import_metrics_file(env.store, metrics_file(folder.parent / "healthy.csv", dict.fromkeys(ids, 0.05)))
    cursor = catch_up(env)
    later = NOW - timedelta(hours=12)
    metrics_file(folder / "low.csv", dict.fromkeys(ids, 0.01), observed=later)  # 25 articles break the rule at once

    first = tick(env, cursor)

    assert len(fired(first)) == 10, "no more than the configured number of articles per tick"
    after_first = state(env)
    assert not after_first["caught_up"] and after_first["evaluated"] == 10
    assert after_first["backlog"]["metric_rows"] == 15, "what is left is visible"
    assert cli("status") == 0 and "15 metric rows" in capsys.readouterr().out
    second = tick(env, first.cursor)
    third = tick(env, second.cursor)
    assert (len(fired(second)), len(fired(third))) == (10, 5)
    assert fired_content(env, first) | fired_content(env, second) | fired_content(env, third) == set(ids)
    assert state(env)["caught_up"] and state(env)["backlog"]["metric_rows"] == 0
    assert fired(tick(env, third.cursor)) == [] and state(env)["evaluated"] == 0
    assert len(env.store.firings()) == 25, "each article fired once"


def test_a_fresh_cursor_evaluates_every_published_article_over_as_many_ticks_as_it_takes(env, folder, monkeypatch):
    monkeypatch.setenv("PIPELINE_TRIGGER_MAX_ARTICLES", "10")
    ids = add_articles(env, 25)
    add_rule(env)
    metrics_file(folder / "low.csv", dict.fromkeys(ids, 0.01))

    results = [tick(env)]
    while not state(env)["caught_up"]:
        results.append(tick(env, results[-1].cursor))

    assert [len(fired(r)) for r in results] == [10, 10, 5]
    assert set().union(*(fired_content(env, r) for r in results)) == set(ids)
    assert fired(tick(env)) == [] and fired(tick(env, instance=dg.DagsterInstance.ephemeral())) == [], "fire once"


def test_a_tick_past_its_time_limit_starts_no_new_batch_and_the_next_one_does_the_work(env, tmp_path):
    ids = add_articles(env, 3)
    add_rule(env)
    import_metrics_file(env.store, metrics_file(tmp_path / "low.csv", dict.fromkeys(ids, 0.01)))
    sites = [site_rule_set(env.store, env.store.site("coffee"))]
    cursor, limits = TriggerCursor(), TickLimits(max_articles=100, max_seconds=5)

    late = run_tick(env.store, sites, cursor, limits, datetime.now(UTC), started=time.monotonic() - 10)

    assert (late.stopped, late.evaluated, late.fired) == ("time limit", 0, [])
    assert late.backlog.articles == 3, "the scan it did not do is the backlog"
    on_time = run_tick(env.store, sites, cursor, limits, datetime.now(UTC))
    assert on_time.caught_up and len(on_time.fired) == 3


# -- what changed --------------------------------------------------------------------------------------


def test_a_steady_tick_evaluates_nothing_and_new_rows_only_their_articles(env, folder):
    ids = add_articles(env, 12)
    add_rule(env)
    import_metrics_file(env.store, metrics_file(folder.parent / "healthy.csv", dict.fromkeys(ids, 0.05)))
    cursor = catch_up(env)

    steady = tick(env, cursor)
    assert state(env)["evaluated"] == 0 and fired(steady) == []
    metrics_file(folder / "new.csv", {ids[0]: 0.01, ids[1]: 0.04, ids[2]: 0.03}, observed=NOW - timedelta(hours=12))
    changed = tick(env, steady.cursor)

    assert state(env)["evaluated"] == 3
    assert fired_content(env, changed) == {ids[0]}


def test_new_and_changed_rules_are_evaluated_on_the_next_tick(env, folder):
    ids = add_articles(env, 6)
    import_metrics_file(env.store, metrics_file(folder.parent / "low.csv", dict.fromkeys(ids, 0.01)))
    cursor = catch_up(env)  # no rules yet: nothing fires

    add_rule(env, ids[0])
    article_rule = tick(env, cursor)
    assert fired_content(env, article_rule) == {ids[0]} and state(env)["evaluated"] == 1

    add_rule(env, metric="ctr", threshold=0.005)  # a site default that holds for none
    env.store.update_site_settings(env.store.site("coffee").id, {"triggers": [{**RULE, "threshold": 0.015}]})
    settings_rule = tick(env, article_rule.cursor)
    assert fired_content(env, settings_rule) == set(ids[1:]), "changed settings rules: the site is evaluated again"
    assert fired(tick(env, settings_rule.cursor)) == []


def test_a_rule_fires_on_the_tick_after_its_minimum_age_passes_without_anything_else_changing(env, folder):
    young_at = datetime.now(UTC) - timedelta(hours=1) + timedelta(seconds=6)
    young = add_articles(env, 1, published_at=young_at)
    old = add_articles(env, 3)
    add_rule(env, min_age_hours=1.0)
    values = dict.fromkeys(old, 0.05) | {young[0]: 0.01}
    observed = datetime.now(UTC) - timedelta(minutes=30)
    import_metrics_file(env.store, metrics_file(folder.parent / "m.csv", values, observed=observed))
    cursor = catch_up(env)
    assert env.store.firings() == [], "one hour has not passed yet"

    time.sleep(max(0.0, (young_at + timedelta(hours=1, seconds=2) - datetime.now(UTC)).total_seconds()))
    aged = tick(env, cursor)

    assert fired_content(env, aged) == set(young)
    assert state(env)["evaluated"] == 1, "found by its publication time, not by reading every article"


def test_a_failed_firing_is_requested_again_on_the_next_tick(env, folder):
    ids = add_articles(env, 3)
    add_rule(env)
    metrics_file(folder / "low.csv", {ids[0]: 0.01})
    first = tick(env)
    [firing_id] = fired(first)
    assert tick(env, first.cursor).run_requests == [], "requested: the article is busy"
    assert env.store.claim_firing(firing_id, "run-1") is not None
    env.store.fail_firing(firing_id, "run-1", "HTTP 500")

    again = tick(env, first.cursor)

    assert fired(again) == [firing_id] and env.store.firings()[0].attempts == 2


def test_a_newly_published_article_is_evaluated_on_the_next_tick(env, folder):
    ids = add_articles(env, 2)
    add_rule(env)
    with env.store.transaction() as s:
        s.execute(update(Content).where(Content.id == ids[0]).values(status="approved"))
    # Rows of version 1 already in the store (observed while it was live, before it was taken back).
    env.store.add_metrics(
        [
            {
                "content_id": ids[0],
                "variant": "A",
                "version": 1,
                "metric": "ctr",
                "value": 0.01,
                "observed_at": NOW - timedelta(days=1),
                "source": "gsc",
            }
        ]
    )
    cursor = catch_up(env)
    assert env.store.firings() == []
    assert env.store.transition_content(ids[0], "approved", "published", actor="test", version=1, variant="A")

    published = tick(env, cursor)

    assert fired_content(env, published) == {ids[0]} and state(env)["evaluated"] == 1


# -- cursor ----------------------------------------------------------------------------------------------


def test_a_cursor_of_the_earlier_format_keeps_its_files_and_evaluates_everything_once(env, folder):
    ids = add_articles(env, 2)
    add_rule(env)
    path = metrics_file(folder / "low.csv", {ids[1]: 0.01})
    import_metrics_file(env.store, path)
    old_cursor = json.dumps({"low.csv": hashlib.sha256(path.read_bytes()).hexdigest()})

    result = tick(env, old_cursor)

    assert fired_content(env, result) == {ids[1]}
    assert result.cursor is not None
    cursor = json.loads(result.cursor)
    assert cursor["version"] == 2 and cursor["files"] == json.loads(old_cursor)
    assert fired(tick(env, result.cursor)) == []


# -- metric import at volume -----------------------------------------------------------------------------


def test_a_metrics_file_is_loaded_in_batches_not_row_by_row(env, tmp_path):
    ids = add_articles(env, 1500)
    path = tmp_path / "big.csv"
    when = (NOW - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    rows = [f"{c},{v},ctr,0.05,{when},gsc" for c in ids for v in "AB"]
    path.write_text("\n".join([HEADER, *rows]) + "\n")
    statements: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    event.listen(env.store.engine, "before_cursor_execute", count)
    try:
        result = import_metrics_file(env.store, path)
    finally:
        event.remove(env.store.engine, "before_cursor_execute", count)

    assert result.added == 3000
    assert len(statements) <= 20, f"{len(statements)} statements for 3,000 rows"
    assert import_metrics_file(env.store, path).added == 0

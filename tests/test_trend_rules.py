"""Trend rules: a metric over its last window against the window before (`trend`) or against the first window
after publication (`since_publication`), with a noise guard, windows anchored at the newest data and fully
covered; fired once per published version; their evidence, both variants' numbers and the A/B experiment's
result reach the regeneration prompt as data. The clock is frozen: every rule is evaluated at `NOW`."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
import pytest
from sqlalchemy import select, update

import tests.openai_server
from assets import ALL_ASSETS
from pipeline.models import Content, Experiment, ReviewEvent, TriggerFiring
from pipeline.sites import SiteSettingsError, site_settings
from pipeline.trigger_cursor import SitePosition, TriggerCursor
from pipeline.trigger_tick import SETTLE, TickLimits, run_tick
from pipeline.triggers import Rule, evaluate, fire, site_rule_set, site_rules
from tests.conftest import Env
from tests.openai_server import LoopbackOpenAI
from tests.test_openai_engine import openai_llm

NOW = datetime(2026, 11, 30, tzinfo=UTC)
DAY = timedelta(days=1)
LIMITS = TickLimits(max_articles=10_000, max_seconds=60)
POOL: list[int] = []  # articles of the module's sample site no test has taken yet


@pytest.fixture(scope="module")
def articles(sample_run) -> Env:
    """The sample site written offline once for the module; each test takes articles of its own."""
    env: Env = sample_run[0]
    POOL[:] = [v.content_id for v in env.store.current_variants(env.store.site("sample").id)]
    return env


def take(env: Env, published_days_ago: float = 90) -> int:
    """An article of the sample site no other test uses, published (version 1) that many days before NOW."""
    content_id = POOL.pop()
    publish(env, content_id, NOW - timedelta(days=published_days_ago))
    return content_id


def publish(env: Env, content_id: int, at: datetime, version: int = 1) -> None:
    with env.store.transaction() as s:
        s.execute(
            update(Content)
            .where(Content.id == content_id)
            .values(status="published", published_version=version, published_variant="A", published_at=at)
        )


def daily(
    env: Env, content_id: int, variant: str, metric: str, days: Iterable[int], value: float, version: int = 1
) -> None:
    """One Search Console row per day `k` of `days` (days before NOW): the period [NOW - k, NOW - k + 1)."""
    env.store.add_metrics(
        [
            {
                "content_id": content_id,
                "variant": variant,
                "version": version,
                "metric": metric,
                "value": value,
                "period_start": NOW - k * DAY,
                "observed_at": NOW - (k - 1) * DAY,
                "source": "search-console",
            }
            for k in days
        ]
    )


def halving_clicks(env: Env, content_id: int, per_day: float = 10, version: int = 1, days: int = 56) -> None:
    """Both variants: `per_day` clicks a day in the older 28 days, half of it in the last 28 (1,000 impressions)."""
    for variant in ("A", "B"):
        daily(env, content_id, variant, "clicks", range(29, days + 1), per_day, version)
        daily(env, content_id, variant, "clicks", range(1, 29), per_day / 2, version)
        daily(env, content_id, variant, "impressions", range(1, days + 1), 1000, version)


def add_rule(env: Env, content_id: int, **values: Any) -> None:
    defaults = {"comparison": "<", "min_age_hours": 0, "instruction": ""}
    env.store.add_trigger_rule({"site_id": env.store.site("sample").id, "content_id": content_id, **defaults, **values})


def trend_rule(env: Env, content_id: int, min_volume: float = 100) -> None:
    add_rule(env, content_id, metric="clicks", threshold=0.7, kind="trend", window_days=28, min_volume=min_volume)


def due(env: Env, content_id: int):
    site = env.store.site("sample")
    return evaluate(env.store, {site.id: site_rule_set(env.store, site)}, [content_id], NOW)


def settled_cursor(env: Env) -> TriggerCursor:
    """A cursor that has evaluated everything in the store so far (a tick sees only what comes next)."""
    site = env.store.site("sample")
    metric_id, event_id, rule_id = env.store.trigger_positions()
    position = SitePosition(rules=site_rule_set(env.store, site).fingerprint, scan=None)
    return TriggerCursor(
        metric_id=metric_id, event_id=event_id, rule_id=rule_id, firing=(NOW - SETTLE, 0), sites={site.id: position}
    )


def tick(env: Env, cursor: TriggerCursor):
    site = env.store.site("sample")
    return run_tick(env.store, [site_rule_set(env.store, site)], cursor, LIMITS, NOW)


def firings_of(env: Env, content_id: int) -> list[TriggerFiring]:
    with env.store.transaction() as s:
        statement = select(TriggerFiring).where(TriggerFiring.content_id == content_id).order_by(TriggerFiring.id)
        return list(s.scalars(statement))


# -- trend -----------------------------------------------------------------------------------------------


def test_clicks_halving_over_28_days_fires_a_trend_rule_once_per_published_version(articles):
    env = articles
    content_id = take(env)
    trend_rule(env, content_id)
    cursor = settled_cursor(env)
    halving_clicks(env, content_id)

    first = tick(env, cursor)

    assert [f.attempts for f in first.fired] == [1]
    [firing] = firings_of(env, content_id)
    assert (firing.metric, firing.comparison, firing.threshold, firing.triggered_variants) == (
        "clicks",
        "<",
        0.7,
        ["A", "B"],
    )
    trend = firing.observed["trend"]
    assert (trend["kind"], trend["window_days"], trend["min_volume"], trend["ratio"]) == ("trend", 28, 100, 0.5)
    assert trend["current"] == {
        "start": (NOW - 28 * DAY).isoformat(),
        "end": NOW.isoformat(),
        "value": 280.0,
        "volume": 280.0,
        "variants": {"A": 140.0, "B": 140.0},
    }
    assert (trend["previous"]["start"], trend["previous"]["value"]) == ((NOW - 56 * DAY).isoformat(), 560.0)
    assert firing.observed["A"] == {"clicks": 5.0, "impressions": 1000.0}, "newest values kept as before"

    assert tick(env, cursor).fired == [], "the next tick: nothing new"
    with env.store.transaction() as s:  # the regeneration ran; the article is still published
        s.execute(update(TriggerFiring).where(TriggerFiring.id == firing.id).values(status="consumed"))
    assert fire(env.store, due(env, content_id)) == [], "the store's key (rule, version) keeps it fired once"

    publish(env, content_id, NOW - 60 * DAY, version=2)
    halving_clicks(env, content_id, version=2)
    assert [f.attempts for f in tick(env, cursor).fired] == [1], "a new published version arms it again"
    assert [f.published_version for f in firings_of(env, content_id)] == [1, 2]


def test_a_trend_under_the_minimum_volume_does_not_fire(articles):
    env = articles
    content_id = take(env)
    trend_rule(env, content_id, min_volume=100)
    halving_clicks(env, content_id, per_day=1)  # 56 clicks in the previous window

    assert due(env, content_id) == []


def test_half_covered_windows_do_not_fire(articles):
    env = articles
    content_id = take(env)
    trend_rule(env, content_id, min_volume=0)
    halving_clicks(env, content_id, days=40)  # the previous window has 12 of its 28 days

    assert due(env, content_id) == []


def test_windows_are_anchored_at_the_newest_data_of_the_article(articles):
    env = articles
    content_id = take(env)
    trend_rule(env, content_id)
    # The export lags 10 days: the same halving, every row 10 days older.
    for variant in ("A", "B"):
        daily(env, content_id, variant, "clicks", range(39, 67), 10)
        daily(env, content_id, variant, "clicks", range(11, 39), 5)
        daily(env, content_id, variant, "impressions", range(11, 67), 1000)

    [found] = due(env, content_id)

    assert found.observed["trend"]["current"]["end"] == (NOW - 10 * DAY).isoformat()
    assert found.observed["trend"]["ratio"] == 0.5


def test_a_steady_metric_does_not_fire(articles):
    env = articles
    content_id = take(env)
    trend_rule(env, content_id)
    for variant in ("A", "B"):
        daily(env, content_id, variant, "clicks", range(1, 57), 10)

    assert due(env, content_id) == []


# -- since publication -----------------------------------------------------------------------------------


def positions(env: Env, content_id: int, first: tuple[float, float], last: tuple[float, float]) -> None:
    """Position of A and B over the first 14 days after publication (60 days before NOW) and the last 14;
    B has three times A's impressions, so the window's position is weighted towards B."""
    for variant, impressions, early, late in (("A", 100, first[0], last[0]), ("B", 300, first[1], last[1])):
        daily(env, content_id, variant, "position", range(47, 61), early)
        daily(env, content_id, variant, "position", range(1, 15), late)
        daily(env, content_id, variant, "impressions", [*range(47, 61), *range(1, 15)], impressions)


def test_position_worse_by_more_than_3_since_publication_fires_and_by_2_does_not(articles):
    env = articles
    worse, slightly = take(env, published_days_ago=60), take(env, published_days_ago=60)
    for content_id in (worse, slightly):
        add_rule(
            env,
            content_id,
            metric="position",
            comparison=">",
            threshold=3,
            kind="since_publication",
            window_days=14,
            min_volume=1000,
        )
    positions(env, worse, first=(4, 8), last=(8, 12))  # weighted: 7 -> 11
    positions(env, slightly, first=(4, 8), last=(6, 10))  # weighted: 7 -> 9

    [found] = due(env, worse)

    assert due(env, slightly) == []
    trend = found.observed["trend"]
    assert (trend["first"]["value"], trend["current"]["value"], trend["change"]) == (7.0, 11.0, 4.0)
    assert trend["first"]["start"] == (NOW - 60 * DAY).isoformat()
    assert (trend["first"]["volume"], trend["volume_metric"]) == (14 * 400, "impressions")
    assert trend["first"]["variants"] == {"A": 4.0, "B": 8.0}


def test_since_publication_needs_impressions_in_the_first_window(articles):
    env = articles
    content_id = take(env, published_days_ago=60)
    add_rule(
        env,
        content_id,
        metric="position",
        comparison=">",
        threshold=3,
        kind="since_publication",
        window_days=14,
        min_volume=100_000,
    )
    positions(env, content_id, first=(4, 8), last=(8, 12))

    assert due(env, content_id) == []


# -- value rules ---------------------------------------------------------------------------------------


def test_a_value_rule_still_compares_the_newest_value_per_variant(articles):
    env = articles
    content_id = take(env)
    add_rule(env, content_id, metric="ctr", threshold=0.02)
    for variant, ctr in (("A", 0.05), ("B", 0.01)):
        env.store.add_metrics(
            [
                {
                    "content_id": content_id,
                    "variant": variant,
                    "version": 1,
                    "metric": "ctr",
                    "value": ctr,
                    "observed_at": NOW - DAY,
                    "source": "gsc",
                }
            ]
        )

    [found] = due(env, content_id)

    assert (found.rule.kind, found.triggered_variants, found.observed) == (
        "value",
        ["B"],
        {"A": {"ctr": 0.05}, "B": {"ctr": 0.01}},
    )


# -- where rules come from ---------------------------------------------------------------------------------


def test_cli_adds_and_lists_trend_rules_and_names_what_is_wrong(env, cli, capsys):
    env.add_site()
    base = ["triggers", "add", "--site", "sample", "--metric", "clicks", "--comparison", "<", "--threshold"]

    assert cli(*base, "0.7", "--kind", "trend", "--window-days", "28", "--min-volume", "100") == 0
    assert "clicks over 28d < 70% of the 28d before (min volume 100)" in capsys.readouterr().out
    since = ["--metric", "position", "--comparison", ">", "--threshold", "3", "--kind", "since_publication"]
    assert cli("triggers", "add", "--site", "sample", *since, "--window-days", "14") == 0
    assert cli("triggers", "list", "--site", "sample") == 0
    listed = capsys.readouterr().out
    assert "trend\tclicks over 28d < 70% of the 28d before (min volume 100)" in listed
    assert "since_publication\tposition over the last 14d > its first 14d after publication +3" in listed

    for extra, message in (
        (["0.7", "--kind", "trend"], "--window-days: a trend rule needs the number of days of its windows"),
        (["0.7", "--window-days", "28"], "--window-days: only trend and since_publication rules have a window"),
        (["0.7", "--kind", "trend", "--window-days", "0"], "--window-days: 0 is not between 1 and 365 days"),
        (["0.7", "--kind", "trend", "--window-days", "7", "--min-volume", "-1"], "--min-volume: -1 is not"),
        (["-0.5", "--kind", "trend", "--window-days", "7"], "--threshold: -0.5 is not a share"),
    ):
        assert cli(*base, *extra) == 2
        assert message in capsys.readouterr().err
    assert len(env.store.trigger_rules(env.store.site("sample").id)) == 2, "nothing added by the errors"


def test_site_settings_trend_rules_are_validated_and_fire(articles):
    env = articles
    site = env.store.site("sample")
    spec = {"metric": "clicks", "comparison": "<", "threshold": 0.7, "kind": "trend", "window_days": 28}
    with pytest.raises(SiteSettingsError, match="a trend rule needs the number of days"):
        site_settings({"triggers": [{**spec, "window_days": None}]})
    with pytest.raises(SiteSettingsError, match="only trend and since_publication rules have a window"):
        site_settings({"triggers": [{**spec, "kind": "value"}]})
    assert site_settings({"triggers": [{"metric": "ctr", "comparison": "<", "threshold": 0.02}]}).triggers[0].kind == (
        "value"
    )
    content_id = take(env)
    halving_clicks(env, content_id)
    env.store.update_site_settings(site.id, {**site.settings, "triggers": [{**spec, "min_volume": 100}]})
    try:
        [rule] = [r for r in site_rules(env.store, env.store.site("sample")) if r.key.startswith("site:")]
        assert rule.describe() == "clicks over 28d < 70% of the 28d before (min volume 100)"
        [found] = due(env, content_id)
        assert found.rule == rule and found.observed["trend"]["ratio"] == 0.5
    finally:
        env.store.update_site_settings(site.id, site.settings)


def test_rule_descriptions_read_well():
    trend = Rule("rule:1", "clicks", "<", 0.7, 0, "", kind="trend", window_days=28, min_volume=100)
    since = Rule("rule:2", "position", ">", 3, 168, "", kind="since_publication", window_days=14)
    assert trend.describe() == "clicks over 28d < 70% of the 28d before (min volume 100)"
    assert since.describe() == "position over the last 14d > its first 14d after publication +3 after 168h"
    assert Rule("rule:3", "ctr", "<", 0.02, 168, "").describe() == "ctr < 0.02 after 168h"


# -- the regeneration prompt ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[LoopbackOpenAI]:
    with LoopbackOpenAI() as running:
        yield running


def test_the_analysis_prompt_gets_both_variants_numbers_the_trend_and_the_experiment_as_data(
    articles, server, monkeypatch
):
    env = articles
    content_id = take(env)
    trend_rule(env, content_id)
    halving_clicks(env, content_id)
    site = env.store.site("sample")
    with env.store.transaction() as s:
        s.add(
            Experiment(
                site_id=site.id,
                content_id=content_id,
                version=1,
                control="A",
                status="decided",
                period_days=7,
                max_days=28,
                min_impressions=1000,
                confidence=0.95,
                timezone="UTC",
                starts_at=NOW - 56 * DAY,
                ends_at=NOW - 28 * DAY,
                winner="B",
                decided_at=NOW - 28 * DAY,
                decision={
                    "variants": {
                        "A": {"clicks": 200, "impressions": 10_000, "ctr": 0.02},
                        "B": {"clicks": 300, "impressions": 10_000, "ctr": 0.03},
                    },
                    "z": 4.4,
                    "p_value": 0.00001,
                },
            )
        )
    [fired] = fire(env.store, due(env, content_id))
    seen: list[dict[str, Any]] = []
    composer = tests.openai_server.COMPOSERS["MetricsAnalysis"]

    def recording(data):
        seen.append(data)
        return composer(data)

    monkeypatch.setitem(tests.openai_server.COMPOSERS, "MetricsAnalysis", recording)
    resources = {**env.resources, "llm": openai_llm(server)}

    result = dg.materialize(
        ALL_ASSETS,
        selection=["content", "image_prompts", "images"],
        partition_key="sample",
        resources=resources,
        instance=env.instance,
        run_config={"ops": {"content": {"config": {"regenerate_firings": [fired.firing_id]}}}},
    )

    assert result.success
    [data] = seen
    assert [v["variant"] for v in data["variants"]] == ["A"], "the sample's version 1 has the text of A only"
    assert data["variants"][0]["metrics"] == {"clicks": 5.0, "impressions": 1000.0}
    assert data["latest"] == {"A": {"clicks": 5.0, "impressions": 1000.0}, "B": {"clicks": 5.0, "impressions": 1000.0}}
    last, previous = data["windows"]["last_28d"], data["windows"]["previous_28d"]
    assert (last["start"], last["end"]) == ((NOW - 28 * DAY).isoformat(), NOW.isoformat())
    assert last["variants"]["A"] == {"clicks": 140.0, "ctr": 0.005, "impressions": 28_000.0}
    assert previous["variants"]["B"] == {"clicks": 280.0, "ctr": 0.01, "impressions": 28_000.0}
    assert last["together"] == {"clicks": 280.0, "ctr": 0.005, "impressions": 56_000.0}
    assert data["rule"] == {
        "kind": "trend",
        "metric": "clicks",
        "comparison": "<",
        "threshold": 0.7,
        "window_days": 28,
        "min_volume": 100,
    }
    assert (data["trend"]["ratio"], data["trend"]["previous"]["value"], data["trend"]["current"]["value"]) == (
        0.5,
        560.0,
        280.0,
    )
    experiment = data["experiment"]
    assert (experiment["status"], experiment["winner"], experiment["p_value"], experiment["lift"]) == (
        "decided",
        "B",
        0.00001,
        0.5,
    )
    assert experiment["variants"]["B"]["ctr"] == 0.03 and experiment["confidence"] == 0.95
    with env.store.transaction() as s:
        note = s.scalars(select(ReviewEvent.note).where(ReviewEvent.content_id == content_id)).one()
    assert "clicks over the last 28 days" in note and "280 against 560" in note and "50% of it" in note
    assert "chose variant B (A CTR 2.00%, B CTR 3.00%), lift +50%" in note
    [call] = [c for c in env.store.model_calls() if c.prompt_name == "metrics_analysis" and c.provider == "openai"]
    assert call.prompt_version.startswith("metrics_analysis@2") or call.prompt_version == "2"


def test_an_article_in_a_running_a_b_test_is_not_rewritten_until_the_test_is_decided(articles):
    env = articles
    content_id = take(env)
    trend_rule(env, content_id)
    halving_clicks(env, content_id)
    site = env.store.site("sample")
    with env.store.transaction() as s:
        experiment = Experiment(
            site_id=site.id,
            content_id=content_id,
            version=1,
            control="A",
            status="running",
            period_days=14,
            max_days=84,
            min_impressions=1000,
            confidence=0.95,
            timezone="UTC",
            starts_at=NOW - 56 * DAY,
            ends_at=NOW + 28 * DAY,
        )
        s.add(experiment)
    assert due(env, content_id) == [], "the test's numbers are the test's"
    with env.store.transaction() as s:
        s.execute(update(Experiment).where(Experiment.content_id == content_id).values(status="decided", winner="A"))
    assert [d.rule.metric for d in due(env, content_id)] == ["clicks"], "decided: the rules apply again"

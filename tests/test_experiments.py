"""Time-split A/B experiments: the decision rule, starting a test on publish, periods in the site's timezone,
switching the live variant through the publishing path, deciding once, and the Dagster asset and schedule.

The article tests share the sample site's chain (`sample_run`); each takes a draft no other test touched.
Times are frozen in 2030 (after any real clock the review events of publishing carry), around the US
change to summer time on 2030-03-10.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import dagster as dg
import pytest

from pipeline import ab_stats, experiments, publishing, review
from pipeline.models import Content, Experiment, PostMetric
from pipeline.publishing.targets import FolderTarget
from pipeline.sites import ABTestSettings
from resources import StoreResource
from sensors.schedules import ab_experiments
from tests.conftest import Env
from tests.test_review import Page, regenerate

PUBLISHED_AT = datetime(2030, 3, 1, 18, 0, tzinfo=UTC)  # 10:00 in Los Angeles (PST)
FIRST_MIDNIGHT = datetime(2030, 3, 2, 8, 0, tzinfo=UTC)  # 00:00 PST
SECOND_MIDNIGHT = datetime(2030, 3, 16, 7, 0, tzinfo=UTC)  # 00:00 PDT: summer time began on March 10
_taken: set[int] = set()


@pytest.fixture
def env(sample_run: tuple[Env, dg.ExecuteInProcessResult]) -> Env:
    """The module's shared sample environment (shadows the empty `env` fixture on purpose)."""
    return sample_run[0]


@pytest.fixture
def draft_id(env: Env) -> int:
    """A draft article that no other test of this module has used."""
    for item in review.review_list(env.store, status="draft", site="sample"):
        if item.id not in _taken:
            _taken.add(item.id)
            return item.id
    raise AssertionError("the sample site ran out of untouched drafts")


@pytest.fixture
def publish_root(tmp_path: Path) -> Path:
    return tmp_path / "publish"


def set_ab_test(env: Env, slug: str = "sample", **ab_test: Any) -> None:
    site = env.store.site(slug)
    env.store.update_site_settings(site.id, dict(site.settings) | {"ab_test": ab_test})


def under_test(env: Env, content_id: int, publish_root: Path, *, variant: str = "A", **ab_test: Any) -> Experiment:
    """Publish version 1, regenerate it as A and B, approve `variant` and publish it at PUBLISHED_AT with the
    site's `ab_test` enabled; returns the experiment that started."""
    set_ab_test(env, enabled=True, **ab_test)
    review.approve(env.store, content_id, actor="tester")
    publishing.publish(env.store, content_id, publish_root, actor="tester", now=PUBLISHED_AT - timedelta(days=30))
    regenerate(env, content_id, in_article=1)
    review.approve(env.store, content_id, variant=variant, actor="tester")
    publishing.publish(env.store, content_id, publish_root, actor="tester", now=PUBLISHED_AT)
    experiment = env.store.experiment_of(content_id)
    assert experiment is not None
    return experiment


def row(env: Env, content_id: int) -> Content:
    with env.store.transaction() as session:
        found = session.get(Content, content_id)
    assert found is not None
    return found


def experiment_row(env: Env, experiment_id: int) -> Experiment:
    with env.store.transaction() as session:
        found = session.get(Experiment, experiment_id)
    assert found is not None
    return found


def add_metrics(env: Env, experiment: Experiment, period: int, clicks: float, impressions: float) -> None:
    """What the metric import writes: one row per metric over a whole period, attributed to its variant."""
    [chosen] = [p for p in env.store.experiment_periods(experiment.id) if p.number == period]
    with env.store.transaction() as session:
        for metric, value in (("clicks", clicks), ("impressions", impressions)):
            session.add(
                PostMetric(
                    content_id=experiment.content_id,
                    variant=chosen.variant,
                    version=experiment.version,
                    metric=metric,
                    value=value,
                    period_start=chosen.starts_at,
                    observed_at=chosen.ends_at,
                    source="search_console:test",
                )
            )


def mine(items: list[dict[str, Any]], experiment: Experiment) -> list[dict[str, Any]]:
    """The entries of a report about this experiment (other tests' experiments share the site)."""
    return [item for item in items if item["experiment"] == experiment.id]


def exported_title(publish_root: Path, content_id: int, env: Env) -> str:
    slug = review.load_article(env.store, content_id).slug
    html = (publish_root / "sample" / slug / "index.html").read_text(encoding="utf-8")
    heading = Page(html).tokens[0]
    assert heading[0] == "h1"
    return str(heading[1])


def variant_title(env: Env, content_id: int, letter: str) -> str:
    return review.load_article(env.store, content_id).variant(letter).title


def end_of_period(env: Env, experiment: Experiment, number: int) -> datetime:
    [period] = [p for p in env.store.experiment_periods(experiment.id) if p.number == number]
    return period.ends_at.replace(tzinfo=UTC) if period.ends_at.tzinfo is None else period.ends_at


# -- the decision rule ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "look", "outcome", "winner"),
    [
        ((10, 1000), (40, 1000), 1, "winner", "B"),
        ((20, 1000), (22, 1000), 3, "no_difference", None),
        ((20, 1000), (22, 1000), 1, "continue", None),
        ((5, 200), (5, 200), 1, "too_little_data", None),
    ],
)
def test_the_z_test_with_alpha_spending_decides_on_crafted_counts(a, b, look, outcome, winner):
    result = ab_stats.evaluate(
        ab_stats.Counts(*a), ab_stats.Counts(*b), look=look, looks=3, confidence=0.95, min_impressions=1000
    )
    assert (result.outcome, result.winner, result.look, result.looks) == (outcome, winner, look, 3)
    if outcome != "too_little_data":
        assert result.p_value > result.nominal_alpha or outcome == "winner"


def test_alpha_spending_gives_early_looks_a_small_share_and_sums_to_alpha():
    spent = [ab_stats.spent_alpha(k / 3, 0.05) for k in range(4)]
    increments = [later - earlier for earlier, later in itertools.pairwise(spent)]
    assert spent[0] == 0 and spent[-1] == pytest.approx(0.05)
    assert increments[0] < 0.001 < increments[1] < increments[2]
    assert sum(increments) == pytest.approx(0.05)
    result = ab_stats.evaluate(
        ab_stats.Counts(20, 1000),
        ab_stats.Counts(22, 1000),
        look=2,
        looks=3,
        confidence=0.95,
        min_impressions=1,
        previous_look=0,
    )
    assert result.nominal_alpha == pytest.approx(spent[2])  # a skipped look leaves its share to the next


# -- starting -------------------------------------------------------------------------------------------


def test_periods_start_at_the_next_local_midnight_and_stay_on_local_midnights_across_summer_time():
    periods = experiments.plan_periods(PUBLISHED_AT, "A", ABTestSettings(enabled=True, max_days=90))
    assert [p.variant for p in periods] == ["A", "B", "A", "B", "A", "B"]  # 90 // 14 = 6 periods, whole cycles
    assert (periods[0].starts_at, periods[0].ends_at) == (FIRST_MIDNIGHT, SECOND_MIDNIGHT)
    assert all(p.ends_at == q.starts_at for p, q in itertools.pairwise(periods))
    local = ZoneInfo("America/Los_Angeles")
    assert {(p.starts_at.astimezone(local).hour, p.ends_at.astimezone(local).hour) for p in periods} == {(0, 0)}


def test_an_experiment_starts_on_publish_only_when_enabled_and_only_for_a_version_with_a_and_b(
    env, draft_id, publish_root
):
    set_ab_test(env, enabled=True)
    review.approve(env.store, draft_id, actor="tester")
    publishing.publish(env.store, draft_id, publish_root, actor="tester", now=PUBLISHED_AT)
    assert env.store.experiment_of(draft_id) is None  # version 1 has only A

    set_ab_test(env, enabled=False)
    regenerate(env, draft_id, in_article=1)
    review.approve(env.store, draft_id, variant="B", actor="tester")
    publishing.publish(env.store, draft_id, publish_root, actor="tester", now=PUBLISHED_AT)
    assert env.store.experiment_of(draft_id) is None  # A and B, but the site does not test

    other = next(i.id for i in review.review_list(env.store, status="draft", site="sample") if i.id not in _taken)
    _taken.add(other)
    experiment = under_test(env, other, publish_root, variant="B")
    assert (experiment.version, experiment.control, experiment.status, experiment.looks) == (2, "B", "running", 0)
    periods = env.store.experiment_periods(experiment.id)
    assert [(p.number, p.variant, p.switched_at) for p in periods] == [
        (n, "BA"[(n - 1) % 2], None) for n in range(1, 7)
    ]
    assert (periods[0].starts_at.replace(tzinfo=UTC), periods[0].ends_at.replace(tzinfo=UTC)) == (
        FIRST_MIDNIGHT,
        SECOND_MIDNIGHT,
    )
    assert experiment.ends_at.replace(tzinfo=UTC) == periods[-1].ends_at.replace(tzinfo=UTC)
    # Idempotent: starting again finds the same experiment and adds no period.
    again = experiments.start_experiment(env.store, other, now=PUBLISHED_AT)
    assert again is not None and again.id == experiment.id and len(env.store.experiment_periods(experiment.id)) == 6
    assert exported_title(publish_root, other, env) == variant_title(env, other, "B")  # the control until a switch


# -- advancing ------------------------------------------------------------------------------------------


def test_advance_switches_the_folder_export_to_b_in_the_second_period_and_the_history_has_it(
    env, draft_id, publish_root
):
    experiment = under_test(env, draft_id, publish_root)
    before = experiments.advance(env.store, "sample", PUBLISHED_AT + timedelta(hours=1), publish_root)
    assert mine(before.switched, experiment) == []
    assert exported_title(publish_root, draft_id, env) == variant_title(env, draft_id, "A")

    first = experiments.advance(env.store, "sample", FIRST_MIDNIGHT + timedelta(minutes=5), publish_root)
    assert mine(first.switched, experiment) == []  # the control is live already
    assert env.store.experiment_periods(experiment.id)[0].switched_at is not None

    at = SECOND_MIDNIGHT + timedelta(minutes=10)
    report = experiments.advance(env.store, "sample", at, publish_root)
    assert [(s["experiment"], s["variant"]) for s in mine(report.switched, experiment)] == [(experiment.id, "B")]
    assert exported_title(publish_root, draft_id, env) == variant_title(env, draft_id, "B")
    assert row(env, draft_id).published_variant == "B" and row(env, draft_id).status == "published"
    last = env.store.review_events(draft_id)[-1]
    assert (last.from_status, last.to_status, last.version, last.variant, last.actor) == (
        "published",
        "published",
        2,
        "B",
        f"experiment:{experiment.id}",
    )
    second = env.store.experiment_periods(experiment.id)[1]
    assert second.switched_at is not None and second.switched_at.replace(tzinfo=UTC) == at
    spans = env.store.live_spans([draft_id])[draft_id]
    assert [(s.version, s.variant) for s in spans[-2:]] == [(2, "A"), (2, "B")]
    assert spans[-1].starts_at == at and spans[-1].ends_at is None

    events = len(env.store.review_events(draft_id))
    again = experiments.advance(env.store, "sample", at + timedelta(hours=1), publish_root)
    assert mine(again.switched, experiment) == [] and len(env.store.review_events(draft_id)) == events


def test_a_clear_winner_after_one_cycle_becomes_the_published_variant_with_one_decision(env, draft_id, publish_root):
    experiment = under_test(env, draft_id, publish_root)
    experiments.advance(env.store, "sample", SECOND_MIDNIGHT + timedelta(minutes=1), publish_root)  # B live
    after_cycle = end_of_period(env, experiment, 2) + timedelta(hours=1)  # period 3 (A) has begun
    waiting = experiments.advance(env.store, "sample", after_cycle, publish_root)
    assert mine(waiting.decided, experiment) == []  # no rows yet
    assert row(env, draft_id).published_variant == "A"  # period 3
    assert experiment_row(env, experiment.id).looks == 0

    add_metrics(env, experiment, 1, clicks=10, impressions=1000)
    add_metrics(env, experiment, 2, clicks=40, impressions=1000)
    report = experiments.advance(env.store, "sample", after_cycle + timedelta(hours=1), publish_root)

    [decision] = mine(report.decided, experiment)
    assert (decision["winner"], decision["outcome"], decision["look"], decision["looks"]) == ("B", "winner", 1, 3)
    decided = experiment_row(env, experiment.id)
    assert (decided.status, decided.winner, decided.looks) == ("decided", "B", 1)
    assert decided.decision is not None and decided.decision["b"] == {"clicks": 40, "impressions": 1000, "ctr": 0.04}
    assert decided.decision["p_value"] < decided.decision["nominal_alpha"]
    assert row(env, draft_id).published_variant == "B"
    assert exported_title(publish_root, draft_id, env) == variant_title(env, draft_id, "B")
    assert {v.variant for v in review.load_article(env.store, draft_id).current_variants} == {"A", "B"}  # kept

    events = len(env.store.review_events(draft_id))
    again = experiments.advance(env.store, "sample", after_cycle + timedelta(days=20), publish_root)
    assert (mine(again.decided, experiment), mine(again.switched, experiment)) == ([], [])
    assert len(env.store.review_events(draft_id)) == events
    assert experiment_row(env, experiment.id).decided_at == decided.decided_at


def test_rows_outside_the_periods_or_spanning_two_are_not_counted(env, draft_id, publish_root):
    experiment = under_test(env, draft_id, publish_root)
    add_metrics(env, experiment, 1, clicks=10, impressions=1000)
    add_metrics(env, experiment, 2, clicks=12, impressions=1000)
    with env.store.transaction() as session:
        for variant, start, end in (
            ("A", PUBLISHED_AT, FIRST_MIDNIGHT),  # before the test began (the control alone)
            ("B", FIRST_MIDNIGHT, end_of_period(env, experiment, 2)),  # across periods 1 and 2
            ("A", SECOND_MIDNIGHT, SECOND_MIDNIGHT + timedelta(days=1)),  # A's row inside B's period
        ):
            session.add_all(
                PostMetric(
                    content_id=draft_id,
                    variant=variant,
                    version=2,
                    metric=metric,
                    value=5000,
                    period_start=start,
                    observed_at=end,
                    source=f"test:{variant}:{start}",
                )
                for metric in ("clicks", "impressions")
            )
        session.add(  # an instantaneous row inside period 1
            PostMetric(
                content_id=draft_id,
                variant="A",
                version=2,
                metric="clicks",
                value=1,
                period_start=None,
                observed_at=FIRST_MIDNIGHT + timedelta(days=3),
                source="test:instant",
            )
        )
    sums = env.store.experiment_metric_sums(experiment, through_period=2)
    assert sums == {
        (1, "clicks"): ("A", 11.0, 2),
        (1, "impressions"): ("A", 1000.0, 1),
        (2, "clicks"): ("B", 12.0, 1),
        (2, "impressions"): ("B", 1000.0, 1),
    }


def test_too_little_data_spends_no_look_and_no_difference_at_the_end_keeps_the_control(env, draft_id, publish_root):
    experiment = under_test(env, draft_id, publish_root, variant="B", max_days=56)  # 4 periods: 2 looks
    after_first = end_of_period(env, experiment, 2) + timedelta(hours=2)
    add_metrics(env, experiment, 1, clicks=5, impressions=200)
    add_metrics(env, experiment, 2, clicks=5, impressions=200)
    thin = experiments.advance(env.store, "sample", after_first, publish_root)
    assert mine(thin.decided, experiment) == mine(thin.looked, experiment) == []
    assert experiment_row(env, experiment.id).looks == 0

    for period, clicks in ((3, 20), (4, 22)):
        experiments.advance(
            env.store, "sample", end_of_period(env, experiment, period - 1) + timedelta(hours=1), publish_root
        )
        add_metrics(env, experiment, period, clicks=clicks, impressions=1000)
    assert row(env, draft_id).published_variant == "A"  # the last period's variant
    report = experiments.advance(
        env.store, "sample", end_of_period(env, experiment, 4) + timedelta(hours=1), publish_root
    )

    [decision] = mine(report.decided, experiment)
    assert (decision["outcome"], decision["winner"], decision["look"], decision["looks"]) == (
        "no_difference",
        None,
        2,
        2,
    )
    assert decision["a"]["impressions"] == 1200 and decision["b"]["impressions"] == 1200
    decided = experiment_row(env, experiment.id)
    assert (decided.status, decided.winner) == ("no_difference", None)
    assert row(env, draft_id).published_variant == "B"  # the control again
    assert exported_title(publish_root, draft_id, env) == variant_title(env, draft_id, "B")


def test_without_data_the_experiment_closes_as_no_difference_after_its_end(env, draft_id, publish_root):
    experiment = under_test(env, draft_id, publish_root, max_days=28)
    end = end_of_period(env, experiment, 2)
    early = experiments.advance(env.store, "sample", end + timedelta(days=1), publish_root)
    assert mine(early.decided, experiment) == []
    report = experiments.advance(env.store, "sample", end + experiments.DATA_GRACE, publish_root)
    [decision] = mine(report.decided, experiment)
    assert decision["outcome"] == "no_difference" and "too_little_data" in decision["reason"]
    assert experiment_row(env, experiment.id).status == "no_difference"
    assert row(env, draft_id).published_variant == "A"


def test_a_failed_switch_records_nothing_and_the_next_run_completes_it(env, draft_id, publish_root, monkeypatch):
    experiment = under_test(env, draft_id, publish_root)
    events = len(env.store.review_events(draft_id))
    broken = publish_root / "sample"
    monkeypatch.setattr(FolderTarget, "placed", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    failed = experiments.advance(env.store, "sample", SECOND_MIDNIGHT + timedelta(minutes=1), publish_root)
    assert mine(failed.switched, experiment) == [] and any("disk full" in f for f in failed.failures)
    assert row(env, draft_id).published_variant == "A" and len(env.store.review_events(draft_id)) == events
    assert env.store.experiment_periods(experiment.id)[1].switched_at is None
    monkeypatch.undo()
    assert broken.exists()
    done = experiments.advance(env.store, "sample", SECOND_MIDNIGHT + timedelta(minutes=61), publish_root)
    assert [s["variant"] for s in mine(done.switched, experiment)] == ["B"]
    assert row(env, draft_id).published_variant == "B"


def test_an_article_regenerated_during_its_test_stops_it_and_nothing_is_switched(env, draft_id, publish_root):
    experiment = under_test(env, draft_id, publish_root)
    regenerate(env, draft_id, in_article=1)  # version 3, back to draft
    events = len(env.store.review_events(draft_id))
    report = experiments.advance(env.store, "sample", SECOND_MIDNIGHT + timedelta(minutes=1), publish_root)
    assert [s["experiment"] for s in report.stopped] == [experiment.id] and mine(report.switched, experiment) == []
    stopped = experiment_row(env, experiment.id)
    assert (stopped.status, stopped.winner) == ("stopped", None) and "regenerated" in str(stopped.decision)
    assert len(env.store.review_events(draft_id)) == events and row(env, draft_id).published_variant == "A"


def test_review_show_prints_the_experiment(env, draft_id, publish_root, cli, capsys):
    experiment = under_test(env, draft_id, publish_root)
    experiments.advance(env.store, "sample", SECOND_MIDNIGHT + timedelta(minutes=1), publish_root)
    capsys.readouterr()
    assert cli("review", "show", str(draft_id)) == 0
    out = capsys.readouterr().out
    assert f"experiment {experiment.id}: running" in out and "control A" in out and "live B" in out
    assert "period 2  B" in out and "switched" in out


def test_the_experiments_asset_switches_decides_and_reports_the_decision(env, draft_id, publish_root, monkeypatch):
    monkeypatch.setenv("PIPELINE_PUBLISH_DIR", str(publish_root))
    set_ab_test(env, enabled=True)
    review.approve(env.store, draft_id, actor="tester")
    publishing.publish(env.store, draft_id, publish_root, actor="tester")
    regenerate(env, draft_id, in_article=1)
    review.approve(env.store, draft_id, actor="tester")
    # Published 40 days ago: the first cycle is over, the third period (A) is running now.
    publishing.publish(env.store, draft_id, publish_root, actor="tester", now=datetime.now(UTC) - timedelta(days=40))
    experiment = env.store.experiment_of(draft_id)
    assert experiment is not None
    add_metrics(env, experiment, 1, clicks=10, impressions=1000)
    add_metrics(env, experiment, 2, clicks=40, impressions=1000)

    result = env.materialize(selection=["experiments"])

    assert result.success
    [materialization] = result.asset_materializations_for_node("experiments")
    metadata = {key: getattr(value, "value", value) for key, value in materialization.metadata.items()}
    assert metadata["experiments_decided"] >= 1 and metadata["failures"] == 0
    assert f"| {draft_id} | B | 1.00% | 4.00% | +300.0% | 4.30 |" in metadata["decisions"]
    [check] = result.get_asset_check_evaluations()
    assert check.passed
    assert experiment_row(env, experiment.id).status == "decided" and row(env, draft_id).published_variant == "B"
    again = env.materialize(selection=["experiments"])
    [materialization] = again.asset_materializations_for_node("experiments")
    assert materialization.metadata["experiments_decided"].value == 0


def test_the_ab_experiments_schedule_requests_a_run_only_for_sites_with_a_running_experiment(
    env, draft_id, publish_root
):
    under_test(env, draft_id, publish_root)
    env.store.upsert_site("quiet", "Quiet", None)
    assert env.store.sites_with_running_experiments() == ["sample"]
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("sites", ["quiet", "sample"])
        with dg.build_schedule_context(
            instance=instance,
            scheduled_execution_time=datetime(2030, 3, 16, 8, 5, tzinfo=UTC),
            resources={"store": StoreResource(database_url=env.url)},
        ) as context:
            requests = ab_experiments(context)
    assert isinstance(requests, list)
    assert [(r.partition_key, r.run_key) for r in requests] == [("sample", "experiments:2030-03-16T08:05:sample")]
    assert ab_experiments.job_name == "run_experiments" and requests[0].tags["pipeline/run_kind"] == "experiments"


# -- WordPress ------------------------------------------------------------------------------------------


def test_a_switch_updates_the_wordpress_post_in_place(env, wordpress, tmp_path, monkeypatch):
    from tests.test_publishing_wordpress import PASSWORD_ENV, new_site

    monkeypatch.setenv(PASSWORD_ENV, wordpress.password)
    slug, ids = new_site(env, wordpress, keywords=8, ab_test={"enabled": True})
    content_id = ids[0]
    publish_root = tmp_path / "publish"
    publishing.publish(env.store, content_id, publish_root, actor="tester")
    first = env.store.publication(content_id, "wordpress")
    assert first is not None and first.remote_id is not None
    post_id = first.remote_id
    regenerate(env, content_id, in_article=1)
    review.approve(env.store, content_id, actor="tester")
    publishing.publish(env.store, content_id, publish_root, actor="tester")
    experiment = env.store.experiment_of(content_id)
    assert experiment is not None and experiment.control == "A"
    second = env.store.experiment_periods(experiment.id)[1]

    report = experiments.advance(env.store, slug, second.starts_at.replace(tzinfo=UTC), publish_root)

    assert [(s["variant"], s["targets"]) for s in mine(report.switched, experiment)] == [
        ("B", "wordpress updated, folder updated")
    ]
    row = env.store.publication(content_id, "wordpress")
    assert row is not None and (row.remote_id, row.version, row.variant) == (post_id, 2, "B")
    post = wordpress.rest("GET", f"/wp/v2/posts/{post_id}", params={"context": "edit"})
    assert post["title"]["raw"] == variant_title(env, content_id, "B") and post["status"] == "publish"


def test_the_desk_article_page_and_api_show_the_experiment(env, draft_id, publish_root, monkeypatch):
    from tests.desk_data import API_TOKEN, desk_app, signed_in

    experiment = under_test(env, draft_id, publish_root)
    experiments.advance(env.store, "sample", SECOND_MIDNIGHT + timedelta(minutes=1), publish_root)
    client = signed_in(desk_app(env, monkeypatch, publish_root), "ana")

    page = client.get(f"/articles/{draft_id}").text
    section = page[page.index('id="experiment"') : page.index('id="actions"')]
    assert f"A/B experiment {experiment.id}: running" in section
    assert '<strong id="experiment-live">B</strong>' in section and "not yet" in section
    assert "no decision yet" in section
    bearer = {"Authorization": f"Bearer {API_TOKEN}"}
    answer = client.get(f"/api/articles/{draft_id}", headers=bearer).json()["experiment"]
    assert (answer["id"], answer["status"], answer["control"], answer["live"]) == (experiment.id, "running", "A", "B")
    assert [p["variant"] for p in answer["periods"]] == ["A", "B", "A", "B", "A", "B"]
    assert answer["periods"][1]["switched_at"] is not None and answer["decision"] is None

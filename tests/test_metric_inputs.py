"""Metric files, trigger rules and site settings: bad values are clear errors, and metric rows belong to the
version that was live when they were observed (re-reading a file never re-dates them). Both backends."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from sqlalchemy import func, select, update

from pipeline.metrics import MetricsFileError, import_metrics_file
from pipeline.models import Cluster, Content, ContentVariant, Idea, PostMetric, ReviewEvent, TriggerRule
from resources import StoreResource
from sensors.metrics import metric_triggers

NOW = datetime.now(UTC).replace(microsecond=0)
FIRST_PUBLISHED = NOW - timedelta(days=30)
SECOND_PUBLISHED = NOW - timedelta(days=10)
HEADER = "content_id,variant,metric,value,observed_at,source"


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def add_article(env, slug: str = "coffee") -> int:
    """A site with one written article (version 1, variant A), straight into the store; returns its id."""
    site = env.add_site(slug, name=slug.title())
    generated = {"provider": "offline", "model": "offline", "prompt_version": "test@1"}
    with env.store.transaction() as s:
        cluster = Cluster(site_id=site.id, key=f"{slug}-brewing", name="Brewing", top_keywords=[])
        s.add(cluster)
        s.flush()
        idea = Idea(
            site_id=site.id,
            cluster_id=cluster.id,
            key="cold-brew",
            title="Cold brew",
            angle="how",
            content_type="guide",
            outline=["one"],
            target_keywords=["cold brew"],
            estimated_word_count=800,
            **generated,
        )
        s.add(idea)
        s.flush()
        content = Content(site_id=site.id, idea_id=idea.id, status="draft")
        s.add(content)
        s.flush()
        s.add(variant_row(content.id, 1, generated))
        return content.id


def variant_row(content_id: int, version: int, generated: dict[str, Any] | None = None) -> ContentVariant:
    generated = generated or {"provider": "offline", "model": "offline", "prompt_version": "test@1"}
    return ContentVariant(
        content_id=content_id,
        version=version,
        variant="A",
        title=f"Cold brew v{version}",
        body_html="<p>text</p>",
        meta_title="t",
        meta_description="d",
        primary_keyword="cold brew",
        secondary_keywords=[],
        tags=[],
        categories=[],
        word_count=2,
        **generated,
    )


def publish_version(env, content_id: int, version: int, at: datetime) -> None:
    """Publish `version` the way the review gate does (status change + review event), dated `at`."""
    with env.store.transaction() as s:
        exists = select(ContentVariant.id).where(
            ContentVariant.content_id == content_id, ContentVariant.version == version
        )
        if s.scalar(exists) is None:
            s.add(variant_row(content_id, version))
        s.execute(update(Content).where(Content.id == content_id).values(status="approved"))
    changes = {"published_at": at, "published_version": version, "published_variant": "A"}
    assert env.store.transition_content(
        content_id, "approved", "published", actor="test", version=version, variant="A", changes=changes
    )
    with env.store.transaction() as s:  # the event follows published_at by the export's duration
        s.execute(
            update(ReviewEvent)
            .where(ReviewEvent.content_id == content_id, ReviewEvent.version == version)
            .values(created_at=at + timedelta(seconds=2))
        )


def metrics_file(path: Path, *rows: str, header: str = HEADER) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def stored_metrics(env) -> list[tuple[int, str, int, str, float, datetime]]:
    with env.store.transaction() as s:
        rows = s.execute(
            select(
                PostMetric.content_id,
                PostMetric.variant,
                PostMetric.version,
                PostMetric.metric,
                PostMetric.value,
                PostMetric.observed_at,
            ).order_by(PostMetric.observed_at, PostMetric.variant)
        ).all()
    return [(c, v, n, m, x, o if o.tzinfo else o.replace(tzinfo=UTC)) for c, v, n, m, x, o in rows]


@pytest.fixture
def article(env) -> int:
    content_id = add_article(env)
    publish_version(env, content_id, 1, FIRST_PUBLISHED)
    return content_id


# -- values, ids, dates ----------------------------------------------------------------------------------


def test_nan_and_infinite_values_are_errors_naming_file_row_and_column_and_nothing_is_written(
    env, article, cli, capsys, tmp_path
):
    when = iso(NOW - timedelta(days=1))
    path = metrics_file(
        tmp_path / "gsc.csv",
        f"{article},A,ctr,0.03,{when},gsc",
        f"{article},A,clicks,nan,{when},gsc",
        f"{article},B,ctr,inf,{when},gsc",
        f"{article},A,likes,-Infinity,{when},gsc",
        f"{article},A,shares,1e999,{when},gsc",
        f"{article},A,views,,{when},gsc",
    )

    assert cli("metrics", "import", str(path)) == 2

    error = capsys.readouterr().err
    assert f"metrics file {path}: 5 problem(s), nothing was imported" in error
    assert "row 3, column 'value': 'nan' is not a finite number" in error
    assert "row 4, column 'value': 'inf' is not a finite number" in error
    assert "row 5, column 'value': '-Infinity' is not a finite number" in error
    assert "row 6, column 'value': '1e999' is not a finite number" in error
    assert "row 7, column 'value': value is empty" in error
    assert stored_metrics(env) == [], "the good row of a bad file is not written either"


def test_absurd_ids_and_versions_are_clear_errors_not_database_errors(env, article, cli, capsys, tmp_path):
    when = iso(NOW - timedelta(days=1))
    path = metrics_file(
        tmp_path / "ids.csv",
        f"99999999999999999999,A,ctr,0.1,{when},gsc",
        f"4294967296,A,ctr,0.1,{when},gsc",
        f"-1,A,ctr,0.1,{when},gsc",
        f"²,A,ctr,0.1,{when},gsc",
        f"{article},A,ctr,0.1,{when},gsc,0",
        f"{article},A,ctr,0.1,{when},gsc,99999999999",
        f"{article},A,ctr,0.1,{when},{'s' * 121}",
        header=HEADER + ",version",
    )

    assert cli("metrics", "import", str(path)) == 2

    error = capsys.readouterr().err
    assert "row 2, column 'content_id': '99999999999999999999' is not an article id" in error
    assert "row 3, column 'content_id': '4294967296' is not an article id (a whole number up to 2147483647)" in error
    assert "row 4, column 'content_id': '-1' is not an article id" in error
    assert "row 5, column 'content_id': '²' is not an article id" in error
    assert "row 6, column 'version': '0' is not a version number" in error
    assert "row 7, column 'version': '99999999999' is not a version number" in error
    assert "row 8, column 'source': source is 121 characters; the limit is 120" in error
    assert stored_metrics(env) == []


def test_observations_in_the_future_or_before_the_first_publication_are_errors(env, article, tmp_path):
    unpublished = add_article(env, "tea")
    path = metrics_file(
        tmp_path / "dates.csv",
        f"{article},A,ctr,0.1,{iso(NOW + timedelta(days=2))},gsc",
        f"{article},A,ctr,0.1,{iso(FIRST_PUBLISHED - timedelta(hours=1))},gsc",
        f"{article},A,ctr,0.1,yesterday,gsc",
        f"{unpublished},A,ctr,0.1,{iso(NOW - timedelta(days=1))},gsc",
    )

    with pytest.raises(MetricsFileError) as caught:
        import_metrics_file(env.store, path)

    message = str(caught.value)
    assert "row 2, column 'observed_at': " in message and "is in the future" in message
    assert (
        f"row 3, column 'observed_at': {(FIRST_PUBLISHED - timedelta(hours=1)):%Y-%m-%d %H:%M:%S} UTC is before "
        f"article {article} was first published ({FIRST_PUBLISHED:%Y-%m-%d %H:%M:%S} UTC)" in message
    )
    assert "row 4, column 'observed_at': 'yesterday' is not an ISO date or date-time" in message
    assert f"row 5, column 'content_id': article {unpublished} has never been published" in message
    assert stored_metrics(env) == []


def test_the_same_instant_in_another_offset_is_the_same_row_on_both_backends(env, article, tmp_path):
    local = NOW.replace(hour=10, minute=0, second=0) - timedelta(days=1)
    first = metrics_file(tmp_path / "utc.csv", f"{article},A,ctr,0.04,{iso(local)},gsc")
    second = metrics_file(
        tmp_path / "berlin.csv", f"{article},A,ctr,0.04,{(local + timedelta(hours=2)):%Y-%m-%dT%H:%M:%S}+02:00,gsc"
    )

    assert import_metrics_file(env.store, first).added == 1
    assert import_metrics_file(env.store, second).added == 0
    assert stored_metrics(env) == [(article, "A", 1, "ctr", 0.04, local)]


def test_repeated_rows_merge_but_a_repeat_with_another_value_is_an_error(env, article, tmp_path):
    when = iso(NOW - timedelta(days=1))
    same = metrics_file(tmp_path / "same.csv", f"{article},A,ctr,0.04,{when},gsc", f"{article},a,CTR,0.04,{when},gsc")
    result = import_metrics_file(env.store, same)
    assert (result.rows, result.added, result.repeated) == (1, 1, 1)

    clash = metrics_file(tmp_path / "clash.csv", f"{article},B,ctr,0.04,{when},gsc", f"{article},B,ctr,0.05,{when},gsc")
    with pytest.raises(
        MetricsFileError, match=re.escape("row 3, column 'value': row 2 has the same observation with value 0.04")
    ):
        import_metrics_file(env.store, clash)
    assert len(stored_metrics(env)) == 1


# -- rows belong to the version live when observed -------------------------------------------------------


def test_each_row_is_attributed_to_the_version_live_when_it_was_observed(env, article, tmp_path):
    publish_version(env, article, 2, SECOND_PUBLISHED)
    during_first = SECOND_PUBLISHED - timedelta(days=5)
    during_second = SECOND_PUBLISHED + timedelta(days=1)
    path = metrics_file(
        tmp_path / "m.csv",
        f"{article},A,ctr,0.01,{iso(during_first)},gsc",
        f"{article},A,ctr,0.05,{iso(during_second)},gsc",
        f"{article},A,ctr,0.02,{iso(SECOND_PUBLISHED)},gsc",  # the moment of publication: the new version
    )

    assert import_metrics_file(env.store, path).added == 3

    assert [(version, value) for _, _, version, _, value, _ in stored_metrics(env)] == [(1, 0.01), (2, 0.02), (2, 0.05)]
    assert env.store.latest_metrics(article, 1) == {"A": {"ctr": 0.01}}


def test_reimporting_a_file_after_a_new_version_is_published_adds_nothing_and_never_redates_rows(
    env, article, tmp_path
):
    path = metrics_file(
        tmp_path / "m.csv",
        f"{article},A,ctr,0.01,{iso(NOW - timedelta(days=20))},gsc",
        f"{article},B,ctr,0.02,{iso(NOW - timedelta(days=15))},gsc",
    )
    assert import_metrics_file(env.store, path).added == 2
    before = stored_metrics(env)

    publish_version(env, article, 2, SECOND_PUBLISHED)
    again = import_metrics_file(env.store, path)

    assert (again.rows, again.added, again.already_known) == (2, 0, 2)
    assert stored_metrics(env) == before and {row[2] for row in before} == {1}
    assert env.store.latest_metrics(article, 2) == {}, "version 2 has no observations of its own yet"


def test_an_explicit_version_must_be_the_one_live_when_observed(env, article, tmp_path):
    publish_version(env, article, 2, SECOND_PUBLISHED)
    path = metrics_file(
        tmp_path / "m.csv",
        f"{article},A,ctr,0.01,{iso(SECOND_PUBLISHED - timedelta(days=1))},gsc,1",
        f"{article},A,ctr,0.01,{iso(SECOND_PUBLISHED - timedelta(days=1))},gsc,2",
        header=HEADER + ",version",
    )

    with pytest.raises(MetricsFileError) as caught:
        import_metrics_file(env.store, path)

    assert (
        f"row 3, column 'version': version 2 of article {article} was not live at "
        f"{SECOND_PUBLISHED - timedelta(days=1):%Y-%m-%d %H:%M:%S} UTC: version 1 was" in str(caught.value)
    )
    assert stored_metrics(env) == []


def test_a_reread_metrics_file_does_not_fire_the_rule_again_for_the_regenerated_version(
    env, article, tmp_path, monkeypatch
):
    folder = tmp_path / "metrics"
    folder.mkdir()
    monkeypatch.setenv("PIPELINE_METRICS_DIR", str(folder))
    site_id = env.store.site("coffee").id
    rule = {"site_id": site_id, "metric": "ctr", "comparison": "<", "threshold": 0.02, "min_age_hours": 24}
    env.store.add_trigger_rule({**rule, "content_id": None, "instruction": "better title"})
    metrics_file(folder / "gsc.csv", f"{article},A,ctr,0.01,{iso(SECOND_PUBLISHED - timedelta(days=2))},gsc")

    [request] = tick(env).run_requests
    [firing] = env.store.firings()
    assert firing.published_version == 1 and request.partition_key == "coffee"
    # The regeneration wrote version 2 (consuming the firing) and a reviewer published it.
    assert env.store.claim_firing(firing.id, "run-1") is not None
    env.store.write_regenerated_version(firing.id, "run-1", [dict_variant("A"), dict_variant("B")], "ctr low")
    publish_version(env, article, 2, SECOND_PUBLISHED)

    fresh = tick(env, cursor=None)  # a fresh cursor: the file is read again

    assert fresh.run_requests == [] and fresh.skip_reason.skip_message == "no trigger rule fired"
    assert [(f.published_version, f.status) for f in env.store.firings()] == [(1, "consumed")]
    assert {row[2] for row in stored_metrics(env)} == {1}


def dict_variant(letter: str) -> dict[str, Any]:
    row = variant_row(0, 0)
    columns = ("title", "body_html", "meta_title", "meta_description", "primary_keyword", "word_count")
    return {
        "variant": letter,
        **{c: getattr(row, c) for c in columns},
        "secondary_keywords": [],
        "tags": [],
        "categories": [],
        "provider": "offline",
        "model": "offline",
        "prompt_version": "test@1",
    }


def tick(env, cursor=None, instance=None):
    with dg.build_sensor_context(
        instance=instance or env.instance, cursor=cursor, resources={"store": StoreResource(database_url=env.url)}
    ) as context:
        return metric_triggers(context)


# -- trigger rules from the CLI --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["--threshold", "nan"], "--threshold: nan is not a finite number"),
        (["--threshold", "1e999"], "--threshold: inf is not a finite number"),
        (["--threshold", "0.1", "--min-age-hours", "-5"], "--min-age-hours: -5 is not between 0 and 87600 hours"),
        (["--threshold", "0.1", "--min-age-hours", "inf"], "--min-age-hours: inf is not between 0 and 87600 hours"),
        (["--threshold", "0.1", "--content", "99999999999"], "--content: no article with id 99999999999"),
        (["--threshold", "0.1", "--content", "-3"], "--content: no article with id -3"),
        (["--threshold", "0.1", "--metric", "CTR!"], "--metric: 'CTR!' is not a metric name"),
    ],
)
def test_trigger_options_that_are_not_finite_or_out_of_range_are_errors_naming_the_option(
    env, article, cli, capsys, options, expected
):
    argv = ["triggers", "add", "--site", "coffee", "--metric", "ctr", "--comparison", "<", *options]
    if "--metric" in options:
        argv[4:6] = []

    assert cli(*argv) == 2

    error = capsys.readouterr().err
    assert "error: no rule was added:" in error and expected in error
    with env.store.transaction() as s:
        assert s.scalar(select(func.count()).select_from(TriggerRule)) == 0


def test_a_trigger_rule_for_an_article_of_another_site_is_refused(env, article, cli, capsys):
    add_article(env, "tea")
    assert cli("triggers", "add", "--site", "tea", "--content", str(article), "--metric", "ctr", "--comparison", "<",
               "--threshold", "0.1") == 2  # fmt: skip
    assert f"--content: article {article} is not an article of site 'tea'" in capsys.readouterr().err
    assert cli("triggers", "add", "--site", "coffee", "--content", str(article), "--metric", "ctr", "--comparison",
               "<", "--threshold", "0.1", "--min-age-hours", "168") == 0  # fmt: skip
    assert "Rule 1: regenerate content" in capsys.readouterr().out


def test_removing_a_rule_with_an_absurd_id_is_a_clear_error(env, cli, capsys):
    assert cli("triggers", "remove", "99999999999999999999") == 2
    assert "error: no rule with id 99999999999999999999" in capsys.readouterr().err


# -- site settings -----------------------------------------------------------------------------------------


def test_a_settings_file_with_nan_or_infinity_is_refused_naming_each_setting_and_nothing_changes(
    env, cli, capsys, tmp_path
):
    env.add_site("coffee")
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"ideas_per_cluster": 5}))
    assert cli("sites", "settings", "coffee", "--file", str(good)) == 0
    capsys.readouterr()
    bad = tmp_path / "bad.json"
    bad.write_text(
        '{"max_run_cost_usd": NaN,\n "prices": {"gpt-x": {"input": Infinity}},\n'
        ' "models": {"content": {"temperature": -Infinity}},\n'
        ' "triggers": [{"metric": "ctr", "comparison": "<", "threshold": 1e999, "min_age_hours": -1}]}'
    )

    assert cli("sites", "settings", "coffee", "--file", str(bad)) == 2

    error = capsys.readouterr().err
    assert f"error: settings file {bad}: 5 problems" in error
    for expected in (
        "max_run_cost_usd: NaN is not allowed, numbers must be finite",
        "prices.gpt-x.input: Infinity is not allowed, numbers must be finite",
        "models.content.temperature: -Infinity is not allowed, numbers must be finite",
        "triggers[0].threshold: Infinity is not allowed, numbers must be finite",
        "triggers[0].min_age_hours: Input should be greater than or equal to 0 (got -1)",
        "The settings of 'coffee' were not changed.",
    ):
        assert expected in error
    assert env.store.site("coffee").settings == {"ideas_per_cluster": 5}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"ideas_per_cluster": 3,\n  "taxonomy": }', "line 2, column 15: not valid JSON (Expecting value)"),
        ('{"ideas_per_cluster": 3, "ideas_per_cluster": 4}', "key 'ideas_per_cluster' appears twice in one object"),
        ("[1, 2]", "expected a JSON object {...}, got list"),
        ('{"idea_per_cluster": 3}', "idea_per_cluster: Extra inputs are not permitted"),
    ],
)
def test_a_settings_file_that_is_not_valid_settings_json_says_where(env, cli, capsys, tmp_path, text, expected):
    env.add_site("coffee")
    path = tmp_path / "settings.json"
    path.write_text(text)
    assert cli("sites", "settings", "coffee", "--file", str(path)) == 2
    assert f"error: settings file {path}: {expected}" in capsys.readouterr().err
    assert env.store.site("coffee").settings == {}


def test_invalid_stored_settings_are_reported_and_only_skip_that_site_in_the_metric_sensor(
    env, article, cli, capsys, tmp_path, monkeypatch
):
    monkeypatch.setenv("PIPELINE_METRICS_DIR", str(tmp_path / "no-metrics"))
    broken = add_article(env, "tea")
    publish_version(env, broken, 1, FIRST_PUBLISHED)
    # Written before settings were validated on every read (a negative age cannot be set any more).
    rule = {"metric": "ctr", "comparison": "<", "threshold": 0.5, "min_age_hours": -1}
    env.store.update_site_settings(env.store.site("tea").id, {"triggers": [rule]})
    env.store.update_site_settings(env.store.site("coffee").id, {"triggers": [{**rule, "min_age_hours": 1}]})
    for content_id in (article, broken):
        metrics_file(tmp_path / f"{content_id}.csv", f"{content_id},A,ctr,0.1,{iso(NOW - timedelta(days=1))},gsc")
        import_metrics_file(env.store, tmp_path / f"{content_id}.csv")

    assert cli("sites", "settings", "tea") == 2
    error = capsys.readouterr().err
    assert "error: stored settings of site 'tea': triggers[0].min_age_hours: Input should be greater" in error
    assert "Replace them: pipeline sites settings tea --file FILE" in error

    first = tick(env)
    [request] = first.run_requests
    assert request.partition_key == "coffee", "the other site's rule still fires"
    skipped = tick(env, cursor=first.cursor).skip_reason.skip_message
    assert "site tea: triggers[0].min_age_hours: Input should be greater than or equal to 0" in skipped

"""Metrics from the exports teams use (Search Console, GA4): recognised by their header, pages mapped to articles
by URL, days attributed to the variant live then, one import path for the CLI and the metrics folder. Both
backends.

The site `coffee` (base_url https://coffee.example.com, days in America/Los_Angeles) has two articles:
`cold-brew`, published as A on 2026-10-20 and switched to B at 00:30 Pacific on 2026-11-15 (the way the
experiment code records it: a `published -> published` review event), and `pour-over`, published as A on
2026-10-20 and also on WordPress as `?p=123`.
"""

from __future__ import annotations

import io
import zipfile
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import dagster as dg
import pytest
from sqlalchemy import func, select, update

from pipeline.metric_exports import (
    GA4_PAGES,
    OURS,
    SEARCH_CONSOLE_DAILY,
    SEARCH_CONSOLE_PAGES,
    DateRange,
    ExportProblems,
    export_format,
)
from pipeline.metrics import MetricsFileError, import_metrics_bytes, import_metrics_file, scan_metrics_folder
from pipeline.models import Cluster, Content, ContentVariant, Idea, PostMetric, ReviewEvent
from pipeline.url_mapping import path_key, url_key
from resources import StoreResource
from sensors.metrics import metric_triggers

EXPORTS = Path(__file__).parent / "data" / "metric_exports"
BASE_URL = "https://coffee.example.com"
PUBLISHED = datetime(2026, 10, 20, 12, 0, tzinfo=UTC)
SWITCH = datetime(2026, 11, 15, 8, 30, tzinfo=UTC)  # 00:30 in Los Angeles (PST, UTC-8)
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
GENERATED = {"provider": "offline", "model": "offline", "prompt_version": "test@1"}


def pacific_midnight(day: date) -> datetime:
    """Local midnight of `day` in Los Angeles, in UTC (07:00 until 2026-11-01 included, then 08:00)."""
    return datetime.combine(day, time(), tzinfo=ZoneInfo("America/Los_Angeles")).astimezone(UTC)


def add_article(env, site_id: int, key: str) -> int:
    """An article of the site written for an idea with `key` (so its slug is `key`), variants A and B."""
    with env.store.transaction() as s:
        cluster = Cluster(site_id=site_id, key=f"{key}-cluster", name=key, top_keywords=[])
        s.add(cluster)
        s.flush()
        idea = Idea(
            site_id=site_id,
            cluster_id=cluster.id,
            key=key,
            title=key,
            angle="how",
            content_type="guide",
            outline=["one"],
            target_keywords=[key.replace("-", " ")],
            estimated_word_count=800,
            **GENERATED,
        )
        s.add(idea)
        s.flush()
        content = Content(site_id=site_id, idea_id=idea.id, status="approved")
        s.add(content)
        s.flush()
        for variant in "AB":
            s.add(
                ContentVariant(
                    content_id=content.id,
                    version=1,
                    variant=variant,
                    title=f"{key} {variant}",
                    body_html="<p>text</p>",
                    meta_title="t",
                    meta_description="d",
                    primary_keyword=key,
                    secondary_keywords=[],
                    tags=[],
                    categories=[],
                    word_count=2,
                    **GENERATED,
                )
            )
        return content.id


def make_live(env, content_id: int, from_status: str, variant: str, at: datetime) -> None:
    """Make `variant` of version 1 live at `at` through the store's transition, as publishing and the
    experiment switch do (`approved -> published`, then `published -> published`)."""
    changes = {"published_variant": variant, "published_version": 1}
    if from_status != "published":
        changes["published_at"] = at
    assert env.store.transition_content(
        content_id, from_status, "published", actor="test", version=1, variant=variant, changes=changes
    )
    with env.store.transaction() as s:
        newest = s.scalar(select(func.max(ReviewEvent.id)).where(ReviewEvent.content_id == content_id))
        s.execute(update(ReviewEvent).where(ReviewEvent.id == newest).values(created_at=at))


def coffee_site(env, **ab_test: Any) -> dict[str, int]:
    site = env.add_site("coffee", name="Coffee")
    env.store.update_site_settings(site.id, {"base_url": BASE_URL, **({"ab_test": ab_test} if ab_test else {})})
    cold_brew, pour_over = add_article(env, site.id, "cold-brew"), add_article(env, site.id, "pour-over")
    make_live(env, cold_brew, "approved", "A", PUBLISHED)
    make_live(env, cold_brew, "published", "B", SWITCH)
    make_live(env, pour_over, "approved", "A", PUBLISHED)
    env.store.record_publication(
        pour_over, site.id, "wordpress", BASE_URL, url=f"{BASE_URL}/?p=123", state="done", version=1, variant="A"
    )
    return {"site": site.id, "cold_brew": cold_brew, "pour_over": pour_over}


@pytest.fixture
def coffee(env) -> dict[str, int]:
    return coffee_site(env)


def stored(env) -> list[tuple[int, str, int, str, float, datetime | None, datetime, str]]:
    """Every metric row: (content, variant, version, metric, value, period_start, observed_at, source)."""

    def utc(moment: datetime | None) -> datetime | None:
        return moment if moment is None or moment.tzinfo else moment.replace(tzinfo=UTC)

    with env.store.transaction() as s:
        rows = s.execute(
            select(
                PostMetric.content_id,
                PostMetric.variant,
                PostMetric.version,
                PostMetric.metric,
                PostMetric.value,
                PostMetric.period_start,
                PostMetric.observed_at,
                PostMetric.source,
            ).order_by(PostMetric.content_id, PostMetric.observed_at, PostMetric.metric)
        ).all()
    return [(c, v, n, m, x, utc(p), utc(o), src) for c, v, n, m, x, p, o, src in rows]  # type: ignore[misc]


def values_of(env, content_id: int) -> dict[str, float]:
    return {metric: value for c, _, _, metric, value, *_ in stored(env) if c == content_id}


def zipped(folder: Path, **replaced: str) -> bytes:
    """The Search Console zip of `folder`'s files (as the UI downloads it), some files replaced."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.iterdir()):
            archive.writestr(path.name, replaced.pop(path.name) if path.name in replaced else path.read_bytes())
        for name, text in replaced.items():
            archive.writestr(name, text)
    return buffer.getvalue()


# -- recognising the format ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("metrics.csv", OURS),
        ("search_console_pages.csv", SEARCH_CONSOLE_PAGES),
        ("search_console_daily.csv", SEARCH_CONSOLE_DAILY),
        ("ga4_pages_and_screens.csv", GA4_PAGES),
        ("ga4_pages_engaged_sessions.csv", GA4_PAGES),
    ],
)
def test_each_format_is_recognised_by_its_header(name, expected):
    assert export_format((EXPORTS / name).read_bytes()) == expected


def test_a_search_console_zip_is_recognised_by_its_content():
    assert export_format(zipped(EXPORTS / "search_console_zip")) == SEARCH_CONSOLE_PAGES


def test_an_unknown_header_is_an_error_listing_the_layouts_read(env, tmp_path):
    path = tmp_path / "queries.csv"
    path.write_bytes((EXPORTS / "search_console_zip" / "Queries.csv").read_bytes())

    with pytest.raises(ExportProblems, match="Top queries"):
        export_format(path.read_bytes())
    with pytest.raises(MetricsFileError) as caught:
        import_metrics_file(env.store, path, now=NOW)
    assert "row 1: not a metrics file this pipeline reads" in str(caught.value)
    assert "Top pages,Clicks,Impressions,CTR,Position" in str(caught.value)
    assert "Page path and screen class" in str(caught.value)


# -- Search Console --------------------------------------------------------------------------------------


def test_search_console_zip_takes_its_days_from_chart_csv_and_reports_unmatched_and_rejected_rows(
    env, coffee, tmp_path
):
    path = tmp_path / "coffee.example.com-Performance-on-Search-2026-11-29.zip"
    path.write_bytes(zipped(EXPORTS / "search_console_zip"))

    result = import_metrics_file(env.store, path, now=NOW)

    start, end = pacific_midnight(date(2026, 11, 1)), pacific_midnight(date(2026, 11, 29))
    source = path.name
    assert stored(env) == [
        (coffee["pour_over"], "A", 1, "clicks", 40.0, start, end, source),
        (coffee["pour_over"], "A", 1, "ctr", 0.02, start, end, source),
        (coffee["pour_over"], "A", 1, "impressions", 2000.0, start, end, source),
        (coffee["pour_over"], "A", 1, "position", 6.3, start, end, source),
    ]
    assert (result.format, result.pages, result.rows, result.added) == (SEARCH_CONSOLE_PAGES, 3, 4, 4)
    assert result.unmatched == {f"{BASE_URL}/": 1}, "the home page is no article: reported, not dropped silently"
    [rejected] = result.rejected
    assert f"row 3: article {coffee['cold_brew']} (https://coffee.example.com/cold-brew/)" in rejected
    assert "over 2026-11-01..2026-11-28" in rejected
    assert "variant A (version 1) was live until variant B (version 1) at 2026-11-15 08:30:00 UTC" in rejected
    assert "(2026-11-15 00:30 America/Los_Angeles)" in rejected
    assert "Export one row per day" in rejected


def test_search_console_zip_with_an_absolute_date_filter_uses_it(env, coffee, tmp_path):
    filters = 'Filter,Value\nSearch type,Web\nDate,"Nov 16, 2026 - Nov 28, 2026"\n'
    data = zipped(EXPORTS / "search_console_zip", **{"Filters.csv": filters})

    result = import_metrics_bytes(env.store, data, tmp_path / "export.zip", now=NOW)

    assert result.rejected == (), "the switch is before the 16th: cold brew's row is all variant B"
    periods = {(c, v, p, o) for c, v, _, _, _, p, o, _ in stored(env)}
    start, end = pacific_midnight(date(2026, 11, 16)), pacific_midnight(date(2026, 11, 29))
    assert periods == {(coffee["pour_over"], "A", start, end), (coffee["cold_brew"], "B", start, end)}


def test_search_console_zip_filtered_by_country_is_an_error(env, coffee, tmp_path):
    filters = "Filter,Value\nSearch type,Web\nDate,Last 28 days\nCountry,Canada\n"
    data = zipped(EXPORTS / "search_console_zip", **{"Filters.csv": filters})

    with pytest.raises(MetricsFileError, match=r"(?s)export.zip:Filters.csv.*filtered by country \(Canada\)"):
        import_metrics_bytes(env.store, data, tmp_path / "export.zip", now=NOW)
    assert stored(env) == []


def test_search_console_pages_csv_takes_its_days_from_the_caller(env, coffee, cli, capsys, tmp_path):
    path = tmp_path / "Pages.csv"
    path.write_bytes((EXPORTS / "search_console_pages.csv").read_bytes())

    assert cli("metrics", "import", str(path)) == 2
    assert "the Pages table has no dates: give the days it covers" in capsys.readouterr().err
    assert stored(env) == []

    assert cli("metrics", "import", str(path), "--site", "coffee", "--from", "2026-11-16", "--to", "2026-11-28") == 0

    out = capsys.readouterr().out
    assert f"{path}: search_console_pages, 3 page rows -> 8 rows, 8 new, 0 already imported" in out
    assert "1 pages matching no article (1 rows, not imported):" in out
    assert f"  {BASE_URL}/about/\t1 rows" in out
    pour_over, cold_brew = values_of(env, coffee["pour_over"]), values_of(env, coffee["cold_brew"])
    assert pour_over == {"clicks": 1234, "impressions": 45678, "ctr": pytest.approx(1234 / 45678), "position": 8.4}
    assert cold_brew["ctr"] == pytest.approx(12 / 3456), "www., no trailing slash and utm_* still name cold brew"
    assert {variant for c, variant, *_ in stored(env) if c == coffee["cold_brew"]} == {"B"}


def test_from_and_to_are_checked(env, coffee, cli, capsys, tmp_path):
    path = EXPORTS / "search_console_pages.csv"
    assert cli("metrics", "import", str(path), "--from", "2026-11-16") == 2
    assert "--from and --to go together" in capsys.readouterr().err
    assert cli("metrics", "import", str(path), "--from", "2026-11-28", "--to", "2026-11-16") == 2
    assert "--to 2026-11-16 is before --from 2026-11-28" in capsys.readouterr().err
    assert cli("metrics", "import", str(EXPORTS / "metrics.csv"), "--from", "2026-11-16", "--to", "2026-11-28") == 2
    assert "--from/--to are for exports without dates" in capsys.readouterr().err
    assert cli("metrics", "import", str(path), "--site", "tea", "--from", "2026-11-16", "--to", "2026-11-28") == 2
    assert "site 'tea' is not registered" in capsys.readouterr().err
    assert stored(env) == []


def test_per_day_search_console_rows_go_to_the_variant_live_that_day(env, coffee, tmp_path):
    result = import_metrics_file(env.store, EXPORTS / "search_console_daily.csv", now=NOW)

    by_day = {
        (p.date(), v): (metric, value)
        for c, v, _, metric, value, p, _, _ in stored(env)
        if metric == "clicks" and c == coffee["cold_brew"] and p is not None
    }
    assert by_day == {
        (date(2026, 11, 13), "A"): ("clicks", 3),
        (date(2026, 11, 14), "A"): ("clicks", 4),
        (date(2026, 11, 15), "B"): ("clicks", 6),  # the switch at 00:30 is within the hour's tolerance
        (date(2026, 11, 16), "B"): ("clicks", 6),  # two spellings of the page on one day, merged
    }
    merged = {m: x for c, _, _, m, x, p, _, _ in stored(env) if p == pacific_midnight(date(2026, 11, 16))}
    assert merged["impressions"] == 200
    assert merged["ctr"] == pytest.approx(6 / 200)
    assert merged["position"] == pytest.approx((7.9 * 180 + 12 * 20) / 200), "weighted by impressions"
    ends = {o - p for _, _, _, _, _, p, o, _ in stored(env) if p is not None}
    assert {delta.total_seconds() for delta in ends} == {86400.0}, "each row is one local day"
    assert result.unmatched == {f"{BASE_URL}/contact/": 1}


# -- GA4 -------------------------------------------------------------------------------------------------


def test_ga4_export_takes_its_days_from_the_comment_lines_and_reads_separators(env, coffee):
    result = import_metrics_file(env.store, EXPORTS / "ga4_pages_and_screens.csv", now=NOW)

    assert result.format == GA4_PAGES and result.pages == 3, "the total row (no page) is not a page"
    assert values_of(env, coffee["pour_over"]) == {"views": 2345, "active_users": 801, "avg_engagement_time_s": 61.27}
    assert values_of(env, coffee["cold_brew"]) == {"views": 997, "active_users": 402, "avg_engagement_time_s": 38.5}
    periods = {(p, o) for *_, p, o, _ in stored(env)}
    assert periods == {(pacific_midnight(date(2026, 11, 16)), pacific_midnight(date(2026, 11, 29)))}
    assert {v for c, v, *_ in stored(env) if c == coffee["cold_brew"]} == {"B"}
    assert result.unmatched == {"/about/": 1}


def test_ga4_engaged_sessions_durations_and_query_strings(env, coffee):
    result = import_metrics_file(env.store, EXPORTS / "ga4_pages_engaged_sessions.csv", now=NOW)

    assert values_of(env, coffee["pour_over"]) == {
        "views": 1204,
        "engaged_sessions": 388,
        "avg_engagement_time_s": 65,
        "active_users": 512,
    }, "/?p=123 is the WordPress link of pour over"
    assert values_of(env, coffee["cold_brew"])["avg_engagement_time_s"] == 45
    assert result.unmatched == {}


# -- URLs ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spelling",
    [
        "https://coffee.example.com/cold-brew/",
        "https://coffee.example.com/cold-brew",
        "http://coffee.example.com/cold-brew/",
        "HTTPS://Coffee.Example.COM/cold-brew/",
        "https://www.coffee.example.com/cold-brew/",
        "https://coffee.example.com:443/cold-brew/",
        "https://coffee.example.com/cold-brew/#faq",
        "https://coffee.example.com/cold-brew/?utm_source=x&utm_campaign=y&gclid=1&fbclid=2&msclkid=3",
        "https://coffee.example.com/cold-brew/?mc_cid=1&mc_eid=2&_ga=3&ref=twitter",
        "https://coffee.example.com/cold%2Dbrew/",
    ],
)
def test_spellings_of_one_url_are_the_same_page(spelling):
    assert url_key(spelling) == url_key(f"{BASE_URL}/cold-brew/") == "coffee.example.com/cold-brew"


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("https://coffee.example.com/?p=123", "https://coffee.example.com/?p=124"),
        ("https://coffee.example.com/cold-brew/", "https://coffee.example.com/Cold-Brew/"),  # paths keep case
        ("https://coffee.example.com/cold-brew/", "https://tea.example.com/cold-brew/"),
        ("https://coffee.example.com/cold-brew/", "https://coffee.example.com:8080/cold-brew/"),
    ],
)
def test_different_pages_stay_different(one, other):
    assert url_key(one) != url_key(other)


def test_wordpress_query_is_kept_and_ga4_paths_compare_by_path():
    assert url_key("https://coffee.example.com/?utm_medium=email&p=123") == "coffee.example.com?p=123"
    assert path_key("/?p=123&utm_source=x") == path_key("https://coffee.example.com/?p=123") == "?p=123"
    assert path_key("/cold-brew/") == path_key("/cold-brew#top") == "/cold-brew"


def test_a_url_naming_two_articles_is_an_error_and_nothing_is_written(env, coffee, tmp_path):
    # A stale publication row claims cold brew's address for pour over too.
    env.store.record_publication(
        coffee["pour_over"], coffee["site"], "folder", "/srv/www", url=f"{BASE_URL}/cold-brew/", state="done"
    )
    path = tmp_path / "pages.csv"
    path.write_bytes((EXPORTS / "search_console_pages.csv").read_bytes())

    with pytest.raises(MetricsFileError) as caught:
        import_metrics_file(env.store, path, now=NOW, days=DateRange(date(2026, 11, 16), date(2026, 11, 28)))

    message = str(caught.value)
    assert f"metrics file {path}: 1 problem(s), nothing was imported" in message
    expected = f"is the address of more than one article ({coffee['cold_brew']}, {coffee['pour_over']})"
    assert "row 3, column 'Top pages'" in message and expected in message
    assert stored(env) == []


# -- attribution -----------------------------------------------------------------------------------------


def daily_rows(*days: str) -> bytes:
    rows = "".join(f"{day},{BASE_URL}/cold-brew/,5,100,5%,8\n" for day in days)
    return ("Date,Page,Clicks,Impressions,CTR,Position\n" + rows).encode()


def test_rows_inside_each_span_are_attributed_and_a_row_across_the_switch_is_rejected(env, coffee, tmp_path):
    pages = "Top pages,Clicks,Impressions,CTR,Position\n"
    before = (pages + f"{BASE_URL}/cold-brew/,5,100,5%,8\n").encode()
    for days, variant in (
        (DateRange(date(2026, 11, 1), date(2026, 11, 14)), "A"),
        (DateRange(date(2026, 11, 15), date(2026, 11, 28)), "B"),
    ):
        result = import_metrics_bytes(env.store, before, tmp_path / f"{variant}.csv", now=NOW, days=days)
        assert result.added == 4 and result.rejected == ()
        assert {row[1] for row in stored(env) if row[7] == f"{variant}.csv"} == {variant}

    across = import_metrics_bytes(
        env.store, before, tmp_path / "across.csv", now=NOW, days=DateRange(date(2026, 11, 14), date(2026, 11, 15))
    )

    assert (across.rows, across.added) == (0, 0)
    assert (
        "over 2026-11-14..2026-11-15 spans a switch: variant A (version 1) was live until variant B"
        in (across.rejected[0])
    )
    assert len(stored(env)) == 8, "the rejected row is never attributed to either variant"


def test_the_switch_tolerance_decides_which_variant_a_day_belongs_to(env, tmp_path):
    coffee = coffee_site(env, switch_tolerance_minutes=0)

    result = import_metrics_bytes(env.store, daily_rows("2026-11-14", "2026-11-15"), tmp_path / "d.csv", now=NOW)

    assert {(p.date(), v) for c, v, _, _, _, p, *_ in stored(env) if p is not None} == {(date(2026, 11, 14), "A")}
    [rejected] = result.rejected
    assert "2026-11-15..2026-11-15 spans a switch" in rejected, "with no tolerance, 00:30 is within the 15th"
    assert coffee["cold_brew"] in {c for c, *_ in stored(env)}


def test_a_row_before_the_first_publication_or_not_over_yet_is_an_error_and_nothing_is_written(env, coffee, tmp_path):
    data = daily_rows("2026-10-19", "2026-10-20", "2026-11-20", "2026-11-30")

    with pytest.raises(MetricsFileError) as caught:
        import_metrics_bytes(env.store, data, tmp_path / "early.csv", now=NOW)

    message = str(caught.value)
    assert "2 problem(s), nothing was imported" in message
    assert "row 2: article" in message and "over 2026-10-19..2026-10-19: ends before the article was first" in message
    assert "row 5: article" in message and "the last day is not over yet" in message
    assert stored(env) == [], "the 20th of October (published that day) and of November are not written either"


def test_an_article_never_published_is_an_error(env, coffee, tmp_path):
    draft = add_article(env, coffee["site"], "french-press")
    data = f"Date,Page,Clicks,Impressions\n2026-11-20,{BASE_URL}/french-press/,1,10\n".encode()

    with pytest.raises(MetricsFileError, match=f"article {draft} .*has never been published"):
        import_metrics_bytes(env.store, data, tmp_path / "draft.csv", now=NOW)


# -- validation, idempotency, the folder -----------------------------------------------------------------


def test_a_bad_number_names_file_row_and_column_and_nothing_is_written(env, coffee, tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text(
        "Date,Page,Clicks,Impressions,CTR,Position\n"
        f"2026-11-20,{BASE_URL}/cold-brew/,5,100,5%,8\n"
        f"2026-11-21,{BASE_URL}/cold-brew/,many,100,5%,8\n"
        f"2026-11-2x,{BASE_URL}/cold-brew/,5,100,5%,8\n"
    )

    with pytest.raises(MetricsFileError) as caught:
        import_metrics_file(env.store, path, now=NOW)

    message = str(caught.value)
    assert f"metrics file {path}: 2 problem(s), nothing was imported" in message
    assert "row 3, column 'Clicks': 'many' is not a number" in message
    assert "row 4, column 'Date': '2026-11-2x' is not a date" in message
    assert stored(env) == []


def test_ctr_is_computed_from_clicks_and_impressions_not_read(env, coffee, tmp_path):
    data = f"Date,Page,Clicks,Impressions,CTR,Position\n2026-11-20,{BASE_URL}/cold-brew/,1,3,99%,8\n".encode()

    import_metrics_bytes(env.store, data, tmp_path / "ctr.csv", now=NOW)

    assert values_of(env, coffee["cold_brew"])["ctr"] == pytest.approx(1 / 3)


def test_importing_an_export_twice_adds_nothing(env, coffee, tmp_path):
    path = tmp_path / "daily.csv"
    path.write_bytes((EXPORTS / "search_console_daily.csv").read_bytes())

    first = import_metrics_file(env.store, path, now=NOW)
    again = import_metrics_file(env.store, path, now=NOW)

    assert first.added == 16 and (again.rows, again.added, again.already_known) == (16, 0, 16)
    assert len(stored(env)) == 16


def test_another_range_ending_the_same_day_under_the_same_file_name_is_an_error(env, coffee, tmp_path):
    pages = (EXPORTS / "search_console_pages.csv").read_bytes()
    path = tmp_path / "Pages.csv"
    four_weeks, one_week = (
        DateRange(date(2026, 11, 1), date(2026, 11, 14)),
        DateRange(date(2026, 11, 8), date(2026, 11, 14)),
    )
    import_metrics_bytes(env.store, pages, path, now=NOW, days=four_weeks)
    before = stored(env)

    with pytest.raises(MetricsFileError, match="already gave this article's numbers up to the same day over another"):
        import_metrics_bytes(env.store, pages, path, now=NOW, days=one_week)

    assert stored(env) == before
    assert import_metrics_bytes(env.store, pages, tmp_path / "Pages-7d.csv", now=NOW, days=one_week).added == 8


def test_our_format_is_read_as_before(env, coffee, tmp_path):
    path = tmp_path / "ours.csv"
    path.write_text((EXPORTS / "metrics.csv").read_text().replace("1,A", f"{coffee['pour_over']},A"))

    result = import_metrics_file(env.store, path, now=NOW)

    assert (result.format, result.added, result.pages) == (OURS, 2, 0)
    assert {(m, x, p) for _, _, _, m, x, p, *_ in stored(env)} == {("ctr", 0.031, None), ("likes", 12.0, None)}


def test_the_metrics_folder_imports_exports_and_rejects_a_pages_csv_without_days(env, coffee, tmp_path):
    folder = tmp_path / "metrics"
    folder.mkdir()
    (folder / "search-console.ZIP").write_bytes(zipped(EXPORTS / "search_console_zip"))
    (folder / "ga4.csv").write_bytes((EXPORTS / "ga4_pages_and_screens.csv").read_bytes())
    (folder / "Pages.csv").write_bytes((EXPORTS / "search_console_pages.csv").read_bytes())

    scan = scan_metrics_folder(env.store, folder, {})

    assert sorted((i.path.name, i.format, i.added) for i in scan.imported) == [
        ("ga4.csv", GA4_PAGES, 6),
        ("search-console.ZIP", SEARCH_CONSOLE_PAGES, 4),
    ]
    [rejected] = scan.rejected
    assert rejected.name == "Pages.csv" and "the Pages table has no dates" in rejected.problem
    assert [f.name for f in env.store.rejected_files()] == ["Pages.csv"]
    again = scan_metrics_folder(env.store, folder, {})
    assert sum(i.added for i in again.imported) == 0, "the folder path is idempotent too"


def test_the_metric_sensor_imports_an_export_dropped_in_the_folder(env, coffee, tmp_path, monkeypatch):
    folder = tmp_path / "dropped"
    folder.mkdir()
    (folder / "ga4.csv").write_bytes((EXPORTS / "ga4_pages_and_screens.csv").read_bytes())
    monkeypatch.setenv("PIPELINE_METRICS_DIR", str(folder))

    with dg.build_sensor_context(
        instance=env.instance, resources={"store": StoreResource(database_url=env.url)}
    ) as context:
        metric_triggers(context)

    assert values_of(env, coffee["pour_over"])["views"] == 2345
    assert env.store.rejected_files() == []


def test_a_ga4_path_of_two_sites_is_an_error_unless_one_site_is_chosen(env, coffee, tmp_path):
    tea = env.add_site("tea", name="Tea")
    env.store.update_site_settings(tea.id, {"base_url": "https://tea.example.com"})
    other = add_article(env, tea.id, "cold-brew")
    make_live(env, other, "approved", "A", PUBLISHED)
    path = EXPORTS / "ga4_pages_and_screens.csv"

    with pytest.raises(MetricsFileError, match="a path names pages of every site looked at: import with --site"):
        import_metrics_file(env.store, path, now=NOW)
    assert stored(env) == []

    import_metrics_file(env.store, path, now=NOW, site="coffee")
    assert {c for c, *_ in stored(env)} == {coffee["cold_brew"], coffee["pour_over"]}

"""The review desk's store reads: stored check results replaced per run, site overviews from a fixed number of
queries, and the article list filtered and paginated in SQL.

The sites are small and built straight into the store (`tests.review_data`); the asset wiring is proved on
crafted articles through the `content` asset, as the content check tests do.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event, func, inspect, select, update

from pipeline import review
from pipeline.content_checks import CHECKS, CheckFailure, CheckOutcome
from pipeline.models import Base, Cluster, Content, ContentVariant, Idea, Image, ImagePrompt, Keyword, utcnow
from pipeline.store import MIGRATIONS_DIR
from pipeline.store.desk import ANY_CHECK, ArticleFilter, ClusterChoice
from tests.conftest import Env
from tests.review_data import add_articles, publish
from tests.test_content_checks import Site, good_article, three_good_articles

GENERATED = {"provider": "offline", "model": "offline-test", "prompt_version": "test"}


@dataclass
class Desk:
    """Two sites of articles in known states, with stored check results on the first."""

    env: Env
    cafe: dict[str, list[int]]  # ids by cluster key
    tea: dict[str, list[int]]
    published: int
    approved: int
    regenerated: int
    failing_meta: int  # fails meta_lengths (variant A) and keyword_placement (variant B) in version 2

    @property
    def store(self):
        return self.env.store

    def cafe_ids(self) -> set[int]:
        return {i for ids in self.cafe.values() for i in ids}


def outcome(name: str, failing: list[tuple[int, str, str]], total: int = 10, error: str | None = None) -> CheckOutcome:
    """A check's outcome with `failing` (content id, variant, detail), as `pipeline.content_checks` makes them."""
    failures = [CheckFailure(content_id, variant, "title", detail) for content_id, variant, detail in failing]
    return CheckOutcome(name, CHECKS[name].description, failures, total, error=error)


def new_version(env: Env, content_id: int, version: int, titles: dict[str, str]) -> None:
    """A regenerated version of an article, with one variant per letter of `titles`."""
    with env.store.transaction() as session:
        for letter, title in titles.items():
            session.add(
                ContentVariant(
                    content_id=content_id,
                    version=version,
                    variant=letter,
                    title=title,
                    body_html="<p>Text.</p>",
                    meta_title=title,
                    meta_description=title,
                    primary_keyword="kw",
                    secondary_keywords=[],
                    tags=[],
                    categories=[],
                    word_count=1,
                    **GENERATED,
                )
            )


@pytest.fixture
def desk(env: Env) -> Desk:
    cafe = add_articles(env, "cafe", {"espresso": 4, "milk": 3})
    tea = add_articles(env, "tea", {"green": 2})
    published, approved, regenerated = cafe["espresso"][:3]
    review.approve(env.store, published, actor="ed")
    publish(env, published, at=utcnow())
    review.approve(env.store, approved, actor="ed")
    new_version(env, regenerated, 2, {"A": "Crema, Regenerated", "B": "Crema explained"})
    failing_meta = regenerated
    site_id = env.store.site("cafe").id
    env.store.record_check_outcomes(
        site_id,
        [
            outcome("meta_lengths", [(failing_meta, "A", "meta title 72 > 60 chars")]),
            outcome("keyword_placement", [(failing_meta, "B", "not in title"), (cafe["milk"][0], "A", "not in h2")]),
            outcome("banned_phrases", []),
        ],
    )
    return Desk(env, cafe, tea, published, approved, regenerated, failing_meta)


def listed(desk: Desk, **fields) -> set[int]:
    rows, total = desk.store.desk_articles(ArticleFilter(**fields), offset=0, limit=1000)
    assert total == len(rows)
    return {row.id for row in rows}


@contextmanager
def counted_queries(env: Env) -> Iterator[list[str]]:
    statements: list[str] = []

    def count(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    event.listen(env.store.engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        event.remove(env.store.engine, "before_cursor_execute", count)


# --- stored check results ---------------------------------------------------------------------------------


def test_recorded_failures_are_listed_per_article_for_its_current_version(desk):
    failures = desk.store.article_check_failures(desk.failing_meta)
    assert failures == [
        ("keyword_placement", "B", 2, "not in title"),
        ("meta_lengths", "A", 2, "meta title 72 > 60 chars"),
    ]
    assert desk.store.article_check_failures(desk.cafe["milk"][0]) == [("keyword_placement", "A", 1, "not in h2")]
    assert desk.store.article_check_failures(desk.published) == []


def test_site_check_summary_lists_each_check_of_the_last_run_in_order(desk):
    summary = desk.store.site_check_summary(desk.store.site("cafe").id)
    assert [(r.check_name, r.passed, r.total, r.failing_articles, r.error) for r in summary] == [
        ("meta_lengths", False, 10, 1, None),
        ("keyword_placement", False, 10, 2, None),
        ("banned_phrases", True, 10, 0, None),
    ]
    assert all(r.ran_at.tzinfo is not None and utcnow() - r.ran_at < timedelta(minutes=5) for r in summary)
    assert desk.store.site_check_summary(desk.store.site("tea").id) == []


def test_a_new_run_replaces_the_sites_previous_results_so_a_fixed_article_is_no_longer_failing(desk):
    site_id = desk.store.site("cafe").id
    ran_at = utcnow() + timedelta(hours=1)
    desk.store.record_check_outcomes(
        site_id,
        [outcome("meta_lengths", []), outcome("readability", [], error="ImportError: no textstat")],
        ran_at=ran_at,
    )
    assert desk.store.article_check_failures(desk.failing_meta) == []
    assert desk.store.article_check_failures(desk.cafe["milk"][0]) == []
    summary = desk.store.site_check_summary(site_id)
    assert [(r.check_name, r.passed, r.error) for r in summary] == [
        ("meta_lengths", True, None),
        ("readability", False, "ImportError: no textstat"),
    ]
    assert {r.ran_at for r in summary} == {ran_at}
    assert listed(desk, failing_check=ANY_CHECK) == set()


def test_failures_of_an_older_version_are_not_shown_once_the_article_is_regenerated(desk):
    milk = desk.cafe["milk"][0]
    new_version(desk.env, milk, 2, {"A": "Milk, again"})
    assert desk.store.article_check_failures(milk) == []
    assert milk not in listed(desk, failing_check="keyword_placement")


def test_recording_for_one_site_leaves_the_other_sites_results_alone(desk):
    tea_id = desk.store.site("tea").id
    desk.store.record_check_outcomes(tea_id, [outcome("meta_lengths", [(desk.tea["green"][0], "A", "too long")])])
    assert [r.check_name for r in desk.store.site_check_summary(desk.store.site("cafe").id)] == [
        "meta_lengths",
        "keyword_placement",
        "banned_phrases",
    ]
    assert listed(desk, failing_check="meta_lengths") == {desk.failing_meta, desk.tea["green"][0]}


def test_the_content_asset_checks_store_their_results(env):
    site = Site(env)
    three_good_articles(site)
    fields = {"meta_title": "bad " + "x" * 68}
    bad = site.article("bad", variants={"A": good_article("bad", [], seed=7) | fields})
    assert env.materialize(site.slug, selection=["content"]).success

    summary = {r.check_name: r for r in env.store.site_check_summary(site.row.id)}
    assert list(summary) == list(CHECKS)
    assert not summary["meta_lengths"].passed and summary["meta_lengths"].failing_articles == 1
    assert summary["meta_lengths"].total == 4
    assert summary["banned_phrases"].passed
    assert ("meta_lengths", "A", 1, "meta title 72 > 60 chars") in env.store.article_check_failures(bad)
    assert bad in listed_in(env, failing_check="meta_lengths")

    # Fixed, and checked again by the next run: no longer failing.
    with env.store.transaction() as session:
        session.execute(update(ContentVariant).where(ContentVariant.content_id == bad).values(meta_title="Short"))
    assert env.materialize(site.slug, selection=["content"]).success
    assert [f for f in env.store.article_check_failures(bad) if f.check_name == "meta_lengths"] == []
    assert {r.check_name: r.passed for r in env.store.site_check_summary(site.row.id)}["meta_lengths"]


def listed_in(env: Env, **fields) -> set[int]:
    rows, _ = env.store.desk_articles(ArticleFilter(**fields), offset=0, limit=1000)
    return {row.id for row in rows}


# --- the article list -------------------------------------------------------------------------------------


def test_no_filter_lists_every_article_of_every_site(desk):
    assert listed(desk) == desk.cafe_ids() | set(desk.tea["green"])


def test_the_site_filter_lists_that_sites_articles_only(desk):
    assert listed(desk, site="cafe") == desk.cafe_ids()
    assert listed(desk, site="tea") == set(desk.tea["green"])
    assert listed(desk, site="nowhere") == set()


def test_the_status_filter_lists_articles_in_that_status_only(desk):
    assert listed(desk, status="published") == {desk.published}
    assert listed(desk, status="approved") == {desk.approved}
    drafts = desk.cafe_ids() - {desk.published, desk.approved}
    assert listed(desk, site="cafe", status="draft") == drafts


def test_the_cluster_filter_lists_that_clusters_articles_only(desk):
    milk = next(c for c in desk.store.clusters(desk.store.site("cafe").id) if c.key == "milk")
    assert listed(desk, cluster_id=milk.id) == set(desk.cafe["milk"])


def test_the_failing_check_filter_lists_articles_whose_current_version_fails_it(desk):
    assert listed(desk, failing_check="meta_lengths") == {desk.failing_meta}
    assert listed(desk, failing_check="keyword_placement") == {desk.failing_meta, desk.cafe["milk"][0]}
    assert listed(desk, failing_check=ANY_CHECK) == {desk.failing_meta, desk.cafe["milk"][0]}
    assert listed(desk, failing_check="banned_phrases") == set()


def test_the_regenerated_filter_splits_articles_by_version(desk):
    everything = desk.cafe_ids() | set(desk.tea["green"])
    assert listed(desk, regenerated=True) == {desk.regenerated}
    assert listed(desk, regenerated=False) == everything - {desk.regenerated}


def test_the_query_matches_the_current_variant_a_title_case_insensitively(desk):
    assert listed(desk, query="MILK ARTICLE") == set(desk.cafe["milk"])
    # The regenerated article's version 1 title no longer matches; its new A title does, its B title does not.
    assert desk.regenerated not in listed(desk, query="espresso article")
    assert listed(desk, query="crema, regen") == {desk.regenerated}
    assert listed(desk, query="explained") == set()
    assert listed(desk, query="%") == set()  # LIKE wildcards are literal characters


def test_filters_combine(desk):
    assert listed(desk, site="cafe", status="draft", failing_check=ANY_CHECK, regenerated=False) == {
        desk.cafe["milk"][0]
    }
    assert listed(desk, site="tea", failing_check=ANY_CHECK) == set()


def test_pages_are_disjoint_cover_every_match_and_report_the_total(desk):
    everything = desk.cafe_ids() | set(desk.tea["green"])
    pages, seen = [], []
    for offset in range(0, 12, 4):
        rows, total = desk.store.desk_articles(ArticleFilter(), offset=offset, limit=4)
        assert total == len(everything)
        pages.append([row.id for row in rows])
        seen += pages[-1]
    assert [len(page) for page in pages] == [4, 4, 1]
    assert len(seen) == len(set(seen)) and set(seen) == everything
    assert seen == desk.store.desk_article_ids(ArticleFilter())
    filtered, total = desk.store.desk_articles(ArticleFilter(site="cafe"), offset=5, limit=5)
    assert total == len(desk.cafe_ids()) and len(filtered) == 2


def test_rows_are_newest_changed_first_then_by_id(desk):
    ids = desk.store.desk_article_ids(ArticleFilter())
    with desk.store.transaction() as session:
        updated = dict(session.execute(select(Content.id, Content.updated_at)).all())
    assert ids == sorted(ids, key=lambda i: (updated[i], i), reverse=True)
    # The approval and the publication touched these two last.
    assert ids[:2] == [desk.approved, desk.published]


def test_a_row_carries_the_current_version_its_cluster_dates_and_failing_checks(desk):
    rows, _ = desk.store.desk_articles(ArticleFilter(site="cafe"), offset=0, limit=100)
    by_id = {row.id: row for row in rows}
    regenerated = by_id[desk.regenerated]
    assert (regenerated.title, regenerated.version, regenerated.variants) == ("Crema, Regenerated", 2, ("A", "B"))
    assert regenerated.failing_checks == ("keyword_placement", "meta_lengths")
    assert (regenerated.site, regenerated.status, regenerated.cluster_name) == ("cafe", "draft", "Espresso")
    published = by_id[desk.published]
    assert published.status == "published" and published.published_at is not None
    assert published.approved_at is not None and published.publish_slot is not None
    assert published.failing_checks == () and published.variants == ("A",) and published.version == 1
    assert published.updated_at.tzinfo is not None
    draft = by_id[desk.cafe["milk"][1]]
    assert draft.approved_at is None and draft.published_at is None and draft.title == "Milk article 1"


def test_a_rejection_note_is_shown_on_the_row(desk):
    review.reject(desk.store, desk.approved, note="too thin", actor="ed")
    [row] = desk.store.desk_articles(ArticleFilter(query="espresso article 1"), offset=0, limit=10)[0]
    assert row.id == desk.approved and "too thin" in (row.review_note or "")


def test_the_article_list_takes_four_queries_whatever_the_page_size(desk):
    with counted_queries(desk.env) as statements:
        rows, _ = desk.store.desk_articles(ArticleFilter(failing_check=ANY_CHECK, query="a"), offset=0, limit=100)
    assert rows and len(statements) <= 4
    with counted_queries(desk.env) as statements:
        desk.store.desk_article_ids(ArticleFilter(site="cafe"))
    assert len(statements) == 1


def test_site_clusters_count_their_articles(desk):
    site_id = desk.store.site("cafe").id
    ids = {c.key: c.id for c in desk.store.clusters(site_id)}
    with desk.store.transaction() as session:
        session.add(Cluster(site_id=site_id, key="decaf"))  # not named yet, no articles
    decaf = next(c.id for c in desk.store.clusters(site_id) if c.key == "decaf")
    assert desk.store.site_clusters(site_id) == [
        ClusterChoice(decaf, "decaf", 0),
        ClusterChoice(ids["espresso"], "Espresso", 4),
        ClusterChoice(ids["milk"], "Milk", 3),
    ]


# --- site overviews ---------------------------------------------------------------------------------------


def add_stage_rows(env: Env, slug: str, keywords: int, prompts: int) -> None:
    """Keywords, and image prompts (each with an image row) on the site's first article variant."""
    site_id = env.store.site(slug).id
    with env.store.transaction() as session:
        for number in range(keywords):
            session.add(Keyword(site_id=site_id, keyword=f"kw {number}", normalized=f"kw {number}"))
        variant_id = session.scalar(
            select(ContentVariant.id).join(Content).where(Content.site_id == site_id).order_by(ContentVariant.id)
        )
        for position in range(prompts):
            prompt = ImagePrompt(
                site_id=site_id,
                variant_id=variant_id,
                kind="in_article",
                position=position,
                prompt="p",
                alt_text="a",
                **GENERATED,
            )
            session.add(prompt)
            session.flush()
            if position % 2 == 0:
                session.add(
                    Image(
                        site_id=site_id,
                        image_prompt_id=prompt.id,
                        path="/nowhere.png",
                        provider="offline",
                        model="m",
                        size="1x1",
                        width=1,
                        height=1,
                        bytes=1,
                        checksum="0" * 64,
                    )
                )


def call(partition: str | None, cost: float, outcome: str = "ok", **values: Any) -> dict[str, Any]:
    """A ledger row of a model call (or cache hit) for site `partition`."""
    return {
        "stage": "content",
        "provider": "offline",
        "model": "offline-test",
        "prompt_name": "article",
        "prompt_version": "article@1",
        "cost_usd": cost,
        "outcome": outcome,
        "partition": partition,
        **values,
    }


def test_site_overviews_count_what_the_store_holds(desk):
    add_stage_rows(desk.env, "cafe", keywords=5, prompts=3)
    overviews = {o.site: o for o in desk.store.site_overviews(utcnow() - timedelta(days=30))}
    assert list(overviews) == ["cafe", "tea"]
    for slug, overview in overviews.items():
        site_id = desk.store.site(slug).id
        with desk.store.transaction() as session:

            def count(model, site_id=site_id, session=session):
                return session.scalar(select(func.count()).select_from(model).where(model.site_id == site_id))

            expected = {m.__tablename__: count(m) for m in (Keyword, Cluster, Idea, Content, ImagePrompt, Image)}
        assert overview.site_id == site_id and overview.name == slug.title()
        assert (
            overview.keywords,
            overview.clusters,
            overview.ideas,
            overview.articles,
            overview.image_prompts,
            overview.images,
        ) == tuple(expected[t] for t in ("keywords", "clusters", "ideas", "content", "image_prompts", "images"))
    cafe, tea = overviews["cafe"], overviews["tea"]
    assert (cafe.keywords, cafe.image_prompts, cafe.images, cafe.articles) == (5, 3, 2, 7)
    assert cafe.by_status == {"draft": 5, "approved": 1, "published": 1}
    assert (cafe.drafts_waiting, cafe.publications) == (5, 1)
    assert tea.by_status == {"draft": 2, "approved": 0, "published": 0} and tea.keywords == 0
    assert cafe.failing_checks == [("meta_lengths", 1), ("keyword_placement", 2)]
    assert cafe.checks_ran_at is not None and tea.checks_ran_at is None and tea.failing_checks == []


def test_cost_and_failed_calls_count_only_this_sites_ledger_rows_since_the_date(desk):
    now = utcnow()
    since = now - timedelta(days=3)
    desk.store.record_calls(
        [
            call("cafe", 0.25),
            call("cafe", 0.5, "invalid_json"),
            call("cafe", 0.0, "cache_hit"),
            call("cafe", 4.0, "timeout", created_at=now - timedelta(days=10)),  # before `since`
            call("tea", 1.0, "rate_limited"),
            call(None, 8.0, "error"),  # a call of no site
        ]
    )
    overviews = {o.site: o for o in desk.store.site_overviews(since)}
    assert overviews["cafe"].cost_month_usd == pytest.approx(0.75)
    assert overviews["cafe"].failed_calls_month == 1
    assert overviews["tea"].cost_month_usd == pytest.approx(1.0) and overviews["tea"].failed_calls_month == 1
    older = {o.site: o for o in desk.store.site_overviews(now - timedelta(days=30))}
    assert older["cafe"].cost_month_usd == pytest.approx(4.75) and older["cafe"].failed_calls_month == 2
    assert {o.site: o.cost_month_usd for o in desk.store.site_overviews(now + timedelta(days=1))} == {
        "cafe": 0.0,
        "tea": 0.0,
    }


def test_site_overviews_take_the_same_number_of_queries_whatever_the_number_of_sites(desk):
    with counted_queries(desk.env) as two_sites:
        desk.store.site_overviews(utcnow())
    add_articles(desk.env, "juice", {"orange": 3, "apple": 1})
    with counted_queries(desk.env) as three_sites:
        assert len(desk.store.site_overviews(utcnow())) == 3
    assert len(two_sites) == len(three_sites) <= 5


# --- the migration ----------------------------------------------------------------------------------------


def test_migrations_from_0009_on_downgrade_to_0008_and_upgrade_again(env):
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))

    def migrate(step: Callable[[Config, str], None], revision: str) -> list[str]:
        with env.store.engine.begin() as connection:
            config.attributes["connection"] = connection
            step(config, revision)
        return list(inspect(env.store.engine).get_table_names())

    assert {"check_results", "check_failures"} <= set(inspect(env.store.engine).get_table_names())
    tables = migrate(command.downgrade, "0008")
    assert "check_results" not in tables and "check_failures" not in tables and "publications" in tables
    tables = migrate(command.upgrade, "head")
    assert {"check_results", "check_failures"} <= set(tables)
    with env.store.engine.connect() as connection:
        head = ScriptDirectory.from_config(config).get_current_head()
        assert MigrationContext.configure(connection).get_current_revision() == head
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    # The schema works again: a run's results are stored and read back.
    ids = add_articles(env, "cafe", {"espresso": 1})
    site_id = env.store.site("cafe").id
    env.store.record_check_outcomes(site_id, [outcome("meta_lengths", [(ids["espresso"][0], "A", "too long")])])
    assert env.store.article_check_failures(ids["espresso"][0]) == [("meta_lengths", "A", 1, "too long")]


def test_migration_upgrades_a_fresh_sqlite_database_to_head(tmp_path):
    from sqlalchemy import create_engine

    engine = create_engine(f"sqlite:///{tmp_path / 'fresh.db'}")
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0008")
    assert "check_results" not in inspect(engine).get_table_names()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
    with engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    engine.dispose()

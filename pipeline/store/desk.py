"""The review desk's reads: one overview row per site, and the filtered, paginated list of articles.

Every read is a fixed number of grouped queries whatever the number of sites or articles: filtering and
pagination happen in SQL, and Python only assembles the rows of one page.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import ColumnElement, Select, Subquery, and_, case, exists, func, literal, select, union_all
from sqlalchemy.orm import Session

from pipeline.models import (
    CheckResult,
    Cluster,
    Content,
    ContentStatus,
    ContentVariant,
    FailedCheck,
    Idea,
    Image,
    ImagePrompt,
    Keyword,
    ModelCall,
    Site,
    as_utc,
)
from pipeline.store.base import StoreBase, _current_versions

# Ledger outcomes that are not failures (`pipeline.llm.ledger.CallLedger.record`): an answer, or a cache hit.
SUCCESSFUL_CALL_OUTCOMES = ("ok", "cache_hit")
# `ArticleFilter.failing_check` value for "fails at least one check".
ANY_CHECK = "any"


@dataclass(frozen=True)
class SiteOverview:
    """One site on the desk's home page: rows per stage, articles per status, this period's spend, checks."""

    site: str
    site_id: int
    name: str
    keywords: int
    clusters: int
    ideas: int
    articles: int
    image_prompts: int
    images: int  # image rows (files are not looked for on disk, unlike `Store.counts`)
    publications: int  # published articles
    by_status: dict[str, int]  # every `ContentStatus`, zero included
    drafts_waiting: int
    cost_month_usd: float  # ledger cost of the site's calls since `since`
    failed_calls_month: int  # ledger rows since `since` whose outcome is neither an answer nor a cache hit
    failing_checks: list[tuple[str, int]]  # (check name, failing variants) of the stored checks that failed
    checks_ran_at: datetime | None  # when the stored check results were recorded; None before the first run


@dataclass(frozen=True)
class ArticleFilter:
    """What the desk's article list shows; every field left None does not narrow it."""

    site: str | None = None  # site slug
    status: str | None = None  # a `ContentStatus` value
    cluster_id: int | None = None
    failing_check: str | None = None  # a check name, or `ANY_CHECK`: the current version fails it
    regenerated: bool | None = None  # True: current version > 1; False: still version 1
    query: str | None = None  # case-insensitive substring of the current variant A's title


@dataclass(frozen=True)
class DeskArticle:
    """One row of the desk's article list (the current version's text is not loaded)."""

    id: int
    site: str
    title: str  # current version, variant A (else its first variant)
    status: str
    version: int  # current version; 0 for an article without variants
    variants: tuple[str, ...]  # letters of the current version
    cluster_id: int
    cluster_name: str | None
    updated_at: datetime
    approved_at: datetime | None
    publish_slot: datetime | None
    published_at: datetime | None
    failing_checks: tuple[str, ...] = field(default=())  # stored failures of the current version, by name
    review_note: str | None = None


class ClusterChoice(NamedTuple):
    """A cluster of a site for the desk's filter, with its number of articles."""

    cluster_id: int
    name: str  # its name, or its key while the model has not named it
    article_count: int


def _matching(article_filter: ArticleFilter, *columns: Any, current: Subquery | None = None) -> Select[Any]:
    """`columns` of the articles `article_filter` admits (joined to site, idea and `current`, the
    current-version subquery the columns may read from)."""
    current = _current_versions() if current is None else current
    version = func.coalesce(current.c.version, 0)
    statement = (
        select(*columns)
        .select_from(Content)
        .join(Site, Site.id == Content.site_id)
        .join(Idea, Idea.id == Content.idea_id)
        .outerjoin(current, current.c.content_id == Content.id)
    )
    conditions: list[ColumnElement[bool]] = []
    if article_filter.site is not None:
        conditions.append(Site.slug == article_filter.site)
    if article_filter.status is not None:
        conditions.append(Content.status == article_filter.status)
    if article_filter.cluster_id is not None:
        conditions.append(Idea.cluster_id == article_filter.cluster_id)
    if article_filter.regenerated is not None:
        conditions.append(version > 1 if article_filter.regenerated else version == 1)
    if article_filter.failing_check is not None:
        failing = [FailedCheck.content_id == Content.id, FailedCheck.version == current.c.version]
        if article_filter.failing_check != ANY_CHECK:
            failing.append(FailedCheck.check_name == article_filter.failing_check)
        conditions.append(exists().where(*failing))
    if article_filter.query:
        conditions.append(
            exists().where(
                ContentVariant.content_id == Content.id,
                ContentVariant.version == current.c.version,
                ContentVariant.variant == "A",
                func.lower(ContentVariant.title).contains(article_filter.query.lower(), autoescape=True),
            )
        )
    return statement.where(and_(True, *conditions))


def _newest_first(statement: Select[Any]) -> Select[Any]:
    """Most recently changed first; the id breaks ties, so pages are stable."""
    return statement.order_by(Content.updated_at.desc(), Content.id.desc())


class DeskStore(StoreBase):
    """Reads for the review desk: site overviews, the filtered article list, and its filter choices."""

    def site_overviews(self, since: datetime) -> list[SiteOverview]:
        """Every site's overview, by slug; spend and failed calls count ledger rows since `since`.

        Five queries whatever the number of sites: sites, rows per stage, articles per status, the ledger,
        the stored check results.
        """
        per_stage = union_all(
            *(
                select(
                    literal(name).label("stage"), model.site_id.label("site_id"), func.count().label("rows")
                ).group_by(model.site_id)
                for name, model in (
                    ("keywords", Keyword),
                    ("clusters", Cluster),
                    ("ideas", Idea),
                    ("image_prompts", ImagePrompt),
                    ("images", Image),
                )
            )
        )
        failed = case((ModelCall.outcome.in_(SUCCESSFUL_CALL_OUTCOMES), 0), else_=1)
        # The ledger names a site by its partition key, the slug.
        ledger = (
            select(ModelCall.partition, func.coalesce(func.sum(ModelCall.cost_usd), 0.0), func.sum(failed))
            .where(ModelCall.created_at >= since, ModelCall.partition.is_not(None))
            .group_by(ModelCall.partition)
        )
        with self._sessions() as session:
            sites = session.execute(select(Site.id, Site.slug, Site.name).order_by(Site.slug)).all()
            stages: dict[tuple[int, str], int] = {
                (site_id, stage): rows for stage, site_id, rows in session.execute(per_stage).all()
            }
            statuses: dict[tuple[int, str], int] = {
                (site_id, status): rows
                for site_id, status, rows in session.execute(
                    select(Content.site_id, Content.status, func.count()).group_by(Content.site_id, Content.status)
                ).all()
            }
            spend = {partition: (float(cost), int(fails or 0)) for partition, cost, fails in session.execute(ledger)}
            checks = session.execute(
                select(
                    CheckResult.site_id,
                    CheckResult.check_name,
                    CheckResult.passed,
                    CheckResult.failing_articles,
                    CheckResult.ran_at,
                ).order_by(CheckResult.site_id, CheckResult.id)
            ).all()
        failing: dict[int, list[tuple[str, int]]] = {}
        ran_at: dict[int, datetime] = {}
        for site_id, check_name, passed, failing_articles, at in checks:
            if not passed:
                failing.setdefault(site_id, []).append((check_name, failing_articles))
            ran_at[site_id] = max(ran_at.get(site_id, as_utc(at)), as_utc(at))
        overviews = []
        for site_id, slug, name in sites:
            by_status = {status.value: statuses.get((site_id, status.value), 0) for status in ContentStatus}
            cost, failed_calls = spend.get(slug, (0.0, 0))
            overviews.append(
                SiteOverview(
                    site=slug,
                    site_id=site_id,
                    name=name,
                    keywords=stages.get((site_id, "keywords"), 0),
                    clusters=stages.get((site_id, "clusters"), 0),
                    ideas=stages.get((site_id, "ideas"), 0),
                    # Every article, including any status outside `ContentStatus`.
                    articles=sum(rows for (owner, _), rows in statuses.items() if owner == site_id),
                    image_prompts=stages.get((site_id, "image_prompts"), 0),
                    images=stages.get((site_id, "images"), 0),
                    publications=by_status[ContentStatus.PUBLISHED],
                    by_status=by_status,
                    drafts_waiting=by_status[ContentStatus.DRAFT],
                    cost_month_usd=round(cost, 8),
                    failed_calls_month=failed_calls,
                    failing_checks=failing.get(site_id, []),
                    checks_ran_at=ran_at.get(site_id),
                )
            )
        return overviews

    def desk_articles(
        self, article_filter: ArticleFilter, *, offset: int = 0, limit: int = 50
    ) -> tuple[list[DeskArticle], int]:
        """One page of the articles `article_filter` admits, most recently changed first, and how many match.

        Four queries whatever the page size: the count, the page, its current variants, its failing checks.
        """
        current = _current_versions()
        page_statement = _newest_first(
            _matching(
                article_filter,
                Content.id,
                Site.slug,
                Content.status,
                func.coalesce(current.c.version, 0),
                Idea.cluster_id,
                Cluster.name,
                Content.updated_at,
                Content.approved_at,
                Content.publish_slot,
                Content.published_at,
                Content.review_note,
                current=current,
            ).join(Cluster, Cluster.id == Idea.cluster_id)
        )
        with self._sessions() as session:
            total = session.scalar(select(func.count()).select_from(_matching(article_filter, Content.id).subquery()))
            rows = session.execute(page_statement.offset(max(offset, 0)).limit(max(limit, 0))).all()
            ids = [row[0] for row in rows]
            variants, failing = self._page_details(session, ids)
        return [
            DeskArticle(
                id=content_id,
                site=slug,
                title=next(iter(variants.get(content_id, {}).values()), ""),
                status=status,
                version=version,
                variants=tuple(variants.get(content_id, {})),
                cluster_id=cluster_id,
                cluster_name=cluster_name,
                updated_at=as_utc(updated_at),
                approved_at=as_utc(approved_at) if approved_at else None,
                publish_slot=as_utc(publish_slot) if publish_slot else None,
                published_at=as_utc(published_at) if published_at else None,
                failing_checks=tuple(failing.get(content_id, ())),
                review_note=review_note,
            )
            for (
                content_id,
                slug,
                status,
                version,
                cluster_id,
                cluster_name,
                updated_at,
                approved_at,
                publish_slot,
                published_at,
                review_note,
            ) in rows
        ], total or 0

    def desk_article_ids(self, article_filter: ArticleFilter) -> list[int]:
        """Every article id `article_filter` admits, in the list's order (for "select all matching")."""
        with self._sessions() as session:
            return list(session.scalars(_newest_first(_matching(article_filter, Content.id))))

    def site_clusters(self, site_id: int) -> list[ClusterChoice]:
        """The site's clusters with their article counts, by name ignoring case (clusters without articles too)."""
        label = func.coalesce(Cluster.name, Cluster.key)
        statement = (
            select(Cluster.id, label, func.count(Content.id))
            .outerjoin(Idea, Idea.cluster_id == Cluster.id)
            .outerjoin(Content, Content.idea_id == Idea.id)
            .where(Cluster.site_id == site_id)
            .group_by(Cluster.id, label)
            .order_by(func.lower(label), Cluster.id)
        )
        with self._sessions() as session:
            return [ClusterChoice(*row) for row in session.execute(statement).all()]

    def _page_details(
        self, session: Session, ids: Sequence[int]
    ) -> tuple[dict[int, dict[str, str]], dict[int, list[str]]]:
        """For a page of articles: their current variants (letter -> title, A first) and the names of the
        checks their current version fails."""
        if not ids:
            return {}, {}
        current = _current_versions()
        variants: dict[int, dict[str, str]] = {}
        for content_id, letter, title in session.execute(
            select(ContentVariant.content_id, ContentVariant.variant, ContentVariant.title)
            .join(
                current,
                (current.c.content_id == ContentVariant.content_id) & (current.c.version == ContentVariant.version),
            )
            .where(ContentVariant.content_id.in_(ids))
            .order_by(ContentVariant.content_id, ContentVariant.variant)
        ):
            variants.setdefault(content_id, {})[letter] = title
        failing: dict[int, list[str]] = {}
        for content_id, check_name in session.execute(
            select(FailedCheck.content_id, FailedCheck.check_name)
            .join(
                current, (current.c.content_id == FailedCheck.content_id) & (current.c.version == FailedCheck.version)
            )
            .where(FailedCheck.content_id.in_(ids))
            .group_by(FailedCheck.content_id, FailedCheck.check_name)
            .order_by(FailedCheck.content_id, FailedCheck.check_name)
        ):
            failing.setdefault(content_id, []).append(check_name)
        return variants, failing

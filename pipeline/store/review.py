"""Review: the queue of articles, one article with its history, status transitions, and row counts per site."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import defer

from pipeline.models import (
    Cluster,
    Content,
    ContentStatus,
    ContentVariant,
    Idea,
    Image,
    ImagePrompt,
    Keyword,
    ReviewEvent,
    Site,
    utcnow,
)
from pipeline.store.base import StoreBase, _current_variants, affected
from pipeline.store.trigger_scan import serialise_trigger_inputs


@dataclass(frozen=True)
class SiteCounts:
    """Row counts per stage for one site (`images` counts files that exist on disk)."""

    site: str
    keywords: int
    clusters: int
    ideas: int
    content: int
    image_prompts: int
    images: int
    # Current article variants per provider: offline ones are labelled and counted apart, so a site that
    # mixes offline and real content says so.
    variants_by_provider: dict[str, int] = field(default_factory=dict)


class ReviewStore(StoreBase):
    """The review queue, articles under review, their events and transitions, and per-site counts."""

    def review_queue(
        self, *, site_id: int | None = None, status: str | None = None
    ) -> list[tuple[Content, str, list[ContentVariant]]]:
        """Articles with their site slug and the variants of their current (highest) version, by site and id.

        Variant bodies are not loaded (a listing does not need them); reading `body_html` on them raises.
        """
        with self._sessions() as session:
            articles = select(Content, Site.slug).join(Site, Site.id == Content.site_id)
            current = (
                _current_variants()
                .options(defer(ContentVariant.body_html, raiseload=True))
                .order_by(ContentVariant.content_id, ContentVariant.variant)
            )
            if site_id is not None:
                articles, current = (
                    articles.where(Content.site_id == site_id),
                    current.where(Content.site_id == site_id),
                )
            if status is not None:
                articles, current = articles.where(Content.status == status), current.where(Content.status == status)
            variants: dict[int, list[ContentVariant]] = {}
            for variant in session.scalars(current):
                variants.setdefault(variant.content_id, []).append(variant)
            rows = session.execute(articles.order_by(Site.slug, Content.id)).all()
        return [(content, slug, variants.get(content.id, [])) for content, slug in rows]

    def review_selection(
        self,
        *,
        ids: Sequence[int] | None = None,
        site_id: int | None = None,
        cluster_id: int | None = None,
        status: str | None = None,
    ) -> list[tuple[Content, str]]:
        """Articles with their site slug, by id: those of `ids`, of a site, of a cluster and/or with a status.

        For bulk review; an id that does not exist is simply absent from the answer.
        """
        with self._sessions() as session:
            statement = select(Content, Site.slug).join(Site, Site.id == Content.site_id)
            if ids is not None:
                statement = statement.where(Content.id.in_(list(ids)))
            if site_id is not None:
                statement = statement.where(Content.site_id == site_id)
            if cluster_id is not None:
                statement = statement.join(Idea, Idea.id == Content.idea_id).where(Idea.cluster_id == cluster_id)
            if status is not None:
                statement = statement.where(Content.status == status)
            return [(content, slug) for content, slug in session.execute(statement.order_by(Content.id)).all()]

    def review_article(self, content_id: int) -> tuple[Content, Site, Idea, list[ContentVariant]] | None:
        """An article with its site, its idea and every variant (newest version first, A before B); None if unknown."""
        with self._sessions() as session:
            row = session.execute(
                select(Content, Site, Idea)
                .join(Site, Site.id == Content.site_id)
                .join(Idea, Idea.id == Content.idea_id)
                .where(Content.id == content_id)
            ).one_or_none()
            if row is None:
                return None
            variants = session.scalars(
                select(ContentVariant)
                .where(ContentVariant.content_id == content_id)
                .order_by(ContentVariant.version.desc(), ContentVariant.variant)
            )
            return row[0], row[1], row[2], list(variants)

    def review_events(self, content_id: int) -> list[ReviewEvent]:
        """An article's status history (review gate and regeneration), oldest first."""
        with self._sessions() as session:
            statement = select(ReviewEvent).where(ReviewEvent.content_id == content_id)
            return list(session.scalars(statement.order_by(ReviewEvent.created_at, ReviewEvent.id)))

    def has_earlier_idea_with_key(self, site_id: int, key: str, idea_id: int) -> bool:
        """Whether an older idea of the site (a smaller id) has the same key.

        Idea keys are unique per cluster, not per site, and article slugs are made from them
        (`pipeline.urls.article_slug`).
        """
        with self._sessions() as session:
            clash = select(Idea.id).where(Idea.site_id == site_id, Idea.key == key, Idea.id < idea_id).exists()
            return bool(session.scalar(select(clash)))

    def transition_content(
        self,
        content_id: int,
        from_status: str,
        to_status: str,
        *,
        actor: str,
        version: int | None = None,
        variant: str | None = None,
        note: str | None = None,
        changes: Mapping[str, Any] | None = None,
    ) -> bool:
        """Move an article from `from_status` to `to_status` (plus `changes` to its other columns) and append its
        `ReviewEvent`, in one transaction.

        A compare-and-set on the status, so two reviewers acting on the same state cannot both win, and an
        article locked by a regeneration run is left alone: returns False, writing nothing, in either case.
        """
        with self.transaction() as session:
            if to_status == ContentStatus.PUBLISHED:
                serialise_trigger_inputs(session)  # the metric sensor reads publications by id
            now = utcnow()
            moved = affected(
                session.execute(
                    update(Content)
                    .where(
                        Content.id == content_id,
                        Content.status == from_status,
                        Content.regeneration_run_id.is_(None),
                    )
                    .values(**dict(changes or {}), status=to_status, updated_at=now)
                )
            )
            if moved != 1:
                return False
            session.add(
                ReviewEvent(
                    content_id=content_id,
                    from_status=from_status,
                    to_status=to_status,
                    version=version,
                    variant=variant,
                    note=note,
                    actor=actor,
                    created_at=now,
                )
            )
            return True

    def counts(self, site_id: int) -> SiteCounts:
        """Row counts per stage for a site; `images` counts only files that exist."""
        site = self._row(Site, site_id)
        with self._sessions() as session:

            def count(model: type[Keyword | Cluster | Idea | Content | ImagePrompt]) -> int:
                return session.scalar(select(func.count()).select_from(model).where(model.site_id == site.id)) or 0

            paths = session.scalars(select(Image.path).where(Image.site_id == site.id))
            current = _current_variants().where(Content.site_id == site.id).subquery()
            by_provider: dict[str, int] = dict(
                session.execute(
                    select(current.c.provider, func.count()).group_by(current.c.provider).order_by(current.c.provider)
                ).all()
            )
            return SiteCounts(
                variants_by_provider={str(k): int(v) for k, v in by_provider.items()},
                site=site.slug,
                keywords=count(Keyword),
                clusters=count(Cluster),
                ideas=count(Idea),
                content=count(Content),
                image_prompts=count(ImagePrompt),
                images=sum(1 for path in paths if Path(path).is_file()),
            )

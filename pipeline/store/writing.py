"""Writing: articles and their A/B variants, image prompts and images, and the writes that add a new
version or replace a stage's output (forced redos and regenerations)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from pipeline.models import (
    Content,
    ContentStatus,
    ContentVariant,
    FiringStatus,
    Idea,
    IdeaStatus,
    Image,
    ImagePrompt,
    ReviewEvent,
    TriggerFiring,
    utcnow,
)
from pipeline.store.base import StoreBase, _chunks, _current_variants, table


class WritingStore(StoreBase):
    """Articles, variants, image prompts and images; new versions and forced redos."""

    def ideas_without_content(self, site_id: int) -> list[Idea]:
        """Approved ideas of a site that have no article yet (proposed and rejected ideas are never written)."""
        with self._sessions() as session:
            has_content = select(Content.id).where(Content.idea_id == Idea.id).exists()
            statement = (
                select(Idea)
                .where(Idea.site_id == site_id, Idea.status == IdeaStatus.APPROVED.value, ~has_content)
                .order_by(Idea.id)
            )
            return list(session.scalars(statement))

    def add_contents(self, site_id: int, articles: Sequence[tuple[int, Mapping[str, Any]]]) -> int:
        """Create articles (version 1, variant A, `draft`) for ideas, in one transaction; ideas that already
        have an article are skipped (their row is never touched). Returns how many articles were created."""
        if not articles:
            return 0
        # In idea order: two runs writing overlapping batches then lock those rows in the same order, so they
        # queue instead of deadlocking (PostgreSQL); each batch arrives in its own completion order.
        articles = sorted(articles, key=lambda article: article[0])
        with self.transaction() as session:
            insert = self._insert(session)
            now = utcnow()
            # One cached statement run with many parameter sets (not a multi-row VALUES built per batch,
            # which SQLAlchemy would compile again for every batch size).
            statement = (
                insert(table(Content))
                .on_conflict_do_nothing(index_elements=[Content.idea_id])
                .returning(Content.idea_id, Content.id)
            )
            params = [
                {
                    "site_id": site_id,
                    "idea_id": idea_id,
                    "status": ContentStatus.DRAFT,
                    "created_at": now,
                    "updated_at": now,
                }
                for idea_id, _ in articles
            ]
            created = dict(session.execute(statement, params).all())
            rows = [
                {"content_id": created[idea_id], "version": 1, "variant": "A", "created_at": now, **variant}
                for idea_id, variant in articles
                if idea_id in created
            ]
            if rows:
                session.execute(table(ContentVariant).insert(), rows)
            return len(rows)

    def content(self, content_id: int) -> Content:
        """One article by id (`LookupError` if there is none)."""
        return self._row(Content, content_id)

    def content_by_ids(self, ids: Iterable[int]) -> dict[int, Content]:
        """Articles by id (missing ids are simply absent), read in chunks (a metrics file names many)."""
        found: dict[int, Content] = {}
        with self._sessions() as session:
            for chunk in _chunks(sorted(set(ids)), 500):
                found.update((c.id, c) for c in session.scalars(select(Content).where(Content.id.in_(chunk))))
        return found

    def content_ids_by_idea(self, site_id: int) -> dict[int, int]:
        """idea id -> article id, for every article of a site."""
        with self._sessions() as session:
            return dict(session.execute(select(Content.idea_id, Content.id).where(Content.site_id == site_id)).all())

    def published_content(self, site_id: int | None = None) -> list[Content]:
        """Published articles (of one site, or all), oldest publication first."""
        with self._sessions() as session:
            statement = select(Content).where(
                Content.status == ContentStatus.PUBLISHED, Content.published_version.is_not(None)
            )
            if site_id is not None:
                statement = statement.where(Content.site_id == site_id)
            return list(session.scalars(statement.order_by(Content.published_at, Content.id)))

    def variants(self, content_id: int) -> list[ContentVariant]:
        """Every variant of an article, newest version first (A before B within a version)."""
        with self._sessions() as session:
            statement = (
                select(ContentVariant)
                .where(ContentVariant.content_id == content_id)
                .order_by(ContentVariant.version.desc(), ContentVariant.variant)
            )
            return list(session.scalars(statement))

    def current_variants(self, site_id: int, limit: int | None = None) -> list[ContentVariant]:
        """The newest version's variants of every article of a site (the first `limit` of them)."""
        with self._sessions() as session:
            statement = (
                _current_variants()
                .where(Content.site_id == site_id)
                .order_by(ContentVariant.content_id, ContentVariant.variant)
                .limit(limit)
            )
            return list(session.scalars(statement))

    def current_version(self, content_id: int) -> int:
        """The highest version number of an article (0 if it has none)."""
        with self._sessions() as session:
            return session.execute(
                select(func.coalesce(func.max(ContentVariant.version), 0)).where(
                    ContentVariant.content_id == content_id
                )
            ).scalar_one()

    def article_totals(self, site_id: int) -> tuple[int, int]:
        """(articles, words in their current variants) of a site, counted in the database."""
        current = _current_variants().where(Content.site_id == site_id).subquery()
        totals = select(func.count(func.distinct(current.c.content_id)), func.sum(current.c.word_count))
        with self._sessions() as session:
            articles, words = session.execute(totals).one()
        return int(articles), int(words or 0)

    def variants_without_image_prompts(self, site_id: int) -> list[ContentVariant]:
        """Current variants that have no image prompts yet."""
        with self._sessions() as session:
            have = set(session.scalars(select(ImagePrompt.variant_id).where(ImagePrompt.site_id == site_id)))
        return [variant for variant in self.current_variants(site_id) if variant.id not in have]

    def add_image_prompts(self, site_id: int, variant_id: int, prompts: Iterable[Mapping[str, Any]]) -> int:
        """Insert a variant's image prompts on (variant, kind, position) in one transaction.

        Written once per variant: if another run stored prompts for it first, nothing is added (0), so two
        different answers are never mixed into one set.
        """
        values = [{"site_id": site_id, "variant_id": variant_id, "created_at": utcnow(), **p} for p in prompts]
        natural_key = [ImagePrompt.variant_id, ImagePrompt.kind, ImagePrompt.position]
        return self._insert_set_once(site_id, ImagePrompt, ImagePrompt.variant_id, variant_id, values, natural_key)

    def image_prompts(self, site_id: int) -> list[ImagePrompt]:
        """All image prompts of a site."""
        with self._sessions() as session:
            statement = select(ImagePrompt).where(ImagePrompt.site_id == site_id).order_by(ImagePrompt.id)
            return list(session.scalars(statement))

    def prompts_missing_images(self, site_id: int) -> list[ImagePrompt]:
        """Image prompts with no image row, or whose recorded file is gone from disk."""
        with self._sessions() as session:
            rows = session.execute(
                select(ImagePrompt, Image.path)
                .outerjoin(Image, Image.image_prompt_id == ImagePrompt.id)
                .where(ImagePrompt.site_id == site_id)
                .order_by(ImagePrompt.id)
            ).all()
        return [prompt for prompt, path in rows if path is None or not Path(path).is_file()]

    def save_image(self, site_id: int, image_prompt_id: int, values: Mapping[str, Any]) -> None:
        """Record (or re-point, when regenerated) the image file of an image prompt."""
        with self.transaction() as session:
            insert = self._insert(session)
            statement = insert(Image).values(
                site_id=site_id, image_prompt_id=image_prompt_id, created_at=utcnow(), **values
            )
            session.execute(statement.on_conflict_do_update(index_elements=[Image.image_prompt_id], set_=dict(values)))

    def images(self, site_id: int) -> list[Image]:
        """All image rows of a site."""
        with self._sessions() as session:
            return list(session.scalars(select(Image).where(Image.site_id == site_id).order_by(Image.id)))

    def variant_images(self, variant_id: int) -> list[tuple[ImagePrompt, Image | None]]:
        """A variant's image prompts with their image row (None if not generated): featured first, then by position."""
        with self._sessions() as session:
            rows = session.execute(
                select(ImagePrompt, Image)
                .outerjoin(Image, Image.image_prompt_id == ImagePrompt.id)
                .where(ImagePrompt.variant_id == variant_id)
            ).all()
        return sorted(
            ((p, i) for p, i in rows), key=lambda row: (row[0].kind != "featured", row[0].position, row[0].id)
        )

    def media_paths(self) -> set[str]:
        """Every image path the store references."""
        with self._sessions() as session:
            return set(session.scalars(select(Image.path)))

    def write_regenerated_version(
        self, firing_id: int, run_id: str, variants: Sequence[Mapping[str, Any]], analysis: str
    ) -> int:
        """Write new A/B variants as the next version, set the article to draft, consume the firing and unlock,
        all in one transaction. Earlier versions (and the published one) stay untouched. Returns the version."""
        with self.transaction() as session:
            firing = session.get(TriggerFiring, firing_id)
            content = session.get(Content, firing.content_id) if firing else None
            if firing is None or content is None:
                raise LookupError(f"trigger firing {firing_id} or its article is gone; not writing")
            if content.regeneration_run_id != run_id:
                raise RuntimeError(f"content {content.id} is not locked by run {run_id}; not writing")
            note = (
                f"regenerated by trigger {firing.rule_key} ({firing.metric} {firing.comparison} "
                f"{firing.threshold:g}): {analysis[:1500]}"
            )
            version = _write_next_version(session, content, variants, actor=f"regeneration:{run_id}", note=note)
            content.regeneration_run_id = None
            firing.status, firing.consumed_at, firing.error = FiringStatus.CONSUMED, content.updated_at, None
            return version

    def add_content_version(self, content_id: int, variant: Mapping[str, Any], *, actor: str) -> int:
        """A forced rewrite: the next version (variant A) of an article, which goes back to `draft`.

        Earlier versions, and the published one, stay. Returns the new version number.
        """
        with self.transaction() as session:
            content = session.get(Content, content_id, with_for_update=True)
            if content is None:
                raise LookupError(f"no content row with id {content_id}")
            variants = [{"variant": "A", **variant}]
            return _write_next_version(session, content, variants, actor=actor, note="rewritten by a forced run")

    def add_next_version(
        self, content_id: int, expected_version: int, variants: Sequence[Mapping[str, Any]], *, actor: str, note: str
    ) -> int | None:
        """Write `variants` as the next version of an article (back to `draft`, history kept), unless its
        current version is no longer `expected_version` (someone wrote one meanwhile): then nothing, None."""
        with self.transaction() as session:
            content = session.get(Content, content_id, with_for_update=True)
            if content is None or content.regeneration_run_id is not None:
                return None  # gone, or a regeneration run owns it: never write under it
            latest = session.scalar(
                select(func.max(ContentVariant.version)).where(ContentVariant.content_id == content_id)
            )
            if (latest or 0) != expected_version:
                return None
            return _write_next_version(session, content, variants, actor=actor, note=note)

    def replace_image_prompts(self, site_id: int, variant_id: int, prompts: Iterable[Mapping[str, Any]]) -> int:
        """A forced redo: a variant's image prompts replaced (their image rows go with them) in one transaction."""
        values = [{"site_id": site_id, "variant_id": variant_id, "created_at": utcnow(), **p} for p in prompts]
        with self.transaction() as session:
            self._lock_site(session, site_id)  # two forced redos at once: the last one wins, never a mix
            session.execute(delete(ImagePrompt).where(ImagePrompt.variant_id == variant_id))
            if values:
                session.execute(table(ImagePrompt).insert(), values)
            return len(values)

    def replace_unwritten_ideas(self, site_id: int, cluster_id: int, ideas: Iterable[Mapping[str, Any]]) -> int:
        """A forced re-plan: a cluster's ideas that have no article yet are replaced by `ideas`; ideas with an
        article stay (new ideas whose key they already use are skipped). Returns ideas added."""
        with self.transaction() as session:
            self._lock_site(session, site_id)  # two forced re-plans at once: the last one wins, never both sets
            has_content = select(Content.id).where(Content.idea_id == Idea.id).exists()
            session.execute(delete(Idea).where(Idea.cluster_id == cluster_id, ~has_content))
            kept = set(session.scalars(select(Idea.key).where(Idea.cluster_id == cluster_id)))
            now = utcnow()
            values = [
                {"site_id": site_id, "cluster_id": cluster_id, "created_at": now, **idea}
                for idea in ideas
                if idea["key"] not in kept
            ]
            if values:
                session.execute(table(Idea).insert(), values)
            return len(values)


# The columns of a variant that a new version carries over (all but its ids, version and time).
_CARRIED_COLUMNS = (
    "variant title body_html meta_title meta_description primary_keyword secondary_keywords tags categories "
    "word_count provider model prompt_version"
).split()


def carried_variant(variant: ContentVariant) -> dict[str, Any]:
    """An unchanged variant carried into the next version: its values as `add_next_version` takes them."""
    return {column: getattr(variant, column) for column in _CARRIED_COLUMNS}


def _write_next_version(
    session: Session, content: Content, variants: Sequence[Mapping[str, Any]], *, actor: str, note: str
) -> int:
    """Add `variants` as the article's next version, send it back to `draft` and log why (caller's transaction).

    Earlier versions, including the published one, are never touched. Returns the new version number.
    """
    latest = session.scalar(select(func.max(ContentVariant.version)).where(ContentVariant.content_id == content.id))
    version = (latest or 0) + 1
    now = utcnow()
    for values in variants:
        session.add(ContentVariant(content_id=content.id, version=version, created_at=now, **values))
    single = variants[0]["variant"] if len(variants) == 1 else None
    session.add(
        ReviewEvent(
            content_id=content.id,
            from_status=content.status,
            to_status=ContentStatus.DRAFT,
            version=version,
            variant=single,
            note=note,
            actor=actor,
            created_at=now,
        )
    )
    content.status, content.updated_at = ContentStatus.DRAFT, now
    return version

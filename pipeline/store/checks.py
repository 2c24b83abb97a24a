"""Content checks: the reads the SEO checks on `content` need, one query per kind of row for a whole site."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from pipeline.models import Content, ContentVariant, Idea, Image, ImagePrompt
from pipeline.store.base import StoreBase, _current_variants


@dataclass(frozen=True)
class CheckedVariant:
    """One variant of an article's current version, with what the checks read from its article and idea."""

    variant: ContentVariant
    status: str
    idea_key: str
    estimated_word_count: int


@dataclass(frozen=True)
class CheckedImage:
    """One image prompt of a current variant, and the path of its image file (None when not generated)."""

    variant_id: int
    kind: str
    position: int
    alt_text: str
    path: str | None


class ChecksStore(StoreBase):
    """Read-only views of a site's current articles for `pipeline.content_checks`."""

    def variants_for_checks(self, site_id: int) -> list[CheckedVariant]:
        """Every variant of every article's current version of a site, with status and idea, in one query."""
        statement = (
            _current_variants()
            .add_columns(Content.status, Idea.key, Idea.estimated_word_count)
            .join(Idea, Idea.id == Content.idea_id)
            .where(Content.site_id == site_id)
            .order_by(ContentVariant.content_id, ContentVariant.variant)
        )
        with self._sessions() as session:
            rows = session.execute(statement).all()
        return [CheckedVariant(variant, status, key, estimate) for variant, status, key, estimate in rows]

    def images_for_checks(self, site_id: int) -> list[CheckedImage]:
        """Every image prompt of a site with its image file path (None when it has no image), in one query."""
        statement = (
            select(ImagePrompt.variant_id, ImagePrompt.kind, ImagePrompt.position, ImagePrompt.alt_text, Image.path)
            .outerjoin(Image, Image.image_prompt_id == ImagePrompt.id)
            .where(ImagePrompt.site_id == site_id)
            .order_by(ImagePrompt.variant_id, ImagePrompt.kind, ImagePrompt.position)
        )
        with self._sessions() as session:
            return [CheckedImage(*row) for row in session.execute(statement).all()]

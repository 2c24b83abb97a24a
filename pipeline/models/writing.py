"""Writing tables: articles, their versioned A/B variants, image prompts and image files."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from pipeline.models.base import Base, Generated, utcnow
from pipeline.models.statuses import ContentStatus


class Content(Base):
    """The article written for one idea; its text lives in versioned A/B `ContentVariant` rows."""

    __tablename__ = "content"
    # Published articles of a site in publication order: rules whose minimum age passed, resumable scans.
    __table_args__ = (
        Index("ix_content_site_status_published", "site_id", "status", "published_at", "id"),
        Index("ix_content_site_status_slot", "site_id", "status", "publish_slot"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"), index=True)
    idea_id: Mapped[int] = mapped_column(ForeignKey("ideas.id", ondelete="CASCADE"), unique=True)
    status: Mapped[str] = mapped_column(String(20), default=ContentStatus.DRAFT.value)
    published_at: Mapped[datetime | None]
    published_version: Mapped[int | None]
    published_variant: Mapped[str | None] = mapped_column(String(1))
    review_note: Mapped[str | None] = mapped_column(Text)
    # When the current approval happened (slots are handed out in approval order) and the calendar slot it
    # got: the article is due for publishing once the slot has come. A rejection clears both; publishing keeps
    # them (history, and the latest slot a site gave out).
    approved_at: Mapped[datetime | None]
    publish_slot: Mapped[datetime | None]
    # Set while a regeneration run owns this article, so two runs never rewrite it at once.
    regeneration_run_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    variants: Mapped[list[ContentVariant]] = relationship(
        back_populates="content", order_by="(ContentVariant.version.desc(), ContentVariant.variant)"
    )


class ContentVariant(Generated, Base):
    """One A or B variant of one version of an article. Versions are kept; the highest is current."""

    __tablename__ = "content_variants"
    __table_args__ = (UniqueConstraint("content_id", "version", "variant"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    content_id: Mapped[int] = mapped_column(ForeignKey("content.id", ondelete="CASCADE"), index=True)
    version: Mapped[int]
    variant: Mapped[str] = mapped_column(String(1))
    title: Mapped[str] = mapped_column(String(300))
    body_html: Mapped[str] = mapped_column(Text)
    meta_title: Mapped[str] = mapped_column(String(300))
    meta_description: Mapped[str] = mapped_column(String(400))
    primary_keyword: Mapped[str] = mapped_column(String(255))
    secondary_keywords: Mapped[list[str]] = mapped_column()
    tags: Mapped[list[str]] = mapped_column()
    categories: Mapped[list[str]] = mapped_column()
    word_count: Mapped[int]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    content: Mapped[Content] = relationship(back_populates="variants")


class ImagePrompt(Generated, Base):
    """An image prompt for a content variant: one `featured`, and `in_article` ones anchored to H2s."""

    __tablename__ = "image_prompts"
    __table_args__ = (UniqueConstraint("variant_id", "kind", "position"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"), index=True)
    variant_id: Mapped[int] = mapped_column(ForeignKey("content_variants.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(20))
    position: Mapped[int]
    anchor_heading: Mapped[str | None] = mapped_column(String(300))
    prompt: Mapped[str] = mapped_column(Text)
    alt_text: Mapped[str] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Image(Base):
    """A generated image file for one image prompt."""

    __tablename__ = "images"

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"), index=True)
    image_prompt_id: Mapped[int] = mapped_column(ForeignKey("image_prompts.id", ondelete="CASCADE"), unique=True)
    path: Mapped[str] = mapped_column(Text)
    provider: Mapped[str] = mapped_column(String(40))
    model: Mapped[str] = mapped_column(String(120))
    size: Mapped[str] = mapped_column(String(20))
    width: Mapped[int]
    height: Mapped[int]
    bytes: Mapped[int]
    checksum: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

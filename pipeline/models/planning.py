"""Planning tables: sites, their keywords, the clusters keywords are grouped into, and the ideas per cluster."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from pipeline.models.base import Base, Generated, utcnow
from pipeline.models.statuses import IdeaStatus

UNCLUSTERED_KEY = "unclustered"


class Site(Base):
    """A site the team publishes to; its slug is the Dagster partition key."""

    __tablename__ = "sites"

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    keywords_file: Mapped[str | None] = mapped_column(Text)
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Keyword(Base):
    """One search phrase of a site; `normalized` is its natural key within the site."""

    __tablename__ = "keywords"
    __table_args__ = (UniqueConstraint("site_id", "normalized"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"), index=True)
    keyword: Mapped[str] = mapped_column(String(255))
    normalized: Mapped[str] = mapped_column(String(255))
    volume: Mapped[int | None]
    difficulty: Mapped[int | None]
    # Every intent a tool gave, canonical and in a stable order: "informational, commercial".
    intent: Mapped[str | None] = mapped_column(String(64))
    extra: Mapped[dict[str, Any]] = mapped_column(default=dict)
    cluster_id: Mapped[int | None] = mapped_column(ForeignKey("clusters.id", ondelete="SET NULL"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Cluster(Base):
    """A topic cluster. Membership lives on `Keyword.cluster_id`, so a keyword is in exactly one.

    `key` is content-derived and never changes once created; the key `unclustered` is the explicit,
    visible bucket for keywords that fit no cluster. `name` stays empty until the model names it.
    """

    __tablename__ = "clusters"
    __table_args__ = (UniqueConstraint("site_id", "key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"), index=True)
    key: Mapped[str] = mapped_column(String(64))
    name: Mapped[str | None] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    keyword_count: Mapped[int] = mapped_column(default=0)
    total_volume: Mapped[int] = mapped_column(default=0)
    mean_difficulty: Mapped[float | None]
    dominant_intent: Mapped[str | None] = mapped_column(String(20))
    top_keywords: Mapped[list[str]] = mapped_column(default=list)
    provider: Mapped[str | None] = mapped_column(String(40))
    model: Mapped[str | None] = mapped_column(String(120))
    prompt_version: Mapped[str | None] = mapped_column(String(80))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    keywords: Mapped[list[Keyword]] = relationship(viewonly=True)


class Idea(Generated, Base):
    """An article idea for a cluster; `key` is the slug of its title, unique within the cluster."""

    __tablename__ = "ideas"
    __table_args__ = (UniqueConstraint("cluster_id", "key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"), index=True)
    cluster_id: Mapped[int] = mapped_column(ForeignKey("clusters.id", ondelete="CASCADE"), index=True)
    key: Mapped[str] = mapped_column(String(120))
    title: Mapped[str] = mapped_column(String(300))
    angle: Mapped[str] = mapped_column(Text)
    content_type: Mapped[str] = mapped_column(String(30))
    outline: Mapped[list[str]] = mapped_column()
    target_keywords: Mapped[list[str]] = mapped_column()
    estimated_word_count: Mapped[int]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    status: Mapped[str] = mapped_column(String(20), default=IdeaStatus.APPROVED.value, index=True)
    reviewed_by: Mapped[str | None] = mapped_column(String(120))
    reviewed_at: Mapped[datetime | None]
    review_note: Mapped[str | None] = mapped_column(Text)

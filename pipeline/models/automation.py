"""Automation tables: post metrics, trigger rules and firings, sensor states and rejected drop-folder files."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from pipeline.models.base import Base, utcnow
from pipeline.models.statuses import FiringStatus


class PostMetric(Base):
    """One observed performance number of one variant of a published article (clicks, CTR, likes...)."""

    __tablename__ = "post_metrics"
    __table_args__ = (UniqueConstraint("content_id", "variant", "version", "metric", "observed_at", "source"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    content_id: Mapped[int] = mapped_column(ForeignKey("content.id", ondelete="CASCADE"), index=True)
    variant: Mapped[str] = mapped_column(String(1))
    version: Mapped[int]
    metric: Mapped[str] = mapped_column(String(60))
    value: Mapped[float]
    observed_at: Mapped[datetime]  # an instant, or the (exclusive) end of the period the value covers
    period_start: Mapped[datetime | None]  # set for values over a period (a Search Console date range)
    source: Mapped[str] = mapped_column(String(120))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class TriggerRule(Base):
    """When to regenerate: `metric comparison threshold`, at least `min_age_hours` after publishing.

    `content_id` NULL makes it a default for every published article of the site.
    """

    __tablename__ = "trigger_rules"
    __table_args__ = (
        Index("ix_trigger_rules_site_ages", "site_id", "min_age_hours"),
        Index("ix_trigger_rules_site_content", "site_id", "content_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"), index=True)
    content_id: Mapped[int | None] = mapped_column(ForeignKey("content.id", ondelete="CASCADE"), index=True)
    metric: Mapped[str] = mapped_column(String(60))
    comparison: Mapped[str] = mapped_column(String(2))
    threshold: Mapped[float]
    min_age_hours: Mapped[float] = mapped_column(default=0.0)
    instruction: Mapped[str] = mapped_column(Text, default="")
    enabled: Mapped[bool] = mapped_column(default=True)
    # `value` compares the newest value; trend kinds compare periods of `window_days` (pipeline.triggers).
    kind: Mapped[str] = mapped_column(String(20), default="value")
    window_days: Mapped[int | None]
    min_volume: Mapped[float] = mapped_column(default=0.0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class TriggerFiring(Base):
    """A rule that fired for one published version of an article; the record that makes it fire once.

    `status`: requested -> running -> consumed, or failed (the rule is armed again). The unique key
    means a rule fires at most once per published version, whatever the sensor or the Dagster instance.
    """

    __tablename__ = "trigger_firings"
    __table_args__ = (
        UniqueConstraint("content_id", "rule_key", "published_version"),
        Index("ix_trigger_firings_status_changed_at", "status", "changed_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"), index=True)
    content_id: Mapped[int] = mapped_column(ForeignKey("content.id", ondelete="CASCADE"), index=True)
    rule_key: Mapped[str] = mapped_column(String(80))
    published_version: Mapped[int]
    metric: Mapped[str] = mapped_column(String(60))
    comparison: Mapped[str] = mapped_column(String(2))
    threshold: Mapped[float]
    instruction: Mapped[str] = mapped_column(Text, default="")
    triggered_variants: Mapped[list[str]] = mapped_column()
    observed: Mapped[dict[str, Any]] = mapped_column()
    status: Mapped[str] = mapped_column(String(20), default=FiringStatus.REQUESTED.value)
    attempts: Mapped[int] = mapped_column(default=1)
    run_id: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text)
    fired_at: Mapped[datetime] = mapped_column(default=utcnow)
    consumed_at: Mapped[datetime | None]
    # When `status` last changed (any update sets it): failed firings since a tick are found by index.
    changed_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class RejectedFile(Base):
    """A file dropped in a watched folder (`inbox`, `metrics`) that could not be used, and why.

    Keyed on (folder, name, fingerprint): the content hash of a readable file, or what the entry is
    otherwise (a folder, a FIFO, a dangling link), so a file is recorded once per content however often it
    is seen. `resolved_at` is set when that content is no longer in the folder (fixed, replaced or removed).
    """

    __tablename__ = "rejected_files"
    __table_args__ = (UniqueConstraint("folder", "name", "fingerprint"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    folder: Mapped[str] = mapped_column(String(20))
    name: Mapped[str] = mapped_column(String(1024))
    path: Mapped[str] = mapped_column(Text)
    fingerprint: Mapped[str] = mapped_column(String(80))
    problem: Mapped[str] = mapped_column(Text)
    first_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column(index=True)


class SensorState(Base):
    """What a sensor recorded at its last tick (its position and backlog), for `pipeline status`.

    Dagster keeps the sensor's cursor; this copy only informs people and tools without access to Dagster.
    """

    __tablename__ = "sensor_states"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    state: Mapped[dict[str, Any]] = mapped_column()
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

"""Experiment tables: time-split A/B tests and the periods in which each variant is live."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from pipeline.models.base import Base, utcnow
from pipeline.models.statuses import ExperimentStatus


class Experiment(Base):
    """A time-split A/B test of one version of a published article (`pipeline.experiments`).

    The article's one URL shows A and B in turn, in the periods of `experiment_periods`; every metric
    row is attributed to the variant that was live on its dates. Decided once: `winner` and `decision`
    (the counts, the test statistic, the confidence) are written with the status change.
    """

    __tablename__ = "experiments"
    __table_args__ = (
        UniqueConstraint("content_id", "version"),
        Index("ix_experiments_site_status", "site_id", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"), index=True)
    content_id: Mapped[int] = mapped_column(ForeignKey("content.id", ondelete="CASCADE"), index=True)
    version: Mapped[int]
    control: Mapped[str] = mapped_column(String(1))  # the variant the editor approved, live first
    status: Mapped[str] = mapped_column(String(20), default=ExperimentStatus.RUNNING.value)
    period_days: Mapped[int]
    max_days: Mapped[int]
    min_impressions: Mapped[int]
    confidence: Mapped[float]
    timezone: Mapped[str] = mapped_column(String(64))
    starts_at: Mapped[datetime]
    ends_at: Mapped[datetime]  # planned end: starts_at + max_days
    looks: Mapped[int] = mapped_column(default=0)  # completed cycles the decision rule has looked at
    winner: Mapped[str | None] = mapped_column(String(1))
    decided_at: Mapped[datetime | None]
    decision: Mapped[dict[str, Any] | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ExperimentPeriod(Base):
    """One period of an experiment: which variant is live from `starts_at` to `ends_at` (exclusive), and when
    the publishing path actually switched the live article to it (`switched_at`, None until then)."""

    __tablename__ = "experiment_periods"
    __table_args__ = (UniqueConstraint("experiment_id", "number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiments.id", ondelete="CASCADE"), index=True)
    number: Mapped[int]
    variant: Mapped[str] = mapped_column(String(1))
    starts_at: Mapped[datetime]
    ends_at: Mapped[datetime]
    switched_at: Mapped[datetime | None]

"""Experiments: time-split A/B tests of published articles, and which variant of an article was live when."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from pipeline.models import ContentStatus, Experiment, ExperimentPeriod, ReviewEvent, as_utc
from pipeline.store.base import StoreBase


@dataclass(frozen=True)
class LiveSpan:
    """A stretch of time during which one variant of one version of an article was live on its targets.

    Spans come from the review history: every event that made a variant live (`-> published`: the first
    publication, a new version published, an experiment switching A and B) starts one and ends the
    previous one. `ends_at` is None for the variant live now. A regeneration moving the article back to
    `draft` does not end a span: the site keeps showing the published variant until the next publication.
    """

    starts_at: datetime
    ends_at: datetime | None
    version: int
    variant: str
    actor: str

    def covers(self, start: datetime, end: datetime) -> bool:
        """Whether `[start, end)` lies within this span."""
        return self.starts_at <= start and (self.ends_at is None or end <= self.ends_at)


class ExperimentsStore(StoreBase):
    """Experiments and their periods, and the live-variant history the metric attribution reads."""

    def live_spans(self, content_ids: Iterable[int]) -> dict[int, list[LiveSpan]]:
        """For each article, its live spans oldest first (articles never published: no entry)."""
        ids = list(dict.fromkeys(content_ids))
        if not ids:
            return {}
        statement = (
            select(
                ReviewEvent.content_id,
                ReviewEvent.created_at,
                ReviewEvent.version,
                ReviewEvent.variant,
                ReviewEvent.actor,
            )
            .where(ReviewEvent.content_id.in_(ids), ReviewEvent.to_status == ContentStatus.PUBLISHED)
            .order_by(ReviewEvent.content_id, ReviewEvent.created_at, ReviewEvent.id)
        )
        with self._sessions() as session:
            rows = session.execute(statement).all()
        spans: dict[int, list[LiveSpan]] = {}
        for content_id, created_at, version, variant, actor in rows:
            if version is None or variant is None:
                continue  # a transition without a variant never made one live
            own = spans.setdefault(content_id, [])
            start = as_utc(created_at)
            if own:
                last = own[-1]
                own[-1] = LiveSpan(last.starts_at, start, last.version, last.variant, last.actor)
            own.append(LiveSpan(start, None, version, variant, actor))
        return spans

    def experiment_of(self, content_id: int, version: int | None = None) -> Experiment | None:
        """The article's experiment for `version` (default: its newest experiment)."""
        statement = select(Experiment).where(Experiment.content_id == content_id)
        if version is not None:
            statement = statement.where(Experiment.version == version)
        with self._sessions() as session:
            return session.scalar(statement.order_by(Experiment.version.desc()).limit(1))

    def experiment_periods(self, experiment_id: int) -> list[ExperimentPeriod]:
        """An experiment's periods in order."""
        with self._sessions() as session:
            return list(
                session.scalars(
                    select(ExperimentPeriod)
                    .where(ExperimentPeriod.experiment_id == experiment_id)
                    .order_by(ExperimentPeriod.number)
                )
            )

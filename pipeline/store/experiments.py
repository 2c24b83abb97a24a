"""Experiments: time-split A/B tests of published articles, and which variant of an article was live when."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, or_, select, update

from pipeline.models import (
    Content,
    ContentStatus,
    Experiment,
    ExperimentPeriod,
    ExperimentStatus,
    PostMetric,
    ReviewEvent,
    Site,
    as_utc,
)
from pipeline.store.base import StoreBase, affected
from pipeline.store.trigger_scan import serialise_trigger_inputs

# The metrics a CTR test counts.
CTR_METRICS = ("clicks", "impressions")


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

    def content_in_running_experiments(self, content_ids: Iterable[int]) -> set[int]:
        """Those of `content_ids` whose published version is being A/B tested now."""
        ids = list(dict.fromkeys(content_ids))
        if not ids:
            return set()
        statement = select(Experiment.content_id).where(
            Experiment.content_id.in_(ids), Experiment.status == ExperimentStatus.RUNNING
        )
        with self._sessions() as session:
            return set(session.scalars(statement))

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

    def create_experiment(
        self,
        values: dict[str, Any],
        periods: Sequence[tuple[str, datetime, datetime]],
    ) -> tuple[Experiment, bool]:
        """The experiment of (`content_id`, `version`) in `values`, created with its `periods` (variant,
        start, end; numbered from 1) unless it exists; returns it and whether this call created it."""
        with self.transaction() as session:
            insert = self._insert(session)
            created = affected(
                session.execute(
                    insert(Experiment)
                    .values(**values)
                    .on_conflict_do_nothing(index_elements=[Experiment.content_id, Experiment.version])
                )
            )
            experiment = session.scalars(
                select(Experiment).where(
                    Experiment.content_id == values["content_id"], Experiment.version == values["version"]
                )
            ).one()
            if created:
                session.add_all(
                    ExperimentPeriod(experiment_id=experiment.id, number=n, variant=v, starts_at=s, ends_at=e)
                    for n, (v, s, e) in enumerate(periods, start=1)
                )
            return experiment, bool(created)

    def experiments_to_advance(self, site_id: int) -> list[Experiment]:
        """The site's running experiments, and decided ones whose article (still published at the tested
        version) does not show the final variant yet (the winner, or the control), oldest first."""
        final = func.coalesce(Experiment.winner, Experiment.control)
        statement = (
            select(Experiment)
            .join(Content, Content.id == Experiment.content_id)
            .where(
                Experiment.site_id == site_id,
                or_(
                    Experiment.status == ExperimentStatus.RUNNING,
                    and_(
                        Experiment.status.in_([ExperimentStatus.DECIDED, ExperimentStatus.NO_DIFFERENCE]),
                        Content.status == ContentStatus.PUBLISHED,
                        Content.published_version == Experiment.version,
                        Content.published_variant != final,
                    ),
                ),
            )
            .order_by(Experiment.id)
        )
        with self._sessions() as session:
            return list(session.scalars(statement))

    def sites_with_running_experiments(self) -> list[str]:
        """Slugs of the sites that have a running experiment, sorted."""
        statement = (
            select(Site.slug)
            .join(Experiment, Experiment.site_id == Site.id)
            .where(Experiment.status == ExperimentStatus.RUNNING)
            .distinct()
            .order_by(Site.slug)
        )
        with self._sessions() as session:
            return list(session.scalars(statement))

    def record_variant_switch(
        self, content_id: int, version: int, variant: str, *, actor: str, at: datetime, note: str | None = None
    ) -> bool:
        """`published -> published` with another variant of the published version live, and its review event
        (dated `at`, so the live spans start at the switch), in one transaction.

        A compare-and-set: only while the article is published at `version`, shows another variant and is
        not being regenerated; returns False, writing nothing, otherwise.
        """
        with self.transaction() as session:
            serialise_trigger_inputs(session)  # the metric sensor reads publications by id
            moved = affected(
                session.execute(
                    update(Content)
                    .where(
                        Content.id == content_id,
                        Content.status == ContentStatus.PUBLISHED,
                        Content.published_version == version,
                        Content.published_variant != variant,
                        Content.regeneration_run_id.is_(None),
                    )
                    .values(published_variant=variant, updated_at=at)
                )
            )
            if moved != 1:
                return False
            session.add(
                ReviewEvent(
                    content_id=content_id,
                    from_status=ContentStatus.PUBLISHED,
                    to_status=ContentStatus.PUBLISHED,
                    version=version,
                    variant=variant,
                    note=note,
                    actor=actor,
                    created_at=at,
                )
            )
            return True

    def record_period_switch(self, period_id: int, at: datetime) -> bool:
        """When the period's variant went live (`switched_at`), set once."""
        with self.transaction() as session:
            statement = (
                update(ExperimentPeriod)
                .where(ExperimentPeriod.id == period_id, ExperimentPeriod.switched_at.is_(None))
                .values(switched_at=at)
            )
            return affected(session.execute(statement)) == 1

    def record_look(self, experiment_id: int, look: int, at: datetime) -> bool:
        """A look that decided nothing: `looks` moves up to `look` while the experiment is still running."""
        with self.transaction() as session:
            statement = (
                update(Experiment)
                .where(
                    Experiment.id == experiment_id,
                    Experiment.status == ExperimentStatus.RUNNING,
                    Experiment.looks < look,
                )
                .values(looks=look, updated_at=at)
            )
            return affected(session.execute(statement)) == 1

    def decide_experiment(
        self,
        experiment_id: int,
        status: ExperimentStatus,
        *,
        winner: str | None,
        look: int,
        decision: dict[str, Any],
        at: datetime,
    ) -> bool:
        """Close a running experiment once (`decided`, `no_difference` or `stopped`) with its numbers.

        A compare-and-set on status `running`: a second decision (another run, a re-run) writes nothing and
        returns False.
        """
        with self.transaction() as session:
            statement = (
                update(Experiment)
                .where(Experiment.id == experiment_id, Experiment.status == ExperimentStatus.RUNNING)
                .values(status=status, winner=winner, looks=look, decision=decision, decided_at=at, updated_at=at)
            )
            return affected(session.execute(statement)) == 1

    def experiment_metric_sums(
        self, experiment: Experiment, through_period: int
    ) -> dict[tuple[int, str], tuple[str, float, int]]:
        """Clicks and impressions of the experiment's version per period (up to `through_period`), in one
        grouped query: (period number, metric) -> (variant, sum of values, rows).

        A row counts for a period when its variant is the period's and its dates lie inside the period: a
        value over `[period_start, observed_at)` within `[starts_at, ends_at)`, or an instantaneous one
        (`period_start` NULL) observed inside it. A row spanning two periods belongs to neither.
        """
        period = ExperimentPeriod
        inside = or_(
            and_(
                PostMetric.period_start.is_not(None),
                PostMetric.period_start >= period.starts_at,
                PostMetric.observed_at <= period.ends_at,
                PostMetric.period_start < PostMetric.observed_at,
            ),
            and_(
                PostMetric.period_start.is_(None),
                PostMetric.observed_at >= period.starts_at,
                PostMetric.observed_at < period.ends_at,
            ),
        )
        statement = (
            select(period.number, PostMetric.metric, period.variant, func.sum(PostMetric.value), func.count())
            .select_from(PostMetric)
            .join(
                period,
                and_(
                    period.experiment_id == experiment.id,
                    period.variant == PostMetric.variant,
                    period.number <= through_period,
                    inside,
                ),
            )
            .where(
                PostMetric.content_id == experiment.content_id,
                PostMetric.version == experiment.version,
                PostMetric.metric.in_(CTR_METRICS),
            )
            .group_by(period.number, PostMetric.metric, period.variant)
        )
        with self._sessions() as session:
            return {
                (int(number), str(metric)): (str(variant), float(total or 0.0), int(rows))
                for number, metric, variant, total, rows in session.execute(statement)
            }

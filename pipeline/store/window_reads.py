"""Metric window reads of the trigger evaluation: when each article's metric rows begin and end, and the
totals per variant and metric of its published version over windows of days, for a batch in a few queries.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import DateTime, Integer, String, and_, column, func, or_, select, values
from sqlalchemy.orm import aliased

from pipeline.metric_windows import WEIGHTED_BY, Totals, Window
from pipeline.models import Content, PostMetric, as_utc
from pipeline.store.base import _IN_CHUNK, StoreBase, _chunks

# `{(content_id, window name): {variant: {metric: totals}}}`: what `window_totals` reads.
WindowTotals = dict[tuple[int, str], dict[str, dict[str, Totals]]]
_WINDOWS_CHUNK = 1000  # windows per query (4 bound parameters each)


class MetricWindowsStore(StoreBase):
    """Reads of metrics over windows of days, for the window rules of trigger evaluation."""

    def metric_spans(self, content_ids: Iterable[int]) -> dict[int, tuple[datetime, datetime]]:
        """When the metric rows of each article's published version begin (the earliest period start or
        instant) and end (the newest `observed_at`): one grouped query per chunk; articles without rows absent."""
        spans: dict[int, tuple[datetime, datetime]] = {}
        start = func.coalesce(PostMetric.period_start, PostMetric.observed_at)
        with self._sessions() as session:
            for chunk in _chunks(sorted(set(content_ids)), _IN_CHUNK):
                rows = session.execute(
                    select(PostMetric.content_id, func.min(start), func.max(PostMetric.observed_at))
                    .join(
                        Content,
                        (Content.id == PostMetric.content_id) & (Content.published_version == PostMetric.version),
                    )
                    .where(PostMetric.content_id.in_(chunk))
                    .group_by(PostMetric.content_id)
                )
                for content_id, first, last in rows:
                    spans[int(content_id)] = (_moment(first), _moment(last))
        return spans

    def window_totals(self, windows: Iterable[tuple[int, Window]]) -> WindowTotals:
        """The totals of every metric per variant of the published version of each `(article, window)`:
        sums, row counts, the impressions-weighted sums of weighted means, the span of the rows. One
        grouped query per chunk of windows (a table of windows joined to the rows), not one per article."""
        found: WindowTotals = {}
        rows_of = aliased(PostMetric)
        weights = aliased(PostMetric)
        start = func.coalesce(rows_of.period_start, rows_of.observed_at)
        same_rows = and_(
            or_(*(and_(rows_of.metric == metric, weights.metric == by) for metric, by in WEIGHTED_BY.items())),
            weights.content_id == rows_of.content_id,
            weights.variant == rows_of.variant,
            weights.version == rows_of.version,
            weights.observed_at == rows_of.observed_at,
            weights.source == rows_of.source,
            or_(
                weights.period_start == rows_of.period_start,
                and_(weights.period_start.is_(None), rows_of.period_start.is_(None)),
            ),
        )
        with self._sessions() as session:
            for chunk in _chunks(list(windows), _WINDOWS_CHUNK):
                table_of = (
                    values(
                        column("content_id", Integer),
                        column("name", String),
                        column("starts", DateTime(timezone=True)),
                        column("ends", DateTime(timezone=True)),
                        name="windows",
                    )
                    .data([(content_id, w.name, w.start, w.end) for content_id, w in chunk])
                    .cte("windows")
                )
                statement = (
                    select(
                        table_of.c.content_id,
                        table_of.c.name,
                        rows_of.variant,
                        rows_of.metric,
                        func.sum(rows_of.value),
                        func.count(),
                        func.sum(rows_of.value * weights.value),
                        func.sum(weights.value),
                        func.min(start),
                        func.max(rows_of.observed_at),
                    )
                    .select_from(table_of)
                    .join(rows_of, rows_of.content_id == table_of.c.content_id)
                    .join(
                        Content,
                        (Content.id == rows_of.content_id) & (Content.published_version == rows_of.version),
                    )
                    .outerjoin(weights, same_rows)
                    .where(
                        start >= table_of.c.starts,
                        rows_of.observed_at > table_of.c.starts,
                        rows_of.observed_at <= table_of.c.ends,
                    )
                    .group_by(table_of.c.content_id, table_of.c.name, rows_of.variant, rows_of.metric)
                )
                for content_id, name, variant, metric, total, count, weighted, weight, first, last in session.execute(
                    statement
                ):
                    found.setdefault((int(content_id), str(name)), {}).setdefault(variant, {})[metric] = Totals(
                        float(total or 0.0),
                        int(count),
                        float(weighted or 0.0),
                        float(weight or 0.0),
                        _moment(first),
                        _moment(last),
                    )
        return found


def _moment(value: datetime | str) -> datetime:
    # SQLite hands aggregates of datetimes back as their stored text.
    return as_utc(datetime.fromisoformat(value) if isinstance(value, str) else value)

"""Metrics over windows of days: which metrics add up, which are means, and a window's value from its rows.

The one place that knows the kind of each metric:

- count metrics (`clicks`, `impressions`, `views`, `engaged_sessions`...) add up over a window;
- `position` is a mean weighted by the impressions of the same rows (a plain mean when there are none);
- `ctr` is recomputed as the window's clicks / impressions (the mean of the `ctr` rows when either is missing);
- any other metric (a rate, a duration) is the plain mean of its rows.

A window is `(start, end]` in time: a value over a period `[period_start, observed_at)` counts in it when the
period lies inside it (`period_start >= start`, `observed_at <= end`), an instantaneous value (no
`period_start`) when `start < observed_at <= end`. Windows end at the newest data of an article (exports
lag), so "the last 28 days" are the last 28 days with data.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

COUNT_METRICS = frozenset(
    {
        "clicks",
        "impressions",
        "views",
        "pageviews",
        "sessions",
        "engaged_sessions",
        "users",
        "new_users",
        "conversions",
        "likes",
        "shares",
        "comments",
    }
)
WEIGHTED_BY = {"position": "impressions"}  # metric -> the count metric that weights its mean
RATIOS = {"ctr": ("clicks", "impressions")}  # metric -> (numerator, denominator) counts, recomputed per window
VOLUME_METRIC = "impressions"  # the volume of a metric that is not a count (min_volume is measured on it)
# Daily exports: a window's first row may start up to a day after the window does and still cover it.
COVERAGE_SLACK = timedelta(days=1)


def is_count(metric: str) -> bool:
    """Whether `metric` adds up over time (clicks, impressions...)."""
    return metric in COUNT_METRICS


def volume_metric(metric: str) -> str:
    """The metric whose window total is `metric`'s volume (the noise guard `min_volume` reads): the metric
    itself for a count, impressions for position, CTR and the other means."""
    return metric if is_count(metric) else VOLUME_METRIC


def inputs(metric: str) -> tuple[str, ...]:
    """The stored metrics a window value of `metric` is computed from."""
    return RATIOS.get(metric, (metric,))


@dataclass(frozen=True)
class Window:
    """`(start, end]` in time (see the module docstring), named for the evidence (`current`, `previous`...)."""

    name: str
    start: datetime
    end: datetime

    @classmethod
    def ending(cls, name: str, end: datetime, days: int) -> Window:
        """The `days` days up to `end`."""
        return cls(name, end - timedelta(days=days), end)

    def as_dict(self) -> dict[str, str]:
        """Its dates, JSON-ready."""
        return {"start": self.start.isoformat(), "end": self.end.isoformat()}


@dataclass(frozen=True)
class Totals:
    """The rows of one metric (of one variant, or of both together) inside one window."""

    total: float
    rows: int
    weighted: float  # sum of value x weight (position x impressions of the same rows)
    weight: float  # sum of the weights
    first_start: datetime  # the earliest row's start (period_start, or observed_at of an instant)
    last_end: datetime  # the newest row's observed_at

    def merge(self, other: Totals) -> Totals:
        """Both sets of rows together (variants A and B: the article's URL)."""
        return Totals(
            self.total + other.total,
            self.rows + other.rows,
            self.weighted + other.weighted,
            self.weight + other.weight,
            min(self.first_start, other.first_start),
            max(self.last_end, other.last_end),
        )

    def covers(self, window: Window) -> bool:
        """Whether these rows span the window (no value from half a window)."""
        return self.first_start <= window.start + COVERAGE_SLACK and self.last_end >= window.end - COVERAGE_SLACK


MetricTotals = Mapping[str, Totals]  # metric -> totals in one window


def together(per_variant: Mapping[str, MetricTotals]) -> dict[str, Totals]:
    """The totals of all variants merged, per metric."""
    merged: dict[str, Totals] = {}
    for metrics in per_variant.values():
        for metric, totals in metrics.items():
            merged[metric] = merged[metric].merge(totals) if metric in merged else totals
    return merged


def value(metric: str, totals: MetricTotals) -> float | None:
    """`metric` over a window from the totals of its metrics there; None without rows (or impressions, for CTR)."""
    if metric in RATIOS:
        clicks, impressions = (totals.get(name) for name in RATIOS[metric])
        if clicks is not None and impressions is not None:
            return clicks.total / impressions.total if impressions.total else None
    own = totals.get(metric)
    if own is None or not own.rows:
        return None
    if is_count(metric):
        return own.total
    if metric in WEIGHTED_BY and own.weight > 0:
        return own.weighted / own.weight
    return own.total / own.rows


def volume(metric: str, totals: MetricTotals) -> float:
    """`metric`'s volume over a window (0 without rows)."""
    counted = totals.get(volume_metric(metric))
    return counted.total if counted else 0.0


def covered(metric: str, totals: MetricTotals, window: Window) -> bool:
    """Whether the rows `metric`'s value and volume come from span `window`."""
    needed = {*_stored_inputs(metric, totals), volume_metric(metric)}
    return all(name in totals and totals[name].covers(window) for name in needed)


def values(totals: MetricTotals, metrics: Iterable[str] | None = None) -> dict[str, float]:
    """Every metric's window value (those with one), plus CTR when clicks and impressions are there."""
    names = set(metrics if metrics is not None else totals)
    if metrics is None and all(name in totals for name in RATIOS["ctr"]):
        names.add("ctr")
    found = {name: value(name, totals) for name in sorted(names)}
    return {name: round(v, 6) for name, v in found.items() if v is not None}


def evidence(window: Window, metric: str, per_variant: Mapping[str, MetricTotals]) -> dict[str, Any]:
    """A window's dates, the metric's value per variant and together, and its volume (JSON-ready)."""
    both = together(per_variant)
    shown = value(metric, both)
    return {
        **window.as_dict(),
        "value": None if shown is None else round(shown, 6),
        "volume": volume(metric, both),
        "variants": {v: values(t, [metric]).get(metric) for v, t in sorted(per_variant.items())},
    }


def _stored_inputs(metric: str, totals: MetricTotals) -> tuple[str, ...]:
    wanted = inputs(metric)
    return wanted if all(name in totals for name in wanted) else (metric,)

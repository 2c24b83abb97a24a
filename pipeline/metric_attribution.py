"""Export rows to metric rows: which article a row's page is, and which version and variant were live on its days.

A row covers whole days, `[first, last]` inclusive, in the site's `ab_test.timezone` (Search Console's
day is Pacific Time): it is stored as the period `[period_start, observed_at)`, local midnight of its first
day to local midnight after its last, in UTC. It belongs to the live span (`Store.live_spans`) covering that
period; an article shows one variant at a time, so the span gives the variant as well as the version.

- A switch (or publication) up to `ab_test.switch_tolerance_minutes` after a local midnight counts as at
  that midnight: the day it starts belongs to the variant it made live.
- A row over a switch between different variants or versions is **rejected** (listed in the result, not
  imported; the other rows are): its numbers mix two variants. Export one row per day instead.
- A row ending at or before the first publication, for an article never published, in days not over
  yet, or whose page is the address of two articles is an **error**: the file is not imported.
- A row starting before the first publication and ending after it belongs to the first span (nothing else
  was live). Rows of a page not matching any article are counted as unmatched and reported.
- Rows of one article and the same days (the same page written two ways) are merged: counts added,
  position weighted by impressions, engagement time by active users, CTR = clicks / impressions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo

from pipeline.keywords import Problem
from pipeline.metric_exports import AVERAGES, DateRange, Export, ExportRow
from pipeline.models import Site
from pipeline.sites import SiteSettingsError, site_settings
from pipeline.store import Store
from pipeline.store.experiments import LiveSpan
from pipeline.url_mapping import AmbiguousUrl, url_index, url_key

FUTURE_SLACK = timedelta(minutes=5)  # clocks of the exporting system and of this one may differ a little


class SpansSwitch(ValueError):
    """The period covers a switch from one live variant (or version) to another."""

    def __init__(self, before: LiveSpan, after: LiveSpan):
        self.before, self.after = before, after
        super().__init__(f"switch at {after.starts_at.isoformat()}")


class BeforePublication(ValueError):
    """The period ends before the article was first published (`first`: None if never)."""

    def __init__(self, first: datetime | None):
        self.first = first
        super().__init__("before the first publication")


@dataclass(frozen=True)
class SiteDay:
    """Where a site's day starts and how late a switch may be and still count as at midnight."""

    zone: ZoneInfo
    tolerance: timedelta

    def bounds(self, days: DateRange) -> tuple[datetime, datetime]:
        """The instants `[start, end)` of inclusive local days, in UTC."""
        start = datetime.combine(days.first, time(), tzinfo=self.zone).astimezone(UTC)
        end = datetime.combine(days.last + timedelta(days=1), time(), tzinfo=self.zone).astimezone(UTC)
        return start, end

    def effective(self, moment: datetime) -> datetime:
        """`moment`, or the local midnight before it when it is at most `tolerance` later."""
        midnight = datetime.combine(moment.astimezone(self.zone).date(), time(), tzinfo=self.zone).astimezone(UTC)
        return midnight if moment - midnight <= self.tolerance else moment


def live_over(spans: Sequence[LiveSpan], day: SiteDay, start: datetime, end: datetime) -> LiveSpan:
    """The span live over `[start, end)`; `SpansSwitch` or `BeforePublication` when there is not exactly one."""
    starts = [day.effective(span.starts_at) for span in spans]
    if not spans or end <= starts[0]:
        raise BeforePublication(starts[0] if spans else None)
    overlapping = []
    for i, span in enumerate(spans):
        until = starts[i + 1] if i + 1 < len(spans) else None
        if starts[i] < end and (until is None or (until > start and until > starts[i])):
            overlapping.append(span)
    for before, after in pairwise(overlapping):
        if (before.version, before.variant) != (after.version, after.variant):
            raise SpansSwitch(before, after)
    return overlapping[0]


@dataclass
class Attribution:
    """Metric rows ready to add, pages matching no article (address -> rows), rejected rows and errors."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    unmatched: dict[str, int] = field(default_factory=dict)
    rejected: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def attribute_export(store: Store, export: Export, sites: Sequence[Site], source: str, now: datetime) -> Attribution:
    """The metric rows of `export` for the articles of `sites`, attributed to the variant live on their days."""
    result = Attribution()
    index = url_index(
        store.article_addresses(site.id for site in sites),
        {site.id: _base_url(site) for site in sites},
    )
    days_of = {site.id: _site_day(site) for site in sites}
    groups: dict[tuple[int, DateRange], list[ExportRow]] = {}
    for row in export.rows:
        try:
            content_id = index.article(row.address)
        except AmbiguousUrl as error:
            hint = (
                "check the sites' base_url and the URLs their publications recorded"
                if url_key(row.address) is not None
                else "a path names pages of every site looked at: import with --site"
            )
            result.problems.append(Problem(row.line, export.address_column, f"{error}; {hint}"))
            continue
        if content_id is None:
            result.unmatched[row.address] = result.unmatched.get(row.address, 0) + 1
            continue
        groups.setdefault((content_id, row.days), []).append(row)
    spans = store.live_spans(content_id for content_id, _ in groups)
    lines: list[tuple[int, str]] = []  # of each metric row: its line and what it is, for messages
    for (content_id, days), rows in groups.items():
        site_id = index.site_of[content_id]
        day = days_of[site_id]
        line = rows[0].line
        if isinstance(day, str):
            result.problems.append(Problem(line, export.address_column, day))
            continue
        where = f"article {content_id} ({rows[0].address}) over {days}"
        try:
            start, end = day.bounds(days)
        except OverflowError:
            result.problems.append(Problem(line, None, f"{where}: the days are out of range"))
            continue
        if end > now + FUTURE_SLACK:
            result.problems.append(
                Problem(line, None, f"{where}: the last day is not over yet ({_when(now)}); export complete days only")
            )
            continue
        try:
            span = live_over(spans.get(content_id, []), day, start, end)
        except BeforePublication as error:
            message = (
                f"{where}: the article has never been published; metrics are only for published ones"
                if error.first is None
                else f"{where}: ends before the article was first published ({_when(error.first)})"
            )
            result.problems.append(Problem(line, None, message))
            continue
        except SpansSwitch as error:
            result.rejected.append(f"row {line}: {where} {_switch(error, day)}")
            continue
        for metric, value in merged(rows).items():
            lines.append((line, where))
            result.rows.append(
                {
                    "content_id": content_id,
                    "variant": span.variant,
                    "version": span.version,
                    "metric": metric,
                    "value": value,
                    "observed_at": end,
                    "period_start": start,
                    "source": source,
                }
            )
    result.problems += _other_periods(store, result.rows, lines, source)
    return result


def _other_periods(
    store: Store, rows: Sequence[Mapping[str, Any]], lines: Sequence[tuple[int, str]], source: str
) -> list[Problem]:
    """Rows whose key (which has the end of the period, not its start) is stored for other days: a file of
    the same name over a range ending the same day (`Last 7 days` and `Last 28 days` exported together)."""
    stored = store.metric_periods({row["content_id"] for row in rows}, source)
    problems: dict[int, Problem] = {}
    for row, (line, where) in zip(rows, lines, strict=True):
        key = (row["content_id"], row["variant"], row["version"], row["metric"], row["observed_at"])
        if key in stored and stored[key] != row["period_start"] and line not in problems:
            earlier = stored[key]
            since = f"from {_when(earlier)}" if earlier is not None else "as an instant"
            problems[line] = Problem(
                line,
                None,
                f"{where}: a file named {source!r} already gave this article's numbers up to the same day over "
                f"another period ({since}); rename the file to import both",
            )
    return list(problems.values())


def merged(rows: Sequence[ExportRow]) -> dict[str, float]:
    """One article's numbers over the same days from several rows, with `ctr` from clicks and impressions."""
    totals: dict[str, float] = {}
    for row in rows:
        for metric, value in row.values.items():
            if metric not in AVERAGES:
                totals[metric] = totals.get(metric, 0.0) + value
    for metric, weight in (("position", "impressions"), ("avg_engagement_time_s", "active_users")):
        present = [row for row in rows if metric in row.values]
        if not present:
            continue
        weights = [row.values.get(weight, 0.0) for row in present]
        if len(present) == 1 or sum(weights) <= 0:
            totals[metric] = sum(row.values[metric] for row in present) / len(present)
        else:
            totals[metric] = sum(row.values[metric] * w for row, w in zip(present, weights, strict=True)) / sum(weights)
    if totals.get("impressions", 0) > 0 and "clicks" in totals:
        totals["ctr"] = totals["clicks"] / totals["impressions"]
    return totals


def _switch(error: SpansSwitch, day: SiteDay) -> str:
    before, after = error.before, error.after
    local = after.starts_at.astimezone(day.zone).strftime("%Y-%m-%d %H:%M")
    return (
        f"spans a switch: variant {before.variant} (version {before.version}) was live until variant "
        f"{after.variant} (version {after.version}) at {_when(after.starts_at)} ({local} {day.zone.key}); "
        "its numbers mix both, so it was not imported. Export one row per day (Search Console: Date and Page; "
        "GA4: add the Date dimension) or a range that ends before or starts after the switch"
    )


def _site_day(site: Site) -> SiteDay | str:
    try:
        ab_test = site_settings(site.settings, f"site {site.slug}").ab_test
    except SiteSettingsError as error:
        return f"site {site.slug} has invalid settings ({error.problems[0]}); fix them with pipeline sites settings"
    return SiteDay(ZoneInfo(ab_test.timezone), timedelta(minutes=ab_test.switch_tolerance_minutes))


def _base_url(site: Site) -> str | None:
    raw: Mapping[str, Any] = site.settings or {}
    base = raw.get("base_url")
    return base if isinstance(base, str) else None


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")

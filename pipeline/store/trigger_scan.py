"""What the metric sensor reads to evaluate only what changed: rows after a position, articles published in
a time window, a batch of articles with their rules and newest metrics, and firings written in bulk.

Every read is an indexed range in the order of its position (ids, or `(time, id)` keys), bounded by a
limit, so a tick costs what changed since its cursor and can stop anywhere and resume there.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, select, text, tuple_, update
from sqlalchemy.orm import Session

from pipeline.models import (
    Content,
    ContentStatus,
    FiringStatus,
    PostMetric,
    ReviewEvent,
    SensorState,
    TriggerFiring,
    TriggerRule,
    as_utc,
    utcnow,
)
from pipeline.store.base import _IN_CHUNK, StoreBase, _chunks, table
from pipeline.store.window_reads import WindowTotals as WindowTotals  # imported from here too

# (time, id) keys, as in `pipeline.trigger_cursor.Key`; a time of None is "before everything".
Key = tuple[datetime | None, int]
ACTIVE = (FiringStatus.REQUESTED, FiringStatus.RUNNING)
# PostgreSQL advisory-lock key (namespace, id) that writers of metric rows and publications serialise on.
_TRIGGER_INPUTS_LOCK = (7318, 0)

# Finds a site's distinct minimum ages by index (a "loose index scan"): one index probe per distinct age,
# however many rules share it.
_RULE_AGES = text(
    """
    WITH RECURSIVE ages(age) AS (
        SELECT MIN(min_age_hours) FROM trigger_rules WHERE site_id = :site_id
        UNION ALL
        SELECT (
            SELECT MIN(r.min_age_hours) FROM trigger_rules r WHERE r.site_id = :site_id AND r.min_age_hours > ages.age
        )
        FROM ages WHERE ages.age IS NOT NULL
    )
    SELECT age FROM ages WHERE age IS NOT NULL
    """
)


@dataclass(frozen=True)
class PublishedArticle:
    """A published article as trigger evaluation needs it (no text, no variants)."""

    id: int
    site_id: int
    published_at: datetime
    published_version: int
    regeneration_run_id: str | None


@dataclass(frozen=True)
class ArticleRule:
    """A stored rule of one article, read without the ORM (a batch of articles has thousands)."""

    id: int
    content_id: int
    metric: str
    comparison: str
    threshold: float
    min_age_hours: float
    instruction: str
    kind: str = "value"
    window_days: int | None = None
    min_volume: float = 0.0


@dataclass(frozen=True)
class ActiveFiring:
    """A firing requested or running: what deciding whether its run stalled needs."""

    id: int
    content_id: int
    run_id: str | None
    fired_at: datetime


class TriggerScanStore(StoreBase):
    """Reads and writes of incremental trigger evaluation, and the sensor's recorded state."""

    def trigger_positions(self) -> tuple[int, int, int]:
        """The newest metric row, review event and trigger rule ids (0 when there are none)."""
        with self._sessions() as session:
            return (
                session.scalar(select(func.coalesce(func.max(PostMetric.id), 0))) or 0,
                session.scalar(select(func.coalesce(func.max(ReviewEvent.id), 0))) or 0,
                session.scalar(select(func.coalesce(func.max(TriggerRule.id), 0))) or 0,
            )

    def metric_rows_after(self, metric_id: int, limit: int) -> list[tuple[int, int]]:
        """`(row id, content id)` of metric rows after `metric_id`, oldest first."""
        statement = select(PostMetric.id, PostMetric.content_id).where(PostMetric.id > metric_id)
        return self._pairs(statement.order_by(PostMetric.id).limit(limit))

    def publications_after(self, event_id: int, limit: int) -> list[tuple[int, int]]:
        """`(event id, content id)` of publications (review events to `published`) after `event_id`."""
        statement = select(ReviewEvent.id, ReviewEvent.content_id).where(
            ReviewEvent.id > event_id, ReviewEvent.to_status == ContentStatus.PUBLISHED
        )
        return self._pairs(statement.order_by(ReviewEvent.id).limit(limit))

    def rules_after(self, rule_id: int, limit: int) -> list[tuple[int, int, int | None]]:
        """`(rule id, site id, content id or None)` of enabled rules added after `rule_id`."""
        with self._sessions() as session:
            rows = session.execute(
                select(TriggerRule.id, TriggerRule.site_id, TriggerRule.content_id)
                .where(TriggerRule.id > rule_id, TriggerRule.enabled.is_(True))
                .order_by(TriggerRule.id)
                .limit(limit)
            )
            return [(int(i), int(s), c) for i, s, c in rows]

    def failed_firings_after(self, after: Key, limit: int) -> list[tuple[datetime, int, int]]:
        """`(changed at, firing id, content id)` of failed firings whose status changed after `after`."""
        statement = select(TriggerFiring.changed_at, TriggerFiring.id, TriggerFiring.content_id).where(
            TriggerFiring.status == FiringStatus.FAILED
        )
        if after[0] is not None:
            statement = statement.where(tuple_(TriggerFiring.changed_at, TriggerFiring.id) > tuple_(*after))
        with self._sessions() as session:
            rows = session.execute(statement.order_by(TriggerFiring.changed_at, TriggerFiring.id).limit(limit))
            return [(as_utc(when), int(i), int(c)) for when, i, c in rows]

    def published_after(self, site_id: int, after: Key, until: datetime | None, limit: int) -> list[Key]:
        """`(published at, id)` of a site's published articles after `after` (and published by `until`),
        in publication order."""
        statement = _published(site_id, after, until, Content.published_at, Content.id)
        with self._sessions() as session:
            rows = session.execute(statement.order_by(Content.published_at, Content.id).limit(limit))
            return [(as_utc(when), int(i)) for when, i in rows]

    def count_metric_rows_after(self, metric_id: int) -> int:
        """Metric rows after `metric_id`."""
        with self._sessions() as session:
            return session.scalar(select(func.count()).where(PostMetric.id > metric_id)) or 0

    def count_publications_after(self, event_id: int) -> int:
        """Publications after `event_id`."""
        with self._sessions() as session:
            statement = select(func.count()).where(
                ReviewEvent.id > event_id, ReviewEvent.to_status == ContentStatus.PUBLISHED
            )
            return session.scalar(statement) or 0

    def count_published_after(self, site_id: int, after: Key, until: datetime | None) -> int:
        """A site's published articles after `after` (and published by `until`)."""
        with self._sessions() as session:
            return session.scalar(_published(site_id, after, until, func.count())) or 0

    def published_articles(self, content_ids: Iterable[int]) -> list[PublishedArticle]:
        """Those of `content_ids` that are published, by id."""
        found = []
        with self._sessions() as session:
            for chunk in _chunks(sorted(set(content_ids)), _IN_CHUNK):
                rows = session.execute(
                    select(
                        Content.id,
                        Content.site_id,
                        Content.published_at,
                        Content.published_version,
                        Content.regeneration_run_id,
                    ).where(
                        Content.id.in_(chunk),
                        Content.status == ContentStatus.PUBLISHED,
                        Content.published_version.is_not(None),
                        Content.published_at.is_not(None),
                    )
                )
                found += [PublishedArticle(i, s, as_utc(at), v, lock) for i, s, at, v, lock in rows if at and v]
        return found

    def active_firing_content(self, content_ids: Iterable[int]) -> set[int]:
        """Those of `content_ids` with a firing requested or running (a regeneration in progress)."""
        busy: set[int] = set()
        with self._sessions() as session:
            for chunk in _chunks(sorted(set(content_ids)), _IN_CHUNK):
                busy.update(
                    session.scalars(
                        select(TriggerFiring.content_id).where(
                            TriggerFiring.content_id.in_(chunk), TriggerFiring.status.in_(ACTIVE)
                        )
                    )
                )
        return busy

    def latest_published_metrics(self, content_ids: Iterable[int]) -> dict[int, dict[str, dict[str, float]]]:
        """The newest value of every metric per variant of each article's published version:
        `{content_id: {variant: {metric: value}}}` (as `latest_metrics`, for a batch in a few queries)."""
        latest: dict[int, dict[str, dict[str, float]]] = {}
        with self._sessions() as session:
            for chunk in _chunks(sorted(set(content_ids)), _IN_CHUNK):
                rows = session.execute(
                    select(PostMetric.content_id, PostMetric.variant, PostMetric.metric, PostMetric.value)
                    .join(
                        Content,
                        (Content.id == PostMetric.content_id) & (Content.published_version == PostMetric.version),
                    )
                    .where(PostMetric.content_id.in_(chunk))
                    .order_by(PostMetric.content_id, PostMetric.observed_at, PostMetric.id)
                )
                for content_id, variant, metric, value in rows:
                    latest.setdefault(content_id, {}).setdefault(variant, {})[metric] = value
        return latest

    def article_rules(self, content_ids: Iterable[int]) -> dict[int, list[ArticleRule]]:
        """Enabled rules of these articles (not site defaults), by article, oldest rule first."""
        rules: dict[int, list[ArticleRule]] = {}
        columns = (
            TriggerRule.id,
            TriggerRule.content_id,
            TriggerRule.metric,
            TriggerRule.comparison,
            TriggerRule.threshold,
            TriggerRule.min_age_hours,
            TriggerRule.instruction,
            TriggerRule.kind,
            TriggerRule.window_days,
            TriggerRule.min_volume,
        )
        with self._sessions() as session:
            for chunk in _chunks(sorted(set(content_ids)), _IN_CHUNK):
                statement = select(*columns).where(TriggerRule.content_id.in_(chunk), TriggerRule.enabled.is_(True))
                for row in session.execute(statement.order_by(TriggerRule.id)):
                    rule_id, content_id, metric, comparison, threshold, age, instruction, kind, days, volume = row
                    rule = ArticleRule(
                        rule_id,
                        content_id or 0,
                        metric,
                        comparison,
                        threshold,
                        age,
                        instruction,
                        kind or "value",
                        days,
                        volume or 0.0,
                    )
                    rules.setdefault(rule.content_id, []).append(rule)
        return rules

    def site_default_rules(self, site_id: int) -> list[TriggerRule]:
        """Enabled store rules of a site that apply to every published article, oldest first."""
        with self._sessions() as session:
            statement = select(TriggerRule).where(
                TriggerRule.site_id == site_id, TriggerRule.content_id.is_(None), TriggerRule.enabled.is_(True)
            )
            return list(session.scalars(statement.order_by(TriggerRule.id)))

    def rule_ages(self, site_id: int) -> list[float]:
        """The distinct minimum ages (hours) of a site's stored rules, smallest first."""
        with self._sessions() as session:
            return [float(age) for age in session.scalars(_RULE_AGES, {"site_id": site_id})]

    def active_firings(self) -> list[ActiveFiring]:
        """Firings requested or running, oldest first (by index on status)."""
        with self._sessions() as session:
            rows = session.execute(
                select(TriggerFiring.id, TriggerFiring.content_id, TriggerFiring.run_id, TriggerFiring.fired_at)
                .where(TriggerFiring.status.in_(ACTIVE))
                .order_by(TriggerFiring.id)
            )
            return [ActiveFiring(int(i), int(c), run, as_utc(at)) for i, c, run, at in rows]

    def fire_triggers(self, values: Sequence[Mapping[str, Any]]) -> list[tuple[int, int, int]]:
        """Record that rules fired for published versions, in one transaction: `(firing id, content id,
        attempts)` of those that fire now.

        Atomic on the natural key (content, rule, published version): however many sensor ticks or Dagster
        instances evaluate the same rule, only one insert wins, so a rule fires once per version. New
        firings are inserted in batches (one statement each); those that exist and failed are armed again
        (attempts + 1); the others already fired and are left alone.
        """
        if not values:
            return []
        fired: list[tuple[int, int, int]] = []
        with self.transaction() as session:
            now = utcnow()
            firings = table(TriggerFiring)
            statement = (
                self._insert(session)(firings)
                .on_conflict_do_nothing(index_elements=["content_id", "rule_key", "published_version"])
                .returning(firings.c.id, firings.c.content_id, firings.c.rule_key, firings.c.published_version)
            )
            inserted: set[tuple[int, str, int]] = set()
            for chunk in _chunks(values, _IN_CHUNK):
                rows = session.execute(
                    statement,
                    [
                        {**v, "status": FiringStatus.REQUESTED.value, "attempts": 1, "fired_at": now, "changed_at": now}
                        for v in chunk
                    ],
                )
                for firing_id, content_id, rule_key, version in rows:
                    inserted.add((content_id, rule_key, version))
                    fired.append((int(firing_id), int(content_id), 1))
            for v in values:
                if (v["content_id"], v["rule_key"], v["published_version"]) in inserted:
                    continue
                rearmed = session.execute(
                    update(TriggerFiring)
                    .where(
                        TriggerFiring.content_id == v["content_id"],
                        TriggerFiring.rule_key == v["rule_key"],
                        TriggerFiring.published_version == v["published_version"],
                        TriggerFiring.status == FiringStatus.FAILED,
                    )
                    .values(
                        status=FiringStatus.REQUESTED,
                        attempts=TriggerFiring.attempts + 1,
                        run_id=None,
                        fired_at=now,
                        observed=v["observed"],
                        triggered_variants=v["triggered_variants"],
                    )
                    .returning(TriggerFiring.id, TriggerFiring.attempts)
                ).one_or_none()
                if rearmed is not None:
                    fired.append((int(rearmed[0]), int(v["content_id"]), int(rearmed[1])))
        return fired

    def record_sensor_state(self, name: str, state: Mapping[str, Any]) -> None:
        """Keep what a sensor's tick recorded (replacing the previous tick's)."""
        with self.transaction() as session:
            now = utcnow()
            statement = self._insert(session)(SensorState).values(name=name, state=dict(state), updated_at=now)
            session.execute(
                statement.on_conflict_do_update(
                    index_elements=[SensorState.name], set_={"state": dict(state), "updated_at": now}
                )
            )

    def sensor_state(self, name: str) -> dict[str, Any] | None:
        """What the sensor `name` recorded at its last tick, or None if it never ticked."""
        with self._sessions() as session:
            row = session.get(SensorState, name)
            return None if row is None else dict(row.state)

    def _pairs(self, statement: Select[int, int]) -> list[tuple[int, int]]:
        with self._sessions() as session:
            return [(int(a), int(b)) for a, b in session.execute(statement)]


def serialise_trigger_inputs(session: Session) -> None:
    """Make this transaction's metric rows or publication wait for other such writers until it ends
    (PostgreSQL; SQLite has one writer anyway).

    The sensor reads them by id from its position on: ids come from a sequence, and two transactions
    committing in the other order than they drew their ids would let a tick pass over the earlier one's
    rows before they are visible. Serialised, a later id is only drawn once the earlier rows are committed.
    Call it first in the transaction.
    """
    if session.bind is not None and session.bind.dialect.name == "postgresql":
        session.execute(select(func.pg_advisory_xact_lock(*_TRIGGER_INPUTS_LOCK)))


def _published(site_id: int, after: Key, until: datetime | None, *columns: Any) -> Select[Any]:
    """Published articles of a site after `after`, by the (site, status, published_at, id) index."""
    statement = select(*columns).where(
        Content.site_id == site_id,
        Content.status == ContentStatus.PUBLISHED,
        Content.published_at.is_not(None),
        Content.published_version.is_not(None),
    )
    if after[0] is not None:
        statement = statement.where(tuple_(Content.published_at, Content.id) > tuple_(*after))
    if until is not None:
        statement = statement.where(Content.published_at <= until)
    return statement

"""Automation inputs and outputs: post metrics, trigger rules and their firings, and the files the watched
folders (keyword inbox, metrics) rejected."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import aliased

from pipeline.models import (
    Content,
    ContentStatus,
    FiringStatus,
    Idea,
    PostMetric,
    Publication,
    RejectedFile,
    ReviewEvent,
    TriggerFiring,
    TriggerRule,
    as_utc,
    utcnow,
)
from pipeline.store.base import StoreBase, _chunks, affected, table
from pipeline.store.trigger_scan import serialise_trigger_inputs

METRICS_BATCH = 5000  # metric rows per insert (sent as multi-row statements of up to 1,000 rows each)


@dataclass(frozen=True)
class ArticleAddress:
    """What an article's public addresses are made of: its idea (the slug rule of `pipeline.urls`) and the
    URLs its publishing targets reported."""

    content_id: int
    site_id: int
    idea_id: int
    idea_key: str
    key_clashes: bool  # an older idea of the site has the same key (the slug gets `-<idea id>`)
    published_urls: tuple[str, ...]


class AutomationStore(StoreBase):
    """Metrics, trigger rules, firings and rejected files."""

    def add_metrics(self, rows: Sequence[Mapping[str, Any]]) -> int:
        """Insert metric observations on their natural key in one transaction; returns rows added.

        Set-based: one multi-row statement per batch of rows, however many rows there are.
        """
        if not rows:
            return 0
        added = 0
        metrics = table(PostMetric)
        with self.transaction() as session:
            serialise_trigger_inputs(session)
            statement = (
                self._insert(session)(metrics)
                .on_conflict_do_nothing(
                    index_elements=["content_id", "variant", "version", "metric", "observed_at", "source"]
                )
                .returning(metrics.c.id)
            )
            now = utcnow()
            for chunk in _chunks(rows, METRICS_BATCH):
                added += len(session.execute(statement, [{"created_at": now, **row} for row in chunk]).all())
        return added

    def metric_periods(
        self, content_ids: Iterable[int], source: str
    ) -> dict[tuple[int, str, int, str, datetime], datetime | None]:
        """The stored rows of these articles from `source`: (content, variant, version, metric, observed_at in
        UTC) -> period_start (UTC, None for an instant)."""
        ids = sorted(set(content_ids))
        found: dict[tuple[int, str, int, str, datetime], datetime | None] = {}
        with self._sessions() as session:
            for chunk in _chunks(ids, 500):
                rows = session.execute(
                    select(
                        PostMetric.content_id,
                        PostMetric.variant,
                        PostMetric.version,
                        PostMetric.metric,
                        PostMetric.observed_at,
                        PostMetric.period_start,
                    ).where(PostMetric.content_id.in_(chunk), PostMetric.source == source)
                )
                for content_id, variant, version, metric, observed_at, period_start in rows:
                    key = (content_id, variant, version, metric, as_utc(observed_at))
                    found[key] = as_utc(period_start) if period_start is not None else None
        return found

    def latest_metrics(self, content_id: int, version: int) -> dict[str, dict[str, float]]:
        """The newest value of every metric per variant of one version: `{variant: {metric: value}}`."""
        with self._sessions() as session:
            rows = session.execute(
                select(PostMetric.variant, PostMetric.metric, PostMetric.value)
                .where(PostMetric.content_id == content_id, PostMetric.version == version)
                .order_by(PostMetric.observed_at, PostMetric.id)
            )
            latest: dict[str, dict[str, float]] = {}
            for variant, metric, value in rows:
                latest.setdefault(variant, {})[metric] = value
            return latest

    def publications(self, content_ids: Iterable[int]) -> dict[int, list[tuple[datetime, int]]]:
        """When versions of these articles were published, from their review events, oldest first:
        `{content_id: [(when, version), ...]}`; articles without such events are absent."""
        ids = sorted(set(content_ids))
        found: dict[int, list[tuple[datetime, int]]] = {}
        with self._sessions() as session:
            for chunk in _chunks(ids, 500):
                rows = session.execute(
                    select(ReviewEvent.content_id, ReviewEvent.created_at, ReviewEvent.version)
                    .where(
                        ReviewEvent.content_id.in_(chunk),
                        ReviewEvent.to_status == ContentStatus.PUBLISHED,
                        ReviewEvent.version.is_not(None),
                    )
                    .order_by(ReviewEvent.created_at, ReviewEvent.id)
                )
                for content_id, when, version in rows:
                    if version is not None:  # filtered in the query; narrows the type
                        found.setdefault(content_id, []).append((when, version))
        return found

    def article_addresses(self, site_ids: Iterable[int]) -> list[ArticleAddress]:
        """Every article of these sites with what its URLs are made of, by id (for `pipeline.url_mapping`)."""
        ids = sorted(set(site_ids))
        if not ids:
            return []
        earlier = aliased(Idea)
        clash = (
            select(earlier.id)
            .where(earlier.site_id == Idea.site_id, earlier.key == Idea.key, earlier.id < Idea.id)
            .exists()
        )
        with self._sessions() as session:
            articles = session.execute(
                select(Content.id, Content.site_id, Idea.id, Idea.key, clash)
                .join(Idea, Idea.id == Content.idea_id)
                .where(Content.site_id.in_(ids))
                .order_by(Content.id)
            ).all()
            urls: dict[int, list[str]] = {}
            for content_id, url in session.execute(
                select(Publication.content_id, Publication.url)
                .where(Publication.site_id.in_(ids), Publication.url.is_not(None))
                .order_by(Publication.content_id, Publication.target)
            ):
                if url:
                    urls.setdefault(content_id, []).append(url)
        return [
            ArticleAddress(content_id, site_id, idea_id, key, bool(clashes), tuple(urls.get(content_id, ())))
            for content_id, site_id, idea_id, key, clashes in articles
        ]

    def add_trigger_rule(self, values: Mapping[str, Any]) -> TriggerRule:
        """Store a trigger rule (site default when `content_id` is None)."""
        with self.transaction() as session:
            rule = TriggerRule(created_at=utcnow(), **values)
            session.add(rule)
            session.flush()
            return rule

    def trigger_rules(self, site_id: int) -> list[TriggerRule]:
        """Enabled rules of a site: article-specific and site defaults."""
        with self._sessions() as session:
            statement = select(TriggerRule).where(TriggerRule.site_id == site_id, TriggerRule.enabled.is_(True))
            return list(session.scalars(statement.order_by(TriggerRule.id)))

    def disable_trigger_rule(self, rule_id: int) -> bool:
        """Turn a rule off (kept for history); False if there is no such rule."""
        with self.transaction() as session:
            return (
                affected(session.execute(update(TriggerRule).where(TriggerRule.id == rule_id).values(enabled=False)))
                > 0
            )

    def firings(self, *, site_id: int | None = None, statuses: Sequence[str] | None = None) -> list[TriggerFiring]:
        """Trigger firings, optionally of one site and with given statuses."""
        with self._sessions() as session:
            statement = select(TriggerFiring).order_by(TriggerFiring.id)
            if site_id is not None:
                statement = statement.where(TriggerFiring.site_id == site_id)
            if statuses:
                statement = statement.where(TriggerFiring.status.in_(statuses))
            return list(session.scalars(statement))

    def claim_firing(self, firing_id: int, run_id: str) -> TriggerFiring | None:
        """Take a requested firing and lock its article for `run_id`, atomically; None if not claimable.

        The article lock (`content.regeneration_run_id`) is what guarantees no two runs rewrite it at once.
        """
        with self.transaction() as session:
            firing = session.get(TriggerFiring, firing_id)
            if firing is None or firing.status != FiringStatus.REQUESTED:
                return None
            locked = affected(
                session.execute(
                    update(Content)
                    .where(
                        Content.id == firing.content_id,
                        (Content.regeneration_run_id.is_(None)) | (Content.regeneration_run_id == run_id),
                    )
                    .values(regeneration_run_id=run_id)
                )
            )
            if not locked:
                return None
            firing.status, firing.run_id = FiringStatus.RUNNING, run_id
            return firing

    def fail_firing(self, firing_id: int, run_id: str, error: str) -> None:
        """Mark a regeneration failed: the rule is armed again, the article unlocked, nothing else changes."""
        with self.transaction() as session:
            firing = session.get(TriggerFiring, firing_id)
            if firing is None:
                return
            firing.status, firing.error = FiringStatus.FAILED, error[:4000]
            session.execute(
                update(Content)
                .where(Content.id == firing.content_id, Content.regeneration_run_id == run_id)
                .values(regeneration_run_id=None)
            )

    def record_rejected_file(self, folder: str, name: str, path: str, fingerprint: str, problem: str) -> None:
        """Record that a file in a watched folder was rejected (once per content; seen again: refreshed)."""
        with self.transaction() as session:
            now = utcnow()
            statement = self._insert(session)(RejectedFile).values(
                folder=folder,
                name=name,
                path=path,
                fingerprint=fingerprint,
                problem=problem,
                first_seen_at=now,
                last_seen_at=now,
            )
            session.execute(
                statement.on_conflict_do_update(
                    index_elements=[RejectedFile.folder, RejectedFile.name, RejectedFile.fingerprint],
                    set_={"problem": problem, "path": path, "last_seen_at": now, "resolved_at": None},
                )
            )

    def resolve_rejected_files(self, folder: str, present: Mapping[str, str]) -> int:
        """Mark rejections in `folder` resolved unless it still holds that name with that fingerprint
        (`present`: name -> fingerprint of every entry there now); returns how many were resolved."""
        with self.transaction() as session:
            still_open = session.scalars(
                select(RejectedFile).where(RejectedFile.folder == folder, RejectedFile.resolved_at.is_(None))
            )
            gone = [row for row in still_open if present.get(row.name) != row.fingerprint]
            now = utcnow()
            for row in gone:
                row.resolved_at = now
            return len(gone)

    def rejected_files(self, *, include_resolved: bool = False) -> list[RejectedFile]:
        """Rejected input files, by folder and name; only those still in their folder unless `include_resolved`."""
        with self._sessions() as session:
            statement = select(RejectedFile).order_by(RejectedFile.folder, RejectedFile.name, RejectedFile.id)
            if not include_resolved:
                statement = statement.where(RejectedFile.resolved_at.is_(None))
            return list(session.scalars(statement))

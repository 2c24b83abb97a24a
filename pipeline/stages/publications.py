"""The publications stage: publish every approved article whose slot has come to each of the site's targets.

It also brings published articles up to date on targets that do not show them (a target added later, a
push that stopped after the status moved). Each article is published on its own (`pipeline.publishing`):
one that fails is reported and stays `approved` with its slot, so the next run retries it; once WordPress
is unreachable, the rest of the run's articles are left for the next run instead of each waiting for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from pipeline import publishing
from pipeline.models import utcnow
from pipeline.publishing.wordpress_api import WordPressAuthError, WordPressUnavailable
from pipeline.review import ReviewError
from pipeline.stages import RunSite
from pipeline.store import Store

# WordPress `future` posts are sent as soon as they have a slot: WordPress itself publishes them on time.
_FUTURE_HORIZON = timedelta(days=3650)


@dataclass
class PublicationsReport:
    """What a publications run did, per article and target."""

    published: int = 0
    updated: int = 0
    unchanged: int = 0
    not_due: int = 0
    slots_assigned: int = 0
    failures: list[str] = field(default_factory=list)
    links: list[dict[str, Any]] = field(default_factory=list)
    targets: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """The counts as metadata."""
        return {
            "articles_published": self.published,
            "articles_updated": self.updated,
            "articles_unchanged": self.unchanged,
            "articles_failed": len(self.failures),
            "approved_not_due_yet": self.not_due,
            "slots_assigned": self.slots_assigned,
        }

    def summary(self) -> str:
        """One line for logs."""
        return ", ".join(f"{key}={value}" for key, value in self.counts().items())


def publish_due(
    store: Store,
    site: str | RunSite,
    publish_root: Path,
    *,
    now: datetime | None = None,
    limit: int | None = None,
    actor: str = "dagster:publications",
) -> PublicationsReport:
    """Publish the site's due approved articles (slot order) and bring lagging published ones up to date."""
    run_site = RunSite.of(store, site)
    row, settings = run_site.site, run_site.settings
    now = now or utcnow()
    report = PublicationsReport()
    report.slots_assigned = store.assign_publish_slots(row.id, settings.schedule, now)
    due = store.due_for_publishing(row.id, _horizon(run_site, now))
    report.not_due = store.count_approved(row.id) - len(due)
    targets = publishing.targets_for(row, publish_root, settings=settings)
    report.targets = [f"{target.name} {target.destination}" for target in targets]
    behind = store.published_behind_targets(row.id, [(t.name, t.destination) for t in targets])
    # Due articles first (slot order), then published ones a target lags behind on (trusting each target's
    # record: only the lagging target does any work).
    todo = [(content_id, None) for content_id in due] + [(content_id, False) for content_id in behind]
    if limit is not None:
        todo = todo[:limit]
    unreachable: str | None = None
    try:
        for content_id, verify in todo:
            if unreachable is not None:
                report.failures.append(f"content {content_id}: not attempted, {unreachable}")
                continue
            try:
                done = publishing.publish(
                    store, content_id, publish_root, actor=actor, targets=targets, now=now, verify=verify
                )
            except (WordPressUnavailable, WordPressAuthError) as error:
                # Every later article would wait for the same timeout or refusal: leave them for the next run.
                unreachable = "WordPress is unreachable or refuses the credentials (see the first failure)"
                report.failures.append(f"content {content_id}: {error}")
            except (ReviewError, OSError) as error:
                report.failures.append(f"content {content_id}: {error}")
            else:
                _count(report, done)
    finally:
        publishing.close_targets(targets)
    return report


def has_due_articles(store: Store, site: RunSite, now: datetime) -> bool:
    """Whether a publications run of the site would publish something now (slots are assigned first)."""
    store.assign_publish_slots(site.site.id, site.settings.schedule, now)
    return bool(store.due_for_publishing(site.site.id, _horizon(site, now)))


def _horizon(site: RunSite, now: datetime) -> datetime:
    """Up to when slots count as due: now, or far ahead for WordPress `future` posts (sent early)."""
    wordpress = site.settings.publishing.wordpress
    return now + _FUTURE_HORIZON if wordpress is not None and wordpress.status == "future" else now


def _count(report: PublicationsReport, done: publishing.Publication) -> None:
    actions = {placed.action for placed in done.placed}
    if actions == {"unchanged"}:
        report.unchanged += 1
    elif done.republished or actions <= {"updated", "unchanged", "recreated"}:
        report.updated += 1
    else:
        report.published += 1
    for placed in done.placed:
        if placed.action != "unchanged":
            report.links.append(
                {
                    "content_id": done.content_id,
                    "slug": done.slug,
                    "target": placed.target,
                    "action": placed.action,
                    "url": placed.url,
                }
            )

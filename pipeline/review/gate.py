"""The status machine: the review queue, one article's approval and rejection, and the transitions (a
compare-and-set on the stored status with its `review_events` row) that bulk review and publishing share."""

from __future__ import annotations

import getpass
import os
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from pipeline.models import ContentStatus, Site, as_utc, utcnow
from pipeline.review.model import (
    Article,
    ArticleReview,
    InvalidTransition,
    ReviewError,
    ReviewItem,
    Transition,
    UnknownContent,
)
from pipeline.sites import ScheduleSettings, SiteSettingsError, site_settings
from pipeline.store import Store
from pipeline.urls import article_slug

# Plain strings (not the enum members), so argparse's `choices=` error message names them as before.
STATUSES = tuple(status.value for status in ContentStatus)
VARIANTS = ("A", "B")
DEFAULT_VARIANT = "A"

# What the review gate may do from each status, and where it leads.
ACTIONS: dict[str, dict[str, str]] = {
    ContentStatus.DRAFT: {"approve": ContentStatus.APPROVED, "reject": ContentStatus.DRAFT},
    ContentStatus.APPROVED: {"publish": ContentStatus.PUBLISHED, "reject": ContentStatus.DRAFT},
    ContentStatus.PUBLISHED: {},
}


def default_actor() -> str:
    """Who acts from the command line: `cli:$USER` (else the login name, else `cli:unknown`)."""
    try:
        user = os.environ.get("USER") or getpass.getuser()
    except (OSError, KeyError):  # no USER and no passwd entry, e.g. an arbitrary uid in a container
        user = "unknown"
    return f"cli:{user}"


def format_slot(slot: datetime, timezone: str) -> str:
    """A slot as its site's readers see it: local time and the zone, e.g. `2026-12-02 09:00 Europe/Berlin`."""
    return f"{slot.astimezone(ZoneInfo(timezone)):%Y-%m-%d %H:%M} {timezone}"


def review_list(store: Store, *, site: str | None = None, status: str | None = None) -> list[ReviewItem]:
    """The review queue: every article (optionally of one site and/or status) with its current version and slot."""
    if status is not None and status not in STATUSES:
        raise ReviewError(f"unknown status {status!r}; use one of: {', '.join(STATUSES)}")
    site_id = store.site(site).id if site else None
    zones = {row.slug: _calendar_timezone(row) for row in store.sites()}
    items = []
    for content, slug, variants in store.review_queue(site_id=site_id, status=status):
        items.append(
            ReviewItem(
                id=content.id,
                site=slug,
                title=variants[0].title if variants else "",
                status=content.status,
                version=variants[0].version if variants else 0,
                variants=tuple(v.variant for v in variants),
                updated_at=content.updated_at,
                note=content.review_note,
                approved_at=as_utc(content.approved_at) if content.approved_at else None,
                slot=as_utc(content.publish_slot) if content.publish_slot else None,
                timezone=zones.get(slug, "UTC"),
            )
        )
    return items


def load_article(store: Store, content_id: int) -> Article:
    """The article with this id, or `UnknownContent`."""
    found = store.review_article(content_id)
    if found is None:
        raise UnknownContent(content_id)
    content, site, idea, variants = found
    # The folder is named by the idea's key (stable across regenerations, unlike the title); the rare
    # idea whose key an older idea of the site already uses gets its id appended. The rule is
    # `article_slug`, shared with the link plan, which needs the slug before the article exists.
    clashes = store.has_earlier_idea_with_key(site.id, idea.key, idea.id)
    slug = article_slug(idea.key, idea.id, clashes=clashes)
    return Article(content=content, site=site, idea=idea, variants=variants, slug=slug)


def show(store: Store, content_id: int, *, variant: str = DEFAULT_VARIANT) -> ArticleReview:
    """An article with one variant of its current version, that variant's images and the review history."""
    article = load_article(store, content_id)
    chosen = article.variant(_variant_letter(variant))
    return ArticleReview(
        article=article,
        variant=chosen,
        images=store.variant_images(chosen.id),
        events=store.review_events(content_id),
    )


def approve(
    store: Store,
    content_id: int,
    *,
    variant: str | None = None,
    actor: str | None = None,
    now: datetime | None = None,
) -> Transition:
    """draft -> approved, for one variant of the current version (default A); clears the last rejection note.

    Records the approval time (`now`, default the clock) and then gives the site's approved articles their
    calendar slots; the returned transition carries the slot this article got.
    """
    article = load_article(store, content_id)
    schedule = _schedule(article.site)  # invalid settings refuse the approval before anything changes
    done = _approve(store, article, variant, actor, now)
    store.assign_publish_slots(article.site.id, schedule, now or utcnow())
    return _with_slots(store, [done], {article.site.id: _zone(schedule)})[0]


def reject(store: Store, content_id: int, *, note: str, actor: str | None = None) -> Transition:
    """draft | approved -> draft with a note saying what to change (required; stored on the article).

    Clears the approval time and the calendar slot; other articles keep theirs.
    """
    article = load_article(store, content_id)
    _check_allowed(article, "reject")
    return _reject(store, article, _rejection_note(content_id, note), actor)


def assign_slots(store: Store, site: Site, *, now: datetime | None = None) -> int:
    """Give the site's approved articles without a slot one, by its `schedule` setting; returns how many.

    For publishing runs, which call it before asking `Store.due_for_publishing` what to publish.
    """
    return store.assign_publish_slots(site.id, _schedule(site), now or utcnow())


# -- transitions ------------------------------------------------------------------------------------


def _approve(
    store: Store, article: Article, variant: str | None, actor: str | None, now: datetime | None
) -> Transition:
    _check_allowed(article, "approve")
    chosen = article.variant(_variant_letter(variant or DEFAULT_VARIANT))
    return _transition(
        store,
        article,
        "approve",
        version=chosen.version,
        variant=chosen.variant,
        actor=actor,
        # A fresh approval gets a fresh slot: one left from an earlier approval (before a regeneration) is gone.
        changes={"review_note": None, "approved_at": (now or utcnow()).astimezone(UTC), "publish_slot": None},
    )


def _reject(store: Store, article: Article, note: str, actor: str | None) -> Transition:
    return _transition(
        store,
        article,
        "reject",
        version=article.version,
        variant=None,
        actor=actor,
        note=note,
        changes={"review_note": note, "approved_at": None, "publish_slot": None},
    )


def _rejection_note(content_id: int | None, note: str | None) -> str:
    note = (note or "").strip()
    if not note:
        which = f"content {content_id}: " if content_id is not None else ""
        raise InvalidTransition(f"{which}a rejection needs a note saying what to change (--note TEXT)")
    return note


def _schedule(site: Site) -> ScheduleSettings | None:
    try:
        return site_settings(site.settings, f"settings of site {site.slug}").schedule
    except SiteSettingsError as error:
        raise ReviewError(f"{error}\nnothing was changed; fix them with: pipeline sites settings {site.slug}") from None


def _zone(schedule: ScheduleSettings | None) -> str:
    return schedule.timezone if schedule else "UTC"


def _calendar_timezone(site: Site) -> str:
    # A listing still works for a site whose settings are broken; approving there says what is wrong.
    try:
        return _zone(_schedule(site))
    except ReviewError:
        return "UTC"


def _with_slots(store: Store, done: list[Transition], zones: Mapping[int, str]) -> list[Transition]:
    """The approvals with the slots they were given and their sites' calendar timezones."""
    rows = {content.id: content for content, _ in store.review_selection(ids=[t.content_id for t in done])}
    slotted = []
    for transition in done:
        content = rows.get(transition.content_id)
        slot = content.publish_slot if content is not None else None
        zone = zones.get(content.site_id, "UTC") if content is not None else "UTC"
        slotted.append(replace(transition, slot=as_utc(slot) if slot else None, timezone=zone))
    return slotted


def _variant_letter(letter: str) -> str:
    letter = letter.strip().upper()
    if letter not in VARIANTS:
        raise ReviewError(f"unknown variant {letter!r}; use one of: {', '.join(VARIANTS)}")
    return letter


def _check_allowed(article: Article, action: str) -> None:
    content = article.content
    if content.regeneration_run_id:
        raise InvalidTransition(
            f"content {content.id} is being regenerated by run {content.regeneration_run_id}; "
            "review it once the run has finished"
        )
    if action in ACTIONS.get(content.status, {}):
        return
    if not article.variants:
        raise InvalidTransition(f"content {content.id} has no variants to review")
    raise InvalidTransition(f"content {content.id} is '{content.status}': cannot {action}; {_allowed(content.status)}")


def _allowed(status: str) -> str:
    allowed = ACTIONS.get(status, {})
    if allowed:
        return "allowed: " + ", ".join(allowed)
    if status == ContentStatus.PUBLISHED:
        return "nothing is allowed: a published article returns to draft only when it is regenerated"
    return "nothing is allowed from this status"


def _changed_meanwhile(article: Article, action: str) -> InvalidTransition:
    return InvalidTransition(
        f"content {article.content.id} changed while you tried to {action} it (it was '{article.content.status}'); "
        f"look again with: pipeline review show {article.content.id}"
    )


def _transition(
    store: Store,
    article: Article,
    action: str,
    *,
    version: int,
    variant: str | None,
    actor: str | None,
    note: str | None = None,
    changes: Mapping[str, Any] | None = None,
) -> Transition:
    to_status = ACTIONS[article.content.status][action]
    actor = actor or default_actor()
    moved = store.transition_content(
        article.content.id,
        article.content.status,
        to_status,
        actor=actor,
        version=version,
        variant=variant,
        note=note,
        changes=changes,
    )
    if not moved:
        raise _changed_meanwhile(article, action)
    return Transition(article.content.id, article.content.status, to_status, version, variant, actor, note)

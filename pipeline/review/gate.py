"""The review gate: an article's status machine, from draft to approved to published.

    draft --approve--> approved --publish--> published
    draft | approved --reject (with a note)--> draft
    published --> draft only when the article is regenerated (new versions), never from here

Every transition is a compare-and-set on the stored status together with a `review_events` row, in one
transaction (`Store.transition_content`). Approve and publish act on a variant of the current (highest)
version. Publishing itself (exporting the variant, then committing `approved -> published` through
`publishable` and `mark_published` here) is `pipeline.publishing`.

Approval records when it happened (`approved_at`) and then gives the site's approved articles their
calendar slots in approval order (`Store.assign_publish_slots`, the site's `schedule` setting); a rejection
clears both. Bulk review (`approve_many`, `reject_many`) selects articles by ids, by site or by cluster and
still makes one transition, with one review event and its actor, per article.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from pipeline.models import (
    Cluster,
    Content,
    ContentStatus,
    ContentVariant,
    Idea,
    Image,
    ImagePrompt,
    ReviewEvent,
    Site,
    as_utc,
    utcnow,
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


class ReviewError(Exception):
    """A review action that cannot be done; the message names the article and says what to do instead."""


class UnknownContent(ReviewError, LookupError):
    """No article with this id."""

    def __init__(self, content_id: int):
        super().__init__(f"content {content_id} does not exist; see: pipeline review list")
        self.content_id = content_id


class InvalidTransition(ReviewError):
    """The action is not allowed from the article's current status (or it changed meanwhile)."""


class PublishError(ReviewError):
    """Publishing cannot export the variant (missing images, unknown variant...); nothing was changed."""


@dataclass(frozen=True)
class ReviewItem:
    """One line of the review queue."""

    id: int
    site: str
    title: str
    status: str
    version: int
    variants: tuple[str, ...]
    updated_at: datetime
    note: str | None
    approved_at: datetime | None = None
    # The calendar slot (UTC) and the site's calendar timezone, in which a reader wants to see it.
    slot: datetime | None = None
    timezone: str = "UTC"

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (times as ISO 8601; `slot` and `approved_at` in UTC, null when unset)."""
        return {
            "id": self.id,
            "site": self.site,
            "title": self.title,
            "status": self.status,
            "version": self.version,
            "variants": list(self.variants),
            "updated": self.updated_at.isoformat(),
            "note": self.note,
            "approved_at": self.approved_at.isoformat() if self.approved_at else None,
            "slot": self.slot.isoformat() if self.slot else None,
        }

    def is_due(self, now: datetime) -> bool:
        """Whether the article is approved and its slot has come (publishing takes it on its next run)."""
        return self.status == ContentStatus.APPROVED and self.slot is not None and self.slot <= now


@dataclass(frozen=True)
class Article:
    """An article as the review gate sees it: its row, site, idea and every variant, newest version first."""

    content: Content
    site: Site
    idea: Idea
    variants: list[ContentVariant]
    slug: str

    @property
    def version(self) -> int:
        """The current (highest) version; 0 if the article has no variant at all."""
        return self.variants[0].version if self.variants else 0

    @property
    def current_variants(self) -> list[ContentVariant]:
        """The variants of the current version, A first."""
        return [v for v in self.variants if v.version == self.version]

    def variant(self, letter: str) -> ContentVariant:
        """The current version's variant `letter`, or `PublishError` naming the variants that exist."""
        for candidate in self.current_variants:
            if candidate.variant == letter:
                return candidate
        have = ", ".join(v.variant for v in self.current_variants) or "none"
        raise PublishError(
            f"content {self.content.id} version {self.version} has no variant {letter} (variants: {have}); "
            "variant B exists only after a regeneration"
        )


@dataclass(frozen=True)
class Transition:
    """A status change the gate made."""

    content_id: int
    from_status: str
    to_status: str
    version: int
    variant: str | None
    actor: str
    note: str | None = None
    # After an approval: the calendar slot it got (UTC) and the site's calendar timezone.
    slot: datetime | None = None
    timezone: str = "UTC"


@dataclass(frozen=True)
class ReviewOutcome:
    """What a bulk action did to one selected article: `done`, or the reason it was `skipped`."""

    content_id: int
    site: str
    done: Transition | None = None
    skipped: str | None = None


@dataclass(frozen=True)
class ArticleReview:
    """Everything `review show` prints: the article, the variant shown, its images and the history."""

    article: Article
    variant: ContentVariant
    images: list[tuple[ImagePrompt, Image | None]]
    events: list[ReviewEvent]


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


def approve_many(
    store: Store,
    *,
    ids: Sequence[int] | None = None,
    site: str | None = None,
    cluster: int | str | None = None,
    all_drafts: bool = False,
    variant: str | None = None,
    actor: str | None = None,
    now: datetime | None = None,
) -> list[ReviewOutcome]:
    """Approve the selected articles one by one; an article that cannot be approved is skipped with the reason.

    Select by `ids`, or by `site` with `all_drafts` (its drafts) or `cluster` (id, or key within the site).
    Each article is its own transition with its own review event and `actor`; the slots of every site
    touched are assigned once at the end, in approval order. Selecting nothing, an unknown site, cluster or
    id, or invalid site settings are `ReviewError`s (or `UnknownSite`) before anything changes.
    """
    selected = _select(store, "approve", ids=ids, site=site, cluster=cluster, all_drafts=all_drafts)
    letter = _variant_letter(variant or DEFAULT_VARIANT)
    actor = actor or default_actor()
    sites = {row.id: row for row in (store.site(slug) for slug in sorted({slug for _, slug in selected}))}
    schedules = {site_id: _schedule(row) for site_id, row in sites.items()}
    outcomes: list[ReviewOutcome] = []
    touched: set[int] = set()
    for content, slug in selected:
        try:
            done = _approve(store, load_article(store, content.id), letter, actor, now)
        except ReviewError as error:
            outcomes.append(ReviewOutcome(content.id, slug, skipped=_reason(content.id, error)))
        else:
            outcomes.append(ReviewOutcome(content.id, slug, done=done))
            touched.add(content.site_id)
    # Once per site, after every approval: the slots follow approval order across the whole batch.
    for site_id in sorted(touched):
        store.assign_publish_slots(site_id, schedules[site_id], now or utcnow())
    zones = {site_id: _zone(schedule) for site_id, schedule in schedules.items()}
    slotted = {t.content_id: t for t in _with_slots(store, [o.done for o in outcomes if o.done], zones)}
    return [replace(o, done=slotted[o.content_id]) if o.done else o for o in outcomes]


def reject_many(
    store: Store,
    *,
    note: str,
    ids: Sequence[int] | None = None,
    site: str | None = None,
    cluster: int | str | None = None,
    all_drafts: bool = False,
    actor: str | None = None,
) -> list[ReviewOutcome]:
    """Reject the selected articles one by one with the same `note`; the others are skipped with the reason.

    Selection as in `approve_many` (`all_drafts`: the site's drafts; by ids or cluster, approved articles
    too). Each article is its own transition with its own review event and `actor`.
    """
    note = _rejection_note(None, note)
    selected = _select(store, "reject", ids=ids, site=site, cluster=cluster, all_drafts=all_drafts)
    actor = actor or default_actor()
    outcomes: list[ReviewOutcome] = []
    for content, slug in selected:
        try:
            article = load_article(store, content.id)
            _check_allowed(article, "reject")
            done = _reject(store, article, note, actor)
        except ReviewError as error:
            outcomes.append(ReviewOutcome(content.id, slug, skipped=_reason(content.id, error)))
        else:
            outcomes.append(ReviewOutcome(content.id, slug, done=done))
    return outcomes


def publishable(store: Store, content_id: int, *, variant: str | None = None) -> tuple[Article, ContentVariant]:
    """The article and the variant `approved -> published` would export, or the error saying why not.

    The variant defaults to the one approved; asking for another one is refused.
    """
    article = load_article(store, content_id)
    _check_allowed(article, "publish")
    return article, article.variant(_publish_variant(store, article, variant))


def published_variant(article: Article) -> ContentVariant:
    """The variant a `published` article shows (to push it again); `InvalidTransition` if it is not published
    or is being regenerated."""
    content = article.content
    if content.regeneration_run_id:
        raise InvalidTransition(
            f"content {content.id} is being regenerated by run {content.regeneration_run_id}; "
            "publish it again once the run has finished"
        )
    if content.status != ContentStatus.PUBLISHED or content.published_version is None:
        raise InvalidTransition(f"content {content.id} is '{content.status}', not published")
    for variant in article.variants:
        if (variant.version, variant.variant) == (content.published_version, content.published_variant):
            return variant
    raise PublishError(
        f"content {content.id}: its published version {content.published_version} variant "
        f"{content.published_variant} no longer exists"
    )


def mark_published(
    store: Store, article: Article, chosen: ContentVariant, *, published_at: datetime, actor: str | None = None
) -> None:
    """approved -> published for `chosen`, once its export is in place; `InvalidTransition` if it changed."""
    moved = store.transition_content(
        article.content.id,
        ContentStatus.APPROVED,
        ContentStatus.PUBLISHED,
        actor=actor or default_actor(),
        version=chosen.version,
        variant=chosen.variant,
        changes={
            "published_at": published_at,
            "published_version": chosen.version,
            "published_variant": chosen.variant,
        },
    )
    if not moved:
        raise _changed_meanwhile(article, "publish")


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


def _reason(content_id: int, error: ReviewError) -> str:
    """The error's message without the article it names (a bulk report names it already)."""
    return str(error).removeprefix(f"content {content_id} ").removeprefix(f"content {content_id}: ")


def _select(
    store: Store,
    action: str,
    *,
    ids: Sequence[int] | None,
    site: str | None,
    cluster: int | str | None,
    all_drafts: bool,
) -> list[tuple[Content, str]]:
    """The articles a bulk action acts on, by id; `ReviewError` (or `UnknownSite`) naming what is wrong."""
    by_group = all_drafts or cluster is not None
    if not ids and not by_group:
        raise ReviewError(f"nothing selected to {action}: give content ids, or --site SLUG with --all or --cluster ID")
    if ids and by_group:
        raise ReviewError("give content ids or --all/--cluster, not both")
    if all_drafts and cluster is not None:
        raise ReviewError("give --all or --cluster, not both")
    if by_group and site is None:
        raise ReviewError("--all and --cluster need --site SLUG")
    site_row = store.site(site) if site is not None else None
    if ids:
        wanted = list(dict.fromkeys(ids))
        found = store.review_selection(ids=wanted)
        missing = sorted(set(wanted) - {content.id for content, _ in found})
        if missing:
            raise ReviewError(
                f"content {', '.join(map(str, missing))} does not exist; nothing was changed; see: pipeline review list"
            )
        if site_row is not None and (others := [str(c.id) for c, _ in found if c.site_id != site_row.id]):
            raise ReviewError(f"content {', '.join(others)} is not of site {site_row.slug}; nothing was changed")
        return found
    assert site_row is not None
    if cluster is not None:
        chosen = _cluster(store, site_row, cluster)
        found = store.review_selection(cluster_id=chosen.id)
        if not found:
            raise ReviewError(f"cluster {chosen.id} ({chosen.key}) of site {site_row.slug} has no articles to {action}")
        return found
    found = store.review_selection(site_id=site_row.id, status=ContentStatus.DRAFT)
    if not found:
        raise ReviewError(f"site {site_row.slug} has no drafts to {action}; see: pipeline review list --site {site}")
    return found


def _cluster(store: Store, site: Site, cluster: int | str) -> Cluster:
    """The site's cluster with this id (or, for text that is not a number, this key)."""
    text = str(cluster).strip()
    if text.isdigit():
        try:
            found = store.cluster(int(text))
        except LookupError:
            raise ReviewError(f"cluster {text} does not exist") from None
        if found.site_id != site.id:
            raise ReviewError(f"cluster {text} is not a cluster of site {site.slug}")
        return found
    for candidate in store.clusters(site.id):
        if candidate.key == text:
            return candidate
    raise ReviewError(f"site {site.slug} has no cluster with id or key {text!r}")


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


def _publish_variant(store: Store, article: Article, requested: str | None) -> str:
    """The variant to publish: the one approved for the current version, unless the request contradicts it."""
    approval = next(
        (e for e in reversed(store.review_events(article.content.id)) if e.to_status == ContentStatus.APPROVED), None
    )
    if approval is None or approval.variant is None:
        # Approved without a recorded variant (e.g. set outside the gate): fall back to the default.
        return _variant_letter(requested or DEFAULT_VARIANT)
    if approval.version != article.version:
        raise PublishError(
            f"content {article.content.id} was approved at version {approval.version} but its current version is "
            f"{article.version}; reject it and approve the current version"
        )
    if requested is not None and (letter := _variant_letter(requested)) != approval.variant:
        raise PublishError(
            f"content {article.content.id} was approved as variant {approval.variant}, not {letter}; "
            f"publish variant {approval.variant}, or reject it and approve variant {letter}"
        )
    return approval.variant

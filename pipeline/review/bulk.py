"""Bulk review: approve or reject articles selected by ids, by site or by cluster, one transition (with
its review event and actor) per article; what cannot be done to one article is reported, not raised."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime

from pipeline.models import Cluster, Content, ContentStatus, Site, utcnow
from pipeline.review.gate import (
    DEFAULT_VARIANT,
    _approve,
    _check_allowed,
    _reject,
    _rejection_note,
    _schedule,
    _variant_letter,
    _with_slots,
    _zone,
    default_actor,
    load_article,
)
from pipeline.review.model import ReviewError, ReviewOutcome
from pipeline.store import Store


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

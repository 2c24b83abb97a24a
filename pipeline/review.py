"""The review gate: an article's status machine, from draft to approved to published.

    draft --approve--> approved --publish--> published
    draft | approved --reject (with a note)--> draft
    published --> draft only when the article is regenerated (new versions), never from here

Every transition is a compare-and-set on the stored status together with a `review_events` row, in one
transaction (`Store.transition_content`). Approve and publish act on a variant of the current (highest)
version. Publishing itself (exporting the variant, then committing `approved -> published` through
`publishable` and `mark_published` here) is `pipeline.publishing`.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pipeline.models import Content, ContentStatus, ContentVariant, Idea, Image, ImagePrompt, ReviewEvent, Site
from pipeline.sites import slugify
from pipeline.store import Store

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

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (`updated` as ISO 8601)."""
        return {
            "id": self.id,
            "site": self.site,
            "title": self.title,
            "status": self.status,
            "version": self.version,
            "variants": list(self.variants),
            "updated": self.updated_at.isoformat(),
            "note": self.note,
        }


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


def review_list(store: Store, *, site: str | None = None, status: str | None = None) -> list[ReviewItem]:
    """The review queue: every article (optionally of one site and/or status) with its current version."""
    if status is not None and status not in STATUSES:
        raise ReviewError(f"unknown status {status!r}; use one of: {', '.join(STATUSES)}")
    site_id = store.site(site).id if site else None
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
    # article whose key an older article of the site already uses gets its id appended.
    slug = slugify(idea.key, max_length=120) or f"article-{content.id}"
    if store.has_earlier_article_with_idea_key(site.id, idea.key, content.id):
        slug = f"{slug}-{content.id}"
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


def approve(store: Store, content_id: int, *, variant: str | None = None, actor: str | None = None) -> Transition:
    """draft -> approved, for one variant of the current version (default A); clears the last rejection note."""
    article = load_article(store, content_id)
    _check_allowed(article, "approve")
    chosen = article.variant(_variant_letter(variant or DEFAULT_VARIANT))
    return _transition(
        store,
        article,
        "approve",
        version=chosen.version,
        variant=chosen.variant,
        actor=actor,
        changes={"review_note": None},
    )


def reject(store: Store, content_id: int, *, note: str, actor: str | None = None) -> Transition:
    """draft | approved -> draft with a note saying what to change (required; stored on the article)."""
    article = load_article(store, content_id)
    _check_allowed(article, "reject")
    note = (note or "").strip()
    if not note:
        raise InvalidTransition(f"content {content_id}: a rejection needs a note saying what to change (--note TEXT)")
    return _transition(
        store,
        article,
        "reject",
        version=article.version,
        variant=None,
        actor=actor,
        note=note,
        changes={"review_note": note},
    )


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

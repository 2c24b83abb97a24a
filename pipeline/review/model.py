"""The review gate's errors and the records it returns (`ReviewItem`, `Article`, `Transition`,
`ReviewOutcome`, `ArticleReview`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pipeline.models import Content, ContentStatus, ContentVariant, Idea, Image, ImagePrompt, ReviewEvent, Site


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

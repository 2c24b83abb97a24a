"""The content checks' model: the article as the checks see it, a failure, an outcome, and the registry
(`CHECKS`, in registration order) that `_check` fills."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.sites import SiteSettings
from pipeline.store.checks import CheckedImage


@dataclass(frozen=True)
class CheckedArticle:
    """One variant as the checks see it: its text, its article's slug and idea estimate, and its images."""

    content_id: int
    variant: str
    version: int
    slug: str
    title: str
    body_html: str
    meta_title: str
    meta_description: str
    primary_keyword: str
    word_count: int
    estimated_word_count: int
    images: tuple[CheckedImage, ...] = ()

    @property
    def label(self) -> str:
        """`#12 A`: the article number and variant letter, as every listing names it."""
        return f"#{self.content_id} {self.variant}"


@dataclass(frozen=True)
class CheckFailure:
    """One variant that failed a check: what was measured, against which limit."""

    content_id: int
    variant: str
    title: str
    detail: str  # e.g. "meta title 72 > 60 chars"
    measured: float | None = None
    limit: str | None = None

    def line(self) -> str:
        """`#12 A "Cold brew guide": meta title 72 > 60 chars` (plain text: escape it before rendering)."""
        return f'#{self.content_id} {self.variant} "{self.title}": {self.detail}'


@dataclass(frozen=True)
class CheckOutcome:
    """The result of one check over a site's current variants."""

    name: str
    description: str
    failures: list[CheckFailure]
    total: int  # variants checked
    notes: dict[str, Any] = field(default_factory=dict)  # what the check measured overall (mean score, ...)
    error: str | None = None  # the check itself could not run (it fails, naming why)

    @property
    def passed(self) -> bool:
        """The check ran and no variant failed."""
        return not self.failures and self.error is None

    @property
    def failing_articles(self) -> int:
        """Distinct variants with at least one failure."""
        return len({(f.content_id, f.variant) for f in self.failures})

    @property
    def pass_count(self) -> int:
        """Variants that passed."""
        return self.total - self.failing_articles

    def summary(self) -> str:
        """`meta_lengths: 18/20 passed` (or why the check could not run)."""
        if self.error is not None:
            return f"{self.name}: could not run ({self.error})"
        return f"{self.name}: {self.pass_count}/{self.total} passed"


CheckFunction = Callable[[Sequence[CheckedArticle], SiteSettings], CheckOutcome]


@dataclass(frozen=True)
class ContentCheck:
    """A registered check: its name (the asset check's name), what it proves, and its function."""

    name: str
    description: str
    run: CheckFunction


CHECKS: dict[str, ContentCheck] = {}


def _check(name: str, description: str) -> Callable[[CheckFunction], CheckFunction]:
    def register(function: CheckFunction) -> CheckFunction:
        CHECKS[name] = ContentCheck(name, description, function)
        return function

    return register


def _outcome(name: str, articles: Sequence[CheckedArticle], failures: list[CheckFailure], **notes: Any) -> CheckOutcome:
    return CheckOutcome(name, CHECKS[name].description, failures, len(articles), dict(notes))


def _failure(
    article: CheckedArticle, detail: str, measured: float | None = None, limit: str | None = None
) -> CheckFailure:
    return CheckFailure(article.content_id, article.variant, article.title, detail, measured, limit)

"""Content checks: the reads the SEO checks on `content` need, one query per kind of row for a whole site,
and the stored results of their last run per site (for the review desk).

The outcomes to record are described by protocols, not imported: `pipeline.content_checks` imports this
module, so its `CheckOutcome` and `CheckFailure` satisfy `ReportedOutcome` and `ReportedFailure` as they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple, Protocol

from sqlalchemy import delete, func, select

from pipeline.models import CheckResult, Content, ContentVariant, FailedCheck, Idea, Image, ImagePrompt, as_utc, utcnow
from pipeline.store.base import StoreBase, _current_variants, table


@dataclass(frozen=True)
class CheckedVariant:
    """One variant of an article's current version, with what the checks read from its article and idea."""

    variant: ContentVariant
    status: str
    idea_key: str
    estimated_word_count: int


@dataclass(frozen=True)
class CheckedImage:
    """One image prompt of a current variant, and the path of its image file (None when not generated)."""

    variant_id: int
    kind: str
    position: int
    alt_text: str
    path: str | None


class ReportedFailure(Protocol):
    """One failing variant of a check's outcome, as recorded (`pipeline.content_checks.CheckFailure`)."""

    @property
    def content_id(self) -> int: ...
    @property
    def variant(self) -> str: ...
    @property
    def detail(self) -> str: ...


class ReportedOutcome(Protocol):
    """One check's outcome over a site, as recorded (`pipeline.content_checks.CheckOutcome`)."""

    @property
    def name(self) -> str: ...
    @property
    def passed(self) -> bool: ...
    @property
    def total(self) -> int: ...
    @property
    def failing_articles(self) -> int: ...
    @property
    def error(self) -> str | None: ...
    @property
    def failures(self) -> Sequence[ReportedFailure]: ...


class ArticleCheckFailure(NamedTuple):
    """A stored failure of an article's current version: which check, which variant, and why."""

    check_name: str
    variant: str
    version: int
    detail: str


class SiteCheckResult(NamedTuple):
    """A check's last stored run over a site."""

    check_name: str
    passed: bool
    total: int
    failing_articles: int
    error: str | None
    ran_at: datetime


class ChecksStore(StoreBase):
    """Read-only views of a site's current articles for `pipeline.content_checks`, and the stored results of
    the checks' last run per site."""

    def variants_for_checks(self, site_id: int) -> list[CheckedVariant]:
        """Every variant of every article's current version of a site, with status and idea, in one query."""
        statement = (
            _current_variants()
            .add_columns(Content.status, Idea.key, Idea.estimated_word_count)
            .join(Idea, Idea.id == Content.idea_id)
            .where(Content.site_id == site_id)
            .order_by(ContentVariant.content_id, ContentVariant.variant)
        )
        with self._sessions() as session:
            rows = session.execute(statement).all()
        return [CheckedVariant(variant, status, key, estimate) for variant, status, key, estimate in rows]

    def images_for_checks(self, site_id: int) -> list[CheckedImage]:
        """Every image prompt of a site with its image file path (None when it has no image), in one query."""
        statement = (
            select(ImagePrompt.variant_id, ImagePrompt.kind, ImagePrompt.position, ImagePrompt.alt_text, Image.path)
            .outerjoin(Image, Image.image_prompt_id == ImagePrompt.id)
            .where(ImagePrompt.site_id == site_id)
            .order_by(ImagePrompt.variant_id, ImagePrompt.kind, ImagePrompt.position)
        )
        with self._sessions() as session:
            return [CheckedImage(*row) for row in session.execute(statement).all()]

    def record_check_outcomes(
        self, site_id: int, outcomes: Sequence[ReportedOutcome], ran_at: datetime | None = None
    ) -> None:
        """Store `outcomes` as the site's check results, replacing the previous run's in one transaction.

        Each failure is recorded against its article's current version (the one the checks read), so a
        regenerated article's new version starts with no failures until the checks run again.
        """
        ran_at = ran_at or utcnow()
        with self.transaction() as session:
            # Two runs recording one site at once would otherwise interleave their deletes and inserts.
            self._lock_site(session, site_id)
            session.execute(delete(FailedCheck).where(FailedCheck.site_id == site_id))
            session.execute(delete(CheckResult).where(CheckResult.site_id == site_id))
            if not outcomes:
                return
            session.execute(
                table(CheckResult).insert(),
                [
                    {
                        "site_id": site_id,
                        "check_name": outcome.name,
                        "passed": outcome.passed,
                        "total": outcome.total,
                        "failing_articles": outcome.failing_articles,
                        "error": outcome.error,
                        "ran_at": ran_at,
                    }
                    for outcome in outcomes
                ],
            )
            current = dict(
                session.execute(
                    select(ContentVariant.content_id, func.max(ContentVariant.version))
                    .join(Content, Content.id == ContentVariant.content_id)
                    .where(Content.site_id == site_id)
                    .group_by(ContentVariant.content_id)
                ).all()
            )
            failures = [
                {
                    "site_id": site_id,
                    "check_name": outcome.name,
                    "content_id": failure.content_id,
                    "version": current[failure.content_id],
                    "variant": failure.variant,
                    "detail": failure.detail,
                }
                for outcome in outcomes
                for failure in outcome.failures
                if failure.content_id in current  # an article deleted since the checks read it
            ]
            if failures:
                session.execute(table(FailedCheck).insert(), failures)

    def article_check_failures(self, content_id: int) -> list[ArticleCheckFailure]:
        """The stored check failures of an article's current version, by check name, variant and detail."""
        newest = select(func.max(ContentVariant.version)).where(ContentVariant.content_id == content_id)
        statement = (
            select(FailedCheck.check_name, FailedCheck.variant, FailedCheck.version, FailedCheck.detail)
            .where(FailedCheck.content_id == content_id, FailedCheck.version == newest.scalar_subquery())
            .order_by(FailedCheck.check_name, FailedCheck.variant, FailedCheck.id)
        )
        with self._sessions() as session:
            return [ArticleCheckFailure(*row) for row in session.execute(statement).all()]

    def site_check_summary(self, site_id: int) -> list[SiteCheckResult]:
        """The site's stored check results, in the order the checks ran (empty before the first run)."""
        statement = (
            select(
                CheckResult.check_name,
                CheckResult.passed,
                CheckResult.total,
                CheckResult.failing_articles,
                CheckResult.error,
                CheckResult.ran_at,
            )
            .where(CheckResult.site_id == site_id)
            .order_by(CheckResult.id)
        )
        with self._sessions() as session:
            rows = session.execute(statement).all()
        return [SiteCheckResult(*row[:5], as_utc(row[5])) for row in rows]

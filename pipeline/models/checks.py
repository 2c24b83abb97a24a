"""Content check tables: each check's last result per site and the variants that failed it."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from pipeline.models.base import Base


class CheckResult(Base):
    """The last run of one content check over one site: passed or not, over how many variants, and why it
    could not run (`error`). A site's rows are replaced as a whole by each run of the checks."""

    __tablename__ = "check_results"
    __table_args__ = (UniqueConstraint("site_id", "check_name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"), index=True)
    check_name: Mapped[str] = mapped_column(String(80))
    passed: Mapped[bool]
    total: Mapped[int]
    failing_articles: Mapped[int]
    error: Mapped[str | None] = mapped_column(Text)
    ran_at: Mapped[datetime]


class FailedCheck(Base):
    """One variant of an article's version that failed a content check in its site's last run, and why.

    Replaced with the site's `CheckResult` rows; the indexes answer "what fails on this article" (the desk's
    article page) and "which articles fail check X on site S" (the desk's filter).
    """

    __tablename__ = "check_failures"
    __table_args__ = (
        Index("ix_check_failures_content_version", "content_id", "version"),
        Index("ix_check_failures_site_check", "site_id", "check_name", "content_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"))
    check_name: Mapped[str] = mapped_column(String(80))
    content_id: Mapped[int] = mapped_column(ForeignKey("content.id", ondelete="CASCADE"))
    version: Mapped[int]
    variant: Mapped[str] = mapped_column(String(1))
    detail: Mapped[str] = mapped_column(Text)

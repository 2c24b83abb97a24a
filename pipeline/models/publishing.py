"""Publishing tables: articles on publishing targets and the media uploaded to them."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from pipeline.models.base import Base, utcnow


class Publication(Base):
    """An article on one publishing target (`folder`, `wordpress`): where it is and which version it shows.

    One row per article and target. `remote_id` is the target's own id (a WordPress post id), recorded as
    soon as the target has one, so a re-run, a new version and a retry after a failure update that post
    instead of posting again. `version`/`variant` say what the target shows once `state` is `done`;
    `pending` means a push started and did not finish (the next run completes it); `error` says why the
    last push failed.
    """

    __tablename__ = "publications"
    __table_args__ = (UniqueConstraint("content_id", "target"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    content_id: Mapped[int] = mapped_column(ForeignKey("content.id", ondelete="CASCADE"), index=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"), index=True)
    target: Mapped[str] = mapped_column(String(40))
    # Where the target is (the WordPress URL, the folder): rows recorded for another destination are stale.
    destination: Mapped[str] = mapped_column(Text)
    remote_id: Mapped[str | None] = mapped_column(String(64))
    url: Mapped[str | None] = mapped_column(Text)
    remote_status: Mapped[str | None] = mapped_column(String(20))
    state: Mapped[str] = mapped_column(String(20))
    version: Mapped[int | None]
    variant: Mapped[str | None] = mapped_column(String(1))
    published_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class RemoteMedia(Base):
    """An image file uploaded to a target, keyed by its SHA-256: each file is uploaded once per destination."""

    __tablename__ = "remote_media"
    __table_args__ = (UniqueConstraint("site_id", "target", "destination", "checksum"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"), index=True)
    target: Mapped[str] = mapped_column(String(40))
    destination: Mapped[str] = mapped_column(Text)
    checksum: Mapped[str] = mapped_column(String(64))
    remote_id: Mapped[str] = mapped_column(String(64))
    url: Mapped[str] = mapped_column(Text)
    file_name: Mapped[str] = mapped_column(String(255))
    alt_text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

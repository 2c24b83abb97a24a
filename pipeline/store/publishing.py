"""Publishing: articles on targets (`publications`) and the media uploaded to them (`remote_media`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select

from pipeline.models import Content, ContentStatus, Publication, RemoteMedia, utcnow
from pipeline.store.base import StoreBase

# `publications.state`: a push that finished, one that started and did not (the next run completes it),
# and one that failed (`error` says why).
DONE, PENDING, FAILED = "done", "pending", "failed"


class PublishingStore(StoreBase):
    """Where each article is published, what each target shows, and which files a target already has."""

    def publication(self, content_id: int, target: str) -> Publication | None:
        """The article's row for `target` (`folder`, `wordpress`), or None if it was never pushed there."""
        with self._sessions() as session:
            return session.scalar(
                select(Publication).where(Publication.content_id == content_id, Publication.target == target)
            )

    def publication_rows(self, *, site_id: int | None = None, content_id: int | None = None) -> list[Publication]:
        """Publication rows of a site or an article, by article then target."""
        statement = select(Publication)
        if site_id is not None:
            statement = statement.where(Publication.site_id == site_id)
        if content_id is not None:
            statement = statement.where(Publication.content_id == content_id)
        with self._sessions() as session:
            return list(session.scalars(statement.order_by(Publication.content_id, Publication.target)))

    def record_publication(
        self, content_id: int, site_id: int, target: str, destination: str, **fields: Any
    ) -> Publication:
        """Create or update the article's row for `target` with `fields`, committed at once (a remote id must
        be on record before anything else can fail)."""
        with self.transaction() as session:
            row = session.scalar(
                select(Publication)
                .where(Publication.content_id == content_id, Publication.target == target)
                .with_for_update()
            )
            if row is None:
                row = Publication(content_id=content_id, site_id=site_id, target=target, destination=destination)
                session.add(row)
            row.destination = destination
            for name, value in fields.items():
                setattr(row, name, value)
            row.updated_at = utcnow()
            session.flush()
            return row

    def remote_media(self, site_id: int, target: str, destination: str, checksum: str) -> RemoteMedia | None:
        """The file with this SHA-256 as uploaded to the destination, or None."""
        with self._sessions() as session:
            return session.scalar(
                select(RemoteMedia).where(
                    RemoteMedia.site_id == site_id,
                    RemoteMedia.target == target,
                    RemoteMedia.destination == destination,
                    RemoteMedia.checksum == checksum,
                )
            )

    def record_remote_media(
        self,
        site_id: int,
        target: str,
        destination: str,
        checksum: str,
        *,
        remote_id: str,
        url: str,
        file_name: str,
        alt_text: str,
    ) -> None:
        """Remember an uploaded file (replacing a record of one the target no longer has)."""
        with self.transaction() as session:
            row = session.scalar(
                select(RemoteMedia).where(
                    RemoteMedia.site_id == site_id,
                    RemoteMedia.target == target,
                    RemoteMedia.destination == destination,
                    RemoteMedia.checksum == checksum,
                )
            )
            if row is None:
                row = RemoteMedia(site_id=site_id, target=target, destination=destination, checksum=checksum)
                session.add(row)
            row.remote_id, row.url, row.file_name, row.alt_text = remote_id, url, file_name, alt_text

    def forget_remote_media(self, site_id: int, target: str, destination: str, checksum: str) -> None:
        """Drop the record of an uploaded file the target no longer has (deleted there)."""
        with self.transaction() as session:
            row = session.scalar(
                select(RemoteMedia).where(
                    RemoteMedia.site_id == site_id,
                    RemoteMedia.target == target,
                    RemoteMedia.destination == destination,
                    RemoteMedia.checksum == checksum,
                )
            )
            if row is not None:
                session.delete(row)

    def published_behind_targets(self, site_id: int, targets: Sequence[tuple[str, str]]) -> list[int]:
        """Published articles of the site that some target (name, destination) does not show at their
        published version: a target added later, a push that failed after the status moved, a moved target."""
        if not targets:
            return []
        with self._sessions() as session:
            ids: set[int] = set()
            for target, destination in targets:
                current = (
                    select(Publication.id)
                    .where(
                        Publication.content_id == Content.id,
                        Publication.target == target,
                        Publication.destination == destination,
                        Publication.state == DONE,
                        Publication.version == Content.published_version,
                        Publication.variant == Content.published_variant,
                    )
                    .exists()
                )
                ids.update(
                    session.scalars(
                        select(Content.id).where(
                            Content.site_id == site_id,
                            Content.status == ContentStatus.PUBLISHED,
                            Content.regeneration_run_id.is_(None),
                            ~current,
                        )
                    )
                )
            return sorted(ids)

    def failed_publications(self, site_id: int) -> list[Publication]:
        """The site's publications whose last push failed or did not finish, by article."""
        with self._sessions() as session:
            return list(
                session.scalars(
                    select(Publication)
                    .where(Publication.site_id == site_id, Publication.state.in_((FAILED, PENDING)))
                    .order_by(Publication.content_id, Publication.target)
                )
            )

    def count_approved(self, site_id: int) -> int:
        """How many of the site's articles are `approved` (waiting for their slot or for a publishing run)."""
        with self._sessions() as session:
            return int(
                session.scalar(
                    select(func.count())
                    .select_from(Content)
                    .where(Content.site_id == site_id, Content.status == ContentStatus.APPROVED)
                )
                or 0
            )

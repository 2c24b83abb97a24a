"""The publishing calendar: approval order, slots, and the articles whose slot has come."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from pipeline.models import Content, ContentStatus, as_utc
from pipeline.sites import ScheduleSettings
from pipeline.store.base import StoreBase, affected


class CalendarStore(StoreBase):
    """Slots of approved articles and what is due for publishing."""

    def assign_publish_slots(self, site_id: int, schedule: ScheduleSettings | None, now: datetime) -> int:
        """Give every approved article of the site that has no slot one, in approval order; returns how many.

        Approval order is `approved_at`, then id (articles approved before the calendar existed have no
        `approved_at` and come first). Without a schedule the slot is the approval time: due at once. With
        one, the articles take the first free slots after the later of `now` and the latest slot already
        given to an approved or published article of the site, one article per slot. Slots already given
        are never moved: a passed slot of a still-approved article stays due until it is published.
        """
        # Imported here: `pipeline.publishing` imports the review gate, which imports this store.
        from pipeline.publishing.calendar import slots_after

        with self.transaction() as session:
            self._serialise_calendar(session, site_id)
            waiting = session.execute(
                select(Content.id, Content.approved_at)
                .where(
                    Content.site_id == site_id,
                    Content.status == ContentStatus.APPROVED,
                    Content.publish_slot.is_(None),
                )
                .order_by(Content.approved_at.asc().nulls_first(), Content.id)
            ).all()
            if not waiting:
                return 0
            now = now.astimezone(UTC)
            if schedule is None:
                slots = [as_utc(approved_at) if approved_at else now for _, approved_at in waiting]
            else:
                latest = session.scalar(
                    select(func.max(Content.publish_slot)).where(
                        Content.site_id == site_id,
                        Content.status.in_([ContentStatus.APPROVED, ContentStatus.PUBLISHED]),
                    )
                )
                start = max(now, as_utc(latest)) if latest is not None else now
                slots = slots_after(schedule, start, len(waiting))
            assigned = 0
            for (content_id, _), slot in zip(waiting, slots, strict=True):
                # Still approved and still without a slot: a reject or regeneration meanwhile wins.
                assigned += affected(
                    session.execute(
                        update(Content)
                        .where(
                            Content.id == content_id,
                            Content.status == ContentStatus.APPROVED,
                            Content.publish_slot.is_(None),
                        )
                        .values(publish_slot=slot)
                    )
                )
            return assigned

    def due_for_publishing(self, site_id: int, now: datetime) -> list[int]:
        """Ids of the site's approved articles whose slot is at or before `now`, by slot then id.

        An article whose slot passed without being published (its target was down) is returned again on
        every call until it is published or rejected: a missed slot is retried, never skipped.
        """
        with self._sessions() as session:
            return list(
                session.scalars(
                    select(Content.id)
                    .where(
                        Content.site_id == site_id,
                        Content.status == ContentStatus.APPROVED,
                        Content.publish_slot <= now.astimezone(UTC),
                    )
                    .order_by(Content.publish_slot, Content.id)
                )
            )

    def publishing_queue(self, site_id: int) -> list[tuple[int, datetime | None]]:
        """The site's approved articles as (id, slot) in publishing order; those still without a slot last."""
        with self._sessions() as session:
            rows = session.execute(
                select(Content.id, Content.publish_slot)
                .where(Content.site_id == site_id, Content.status == ContentStatus.APPROVED)
                .order_by(Content.publish_slot.asc().nulls_last(), Content.id)
            ).all()
        return [(content_id, as_utc(slot) if slot else None) for content_id, slot in rows]

    def _serialise_calendar(self, session: Session, site_id: int) -> None:
        """Make concurrent slot assignments of one site run one after the other, so no slot is given twice.

        PostgreSQL: the site's advisory lock. SQLite: a write that matches no row takes the database write
        lock now, before the reads, so they see every committed slot and a concurrent assignment waits.
        """
        if session.get_bind().dialect.name == "postgresql":
            self._lock_site(session, site_id)
        else:
            session.execute(update(Content).where(Content.id == -1).values(publish_slot=None))

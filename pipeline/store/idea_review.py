"""Idea review: which ideas may be written (`approved`), which wait (`proposed`), which were turned down.

A site with `ideas_need_approval` gets its new ideas as `proposed`; only `approved` ideas get articles.
Decisions are made in bulk (ids, or every proposed idea of a cluster), each in one transaction: all the
named ideas change, or none does and the error names the ideas at fault.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from pipeline.models import Cluster, Content, Idea, IdeaStatus, utcnow
from pipeline.store.base import StoreBase, _chunks

IDEA_STATUSES = tuple(s.value for s in IdeaStatus)
MAX_IDEAS_PER_DECISION = 5000


class IdeaReviewError(ValueError):
    """An idea decision that cannot be made (unknown ids, an idea already written...); nothing changed."""


@dataclass(frozen=True)
class IdeaRow:
    """One idea as the review lists show it."""

    id: int
    site_id: int
    cluster_id: int
    cluster_name: str | None
    title: str
    content_type: str
    target_keywords: list[str]
    estimated_word_count: int
    status: str
    reviewed_by: str | None
    reviewed_at: str | None
    review_note: str | None
    content_id: int | None

    def as_dict(self) -> dict[str, object]:
        """Plain values for JSON output."""
        return dict(self.__dict__)


class IdeaReviewStore(StoreBase):
    """Ideas by review status, and the approve / reject decisions on them."""

    def idea_rows(
        self, site_id: int | None = None, *, status: str | None = None, cluster_id: int | None = None
    ) -> list[IdeaRow]:
        """Ideas (of one site, a status, a cluster), by cluster volume then creation order, with their article id."""
        if status is not None and status not in IDEA_STATUSES:
            raise IdeaReviewError(f"unknown idea status {status!r}; use one of: {', '.join(IDEA_STATUSES)}")
        statement = (
            select(Idea, Cluster.name, Content.id)
            .join(Cluster, Cluster.id == Idea.cluster_id)
            .outerjoin(Content, Content.idea_id == Idea.id)
        )
        if site_id is not None:
            statement = statement.where(Idea.site_id == site_id)
        if status is not None:
            statement = statement.where(Idea.status == status)
        if cluster_id is not None:
            statement = statement.where(Idea.cluster_id == cluster_id)
        statement = statement.order_by(Idea.site_id, Cluster.total_volume.desc(), Cluster.key, Idea.id)
        with self._sessions() as session:
            rows = session.execute(statement).all()
        return [
            IdeaRow(
                id=idea.id,
                site_id=idea.site_id,
                cluster_id=idea.cluster_id,
                cluster_name=name,
                title=idea.title,
                content_type=idea.content_type,
                target_keywords=list(idea.target_keywords),
                estimated_word_count=idea.estimated_word_count,
                status=idea.status,
                reviewed_by=idea.reviewed_by,
                reviewed_at=idea.reviewed_at.isoformat() if idea.reviewed_at else None,
                review_note=idea.review_note,
                content_id=content_id,
            )
            for idea, name, content_id in rows
        ]

    def idea_status_counts(self, site_id: int) -> dict[str, int]:
        """How many ideas of a site are in each status (every status named, 0 when none)."""
        with self._sessions() as session:
            rows = session.execute(
                select(Idea.status, func.count()).where(Idea.site_id == site_id).group_by(Idea.status)
            ).all()
        return {status: 0 for status in IDEA_STATUSES} | {status: int(count) for status, count in rows}

    def proposed_ideas_without_content(self, site_id: int) -> list[Idea]:
        """Ideas waiting for approval that have no article (what approving them would get written)."""
        with self._sessions() as session:
            has_content = select(Content.id).where(Content.idea_id == Idea.id).exists()
            statement = (
                select(Idea)
                .where(Idea.site_id == site_id, Idea.status == IdeaStatus.PROPOSED.value, ~has_content)
                .order_by(Idea.id)
            )
            return list(session.scalars(statement))

    def decide_ideas(
        self,
        decision: IdeaStatus,
        *,
        actor: str,
        note: str | None = None,
        ids: Sequence[int] = (),
        site_id: int | None = None,
        cluster_id: int | None = None,
    ) -> list[int]:
        """Approve or reject ideas named by `ids`, or every proposed idea of `cluster_id`; returns their ids.

        Approving a rejected idea is a re-decision and allowed; rejecting an idea that already has an
        article is refused. One transaction: an error (unknown ids, ideas of another site, a written idea)
        changes nothing and names every idea at fault.
        """
        if decision not in (IdeaStatus.APPROVED, IdeaStatus.REJECTED):
            raise IdeaReviewError(f"an idea can be approved or rejected, not set to {decision!s}")
        if decision is IdeaStatus.REJECTED and not (note or "").strip():
            raise IdeaReviewError("rejecting ideas needs a note saying why")
        if bool(ids) == (cluster_id is not None):
            raise IdeaReviewError("name the ideas: give idea ids or a cluster, not both and not neither")
        wanted = sorted(set(ids))
        if len(wanted) > MAX_IDEAS_PER_DECISION:
            raise IdeaReviewError(f"at most {MAX_IDEAS_PER_DECISION} ideas at a time, not {len(wanted)}")
        with self.transaction() as session:
            if site_id is not None:
                self._lock_site(session, site_id)
            if cluster_id is not None:
                cluster = session.get(Cluster, cluster_id)
                if cluster is None or (site_id is not None and cluster.site_id != site_id):
                    raise IdeaReviewError(f"cluster {cluster_id} does not exist" + (" on this site" if site_id else ""))
                ideas = list(
                    session.scalars(
                        select(Idea)
                        .where(Idea.cluster_id == cluster_id, Idea.status == IdeaStatus.PROPOSED.value)
                        .order_by(Idea.id)
                        .with_for_update()
                    )
                )
            else:
                ideas = []
                for chunk in _chunks(wanted, 500):
                    ideas += session.scalars(select(Idea).where(Idea.id.in_(chunk)).with_for_update())
                found = {idea.id for idea in ideas}
                missing = [i for i in wanted if i not in found]
                if missing:
                    raise IdeaReviewError(f"no idea with id {_listed(missing)}; nothing changed")
                if site_id is not None and (elsewhere := sorted(i.id for i in ideas if i.site_id != site_id)):
                    raise IdeaReviewError(f"idea {_listed(elsewhere)} belongs to another site; nothing changed")
            if decision is IdeaStatus.REJECTED:
                written = _written(session, [idea.id for idea in ideas])
                if written:
                    named = ", ".join(
                        f"{i.id} ({i.title!r}, article {written[i.id]})" for i in ideas if i.id in written
                    )
                    raise IdeaReviewError(
                        f"idea {named} already has an article and cannot be rejected (reject the article in "
                        "review instead); nothing changed"
                    )
            now = utcnow()
            for idea in ideas:
                idea.status, idea.reviewed_by, idea.reviewed_at = decision.value, actor, now
                idea.review_note = (note or "").strip() or None
            return sorted(idea.id for idea in ideas)


def _written(session: Session, idea_ids: Iterable[int]) -> dict[int, int]:
    """idea id -> article id, for those of `idea_ids` that have an article."""
    found: dict[int, int] = {}
    for chunk in _chunks(sorted(set(idea_ids)), 500):
        found.update(session.execute(select(Content.idea_id, Content.id).where(Content.idea_id.in_(chunk))).all())
    return found


def _listed(ids: Sequence[int], shown: int = 20) -> str:
    text = ", ".join(str(i) for i in ids[:shown])
    return text + (f" and {len(ids) - shown} more" if len(ids) > shown else "")

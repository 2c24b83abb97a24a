"""Monthly budgets: a site's spend this calendar month (UTC) and the blocks of it running engines reserve.

An engine does not write a row per call: it reserves a block of the site's monthly budget in
`budget_reservations` (one row per holder and partition) and draws its calls from it locally. Reserving
reads the month's ledger spend and the other holders' live reservations and writes the holder's row in one
transaction, serialised per partition (PostgreSQL: an advisory transaction lock; SQLite: the write lock,
taken by the transaction's first statement), so two runs can never both take the last of a budget.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from pipeline.models import BatchStatus, BudgetReservation, ModelBatch, ModelCall, utcnow
from pipeline.store.base import StoreBase

# PostgreSQL advisory-lock namespace of budget reservations (keyed by the partition's hash), beside the
# store's site locks (`_SITE_LOCK_NAMESPACE`): reserving serialises with other reservations only.
_BUDGET_LOCK_NAMESPACE = 7318


def month_bounds(when: datetime | None = None) -> tuple[datetime, datetime]:
    """The calendar month (UTC) holding `when` (default now): its first instant and the next month's."""
    when = (when or utcnow()).astimezone(UTC)
    start = when.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    following = (start + timedelta(days=32)).replace(day=1)
    return start, following


class BudgetsStore(StoreBase):
    """The month's spend of a partition and the monthly-budget reservations of running engines."""

    def month_spend(self, partition: str, when: datetime | None = None) -> float:
        """USD on the ledger for `partition` in the calendar month (UTC) of `when` (default now), plus the
        expected cost of its provider batches not yet ingested."""
        start, end = month_bounds(when)
        with self._sessions() as session:
            return _month_spend(session, partition, start, end)

    def live_reservations(self, partition: str, *, excluding: str | None = None) -> float:
        """USD reserved by live (unexpired) holders of `partition`, optionally without `excluding`."""
        with self._sessions() as session:
            return _live_reservations(session, partition, utcnow(), excluding)

    def reserve_budget(
        self,
        holder: str,
        partition: str,
        budget_usd: float,
        need_usd: float,
        want_usd: float,
        ttl_s: float,
        held_usd: float = 0.0,
    ) -> tuple[float, float, float]:
        """Set `holder`'s reservation on `partition` to at least `need_usd` (up to `want_usd`) if the month's
        spend plus the other holders' live reservations leave room for it within `budget_usd`.

        Returns (the holder's reservation now, the month's ledger spend, the other holders' live
        reservations). Refused when not even `need_usd` fits: the holder keeps `held_usd` (what is left of
        its block, paying for its calls in flight). One transaction, serialised with every other
        reservation of the partition.
        """
        now = utcnow()
        start, end = month_bounds(now)
        with self.transaction() as session:
            self._lock_budget(session, partition)
            # The first statement writes (SQLite takes its write lock here, before anything is read).
            session.execute(
                delete(BudgetReservation).where(
                    BudgetReservation.partition == partition, BudgetReservation.expires_at < now
                )
            )
            spent = _month_spend(session, partition, start, end)
            others = _live_reservations(session, partition, now, holder)
            room = round(budget_usd - spent - others, 8)
            mine = delete(BudgetReservation).where(
                BudgetReservation.holder == holder, BudgetReservation.partition == partition
            )
            granted = max(min(want_usd, room), need_usd) if need_usd <= room else held_usd
            session.execute(mine)
            session.add(
                BudgetReservation(
                    holder=holder,
                    partition=partition,
                    amount_usd=granted,
                    expires_at=now + timedelta(seconds=ttl_s),
                    updated_at=now,
                )
            )
            return (granted if need_usd <= room else 0.0), spent, others

    def shrink_reservation(self, holder: str, partition: str, amount_usd: float, ttl_s: float) -> None:
        """Set `holder`'s reservation to what is left of it (its calls' cost is on the ledger now) and
        extend its expiry. One statement: the engine calls it once per hand-over that paid for calls."""
        now = utcnow()
        with self.transaction() as session:
            session.execute(
                update(BudgetReservation)
                .where(BudgetReservation.holder == holder, BudgetReservation.partition == partition)
                .values(amount_usd=max(amount_usd, 0.0), expires_at=now + timedelta(seconds=ttl_s), updated_at=now)
            )

    def release_reservation(self, holder: str, partition: str) -> None:
        """Delete `holder`'s reservation (its engine closed: every call it paid for is on the ledger)."""
        with self.transaction() as session:
            session.execute(
                delete(BudgetReservation).where(
                    BudgetReservation.holder == holder, BudgetReservation.partition == partition
                )
            )

    def _lock_budget(self, session: Session, partition: str) -> None:
        if session.get_bind().dialect.name == "postgresql":
            session.execute(select(func.pg_advisory_xact_lock(_BUDGET_LOCK_NAMESPACE, func.hashtext(partition))))


def _month_spend(session: Session, partition: str, start: datetime, end: datetime) -> float:
    """The month's ledger spend, plus what the partition's batches not yet ingested are expected to cost
    (sent this month or earlier: their answers reach the ledger when ingested)."""
    total = session.scalar(
        select(func.sum(ModelCall.cost_usd)).where(
            ModelCall.partition == partition, ModelCall.created_at >= start, ModelCall.created_at < end
        )
    )
    in_batches = session.scalar(
        select(func.sum(ModelBatch.expected_cost_usd)).where(
            ModelBatch.partition == partition,
            ModelBatch.ingested_at.is_(None),
            ModelBatch.status != BatchStatus.ABANDONED,
            ModelBatch.created_at < end,
        )
    )
    return float(total or 0.0) + float(in_batches or 0.0)


def _live_reservations(session: Session, partition: str, now: datetime, excluding: str | None) -> float:
    statement = select(func.sum(BudgetReservation.amount_usd)).where(
        BudgetReservation.partition == partition, BudgetReservation.expires_at >= now
    )
    if excluding is not None:
        statement = statement.where(BudgetReservation.holder != excluding)
    return float(session.scalar(statement) or 0.0)

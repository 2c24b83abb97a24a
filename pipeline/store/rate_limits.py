"""Rate limits: token buckets in the store, so every process and worker using it shares one budget.

`take_rate` takes amounts from several buckets (an endpoint and model's request bucket and token bucket)
all-or-nothing, in one short transaction holding their rows: the first statement upserts them
(`INSERT … ON CONFLICT DO UPDATE … RETURNING`), which inserts missing buckets full and, on PostgreSQL,
locks existing rows like `SELECT … FOR UPDATE` would, in one round trip; on SQLite a writing first
statement takes the database's write lock, so takers are serialised there too.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from sqlalchemy import ColumnElement, Float, func, literal, update
from sqlalchemy.orm import Session

from pipeline.models import RateLimitBucket
from pipeline.store.base import StoreBase, table


class RateLimitsStore(StoreBase):
    """Token buckets of provider rate limits, shared by every process using the store."""

    def take_rate(self, amounts: Mapping[str, float], limits: Mapping[str, float], burst_s: float) -> float:
        """Take `amounts[key]` from each bucket `key` (refilled at `limits[key]` per minute, holding up to
        `burst_s` seconds of it) and return 0.0; or, if any does not hold enough yet, take nothing and
        return the seconds until all would.

        An amount larger than a bucket's capacity waits for a full bucket and empties it (one request
        bigger than the burst still runs). One transaction, serialised with every other taker of the keys.
        """
        keys = sorted(key for key, amount in amounts.items() if amount > 0 and limits.get(key))
        if not keys:
            return 0.0
        capacity = {key: limits[key] * burst_s / 60.0 for key in keys}
        with self.transaction() as session:
            state, now = self._lock_buckets(session, keys, limits, capacity)
            wait, levels = 0.0, {}
            for key in keys:
                level, updated = state[key]
                rate = limits[key] / 60.0
                level = min(capacity[key], level + max(now - updated, 0.0) * rate)
                need = min(amounts[key], capacity[key])
                wait = max(wait, (need - level) / rate if level < need else 0.0)
                levels[key] = level - need
            if wait > 0:
                return wait  # nothing taken; the refill is recomputed from `updated_at` next time
            session.execute(
                update(RateLimitBucket),
                [{"key": key, "level": levels[key], "updated_at": now} for key in keys],
            )
            return 0.0

    def _lock_buckets(
        self, session: Session, keys: list[str], limits: Mapping[str, float], capacity: Mapping[str, float]
    ) -> tuple[dict[str, tuple[float, float]], float]:
        """Insert missing buckets full and lock all of `keys` (sorted: takers lock in one order, never
        deadlocking); returns each one's (level, updated_at) and now, in epoch seconds."""
        postgres = session.get_bind().dialect.name == "postgresql"
        # PostgreSQL: the database server's clock, the one clock every worker machine shares, read per row
        # once it is locked (`clock_timestamp()`, not `now()`, which is frozen at the transaction's start).
        # SQLite: every process is on this one machine, so its clock is shared already; `time.time()` has
        # microseconds where `julianday('now')` has milliseconds.
        clock: ColumnElement[float] = (
            func.extract("epoch", func.clock_timestamp()).cast(Float) if postgres else literal(time.time(), Float)
        )
        buckets = table(RateLimitBucket)
        insert = self._insert(session)(buckets).values(
            [{"key": k, "level": capacity[k], "updated_at": clock, "per_minute": limits[k]} for k in keys]
        )
        # Updating `per_minute` (the limit last configured) is what makes the statement lock existing rows.
        statement = insert.on_conflict_do_update(
            index_elements=["key"], set_={"per_minute": insert.excluded.per_minute}
        ).returning(buckets.c.key, buckets.c.level, buckets.c.updated_at, clock.label("now"))
        rows = session.execute(statement).all()
        state = {row.key: (float(row.level), float(row.updated_at)) for row in rows}
        # SQLite: read after the write lock is held, so a taker that waited for it never refills from a
        # time already past.
        now = max(float(row.now) for row in rows) if postgres else time.time()
        # Clocks can step back (NTP); a bucket's own last write is a floor, so no refill is counted twice.
        return state, max([now, *(updated for _, updated in state.values())])

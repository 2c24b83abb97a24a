"""Rate limits: token buckets in the store, so every process and worker using it shares one budget.

`take_rate` takes amounts from several buckets (an endpoint and model's request bucket and token bucket)
all-or-nothing, in one short transaction holding their rows: the first statement upserts them
(`INSERT … ON CONFLICT DO UPDATE … RETURNING`), which inserts missing buckets full and, on PostgreSQL,
locks existing rows as `SELECT … FOR UPDATE` would, in one round trip; on SQLite a writing first
statement takes the database's write lock, so takers are serialised there too. A second statement writes
the new levels, only when everything was taken.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping
from typing import Any

from sqlalchemy import TextClause, text

from pipeline.store.base import StoreBase

# PostgreSQL: the database server's clock, the one clock every worker machine shares, read per row once
# it is locked (`clock_timestamp()`, not `now()`, which is frozen at the transaction's start). SQLite: all
# processes are on this one machine, so its clock is shared already; `time.time()`, read once the write
# lock is held, has microseconds where `julianday('now')` has milliseconds.
_CLOCK = {"postgresql": "extract(epoch FROM clock_timestamp())::float8", "sqlite": ":now"}


class RateLimitsStore(StoreBase):
    """Token buckets of provider rate limits, shared by every process using the store."""

    def take_rate(self, amounts: Mapping[str, float], limits: Mapping[str, float], burst_s: float) -> float:
        """Take `amounts[key]` from each bucket `key` (refilled at `limits[key]` per minute, holding up to
        `burst_s` seconds of it) and return 0.0; or, if any does not hold enough yet, take nothing and
        return the seconds until all would.

        An amount larger than a bucket's capacity waits for a full bucket and empties it (one request
        bigger than the burst still runs). One transaction, serialised with every other taker of the keys.
        """
        # Sorted: takers lock rows in one order, so two never deadlock.
        keys = sorted(key for key, amount in amounts.items() if amount > 0 and limits.get(key))
        if not keys:
            return 0.0
        capacity = {key: limits[key] * burst_s / 60.0 for key in keys}
        dialect = self.engine.dialect.name
        numbered = {f"k{n}": key for n, key in enumerate(keys)}
        # A connection rather than an ORM session, and SQL text cached per dialect and bucket count: built
        # and compiled per call, the Core statements cost ~1 ms of Python, far more than the database.
        with self.engine.begin() as connection:
            values: dict[str, Any] = {"now": time.time()}
            for name, key in numbered.items():
                values |= {name: key, f"c_{name}": capacity[key], f"p_{name}": limits[key]}
            rows = connection.execute(_upsert(dialect, len(keys)), values).all()
            state = {row.key: (float(row.level), float(row.updated_at)) for row in rows}
            now = max(float(row.now) for row in rows) if dialect == "postgresql" else time.time()
            # Clocks can step back (NTP): a bucket's own last write is a floor, so no refill counts twice.
            now = max([now, *(updated for _, updated in state.values())])
            wait, levels = 0.0, {}
            for name, key in numbered.items():
                level, updated = state[key]
                rate = limits[key] / 60.0
                level = min(capacity[key], level + (now - updated) * rate)
                need = min(amounts[key], capacity[key])
                wait = max(wait, (need - level) / rate if level < need else 0.0)
                levels[f"l_{name}"] = level - need
            if wait > 0:
                return wait  # nothing taken; the refill is recomputed from `updated_at` next time
            connection.execute(_update(len(keys)), {**numbered, **levels, "now": now})
            return 0.0


@functools.cache
def _upsert(dialect: str, count: int) -> TextClause:
    """Insert `count` buckets full unless present (then only `per_minute` is set, which locks the row),
    returning each one's level, last write and the clock."""
    rows = ", ".join(f"(:k{n}, :c_k{n}, {_CLOCK[dialect]}, :p_k{n})" for n in range(count))
    # PostgreSQL: losing the last takes to a server crash only leaves a bucket fuller than it was, so the
    # commit need not wait for the WAL flush. Sent with the upsert (psycopg2 runs both, returns the
    # second's rows) to save a round trip.
    prefix = "SET LOCAL synchronous_commit = off; " if dialect == "postgresql" else ""
    return text(
        f"{prefix}INSERT INTO rate_limit_buckets (key, level, updated_at, per_minute) VALUES {rows} "
        "ON CONFLICT (key) DO UPDATE SET per_minute = excluded.per_minute "
        f"RETURNING key, level, updated_at, {_CLOCK[dialect]} AS now"
    )


@functools.cache
def _update(count: int) -> TextClause:
    """Set `count` buckets' levels, all written at `now`, in one statement."""
    cases = " ".join(f"WHEN :k{n} THEN :l_k{n}" for n in range(count))
    keys = ", ".join(f":k{n}" for n in range(count))
    return text(f"UPDATE rate_limit_buckets SET level = CASE key {cases} END, updated_at = :now WHERE key IN ({keys})")

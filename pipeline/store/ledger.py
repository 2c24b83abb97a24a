"""The call ledger: model calls and their cost, item leases that keep two runs from paying for one item,
and the response cache (with its clean-up)."""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from pipeline.models import (
    ItemLease,
    ModelCall,
    ResponseCache,
    utcnow,
)
from pipeline.store.base import StoreBase, _chunks, affected, table


class LedgerStore(StoreBase):
    """Model calls, leases, the response cache and run cost."""

    def record_calls(
        self, calls: Sequence[Mapping[str, Any]], cache: Sequence[Mapping[str, Any]] = (), hits: Sequence[str] = ()
    ) -> None:
        """Append ledger rows, store accepted answers in the response cache and count cache hits, in one
        transaction (the engine batches these so the store is not a per-call bottleneck)."""
        if not calls and not cache and not hits:
            return
        with self.transaction() as session:
            now = utcnow()
            if calls:
                session.execute(table(ModelCall).insert(), [{"created_at": now, **values} for values in calls])
            # In key order: two runs caching or hitting the same answers then lock those rows in the same
            # order, so their batches queue instead of deadlocking (PostgreSQL). One statement with many
            # parameter sets: a multi-row VALUES would be compiled again for every batch size.
            unique = {entry["key"]: entry for entry in cache}
            if unique:
                rows = [
                    {**entry, "hits": 0, "created_at": now, "last_used_at": now}
                    for entry in sorted(unique.values(), key=lambda entry: entry["key"])
                ]
                session.execute(_cache_upsert(session.get_bind().dialect.name), rows)
            for key, count in sorted(Counter(hits).items()):
                session.execute(
                    update(ResponseCache)
                    .where(ResponseCache.key == key)
                    .values(hits=ResponseCache.hits + count, last_used_at=now)
                )

    def run_cost(self, run_id: str) -> float:
        """USD spent so far by one run, from the ledger (all its assets, all its processes)."""
        with self._sessions() as session:
            total = session.scalar(select(func.sum(ModelCall.cost_usd)).where(ModelCall.run_id == run_id))
            return float(total or 0.0)

    def model_calls(self, *, partition: str | None = None, run_id: str | None = None) -> list[ModelCall]:
        """Ledger rows, optionally for one partition and/or run, oldest first."""
        with self._sessions() as session:
            statement = select(ModelCall).order_by(ModelCall.id)
            if partition is not None:
                statement = statement.where(ModelCall.partition == partition)
            if run_id is not None:
                statement = statement.where(ModelCall.run_id == run_id)
            return list(session.scalars(statement))

    def claim_items(
        self,
        stage: str,
        partition: str,
        refs: Sequence[str],
        holder: str,
        ttl_s: float,
        take_over: Sequence[str] = (),
    ) -> set[str]:
        """Claim items before paying for their model calls; returns the refs `holder` now holds.

        An item is granted when nobody holds it, its lease expired (a crashed run), `holder` already holds
        it, or its holder is in `take_over` (holders known to be dead). Inserts that lose a race do nothing
        (`ON CONFLICT DO NOTHING`), so two runs started together split the work instead of paying twice;
        the same on SQLite and PostgreSQL.
        """
        if not refs:
            return set()
        now = utcnow()
        expires = now + timedelta(seconds=ttl_s)
        granted: set[str] = set()
        with self.transaction() as session:
            insert = _lease_insert(session.get_bind().dialect.name)
            for chunk in _chunks(sorted(set(refs)), 500):
                rows = [
                    {"stage": stage, "partition": partition, "item_ref": ref, "holder": holder, "expires_at": expires}
                    for ref in chunk
                ]
                # One statement in the common case (nobody holds them); only conflicts look further.
                granted.update(session.scalars(insert, rows))
                held = [ref for ref in chunk if ref not in granted]
                if held:
                    taken = (
                        update(ItemLease)
                        .where(
                            ItemLease.stage == stage,
                            ItemLease.partition == partition,
                            ItemLease.item_ref.in_(held),
                            (ItemLease.expires_at < now) | ItemLease.holder.in_([holder, *take_over]),
                        )
                        .values(holder=holder, expires_at=expires)
                        .returning(ItemLease.item_ref)
                    )
                    granted.update(session.scalars(taken))
        return granted

    def release_leases(self, holder: str) -> None:
        """Release every lease `holder` holds (its stage is over: finished items are stored by now)."""
        with self.transaction() as session:
            session.execute(delete(ItemLease).where(ItemLease.holder == holder))

    def lease_holders(self, stage: str, partition: str, refs: Sequence[str]) -> dict[str, str]:
        """Who holds each of `refs` (unexpired or not): item ref -> holder."""
        holders: dict[str, str] = {}
        with self._sessions() as session:
            for chunk in _chunks(sorted(set(refs)), 500):
                rows = session.execute(
                    select(ItemLease.item_ref, ItemLease.holder).where(
                        ItemLease.stage == stage, ItemLease.partition == partition, ItemLease.item_ref.in_(chunk)
                    )
                )
                holders.update({row.item_ref: row.holder for row in rows})
        return holders

    def cache_keys(self, stage: str) -> set[str]:
        """Keys of every cached answer of a stage (one query, so misses cost no round-trip)."""
        with self._sessions() as session:
            return set(session.scalars(select(ResponseCache.key).where(ResponseCache.stage == stage)))

    def cached_keys_among(self, keys: Sequence[str]) -> set[str]:
        """Which of `keys` have a cached answer now (answers another run stored meanwhile)."""
        found: set[str] = set()
        with self._sessions() as session:
            for chunk in _chunks(sorted(set(keys)), 500):
                found.update(session.scalars(select(ResponseCache.key).where(ResponseCache.key.in_(chunk))))
        return found

    def cached_response(self, key: str) -> dict[str, Any] | None:
        """The cached answer for `key` (`{"answer", "model", "prompt_version"}`), or None. Read-only."""
        with self._sessions() as session:
            row = session.execute(
                select(ResponseCache.answer, ResponseCache.model, ResponseCache.prompt_version).where(
                    ResponseCache.key == key
                )
            ).one_or_none()
        return None if row is None else {"answer": row.answer, "model": row.model, "prompt_version": row.prompt_version}

    def delete_stale_cache_entries(self, older_than: datetime) -> int:
        """Delete cached answers not used since `older_than`; returns how many."""
        with self.transaction() as session:
            return affected(session.execute(delete(ResponseCache).where(ResponseCache.last_used_at < older_than)))


@functools.cache
def _lease_insert(dialect: str) -> Any:
    """`INSERT … ON CONFLICT DO NOTHING RETURNING item_ref` of lease rows, built once per dialect and run
    with many parameter sets (a multi-row VALUES would be compiled again for every claim: ~3 ms)."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return insert(table(ItemLease)).on_conflict_do_nothing().returning(table(ItemLease).c.item_ref)


@functools.cache
def _cache_upsert(dialect: str) -> Any:
    """`INSERT … ON CONFLICT (key) DO UPDATE` of response-cache rows, built once per dialect (building the
    `excluded` alias costs more than running the statement)."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(table(ResponseCache))
    return statement.on_conflict_do_update(
        index_elements=[ResponseCache.key],
        set_={
            "answer": statement.excluded.answer,
            "model": statement.excluded.model,
            "last_used_at": statement.excluded.last_used_at,
        },
    )

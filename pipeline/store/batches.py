"""Provider batches: recorded before they are sent, followed while the provider works, ingested once."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from sqlalchemy import func, select, update

from pipeline.models import OPEN_BATCH_STATUSES, BatchStatus, ModelBatch, ModelBatchItem, utcnow
from pipeline.store.base import StoreBase, _chunks, affected

# A batch's items wait (are not sent again) while it is recorded but not yet sent, or the provider holds it.
WAITING_STATUSES = (BatchStatus.INTENT, BatchStatus.SUBMITTED)


class BatchesStore(StoreBase):
    """Batches and their items (see `pipeline.llm.batch_mode`)."""

    def record_batch_intent(
        self,
        local_key: str,
        *,
        stage: str,
        partition: str,
        run_id: str | None,
        provider: str,
        endpoint: str,
        model: str,
        items: Sequence[tuple[str, str]],
        expected_cost_usd: float = 0.0,
    ) -> ModelBatch:
        """Record a batch about to be sent (`intent`) with its items `(custom_id, item_ref)`, in one
        transaction, before anything leaves the process: a crash after sending is then reconciled by
        `local_key`, never sent twice."""
        with self.transaction() as session:
            batch = ModelBatch(
                local_key=local_key,
                stage=stage,
                partition=partition,
                run_id=run_id,
                provider=provider,
                endpoint=endpoint,
                model=model,
                status=BatchStatus.INTENT,
                requests=len(items),
                expected_cost_usd=expected_cost_usd,
            )
            session.add(batch)
            session.flush()
            session.add_all(
                ModelBatchItem(batch_id=batch.id, custom_id=custom_id, item_ref=ref) for custom_id, ref in items
            )
        return batch

    def mark_batch_sent(self, batch_id: int, remote_id: str, remote_status: str, input_file_id: str | None) -> None:
        """The provider holds the batch now (`submitted`), under `remote_id`."""
        with self.transaction() as session:
            session.execute(
                update(ModelBatch)
                .where(ModelBatch.id == batch_id)
                .values(
                    status=BatchStatus.SUBMITTED,
                    remote_id=remote_id,
                    remote_status=remote_status,
                    input_file_id=input_file_id,
                    submitted_at=utcnow(),
                )
            )

    def update_batch(self, batch_id: int, **values: object) -> None:
        """Set fields of one batch (status, remote status, file ids, counts, error, times)."""
        with self.transaction() as session:
            session.execute(update(ModelBatch).where(ModelBatch.id == batch_id).values(**values))

    def batch(self, batch_id: int) -> ModelBatch:
        """One batch by id (`LookupError` if there is none)."""
        return self._row(ModelBatch, batch_id)

    def batches(
        self,
        *,
        partition: str | None = None,
        stage: str | None = None,
        statuses: Iterable[str] | None = None,
        limit: int | None = None,
    ) -> list[ModelBatch]:
        """Batches, newest first, optionally of one partition, stage and set of statuses."""
        statement = select(ModelBatch).order_by(ModelBatch.id.desc())
        if partition is not None:
            statement = statement.where(ModelBatch.partition == partition)
        if stage is not None:
            statement = statement.where(ModelBatch.stage == stage)
        if statuses is not None:
            statement = statement.where(ModelBatch.status.in_([str(s) for s in statuses]))
        if limit is not None:
            statement = statement.limit(limit)
        with self._sessions() as session:
            return list(session.scalars(statement))

    def open_batches(self) -> list[ModelBatch]:
        """Batches not yet ingested or ended (`intent`, `submitted`, `completed`), oldest first."""
        with self._sessions() as session:
            statement = select(ModelBatch).where(ModelBatch.status.in_(OPEN_BATCH_STATUSES)).order_by(ModelBatch.id)
            return list(session.scalars(statement))

    def batches_to_follow(self) -> list[ModelBatch]:
        """Batches the provider may still change (`intent`, `submitted`) and finished ones not yet
        ingested, oldest first (what the `model_batches` sensor looks at)."""
        finished = (BatchStatus.COMPLETED, BatchStatus.EXPIRED, BatchStatus.CANCELLED, BatchStatus.FAILED)
        statement = (
            select(ModelBatch)
            .where(
                ModelBatch.status.in_(WAITING_STATUSES)
                | (ModelBatch.status.in_(finished) & ModelBatch.ingested_at.is_(None))
            )
            .order_by(ModelBatch.id)
        )
        with self._sessions() as session:
            return list(session.scalars(statement))

    def waiting_batch_ids(self, stage: str, partition: str) -> set[str]:
        """Custom ids of items in batches of this stage and partition that the provider may still answer."""
        statement = (
            select(ModelBatchItem.custom_id)
            .join(ModelBatch, ModelBatch.id == ModelBatchItem.batch_id)
            .where(
                ModelBatch.stage == stage,
                ModelBatch.partition == partition,
                ModelBatch.status.in_(WAITING_STATUSES),
            )
        )
        with self._sessions() as session:
            return set(session.scalars(statement))

    def batch_items(self, batch_id: int) -> list[ModelBatchItem]:
        """The requests of one batch, by custom id."""
        with self._sessions() as session:
            statement = select(ModelBatchItem).where(ModelBatchItem.batch_id == batch_id)
            return list(session.scalars(statement.order_by(ModelBatchItem.custom_id)))

    def settle_batch_items(self, batch_id: int, states: Mapping[str, tuple[str, str | None]]) -> None:
        """Set the state (`answered`, `failed`, `skipped`) and error of items of one batch, by custom id."""
        with self.transaction() as session:
            for custom_id, (state, error) in sorted(states.items()):
                session.execute(
                    update(ModelBatchItem)
                    .where(ModelBatchItem.batch_id == batch_id, ModelBatchItem.custom_id == custom_id)
                    .values(state=state, error=error)
                )

    def claim_ingestion(self, batch_id: int) -> bool:
        """Claim a finished batch's output for ingestion: True for exactly one caller, however many runs or
        sensor ticks try (a crash after the claim leaves its unanswered items pending, to be sent again)."""
        finished = (BatchStatus.COMPLETED, BatchStatus.EXPIRED, BatchStatus.CANCELLED, BatchStatus.FAILED)
        with self.transaction() as session:
            claimed = session.execute(
                update(ModelBatch)
                .where(ModelBatch.id == batch_id, ModelBatch.ingested_at.is_(None), ModelBatch.status.in_(finished))
                .values(ingested_at=utcnow())
            )
            return affected(claimed) == 1

    def finish_ingestion(self, batch_id: int) -> None:
        """A claimed batch's items are settled: a `completed` batch becomes `ingested` (an expired, cancelled
        or failed one keeps its status), with its answered and failed counts."""
        with self.transaction() as session:
            counts = dict(
                session.execute(
                    select(ModelBatchItem.state, func.count())
                    .where(ModelBatchItem.batch_id == batch_id)
                    .group_by(ModelBatchItem.state)
                ).all()
            )
            session.execute(
                update(ModelBatch)
                .where(ModelBatch.id == batch_id, ModelBatch.status == BatchStatus.COMPLETED)
                .values(status=BatchStatus.INGESTED)
            )
            session.execute(
                update(ModelBatch)
                .where(ModelBatch.id == batch_id)
                .values(answered=int(counts.get("answered", 0)), failed=int(counts.get("failed", 0)))
            )

    def batch_custom_ids(self, batch_ids: Sequence[int]) -> dict[str, int]:
        """custom id -> batch id of the items of these batches."""
        found: dict[str, int] = {}
        with self._sessions() as session:
            for chunk in _chunks(list(batch_ids), 500):
                rows = session.execute(
                    select(ModelBatchItem.custom_id, ModelBatchItem.batch_id).where(ModelBatchItem.batch_id.in_(chunk))
                )
                found.update({row.custom_id: row.batch_id for row in rows})
        return found

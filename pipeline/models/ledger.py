"""Ledger tables: model calls, provider batches, budget reservations, the response cache, leases, rate limits."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from pipeline.models.base import Base, utcnow
from pipeline.models.statuses import BatchStatus


class ModelCall(Base):
    """The ledger: one row per model call (and, with the cache, per cache hit)."""

    __tablename__ = "model_calls"
    __table_args__ = (Index("ix_model_calls_partition_stage", "partition", "stage"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    stage: Mapped[str] = mapped_column(String(40))
    provider: Mapped[str] = mapped_column(String(40))
    model: Mapped[str] = mapped_column(String(120))
    prompt_name: Mapped[str] = mapped_column(String(80))
    prompt_version: Mapped[str] = mapped_column(String(80))
    input_tokens: Mapped[int] = mapped_column(default=0)
    cached_input_tokens: Mapped[int] = mapped_column(default=0)
    output_tokens: Mapped[int] = mapped_column(default=0)
    images: Mapped[int] = mapped_column(default=0)
    cost_usd: Mapped[float] = mapped_column(default=0.0)
    latency_ms: Mapped[int] = mapped_column(default=0)
    attempts: Mapped[int] = mapped_column(default=1)
    outcome: Mapped[str] = mapped_column(String(20))
    error_class: Mapped[str | None] = mapped_column(String(120))
    item_ref: Mapped[str | None] = mapped_column(String(120))
    run_id: Mapped[str | None] = mapped_column(String(64), index=True)
    partition: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The provider batch that answered this call (priced at the batch rate), or NULL for a real-time call.
    batch_id: Mapped[int | None] = mapped_column(index=True)


class ModelBatch(Base):
    """One provider batch (OpenAI Batch API): a JSONL file of requests answered within its window at the
    batch price. `local_key` is written before anything is sent and travels in the batch's metadata, so a
    crash between creating the batch and recording it is reconciled instead of submitted twice."""

    __tablename__ = "model_batches"
    __table_args__ = (Index("ix_model_batches_status", "status", "partition", "stage"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    local_key: Mapped[str] = mapped_column(String(64), unique=True)
    stage: Mapped[str] = mapped_column(String(40))
    partition: Mapped[str] = mapped_column(String(200))
    run_id: Mapped[str | None] = mapped_column(String(64))
    provider: Mapped[str] = mapped_column(String(40))
    endpoint: Mapped[str] = mapped_column(String(300))
    model: Mapped[str] = mapped_column(String(120))
    status: Mapped[str] = mapped_column(String(20), default=BatchStatus.INTENT.value)
    remote_id: Mapped[str | None] = mapped_column(String(120), unique=True)
    remote_status: Mapped[str | None] = mapped_column(String(40))
    input_file_id: Mapped[str | None] = mapped_column(String(120))
    output_file_id: Mapped[str | None] = mapped_column(String(120))
    error_file_id: Mapped[str | None] = mapped_column(String(120))
    requests: Mapped[int] = mapped_column(default=0)
    # What its requests are expected to cost at the batch price: counted against the monthly budget until
    # the batch's answers reach the ledger (ingestion), so batches in flight cannot overshoot it.
    expected_cost_usd: Mapped[float] = mapped_column(default=0.0)
    answered: Mapped[int] = mapped_column(default=0)
    failed: Mapped[int] = mapped_column(default=0)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    submitted_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    ingested_at: Mapped[datetime | None]


class ModelBatchItem(Base):
    """One request of a batch: its `custom_id` (from the cache key) and the item it answers.

    `state`: `pending` (sent, no answer yet) -> `answered` (its line was valid and is stored) or `failed`
    (errored or invalid: the item is pending again for the next batch or a real-time run)."""

    __tablename__ = "model_batch_items"

    batch_id: Mapped[int] = mapped_column(ForeignKey("model_batches.id", ondelete="CASCADE"), primary_key=True)
    custom_id: Mapped[str] = mapped_column(String(120), primary_key=True)
    item_ref: Mapped[str] = mapped_column(String(200), index=True)
    state: Mapped[str] = mapped_column(String(20), default="pending")
    error: Mapped[str | None] = mapped_column(Text)


class BudgetReservation(Base):
    """Money a running engine may spend next on a site's monthly budget, held until its calls are on the
    ledger or `expires_at`: concurrent runs and processes see each other's reservations."""

    __tablename__ = "budget_reservations"
    __table_args__ = (Index("ix_budget_reservations_partition_expires", "partition", "expires_at"),)

    holder: Mapped[str] = mapped_column(String(120), primary_key=True)
    partition: Mapped[str] = mapped_column(String(200), primary_key=True)
    amount_usd: Mapped[float] = mapped_column(default=0.0)
    expires_at: Mapped[datetime]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class ResponseCache(Base):
    """Validated model answers keyed by everything that determines them (see `ModelEngine._cache_key`).

    A hit costs nothing; `last_used_at` lets the weekly clean-up drop stale entries.
    """

    __tablename__ = "response_cache"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)
    stage: Mapped[str] = mapped_column(String(40))
    provider: Mapped[str] = mapped_column(String(40))
    model: Mapped[str] = mapped_column(String(120))
    prompt_version: Mapped[str] = mapped_column(String(80))
    answer: Mapped[dict[str, Any]] = mapped_column()
    hits: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class ItemLease(Base):
    """An item a run is about to pay a model call for (stage, partition, item ref), held until the call is
    on record or `expires_at`: a second run, a retry or a second deployment skips it meanwhile."""

    __tablename__ = "item_leases"

    stage: Mapped[str] = mapped_column(String(40), primary_key=True)
    partition: Mapped[str] = mapped_column(String(200), primary_key=True)
    item_ref: Mapped[str] = mapped_column(String(200), primary_key=True)
    holder: Mapped[str] = mapped_column(String(120))
    expires_at: Mapped[datetime] = mapped_column(index=True)


class RateLimitBucket(Base):
    """One token bucket of a provider's rate limit (`pipeline.store.rate_limits`), shared by every process
    using the store: its `level` at `updated_at` (epoch seconds), refilled at `per_minute` when next taken."""

    __tablename__ = "rate_limit_buckets"

    key: Mapped[str] = mapped_column(Text, primary_key=True)  # endpoint identity, model, requests|tokens
    level: Mapped[float]
    updated_at: Mapped[float]
    per_minute: Mapped[float]

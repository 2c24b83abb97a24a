"""The store's tables, as SQLAlchemy 2 typed models.

Every table has a natural key (a unique constraint on what identifies the row in the domain), so stages
upsert on it and a re-run never duplicates. The schema itself is owned by Alembic migrations in
`pipeline/migrations/`; these models must match them (a test compares the two).

Every generated row records `provider`, `model` and `prompt_version`: rows written by the offline
provider say `provider="offline"`, so offline text can never pass for a real model's output.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar

from sqlalchemy import JSON, DateTime, ForeignKey, Index, MetaData, String, Text, UniqueConstraint
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Names for constraints so migrations are identical on SQLite and PostgreSQL.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

JSONType = JSON().with_variant(JSONB(), "postgresql")

UNCLUSTERED_KEY = "unclustered"


class ContentStatus(StrEnum):
    """Where an article is in review: `draft -> approved -> published`; regeneration sends it back to draft."""

    DRAFT = "draft"
    APPROVED = "approved"
    PUBLISHED = "published"


class FiringStatus(StrEnum):
    """A trigger firing's state: `requested -> running -> consumed`, or `failed` (the rule is armed again)."""

    REQUESTED = "requested"
    RUNNING = "running"
    CONSUMED = "consumed"
    FAILED = "failed"


class ExperimentStatus(StrEnum):
    """An A/B experiment's state: `running` until `decided` (a winner) or `no_difference`, or `stopped`."""

    RUNNING = "running"
    DECIDED = "decided"
    NO_DIFFERENCE = "no_difference"
    STOPPED = "stopped"


class IdeaStatus(StrEnum):
    """An idea's review state: `proposed` ideas wait for approval when the site asks for it
    (`ideas_need_approval`); only `approved` ideas get articles. Ideas of sites without the gate are
    created `approved`."""

    PROPOSED = "proposed"
    APPROVED = "approved"
    REJECTED = "rejected"


class BatchStatus(StrEnum):
    """A provider batch's state in the store.

    `intent` (recorded before anything is sent) -> `submitted` (the provider holds it: validating,
    in progress, finalizing) -> `completed` (output ready) -> `ingested` (its answers stored); or `failed`,
    `expired`, `cancelled` (unanswered items are pending again), or `abandoned` (an intent the provider
    never received, found by reconciliation).
    """

    INTENT = "intent"
    SUBMITTED = "submitted"
    COMPLETED = "completed"
    INGESTED = "ingested"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    ABANDONED = "abandoned"


OPEN_BATCH_STATUSES = (BatchStatus.INTENT, BatchStatus.SUBMITTED, BatchStatus.COMPLETED)


def utcnow() -> datetime:
    """Timezone-aware now, the only clock the store uses."""
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    """A stored time as timezone-aware UTC: SQLite hands back naive datetimes, and the store writes only UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    """Declarative base with the project's naming convention and JSON mapping."""

    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        dict[str, Any]: JSONType,
        list[str]: JSONType,
        datetime: DateTime(timezone=True),
    }


class Generated:
    """Columns every model-generated row carries: who wrote it and with which prompt."""

    provider: Mapped[str] = mapped_column(String(40))
    model: Mapped[str] = mapped_column(String(120))
    prompt_version: Mapped[str] = mapped_column(String(80))


class Site(Base):
    """A site the team publishes to; its slug is the Dagster partition key."""

    __tablename__ = "sites"

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    keywords_file: Mapped[str | None] = mapped_column(Text)
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Keyword(Base):
    """One search phrase of a site; `normalized` is its natural key within the site."""

    __tablename__ = "keywords"
    __table_args__ = (UniqueConstraint("site_id", "normalized"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"), index=True)
    keyword: Mapped[str] = mapped_column(String(255))
    normalized: Mapped[str] = mapped_column(String(255))
    volume: Mapped[int | None]
    difficulty: Mapped[int | None]
    # Every intent a tool gave, canonical and in a stable order: "informational, commercial".
    intent: Mapped[str | None] = mapped_column(String(64))
    extra: Mapped[dict[str, Any]] = mapped_column(default=dict)
    cluster_id: Mapped[int | None] = mapped_column(ForeignKey("clusters.id", ondelete="SET NULL"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Cluster(Base):
    """A topic cluster. Membership lives on `Keyword.cluster_id`, so a keyword is in exactly one.

    `key` is content-derived and never changes once created; the key `unclustered` is the explicit,
    visible bucket for keywords that fit no cluster. `name` stays empty until the model names it.
    """

    __tablename__ = "clusters"
    __table_args__ = (UniqueConstraint("site_id", "key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"), index=True)
    key: Mapped[str] = mapped_column(String(64))
    name: Mapped[str | None] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    keyword_count: Mapped[int] = mapped_column(default=0)
    total_volume: Mapped[int] = mapped_column(default=0)
    mean_difficulty: Mapped[float | None]
    dominant_intent: Mapped[str | None] = mapped_column(String(20))
    top_keywords: Mapped[list[str]] = mapped_column(default=list)
    provider: Mapped[str | None] = mapped_column(String(40))
    model: Mapped[str | None] = mapped_column(String(120))
    prompt_version: Mapped[str | None] = mapped_column(String(80))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    keywords: Mapped[list[Keyword]] = relationship(viewonly=True)


class Idea(Generated, Base):
    """An article idea for a cluster; `key` is the slug of its title, unique within the cluster."""

    __tablename__ = "ideas"
    __table_args__ = (UniqueConstraint("cluster_id", "key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"), index=True)
    cluster_id: Mapped[int] = mapped_column(ForeignKey("clusters.id", ondelete="CASCADE"), index=True)
    key: Mapped[str] = mapped_column(String(120))
    title: Mapped[str] = mapped_column(String(300))
    angle: Mapped[str] = mapped_column(Text)
    content_type: Mapped[str] = mapped_column(String(30))
    outline: Mapped[list[str]] = mapped_column()
    target_keywords: Mapped[list[str]] = mapped_column()
    estimated_word_count: Mapped[int]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    status: Mapped[str] = mapped_column(String(20), default=IdeaStatus.APPROVED.value, index=True)
    reviewed_by: Mapped[str | None] = mapped_column(String(120))
    reviewed_at: Mapped[datetime | None]
    review_note: Mapped[str | None] = mapped_column(Text)


class Content(Base):
    """The article written for one idea; its text lives in versioned A/B `ContentVariant` rows."""

    __tablename__ = "content"
    # Published articles of a site in publication order: rules whose minimum age passed, resumable scans.
    __table_args__ = (
        Index("ix_content_site_status_published", "site_id", "status", "published_at", "id"),
        Index("ix_content_site_status_slot", "site_id", "status", "publish_slot"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"), index=True)
    idea_id: Mapped[int] = mapped_column(ForeignKey("ideas.id", ondelete="CASCADE"), unique=True)
    status: Mapped[str] = mapped_column(String(20), default=ContentStatus.DRAFT.value)
    published_at: Mapped[datetime | None]
    published_version: Mapped[int | None]
    published_variant: Mapped[str | None] = mapped_column(String(1))
    review_note: Mapped[str | None] = mapped_column(Text)
    # When the current approval happened (slots are handed out in approval order) and the calendar slot it
    # got: the article is due for publishing once the slot has come. A rejection clears both; publishing keeps
    # them (history, and the latest slot a site gave out).
    approved_at: Mapped[datetime | None]
    publish_slot: Mapped[datetime | None]
    # Set while a regeneration run owns this article, so two runs never rewrite it at once.
    regeneration_run_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    variants: Mapped[list[ContentVariant]] = relationship(
        back_populates="content", order_by="(ContentVariant.version.desc(), ContentVariant.variant)"
    )


class ContentVariant(Generated, Base):
    """One A or B variant of one version of an article. Versions are kept; the highest is current."""

    __tablename__ = "content_variants"
    __table_args__ = (UniqueConstraint("content_id", "version", "variant"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    content_id: Mapped[int] = mapped_column(ForeignKey("content.id", ondelete="CASCADE"), index=True)
    version: Mapped[int]
    variant: Mapped[str] = mapped_column(String(1))
    title: Mapped[str] = mapped_column(String(300))
    body_html: Mapped[str] = mapped_column(Text)
    meta_title: Mapped[str] = mapped_column(String(300))
    meta_description: Mapped[str] = mapped_column(String(400))
    primary_keyword: Mapped[str] = mapped_column(String(255))
    secondary_keywords: Mapped[list[str]] = mapped_column()
    tags: Mapped[list[str]] = mapped_column()
    categories: Mapped[list[str]] = mapped_column()
    word_count: Mapped[int]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    content: Mapped[Content] = relationship(back_populates="variants")


class ImagePrompt(Generated, Base):
    """An image prompt for a content variant: one `featured`, and `in_article` ones anchored to H2s."""

    __tablename__ = "image_prompts"
    __table_args__ = (UniqueConstraint("variant_id", "kind", "position"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"), index=True)
    variant_id: Mapped[int] = mapped_column(ForeignKey("content_variants.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(20))
    position: Mapped[int]
    anchor_heading: Mapped[str | None] = mapped_column(String(300))
    prompt: Mapped[str] = mapped_column(Text)
    alt_text: Mapped[str] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Image(Base):
    """A generated image file for one image prompt."""

    __tablename__ = "images"

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"), index=True)
    image_prompt_id: Mapped[int] = mapped_column(ForeignKey("image_prompts.id", ondelete="CASCADE"), unique=True)
    path: Mapped[str] = mapped_column(Text)
    provider: Mapped[str] = mapped_column(String(40))
    model: Mapped[str] = mapped_column(String(120))
    size: Mapped[str] = mapped_column(String(20))
    width: Mapped[int]
    height: Mapped[int]
    bytes: Mapped[int]
    checksum: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


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


class PostMetric(Base):
    """One observed performance number of one variant of a published article (clicks, CTR, likes...)."""

    __tablename__ = "post_metrics"
    __table_args__ = (UniqueConstraint("content_id", "variant", "version", "metric", "observed_at", "source"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    content_id: Mapped[int] = mapped_column(ForeignKey("content.id", ondelete="CASCADE"), index=True)
    variant: Mapped[str] = mapped_column(String(1))
    version: Mapped[int]
    metric: Mapped[str] = mapped_column(String(60))
    value: Mapped[float]
    observed_at: Mapped[datetime]  # an instant, or the (exclusive) end of the period the value covers
    period_start: Mapped[datetime | None]  # set for values over a period (a Search Console date range)
    source: Mapped[str] = mapped_column(String(120))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class TriggerRule(Base):
    """When to regenerate: `metric comparison threshold`, at least `min_age_hours` after publishing.

    `content_id` NULL makes it a default for every published article of the site.
    """

    __tablename__ = "trigger_rules"
    __table_args__ = (
        Index("ix_trigger_rules_site_ages", "site_id", "min_age_hours"),
        Index("ix_trigger_rules_site_content", "site_id", "content_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"), index=True)
    content_id: Mapped[int | None] = mapped_column(ForeignKey("content.id", ondelete="CASCADE"), index=True)
    metric: Mapped[str] = mapped_column(String(60))
    comparison: Mapped[str] = mapped_column(String(2))
    threshold: Mapped[float]
    min_age_hours: Mapped[float] = mapped_column(default=0.0)
    instruction: Mapped[str] = mapped_column(Text, default="")
    enabled: Mapped[bool] = mapped_column(default=True)
    # `value` compares the newest value; trend kinds compare periods of `window_days` (pipeline.triggers).
    kind: Mapped[str] = mapped_column(String(20), default="value")
    window_days: Mapped[int | None]
    min_volume: Mapped[float] = mapped_column(default=0.0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class TriggerFiring(Base):
    """A rule that fired for one published version of an article; the record that makes it fire once.

    `status`: requested -> running -> consumed, or failed (the rule is armed again). The unique key
    means a rule fires at most once per published version, whatever the sensor or the Dagster instance.
    """

    __tablename__ = "trigger_firings"
    __table_args__ = (
        UniqueConstraint("content_id", "rule_key", "published_version"),
        Index("ix_trigger_firings_status_changed_at", "status", "changed_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"), index=True)
    content_id: Mapped[int] = mapped_column(ForeignKey("content.id", ondelete="CASCADE"), index=True)
    rule_key: Mapped[str] = mapped_column(String(80))
    published_version: Mapped[int]
    metric: Mapped[str] = mapped_column(String(60))
    comparison: Mapped[str] = mapped_column(String(2))
    threshold: Mapped[float]
    instruction: Mapped[str] = mapped_column(Text, default="")
    triggered_variants: Mapped[list[str]] = mapped_column()
    observed: Mapped[dict[str, Any]] = mapped_column()
    status: Mapped[str] = mapped_column(String(20), default=FiringStatus.REQUESTED.value)
    attempts: Mapped[int] = mapped_column(default=1)
    run_id: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text)
    fired_at: Mapped[datetime] = mapped_column(default=utcnow)
    consumed_at: Mapped[datetime | None]
    # When `status` last changed (any update sets it): failed firings since a tick are found by index.
    changed_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ReviewEvent(Base):
    """An article's status change (review gate, regeneration), with who/what did it and a note."""

    __tablename__ = "review_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    content_id: Mapped[int] = mapped_column(ForeignKey("content.id", ondelete="CASCADE"), index=True)
    from_status: Mapped[str] = mapped_column(String(20))
    to_status: Mapped[str] = mapped_column(String(20))
    version: Mapped[int | None]
    variant: Mapped[str | None] = mapped_column(String(1))
    note: Mapped[str | None] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(String(120))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class RejectedFile(Base):
    """A file dropped in a watched folder (`inbox`, `metrics`) that could not be used, and why.

    Keyed on (folder, name, fingerprint): the content hash of a readable file, or what the entry is
    otherwise (a folder, a FIFO, a dangling link), so a file is recorded once per content however often it
    is seen. `resolved_at` is set when that content is no longer in the folder (fixed, replaced or removed).
    """

    __tablename__ = "rejected_files"
    __table_args__ = (UniqueConstraint("folder", "name", "fingerprint"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    folder: Mapped[str] = mapped_column(String(20))
    name: Mapped[str] = mapped_column(String(1024))
    path: Mapped[str] = mapped_column(Text)
    fingerprint: Mapped[str] = mapped_column(String(80))
    problem: Mapped[str] = mapped_column(Text)
    first_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column(index=True)


class ItemLease(Base):
    """An item a run is about to pay a model call for (stage, partition, item ref), held until the call is
    on record or `expires_at`: a second run, a retry or a second deployment skips it meanwhile."""

    __tablename__ = "item_leases"

    stage: Mapped[str] = mapped_column(String(40), primary_key=True)
    partition: Mapped[str] = mapped_column(String(200), primary_key=True)
    item_ref: Mapped[str] = mapped_column(String(200), primary_key=True)
    holder: Mapped[str] = mapped_column(String(120))
    expires_at: Mapped[datetime] = mapped_column(index=True)


class SensorState(Base):
    """What a sensor recorded at its last tick (its position and backlog), for `pipeline status`.

    Dagster keeps the sensor's cursor; this copy only informs people and tools without access to Dagster.
    """

    __tablename__ = "sensor_states"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    state: Mapped[dict[str, Any]] = mapped_column()
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


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


class CheckResult(Base):
    """The last run of one content check over one site: passed or not, over how many variants, and why it
    could not run (`error`). A site's rows are replaced as a whole by each run of the checks."""

    __tablename__ = "check_results"
    __table_args__ = (UniqueConstraint("site_id", "check_name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"), index=True)
    check_name: Mapped[str] = mapped_column(String(80))
    passed: Mapped[bool]
    total: Mapped[int]
    failing_articles: Mapped[int]
    error: Mapped[str | None] = mapped_column(Text)
    ran_at: Mapped[datetime]


class FailedCheck(Base):
    """One variant of an article's version that failed a content check in its site's last run, and why.

    Replaced with the site's `CheckResult` rows; the indexes answer "what fails on this article" (the desk's
    article page) and "which articles fail check X on site S" (the desk's filter).
    """

    __tablename__ = "check_failures"
    __table_args__ = (
        Index("ix_check_failures_content_version", "content_id", "version"),
        Index("ix_check_failures_site_check", "site_id", "check_name", "content_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"))
    check_name: Mapped[str] = mapped_column(String(80))
    content_id: Mapped[int] = mapped_column(ForeignKey("content.id", ondelete="CASCADE"))
    version: Mapped[int]
    variant: Mapped[str] = mapped_column(String(1))
    detail: Mapped[str] = mapped_column(Text)


class Experiment(Base):
    """A time-split A/B test of one version of a published article (`pipeline.experiments`).

    The article's one URL shows A and B in turn, in the periods of `experiment_periods`; every metric
    row is attributed to the variant that was live on its dates. Decided once: `winner` and `decision`
    (the counts, the test statistic, the confidence) are written with the status change.
    """

    __tablename__ = "experiments"
    __table_args__ = (
        UniqueConstraint("content_id", "version"),
        Index("ix_experiments_site_status", "site_id", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"), index=True)
    content_id: Mapped[int] = mapped_column(ForeignKey("content.id", ondelete="CASCADE"), index=True)
    version: Mapped[int]
    control: Mapped[str] = mapped_column(String(1))  # the variant the editor approved, live first
    status: Mapped[str] = mapped_column(String(20), default=ExperimentStatus.RUNNING.value)
    period_days: Mapped[int]
    max_days: Mapped[int]
    min_impressions: Mapped[int]
    confidence: Mapped[float]
    timezone: Mapped[str] = mapped_column(String(64))
    starts_at: Mapped[datetime]
    ends_at: Mapped[datetime]  # planned end: starts_at + max_days
    looks: Mapped[int] = mapped_column(default=0)  # completed cycles the decision rule has looked at
    winner: Mapped[str | None] = mapped_column(String(1))
    decided_at: Mapped[datetime | None]
    decision: Mapped[dict[str, Any] | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ExperimentPeriod(Base):
    """One period of an experiment: which variant is live from `starts_at` to `ends_at` (exclusive), and when
    the publishing path actually switched the live article to it (`switched_at`, None until then)."""

    __tablename__ = "experiment_periods"
    __table_args__ = (UniqueConstraint("experiment_id", "number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiments.id", ondelete="CASCADE"), index=True)
    number: Mapped[int]
    variant: Mapped[str] = mapped_column(String(1))
    starts_at: Mapped[datetime]
    ends_at: Mapped[datetime]
    switched_at: Mapped[datetime | None]


class RateLimitBucket(Base):
    """One token bucket of a provider's rate limit (`pipeline.store.rate_limits`), shared by every process
    using the store: its `level` at `updated_at` (epoch seconds), refilled at `per_minute` when next taken."""

    __tablename__ = "rate_limit_buckets"

    key: Mapped[str] = mapped_column(Text, primary_key=True)  # endpoint identity, model, requests|tokens
    level: Mapped[float]
    updated_at: Mapped[float]
    per_minute: Mapped[float]

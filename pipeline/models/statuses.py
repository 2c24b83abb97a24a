"""The status enums: the states of articles, ideas, trigger firings, experiments and provider batches."""

from __future__ import annotations

from enum import StrEnum


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

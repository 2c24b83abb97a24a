"""The store's tables, as SQLAlchemy 2 typed models.

Every table has a natural key (a unique constraint on what identifies the row in the domain), so stages
upsert on it and a re-run never duplicates. The schema itself is owned by Alembic migrations in
`pipeline/migrations/`; these models must match them (a test compares the two).

Every generated row records `provider`, `model` and `prompt_version`: rows written by the offline
provider say `provider="offline"`, so offline text can never pass for a real model's output.

One module per aggregate, as the store (`pipeline.store`): `base` (the declarative base, naming convention,
clock), `statuses` (the status enums), `planning`, `writing`, `ledger`, `automation`, `experiments`, `review`,
`checks` and `publishing`. Import from `pipeline.models`; every table module is imported here, so every
mapper is configured whichever name is used first.
"""

from pipeline.models.automation import PostMetric, RejectedFile, SensorState, TriggerFiring, TriggerRule
from pipeline.models.base import NAMING, Base, Generated, JSONType, as_utc, utcnow
from pipeline.models.checks import CheckResult, FailedCheck
from pipeline.models.experiments import Experiment, ExperimentPeriod
from pipeline.models.ledger import (
    BudgetReservation,
    ItemLease,
    ModelBatch,
    ModelBatchItem,
    ModelCall,
    RateLimitBucket,
    ResponseCache,
)
from pipeline.models.planning import UNCLUSTERED_KEY, Cluster, Idea, Keyword, Site
from pipeline.models.publishing import Publication, RemoteMedia
from pipeline.models.review import ReviewEvent
from pipeline.models.statuses import (
    OPEN_BATCH_STATUSES,
    BatchStatus,
    ContentStatus,
    ExperimentStatus,
    FiringStatus,
    IdeaStatus,
)
from pipeline.models.writing import Content, ContentVariant, Image, ImagePrompt

__all__ = [
    "NAMING",
    "OPEN_BATCH_STATUSES",
    "UNCLUSTERED_KEY",
    "Base",
    "BatchStatus",
    "BudgetReservation",
    "CheckResult",
    "Cluster",
    "Content",
    "ContentStatus",
    "ContentVariant",
    "Experiment",
    "ExperimentPeriod",
    "ExperimentStatus",
    "FailedCheck",
    "FiringStatus",
    "Generated",
    "Idea",
    "IdeaStatus",
    "Image",
    "ImagePrompt",
    "ItemLease",
    "JSONType",
    "Keyword",
    "ModelBatch",
    "ModelBatchItem",
    "ModelCall",
    "PostMetric",
    "Publication",
    "RateLimitBucket",
    "RejectedFile",
    "RemoteMedia",
    "ResponseCache",
    "ReviewEvent",
    "SensorState",
    "Site",
    "TriggerFiring",
    "TriggerRule",
    "as_utc",
    "utcnow",
]

"""The store: every read and write of pipeline data goes through `Store`.

`Store` is composed of one mixin per aggregate over `StoreBase` (engine, migrations, transactions):
planning (sites, keywords, clusters, ideas), idea review (ideas approved before articles are paid for),
writing (articles, variants, images, new versions),
the ledger (model calls, leases, response cache), monthly budgets (the month's spend, reservations) and
cost reports, automation (metrics, triggers, rejected files),
review (queue, transitions, counts), the publishing calendar and publications, the content checks' reads
and stored results, the review desk's reads (site overviews, the filtered article list), and A/B experiments with the
history of which variant was live when, and the provider rate limits' token buckets that every process
shares. Writes are idempotent by construction (natural keys, upserts, one transaction per item), and the schema is
created and upgraded by Alembic on open (`Store.migrate`).
"""

from pipeline.store.automation import AutomationStore
from pipeline.store.base import MIGRATIONS_DIR, StoreBase, UnknownSite
from pipeline.store.batches import BatchesStore
from pipeline.store.budgets import BudgetsStore
from pipeline.store.calendar import CalendarStore
from pipeline.store.checks import ChecksStore
from pipeline.store.costs import CostsStore
from pipeline.store.desk import DeskStore
from pipeline.store.experiments import ExperimentsStore
from pipeline.store.idea_review import IdeaReviewError, IdeaReviewStore
from pipeline.store.ledger import LedgerStore
from pipeline.store.planning import PlanningStore
from pipeline.store.publishing import PublishingStore
from pipeline.store.rate_limits import RateLimitsStore
from pipeline.store.review import ReviewStore, SiteCounts
from pipeline.store.trigger_scan import TriggerScanStore
from pipeline.store.window_reads import MetricWindowsStore
from pipeline.store.writing import WritingStore

__all__ = ["MIGRATIONS_DIR", "IdeaReviewError", "SiteCounts", "Store", "StoreBase", "UnknownSite"]


class Store(
    PlanningStore,
    IdeaReviewStore,
    WritingStore,
    LedgerStore,
    AutomationStore,
    TriggerScanStore,
    MetricWindowsStore,
    ReviewStore,
    CalendarStore,
    PublishingStore,
    ChecksStore,
    DeskStore,
    ExperimentsStore,
    BatchesStore,
    BudgetsStore,
    CostsStore,
    RateLimitsStore,
):
    """Typed access to the pipeline database at `url`."""

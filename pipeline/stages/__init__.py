"""Stage logic: one module per stage, each a function taking the store (and the model engine).

Stages do only missing work, persist each finished item before starting the next, and return a
`StageReport` that the Dagster asset turns into metadata. Items that fail are listed in the report; the
asset fails after everything else has been saved.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from pipeline.llm.tasks import Estimate
from pipeline.models import Site, as_utc
from pipeline.sites import SiteSettings, site_settings

if TYPE_CHECKING:
    from pipeline.store import Store

# The stages that call a model, in pipeline order.
MODEL_STAGES = ("clusters", "ideas", "content", "image_prompts", "images")


@dataclass
class StageReport:
    """What a stage did: counts, a preview table, an optional markdown preview, failures."""

    counts: dict[str, int | float] = field(default_factory=dict)
    preview: list[dict[str, Any]] = field(default_factory=list)
    markdown: str | None = None
    failures: list[str] = field(default_factory=list)
    items: int = 0  # items the stage set out to produce: the base of the failure share
    degraded: list[str] = field(default_factory=list)  # produced with a fallback (counted, not failed)
    notes: dict[str, str] = field(default_factory=dict)  # how the stage ran (backend, fallbacks), as metadata
    estimate: Estimate | None = None  # a dry run's estimate, typed; shown as `estimate_counts`

    @property
    def failure_share(self) -> float:
        """Failed items as a share of the items attempted (1.0 when failures exceed a zero base)."""
        if not self.failures:
            return 0.0
        return min(len(self.failures) / self.items, 1.0) if self.items else 1.0

    def all_counts(self) -> dict[str, int | float]:
        """The counts, with a dry run's estimate rendered as counts."""
        return self.counts | (estimate_counts(self.estimate) if self.estimate else {})

    def summary(self) -> str:
        """One line for logs."""
        return ", ".join(f"{key}={value}" for key, value in self.all_counts().items())


@dataclass(frozen=True)
class RunSite:
    """The site a run works on and its parsed settings: resolved once per asset, handed to the engine and
    the stage."""

    site: Site
    settings: SiteSettings

    @classmethod
    def of(cls, store: Store, site: str | RunSite) -> RunSite:
        """`site` itself, or the site with slug `site` read from the store."""
        if isinstance(site, RunSite):
            return site
        row = store.site(site)
        return cls(row, site_settings(row.settings))

    def prompt_data(self) -> dict[str, Any]:
        """What every writing prompt gets about the site: name, language, audience, voice, author and the
        phrases never to use (all data, never instructions)."""
        settings = self.settings
        return {
            "name": self.site.name,
            "language": settings.language,
            "audience": settings.audience,
            "voice": settings.voice,
            "author": settings.author.name if settings.author else None,
            "banned_phrases": settings.banned_phrases,
        }


@dataclass(frozen=True)
class RunOptions:
    """Run controls every model-calling stage accepts (from the asset's run config)."""

    force: bool = False  # redo items that already have output (history kept), bypassing the response cache
    dry_run: bool = False  # estimate calls, tokens and cost; call and write nothing
    limit: int | None = None  # at most this many items
    item_id: int | None = None  # only this item (the id of the stage's input row)
    skip_recent_days: float | None = None  # leave items whose input is younger than this
    batch: bool = False  # submit the calls to the provider's Batch API (half price, answers within 24 h)

    def select(
        self,
        items: list[Any],
        key: Callable[[Any], int] = lambda item: item.id,
        created: Callable[[Any], datetime | None] = lambda item: getattr(item, "created_at", None),
    ) -> list[Any]:
        """Apply `item_id`, `skip_recent_days` and `limit` to a stage's candidate items, in that order."""
        if self.item_id is not None:
            items = [item for item in items if key(item) == self.item_id]
        if self.skip_recent_days is not None:
            cutoff = datetime.now(UTC) - timedelta(days=self.skip_recent_days)
            items = [item for item in items if (when := created(item)) is None or as_utc(when) <= cutoff]
        return items[: self.limit] if self.limit is not None else items


def dry_run_report(estimate: Estimate, pending: int) -> StageReport:
    """What a dry run shows: the estimate of the calls the stage would make, for `pending` items."""
    return StageReport(counts={"dry_run": 1}, estimate=replace(estimate, pending_items=pending))


def estimate_counts(estimate: Estimate) -> dict[str, int | float]:
    """A dry run's estimate as asset metadata counts."""
    return {
        "pending_items": estimate.pending_items,
        "estimated_calls": estimate.calls,
        "estimated_cache_hits": estimate.cached,
        "estimated_input_tokens": estimate.input_tokens,
        "estimated_output_tokens": estimate.output_tokens,
        "estimated_images": estimate.images,
        "estimated_cost_usd": round(estimate.cost_usd, 6),
        "estimated_batch_cost_usd": round(estimate.batch_cost_usd, 6),
    }


class StageFailed(RuntimeError):
    """Some items failed; the others were saved. The message lists the failures."""

    def __init__(self, stage: str, report: StageReport):
        shown = "\n".join(f"  - {failure}" for failure in report.failures[:20])
        more = f"\n  ... and {len(report.failures) - 20} more" if len(report.failures) > 20 else ""
        super().__init__(
            f"{stage}: {len(report.failures)} item(s) failed, finished items were saved "
            f"({report.summary()}):\n{shown}{more}"
        )
        self.report = report

"""What every model-calling asset shares: its run config, the engine for the run, and its metadata."""

from collections.abc import Mapping, Sequence
from typing import Any

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    Config,
    Failure,
    MaterializeResult,
    MetadataValue,
)
from pydantic import Field

from pipeline.costs import cost_report
from pipeline.llm.engine import ModelEngine
from pipeline.llm.window import tune_process_for_runs
from pipeline.output_safety import markdown_text
from pipeline.stages import RunOptions, RunSite, StageFailed, StageReport
from pipeline.store import Store
from resources import LLMResource


class StageConfig(Config):
    """Run controls of a model-calling asset (set in the launchpad or run config)."""

    force: bool = Field(
        default=False, description="Redo items that already have output (history kept), bypassing the cache."
    )
    dry_run: bool = Field(default=False, description="Estimate calls, tokens and cost; call and write nothing.")
    limit: int | None = Field(default=None, ge=0, description="Process at most this many pending items.")
    item_id: int | None = Field(default=None, description="Process only this item (id of the stage's input row).")
    skip_recent_days: float | None = Field(
        default=None, ge=0, description="Leave items whose input was created in the last N days."
    )
    batch: bool | None = Field(
        default=None,
        description="Submit the calls to the provider's Batch API (half price, answers within 24 h; a sensor "
        "ingests them). Unset: the site's batch.nightly setting decides for nightly and backfill runs.",
    )
    allowed_failures: int = Field(
        default=0, ge=0, description="Item failures tolerated whatever their share (see max_failure_share)."
    )
    max_failure_share: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="The step succeeds while failed items stay at or under this share of the items attempted "
        "(failures are listed and fail the asset's items_ok check); above it, the step fails.",
    )

    def options(
        self, context: AssetExecutionContext | None = None, site: RunSite | None = None, *, batchable: bool = False
    ) -> RunOptions:
        """The stage-level view of these controls. `batchable` stages (ideas, content, image prompts, images) run in
        batch mode when `batch` says so, or, unset, when the site's `batch.nightly` is on and the run is the
        nightly fill-in or a backfill; the others always call in real time."""
        batch = self.batch
        if batch is None and context is not None and site is not None and site.settings.batch.nightly:
            tags = context.run.tags
            batch = tags.get("pipeline/run_kind") == "fill-in" or "dagster/backfill" in tags
        if batch and not batchable and context is not None:
            context.log.warning(
                "batch mode applies to ideas, content, image prompts and images; this step calls in real time"
            )
        return RunOptions(
            force=self.force,
            dry_run=self.dry_run,
            limit=self.limit,
            item_id=self.item_id,
            skip_recent_days=self.skip_recent_days,
            batch=bool(batch) and batchable,
        )


ITEMS_CHECK = "items_ok"


def items_check(asset_name: str) -> AssetCheckSpec:
    """The check every model-calling asset reports with its materialization: no item failed or fell back."""
    return AssetCheckSpec(
        ITEMS_CHECK,
        asset=asset_name,
        description="Every item of the run was produced by the model and stored; failed and fallback items "
        "are listed in the check's metadata.",
    )


def engine_for(
    context: AssetExecutionContext, store: Store, llm: LLMResource, site: RunSite, options: RunOptions
) -> ModelEngine:
    """The model engine for this run and site partition (use as a context manager).

    `site` and `options` are the ones the asset hands its stage: resolved once, shared. The run's tags
    say which provider and endpoint each kind of call used, so a run with real text and offline images,
    say, is visible as such in the runs list."""
    tune_process_for_runs()  # a run starts here: once per process, before its first model call
    engine = llm.engine(
        store, run_id=context.run.run_id, partition=context.partition_key, options=options, settings=site.settings
    )
    tags = {
        f"pipeline/{kind}_endpoint": _tag(f"{provider.name} {provider.endpoint}")
        for kind, provider in (
            ("text", engine.provider),
            ("images", engine.image_provider),
            ("embeddings", engine.embedding_provider),
        )
    }
    try:
        context.instance.add_run_tags(context.run.run_id, tags)
    except Exception as error:  # tags are informative: never fail a stage over them
        context.log.warning(f"could not tag the run with its endpoints: {error}")
    return engine


def _tag(value: str) -> str:
    return value[:250]


def materialize_result(
    context: AssetExecutionContext,
    stage: str,
    report: StageReport,
    engine: ModelEngine | None = None,
    *,
    row_count_key: str | None = None,
    allowed_failures: int = 0,
    max_failure_share: float = 0.05,
) -> MaterializeResult[None]:
    """Counts, previews and model usage as metadata, with the `items_ok` check result; raise `Failure`
    when more items failed than `max_failure_share` of those attempted (and more than `allowed_failures`),
    or when the provider could not be used at all."""
    metadata: dict[str, Any] = report.all_counts() | dict(report.notes)
    if row_count_key and row_count_key in report.counts:
        metadata["dagster/row_count"] = int(report.counts[row_count_key])
    if report.preview:
        metadata["preview"] = MetadataValue.md(markdown_table(report.preview))
    if report.markdown:
        metadata["article_preview"] = MetadataValue.md(report.markdown)
    if engine is not None:
        totals = engine.totals
        # The images stage calls the image endpoint; every other stage the text one.
        main = engine.image_provider if stage == "images" else engine.provider
        metadata |= {
            "provider": main.name,
            "endpoint": main.endpoint,
            "model_calls": totals.calls,
            "failed_model_calls": totals.failed_calls,
            "cache_hits": totals.cache_hits,
            "calls_not_started": totals.not_started,
            "attempts": totals.attempts,
            "input_tokens": totals.input_tokens,
            "cached_input_tokens": totals.cached_input_tokens,
            "output_tokens": totals.output_tokens,
            "images_generated": totals.images,
            "cost_usd": MetadataValue.float(totals.cost_usd),
            "items_in_progress_elsewhere": totals.in_progress_elsewhere,
        }
        if engine.options.batch:
            metadata |= {
                "batch_items_submitted": totals.batch_submitted,
                "batch_items_waiting": totals.batch_waiting,
                "batch_items_ingested": totals.batch_answered,
                "batches_created": ", ".join(str(b) for b in totals.batches_created) or "none",
            }
        kinds = {"text": engine.provider, "images": engine.image_provider, "embeddings": engine.embedding_provider}
        for kind, provider in kinds.items():
            if provider is not main:  # the other endpoints of the run, when they differ
                metadata[f"{kind}_endpoint"] = f"{provider.name} {provider.endpoint}"
        for provider in engine.distinct_providers():
            describe = getattr(provider, "describe", None)
            metadata |= describe() if describe else {}
        metadata |= month_cost_metadata(context, engine)
    if report.failures:
        metadata["failed_items"] = len(report.failures)
        metadata["failed_share"] = round(report.failure_share, 4)
        metadata["failures"] = MetadataValue.md(_listing(report.failures))
    if report.degraded:
        metadata["fallback_items"] = len(report.degraded)
        metadata["fallbacks"] = MetadataValue.md(_listing(report.degraded))
    context.log.info(f"{stage}: {report.summary()}")
    if engine is not None and engine.fatal_error and report.failures:
        skipped = engine.totals.not_started
        failed = max(len(report.failures) - skipped, 0)
        error = (
            f"{stage}: {engine.fatal_error} ({failed} item(s) failed, {skipped} not started; finished items were saved)"
        )
        context.log.error(error)
        raise Failure(description=error, metadata=_without_previews(metadata), allow_retries=False)
    if len(report.failures) > allowed_failures and report.failure_share > max_failure_share:
        too_many = StageFailed(stage, report)
        context.log.error(str(too_many))
        raise Failure(description=str(too_many), metadata=_without_previews(metadata))
    if report.failures:
        within = (
            f"within max_failure_share={max_failure_share:.0%}"
            if report.failure_share <= max_failure_share
            else f"within allowed_failures={allowed_failures}"
        )
        context.log.warning(
            f"{stage}: {len(report.failures)} of {report.items} item(s) failed "
            f"({report.failure_share:.1%}, {within}); the rest was saved"
        )
    checks = []
    if engine is not None:
        checks.append(
            AssetCheckResult(
                check_name=ITEMS_CHECK,
                passed=not report.failures and not report.degraded,
                severity=AssetCheckSeverity.WARN,
                metadata={
                    "items": report.items,
                    "failed_items": len(report.failures),
                    "fallback_items": len(report.degraded),
                    "failed": MetadataValue.md(_listing(report.failures) or "none"),
                    "fallbacks": MetadataValue.md(_listing(report.degraded) or "none"),
                },
            )
        )
    return MaterializeResult(metadata=metadata, check_results=checks)


def month_cost_metadata(context: AssetExecutionContext, engine: ModelEngine) -> dict[str, Any]:
    """The partition's spend this month (`pipeline costs` totals) as `month_*` metadata, so the UI plots it
    over materializations; the budget and what is left when the site has a monthly budget."""
    if not context.has_partition_key or not isinstance(engine.store, Store):
        return {}
    budget = engine.monthly_budget.budget_usd if engine.monthly_budget else None
    try:
        report = cost_report(engine.store, context.partition_key, catalog=engine.catalog, budget_usd=budget)
    except Exception as error:  # informative: never fail a stage over its cost report
        context.log.warning(f"could not report the month's costs: {error}")
        return {}
    totals = report.totals()
    metadata: dict[str, Any] = {"month": totals.pop("month")}
    totals.pop("site")
    for key, value in totals.items():
        if value is not None:
            metadata[f"month_{key}"] = MetadataValue.float(value) if isinstance(value, float) else value
    return metadata


def _listing(lines: Sequence[str], limit: int = 50) -> str:
    shown = "\n".join(f"- {markdown_text(line)}" for line in lines[:limit])
    return shown + (f"\n- ... and {len(lines) - limit} more" if len(lines) > limit else "")


def _without_previews(metadata: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metadata.items() if k not in {"preview", "article_preview"}}


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """A GitHub-style markdown table of `rows` (keys of the first row are the columns).

    Cells hold model text and the UI renders Markdown: each is escaped (`markdown_text`, and `|`), so it
    shows as written and never as HTML or a link.
    """
    columns = list(rows[0])

    def cell(value: Any) -> str:
        text = "" if value is None else str(value)
        return markdown_text(text).replace("|", "\\|")

    lines = ["| " + " | ".join(cell(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)

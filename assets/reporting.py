"""What every model-calling asset shares: its run config, the engine for the run, and its metadata."""

from collections.abc import Mapping, Sequence
from typing import Any

from dagster import AssetExecutionContext, Config, Failure, MaterializeResult, MetadataValue
from pydantic import Field

from pipeline.llm.engine import ModelEngine
from pipeline.output_safety import markdown_text
from pipeline.stages import RunOptions, StageFailed, StageReport
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
    allowed_failures: int = Field(default=0, ge=0, description="Item failures tolerated before the asset fails.")

    def options(self) -> RunOptions:
        """The stage-level view of these controls."""
        return RunOptions(
            force=self.force,
            dry_run=self.dry_run,
            limit=self.limit,
            item_id=self.item_id,
            skip_recent_days=self.skip_recent_days,
        )


def engine_for(context: AssetExecutionContext, store: Store, llm: LLMResource, config: StageConfig) -> ModelEngine:
    """The model engine for this run and site partition (use as a context manager)."""
    return llm.engine(store, run_id=context.run.run_id, partition=context.partition_key, force=config.force)


def materialize_result(
    context: AssetExecutionContext,
    stage: str,
    report: StageReport,
    engine: ModelEngine | None = None,
    *,
    row_count_key: str | None = None,
    allowed_failures: int = 0,
) -> MaterializeResult:
    """Counts, previews and model usage as metadata; raise `Failure` if more items failed than allowed."""
    metadata: dict[str, Any] = dict(report.counts)
    if row_count_key and row_count_key in report.counts:
        metadata["dagster/row_count"] = int(report.counts[row_count_key])
    if report.preview:
        metadata["preview"] = MetadataValue.md(markdown_table(report.preview))
    if report.markdown:
        metadata["article_preview"] = MetadataValue.md(report.markdown)
    if engine is not None:
        totals = engine.totals
        metadata |= {
            "provider": engine.provider.name,
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
        }
    if report.failures:
        metadata["failed_items"] = len(report.failures)
        metadata["failures"] = MetadataValue.md("\n".join(f"- {f}" for f in report.failures[:50]))
    context.log.info(f"{stage}: {report.summary()}")
    if len(report.failures) > allowed_failures:
        error = StageFailed(stage, report)
        context.log.error(str(error))
        raise Failure(description=str(error), metadata={k: v for k, v in metadata.items() if k != "preview"})
    if report.failures:
        context.log.warning(
            f"{stage}: {len(report.failures)} item(s) failed, within allowed_failures={allowed_failures}"
        )
    return MaterializeResult(metadata=metadata)


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

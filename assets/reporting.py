"""Turning a stage's report and the engine's usage into what the Dagster UI shows."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from dagster import AssetExecutionContext, Failure, MaterializeResult, MetadataValue

from pipeline.llm.engine import ModelEngine
from pipeline.stages import StageFailed, StageReport
from pipeline.store import Store
from resources import LLMResource


def engine_for(context: AssetExecutionContext, store: Store, llm: LLMResource) -> ModelEngine:
    """The model engine for this run and site partition."""
    return llm.engine(store, run_id=context.run.run_id, partition=context.partition_key)


def materialize_result(
    context: AssetExecutionContext,
    stage: str,
    report: StageReport,
    engine: ModelEngine | None = None,
    row_count_key: str | None = None,
) -> MaterializeResult:
    """Counts, previews and model usage as metadata; raise `Failure` if any item failed (after logging)."""
    metadata: dict[str, Any] = {key: value for key, value in report.counts.items()}
    if row_count_key:
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
            "input_tokens": totals.input_tokens,
            "cached_input_tokens": totals.cached_input_tokens,
            "output_tokens": totals.output_tokens,
            "images_generated": totals.images,
            "cost_usd": MetadataValue.float(totals.cost_usd),
        }
    context.log.info(f"{stage}: {report.summary()}")
    if report.failures:
        error = StageFailed(stage, report)
        context.log.error(str(error))
        raise Failure(description=str(error), metadata={k: v for k, v in metadata.items() if k != "preview"})
    return MaterializeResult(metadata=metadata)


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """A GitHub-style markdown table of `rows` (keys of the first row are the columns)."""
    columns = list(rows[0])

    def cell(value: Any) -> str:
        text = "" if value is None else str(value)
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)

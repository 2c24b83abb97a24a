"""Expected calls, tokens and cost per stage for a site, computed without calling anything.

Each stage's pending items are estimated by the stage itself in dry-run mode (the same task building
a real run does, priced by the engine from the rendered prompts). Items that do not exist yet because
their upstream stage has not run are projected from the site settings (clusters -> ideas per cluster ->
one article per idea -> one prompt set per article -> 1 + in-article images per article), using the
stage's measured average prompt size when known and a typical size otherwise.

Only approved ideas are counted as articles to write: ideas waiting for approval (and, on a site with
`ideas_need_approval`, the ideas not planned yet) are priced apart as `awaiting_approval_*`, with what
their articles, image prompts and images would cost once approved. Every cost is given at the real-time
price and at the Batch API price (`batch_cost_usd`).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from pipeline.keywords import read_keyword_file
from pipeline.llm.catalog import Usage
from pipeline.llm.engine import ModelEngine
from pipeline.llm.tasks import Estimate
from pipeline.stages import MODEL_STAGES, RunOptions, RunSite, StageReport
from pipeline.stages.clusters import NAMING_BATCH, build_clusters
from pipeline.stages.content import write_content
from pipeline.stages.ideas import generate_ideas
from pipeline.stages.image_prompts import generate_image_prompts
from pipeline.stages.images import generate_images
from pipeline.store import Store

# Typical rendered prompt size (tokens) of one call, for projected items only.
TYPICAL_INPUT_TOKENS = {"clusters": 1_200, "ideas": 900, "content": 800, "image_prompts": 900, "images": 0}


def estimate_site(
    store: Store, engine: ModelEngine, slug: str, stages: tuple[str, ...] = MODEL_STAGES
) -> list[Estimate]:
    """Estimate every model-calling stage of `slug` (or only `stages`), in pipeline order.

    Each estimate is exact for the stage's pending items and projects the items not created yet
    (`projected_items`)."""
    unknown = set(stages) - set(MODEL_STAGES)
    if unknown:
        raise ValueError(f"unknown stage(s) {', '.join(sorted(unknown))}; choose from {', '.join(MODEL_STAGES)}")
    run = RunSite.of(store, slug)
    site, settings = run.site, run.settings
    dry = RunOptions(dry_run=True)
    exact: dict[str, Estimate] = {}
    projected = {"clusters": 0}
    if store.keywords(site.id):
        exact["clusters"] = _estimate_of(build_clusters(store, engine, run, dry))
    else:  # keywords not ingested yet: project clusters from the keyword file
        rows = len(read_keyword_file(site.keywords_file).rows) if site.keywords_file else 0
        exact["clusters"] = _nothing_pending(engine, "clusters")
        projected["clusters"] = -(-rows // settings.target_cluster_size)
    exact["ideas"] = _estimate_of(generate_ideas(store, engine, run, dry))
    exact["content"] = _estimate_of(write_content(store, engine, run, dry))
    exact["image_prompts"] = _estimate_of(generate_image_prompts(store, engine, run, dry))
    exact["images"] = _estimate_of(generate_images(store, engine, run, Path("."), dry))

    # Each stage's items = its pending items now + items its upstream will create (x fan-out).
    fan_out = {
        "ideas": 1,
        "content": settings.ideas_per_cluster,
        "image_prompts": 1,
        "images": 1 + settings.in_article_images,
    }
    # Ideas waiting for approval (`ideas_need_approval`) get no article until approved: their articles, and
    # the image prompts and images that follow, are counted apart (`awaiting_approval_*`), not in the calls.
    waiting = {stage: 0 for stage in MODEL_STAGES}
    waiting["content"] = len(store.proposed_ideas_without_content(site.id))
    previous = "clusters"
    for stage in MODEL_STAGES[1:]:
        upstream_items = exact[previous].pending_items + projected[previous]
        projected[stage] = upstream_items * fan_out[stage]
        if stage == "content" and settings.ideas_need_approval:  # ideas not created yet will be proposed
            waiting["content"] += projected["content"]
            projected["content"] = 0
        elif stage != "content":
            waiting[stage] = waiting[previous] * fan_out[stage]
        previous = stage

    results = []
    for stage in MODEL_STAGES:
        if stage not in stages:
            continue
        counted = exact[stage]
        settings_model = engine.catalog.stage(stage)
        calls, input_tokens = counted.calls, counted.input_tokens
        output_tokens, images = counted.output_tokens, counted.images
        extra_calls = -(-projected[stage] // NAMING_BATCH) if stage == "clusters" else projected[stage]
        per_call = input_tokens // calls if calls else TYPICAL_INPUT_TOKENS[stage]
        if stage == "images":
            images += extra_calls
        else:
            input_tokens += extra_calls * per_call
            output_tokens += extra_calls * settings_model.expected_output_tokens
        calls += extra_calls
        usage = Usage(input_tokens=input_tokens, output_tokens=output_tokens, images=images)
        held = waiting[stage]
        if stage == "images":
            held_usage = Usage(images=held)
        else:
            held_usage = Usage(input_tokens=held * per_call, output_tokens=held * settings_model.expected_output_tokens)
        results.append(
            replace(
                counted,
                model=settings_model.model,
                projected_items=projected[stage],
                calls=calls,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                images=images,
                cost_usd=round(engine.catalog.cost(settings_model.model, usage), 4),
                batch_cost_usd=round(engine.catalog.cost(settings_model.model, usage, batch=True), 4),
                awaiting_approval_items=held,
                awaiting_approval_cost_usd=round(engine.catalog.cost(settings_model.model, held_usage), 4),
                awaiting_approval_batch_cost_usd=round(
                    engine.catalog.cost(settings_model.model, held_usage, batch=True), 4
                ),
            )
        )
    return results


def _estimate_of(report: StageReport) -> Estimate:
    """The typed estimate of a stage's dry run."""
    assert report.estimate is not None, "a dry run reports its estimate"
    return report.estimate


def _nothing_pending(engine: ModelEngine, stage: str) -> Estimate:
    return Estimate(
        stage=stage,
        model=engine.catalog.stage(stage).model,
        calls=0,
        cached=0,
        input_tokens=0,
        output_tokens=0,
        images=0,
        cost_usd=0.0,
    )

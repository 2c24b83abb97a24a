"""Expected calls, tokens and cost per stage for a site, computed without calling anything.

Each stage's pending items are estimated by the stage itself in dry-run mode (the same task building
a real run does, priced by the engine from the rendered prompts). Items that do not exist yet because
their upstream stage has not run are projected from the site settings (clusters -> ideas per cluster ->
one article per idea -> one prompt set per article -> 1 + in-article images per article), using the
stage's measured average prompt size when known and a typical size otherwise.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from pipeline.keywords import read_keyword_file
from pipeline.llm.catalog import Usage
from pipeline.llm.engine import ModelEngine
from pipeline.sites import site_settings
from pipeline.stages import MODEL_STAGES, RunOptions
from pipeline.stages.clusters import NAMING_BATCH, build_clusters
from pipeline.stages.content import write_content
from pipeline.stages.ideas import generate_ideas
from pipeline.stages.image_prompts import generate_image_prompts
from pipeline.stages.images import generate_images
from pipeline.store import Store

# Typical rendered prompt size (tokens) of one call, for projected items only.
TYPICAL_INPUT_TOKENS = {"clusters": 1_200, "ideas": 900, "content": 800, "image_prompts": 900, "images": 0}


@dataclass(frozen=True)
class StageEstimate:
    """The estimate of one stage: exact for pending items, projected for items not created yet."""

    stage: str
    model: str
    pending_items: int
    projected_items: int
    calls: int
    cached: int
    input_tokens: int
    output_tokens: int
    images: int
    cost_usd: float

    def as_dict(self) -> dict[str, object]:
        """Plain values for JSON output."""
        return asdict(self)


def estimate_site(
    store: Store, engine: ModelEngine, slug: str, stages: tuple[str, ...] = MODEL_STAGES
) -> list[StageEstimate]:
    """Estimate every model-calling stage of `slug` (or only `stages`), in pipeline order."""
    unknown = set(stages) - set(MODEL_STAGES)
    if unknown:
        raise ValueError(f"unknown stage(s) {', '.join(sorted(unknown))}; choose from {', '.join(MODEL_STAGES)}")
    site = store.site(slug)
    settings = site_settings(site.settings)
    dry = RunOptions(dry_run=True)
    exact: dict[str, dict] = {}
    if store.keywords(site.id):
        exact["clusters"] = build_clusters(store, engine, slug, dry).counts
    else:  # keywords not ingested yet: project clusters from the keyword file
        rows = len(read_keyword_file(site.keywords_file).rows) if site.keywords_file else 0
        exact["clusters"] = _nothing_pending() | {"projected": -(-rows // settings.target_cluster_size)}
    exact["ideas"] = generate_ideas(store, engine, slug, dry).counts
    exact["content"] = write_content(store, engine, slug, dry).counts
    exact["image_prompts"] = generate_image_prompts(store, engine, slug, dry).counts
    exact["images"] = generate_images(store, engine, slug, Path("."), dry).counts

    # Each stage's items = its pending items now + items its upstream will create (x fan-out).
    fan_out = {
        "ideas": 1,
        "content": settings.ideas_per_cluster,
        "image_prompts": 1,
        "images": 1 + settings.in_article_images,
    }
    projected = {"clusters": exact["clusters"].get("projected", 0)}
    previous = "clusters"
    for stage in MODEL_STAGES[1:]:
        upstream_items = exact[previous]["pending_items"] + projected[previous]
        projected[stage] = upstream_items * fan_out[stage]
        previous = stage

    results = []
    for stage in MODEL_STAGES:
        if stage not in stages:
            continue
        counts = exact[stage]
        settings_model = engine.catalog.stage(stage)
        calls, input_tokens = int(counts["estimated_calls"]), int(counts["estimated_input_tokens"])
        output_tokens, images = int(counts["estimated_output_tokens"]), int(counts["estimated_images"])
        extra_calls = -(-projected[stage] // NAMING_BATCH) if stage == "clusters" else projected[stage]
        per_call = input_tokens // calls if calls else TYPICAL_INPUT_TOKENS[stage]
        if stage == "images":
            images += extra_calls
        else:
            input_tokens += extra_calls * per_call
            output_tokens += extra_calls * settings_model.expected_output_tokens
        calls += extra_calls
        usage = Usage(input_tokens=input_tokens, output_tokens=output_tokens, images=images)
        results.append(
            StageEstimate(
                stage=stage,
                model=settings_model.model,
                pending_items=int(counts["pending_items"]),
                projected_items=projected[stage],
                calls=calls,
                cached=int(counts["estimated_cache_hits"]),
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                images=images,
                cost_usd=round(engine.catalog.cost(settings_model.model, usage), 4),
            )
        )
    return results


def _nothing_pending() -> dict[str, int]:
    return {
        "pending_items": 0,
        "estimated_calls": 0,
        "estimated_cache_hits": 0,
        "estimated_input_tokens": 0,
        "estimated_output_tokens": 0,
        "estimated_images": 0,
    }

"""Dagster assets: thin adapters that call `pipeline.stages` and report metadata."""

from dagster import AssetSelection, define_asset_job

from assets.planning import clusters, ideas, keywords
from assets.writing import content, image_prompts, images

ALL_ASSETS = [keywords, clusters, ideas, content, image_prompts, images]

content_pipeline = define_asset_job(
    "content_pipeline",
    selection=AssetSelection.assets(*ALL_ASSETS),
    description="The main job: keywords -> clusters -> ideas -> content -> image prompts -> images for one site.",
)

ingest_keywords = define_asset_job(
    "ingest_keywords",
    selection=AssetSelection.assets(keywords),
    description="Read one site's keyword file (the inbox sensor requests it; later stages follow by automation).",
)

regenerate_variants = define_asset_job(
    "regenerate_variants",
    selection=AssetSelection.assets(content, image_prompts, images),
    description="Rewrite under-performing published articles as new A/B variants with new images (metric sensor).",
    tags={"pipeline/run_kind": "regeneration"},
)

JOBS = [content_pipeline, ingest_keywords, regenerate_variants]

__all__ = [
    "ALL_ASSETS",
    "JOBS",
    "clusters",
    "content",
    "content_pipeline",
    "ideas",
    "image_prompts",
    "images",
    "ingest_keywords",
    "keywords",
    "regenerate_variants",
]

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

__all__ = ["ALL_ASSETS", "clusters", "content", "content_pipeline", "ideas", "image_prompts", "images", "keywords"]

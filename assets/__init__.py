"""Dagster assets: thin adapters that call `pipeline.stages` and report metadata."""

from dagster import AssetSelection, define_asset_job

from assets.planning import clusters, ideas, keywords
from assets.publishing import experiments, publications
from assets.writing import content, image_prompts, images

ALL_ASSETS = [keywords, clusters, ideas, content, image_prompts, images, publications, experiments]
CHAIN = [keywords, clusters, ideas, content, image_prompts, images]

content_pipeline = define_asset_job(
    "content_pipeline",
    selection=AssetSelection.assets(*CHAIN),
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

publish_articles = define_asset_job(
    "publish_articles",
    selection=AssetSelection.assets(publications),
    description="Publish one site's approved articles whose slot has come (the publishing_calendar schedule).",
    tags={"pipeline/run_kind": "publishing"},
)

ingest_batches = define_asset_job(
    "ingest_batches",
    selection=AssetSelection.assets(ideas, content, image_prompts, images),
    description="Ingest a finished provider batch: the stage that sent it runs in batch mode for its site, storing "
    "the answers and sending what is left (the model_batches sensor requests it).",
    tags={"pipeline/run_kind": "batch-ingestion"},
)

run_experiments = define_asset_job(
    "run_experiments",
    selection=AssetSelection.assets(experiments),
    description="Switch one site's A/B experiments to the variant of their current period and decide those whose "
    "cycle completed (the ab_experiments schedule).",
    tags={"pipeline/run_kind": "experiments"},
)

JOBS = [content_pipeline, ingest_keywords, regenerate_variants, publish_articles, run_experiments, ingest_batches]

__all__ = [
    "ALL_ASSETS",
    "JOBS",
    "clusters",
    "content",
    "content_pipeline",
    "experiments",
    "ideas",
    "image_prompts",
    "images",
    "ingest_batches",
    "ingest_keywords",
    "keywords",
    "publications",
    "publish_articles",
    "regenerate_variants",
    "run_experiments",
]

"""Writing assets: content -> image_prompts -> images (thin adapters over `pipeline.stages`)."""

from dagster import AssetExecutionContext, AutomationCondition, MaterializeResult, asset
from pydantic import Field

from assets.content_checks import content_check_results, content_check_specs
from assets.partitions import sites_partitions
from assets.planning import ideas
from assets.pools import IMAGE_POOL, LLM_POOL
from assets.reporting import StageConfig, engine_for, items_check, materialize_result
from pipeline.stages import RunSite
from pipeline.stages.content import write_content
from pipeline.stages.image_prompts import generate_image_prompts
from pipeline.stages.images import generate_images
from pipeline.stages.optimize import optimize_articles
from pipeline.stages.regeneration import regenerate_variants
from resources import LLMResource, MediaResource, StoreResource


class ContentConfig(StageConfig):
    """Run options of the content asset."""

    regenerate_firings: list[int] = Field(
        default_factory=list,
        description="Trigger firings to regenerate as new A/B variants (set by the metric sensor); "
        "when given, only these articles are rewritten.",
    )
    optimize: bool = Field(
        default=False,
        description="Instead of writing new articles: one model pass over the draft and approved articles that "
        "fail the content checks, each written as a new version for review (once per version).",
    )


@asset(
    partitions_def=sites_partitions,
    deps=[ideas],
    group_name="writing",
    kinds={"sql", "llm", "html"},
    pool=LLM_POOL,
    automation_condition=AutomationCondition.eager(),
    check_specs=[items_check("content"), *content_check_specs("content")],
)
def content(
    context: AssetExecutionContext, config: ContentConfig, store: StoreResource, llm: LLMResource
) -> MaterializeResult:  # type: ignore[type-arg]  # Dagster reads this annotation: only the bare class
    """One article per idea: sanitised HTML with H2 sections, meta title/description, keywords, tags.

    Stored as version 1, variant A, status `draft`; each article is saved as soon as it is written.
    With `regenerate_firings` (metric triggers), under-performing published articles are rewritten as a
    new version with variants A and B, history kept, and sent back to `draft` for review.
    Every run (dry runs too) reports the content checks (SEO, readability, links, duplicates) over all
    current articles of the site.
    """
    db = store.open()
    site = RunSite.of(db, context.partition_key)
    options = config.options(context, site, batchable=not (config.regenerate_firings or config.optimize))
    with engine_for(context, db, llm, site, options) as engine:
        if config.regenerate_firings:
            report = regenerate_variants(db, engine, site, config.regenerate_firings, context.run.run_id)
        elif config.optimize:
            report = optimize_articles(db, engine, site, options)
        else:
            report = write_content(db, engine, site, options)
    result = materialize_result(
        context,
        "content",
        report,
        engine,
        row_count_key="articles_total",
        allowed_failures=config.allowed_failures,
        max_failure_share=config.max_failure_share,
    )
    checks = content_check_results(db, site, record=not options.dry_run)
    context.log.info("content checks: " + "; ".join(check.description or "" for check in checks))
    return MaterializeResult(metadata=result.metadata, check_results=[*(result.check_results or []), *checks])


@asset(
    partitions_def=sites_partitions,
    deps=[content],
    group_name="writing",
    kinds={"sql", "llm"},
    pool=LLM_POOL,
    automation_condition=AutomationCondition.eager(),
    check_specs=[items_check("image_prompts")],
)
def image_prompts(
    context: AssetExecutionContext, config: StageConfig, store: StoreResource, llm: LLMResource
) -> MaterializeResult:  # type: ignore[type-arg]  # Dagster reads this annotation: only the bare class
    """Image prompts per current article variant: one featured, and in-article ones anchored to H2s."""
    db = store.open()
    site = RunSite.of(db, context.partition_key)
    options = config.options(context, site, batchable=True)
    with engine_for(context, db, llm, site, options) as engine:
        report = generate_image_prompts(db, engine, site, options)
    return materialize_result(
        context,
        "image_prompts",
        report,
        engine,
        row_count_key="prompts_total",
        allowed_failures=config.allowed_failures,
        max_failure_share=config.max_failure_share,
    )


@asset(
    partitions_def=sites_partitions,
    deps=[image_prompts],
    group_name="writing",
    kinds={"llm", "png"},
    pool=IMAGE_POOL,
    automation_condition=AutomationCondition.eager(),
    check_specs=[items_check("images")],
)
def images(
    context: AssetExecutionContext, config: StageConfig, store: StoreResource, llm: LLMResource, media: MediaResource
) -> MaterializeResult:  # type: ignore[type-arg]  # Dagster reads this annotation: only the bare class
    """Image files for every image prompt, with model, size, path and SHA-256 recorded.

    Prompts without an image, or whose file went missing, are rendered; files are written atomically.
    """
    db = store.open()
    site = RunSite.of(db, context.partition_key)
    options = config.options(context, site, batchable=True)
    with engine_for(context, db, llm, site, options) as engine:
        report = generate_images(db, engine, site, media.directory(), options)
    return materialize_result(
        context,
        "images",
        report,
        engine,
        row_count_key="images_total",
        allowed_failures=config.allowed_failures,
        max_failure_share=config.max_failure_share,
    )

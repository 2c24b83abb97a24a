"""Planning assets: keywords -> clusters -> ideas (thin adapters over `pipeline.stages`)."""

from dagster import AssetExecutionContext, AutomationCondition, Failure, MaterializeResult, MetadataValue, asset
from pydantic import Field

from assets.partitions import sites_partitions
from assets.pools import LLM_POOL
from assets.reporting import StageConfig, engine_for, items_check, materialize_result
from pipeline.keywords import KeywordFileError
from pipeline.stages import RunSite
from pipeline.stages.clusters import build_clusters
from pipeline.stages.ideas import generate_ideas
from pipeline.stages.keywords import NoKeywordFile, ingest_keywords
from pipeline.store import UnknownSite
from resources import LLMResource, StoreResource


class ClustersConfig(StageConfig):
    """Run options of the clusters asset."""

    recluster: bool = Field(default=False, description="Rebuild every cluster from scratch instead of adding to them.")


@asset(partitions_def=sites_partitions, group_name="planning", kinds={"csv", "sql"})
def keywords(context: AssetExecutionContext, store: StoreResource) -> MaterializeResult:  # type: ignore[type-arg]  # Dagster reads this annotation: only the bare class
    """The site's keywords, read from its registered keyword file.

    The file is validated as a whole (errors name the file, row and column) and upserted in one
    transaction: a bad file imports nothing. Files are additive: keywords missing from a later file are
    kept. Case/spacing duplicates are merged, blank lines skipped.
    """
    try:
        report = ingest_keywords(store.open(), context.partition_key)
    except (KeywordFileError, NoKeywordFile, UnknownSite) as error:
        # A user-facing problem with the input: show the message itself, not a traceback.
        raise Failure(description=str(error), allow_retries=False) from error
    return materialize_result(context, "keywords", report, row_count_key="keywords_total")


@asset(
    partitions_def=sites_partitions,
    deps=[keywords],
    group_name="planning",
    kinds={"scikitlearn", "sql", "llm"},
    pool=LLM_POOL,
    automation_condition=AutomationCondition.eager(),
    check_specs=[items_check("clusters")],
)
def clusters(
    context: AssetExecutionContext, config: ClustersConfig, store: StoreResource, llm: LLMResource
) -> MaterializeResult:  # type: ignore[type-arg]  # Dagster reads this annotation: only the bare class
    """Topic clusters of the site's keywords.

    Grouping is algorithmic (every keyword in exactly one cluster or the visible `unclustered` bucket);
    the model only names and describes new clusters, in batches. New keywords join existing clusters
    without renaming them; `recluster: true` rebuilds from scratch.
    """
    db, options = store.open(), config.options()
    site = RunSite.of(db, context.partition_key)
    with engine_for(context, db, llm, site, options) as engine:
        report = build_clusters(db, engine, site, options, recluster=config.recluster)
    return materialize_result(
        context,
        "clusters",
        report,
        engine,
        row_count_key="clusters",
        allowed_failures=config.allowed_failures,
        max_failure_share=config.max_failure_share,
    )


@asset(
    partitions_def=sites_partitions,
    deps=[clusters],
    group_name="planning",
    kinds={"sql", "llm"},
    pool=LLM_POOL,
    automation_condition=AutomationCondition.eager(),
    check_specs=[items_check("ideas")],
)
def ideas(
    context: AssetExecutionContext, config: StageConfig, store: StoreResource, llm: LLMResource
) -> MaterializeResult:  # type: ignore[type-arg]  # Dagster reads this annotation: only the bare class
    """Article ideas per cluster: title, angle, content type, outline, target keywords, word count.

    Only clusters without ideas are planned; target keywords the model invents are dropped. Before any
    article is paid for, new ideas that repeat a primary keyword or the intent of another idea of the site
    are dropped (`ideas_dropped_duplicate_keyword`, `ideas_dropped_similar`; each decision listed in
    `cannibalisation_decisions`).
    """
    db = store.open()
    site = RunSite.of(db, context.partition_key)
    options = config.options(context, site, batchable=True)
    with engine_for(context, db, llm, site, options) as engine:
        report = generate_ideas(db, engine, site, options)
    result = materialize_result(
        context,
        "ideas",
        report,
        engine,
        row_count_key="ideas_total",
        allowed_failures=config.allowed_failures,
        max_failure_share=config.max_failure_share,
    )
    decisions = report.notes.get("cannibalisation_decisions")
    if decisions is None:
        return result
    return result._replace(
        metadata={**(result.metadata or {}), "cannibalisation_decisions": MetadataValue.md(decisions)}
    )

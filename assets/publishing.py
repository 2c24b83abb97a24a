"""The publishing asset: approved articles onto the site's targets (WordPress, the folder export)."""

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
    asset,
)
from pydantic import Field

from assets.partitions import sites_partitions
from assets.reporting import _listing, markdown_table
from assets.writing import images
from pipeline import settings
from pipeline.review import PublishError
from pipeline.sites import SiteSettingsError
from pipeline.stages.publications import publish_due
from pipeline.store import UnknownSite
from resources import StoreResource

PUBLICATIONS_CHECK = "published_ok"


class PublicationsConfig(Config):
    """Run options of the publications asset."""

    limit: int | None = Field(default=None, ge=0, description="Publish at most this many articles in this run.")


@asset(
    partitions_def=sites_partitions,
    deps=[images],
    group_name="publishing",
    kinds={"wordpress", "html"},
    check_specs=[
        AssetCheckSpec(
            PUBLICATIONS_CHECK,
            asset="publications",
            description="Every due article reached every target of the site; failures are listed.",
        )
    ],
)
def publications(context: AssetExecutionContext, config: PublicationsConfig, store: StoreResource) -> MaterializeResult:  # type: ignore[type-arg]  # Dagster reads this annotation: only the bare class
    """Approved articles whose publishing slot has come, on each of the site's targets.

    Targets come from the site's settings (`publishing`): WordPress through its REST API (images uploaded
    once, terms, featured image; the post updated in place on re-publish) and the folder export. Slots come
    from the site's calendar (`schedule`); without one, approved articles are due at once. Idempotent: a
    second run changes nothing. A failed article stays `approved` and is retried by the next run.
    """
    try:
        report = publish_due(store.open(), context.partition_key, settings.publish_dir(), limit=config.limit)
    except (PublishError, SiteSettingsError, UnknownSite) as error:
        raise Failure(description=str(error), allow_retries=False) from error
    metadata: dict[str, Any] = dict(report.counts())
    metadata["targets"] = ", ".join(report.targets)
    if report.links:
        metadata["published"] = MetadataValue.md(markdown_table(report.links[:200]))
    if report.failures:
        metadata["failures"] = MetadataValue.md(_listing(report.failures))
    context.log.info(f"publications: {report.summary()}")
    for failure in report.failures[:20]:
        context.log.warning(failure)
    check = AssetCheckResult(
        check_name=PUBLICATIONS_CHECK,
        passed=not report.failures,
        severity=AssetCheckSeverity.ERROR,
        metadata={"failed": len(report.failures), "failures": MetadataValue.md(_listing(report.failures) or "none")},
    )
    return MaterializeResult(metadata=metadata, check_results=[check])

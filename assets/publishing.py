"""The publishing assets: approved articles onto the site's targets (WordPress, the folder export), and the
A/B experiments that switch a published article between its variants and decide between them."""

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
from pipeline.experiments import advance
from pipeline.review import PublishError
from pipeline.sites import SiteSettingsError
from pipeline.stages.publications import publish_due
from pipeline.store import UnknownSite
from resources import StoreResource

PUBLICATIONS_CHECK = "published_ok"
EXPERIMENTS_CHECK = "experiments_ok"


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


@asset(
    partitions_def=sites_partitions,
    deps=[publications],
    group_name="publishing",
    kinds={"python"},
    check_specs=[
        AssetCheckSpec(
            EXPERIMENTS_CHECK,
            asset="experiments",
            description="Every experiment of the site could be switched and decided; failures are listed.",
        )
    ],
)
def experiments(context: AssetExecutionContext, store: StoreResource) -> MaterializeResult:  # type: ignore[type-arg]  # Dagster reads this annotation: only the bare class
    """Time-split A/B experiments of regenerated articles: both variants live in turn, then a decision.

    For each running experiment of the site (`ab_test` in site settings): puts the variant of the current
    period live through the publishing path (the same URL, the WordPress post updated in place), and after
    each completed cycle (an A and a B period) whose Search Console rows have arrived, tests the CTRs
    (two-proportion z-test, O'Brien-Fleming alpha spending over the looks). A decision is recorded once and
    its winner (or the control, when there is no difference) becomes the published variant. Idempotent: a
    second run at the same time switches and decides nothing. See docs/experiments.md.
    """
    try:
        report = advance(store.open(), context.partition_key, None, settings.publish_dir())
    except (SiteSettingsError, UnknownSite) as error:
        raise Failure(description=str(error), allow_retries=False) from error
    metadata: dict[str, Any] = dict(report.counts())
    if report.switched:
        metadata["switched"] = MetadataValue.md(markdown_table(report.switched[:200]))
    if report.decided:
        metadata["decisions"] = MetadataValue.md(markdown_table([_decision_row(d) for d in report.decided]))
    if report.stopped:
        metadata["stopped"] = MetadataValue.md(markdown_table(report.stopped[:200]))
    if report.failures:
        metadata["failures"] = MetadataValue.md(_listing(report.failures))
    context.log.info(f"experiments: {report.summary()}")
    for failure in report.failures[:20]:
        context.log.warning(failure)
    check = AssetCheckResult(
        check_name=EXPERIMENTS_CHECK,
        passed=not report.failures,
        severity=AssetCheckSeverity.WARN,
        metadata={"failed": len(report.failures), "failures": MetadataValue.md(_listing(report.failures) or "none")},
    )
    return MaterializeResult(metadata=metadata, check_results=[check])


def _decision_row(decision: dict[str, Any]) -> dict[str, Any]:
    """One decision as a row of the metadata table."""
    lift = decision.get("lift")
    return {
        "article": decision["content_id"],
        "winner": decision.get("winner") or "none (control stays)",
        "CTR A": f"{decision['a']['ctr']:.2%}",
        "CTR B": f"{decision['b']['ctr']:.2%}",
        "lift": "-" if lift is None else f"{lift:+.1%}",
        "z": f"{decision['z']:.2f}",
        "p": f"{decision['p_value']:.4g}",
        "confidence": f"{decision['confidence']:.0%}",
        "look": f"{decision['look']}/{decision['looks']}",
    }

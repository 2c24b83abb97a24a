"""The content checks (`pipeline.content_checks`) as Dagster asset checks on `content`, one per check."""

from dagster import AssetCheckResult, AssetCheckSeverity, AssetCheckSpec, MetadataValue

from assets.reporting import _listing
from pipeline.content_checks import CHECKS, CheckOutcome, run_checks
from pipeline.stages import RunSite
from pipeline.store import Store


def content_check_specs(asset_name: str = "content") -> list[AssetCheckSpec]:
    """One asset check per registered content check, described for the UI's Checks tab."""
    return [AssetCheckSpec(check.name, asset=asset_name, description=check.description) for check in CHECKS.values()]


def content_check_results(store: Store, site: RunSite, *, record: bool = True) -> list[AssetCheckResult]:
    """Every content check over all current articles of the site (not only those of this run), as WARN
    results whose metadata lists the failing articles by number; unless `record` is off (a dry run, which
    writes nothing), the outcomes replace the site's stored check results (the review desk reads them)."""
    outcomes = run_checks(store, site.site.id, site.settings)
    if record:
        store.record_check_outcomes(site.site.id, outcomes)
    return [check_result(outcome) for outcome in outcomes]


def check_result(outcome: CheckOutcome) -> AssetCheckResult:
    """One outcome as an asset check result: passed/total, the failing variants, and what was measured."""
    notes = {key: value if isinstance(value, int | float) else str(value) for key, value in outcome.notes.items()}
    return AssetCheckResult(
        check_name=outcome.name,
        passed=outcome.passed,
        severity=AssetCheckSeverity.WARN,
        description=outcome.summary(),
        metadata={
            "passed": outcome.pass_count,
            "total": outcome.total,
            "failing_articles": outcome.failing_articles,
            # Titles are model text: `_listing` escapes every line before the UI renders it as Markdown.
            "failing": MetadataValue.md(_listing([failure.line() for failure in outcome.failures]) or "none"),
            **notes,
            **({"error": outcome.error} if outcome.error else {}),
        },
    )

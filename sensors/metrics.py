"""The metric sensor: imports dropped metric files, evaluates trigger rules, requests regeneration runs."""

import json

from dagster import (
    DefaultSensorStatus,
    RunConfig,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    sensor,
)

from assets import regenerate_variants
from assets.writing import ContentConfig
from pipeline import settings
from pipeline.drop_folder import handled_entries
from pipeline.metrics import scan_metrics_folder
from pipeline.sites import SITES_PARTITION, SiteSettingsError
from pipeline.triggers import fire_due, rearm_stalled
from resources import StoreResource


@sensor(
    name="metric_triggers",
    job=regenerate_variants,
    minimum_interval_seconds=settings.sensor_interval_seconds(settings.METRICS_SENSOR_INTERVAL_SECONDS),
    default_status=DefaultSensorStatus.RUNNING,
    description="Imports metric files from PIPELINE_METRICS_DIR (default data/metrics), evaluates trigger rules "
    "on published articles and requests a regeneration run per site for the rules that fire (once each). "
    "Files it cannot use are skipped, said so in the tick, and listed by `pipeline status`.",
)
def metric_triggers(context: SensorEvaluationContext, store: StoreResource) -> SensorResult:
    """One tick: import new metric files, re-arm stalled firings, fire due rules, request runs.

    "Fires once" is enforced in the store (a unique firing per article, rule and published version), not
    by the cursor or run keys, so repeated ticks and a fresh Dagster instance cannot fire a rule twice.
    A bad metrics file, or a site whose settings are invalid, is reported and skipped; the rest go on.
    """
    db = store.open()
    scan = scan_metrics_folder(db, settings.metrics_dir(), _cursor(context))
    for imported in scan.imported:
        context.log.info(f"metrics: {imported.path.name}: {imported.added} new rows ({imported.already_known} known)")
    for rejected in scan.rejected:
        context.log.error(f"metrics: skipped {rejected.name}: {rejected.problem}")
    skipped = [f"{r.name}: {r.summary}" for r in scan.rejected]

    def run_status(run_id: str) -> str | None:
        run = context.instance.get_run_by_id(run_id)
        return run.status.value if run else None

    for firing in rearm_stalled(db, run_status):
        context.log.warning(f"trigger firing {firing.id} for content {firing.content_id} re-armed: its run ended")

    partitions = set(context.instance.get_dynamic_partitions(SITES_PARTITION))
    requests = []
    for site in db.sites():
        if site.slug not in partitions:
            continue
        try:
            fired = fire_due(db, site)
        except SiteSettingsError as error:
            context.log.error(f"metric triggers: site {site.slug} skipped: {error}")
            skipped.append(f"site {site.slug}: {error.problems[0]}")
            continue
        if not fired:
            continue
        attempts = {f.id: f.attempts for f in db.firings(site_id=site.id) if f.id in fired}
        key = ",".join(f"{i}.{attempts[i]}" for i in sorted(fired))
        context.log.info(f"metric triggers fired for {site.slug}: firings {sorted(fired)}")
        requests.append(
            RunRequest(
                partition_key=site.slug,
                run_key=f"regenerate:{site.slug}:{key}",
                run_config=RunConfig(ops={"content": ContentConfig(regenerate_firings=sorted(fired))}),
                tags={"pipeline/run_kind": "regeneration", "pipeline/firings": key},
            )
        )
    reason = "no trigger rule fired" + (f"; skipped {'; '.join(skipped)}" if skipped else "")
    return SensorResult(
        run_requests=requests,
        cursor=json.dumps(scan.present, sort_keys=True),  # every file there now has been handled
        skip_reason=None if requests else reason,
    )


def _cursor(context: SensorEvaluationContext) -> dict[str, str]:
    return handled_entries(context.cursor, context.log.warning, "metrics")

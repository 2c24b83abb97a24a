"""The metric sensor: imports dropped metric files, evaluates trigger rules, requests regeneration runs."""

import hashlib
import json
import os

from dagster import (
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    sensor,
)

from assets import regenerate_variants
from assets.partitions import sites_partitions
from pipeline import settings
from pipeline.metrics import MetricsFileError, import_metrics_file
from pipeline.triggers import fire_due, rearm_stalled
from resources import StoreResource

INTERVAL_SECONDS = int(os.environ.get("PIPELINE_SENSOR_INTERVAL_SECONDS", "60"))


@sensor(
    name="metric_triggers",
    job=regenerate_variants,
    minimum_interval_seconds=INTERVAL_SECONDS,
    default_status=DefaultSensorStatus.RUNNING,
    description="Imports metric files from PIPELINE_METRICS_DIR (default data/metrics), evaluates trigger rules "
    "on published articles and requests a regeneration run per site for the rules that fire (once each).",
)
def metric_triggers(context: SensorEvaluationContext, store: StoreResource) -> SensorResult:
    """One tick: import new metric files, re-arm stalled firings, fire due rules, request runs.

    "Fires once" is enforced in the store (a unique firing per article, rule and published version), not
    by the cursor or run keys, so repeated ticks and a fresh Dagster instance cannot fire a rule twice.
    """
    db = store.open()
    seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    folder = settings.metrics_dir()
    for path in sorted(folder.glob("*.csv")) if folder.is_dir() else []:
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        if seen.get(path.name) == sha:
            continue
        seen[path.name] = sha
        try:
            result = import_metrics_file(db, path)
            context.log.info(f"metrics: {path.name}: {result.added} new rows ({result.already_known} known)")
        except MetricsFileError as problem:
            context.log.error(str(problem))

    def run_status(run_id: str) -> str | None:
        run = context.instance.get_run_by_id(run_id)
        return run.status.value if run else None

    for firing in rearm_stalled(db, run_status):
        context.log.warning(f"trigger firing {firing.id} for content {firing.content_id} re-armed: its run ended")

    partitions = set(context.instance.get_dynamic_partitions(sites_partitions.name))
    requests = []
    for site in db.sites():
        if site.slug not in partitions:
            continue
        fired = fire_due(db, site)
        if not fired:
            continue
        attempts = {f.id: f.attempts for f in db.firings(site_id=site.id) if f.id in fired}
        key = ",".join(f"{i}.{attempts[i]}" for i in sorted(fired))
        context.log.info(f"metric triggers fired for {site.slug}: firings {sorted(fired)}")
        requests.append(
            RunRequest(
                partition_key=site.slug,
                run_key=f"regenerate:{site.slug}:{key}",
                run_config={"ops": {"content": {"config": {"regenerate_firings": sorted(fired)}}}},
                tags={"pipeline/run_kind": "regeneration", "pipeline/firings": key},
            )
        )
    return SensorResult(
        run_requests=requests,
        cursor=json.dumps(seen, sort_keys=True),
        skip_reason=None if requests else "no trigger rule fired",
    )

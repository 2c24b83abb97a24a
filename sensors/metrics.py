"""The metric sensor: imports dropped metric files, evaluates trigger rules, requests regeneration runs."""

import hashlib
import time
from collections.abc import Sequence
from datetime import UTC, datetime

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
from pipeline.metrics import scan_metrics_folder
from pipeline.models import Site
from pipeline.sites import SITES_PARTITION, SiteSettingsError
from pipeline.trigger_cursor import TriggerCursor
from pipeline.trigger_tick import SENSOR_NAME, TickLimits, run_tick
from pipeline.triggers import Fired, SiteRules, rearm_stalled, site_rule_set
from resources import StoreResource

MAX_KEY_CHARS = 200  # longer lists of firings are named by a digest in run keys and tags


@sensor(
    name=SENSOR_NAME,
    job=regenerate_variants,
    minimum_interval_seconds=settings.sensor_interval_seconds(settings.METRICS_SENSOR_INTERVAL_SECONDS),
    default_status=DefaultSensorStatus.RUNNING,
    description="Imports metric files from PIPELINE_METRICS_DIR (default data/metrics), evaluates trigger rules "
    "on the published articles whose metrics, rules, publication or age changed since the last tick (at most "
    "PIPELINE_TRIGGER_MAX_ARTICLES per tick) and requests a regeneration run per site for the rules that fire "
    "(once each). Files it cannot use are skipped, said so in the tick, and listed by `pipeline status`.",
)
def metric_triggers(context: SensorEvaluationContext, store: StoreResource) -> SensorResult:
    """One tick: import new metric files, re-arm stalled firings, evaluate what changed, request runs.

    "Fires once" is enforced in the store (a unique firing per article, rule and published version), not
    by the cursor or run keys, so repeated ticks and a fresh Dagster instance cannot fire a rule twice.
    The cursor holds the files handled and how far the store was read (`pipeline.trigger_cursor`); a tick
    that reaches its limit stops there and the next one continues. A bad metrics file, or a site whose
    settings are invalid, is reported and skipped; the rest go on.
    """
    started = time.monotonic()
    db = store.open()
    cursor = TriggerCursor.parse(context.cursor, context.log.warning)
    scan = scan_metrics_folder(db, settings.metrics_dir(), cursor.files)
    for imported in scan.imported:
        context.log.info(f"metrics: {imported.path.name}: {imported.added} new rows ({imported.already_known} known)")
        for page, rows in sorted(imported.unmatched.items()):
            context.log.warning(f"metrics: {imported.path.name}: {page} matches no article ({rows} rows not imported)")
        for reason in imported.rejected:
            context.log.warning(f"metrics: {imported.path.name}: {reason}")
    for rejected in scan.rejected:
        context.log.error(f"metrics: skipped {rejected.name}: {rejected.problem}")
    skipped = [f"{r.name}: {r.summary}" for r in scan.rejected]
    cursor.files = scan.present  # every file there now has been handled

    def run_status(run_id: str) -> str | None:
        run = context.instance.get_run_by_id(run_id)
        return run.status.value if run else None

    rearmed = rearm_stalled(db, run_status)
    for firing in rearmed:
        context.log.warning(f"trigger firing {firing.id} for content {firing.content_id} re-armed: its run ended")

    partitions = set(context.instance.get_dynamic_partitions(SITES_PARTITION))
    sites: list[SiteRules] = []
    for site in db.sites():
        if site.slug not in partitions:
            continue
        try:
            sites.append(site_rule_set(db, site))
        except SiteSettingsError as error:
            context.log.error(f"metric triggers: site {site.slug} skipped: {error}")
            skipped.append(f"site {site.slug}: {error.problems[0]}")

    now = datetime.now(UTC)
    limits = TickLimits(settings.trigger_max_articles(), settings.trigger_max_seconds())
    outcome = run_tick(db, sites, cursor, limits, now, also=[f.content_id for f in rearmed], started=started)
    db.record_sensor_state(SENSOR_NAME, outcome.state(cursor, now, limits))
    summary = f"metric triggers: evaluated {outcome.evaluated:,} articles, {len(outcome.fired):,} fired"
    if outcome.caught_up:
        context.log.info(f"{summary}; caught up")
    else:
        context.log.warning(
            f"{summary}; stopped at the {outcome.stopped} ({limits.max_articles:,} articles, "
            f"{limits.max_seconds:g} s); backlog for the next ticks: {outcome.backlog.describe()}"
        )

    requests = _run_requests([rules.site for rules in sites], outcome.fired)
    for request in requests:
        context.log.info(
            f"metric triggers fired for {request.partition_key}: firings {request.tags['pipeline/firings']}"
        )
    reason = "no trigger rule fired" + (f"; skipped {'; '.join(skipped)}" if skipped else "")
    return SensorResult(run_requests=requests, cursor=cursor.dump(), skip_reason=None if requests else reason)


def _run_requests(sites: Sequence[Site], fired: Sequence[Fired]) -> list[RunRequest]:
    """One regeneration run per site with firings, keyed by its firings and their attempts."""
    requests = []
    for site in sites:
        mine = sorted((f.firing_id, f.attempts) for f in fired if f.site_id == site.id)
        if not mine:
            continue
        key = ",".join(f"{i}.{attempts}" for i, attempts in mine)
        if len(key) > MAX_KEY_CHARS:
            key = f"{len(mine)} firings {mine[0][0]}..{mine[-1][0]} sha1:{hashlib.sha1(key.encode()).hexdigest()[:16]}"
        requests.append(
            RunRequest(
                partition_key=site.slug,
                run_key=f"regenerate:{site.slug}:{key}",
                run_config=RunConfig(ops={"content": ContentConfig(regenerate_firings=[i for i, _ in mine])}),
                tags={"pipeline/run_kind": "regeneration", "pipeline/firings": key},
            )
        )
    return requests

"""The keyword inbox sensor: a new or changed `SLUG.csv` adds the site partition and ingests its keywords."""

import json

from dagster import (
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from assets import ingest_keywords
from assets.partitions import sites_partitions
from pipeline import settings
from pipeline.drop_folder import FolderUnreadable, handled_entries
from pipeline.inbox import scan_inbox
from pipeline.sites import SITES_PARTITION
from resources import StoreResource


@sensor(
    name="keyword_inbox",
    job=ingest_keywords,
    minimum_interval_seconds=settings.sensor_interval_seconds(),
    default_status=DefaultSensorStatus.RUNNING,
    description="Watches the inbox folder (PIPELINE_INBOX_DIR, default data/inbox) for SLUG.csv keyword files; "
    "a new or changed file adds the site and runs `keywords`; later stages follow by automation. Files it "
    "cannot use are skipped, said so in the tick, and listed by `pipeline status`.",
)
def keyword_inbox(context: SensorEvaluationContext, store: StoreResource) -> SensorResult | SkipReason:
    """Register new/changed keyword files, add their partitions and request their keywords runs.

    The cursor remembers each entry's last handled fingerprint (content hash, or what a non-file entry
    is), so an entry is handled once per content: a bad one is logged, named in the skip reason and
    recorded in the store's rejected files once, and never blocks the others.
    """
    folder = settings.inbox_dir()
    if not folder.is_dir():
        return SkipReason(f"inbox folder {folder} does not exist; create it and drop SLUG.csv files there")
    seen = _cursor(context)
    try:
        scan = scan_inbox(store.open(), folder, seen, settings.sites_dir())
    except FolderUnreadable as error:
        context.log.error(f"keyword inbox: {error}")
        return SkipReason(f"keyword inbox: {error}")
    for rejected in scan.rejected:
        context.log.error(f"keyword inbox: skipped {rejected.name}: {rejected.problem}")
    for accepted in scan.accepted:
        context.log.info(
            f"keyword inbox: {accepted.name} accepted for site {accepted.slug} ({accepted.keywords} keywords)"
        )
    cursor = json.dumps(scan.present, sort_keys=True)  # every entry there now has been handled
    if not scan.accepted:
        skipped = "; ".join(f"{r.name}: {r.summary}" for r in scan.rejected)
        reason = f"skipped {len(scan.rejected)} file(s): {skipped}" if skipped else "no new or changed keyword files"
        return SensorResult(skip_reason=reason, cursor=cursor)
    known = set(context.instance.get_dynamic_partitions(SITES_PARTITION))
    new = sorted({a.slug for a in scan.accepted} - known)
    return SensorResult(
        run_requests=[
            RunRequest(
                partition_key=a.slug, run_key=f"inbox:{a.slug}:{a.sha256[:16]}", tags={"pipeline/source": "inbox"}
            )
            for a in scan.accepted
        ],
        dynamic_partitions_requests=[sites_partitions.build_add_request(new)] if new else [],
        cursor=cursor,
    )


def _cursor(context: SensorEvaluationContext) -> dict[str, str]:
    return handled_entries(context.cursor, context.log.warning, "keyword inbox")

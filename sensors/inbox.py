"""The keyword inbox sensor: a new or changed `SLUG.csv` adds the site partition and ingests its keywords."""

import json
import os

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
from pipeline.inbox import scan_inbox
from resources import StoreResource

INTERVAL_SECONDS = int(os.environ.get("PIPELINE_SENSOR_INTERVAL_SECONDS", "30"))


@sensor(
    name="keyword_inbox",
    job=ingest_keywords,
    minimum_interval_seconds=INTERVAL_SECONDS,
    default_status=DefaultSensorStatus.RUNNING,
    description="Watches the inbox folder (PIPELINE_INBOX_DIR, default data/inbox) for SLUG.csv keyword files; "
    "a new or changed file adds the site and runs `keywords`; later stages follow by automation.",
)
def keyword_inbox(context: SensorEvaluationContext, store: StoreResource) -> SensorResult | SkipReason:
    """Register new/changed keyword files, add their partitions and request their keywords runs.

    The cursor remembers each file's last handled content hash, so a file is handled once per content;
    bad files are logged and reported in the skip reason without blocking the others.
    """
    folder = settings.inbox_dir()
    if not folder.is_dir():
        return SkipReason(f"inbox folder {folder} does not exist; create it and drop SLUG.csv files there")
    seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    scan = scan_inbox(store.open(), folder, seen, settings.sites_dir())
    for rejected in scan.rejected:
        context.log.error(f"keyword inbox: {rejected.path.name} rejected: {rejected.problem}")
        seen[rejected.path.name] = rejected.sha256  # report once; a fixed file has a new hash
    for accepted in scan.accepted:
        seen[f"{accepted.slug}.csv"] = accepted.sha256
        context.log.info(f"keyword inbox: {accepted.slug}.csv accepted ({accepted.keywords} keywords)")
    cursor = json.dumps(seen, sort_keys=True)
    if not scan.accepted:
        problems = "; ".join(f"{r.path.name}: {r.problem.splitlines()[-1].strip()}" for r in scan.rejected)
        return SensorResult(skip_reason=problems or "no new or changed keyword files", cursor=cursor)
    known = set(context.instance.get_dynamic_partitions(sites_partitions.name))
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

"""The batch sensor: follows open provider batches and requests the run that ingests each finished one."""

from dagster import (
    AssetKey,
    DefaultSensorStatus,
    RunConfig,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    sensor,
)

from assets import ingest_batches
from pipeline import settings
from pipeline.llm.batch_mode import FINISHED, follow_batch
from pipeline.llm.wire import ProviderError
from pipeline.sites import SiteSettingsError, site_settings
from resources import LLMResource, StoreResource

SENSOR_NAME = "model_batches"


@sensor(
    name=SENSOR_NAME,
    job=ingest_batches,
    minimum_interval_seconds=settings.sensor_interval_seconds(settings.BATCH_SENSOR_INTERVAL_SECONDS),
    default_status=DefaultSensorStatus.RUNNING,
    description="Polls the provider for open batches (batch mode: half price, answered within 24 h) and, when one "
    "finishes, requests a batch-mode run of its stage for its site, which ingests the answers once.",
)
def model_batches(context: SensorEvaluationContext, store: StoreResource, llm: LLMResource) -> SensorResult:
    """One tick: bring each open batch up to date (reconciling old intents), and request one ingestion run
    per finished batch (run key `batch:ID`: however often the sensor ticks, one run; the run claims the
    batch's output in the store, so a second ingestion changes nothing)."""
    db = store.open()
    requests, waiting, problems = [], 0, []
    for batch in db.batches_to_follow():
        if batch.status not in FINISHED:
            try:
                api = llm.batch_api(site_settings(db.site(batch.partition).settings))
                if api is None:
                    problems.append(f"batch {batch.id}: the {batch.partition} site's provider has no Batch API now")
                    continue
                batch = follow_batch(db, api, batch)
            except (ProviderError, SiteSettingsError, LookupError) as error:
                problems.append(f"batch {batch.id} ({batch.partition}): {error}")
                continue
        if batch.status in FINISHED and batch.ingested_at is None:
            requests.append(
                RunRequest(
                    partition_key=batch.partition,
                    run_key=f"batch:{batch.id}",
                    asset_selection=[AssetKey(batch.stage)],
                    run_config=RunConfig(ops={batch.stage: {"config": {"batch": True}}}),
                    tags={"pipeline/run_kind": "batch-ingestion", "pipeline/batch": str(batch.id)},
                )
            )
            context.log.info(f"batch {batch.id} of {batch.stage} for {batch.partition} is {batch.status}: ingesting")
        else:
            waiting += 1
    for problem in problems:
        context.log.warning(problem)
    reason = f"{waiting} batch(es) still with the provider" if waiting else "no open batches"
    return SensorResult(run_requests=requests, skip_reason=None if requests else reason)

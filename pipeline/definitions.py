"""The Dagster code location: assembles assets, the main job, resources and automation.

This is the composition root: the only module of `pipeline/` (with the CLI) that imports Dagster.
"""

from dagster import (
    AssetSelection,
    AutomationConditionSensorDefinition,
    DefaultSensorStatus,
    Definitions,
)

from assets import ALL_ASSETS, JOBS
from pipeline import settings
from pipeline.executor import executor_definition
from resources import MediaResource, StoreResource
from resources.llm import llm_from_environment
from sensors import JOBS as MAINTENANCE_JOBS
from sensors import SCHEDULES, SENSORS

# Declarative automation runs out of the box: downstream stages follow an ingested keyword file.
automation = AutomationConditionSensorDefinition(
    "stage_automation",
    target=AssetSelection.all(),
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=settings.sensor_interval_seconds(),
    description="Materializes each stage's partition once its upstream stage was updated (eager conditions).",
)

defs = Definitions(
    assets=ALL_ASSETS,
    jobs=[*JOBS, *MAINTENANCE_JOBS],
    sensors=[*SENSORS, automation],
    schedules=SCHEDULES,
    resources={"store": StoreResource(), "llm": llm_from_environment(), "media": MediaResource()},
    # In-process by default: the chain is linear per site, and one process per run avoids 2-3 s of
    # process start per step. `PIPELINE_EXECUTOR=celery` spreads steps over Celery workers instead.
    executor=executor_definition(),
)

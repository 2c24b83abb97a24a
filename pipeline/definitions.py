"""The Dagster code location: assembles assets, the main job, resources and automation.

This is the composition root: the only module of `pipeline/` (with the CLI) that imports Dagster.
"""

from dagster import (
    AssetSelection,
    AutomationConditionSensorDefinition,
    DefaultSensorStatus,
    Definitions,
    in_process_executor,
)

from assets import ALL_ASSETS, JOBS
from pipeline import settings
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
    # The chain is linear per site: one process per run avoids 2-3 s of process start per step.
    executor=in_process_executor,
)

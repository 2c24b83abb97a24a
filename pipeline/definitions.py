"""The Dagster code location: assembles assets, the main job, resources and automation.

This is the composition root: the only module of `pipeline/` (with the CLI) that imports Dagster.
"""

from dagster import Definitions, in_process_executor

from assets import ALL_ASSETS, content_pipeline
from resources import MediaResource, StoreResource
from resources.llm import llm_from_environment
from sensors import SCHEDULES, SENSORS

defs = Definitions(
    assets=ALL_ASSETS,
    jobs=[content_pipeline],
    sensors=SENSORS,
    schedules=SCHEDULES,
    resources={"store": StoreResource(), "llm": llm_from_environment(), "media": MediaResource()},
    # The chain is linear per site: one process per run avoids 2-3 s of process start per step.
    executor=in_process_executor,
)

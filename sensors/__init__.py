"""Sensors and schedules: keyword inbox, metric triggers, provider batches, nightly fill-in, publishing
calendar, A/B experiments, weekly clean-up.

All run by default (`default_status=RUNNING`), so `make ui` is working automation out of the box.
"""

from sensors.batches import model_batches
from sensors.inbox import keyword_inbox
from sensors.metrics import metric_triggers
from sensors.schedules import ab_experiments, maintenance, nightly_fill_in, publishing_calendar, weekly_clean_up

SENSORS = [keyword_inbox, metric_triggers, model_batches]
SCHEDULES = [nightly_fill_in, publishing_calendar, ab_experiments, weekly_clean_up]
JOBS = [maintenance]

__all__ = ["JOBS", "SCHEDULES", "SENSORS"]

"""Sensors and schedules (keyword inbox, metric triggers, nightly fill-in, clean-up).

None are defined yet: the keyword inbox and metric sensors, and the schedules, arrive with the
automation work. `pipeline.definitions` collects `SENSORS` and `SCHEDULES` from here.
"""

SENSORS: list = []
SCHEDULES: list = []

"""The publishing calendar as pure arithmetic: which instants a site's schedule offers after a moment.

A schedule (`pipeline.sites.ScheduleSettings`) names wall-clock times in a timezone; a slot is one of
those times on one day, turned into an instant (an aware UTC datetime, the only kind the store keeps).
The conversion happens per day in the schedule's timezone, so a 09:00 Europe/Berlin slot is 08:00 UTC in
summer and 07:00 UTC in winter.

Daylight-saving days, decided once here so every caller gets the same answer:

- A local time that does not exist (the clock jumps from 02:00 to 03:00) is moved forward by the jump:
  02:30 becomes 03:30 local time. If that lands on another slot of the same day, the two are one slot.
- A local time that happens twice (the clock goes back from 03:00 to 02:00) takes its first occurrence
  (still on summer time), so the slot is never later than a reader of the schedule would expect.

No store, no clock: callers pass the moment to count from.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from pipeline.sites import ScheduleSettings


def slots_after(schedule: ScheduleSettings, after: datetime, count: int) -> list[datetime]:
    """The next `count` slot instants of `schedule` strictly after `after`, earliest first, as aware UTC datetimes.

    `after` must be timezone-aware (any zone). See the module docstring for daylight-saving days.
    """
    if after.tzinfo is None or after.utcoffset() is None:
        raise ValueError(f"slots_after needs a timezone-aware moment, got naive {after.isoformat()}")
    if count <= 0:
        return []
    zone = ZoneInfo(schedule.timezone)
    times = schedule.daily_times()
    after_utc = after.astimezone(UTC)
    # From the local day before: a missing time moved forward can cross midnight into the next day, so the
    # day `after` falls on is not always where its next slot is; one extra day checked costs nothing.
    day = after_utc.astimezone(zone).date() - timedelta(days=1)
    slots: list[datetime] = []
    while len(slots) < count:
        slots += [slot for slot in _day_slots(zone, times, day) if slot > after_utc]
        day += timedelta(days=1)
    return slots[:count]


def _day_slots(zone: ZoneInfo, times: list[time], day: date) -> list[datetime]:
    """One local day's slots as UTC instants, earliest first, without duplicates."""
    instants = {
        # fold=0: an ambiguous time is its first occurrence; a missing one is read with the offset before
        # the jump, which lands it the jump's length later (02:30 -> 03:30), as the module docstring says.
        datetime.combine(day, clock, tzinfo=zone).replace(fold=0).astimezone(UTC)
        for clock in times
    }
    return sorted(instants)

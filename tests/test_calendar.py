"""The publishing calendar: slots from a site's schedule, given in approval order, due until published.

Every test passes `now` explicitly (a frozen clock), so slots are exact instants.
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import dagster as dg
import pytest

from pipeline import review
from pipeline.models import as_utc
from pipeline.publishing.calendar import slots_after
from pipeline.sites import ScheduleSettings
from resources import StoreResource
from sensors.schedules import publishing_calendar
from tests.review_data import add_articles, content_row, publish

BERLIN = {"schedule": {"per_day": 2, "times": ["09:00", "15:00"], "timezone": "Europe/Berlin"}}
# Winter: Berlin is UTC+1, so 09:00 and 15:00 local are 08:00 and 14:00 UTC.
DEC_1_MORNING = datetime(2026, 12, 1, 6, 0, tzinfo=UTC)
WINTER_SLOTS = [
    datetime(2026, 12, 1, 8, 0, tzinfo=UTC),
    datetime(2026, 12, 1, 14, 0, tzinfo=UTC),
    datetime(2026, 12, 2, 8, 0, tzinfo=UTC),
    datetime(2026, 12, 2, 14, 0, tzinfo=UTC),
    datetime(2026, 12, 3, 8, 0, tzinfo=UTC),
]


def utc(year: int, month: int, day: int, hour: int, minute: int) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def schedule(times: list[str], timezone: str = "Europe/Berlin") -> ScheduleSettings:
    return ScheduleSettings(times=times, timezone=timezone)


def slot(env, content_id: int) -> datetime | None:
    value = content_row(env, content_id).publish_slot
    return as_utc(value) if value else None


# -- slots_after (pure) ------------------------------------------------------------------------------


def test_slots_are_the_schedule_times_in_its_timezone_strictly_after_the_moment():
    berlin = ScheduleSettings.model_validate(BERLIN["schedule"])
    assert slots_after(berlin, DEC_1_MORNING, 5) == WINTER_SLOTS
    # Exactly on a slot: that slot is not "after" it.
    assert slots_after(berlin, WINTER_SLOTS[0], 2) == WINTER_SLOTS[1:3]
    # Any zone for the moment; the answer is always UTC.
    assert slots_after(berlin, DEC_1_MORNING.astimezone(ZoneInfo("Europe/Berlin")), 1) == WINTER_SLOTS[:1]
    assert all(s.tzinfo is UTC for s in slots_after(berlin, DEC_1_MORNING, 3))
    assert slots_after(berlin, DEC_1_MORNING, 0) == []


def test_per_day_without_times_spreads_the_slots_over_the_day():
    three = ScheduleSettings(per_day=3, timezone="UTC")
    assert slots_after(three, utc(2026, 12, 1, 0, 0), 4) == [
        utc(2026, 12, 1, 9, 0),
        utc(2026, 12, 1, 13, 0),
        utc(2026, 12, 1, 17, 0),
        utc(2026, 12, 2, 9, 0),
    ]


def test_a_berlin_0900_slot_is_0700_utc_in_summer_and_0800_utc_in_winter_across_the_dst_change():
    nine = schedule(["09:00"])
    # Summer time ends on Sunday 25 October 2026 at 03:00 CEST.
    assert slots_after(nine, utc(2026, 10, 23, 12, 0), 3) == [
        utc(2026, 10, 24, 7, 0),  # CEST, UTC+2
        utc(2026, 10, 25, 8, 0),  # CET, UTC+1
        utc(2026, 10, 26, 8, 0),
    ]
    # And back on Sunday 29 March 2026 at 02:00 CET.
    assert slots_after(nine, utc(2026, 3, 28, 0, 0), 2) == [utc(2026, 3, 28, 8, 0), utc(2026, 3, 29, 7, 0)]


def test_a_missing_local_time_moves_forward_and_an_ambiguous_one_takes_its_first_occurrence():
    half_past_two = schedule(["02:30"])
    # 29 March: 02:00-03:00 does not exist in Berlin; 02:30 becomes 03:30 CEST (01:30 UTC).
    assert slots_after(half_past_two, utc(2026, 3, 28, 12, 0), 1) == [utc(2026, 3, 29, 1, 30)]
    # 25 October: 02:30 happens twice; the first one is still CEST (00:30 UTC), not CET (01:30 UTC).
    assert slots_after(half_past_two, utc(2026, 10, 24, 12, 0), 1) == [utc(2026, 10, 25, 0, 30)]
    # A missing time moved onto another slot of the day is one slot, never two articles at one instant.
    both = schedule(["02:30", "03:30"])
    assert slots_after(both, utc(2026, 3, 28, 12, 0), 3) == [
        utc(2026, 3, 29, 1, 30),
        utc(2026, 3, 30, 0, 30),
        utc(2026, 3, 30, 1, 30),
    ]


def test_a_naive_moment_is_refused():
    with pytest.raises(ValueError, match="timezone-aware"):
        slots_after(schedule(["09:00"]), datetime(2026, 12, 1, 6, 0), 1)


# -- slots of approved articles ----------------------------------------------------------------------


def test_approved_articles_get_the_next_slots_in_approval_order(env):
    a, b, c = add_articles(env, "berlin", {"espresso": 3}, settings=BERLIN)["espresso"]
    for minute, content_id in enumerate([c, a, b]):
        review.approve(env.store, content_id, actor="ed", now=DEC_1_MORNING + timedelta(minutes=minute))
    assert [slot(env, c), slot(env, a), slot(env, b)] == WINTER_SLOTS[:3]
    assert content_row(env, c).approved_at is not None


def test_articles_approved_in_one_bulk_action_get_one_slot_each_in_id_order(env):
    ids = add_articles(env, "berlin", {"espresso": 3, "grinders": 2}, settings=BERLIN)
    everything = sorted(ids["espresso"] + ids["grinders"])
    outcomes = review.approve_many(env.store, site="berlin", all_drafts=True, actor="ed", now=DEC_1_MORNING)
    assert [o.done.slot for o in outcomes if o.done] == WINTER_SLOTS
    assert [slot(env, content_id) for content_id in everything] == WINTER_SLOTS
    assert len({slot(env, content_id) for content_id in everything}) == len(everything)


def test_a_later_approval_takes_the_slot_after_the_latest_one_given_including_a_published_articles(env):
    first, second, third = add_articles(env, "berlin", {"espresso": 3}, settings=BERLIN)["espresso"]
    review.approve(env.store, first, actor="ed", now=DEC_1_MORNING)
    review.approve(env.store, second, actor="ed", now=DEC_1_MORNING)
    publish(env, second, at=WINTER_SLOTS[1])
    assert slot(env, second) == WINTER_SLOTS[1], "publishing keeps the slot: it is the article's history"
    review.approve(env.store, third, actor="ed", now=DEC_1_MORNING + timedelta(hours=1))
    assert slot(env, third) == WINTER_SLOTS[2]


def test_a_missed_slot_stays_due_and_is_returned_again_on_the_next_run(env):
    late, newer = add_articles(env, "berlin", {"espresso": 2}, settings=BERLIN)["espresso"]
    site = env.store.site("berlin")
    review.approve(env.store, late, actor="ed", now=DEC_1_MORNING)
    assert env.store.due_for_publishing(site.id, DEC_1_MORNING) == []
    # The slot passes while the target is down: the article is due now, and still due on the next run.
    after_slot = WINTER_SLOTS[0] + timedelta(hours=3)
    assert env.store.due_for_publishing(site.id, after_slot) == [late]
    assert env.store.assign_publish_slots(site.id, ScheduleSettings.model_validate(BERLIN["schedule"]), after_slot) == 0
    next_day = WINTER_SLOTS[2] + timedelta(hours=1)
    assert env.store.due_for_publishing(site.id, next_day) == [late]
    assert slot(env, late) == WINTER_SLOTS[0], "a missed slot is kept, never moved"
    # A new approval is not given the missed slot nor one already past.
    review.approve(env.store, newer, actor="ed", now=next_day)
    assert slot(env, newer) == WINTER_SLOTS[3]
    assert env.store.due_for_publishing(site.id, WINTER_SLOTS[3]) == [late, newer]
    publish(env, late, at=next_day)
    assert env.store.due_for_publishing(site.id, WINTER_SLOTS[3]) == [newer]
    assert env.store.publishing_queue(site.id) == [(newer, WINTER_SLOTS[3])]


def test_rejecting_clears_the_approval_time_and_the_slot(env):
    first, second = add_articles(env, "berlin", {"espresso": 2}, settings=BERLIN)["espresso"]
    review.approve(env.store, first, actor="ed", now=DEC_1_MORNING)
    review.approve(env.store, second, actor="ed", now=DEC_1_MORNING)
    review.reject(env.store, first, note="Needs sources.", actor="ed")
    row = content_row(env, first)
    assert (row.status, row.approved_at, row.publish_slot) == ("draft", None, None)
    assert slot(env, second) == WINTER_SLOTS[1], "the others keep their slots"
    assert env.store.due_for_publishing(env.store.site("berlin").id, WINTER_SLOTS[4]) == [second]
    # Approved again, it is given a fresh slot after the latest one.
    review.approve(env.store, first, actor="ed", now=DEC_1_MORNING)
    assert slot(env, first) == WINTER_SLOTS[2]


def test_without_a_schedule_an_approved_article_is_due_at_once(env):
    (content_id,) = add_articles(env, "plain", {"espresso": 1})["espresso"]
    done = review.approve(env.store, content_id, actor="ed", now=DEC_1_MORNING)
    row = content_row(env, content_id)
    assert row.approved_at is not None and row.publish_slot is not None
    assert as_utc(row.approved_at) == as_utc(row.publish_slot) == DEC_1_MORNING == done.slot
    assert env.store.due_for_publishing(row.site_id, DEC_1_MORNING) == [content_id]
    assert env.store.due_for_publishing(row.site_id, DEC_1_MORNING - timedelta(seconds=1)) == []


def test_concurrent_approvals_never_get_the_same_slot(env):
    ids = add_articles(env, "berlin", {"espresso": 8}, settings=BERLIN)["espresso"]
    start = threading.Barrier(len(ids))
    errors: list[BaseException] = []

    def approve(content_id: int) -> None:
        try:
            start.wait()
            review.approve(env.store, content_id, actor="ed", now=DEC_1_MORNING)
        except BaseException as error:  # reported below, a thread's exception would be lost
            errors.append(error)

    threads = [threading.Thread(target=approve, args=(content_id,)) for content_id in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    slots = sorted(slot(env, content_id) for content_id in ids)  # type: ignore[type-var]
    assert slots == slots_after(ScheduleSettings.model_validate(BERLIN["schedule"]), DEC_1_MORNING, len(ids))


# -- review list ---------------------------------------------------------------------------------------


def test_review_list_shows_each_slot_in_the_sites_timezone_and_marks_due_ones(env, cli, capsys):
    past, future, draft = add_articles(env, "berlin", {"espresso": 3}, settings=BERLIN)["espresso"]
    review.approve(env.store, past, actor="ed", now=DEC_1_MORNING - timedelta(days=365))
    review.approve(env.store, future, actor="ed", now=datetime(2099, 1, 1, tzinfo=UTC))
    assert cli("review", "list", "--site", "berlin") == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert "slot" in lines["id"]
    assert "2025-12-01 09:00 Europe/Berlin due" in lines[str(past)]
    assert "2099-01-01 09:00 Europe/Berlin" in lines[str(future)] and " due" not in lines[str(future)]
    assert "  -  " in lines[str(draft)]

    assert cli("review", "list", "--site", "berlin", "--json") == 0
    items = {item["id"]: item for item in json.loads(capsys.readouterr().out)}
    assert items[past]["slot"] == "2025-12-01T08:00:00+00:00"
    assert items[past]["approved_at"] == "2025-12-01T06:00:00+00:00"
    assert (items[draft]["slot"], items[draft]["approved_at"]) == (None, None)


# -- the publishing_calendar schedule ------------------------------------------------------------------


def test_the_publishing_calendar_schedule_requests_a_run_only_for_sites_with_a_calendar_and_something_due(env):
    two_days_ago = datetime.now(UTC) - timedelta(days=2)
    due = add_articles(env, "due", {"c": 1}, settings=BERLIN)["c"][0]
    later = add_articles(env, "later", {"c": 1}, settings=BERLIN)["c"][0]
    no_calendar = add_articles(env, "no-calendar", {"c": 1})["c"][0]
    review.approve(env.store, due, actor="ana", now=two_days_ago)  # its slot passed: due now
    review.approve(env.store, later, actor="ana")  # its slot is ahead
    review.approve(env.store, no_calendar, actor="ana")  # due at once, but the site has no calendar
    # Schedule contexts hand over an instance by reference, which ephemeral instances lack.
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("sites", ["due", "later", "no-calendar"])
        with dg.build_schedule_context(
            instance=instance,
            scheduled_execution_time=datetime(2026, 12, 1, 9, 15, tzinfo=UTC),
            resources={"store": StoreResource(database_url=env.url)},
        ) as context:
            requests = publishing_calendar(context)

    assert isinstance(requests, list) and all(isinstance(r, dg.RunRequest) for r in requests)
    assert [(r.partition_key, r.run_key) for r in requests] == [("due", "publish:2026-12-01T09:15:due")]
    assert requests[0].tags["pipeline/run_kind"] == "publishing" and publishing_calendar.job_name == "publish_articles"

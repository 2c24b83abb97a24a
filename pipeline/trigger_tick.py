"""One tick of incremental trigger evaluation: only the articles whose due-state may have changed since the
cursor, and at most a configured number of them.

What can make a rule hold for an article, and how a tick finds those articles (each an indexed range read
from the cursor's position, in this order):

1. its firing failed (the rule is armed again): failed firings by `(changed_at, id)`; the last 30 seconds
   are read again each tick, so a status change committed late is not missed;
2. a rule was added for it: rules by id (a new site-wide rule changes the site's fingerprint, below);
3. it was published (a new version): publication review events by id;
4. new metric rows: `post_metrics` by id;
5. time: for each distinct minimum age of a site's rules, the articles whose age passed it since the last
   tick, by `content (site_id, status, published_at, id)`;
6. the site's site-wide rules (store defaults, settings) changed, or the site is new to the cursor: a scan
   of all its published articles, resumable by `(published_at, id)`.

Rules on windows of days (`trend`, `since_publication`) need nothing of their own: their windows end at
an article's newest data, so only the changes above can make them hold, and `evaluate` reads the window
totals of each chunk in two grouped queries.

Articles are evaluated in chunks of 500 (up to 5,000 for new metric rows) and the positions advance after
each chunk, so a tick that reaches `max_articles` or `max_seconds` stops between chunks and the next tick
resumes exactly there; articles left behind are the backlog (`backlog`). Sites skipped in a tick (not a
partition yet, invalid settings) drop out of the cursor and are scanned once they come back.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pipeline.store import Store
from pipeline.trigger_cursor import START, Key, SitePosition, TriggerCursor
from pipeline.triggers import Fired, SiteRules, evaluate, fire

SENSOR_NAME = "metric_triggers"
CHUNK = 500  # articles evaluated (and positions advanced) at a time
# New metric rows: up to this many articles at a time, so that the rows of one article spread over a file
# (one metric after another) are read once, not once per chunk.
METRIC_ARTICLES = 5000
METRIC_PAGE = 50_000  # metric rows read at a time
SETTLE = timedelta(seconds=30)  # failed firings this recent are read again next tick
AGE_SLACK = timedelta(seconds=1)  # an article exactly at its minimum age waits for the next tick
LAST_ID = 2**31 - 1


@dataclass(frozen=True)
class TickLimits:
    """How much one tick may do before it leaves the rest for the next."""

    max_articles: int
    max_seconds: float


@dataclass(frozen=True)
class Backlog:
    """What is still to be evaluated after a tick."""

    metric_rows: int = 0
    publications: int = 0
    articles: int = 0  # in site scans under way and minimum ages passed

    @property
    def empty(self) -> bool:
        """Nothing left."""
        return not (self.metric_rows or self.publications or self.articles)

    def describe(self) -> str:
        """e.g. `15 metric rows, 0 publications, 2,000 articles to scan`."""
        return (
            f"{self.metric_rows:,} metric rows, {self.publications:,} publications, {self.articles:,} articles to scan"
        )


@dataclass
class TickOutcome:
    """What a tick did: firings, articles evaluated, why it stopped early (None: it did everything)."""

    fired: list[Fired] = field(default_factory=list)
    evaluated: int = 0
    stopped: str | None = None
    backlog: Backlog = field(default_factory=Backlog)

    @property
    def caught_up(self) -> bool:
        """Everything that changed up to this tick was evaluated."""
        return self.stopped is None

    def state(self, cursor: TriggerCursor, now: datetime, limits: TickLimits) -> dict[str, Any]:
        """What the sensor records in the store for `pipeline status` (the cursor without its file list)."""
        positions = {**cursor.as_dict(), "files": {}}
        return {
            "tick_at": now.isoformat(),
            "evaluated": self.evaluated,
            "fired": len(self.fired),
            "stopped": self.stopped,
            "caught_up": self.caught_up,
            "backlog": asdict(self.backlog),
            "limits": asdict(limits),
            "cursor": positions,
        }


class _Tick:
    """The budget of one tick and what it evaluated so far."""

    def __init__(self, store: Store, sites: dict[int, SiteRules], limits: TickLimits, now: datetime, started: float):
        self.store, self.sites, self.now = store, sites, now
        self.remaining = limits.max_articles
        self.deadline = started + limits.max_seconds
        self.outcome = TickOutcome()
        self.seen: set[int] = set()

    def room(self, most: int = CHUNK) -> int:
        """Articles the next chunk may hold (at most `most`); 0 once the tick must stop (and why is recorded)."""
        if self.outcome.stopped:
            return 0
        if self.remaining <= 0:
            self.outcome.stopped = "article limit"
        elif time.monotonic() > self.deadline:
            self.outcome.stopped = "time limit"
        return 0 if self.outcome.stopped else min(most, self.remaining)

    def evaluate(self, content_ids: Iterable[int]) -> None:
        ids = set(content_ids)
        if not ids:
            return
        self.remaining -= len(ids)
        self.seen |= ids
        self.outcome.fired += fire(self.store, evaluate(self.store, self.sites, ids, self.now))


def run_tick(
    store: Store,
    sites: Sequence[SiteRules],
    cursor: TriggerCursor,
    limits: TickLimits,
    now: datetime,
    also: Iterable[int] = (),
    started: float | None = None,
) -> TickOutcome:
    """Evaluate what changed since `cursor` for `sites` (those this tick may fire for), advancing `cursor`
    in place; `also`: articles to evaluate in any case (their firing was just re-armed). `started`: when
    the tick began (`time.monotonic()`), so the time its metric imports took counts against `max_seconds`."""
    if cursor.fresh:  # every site is scanned, which covers every row and event up to now
        cursor.metric_id, cursor.event_id, cursor.rule_id = store.trigger_positions()
        cursor.firing, cursor.sites = (now - SETTLE, 0), {}
    cursor.sites = {rules.site.id: _position(cursor.sites.get(rules.site.id), rules) for rules in sites}
    active = {rules.site.id: rules for rules in sites if not rules.empty}
    tick = _Tick(store, active, limits, now, time.monotonic() if started is None else started)
    tick.evaluate(also)
    _failed_firings(tick, cursor)
    _new_rules(tick, cursor)
    _publications(tick, cursor)
    _metric_rows(tick, cursor)
    for rules in sites:
        if not rules.empty:
            _aged(tick, rules, cursor.sites[rules.site.id])
    for rules in sites:
        if not rules.empty:
            _scan(tick, rules.site.id, cursor.sites[rules.site.id])
    tick.outcome.evaluated = len(tick.seen)
    tick.outcome.backlog = backlog(store, cursor, now)
    return tick.outcome


def backlog(store: Store, cursor: TriggerCursor, now: datetime) -> Backlog:
    """What is left after `cursor`: metric rows and publications not read, articles in scans under way and
    articles whose minimum age passed since their window's position (indexed counts)."""
    articles = 0
    for site_id, position in cursor.sites.items():
        if position.scan is not None:
            articles += store.count_published_after(site_id, position.scan, None)
        for age, after in position.aged.items():
            articles += store.count_published_after(site_id, after, _aged_until(now, float(age)))
    return Backlog(
        metric_rows=store.count_metric_rows_after(cursor.metric_id or 0),
        publications=store.count_publications_after(cursor.event_id),
        articles=articles,
    )


def _position(known: SitePosition | None, rules: SiteRules) -> SitePosition:
    position = known or SitePosition()
    if position.rules != rules.fingerprint:  # new to the cursor, or its site-wide rules changed
        position.rules, position.scan = rules.fingerprint, START
    if rules.empty:
        position.scan, position.aged = None, {}
    return position


def _failed_firings(tick: _Tick, cursor: TriggerCursor) -> None:
    while room := tick.room():
        rows = tick.store.failed_firings_after(cursor.firing, room)
        tick.evaluate(content_id for _, _, content_id in rows)
        if rows:
            cursor.firing = (rows[-1][0], rows[-1][1])
        if len(rows) < room:
            cursor.firing = _earlier(cursor.firing, (tick.now - SETTLE, 0))
            return


def _new_rules(tick: _Tick, cursor: TriggerCursor) -> None:
    # A site-wide rule needs nothing here: it changes its site's fingerprint, which starts a scan.
    while room := tick.room():
        rows = tick.store.rules_after(cursor.rule_id, room)
        tick.evaluate(content_id for _, _, content_id in rows if content_id is not None)
        if rows:
            cursor.rule_id = rows[-1][0]
        if len(rows) < room:
            return


def _publications(tick: _Tick, cursor: TriggerCursor) -> None:
    while room := tick.room():
        rows = tick.store.publications_after(cursor.event_id, room)
        tick.evaluate(content_id for _, content_id in rows)
        if rows:
            cursor.event_id = rows[-1][0]
        if len(rows) < room:
            return


def _metric_rows(tick: _Tick, cursor: TriggerCursor) -> None:
    position = cursor.metric_id or 0
    while room := tick.room(METRIC_ARTICLES):
        rows = tick.store.metric_rows_after(position, METRIC_PAGE)
        articles: set[int] = set()
        for row_id, content_id in rows:
            if content_id not in articles and len(articles) == room:
                break  # the rows of this article are read again by the next chunk or tick
            articles.add(content_id)
            position = row_id
        tick.evaluate(articles)
        cursor.metric_id = position
        if not rows or (len(rows) < METRIC_PAGE and position == rows[-1][0]):
            return


def _aged(tick: _Tick, rules: SiteRules, position: SitePosition) -> None:
    ages = set(tick.store.rule_ages(rules.site.id)) | {rule.min_age_hours for rule in rules.defaults}
    aged: dict[str, Key] = {}
    for age in sorted(ages):
        key, until = repr(float(age)), _aged_until(tick.now, age)
        known = position.aged.get(key)
        if known is None:  # a new age: the articles older than it now were evaluated when its rule came
            aged[key] = (until, LAST_ID)
            continue
        after: Key = known
        while room := tick.room():
            rows = tick.store.published_after(rules.site.id, after, until, room)
            tick.evaluate(content_id for _, content_id in rows)
            if rows:
                after = rows[-1]
            if len(rows) < room:
                after = max(after, (until, LAST_ID), key=_sortable)
                break
        aged[key] = after
    position.aged = aged


def _scan(tick: _Tick, site_id: int, position: SitePosition) -> None:
    while position.scan is not None and (room := tick.room()):
        rows = tick.store.published_after(site_id, position.scan, None, room)
        tick.evaluate(content_id for _, content_id in rows)
        position.scan = None if len(rows) < room else rows[-1]


def _aged_until(now: datetime, age_hours: float) -> datetime:
    return now - timedelta(hours=age_hours) - AGE_SLACK


def _earlier(a: Key, b: Key) -> Key:
    return min(a, b, key=_sortable)


def _sortable(key: Key) -> tuple[float, int]:
    return (float("-inf") if key[0] is None else key[0].timestamp(), key[1])


def status_line(store: Store, now: datetime) -> str | None:
    """`pipeline status`'s line on the metric sensor: its last tick and what it has not evaluated yet, counted
    now against the positions that tick recorded; None if the sensor never ticked on this store."""
    state = store.sensor_state(SENSOR_NAME)
    if state is None:
        return None
    left = backlog(store, TriggerCursor.from_dict(state["cursor"]), now)
    when = datetime.fromisoformat(state["tick_at"]).strftime("%Y-%m-%d %H:%M:%S UTC")
    stopped = f", stopped at the {state['stopped']}" if state.get("stopped") else ""
    return (
        f"Metric triggers: last tick {when} evaluated {state['evaluated']:,} articles{stopped}; "
        f"not evaluated yet: {left.describe()}"
    )

"""Trigger rules: when a published article under-performs, fire a regeneration, exactly once.

Rules come from the store (per article, or site defaults with no article, set with `pipeline triggers`)
and from site settings (`triggers: [...]`). A rule fires for a published article when, at least
`min_age_hours` after publication, the newest value of its metric for either variant (A or B) of the
published version satisfies `value <comparison> threshold`. Firing is recorded in the store on a unique
key (article, rule, published version), so a rule fires once per published version however often it is
evaluated and whatever Dagster instance evaluates it; an article with a regeneration in progress is
skipped; a failed regeneration re-arms its rule.
"""

from __future__ import annotations

import hashlib
import json
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pipeline.metrics import METRIC_NAME
from pipeline.models import Content, FiringStatus, Site, TriggerFiring
from pipeline.sites import MAX_MIN_AGE_HOURS, site_settings
from pipeline.store import Store

COMPARISONS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
}
ACTIVE = (FiringStatus.REQUESTED, FiringStatus.RUNNING)
STALE_AFTER = timedelta(hours=1)  # a requested firing whose run never showed up is re-armed after this


@dataclass(frozen=True)
class Rule:
    """One rule as evaluated: where it came from (`key`), what it checks, what the rewrite should do."""

    key: str
    metric: str
    comparison: str
    threshold: float
    min_age_hours: float
    instruction: str
    content_id: int | None = None

    def describe(self) -> str:
        """Human-readable condition, e.g. `ctr < 0.02 after 168h`."""
        return f"{self.metric} {self.comparison} {self.threshold:g} after {self.min_age_hours:g}h"


@dataclass(frozen=True)
class Due:
    """A rule that holds for an article now."""

    content: Content
    rule: Rule
    triggered_variants: list[str]
    observed: dict[str, dict[str, float]]


def rule_problems(metric: str, comparison: str, threshold: float, min_age_hours: float) -> dict[str, str]:
    """What is wrong with a rule's parts, by field name (empty when it is fine): the same limits as site settings."""
    problems = {}
    if not METRIC_NAME.fullmatch(metric):
        problems["metric"] = f"{metric!r} is not a metric name (lowercase letters, digits, _; up to 60)"
    if comparison not in COMPARISONS:
        problems["comparison"] = f"{comparison!r} is not one of {' '.join(COMPARISONS)}"
    if not math.isfinite(threshold):
        problems["threshold"] = f"{threshold} is not a finite number"
    if not math.isfinite(min_age_hours) or not 0 <= min_age_hours <= MAX_MIN_AGE_HOURS:
        problems["min_age_hours"] = f"{min_age_hours:g} is not between 0 and {MAX_MIN_AGE_HOURS} hours"
    return problems


def site_rules(store: Store, site: Site) -> list[Rule]:
    """Rules of a site: article-specific ones first, then store defaults, then settings defaults."""
    rules = [
        Rule(f"rule:{r.id}", r.metric, r.comparison, r.threshold, r.min_age_hours, r.instruction, r.content_id)
        for r in store.trigger_rules(site.id)
    ]
    rules.sort(key=lambda r: r.content_id is None)
    for spec in site_settings(site.settings, f"settings of site '{site.slug}'").triggers:
        digest = hashlib.sha1(json.dumps(spec.model_dump(), sort_keys=True).encode()).hexdigest()[:12]
        rules.append(
            Rule(f"site:{digest}", spec.metric, spec.comparison, spec.threshold, spec.min_age_hours, spec.instruction)
        )
    return rules


def due_regenerations(store: Store, site: Site, now: datetime | None = None) -> list[Due]:
    """Published articles of `site` for which a rule holds now (at most one rule per article)."""
    now = now or datetime.now(UTC)
    rules = site_rules(store, site)
    if not rules:
        return []
    busy = {f.content_id for f in store.firings(site_id=site.id, statuses=ACTIVE)}
    due = []
    for content in store.published_content(site.id):
        if content.id in busy or content.regeneration_run_id:
            continue
        # `published_content` returns only rows with both set; this narrows their types.
        if content.published_at is None or content.published_version is None:
            continue
        age_hours = (now - _aware(content.published_at)).total_seconds() / 3600
        observed = store.latest_metrics(content.id, content.published_version)
        for rule in rules:
            if rule.content_id not in (None, content.id) or age_hours < rule.min_age_hours:
                continue
            compare = COMPARISONS[rule.comparison]
            triggered = [
                v
                for v in sorted(observed)
                if rule.metric in observed[v] and compare(observed[v][rule.metric], rule.threshold)
            ]
            if triggered:
                due.append(Due(content, rule, triggered, observed))
                break
    return due


def fire_due(store: Store, site: Site, now: datetime | None = None) -> list[int]:
    """Record a firing for every due article; returns the ids of firings that fire now (not before)."""
    fired = []
    for due in due_regenerations(store, site, now):
        firing_id = store.fire_trigger(
            {
                "site_id": site.id,
                "content_id": due.content.id,
                "rule_key": due.rule.key,
                "published_version": due.content.published_version,
                "metric": due.rule.metric,
                "comparison": due.rule.comparison,
                "threshold": due.rule.threshold,
                "instruction": due.rule.instruction,
                "triggered_variants": due.triggered_variants,
                "observed": due.observed,
            }
        )
        if firing_id is not None:
            fired.append(firing_id)
    return fired


def rearm_stalled(
    store: Store, run_status: Callable[[str], str | None], now: datetime | None = None
) -> list[TriggerFiring]:
    """Fail (and so re-arm) firings whose run failed, was canceled or vanished; returns them.

    `run_status(run_id)` gives the Dagster run status name, or None when the instance does not know
    the run (a fresh instance): then only age decides.
    """
    now = now or datetime.now(UTC)
    stalled = []
    for firing in store.firings(statuses=ACTIVE):
        status = run_status(firing.run_id) if firing.run_id else None
        finished_badly = status in {"FAILURE", "CANCELED"}
        finished_without_consuming = status == "SUCCESS"
        too_old = status is None and now - _aware(firing.fired_at) > STALE_AFTER
        if finished_badly or finished_without_consuming or too_old:
            store.fail_firing(
                firing.id,
                firing.run_id or "",
                f"regeneration run {firing.run_id or '(never started)'} ended {status or 'unknown'}",
            )
            stalled.append(firing)
    return stalled


def _aware(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes; everything the store writes is UTC.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)

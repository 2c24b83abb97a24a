"""Trigger rules: when a published article under-performs, fire a regeneration, exactly once.

Rules come from the store (per article, or site defaults with no article, set with `pipeline triggers`)
and from site settings (`triggers: [...]`). A rule fires for a published article when, at least
`min_age_hours` after publication, the newest value of its metric for either variant (A or B) of the
published version satisfies `value <comparison> threshold`. Firing is recorded in the store on a unique
key (article, rule, published version), so a rule fires once per published version however often it is
evaluated and whatever Dagster instance evaluates it; an article with a regeneration in progress is
skipped; a failed regeneration re-arms its rule.

Articles are evaluated in batches (`evaluate`): their rules, newest metrics and firings in progress are
read for the whole batch at once. Which articles a sensor tick evaluates is `pipeline.trigger_tick`'s part.
"""

from __future__ import annotations

import hashlib
import json
import math
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pipeline.metrics import METRIC_NAME
from pipeline.models import FiringStatus, Site, TriggerRule, as_utc
from pipeline.sites import MAX_MIN_AGE_HOURS, site_settings
from pipeline.store import Store
from pipeline.store.trigger_scan import ActiveFiring, ArticleRule, PublishedArticle

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
class SiteRules:
    """The rules of a site that apply to every published article (store defaults, then settings), and a
    fingerprint of them: when it changes, every published article of the site is evaluated again."""

    site: Site
    defaults: tuple[Rule, ...]
    fingerprint: str
    has_article_rules: bool

    @property
    def empty(self) -> bool:
        """No rule at all: nothing of this site can fire."""
        return not self.defaults and not self.has_article_rules


@dataclass(frozen=True)
class Due:
    """A rule that holds for an article now."""

    content: PublishedArticle
    rule: Rule
    triggered_variants: list[str]
    observed: dict[str, dict[str, float]]


@dataclass(frozen=True)
class Fired:
    """A firing recorded now: its id and attempt (2 and more: re-armed after a failed run)."""

    site_id: int
    firing_id: int
    attempts: int


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
    """Every rule of a site: article-specific ones first, then store defaults, then settings defaults."""
    stored = [_stored(r) for r in store.trigger_rules(site.id)]
    stored.sort(key=lambda r: r.content_id is None)
    return [*stored, *_settings_rules(site)]


def site_rule_set(store: Store, site: Site) -> SiteRules:
    """A site's default rules and their fingerprint; `SiteSettingsError` if its stored settings are invalid."""
    defaults = (*(_stored(r) for r in store.site_default_rules(site.id)), *_settings_rules(site))
    text = json.dumps([[r.key, r.metric, r.comparison, r.threshold, r.min_age_hours, r.instruction] for r in defaults])
    fingerprint = hashlib.sha1(text.encode()).hexdigest()[:16]
    return SiteRules(site, defaults, fingerprint, bool(store.rule_ages(site.id)))


def evaluate(store: Store, sites: Mapping[int, SiteRules], content_ids: Iterable[int], now: datetime) -> list[Due]:
    """The rule that holds now (at most one) for each of these articles that is published, of one of
    `sites` and not being regenerated: article rules first (oldest first), then the site's defaults."""
    articles = [a for a in store.published_articles(content_ids) if a.site_id in sites]
    if not articles:
        return []
    busy = store.active_firing_content(a.id for a in articles)
    articles = [a for a in articles if a.id not in busy and not a.regeneration_run_id]
    ids = [a.id for a in articles]
    own = store.article_rules(ids)
    metrics = store.latest_published_metrics(ids)
    due = []
    for article in articles:
        observed = metrics.get(article.id, {})
        if not observed:
            continue
        age_hours = (now - article.published_at).total_seconds() / 3600
        rules = [*(_stored(r) for r in own.get(article.id, ())), *sites[article.site_id].defaults]
        for rule in rules:
            if age_hours < rule.min_age_hours:
                continue
            compare = COMPARISONS[rule.comparison]
            triggered = [
                v
                for v in sorted(observed)
                if rule.metric in observed[v] and compare(observed[v][rule.metric], rule.threshold)
            ]
            if triggered:
                due.append(Due(article, rule, triggered, observed))
                break
    return due


def fire(store: Store, dues: Sequence[Due]) -> list[Fired]:
    """Record a firing for every due article (in bulk); returns those that fire now (not before)."""
    values = [
        {
            "site_id": due.content.site_id,
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
        for due in dues
    ]
    site_of = {due.content.id: due.content.site_id for due in dues}
    return [
        Fired(site_of[content_id], firing_id, attempts)
        for firing_id, content_id, attempts in store.fire_triggers(values)
    ]


def due_regenerations(store: Store, site: Site, now: datetime | None = None) -> list[Due]:
    """Every published article of `site` for which a rule holds now (a full evaluation of the site)."""
    now = now or datetime.now(UTC)
    rules = site_rule_set(store, site)
    if rules.empty:
        return []
    ids = [content_id for _, content_id in store.published_after(site.id, (None, 0), None, 2**31 - 1)]
    return [
        due
        for start in range(0, len(ids), 500)
        for due in evaluate(store, {site.id: rules}, ids[start : start + 500], now)
    ]


def rearm_stalled(
    store: Store, run_status: Callable[[str], str | None], now: datetime | None = None
) -> list[ActiveFiring]:
    """Fail (and so re-arm) firings whose run failed, was canceled or vanished; returns them.

    `run_status(run_id)` gives the Dagster run status name, or None when the instance does not know
    the run (a fresh instance): then only age decides. Each run is looked up once, however many firings
    it carries.
    """
    now = now or datetime.now(UTC)
    statuses: dict[str, str | None] = {}
    stalled = []
    for firing in store.active_firings():
        if firing.run_id and firing.run_id not in statuses:
            statuses[firing.run_id] = run_status(firing.run_id)
        status = statuses[firing.run_id] if firing.run_id else None
        finished_badly = status in {"FAILURE", "CANCELED"}
        finished_without_consuming = status == "SUCCESS"
        too_old = status is None and now - as_utc(firing.fired_at) > STALE_AFTER
        if finished_badly or finished_without_consuming or too_old:
            store.fail_firing(
                firing.id,
                firing.run_id or "",
                f"regeneration run {firing.run_id or '(never started)'} ended {status or 'unknown'}",
            )
            stalled.append(firing)
    return stalled


def _stored(rule: TriggerRule | ArticleRule) -> Rule:
    return Rule(
        f"rule:{rule.id}",
        rule.metric,
        rule.comparison,
        rule.threshold,
        rule.min_age_hours,
        rule.instruction,
        rule.content_id,
    )


def _settings_rules(site: Site) -> list[Rule]:
    rules = []
    for spec in site_settings(site.settings, f"settings of site '{site.slug}'").triggers:
        digest = hashlib.sha1(json.dumps(spec.model_dump(), sort_keys=True).encode()).hexdigest()[:12]
        rules.append(
            Rule(f"site:{digest}", spec.metric, spec.comparison, spec.threshold, spec.min_age_hours, spec.instruction)
        )
    return rules

"""Trigger rules: when a published article under-performs, fire a regeneration, exactly once.

Rules come from the store (per article, or site defaults with no article, set with `pipeline triggers`)
and from site settings (`triggers: [...]`). A rule fires for a published article when, at least
`min_age_hours` after publication, the newest value of its metric for either variant (A or B) of the
published version satisfies `value <comparison> threshold`. Firing is recorded in the store on a unique
key (article, rule, published version), so a rule fires once per published version however often it is
evaluated and whatever Dagster instance evaluates it; an article with a regeneration in progress is
skipped; a failed regeneration re-arms its rule.

Rule kinds (`kind`):

- `value`: the newest value of the metric for either variant satisfies `value <comparison> threshold`;
- `trend`: the metric over the last `window_days` (both variants together: the article's URL) against
  the `window_days` before: `current <comparison> threshold * previous` (`clicks < 0.7`: below 70% of
  the previous window), when the previous window's volume is at least `min_volume`;
- `since_publication`: the metric over the last `window_days` against the first `window_days` after the
  published version's publication: `(current - first) <comparison> threshold` (`position > 3`: worse by
  more than 3 places), when the first window's volume is at least `min_volume`.

Windows end at the article's newest metric data and must be covered by rows (`pipeline.metric_windows`
aggregates them and says what a metric's volume is); the firing's `observed` keeps the newest values per
variant and, for the window kinds, the evidence under `"trend"`.

Articles are evaluated in batches (`evaluate`): their rules, newest metrics, window totals and firings in
progress are read for the whole batch at once. Which articles a sensor tick evaluates is
`pipeline.trigger_tick`'s part.
"""

from __future__ import annotations

import hashlib
import json
import math
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pipeline import metric_windows
from pipeline.metric_windows import Window
from pipeline.metrics import METRIC_NAME
from pipeline.models import FiringStatus, Site, TriggerRule, as_utc
from pipeline.sites import MAX_MIN_AGE_HOURS, MAX_WINDOW_DAYS, RULE_KINDS, site_settings
from pipeline.store import Store
from pipeline.store.trigger_scan import ActiveFiring, ArticleRule, PublishedArticle, WindowTotals
from pipeline.trigger_evidence import experiment_result as experiment_result  # imported from here too
from pipeline.trigger_evidence import published_windows as published_windows  # imported from here too

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
    kind: str = "value"
    window_days: int | None = None
    min_volume: float = 0.0

    @property
    def windowed(self) -> bool:
        """A rule comparing windows of days (`trend`, `since_publication`), not the newest value."""
        return self.kind != "value"

    def describe(self) -> str:
        """Human-readable condition, e.g. `ctr < 0.02 after 168h` or `clicks over 28d < 70% of the 28d before
        (min volume 100)`."""
        age = f" after {self.min_age_hours:g}h" if self.min_age_hours else ""
        if self.kind == "value":
            return f"{self.metric} {self.comparison} {self.threshold:g} after {self.min_age_hours:g}h"
        guard = f" (min volume {self.min_volume:g})" if self.min_volume else ""
        days = f"{self.window_days}d"
        if self.kind == "trend":
            share = f"{self.threshold * 100:g}%"
            return f"{self.metric} over {days} {self.comparison} {share} of the {days} before{guard}{age}"
        first = f"its first {days} after publication {self.threshold:+g}"
        return f"{self.metric} over the last {days} {self.comparison} {first}{guard}{age}"

    def fingerprint(self) -> list[Any]:
        """What identifies the rule's behaviour (the window fields only when set, so value rules keep theirs)."""
        parts: list[Any] = [self.key, self.metric, self.comparison, self.threshold, self.min_age_hours]
        parts.append(self.instruction)
        return [*parts, self.kind, self.window_days, self.min_volume] if self.windowed else parts


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
    observed: dict[str, Any]  # {variant: {metric: newest value}}, and "trend": the windows' evidence


@dataclass(frozen=True)
class Fired:
    """A firing recorded now: its id and attempt (2 and more: re-armed after a failed run)."""

    site_id: int
    firing_id: int
    attempts: int


def rule_problems(
    metric: str,
    comparison: str,
    threshold: float,
    min_age_hours: float,
    kind: str = "value",
    window_days: int | None = None,
    min_volume: float = 0.0,
) -> dict[str, str]:
    """What is wrong with a rule's parts, by field name (empty when it is fine): the same limits as site settings."""
    problems = {}
    if not METRIC_NAME.fullmatch(metric):
        problems["metric"] = f"{metric!r} is not a metric name (lowercase letters, digits, _; up to 60)"
    if comparison not in COMPARISONS:
        problems["comparison"] = f"{comparison!r} is not one of {' '.join(COMPARISONS)}"
    if not math.isfinite(threshold):
        problems["threshold"] = f"{threshold} is not a finite number"
    elif kind == "trend" and threshold < 0:
        problems["threshold"] = f"{threshold:g} is not a share of the previous window (0 or more, e.g. 0.7)"
    if not math.isfinite(min_age_hours) or not 0 <= min_age_hours <= MAX_MIN_AGE_HOURS:
        problems["min_age_hours"] = f"{min_age_hours:g} is not between 0 and {MAX_MIN_AGE_HOURS} hours"
    if kind not in RULE_KINDS:
        problems["kind"] = f"{kind!r} is not one of {' '.join(RULE_KINDS)}"
    elif kind == "value" and window_days is not None:
        problems["window_days"] = "only trend and since_publication rules have a window"
    elif kind == "value" and min_volume:
        problems["min_volume"] = "only trend and since_publication rules have a minimum volume"
    elif kind != "value" and window_days is None:
        problems["window_days"] = f"a {kind} rule needs the number of days of its windows"
    if window_days is not None and not 1 <= window_days <= MAX_WINDOW_DAYS:
        problems["window_days"] = f"{window_days} is not between 1 and {MAX_WINDOW_DAYS} days"
    if not math.isfinite(min_volume) or min_volume < 0:  # after the value check: the clearer message wins
        problems["min_volume"] = f"{min_volume:g} is not a finite number of 0 or more"
    return problems


def site_rules(store: Store, site: Site) -> list[Rule]:
    """Every rule of a site: article-specific ones first, then store defaults, then settings defaults."""
    stored = [_stored(r) for r in store.trigger_rules(site.id)]
    stored.sort(key=lambda r: r.content_id is None)
    return [*stored, *_settings_rules(site)]


def site_rule_set(store: Store, site: Site) -> SiteRules:
    """A site's default rules and their fingerprint; `SiteSettingsError` if its stored settings are invalid."""
    defaults = (*(_stored(r) for r in store.site_default_rules(site.id)), *_settings_rules(site))
    text = json.dumps([r.fingerprint() for r in defaults])
    fingerprint = hashlib.sha1(text.encode()).hexdigest()[:16]
    return SiteRules(site, defaults, fingerprint, bool(store.rule_ages(site.id)))


def evaluate(store: Store, sites: Mapping[int, SiteRules], content_ids: Iterable[int], now: datetime) -> list[Due]:
    """The rule that holds now (at most one) for each of these articles that is published, of one of
    `sites` and not being regenerated: article rules first (oldest first), then the site's defaults."""
    articles = [a for a in store.published_articles(content_ids) if a.site_id in sites]
    if not articles:
        return []
    busy = store.active_firing_content(a.id for a in articles)
    # An article in a running A/B test is not rewritten under it: its numbers belong to the test until
    # it is decided (`pipeline.experiments`), then its rules apply again.
    testing = store.content_in_running_experiments(a.id for a in articles)
    articles = [a for a in articles if a.id not in busy | testing and not a.regeneration_run_id]
    ids = [a.id for a in articles]
    own = store.article_rules(ids)
    metrics = store.latest_published_metrics(ids)
    candidates = []
    for article in articles:
        if not metrics.get(article.id):
            continue
        age_hours = (now - article.published_at).total_seconds() / 3600
        rules = [*(_stored(r) for r in own.get(article.id, ())), *sites[article.site_id].defaults]
        candidates.append((article, [rule for rule in rules if age_hours >= rule.min_age_hours]))
    windows = _article_windows(store, [(article, rules) for article, rules in candidates])
    due = []
    for article, rules in candidates:
        observed = metrics[article.id]
        for rule in rules:
            if rule.windowed:
                found = windows.holds(article, rule)
                if found is not None:
                    variants, evidence = found
                    due.append(Due(article, rule, variants, {**observed, "trend": evidence}))
                    break
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


@dataclass(frozen=True)
class _ArticleWindows:
    """The window totals of a batch of articles, read at once, and the windows of each article's rules."""

    spans: Mapping[int, tuple[datetime, datetime]]
    totals: WindowTotals

    def holds(self, article: PublishedArticle, rule: Rule) -> tuple[list[str], dict[str, Any]] | None:
        """`(variants with data, evidence)` when the windowed `rule` holds for `article`, else None."""
        pair = _rule_windows(article, rule, self.spans.get(article.id))
        if pair is None:
            return None
        recent, baseline = pair
        now_rows = self.totals.get((article.id, recent.name), {})
        base_rows = self.totals.get((article.id, baseline.name), {})
        now_all, base_all = metric_windows.together(now_rows), metric_windows.together(base_rows)
        if not (
            metric_windows.covered(rule.metric, now_all, recent)
            and metric_windows.covered(rule.metric, base_all, baseline)
        ):
            return None
        current = metric_windows.value(rule.metric, now_all)
        previous = metric_windows.value(rule.metric, base_all)
        base_volume = metric_windows.volume(rule.metric, base_all)
        if current is None or previous is None or base_volume < rule.min_volume:
            return None
        compare = COMPARISONS[rule.comparison]
        if rule.kind == "trend":
            measure = {"ratio": round(current / previous, 6) if previous else None}
            holds = compare(current, rule.threshold * previous)
        else:
            measure = {"change": round(current - previous, 6)}
            holds = compare(current - previous, rule.threshold)
        if not holds:
            return None
        evidence = {
            "kind": rule.kind,
            "metric": rule.metric,
            "comparison": rule.comparison,
            "threshold": rule.threshold,
            "window_days": rule.window_days,
            "min_volume": rule.min_volume,
            "volume_metric": metric_windows.volume_metric(rule.metric),
            "current": metric_windows.evidence(recent, rule.metric, now_rows),
            "previous" if rule.kind == "trend" else "first": metric_windows.evidence(baseline, rule.metric, base_rows),
            **measure,
        }
        return sorted(now_rows), evidence


def _article_windows(store: Store, candidates: Sequence[tuple[PublishedArticle, Sequence[Rule]]]) -> _ArticleWindows:
    """Window totals for the windowed rules of these articles: two grouped reads for the whole batch."""
    windowed = [(article, [r for r in rules if r.windowed]) for article, rules in candidates]
    windowed = [(article, rules) for article, rules in windowed if rules]
    if not windowed:
        return _ArticleWindows({}, {})
    spans = store.metric_spans(article.id for article, _ in windowed)
    wanted: dict[tuple[int, str], Window] = {}
    for article, rules in windowed:
        for rule in rules:
            for window in _rule_windows(article, rule, spans.get(article.id)) or ():
                wanted[(article.id, window.name)] = window
    totals = store.window_totals((content_id, window) for (content_id, _), window in wanted.items())
    return _ArticleWindows(spans, totals)


def _rule_windows(
    article: PublishedArticle, rule: Rule, span: tuple[datetime, datetime] | None
) -> tuple[Window, Window] | None:
    """The windows a windowed rule compares for an article (the recent one first), named by their dates'
    meaning so rules of the same length share them; None when the article's data cannot have them yet."""
    if span is None or rule.window_days is None:
        return None
    days = rule.window_days
    recent = Window.ending(f"last_{days}d", span[1], days)
    if rule.kind == "trend":
        return recent, Window.ending(f"previous_{days}d", recent.start, days)
    # Daily exports count whole UTC days: the first window starts at 00:00 of the publication day.
    published = article.published_at.replace(hour=0, minute=0, second=0, microsecond=0)
    first = Window(f"first_{days}d", published, published + timedelta(days=days))
    return (recent, first) if recent.start >= first.end else None


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
        rule.kind or "value",
        rule.window_days,
        rule.min_volume or 0.0,
    )


def _settings_rules(site: Site) -> list[Rule]:
    rules = []
    for spec in site_settings(site.settings, f"settings of site '{site.slug}'").triggers:
        # The window fields count only when set, so the keys of rules written before them stay the same.
        plain = spec.kind == "value" and spec.window_days is None and not spec.min_volume
        dumped = spec.model_dump(exclude={"kind", "window_days", "min_volume"} if plain else None)
        digest = hashlib.sha1(json.dumps(dumped, sort_keys=True).encode()).hexdigest()[:12]
        rules.append(
            Rule(
                f"site:{digest}",
                spec.metric,
                spec.comparison,
                spec.threshold,
                spec.min_age_hours,
                spec.instruction,
                None,
                spec.kind,
                spec.window_days,
                spec.min_volume,
            )
        )
    return rules

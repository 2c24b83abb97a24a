"""Time-split A/B experiments: both variants of a regenerated article live in turn on its one URL, then a decision.

`start_experiment` (called by `pipeline.publishing.publish`) plans the periods when a version with A and B is
published on a site whose `ab_test` is enabled: from the next midnight in `ab_test.timezone`, the control (the
variant the editor approved) and the other variant alternate, `period_days` each, in whole cycles (one A and
one B period) up to `max_days`. `advance` (the `experiments` asset, hourly) puts the variant of the current
period live through the publishing path (`pipeline.publishing.switch_variant`), and after each completed cycle
whose metrics have arrived runs the decision rule (`pipeline.ab_stats`) on the clicks and impressions counted
inside the periods. A decision is written once; the winner (or the control, when there is no difference)
becomes the published variant. Nothing is deleted: the loser stays in the article's history.
See docs/experiments.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from pipeline import ab_stats, publishing, review
from pipeline.models import ContentStatus, Experiment, ExperimentPeriod, ExperimentStatus, as_utc, utcnow
from pipeline.publishing.wordpress_api import WordPressError
from pipeline.review import ReviewError
from pipeline.sites import ABTestSettings, site_settings
from pipeline.stages import RunSite
from pipeline.store import Store

# Search Console reports a day two or three days late: after the planned end, the last look waits this long
# for the last cycle's rows before the experiment is closed with whatever arrived.
DATA_GRACE = timedelta(days=7)


@dataclass(frozen=True)
class PeriodPlan:
    """One planned period: `variant` live from `starts_at` to `ends_at` (exclusive), UTC."""

    variant: str
    starts_at: datetime
    ends_at: datetime


@dataclass
class AdvanceReport:
    """What one `advance` run did for a site."""

    running: int = 0
    switched: list[dict[str, Any]] = field(default_factory=list)
    decided: list[dict[str, Any]] = field(default_factory=list)
    looked: list[dict[str, Any]] = field(default_factory=list)
    stopped: list[dict[str, Any]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """The counts as metadata."""
        return {
            "experiments_running": self.running,
            "variants_switched": len(self.switched),
            "experiments_decided": len(self.decided),
            "looks_without_decision": len(self.looked),
            "experiments_stopped": len(self.stopped),
            "failures": len(self.failures),
        }

    def summary(self) -> str:
        """One line for logs."""
        return ", ".join(f"{key}={value}" for key, value in self.counts().items())


def plan_periods(published_at: datetime, control: str, settings: ABTestSettings) -> list[PeriodPlan]:
    """The periods of a test of an article published at `published_at`: the first starts at the next local
    midnight in `settings.timezone`, each lasts `period_days` local days (so 23 or 25 hours across a DST
    change), control first, in whole cycles up to `max_days`."""
    zone = ZoneInfo(settings.timezone)
    first = as_utc(published_at).astimezone(zone).date() + timedelta(days=1)
    count = settings.max_days // settings.period_days
    count -= count % 2  # whole cycles: every A period has its B period
    other = "B" if control == "A" else "A"

    def midnight(day: date) -> datetime:
        return datetime.combine(day, time(0), tzinfo=zone).astimezone(ZoneInfo("UTC"))

    step = timedelta(days=settings.period_days)
    return [
        PeriodPlan(
            control if number % 2 == 0 else other,
            midnight(first + number * step),
            midnight(first + (number + 1) * step),
        )
        for number in range(count)
    ]


def start_experiment(store: Store, content_id: int, *, now: datetime | None = None) -> Experiment | None:
    """Start the A/B experiment of the article's published version, if it should have one.

    Only when the site's `ab_test.enabled` is true and the published version has both A and B; the control
    is the published variant. Idempotent: an experiment of that version already there is returned as is.
    None when no experiment applies.
    """
    article = review.load_article(store, content_id)
    content = article.content
    if content.status != ContentStatus.PUBLISHED or content.published_version is None:
        return None
    settings = site_settings(article.site.settings, f"settings of site '{article.site.slug}'").ab_test
    letters = {v.variant for v in article.variants if v.version == content.published_version}
    if not settings.enabled or not {"A", "B"} <= letters or content.published_variant not in ("A", "B"):
        return None
    published_at = as_utc(content.published_at or now or utcnow())
    periods = plan_periods(published_at, content.published_variant, settings)
    experiment, _ = store.create_experiment(
        {
            "site_id": article.site.id,
            "content_id": content_id,
            "version": content.published_version,
            "control": content.published_variant,
            "status": ExperimentStatus.RUNNING.value,
            "period_days": settings.period_days,
            "max_days": settings.max_days,
            "min_impressions": settings.min_impressions,
            "confidence": settings.confidence,
            "timezone": settings.timezone,
            "starts_at": periods[0].starts_at,
            "ends_at": periods[-1].ends_at,
            "looks": 0,
        },
        [(p.variant, p.starts_at, p.ends_at) for p in periods],
    )
    return experiment


def planned_looks(experiment: Experiment) -> int:
    """K: the looks planned for the experiment (one per cycle)."""
    return ab_stats.planned_looks(experiment.max_days, experiment.period_days)


def completed_cycles(periods: list[ExperimentPeriod], now: datetime) -> int:
    """Cycles (an A period and the B period after it) whose second period has ended by `now`."""
    return sum(1 for second in periods[1::2] if as_utc(second.ends_at) <= now)


def current_period(periods: list[ExperimentPeriod], now: datetime) -> ExperimentPeriod | None:
    """The period `now` falls in, or None before the first and after the last."""
    return next((p for p in periods if as_utc(p.starts_at) <= now < as_utc(p.ends_at)), None)


def final_variant(experiment: Experiment) -> str:
    """The variant a closed experiment leaves live: the winner, else the control."""
    return experiment.winner or experiment.control


def advance(store: Store, site: str | RunSite, now: datetime | None, publish_root: Path) -> AdvanceReport:
    """Move each experiment of the site on by one step at `now`: switch, look, decide, put the result live.

    Switching and deciding are both safe to repeat: a run that fails half-way is completed by the next.
    """
    run_site = RunSite.of(store, site)
    now = now or utcnow()
    report = AdvanceReport()
    for experiment in store.experiments_to_advance(run_site.site.id):
        try:
            _advance_one(store, experiment, now, publish_root, report)
        except (ReviewError, WordPressError, OSError) as error:
            report.failures.append(f"experiment {experiment.id} (content {experiment.content_id}): {error}")
    left = store.experiments_to_advance(run_site.site.id)
    report.running = sum(1 for e in left if e.status == ExperimentStatus.RUNNING)
    return report


def _advance_one(
    store: Store, experiment: Experiment, now: datetime, publish_root: Path, report: AdvanceReport
) -> None:
    article = review.load_article(store, experiment.content_id)
    content = article.content
    if content.regeneration_run_id:
        return  # being rewritten right now; the next run sees what it left
    if experiment.status != ExperimentStatus.RUNNING:
        _switch(store, experiment, final_variant(experiment), now, publish_root, report, reason="decision")
        return
    if content.status != ContentStatus.PUBLISHED or content.published_version != experiment.version:
        # Regenerated meanwhile: the tested version can never be published again, so the test is over.
        reason = f"the article was regenerated (now '{content.status}', version {article.version})"
        if store.decide_experiment(
            experiment.id,
            ExperimentStatus.STOPPED,
            winner=None,
            look=experiment.looks,
            decision={"outcome": "stopped", "reason": reason, "decided_at": now.isoformat()},
            at=now,
        ):
            report.stopped.append({"experiment": experiment.id, "content_id": experiment.content_id, "reason": reason})
        return
    periods = store.experiment_periods(experiment.id)
    period = current_period(periods, now)
    if period is not None:
        if content.published_variant != period.variant:
            _switch(store, experiment, period.variant, now, publish_root, report, reason=f"period {period.number}")
        if period.switched_at is None:
            store.record_period_switch(period.id, _live_since(store, experiment, period, now))
    _look(store, experiment, periods, now, publish_root, report)


def _live_since(store: Store, experiment: Experiment, period: ExperimentPeriod, now: datetime) -> datetime:
    """When the period's variant went live for it: the start of the live span showing it, not before the period."""
    spans = store.live_spans([experiment.content_id]).get(experiment.content_id, [])
    start = next((s.starts_at for s in reversed(spans) if s.ends_at is None), now)
    return max(start, as_utc(period.starts_at))


def _switch(
    store: Store,
    experiment: Experiment,
    letter: str,
    now: datetime,
    publish_root: Path,
    report: AdvanceReport,
    *,
    reason: str,
) -> None:
    if review.load_article(store, experiment.content_id).content.published_variant == letter:
        return  # live already
    done = publishing.switch_variant(
        store,
        experiment.content_id,
        letter,
        publish_root,
        actor=f"experiment:{experiment.id}",
        now=now,
        note=f"A/B experiment {experiment.id}: {reason}",
    )
    report.switched.append(
        {"experiment": experiment.id, "content_id": experiment.content_id, "variant": letter, "reason": reason}
        | {"targets": ", ".join(f"{p.target} {p.action}" for p in done.placed)}
    )


def _look(
    store: Store,
    experiment: Experiment,
    periods: list[ExperimentPeriod],
    now: datetime,
    publish_root: Path,
    report: AdvanceReport,
) -> None:
    """Run the decision rule after a completed cycle whose metrics have arrived; decide once if it says so."""
    planned = planned_looks(experiment)
    cycles = min(completed_cycles(periods, now), planned)
    overdue = now >= as_utc(experiment.ends_at) + DATA_GRACE
    if cycles <= experiment.looks and not overdue:
        return
    look = max(cycles, experiment.looks) if not overdue else planned
    sums = store.experiment_metric_sums(experiment, through_period=2 * look)
    last_cycle = (2 * look - 1, 2 * look)
    if not overdue and not all((number, "impressions") in sums for number in last_cycle):
        return  # the last cycle's rows have not arrived yet
    totals = {"A": [0.0, 0.0], "B": [0.0, 0.0]}
    for (_, metric), (variant, total, _) in sums.items():
        totals[variant][0 if metric == "clicks" else 1] += total
    result = ab_stats.evaluate(
        ab_stats.Counts(*totals["A"]),
        ab_stats.Counts(*totals["B"]),
        look=look,
        looks=planned,
        confidence=experiment.confidence,
        min_impressions=experiment.min_impressions,
        previous_look=min(experiment.looks, look - 1),
    )
    numbers = result.as_dict() | {"control": experiment.control, "decided_at": now.isoformat()}
    if result.outcome in ("winner", "no_difference") or overdue:
        status = ExperimentStatus.DECIDED if result.winner else ExperimentStatus.NO_DIFFERENCE
        if overdue and result.outcome not in ("winner", "no_difference"):
            numbers["reason"] = f"closed {DATA_GRACE.days} days after the planned end: {result.outcome} at look {look}"
            numbers["outcome"] = "no_difference"
        if not store.decide_experiment(
            experiment.id, status, winner=result.winner, look=look, decision=numbers, at=now
        ):
            return  # another run decided first
        decided = store.experiment_of(experiment.content_id, experiment.version)
        assert decided is not None
        report.decided.append({"experiment": experiment.id, "content_id": experiment.content_id} | numbers)
        _switch(store, decided, final_variant(decided), now, publish_root, report, reason="decision")
    elif result.outcome == "continue":
        store.record_look(experiment.id, look, now)
        report.looked.append({"experiment": experiment.id, "content_id": experiment.content_id} | numbers)
    # too_little_data: the look is not spent; the next cycle tries again.


@dataclass(frozen=True)
class PeriodView:
    """One period as the review desk and `review show` present it (times UTC)."""

    number: int
    variant: str
    starts_at: datetime
    ends_at: datetime
    switched_at: datetime | None


@dataclass(frozen=True)
class ExperimentView:
    """An article's newest experiment, with the facts a reviewer reads: its periods, the variant live now
    and the decision with its numbers (`decision`: the `ab_stats.LookResult` numbers, or why it stopped)."""

    id: int
    version: int
    status: str
    control: str
    live: str | None
    winner: str | None
    period_days: int
    max_days: int
    min_impressions: int
    confidence: float
    timezone: str
    starts_at: datetime
    ends_at: datetime
    looks: int
    planned_looks: int
    decided_at: datetime | None
    decision: dict[str, Any] | None
    periods: list[PeriodView]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (times as ISO 8601 UTC)."""

        def moment(value: datetime | None) -> str | None:
            return value.isoformat() if value is not None else None

        return {
            "id": self.id,
            "version": self.version,
            "status": self.status,
            "control": self.control,
            "live": self.live,
            "winner": self.winner,
            "period_days": self.period_days,
            "max_days": self.max_days,
            "min_impressions": self.min_impressions,
            "confidence": self.confidence,
            "timezone": self.timezone,
            "starts_at": moment(self.starts_at),
            "ends_at": moment(self.ends_at),
            "looks": self.looks,
            "planned_looks": self.planned_looks,
            "decided_at": moment(self.decided_at),
            "decision": self.decision,
            "periods": [
                {
                    "number": p.number,
                    "variant": p.variant,
                    "starts_at": moment(p.starts_at),
                    "ends_at": moment(p.ends_at),
                    "switched_at": moment(p.switched_at),
                }
                for p in self.periods
            ],
        }


def experiment_view(store: Store, content_id: int, *, live: str | None = None) -> ExperimentView | None:
    """The article's newest experiment as a reviewer sees it, or None if it never had one. `live` is the
    variant the article shows (its `published_variant`) when the caller has it."""
    experiment = store.experiment_of(content_id)
    if experiment is None:
        return None
    periods = [
        PeriodView(
            p.number,
            p.variant,
            as_utc(p.starts_at),
            as_utc(p.ends_at),
            as_utc(p.switched_at) if p.switched_at is not None else None,
        )
        for p in store.experiment_periods(experiment.id)
    ]
    return ExperimentView(
        id=experiment.id,
        version=experiment.version,
        status=experiment.status,
        control=experiment.control,
        live=live,
        winner=experiment.winner,
        period_days=experiment.period_days,
        max_days=experiment.max_days,
        min_impressions=experiment.min_impressions,
        confidence=experiment.confidence,
        timezone=experiment.timezone,
        starts_at=as_utc(experiment.starts_at),
        ends_at=as_utc(experiment.ends_at),
        looks=experiment.looks,
        planned_looks=planned_looks(experiment),
        decided_at=as_utc(experiment.decided_at) if experiment.decided_at is not None else None,
        decision=experiment.decision,
        periods=periods,
    )


def decision_line(decision: dict[str, Any] | None) -> str:
    """The decision's numbers in one line: CTR of A and B, lift, z, p, confidence, look k/K."""
    if not decision:
        return "no decision yet"
    if "a" not in decision:
        return str(decision.get("reason") or decision.get("outcome"))

    def ctr(letter: str) -> str:
        counts = decision[letter]
        return f"{counts['ctr']:.2%} ({counts['clicks']:g}/{counts['impressions']:g})"

    lift = decision.get("lift")
    return (
        f"{decision['outcome']}"
        + (f" {decision['winner']}" if decision.get("winner") else "")
        + f": CTR A {ctr('a')}, B {ctr('b')}, lift {'-' if lift is None else f'{lift:+.1%}'}, "
        f"z {decision['z']:.2f}, p {decision['p_value']:.4g} (level {decision['nominal_alpha']:.4g}), "
        f"confidence {decision['confidence']:.0%}, look {decision['look']}/{decision['looks']}"
    )

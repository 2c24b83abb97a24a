"""The evidence a regeneration shows the model next to an article's newest metrics: the published version's
metrics over its recent windows of days, and the state and result of its A/B experiment.
"""

from __future__ import annotations

from typing import Any

from pipeline import metric_windows
from pipeline.metric_windows import Window
from pipeline.models import Experiment, as_utc
from pipeline.store import Store

REPORT_WINDOW_DAYS = 28  # the windows a regeneration is shown when the rule that fired has none


def published_windows(store: Store, content_id: int, days: int | None = None) -> dict[str, dict[str, Any]]:
    """The published version's metrics over its last `days` (default 28) and the `days` before, anchored
    at its newest data: `{"last_28d": {"start", "end", "together": {...}, "variants": {"A": {...}}}, ...}`
    (empty without data). What a regeneration shows the model next to the newest values."""
    days = days or REPORT_WINDOW_DAYS
    span = store.metric_spans([content_id]).get(content_id)
    if span is None:
        return {}
    recent = Window.ending(f"last_{days}d", span[1], days)
    windows = (recent, Window.ending(f"previous_{days}d", recent.start, days))
    totals = store.window_totals((content_id, window) for window in windows)
    shown = {}
    for window in windows:
        per_variant = totals.get((content_id, window.name), {})
        shown[window.name] = {
            **window.as_dict(),
            "together": metric_windows.values(metric_windows.together(per_variant)),
            "variants": {variant: metric_windows.values(t) for variant, t in sorted(per_variant.items())},
        }
    return shown


def experiment_result(experiment: Experiment | None) -> dict[str, Any] | None:
    """An A/B experiment's state and result as data for the model (None without one): status, control,
    winner, per-variant clicks / impressions / CTR, the winner's lift, the test's confidence and p-value."""
    if experiment is None:
        return None
    decision = dict(experiment.decision or {})
    # `ab_stats.LookResult.as_dict` keeps each variant's counts under `a` and `b`.
    per_variant = decision.pop("variants", None) or {
        key.upper(): decision.pop(key) for key in ("a", "b", "A", "B") if key in decision
    }
    result: dict[str, Any] = {
        "status": experiment.status,
        "control": experiment.control,
        "winner": experiment.winner,
        "confidence": decision.pop("confidence", experiment.confidence),
        "started": as_utc(experiment.starts_at).isoformat(),
        "decided": as_utc(experiment.decided_at).isoformat() if experiment.decided_at else None,
        "variants": per_variant,
    }
    ctr: dict[str, float] = {
        v: float(n["ctr"]) for v, n in per_variant.items() if isinstance(n, dict) and n.get("ctr") is not None
    }
    winner = experiment.winner
    if "lift" not in decision and winner is not None and winner in ctr and len(ctr) == 2:
        other = next(v for v in ctr if v != winner)
        if ctr[other]:
            decision["lift"] = round(ctr[winner] / ctr[other] - 1, 6)
    return result | decision  # p_value, z, lift and whatever else the decision recorded

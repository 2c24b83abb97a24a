"""The offline provider's answer to `metrics_analysis`: an analysis of an under-performing article built from
its numbers (the variants' values, the trend that fired, the A/B experiment's result), deterministically.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipeline.prompts.schemas import MetricsAnalysis

_CHANGES_BY_METRIC = {
    "click": [
        "Rewrite the title around the searcher's question",
        "Make the meta description promise a concrete result",
    ],
    "ctr": ["Rewrite the title around the searcher's question", "Make the meta description promise a concrete result"],
    "impression": ["Target the primary keyword earlier in the title", "Cover the cluster's secondary keywords in H2s"],
    "time": ["Open with the answer in the first paragraph", "Break long sections into shorter steps"],
    "bounce": ["Open with the answer in the first paragraph", "Add a short summary list near the top"],
    "like": ["Lead with a stronger hook", "Add concrete examples readers can try"],
    "share": ["Lead with a stronger hook", "Add a memorable takeaway per section"],
    "conversion": ["Add a clear call to action after the key section", "Show the benefit before the details"],
}


def analyse_metrics(data: Mapping[str, Any]) -> MetricsAnalysis:
    """An analysis built from the numbers: which variants crossed the threshold (or the trend that fired),
    how A and B compare, and what the A/B experiment decided when there was one."""
    rule = data["rule"]
    metric = rule["metric"]
    values = {v["variant"]: v["metrics"].get(metric) for v in data["variants"]}
    shown = ", ".join(f"{variant} = {value:g}" for variant, value in sorted(values.items()) if value is not None)
    triggered = " and ".join(data["triggered_variants"])
    known = {k: v for k, v in values.items() if v is not None}
    if len(known) == 2:
        better = (max if rule["comparison"] in {"<", "<="} else min)(known, key=known.__getitem__)
        comparison = (
            f"Variant {better} does better on {metric} ({shown}); its title and opening are the model to follow."
        )
    else:
        comparison = f"Only one variant has {metric} data ({shown}); no A/B conclusion yet."
    if experiment := data.get("experiment"):
        comparison += f" {_experiment_summary(experiment)}"
    changes = next(
        (c for key, c in _CHANGES_BY_METRIC.items() if key in metric), ["Sharpen the title", "Tighten the opening"]
    )
    if data.get("instruction"):
        changes = [*changes, f"Team instruction: {data['instruction']}"]
    title = data["article"]["title"]
    condition = f"{rule['comparison']} {rule['threshold']:g}"
    underperformed = f"{metric} of variant {triggered} is {condition} ({shown}) for “{title}”."
    if trend := data.get("trend"):
        underperformed = f"{_trend_summary(trend)} for “{title}”."
    return MetricsAnalysis(
        underperformed=underperformed,
        comparison=comparison,
        changes=changes,
        brief_a=f"Question-led: answer “{data['article']['primary_keyword']}” in the title and first sentence.",
        brief_b="Benefit-led: promise the concrete result in the title and show it in a summary list up front.",
    )


def _trend_summary(trend: Mapping[str, Any]) -> str:
    metric, days, current = trend["metric"], trend["window_days"], trend["current"]
    if trend["kind"] == "trend":
        previous = trend["previous"]
        ratio = f" ({trend['ratio']:.0%} of it)" if trend.get("ratio") is not None else ""
        return (
            f"{metric} over the last {days} days ({current['start'][:10]} to {current['end'][:10]}) is "
            f"{current['value']:g} against {previous['value']:g} the {days} days before{ratio}"
        )
    first = trend["first"]
    return (
        f"{metric} over the last {days} days is {current['value']:g} against {first['value']:g} in the first "
        f"{days} days after publication (a change of {trend['change']:+g})"
    )


def _experiment_summary(experiment: Mapping[str, Any]) -> str:
    variants = experiment.get("variants") or {}
    ctr = ", ".join(
        f"{v} CTR {n['ctr']:.2%}" for v, n in sorted(variants.items()) if isinstance(n, Mapping) and "ctr" in n
    )
    numbers = f" ({ctr})" if ctr else ""
    if experiment.get("winner"):
        lift = f", lift {experiment['lift']:+.0%}" if isinstance(experiment.get("lift"), int | float) else ""
        p_value = f", p = {experiment['p_value']:.3g}" if isinstance(experiment.get("p_value"), int | float) else ""
        return (
            f"The A/B experiment ({experiment['status']}) chose variant {experiment['winner']}{numbers}{lift}{p_value}."
        )
    return f"The A/B experiment is {experiment['status']} with no winner{numbers}."

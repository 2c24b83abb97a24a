"""The decision rule of time-split A/B tests: a two-proportion z-test on CTR with alpha spending over looks.

Pure arithmetic on counts (no store, no clock); `pipeline.experiments` feeds it the clicks and impressions
each variant got in the completed cycles of its test. Why this test and not a Bayesian one is in
`docs/experiments.md`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

from scipy.stats import norm

Outcome = Literal["winner", "no_difference", "continue", "too_little_data"]


@dataclass(frozen=True)
class Counts:
    """One variant's clicks and impressions over the periods counted."""

    clicks: float
    impressions: float

    @property
    def ctr(self) -> float:
        """Clicks per impression (0 without impressions)."""
        return self.clicks / self.impressions if self.impressions > 0 else 0.0


@dataclass(frozen=True)
class LookResult:
    """What one look at an experiment found.

    `outcome`: `winner` (significant at this look's level; `winner` is the variant with the higher CTR),
    `no_difference` (the last look, not significant), `continue` (not significant, more looks to come) or
    `too_little_data` (a variant has fewer than `min_impressions`: nothing tested, the look not spent).
    `lift` is B's CTR relative to A's (`ctr_b / ctr_a - 1`, None when A has no clicks); `p_value` is
    two-sided; `nominal_alpha` the level this look tested at and `alpha_spent` the total spent up to it.
    """

    outcome: Outcome
    winner: str | None
    a: Counts
    b: Counts
    lift: float | None
    z: float
    p_value: float
    nominal_alpha: float
    alpha_spent: float
    look: int
    looks: int
    confidence: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready numbers (for `experiments.decision` and asset metadata)."""
        data = asdict(self)
        for letter in ("a", "b"):
            counts = getattr(self, letter)
            data[letter] = {"clicks": counts.clicks, "impressions": counts.impressions, "ctr": counts.ctr}
        return data


def planned_looks(max_days: int, period_days: int) -> int:
    """K: one look per completed cycle (an A period and a B period) that fits in `max_days`."""
    return max(1, max_days // (2 * period_days))


def spent_alpha(t: float, alpha: float) -> float:
    """Lan-DeMets O'Brien-Fleming-type spending: the alpha spent by information time `t` in [0, 1].

    alpha(t) = 2 - 2 * Phi(z_{1 - alpha/2} / sqrt(t)); alpha(0) = 0 and alpha(1) = alpha. Early looks get a
    tiny share, so a winner declared early needs a very large difference.
    """
    if t <= 0:
        return 0.0
    t = min(t, 1.0)
    return float(2.0 - 2.0 * norm.cdf(norm.ppf(1.0 - alpha / 2.0) / math.sqrt(t)))


def evaluate(
    a: Counts,
    b: Counts,
    *,
    look: int,
    looks: int,
    confidence: float,
    min_impressions: int,
    previous_look: int | None = None,
) -> LookResult:
    """Test A against B at look `look` of `looks` (K planned) with overall level `alpha = 1 - confidence`.

    The nominal level of this look is alpha(t_k) - alpha(t_j), t = k/K, where j is the previous look that
    was actually tested (`previous_look`, default k - 1; a look skipped for too little data leaves its share
    to the next one). Declaring a winner when p <= that increment is a Bonferroni bound on the increments:
    the chance of any false winner over all looks is at most the sum of the increments, alpha(t_K) =
    alpha, whatever the correlation between looks (which share data). It is conservative: an exact
    group-sequential boundary (recursive integration over the correlated looks) would spend less per look.

    A variant with fewer than `min_impressions` impressions means `too_little_data`. At the last look
    (k == K) a result that is not significant is `no_difference`; before it, `continue`.
    """
    if not 1 <= look <= looks:
        raise ValueError(f"look {look} is not between 1 and {looks}")
    previous = look - 1 if previous_look is None else previous_look
    if not 0 <= previous < look:
        raise ValueError(f"previous look {previous} is not before look {look}")
    alpha = 1.0 - confidence
    before = spent_alpha(previous / looks, alpha)
    now = spent_alpha(look / looks, alpha)
    nominal = now - before
    lift = b.ctr / a.ctr - 1.0 if a.ctr > 0 else None
    z, p_value = _z_test(a, b)
    if a.impressions < min_impressions or b.impressions < min_impressions:
        return LookResult("too_little_data", None, a, b, lift, z, p_value, nominal, before, look, looks, confidence)
    outcome: Outcome
    if p_value <= nominal and a.ctr != b.ctr:
        outcome, winner = "winner", ("B" if b.ctr > a.ctr else "A")
    else:
        outcome, winner = ("no_difference" if look == looks else "continue"), None
    return LookResult(outcome, winner, a, b, lift, z, p_value, nominal, now, look, looks, confidence)


def _z_test(a: Counts, b: Counts) -> tuple[float, float]:
    """Pooled two-proportion z statistic (B minus A) and its two-sided p-value."""
    if a.impressions <= 0 or b.impressions <= 0:
        return 0.0, 1.0
    pooled = (a.clicks + b.clicks) / (a.impressions + b.impressions)
    variance = pooled * (1.0 - pooled) * (1.0 / a.impressions + 1.0 / b.impressions)
    if variance <= 0:
        return 0.0, 1.0  # no clicks at all, or every impression clicked: nothing to tell apart
    z = (b.ctr - a.ctr) / math.sqrt(variance)
    return z, float(2.0 * norm.sf(abs(z)))

"""A month's model spend from the ledger: by stage, model, day and article, cache and batch savings, failed
calls, prompt caching, and the site's monthly budget. `pipeline costs` prints it; model-calling assets
attach its totals to their materializations.

Prices are the ledger's (`model_calls.cost_usd`, what the calls cost when made). Two figures are derived:
- batch savings: a batch row's real-time price recomputed from its tokens with the catalog, minus what was
  paid (when the catalog has no price for the model: cost / batch share);
- cache savings: a cache hit records no tokens, so it is priced at the mean cost of the partition's
  real-time `ok` calls of the same stage and model (0 when there are none).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pipeline.llm.catalog import DEFAULT_CATALOG, Catalog, Usage
from pipeline.store import Store
from pipeline.store.budgets import month_bounds
from pipeline.store.costs import LedgerRow

CACHE_HIT = "cache_hit"


@dataclass
class Bucket:
    """Calls and cost of one group of ledger rows."""

    calls: int = 0
    cost_usd: float = 0.0

    def add(self, row: LedgerRow) -> None:
        self.calls += row.outcome != CACHE_HIT
        self.cost_usd = round(self.cost_usd + row.cost_usd, 8)


@dataclass
class CostReport:
    """One month's spend of one site (or all)."""

    site: str | None
    month: str
    calls: int = 0
    cost_usd: float = 0.0
    failed_calls: int = 0
    failed_cost_usd: float = 0.0
    cache_hits: int = 0
    cache_saved_usd: float = 0.0
    batch_calls: int = 0
    batch_cost_usd: float = 0.0
    batch_saved_usd: float = 0.0
    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    images: int = 0
    budget_usd: float | None = None
    by_stage: dict[str, Bucket] = field(default_factory=lambda: defaultdict(Bucket))
    by_model: dict[str, Bucket] = field(default_factory=lambda: defaultdict(Bucket))
    by_day: dict[str, Bucket] = field(default_factory=lambda: defaultdict(Bucket))
    by_article: dict[int, Bucket] = field(default_factory=lambda: defaultdict(Bucket))
    article_titles: dict[int, str] = field(default_factory=dict)

    @property
    def cached_input_share(self) -> float:
        """Share of input tokens the provider served from its prompt cache."""
        return round(self.cached_input_tokens / self.input_tokens, 4) if self.input_tokens else 0.0

    @property
    def budget_left_usd(self) -> float | None:
        return None if self.budget_usd is None else round(max(self.budget_usd - self.cost_usd, 0.0), 8)

    def totals(self) -> dict[str, Any]:
        """The headline numbers (no breakdowns), e.g. for asset metadata."""
        return {
            "site": self.site,
            "month": self.month,
            "calls": self.calls,
            "cost_usd": self.cost_usd,
            "failed_calls": self.failed_calls,
            "failed_cost_usd": self.failed_cost_usd,
            "cache_hits": self.cache_hits,
            "cache_saved_usd": self.cache_saved_usd,
            "batch_calls": self.batch_calls,
            "batch_cost_usd": self.batch_cost_usd,
            "batch_saved_usd": self.batch_saved_usd,
            "input_tokens": self.input_tokens,
            "cached_input_tokens": self.cached_input_tokens,
            "cached_input_share": self.cached_input_share,
            "output_tokens": self.output_tokens,
            "images": self.images,
            "budget_usd": self.budget_usd,
            "budget_left_usd": self.budget_left_usd,
        }

    def as_dict(self) -> dict[str, Any]:
        """Everything, JSON-ready (`pipeline costs --json`)."""

        def rows(buckets: dict[Any, Bucket], key: str) -> list[dict[str, Any]]:
            return [{key: name, "calls": b.calls, "cost_usd": b.cost_usd} for name, b in sorted(buckets.items())]

        articles = [
            {"content_id": cid, "title": self.article_titles.get(cid, ""), "calls": b.calls, "cost_usd": b.cost_usd}
            for cid, b in sorted(self.by_article.items())
        ]
        return self.totals() | {
            "by_stage": rows(self.by_stage, "stage"),
            "by_model": rows(self.by_model, "model"),
            "by_day": rows(self.by_day, "day"),
            "by_article": articles,
        }


def cost_report(
    store: Store,
    site: str | None,
    when: datetime | None = None,
    *,
    catalog: Catalog = DEFAULT_CATALOG,
    budget_usd: float | None = None,
) -> CostReport:
    """The spend of `site` (or every site) in the calendar month (UTC) of `when` (default now)."""
    rows = store.month_ledger(site, when)
    report = CostReport(site=site, month=month_bounds(when)[0].strftime("%Y-%m"), budget_usd=budget_usd)
    means = store.mean_paid_cost(site) if any(row.outcome == CACHE_HIT for row in rows) else {}
    articles = store.articles_of_refs([row.item_ref for row in rows if row.item_ref])
    for row in rows:
        _count(report, row, catalog, means, articles)
    report.article_titles = {cid: title for cid, title in articles.values()}
    return report


def _count(
    report: CostReport,
    row: LedgerRow,
    catalog: Catalog,
    means: dict[tuple[str, str], float],
    articles: dict[str, tuple[int, str]],
) -> None:
    report.cost_usd = round(report.cost_usd + row.cost_usd, 8)
    report.input_tokens += row.input_tokens
    report.cached_input_tokens += row.cached_input_tokens
    report.output_tokens += row.output_tokens
    report.images += row.images
    if row.outcome == CACHE_HIT:
        report.cache_hits += 1
        report.cache_saved_usd = round(report.cache_saved_usd + means.get((row.stage, row.model), 0.0), 8)
    else:
        report.calls += 1
        if row.outcome != "ok":
            report.failed_calls += 1
            report.failed_cost_usd = round(report.failed_cost_usd + row.cost_usd, 8)
    if row.batch_id is not None:
        report.batch_calls += 1
        report.batch_cost_usd = round(report.batch_cost_usd + row.cost_usd, 8)
        report.batch_saved_usd = round(report.batch_saved_usd + _real_time(row, catalog) - row.cost_usd, 8)
    for buckets, key in (
        (report.by_stage, row.stage),
        (report.by_model, row.model),
        (report.by_day, row.created_at.strftime("%Y-%m-%d")),
    ):
        buckets[key].add(row)
    if row.item_ref and row.item_ref in articles:
        report.by_article[articles[row.item_ref][0]].add(row)


def _real_time(row: LedgerRow, catalog: Catalog) -> float:
    """What a batch row would have cost in real time."""
    usage = Usage(
        input_tokens=row.input_tokens,
        cached_input_tokens=row.cached_input_tokens,
        output_tokens=row.output_tokens,
        images=row.images,
    )
    price = catalog.cost(row.model, usage)
    if price > 0:
        return price
    share = catalog.prices[row.model].batch_share if row.model in catalog.prices else 0.5
    return round(row.cost_usd / share, 8)


def site_report(store: Store, site: str, when: datetime | None = None) -> CostReport:
    """`cost_report` for one site, priced with its catalog (site price overrides) and with its budget."""
    from pipeline.sites import site_settings  # settings parse lazily: cost reads need no site otherwise

    settings = site_settings(store.site(site).settings)
    catalog = DEFAULT_CATALOG.merged(settings.models, settings.prices)
    return cost_report(store, site, when, catalog=catalog, budget_usd=settings.monthly_budget_usd)


def table_rows(items: Iterable[tuple[str, Bucket]]) -> list[list[str]]:
    """Rows of a (name, calls, cost) table."""
    return [[name, str(bucket.calls), f"{bucket.cost_usd:.4f}"] for name, bucket in items]

"""`pipeline costs`: a month's model spend from the ledger, with cache and batch savings and the budget."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime

from pipeline.cli.base import UsageError, open_store, print_table
from pipeline.costs import CostReport, cost_report, site_report, table_rows


def add_costs_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`costs`."""
    costs = commands.add_parser("costs", help="model spend of a month: by stage, model, day and article")
    costs.add_argument("--site", help="only this site (and its monthly budget)")
    costs.add_argument("--month", help="YYYY-MM (default: this month, UTC)")
    costs.add_argument("--json", action="store_true", help="print JSON")
    costs.set_defaults(handler=_costs)


def _month(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        return datetime.strptime(text, "%Y-%m").replace(tzinfo=UTC)
    except ValueError as error:
        raise UsageError(f"--month must be YYYY-MM, got {text!r}") from error


def _costs(args: argparse.Namespace) -> int:
    store = open_store()
    when = _month(args.month)
    report = site_report(store, args.site, when) if args.site else cost_report(store, None, when)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
        return 0
    print_report(report)
    return 0


def print_report(report: CostReport) -> None:
    """The human form: totals, then one aligned table per breakdown."""
    totals = [
        ["cost_usd", f"{report.cost_usd:.4f}"],
        ["calls", str(report.calls)],
        ["failed_calls", str(report.failed_calls)],
        ["failed_cost_usd", f"{report.failed_cost_usd:.4f}"],
        ["cache_hits", str(report.cache_hits)],
        ["cache_saved_usd", f"{report.cache_saved_usd:.4f}"],
        ["batch_calls", str(report.batch_calls)],
        ["batch_cost_usd", f"{report.batch_cost_usd:.4f}"],
        ["batch_saved_usd", f"{report.batch_saved_usd:.4f}"],
        ["input_tokens", str(report.input_tokens)],
        ["cached_input_tokens", str(report.cached_input_tokens)],
        ["cached_input_share", f"{report.cached_input_share:.1%}"],
        ["output_tokens", str(report.output_tokens)],
        ["images", str(report.images)],
    ]
    if report.budget_usd is not None:
        totals += [["budget_usd", f"{report.budget_usd:.4f}"], ["budget_left_usd", f"{report.budget_left_usd:.4f}"]]
    print(f"Model spend of {report.site or 'all sites'} in {report.month} (UTC), from the ledger\n")
    print_table(["total", "value"], totals)
    for title, buckets in (("stage", report.by_stage), ("model", report.by_model), ("day", report.by_day)):
        if buckets:
            print()
            print_table([title, "calls", "cost_usd"], table_rows(sorted(buckets.items())))
    if report.by_article:
        print()
        rows = [
            [str(cid), report.article_titles.get(cid, "")[:60], str(b.calls), f"{b.cost_usd:.4f}"]
            for cid, b in sorted(report.by_article.items(), key=lambda item: -item[1].cost_usd)
        ]
        print_table(["content_id", "title", "calls", "cost_usd"], rows)

"""`pipeline metrics import` and `pipeline triggers add | list | remove`: what regenerates a published article."""

from __future__ import annotations

import argparse
from datetime import date
from pathlib import Path

from pipeline.cli.base import UsageError, open_store
from pipeline.metric_exports import DateRange
from pipeline.metrics import MAX_ID, MetricsImport, import_metrics_file
from pipeline.sites import RULE_KINDS
from pipeline.triggers import COMPARISONS, Rule, rule_problems, site_rules


def add_automation_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`metrics import` and `triggers add`, `list` and `remove`."""
    metrics = commands.add_parser("metrics", help="post metrics").add_subparsers(dest="action", required=True)
    load = metrics.add_parser(
        "import",
        help="import a metrics CSV (content_id,variant,metric,value,observed_at), a Search Console Pages export "
        "(CSV or zip, or per day) or a GA4 Pages and screens export; the format is recognised by its header",
    )
    load.add_argument("file", type=Path)
    load.add_argument("--site", help="match the export's pages against this site's articles only (default: all)")
    load.add_argument("--from", dest="first", type=_day, help="first day a Pages CSV without dates covers")
    load.add_argument("--to", dest="last", type=_day, help="last day (inclusive) a Pages CSV without dates covers")
    load.set_defaults(handler=_metrics_import)

    triggers = commands.add_parser("triggers", help="regeneration trigger rules").add_subparsers(
        dest="action", required=True
    )
    add = triggers.add_parser("add", help="add a rule for one article (--content) or a site default")
    add.add_argument("--site", required=True)
    add.add_argument("--content", type=int, help="article id; omit for a default for every published article")
    add.add_argument("--metric", required=True, help="metric name, e.g. ctr, clicks, likes")
    add.add_argument("--comparison", required=True, choices=sorted(COMPARISONS))
    add.add_argument("--threshold", required=True, type=float)
    add.add_argument("--min-age-hours", type=float, default=0.0, help="minimum time since publishing")
    add.add_argument("--instruction", default="", help="what the rewrite should focus on")
    add.add_argument(
        "--kind",
        choices=RULE_KINDS,
        default="value",
        help="value: the newest value; trend: the last window against the one before (threshold: a share, "
        "e.g. 0.7); since_publication: the last window minus the first after publication",
    )
    add.add_argument("--window-days", type=int, help="days of each window (trend and since_publication)")
    add.add_argument(
        "--min-volume",
        type=float,
        default=0.0,
        help="minimum volume of the earlier window (the metric for counts, impressions otherwise)",
    )
    add.set_defaults(handler=_triggers_add)
    listing = triggers.add_parser("list", help="rules of a site (store and settings) and their firings")
    listing.add_argument("--site", required=True)
    listing.set_defaults(handler=_triggers_list)
    remove = triggers.add_parser("remove", help="disable a stored rule")
    remove.add_argument("rule_id", type=int)
    remove.set_defaults(handler=_triggers_remove)


def _metrics_import(args: argparse.Namespace) -> int:
    if (args.first is None) != (args.last is None):
        raise UsageError("--from and --to go together: the first and last day the export covers")
    days = DateRange(args.first, args.last) if args.first is not None and args.last is not None else None
    if days is not None and days.last < days.first:
        raise UsageError(f"--to {days.last} is before --from {days.first}")
    result = import_metrics_file(open_store(), args.file, site=args.site, days=days)
    print(describe_import(result))
    return 0


def describe_import(result: MetricsImport) -> str:
    """What an import did, for people: counts, then every unmatched page and every rejected row."""
    repeated = f", {result.repeated} repeated rows merged" if result.repeated else ""
    read = f"{result.format}, {result.pages} page rows -> " if result.pages else ""
    lines = [
        f"{result.path}: {read}{result.rows} rows, {result.added} new, {result.already_known} already imported"
        f"{repeated}"
    ]
    if result.unmatched:
        count = sum(result.unmatched.values())
        lines.append(f"{len(result.unmatched)} pages matching no article ({count} rows, not imported):")
        lines += [f"  {page}\t{rows} rows" for page, rows in sorted(result.unmatched.items())]
    if result.rejected:
        lines.append(f"{len(result.rejected)} rows rejected (not imported):")
        lines += [f"  {reason}" for reason in result.rejected]
    return "\n".join(lines)


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a day (YYYY-MM-DD)") from None


def _triggers_add(args: argparse.Namespace) -> int:
    store = open_store()
    site = store.site(args.site)
    found = rule_problems(
        args.metric,
        args.comparison,
        args.threshold,
        args.min_age_hours,
        args.kind,
        args.window_days,
        args.min_volume,
    )
    problems = [f"--{field.replace('_', '-')}: {problem}" for field, problem in found.items()]
    if args.content is not None:
        article = store.content_by_ids([args.content]).get(args.content) if 1 <= args.content <= MAX_ID else None
        if article is None:
            problems.append(f"--content: no article with id {args.content}")
        elif article.site_id != site.id:
            problems.append(f"--content: article {args.content} is not an article of site '{args.site}'")
    if problems:
        raise UsageError("no rule was added:\n" + "\n".join(f"  {problem}" for problem in problems))
    rule = store.add_trigger_rule(
        {
            "site_id": site.id,
            "content_id": args.content,
            "metric": args.metric,
            "comparison": args.comparison,
            "threshold": args.threshold,
            "min_age_hours": args.min_age_hours,
            "instruction": args.instruction,
            "kind": args.kind,
            "window_days": args.window_days,
            "min_volume": args.min_volume,
        }
    )
    target = f"content {args.content}" if args.content is not None else f"every published article of {args.site}"
    condition = Rule(
        f"rule:{rule.id}",
        args.metric,
        args.comparison,
        args.threshold,
        args.min_age_hours,
        args.instruction,
        args.content,
        args.kind,
        args.window_days,
        args.min_volume,
    ).describe()
    print(f"Rule {rule.id}: regenerate {target} when {condition}")
    return 0


def _triggers_list(args: argparse.Namespace) -> int:
    store = open_store()
    site = store.site(args.site)
    for rule in site_rules(store, site):
        scope = f"content {rule.content_id}" if rule.content_id else "site default"
        print(f"{rule.key}\t{scope}\t{rule.kind}\t{rule.describe()}\t{rule.instruction}")
    for firing in store.firings(site_id=site.id):
        print(
            f"firing {firing.id}\tcontent {firing.content_id} v{firing.published_version}\t{firing.rule_key}\t"
            f"{firing.status}\truns: {firing.run_id or '-'}\tattempts {firing.attempts}"
        )
    return 0


def _triggers_remove(args: argparse.Namespace) -> int:
    if not 1 <= args.rule_id <= MAX_ID or not open_store().disable_trigger_rule(args.rule_id):
        raise UsageError(f"no rule with id {args.rule_id}")
    print(f"Rule {args.rule_id} disabled.")
    return 0

"""The `pipeline` command: register sites and see what the pipeline produced.

    pipeline sites add SLUG --keywords FILE [--name NAME]
    pipeline sites list
    pipeline status [--site SLUG] [--json]
    pipeline estimate --site SLUG [--stage NAME] [--json]
    pipeline review list [--site SLUG] [--status STATUS] [--json] | show ID [--variant A|B]
    pipeline review approve ID [--variant A|B] | reject ID --note TEXT | publish ID [--variant A|B]

`sites add` validates the keyword file, registers the site in the store and adds the `sites` partition
to the Dagster instance that `dagster` commands and `make ui` use (`DAGSTER_HOME`, default `.dagster/`
in the repository), so `dagster asset materialize -m pipeline.definitions --select '*' --partition SLUG`
runs the chain for it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from pipeline import review, settings
from pipeline.keywords import KeywordFileError, keep_keyword_file, parse_keyword_bytes, read_keyword_bytes
from pipeline.metrics import MAX_ID, MetricsFileError, import_metrics_file
from pipeline.output_safety import terminal_text
from pipeline.sites import InvalidSlug, SiteSettingsError, parse_site_settings, site_settings, validate_slug
from pipeline.stages import MODEL_STAGES
from pipeline.store import Store, UnknownSite
from pipeline.trigger_tick import status_line
from pipeline.triggers import COMPARISONS, rule_problems, site_rules

PARTITIONS_NAME = "sites"

# The embedded instance: queued runs, at most one at a time per site, so an automation run and a job run
# (or two sensors) never work on the same site at once.
EMBEDDED_INSTANCE_YAML = """telemetry:
  enabled: false
run_coordinator:
  module: dagster.core.run_coordinator
  class: QueuedRunCoordinator
  config:
    tag_concurrency_limits:
      - key: dagster/partition
        limit: 1
        value:
          applyLimitPerUniqueValue: true
"""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `pipeline` console script; returns the process exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except (KeywordFileError, InvalidSlug, UnknownSite, review.ReviewError, MetricsFileError, UsageError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pipeline", description="AI content pipeline: sites and status.")
    commands = parser.add_subparsers(dest="command", required=True)

    sites = commands.add_parser("sites", help="register and list sites").add_subparsers(dest="action", required=True)
    add = sites.add_parser("add", help="register a site (or update it) with its keyword file")
    add.add_argument("slug", help="site slug: lowercase letters, digits, hyphens (the Dagster partition key)")
    add.add_argument("--keywords", required=True, type=Path, help="keyword CSV: keyword[,volume,difficulty,intent,...]")
    add.add_argument("--name", help="display name (default: the slug, title-cased)")
    add.set_defaults(handler=_sites_add)
    listing = sites.add_parser("list", help="list registered sites")
    listing.set_defaults(handler=_sites_list)

    estimate = commands.add_parser("estimate", help="expected model calls, tokens and cost per stage (calls nothing)")
    estimate.add_argument("--site", required=True, help="site slug")
    estimate.add_argument("--stage", choices=MODEL_STAGES, help="only this stage")
    estimate.add_argument("--json", action="store_true", help="print JSON")
    estimate.set_defaults(handler=_estimate)

    status = commands.add_parser("status", help="row counts per stage for each site")
    status.add_argument("--site", help="only this site")
    status.add_argument("--json", action="store_true", help="print a JSON list, one object per site")
    status.set_defaults(handler=_status)

    _add_review_commands(commands)
    _add_automation_commands(commands, sites)
    return parser


def _store() -> Store:
    return Store(settings.database_url())


def _sites_add(args: argparse.Namespace) -> int:
    slug = validate_slug(args.slug)
    path = args.keywords.resolve()
    data = read_keyword_bytes(path)
    parsed = parse_keyword_bytes(data, path)  # validated first: a bad file registers nothing
    # The site registers a copy of exactly the bytes validated, so re-exporting a bad file over `path`
    # later cannot break the site: its previous good file stays registered.
    kept = keep_keyword_file(data, settings.sites_dir() / slug)
    name = args.name or slug.replace("-", " ").title()
    _store().upsert_site(slug, name, str(kept))
    home = add_site_partition(slug)
    print(
        f"Registered site '{slug}' ({name}): {len(parsed.rows)} keywords in {path}"
        + (f" ({parsed.merged_duplicates} duplicates merged)" if parsed.merged_duplicates else "")
    )
    print(f"Keyword file kept as {kept}")
    print(f"Partition '{slug}' added to the Dagster instance at {home}")
    print(f"Next: dagster asset materialize -m pipeline.definitions --select '*' --partition {slug}")
    return 0


def add_site_partition(slug: str) -> Path:
    """Add `slug` to the `sites` dynamic partitions of the shared Dagster instance; returns its home."""
    from dagster import DagsterInstance  # imported here: only this command needs Dagster

    home = ensure_dagster_home()
    os.environ.setdefault("DAGSTER_HOME", str(home))
    with DagsterInstance.get() as instance:
        if not instance.has_dynamic_partition(PARTITIONS_NAME, slug):
            instance.add_dynamic_partitions(PARTITIONS_NAME, [slug])
    return home


def ensure_dagster_home() -> Path:
    """Create the persistent Dagster home with its `dagster.yaml` (telemetry off, one run per site) if missing."""
    home = settings.dagster_home()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text(EMBEDDED_INSTANCE_YAML)
    return home


def _estimate(args: argparse.Namespace) -> int:
    from pipeline.estimate import estimate_site  # imported here: it loads scikit-learn, slow for other commands
    from resources.llm import llm_from_environment  # the same provider/model choice as runs

    store = _store()
    with llm_from_environment().engine(store, run_id=None, partition=args.site, dry_run=True) as engine:
        estimates = estimate_site(store, engine, args.site, (args.stage,) if args.stage else MODEL_STAGES)
    if args.json:
        print(json.dumps([e.as_dict() for e in estimates], indent=2))
        return 0
    columns = [
        "stage",
        "model",
        "pending_items",
        "projected_items",
        "calls",
        "cached",
        "input_tokens",
        "output_tokens",
        "images",
        "cost_usd",
    ]
    rows = [[str(e.as_dict()[c]) for c in columns] for e in estimates]
    rows.append(
        [
            "total",
            "",
            "",
            "",
            str(sum(e.calls for e in estimates)),
            str(sum(e.cached for e in estimates)),
            str(sum(e.input_tokens for e in estimates)),
            str(sum(e.output_tokens for e in estimates)),
            str(sum(e.images for e in estimates)),
            f"{sum(e.cost_usd for e in estimates):.4f}",
        ]
    )
    _print_table(columns, rows)
    print(
        f"\nProvider: {engine.provider.name}. Prices from pipeline/llm/catalog.py (with site overrides); "
        "tokens estimated at 4 characters per token. Nothing was called."
    )
    return 0


def _print_table(columns: list[str], rows: list[list[str]]) -> None:
    # Cells can hold model text (titles): control characters are shown as escapes, never sent raw.
    columns = [terminal_text(column) for column in columns]
    rows = [[terminal_text(value) for value in row] for row in rows]
    widths = [max(len(column), *(len(row[i]) for row in rows)) for i, column in enumerate(columns)]
    print("  ".join(column.ljust(width) for column, width in zip(columns, widths, strict=True)))
    for row in rows:
        print("  ".join(value.ljust(width) for value, width in zip(row, widths, strict=True)))


def _sites_list(_args: argparse.Namespace) -> int:
    for site in _store().sites():
        print(f"{site.slug}\t{site.name}\t{site.keywords_file or '-'}")
    return 0


def _status(args: argparse.Namespace) -> int:
    store = _store()
    slugs = [args.site] if args.site else [site.slug for site in store.sites()]
    counts = [store.counts(store.site(slug).id) for slug in slugs]
    rejected = store.rejected_files()
    if args.json:
        print(json.dumps([asdict(c) for c in counts], indent=2))
        if rejected:  # stdout stays the documented list of sites
            print(f"note: {len(rejected)} rejected input file(s); `pipeline status` lists them", file=sys.stderr)
        return 0
    if not counts:
        print("No sites registered yet: pipeline sites add SLUG --keywords FILE")
    else:
        columns = ["site", "keywords", "clusters", "ideas", "content", "image_prompts", "images"]
        _print_table(columns, [[str(getattr(c, column)) for column in columns] for c in counts])
        mixed = [c for c in counts if len(c.variants_by_provider) > 1 or "offline" in c.variants_by_provider]
        if mixed:
            print("\nArticle variants by provider (offline ones were composed without a model):")
            for c in mixed:
                print(f"  {c.site}: " + ", ".join(f"{p} {n}" for p, n in c.variants_by_provider.items()))
        print()
        print(f"Store:  {_display_url(store.url)}")
        print(f"Media:  {settings.media_dir()}")
        print(f"Dagster instance: {settings.dagster_home()}  (open the UI with: make ui)")
        print(_endpoints_line())
        triggers = status_line(store, datetime.now(UTC))
        if triggers:
            print(triggers)
    if rejected:
        print(f"\nRejected input files ({len(rejected)}; skipped until fixed or removed):")
        _print_table(
            ["folder", "file", "since", "problem"],
            [[r.folder, r.name, f"{r.first_seen_at:%Y-%m-%d %H:%M}", _first_problem(r.problem)] for r in rejected],
        )
    return 0


def _endpoints_line() -> str:
    """Where runs started from this environment send their calls (run config may still override)."""
    from pipeline.llm.openai_provider import display_url
    from resources.llm import LLMResource  # imported here: Dagster is slow to import for other commands

    try:
        endpoints = LLMResource().endpoints()
    except ValueError as error:
        return f"Model endpoints: not usable ({error})"
    shown = ", ".join(
        f"{kind} {e.provider}{' ' + display_url(e.base_url) if e.base_url else ''}" for kind, e in endpoints.items()
    )
    return f"Model endpoints (from this environment): {shown}"


def _first_problem(problem: str) -> str:
    """The first concrete problem of a (possibly multi-line) rejection, with how many more there are."""
    lines = [line.strip().removeprefix("- ") for line in problem.splitlines() if line.strip()]
    if len(lines) <= 1:
        return lines[0] if lines else ""
    return lines[1] + (f" (and {len(lines) - 2} more)" if len(lines) > 2 else "")


def _display_url(url: str) -> str:
    """The database URL without its password."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


# -- review ---------------------------------------------------------------------------------------------


def _add_review_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    gate = commands.add_parser("review", help="the review gate: list, show, approve, reject and publish articles")
    actions = gate.add_subparsers(dest="action", required=True)

    listing = actions.add_parser("list", help="articles with status, current version and variants")
    listing.add_argument("--site", help="only this site")
    listing.add_argument("--status", choices=review.STATUSES, help="only articles with this status")
    listing.add_argument("--json", action="store_true", help="print a JSON list, one object per article")
    listing.set_defaults(handler=_review_list)

    show = actions.add_parser("show", help="an article's metadata, images, review history and text")
    show.add_argument("id", type=int, help="content id (see: pipeline review list)")
    show.add_argument("--variant", choices=review.VARIANTS, default=review.DEFAULT_VARIANT, help="variant to show")
    show.set_defaults(handler=_review_show)

    approve = actions.add_parser("approve", help="draft -> approved, for a variant of the current version")
    approve.add_argument("id", type=int, help="content id")
    approve.add_argument("--variant", choices=review.VARIANTS, help="variant to approve (default A)")
    approve.set_defaults(handler=_review_approve)

    reject = actions.add_parser("reject", help="draft or approved -> draft, with a note saying what to change")
    reject.add_argument("id", type=int, help="content id")
    reject.add_argument("--note", required=True, help="what has to change (stored on the article)")
    reject.set_defaults(handler=_review_reject)

    publish = actions.add_parser("publish", help="approved -> published: export HTML, Markdown and images")
    publish.add_argument("id", type=int, help="content id")
    publish.add_argument("--variant", choices=review.VARIANTS, help="variant to publish (default: the approved one)")
    publish.set_defaults(handler=_review_publish)

    for command in (approve, reject, publish):
        command.add_argument("--actor", help="who acts, recorded in the review history (default: cli:$USER)")


def _review_list(args: argparse.Namespace) -> int:
    items = review.review_list(_store(), site=args.site, status=args.status)
    if args.json:
        print(json.dumps([item.as_dict() for item in items], indent=2))
        return 0
    if not items:
        print("No articles" + (f" with status {args.status}" if args.status else "") + ".")
        return 0
    columns = ["id", "site", "status", "version", "variants", "updated", "title"]
    rows = [
        [
            str(item.id),
            item.site,
            item.status,
            str(item.version),
            ",".join(item.variants),
            item.updated_at.strftime("%Y-%m-%d %H:%M"),
            item.title,
        ]
        for item in items
    ]
    _print_table(columns, rows)
    return 0


def _review_show(args: argparse.Namespace) -> int:
    shown = review.show(_store(), args.id, variant=args.variant)
    article, variant, content = shown.article, shown.variant, shown.article.content
    letters = ",".join(v.variant for v in article.current_variants)
    # Nearly every value here is model (or reviewer) text: each line goes through `terminal_text`, so an
    # ESC, BEL or C1 control is printed as a visible escape and a newline cannot fake another line.
    lines = [
        f"Content {content.id}  site {article.site.slug}  status {content.status}",
        f"Idea:        {article.idea.title}",
        f"Version:     {article.version} (variants {letters}; showing {variant.variant})",
    ]
    if content.published_version is not None:
        lines.append(
            f"Published:   version {content.published_version} variant {content.published_variant} "
            f"at {content.published_at:%Y-%m-%d %H:%M} as {article.site.slug}/{article.slug}/"
        )
    if content.review_note:
        lines.append(f"Review note: {content.review_note}")
    lines += [
        f"Written by:  {variant.provider}/{variant.model} ({variant.prompt_version}), {variant.word_count} words",
        f"Meta title:  {variant.meta_title}",
        f"Description: {variant.meta_description}",
        f"Keywords:    {variant.primary_keyword}; " + ", ".join(variant.secondary_keywords),
        f"Tags:        {', '.join(variant.tags) or '-'}   Categories: {', '.join(variant.categories) or '-'}",
        "",
        "Images:",
    ]
    if not shown.images:
        lines.append("  none yet (materialize image_prompts and images)")
    for prompt, image in shown.images:
        where = "featured" if prompt.kind == "featured" else f"after '{prompt.anchor_heading}'"
        state = "ok" if image is not None and Path(image.path).is_file() else "MISSING"
        lines.append(f"  {state:8} {where}: {prompt.alt_text}")
    lines += ["", "History:"]
    if not shown.events:
        lines.append("  no status changes yet")
    for event in shown.events:
        which = f"v{event.version}" + (f" {event.variant}" if event.variant else "") if event.version else ""
        change = f"{event.from_status} -> {event.to_status}"
        note = f"  {event.note}" if event.note else ""
        lines.append(f"  {event.created_at:%Y-%m-%d %H:%M}  {change}  {which}  {event.actor}{note}")
    lines += ["", f"# {variant.title}", ""]
    for line in lines:
        print(terminal_text(line))
    print(terminal_text(review.article_markdown(variant.body_html), multiline=True))
    return 0


def _review_approve(args: argparse.Namespace) -> int:
    done = review.approve(_store(), args.id, variant=args.variant, actor=args.actor)
    print(f"Approved content {done.content_id} (version {done.version}, variant {done.variant}).")
    print(f"Next: pipeline review publish {done.content_id}")
    return 0


def _review_reject(args: argparse.Namespace) -> int:
    done = review.reject(_store(), args.id, note=args.note, actor=args.actor)
    print(f"Rejected content {done.content_id}: {done.from_status} -> draft, note: {done.note}")
    return 0


def _review_publish(args: argparse.Namespace) -> int:
    done = review.publish(_store(), args.id, settings.publish_dir(), variant=args.variant, actor=args.actor)
    print(
        f"Published content {done.content_id} (version {done.version}, variant {done.variant}) "
        f"at {done.published_at.isoformat()} to {done.folder}"
    )
    for path in done.files:
        print(f"  {path.relative_to(done.folder)}")
    return 0


# -- automation: site settings, metrics, trigger rules ----------------------------------------------------


class UsageError(ValueError):
    """A command given arguments that do not make sense together, or invalid settings."""


def _add_automation_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    sites: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    configure = sites.add_parser("settings", help="show a site's settings, or replace them from a JSON file")
    configure.add_argument("slug")
    configure.add_argument("--file", type=Path, help="JSON file with the new settings (validated as a whole)")
    configure.set_defaults(handler=_sites_settings)

    metrics = commands.add_parser("metrics", help="post metrics").add_subparsers(dest="action", required=True)
    load = metrics.add_parser("import", help="import a metrics CSV (content_id,variant,metric,value,observed_at)")
    load.add_argument("file", type=Path)
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
    add.set_defaults(handler=_triggers_add)
    listing = triggers.add_parser("list", help="rules of a site (store and settings) and their firings")
    listing.add_argument("--site", required=True)
    listing.set_defaults(handler=_triggers_list)
    remove = triggers.add_parser("remove", help="disable a stored rule")
    remove.add_argument("rule_id", type=int)
    remove.set_defaults(handler=_triggers_remove)


def _sites_settings(args: argparse.Namespace) -> int:
    store = _store()
    site = store.site(args.slug)
    if args.file:
        try:
            text = args.file.read_text(encoding="utf-8")
        except OSError as error:
            raise UsageError(f"--file {args.file}: cannot be read ({error.strerror or error})") from error
        except UnicodeDecodeError as error:
            raise UsageError(f"--file {args.file}: not valid UTF-8 ({error.reason})") from error
        try:
            new = parse_site_settings(text, f"settings file {args.file}")
        except SiteSettingsError as error:
            raise UsageError(f"{error}\nThe settings of '{args.slug}' were not changed.") from error
        store.update_site_settings(site.id, new.model_dump(exclude_defaults=True))
        print(f"Settings of '{args.slug}' replaced.")
    try:
        current = site_settings(store.site(args.slug).settings, f"stored settings of site '{args.slug}'")
    except SiteSettingsError as error:
        raise UsageError(f"{error}\nReplace them: pipeline sites settings {args.slug} --file FILE") from error
    print(current.model_dump_json(indent=2))
    return 0


def _metrics_import(args: argparse.Namespace) -> int:
    result = import_metrics_file(_store(), args.file)
    repeated = f", {result.repeated} repeated rows merged" if result.repeated else ""
    print(f"{result.path}: {result.rows} rows, {result.added} new, {result.already_known} already imported{repeated}")
    return 0


def _triggers_add(args: argparse.Namespace) -> int:
    store = _store()
    site = store.site(args.site)
    found = rule_problems(args.metric, args.comparison, args.threshold, args.min_age_hours)
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
        }
    )
    target = f"content {args.content}" if args.content is not None else f"every published article of {args.site}"
    print(f"Rule {rule.id}: regenerate {target} when {args.metric} {args.comparison} {args.threshold:g}")
    return 0


def _triggers_list(args: argparse.Namespace) -> int:
    store = _store()
    site = store.site(args.site)
    for rule in site_rules(store, site):
        scope = f"content {rule.content_id}" if rule.content_id else "site default"
        print(f"{rule.key}\t{scope}\t{rule.describe()}\t{rule.instruction}")
    for firing in store.firings(site_id=site.id):
        print(
            f"firing {firing.id}\tcontent {firing.content_id} v{firing.published_version}\t{firing.rule_key}\t"
            f"{firing.status}\truns: {firing.run_id or '-'}\tattempts {firing.attempts}"
        )
    return 0


def _triggers_remove(args: argparse.Namespace) -> int:
    if not 1 <= args.rule_id <= MAX_ID or not _store().disable_trigger_rule(args.rule_id):
        raise UsageError(f"no rule with id {args.rule_id}")
    print(f"Rule {args.rule_id} disabled.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

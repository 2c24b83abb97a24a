"""`pipeline review list | show | approve | reject | publish`: the review gate from the command line.

    pipeline review approve [IDS...] [--site SLUG (--all | --cluster ID)] [--variant A|B] [--actor NAME]
    pipeline review reject [IDS...] [--site SLUG (--all | --cluster ID)] --note TEXT [--actor NAME]

One id acts on that article (an error if it cannot, exit 2); several ids, `--all` (the site's drafts) or
`--cluster` (id or key) act on each article in turn, print one line per article and a summary, and exit 1
when nothing could be done.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from pipeline import experiments, publishing, review, settings
from pipeline.cli.base import open_store, print_table
from pipeline.models import utcnow
from pipeline.output_safety import terminal_text


def add_review_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`review list`, `show`, `approve`, `reject` and `publish`."""
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

    approve = actions.add_parser(
        "approve", help="draft -> approved, for a variant of the current version; one, several or a site's drafts"
    )
    _add_selection(approve, "approve")
    approve.add_argument("--variant", choices=review.VARIANTS, help="variant to approve (default A)")
    approve.set_defaults(handler=_review_approve)

    reject = actions.add_parser("reject", help="draft or approved -> draft, with a note saying what to change")
    _add_selection(reject, "reject")
    reject.add_argument("--note", required=True, help="what has to change (stored on each article)")
    reject.set_defaults(handler=_review_reject)

    publish = actions.add_parser(
        "publish",
        help="approved -> published on the site's targets (WordPress, folder); a published article is pushed again",
    )
    publish.add_argument("id", type=int, help="content id")
    publish.add_argument("--variant", choices=review.VARIANTS, help="variant to publish (default: the approved one)")
    publish.set_defaults(handler=_review_publish)

    for command in (approve, reject, publish):
        command.add_argument("--actor", help="who acts, recorded in the review history (default: cli:$USER)")


def _add_selection(command: argparse.ArgumentParser, action: str) -> None:
    command.add_argument("ids", type=int, nargs="*", metavar="ID", help="content ids")
    command.add_argument("--site", help=f"the site whose articles to {action} (with --all or --cluster)")
    group = command.add_mutually_exclusive_group()
    group.add_argument("--all", action="store_true", dest="all_drafts", help=f"{action} every draft of --site")
    group.add_argument("--cluster", metavar="ID", help=f"{action} the articles of this cluster (id or key) of --site")


def _review_list(args: argparse.Namespace) -> int:
    items = review.review_list(open_store(), site=args.site, status=args.status)
    if args.json:
        print(json.dumps([item.as_dict() for item in items], indent=2))
        return 0
    if not items:
        print("No articles" + (f" with status {args.status}" if args.status else "") + ".")
        return 0
    now = utcnow()
    columns = ["id", "site", "status", "version", "variants", "updated", "slot", "title"]
    rows = [
        [
            str(item.id),
            item.site,
            item.status,
            str(item.version),
            ",".join(item.variants),
            item.updated_at.strftime("%Y-%m-%d %H:%M"),
            (review.format_slot(item.slot, item.timezone) + (" due" if item.is_due(now) else "")) if item.slot else "-",
            item.title,
        ]
        for item in items
    ]
    print_table(columns, rows)
    return 0


def _review_show(args: argparse.Namespace) -> int:
    store = open_store()
    shown = review.show(store, args.id, variant=args.variant)
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
    lines += _experiment_lines(experiments.experiment_view(store, content.id, live=content.published_variant))
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
    print(terminal_text(publishing.article_markdown(variant.body_html), multiline=True))
    return 0


def _experiment_lines(view: experiments.ExperimentView | None) -> list[str]:
    """The article's A/B experiment: status, control, live variant, periods and the decision."""
    if view is None:
        return []
    lines = [
        "",
        f"A/B experiment {view.id}: {view.status}  version {view.version}  control {view.control}  "
        f"live {view.live or '-'}  looks {view.looks}/{view.planned_looks}  "
        f"({view.period_days}-day periods in {view.timezone}, confidence {view.confidence:.0%}, "
        f"{view.min_impressions} impressions each)",
    ]
    for period in view.periods:
        switched = f"switched {period.switched_at:%Y-%m-%d %H:%M}" if period.switched_at else "not switched"
        lines.append(
            f"  period {period.number}  {period.variant}  {period.starts_at:%Y-%m-%d %H:%M} -> "
            f"{period.ends_at:%Y-%m-%d %H:%M} UTC  {switched}"
        )
    decided = f" ({view.decided_at:%Y-%m-%d %H:%M})" if view.decided_at else ""
    lines.append(f"  Decision{decided}: {experiments.decision_line(view.decision)}")
    return lines


def _review_approve(args: argparse.Namespace) -> int:
    if _single(args):
        done = review.approve(open_store(), args.ids[0], variant=args.variant, actor=args.actor)
        print(f"Approved content {done.content_id} (version {done.version}, variant {done.variant}).")
        if done.slot is not None:
            print(f"Publishing slot: {review.format_slot(done.slot, done.timezone)}")
        print(f"Next: pipeline review publish {done.content_id}")
        return 0
    outcomes = review.approve_many(
        open_store(),
        ids=args.ids or None,
        site=args.site,
        cluster=args.cluster,
        all_drafts=args.all_drafts,
        variant=args.variant,
        actor=args.actor,
    )
    for outcome in outcomes:
        if (moved := outcome.done) is not None:
            slot = f", slot {review.format_slot(moved.slot, moved.timezone)}" if moved.slot else ""
            print(f"Approved content {moved.content_id} (version {moved.version}, variant {moved.variant}){slot}.")
        else:
            print(terminal_text(f"Skipped content {outcome.content_id}: {outcome.skipped}"))
    return _summary("Approved", outcomes)


def _review_reject(args: argparse.Namespace) -> int:
    if _single(args):
        done = review.reject(open_store(), args.ids[0], note=args.note, actor=args.actor)
        print(terminal_text(f"Rejected content {done.content_id}: {done.from_status} -> draft, note: {done.note}"))
        return 0
    outcomes = review.reject_many(
        open_store(),
        note=args.note,
        ids=args.ids or None,
        site=args.site,
        cluster=args.cluster,
        all_drafts=args.all_drafts,
        actor=args.actor,
    )
    for outcome in outcomes:
        if (moved := outcome.done) is not None:
            print(
                terminal_text(f"Rejected content {moved.content_id}: {moved.from_status} -> draft, note: {moved.note}")
            )
        else:
            print(terminal_text(f"Skipped content {outcome.content_id}: {outcome.skipped}"))
    return _summary("Rejected", outcomes)


def _single(args: argparse.Namespace) -> bool:
    """One id and no site or group: the one-article form, whose failure is an error (exit 2) as before."""
    return len(args.ids) == 1 and args.site is None and not args.all_drafts and args.cluster is None


def _summary(verb: str, outcomes: Sequence[review.ReviewOutcome]) -> int:
    """Print `Approved 93 articles of site sample; 0 skipped.`; exit 0 if anything was done, else 1."""
    done = sum(1 for outcome in outcomes if outcome.done)
    sites = sorted({outcome.site for outcome in outcomes})
    where = f"site{'s' if len(sites) > 1 else ''} {', '.join(sites)}"
    noun = "article" if done == 1 else "articles"
    print(terminal_text(f"{verb} {done} {noun} of {where}; {len(outcomes) - done} skipped."))
    return 0 if done else 1


def _review_publish(args: argparse.Namespace) -> int:
    done = publishing.publish(open_store(), args.id, settings.publish_dir(), variant=args.variant, actor=args.actor)
    verb = "Re-published" if done.republished else "Published"
    print(
        f"{verb} content {done.content_id} (version {done.version}, variant {done.variant}) "
        f"at {done.published_at.isoformat()}"
    )
    for placed in done.placed:
        print(f"  {placed.target}: {placed.action} {terminal_text(placed.url or '')}")
    if done.folder is not None:
        print(f"Files in {done.folder}:")
        for path in done.files:
            print(f"  {path.relative_to(done.folder)}")
    return 0

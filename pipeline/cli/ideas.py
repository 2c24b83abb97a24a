"""`pipeline ideas list | approve | reject`: decide which ideas get articles before any is paid for.

    pipeline ideas list [--site SLUG] [--status proposed|approved|rejected] [--cluster ID] [--json]
    pipeline ideas approve [--site SLUG] (IDS... | --cluster ID) [--note TEXT] [--actor NAME]
    pipeline ideas reject [--site SLUG] (IDS... | --cluster ID) --note TEXT [--actor NAME]

A site with `ideas_need_approval` gets its new ideas as `proposed`; `content` writes only approved ones.
`--cluster` (id or key, with `--site` for a key) decides every proposed idea of that cluster. A decision is
all or nothing: unknown ids, or rejecting an idea that already has an article, is an error (exit 2) that
names the ideas and changes none.
"""

from __future__ import annotations

import argparse
import json

from pipeline.cli.base import UsageError, open_store, print_table
from pipeline.models import IdeaStatus
from pipeline.output_safety import terminal_text
from pipeline.review.gate import default_actor
from pipeline.store import Store
from pipeline.store.idea_review import IDEA_STATUSES


def add_ideas_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`ideas list`, `approve` and `reject`."""
    ideas = commands.add_parser("ideas", help="idea review: list, approve and reject ideas before articles are written")
    actions = ideas.add_subparsers(dest="action", required=True)

    listing = actions.add_parser("list", help="ideas with their review status, cluster and article")
    listing.add_argument("--site", help="only this site")
    listing.add_argument("--status", choices=IDEA_STATUSES, help="only ideas with this status")
    listing.add_argument("--cluster", metavar="ID", help="only this cluster (id, or key with --site)")
    listing.add_argument("--json", action="store_true", help="print a JSON list, one object per idea")
    listing.set_defaults(handler=_ideas_list)

    approve = actions.add_parser("approve", help="proposed (or rejected) -> approved: the content stage writes them")
    _add_selection(approve, "approve")
    approve.add_argument("--note", help="why (stored on each idea)")
    approve.set_defaults(handler=_ideas_decide, decision=IdeaStatus.APPROVED)

    reject = actions.add_parser("reject", help="-> rejected: never written (an idea with an article cannot be)")
    _add_selection(reject, "reject")
    reject.add_argument("--note", required=True, help="why (stored on each idea)")
    reject.set_defaults(handler=_ideas_decide, decision=IdeaStatus.REJECTED)


def _add_selection(command: argparse.ArgumentParser, action: str) -> None:
    command.add_argument("ids", type=int, nargs="*", metavar="ID", help="idea ids (see: pipeline ideas list)")
    command.add_argument("--site", help=f"the site whose ideas to {action} (checked against the ids)")
    command.add_argument("--cluster", metavar="ID", help=f"{action} every proposed idea of this cluster (id or key)")
    command.add_argument("--actor", help="who decides, recorded on each idea (default: cli:$USER)")


def _ideas_list(args: argparse.Namespace) -> int:
    store = open_store()
    site_id = store.site(args.site).id if args.site else None
    cluster_id = _cluster_id(store, site_id, args.cluster) if args.cluster else None
    rows = store.idea_rows(site_id, status=args.status, cluster_id=cluster_id)
    if args.json:
        slugs = {site.id: site.slug for site in store.sites()}
        print(json.dumps([row.as_dict() | {"site": slugs.get(row.site_id)} for row in rows], indent=2))
        return 0
    if not rows:
        print("No ideas" + (f" with status {args.status}" if args.status else "") + ".")
        return 0
    slugs = {site.id: site.slug for site in store.sites()}
    columns = ["id", "site", "cluster", "status", "type", "words", "article", "reviewed", "title"]
    print_table(
        columns,
        [
            [
                str(row.id),
                slugs.get(row.site_id, "?"),
                f"{row.cluster_id} {row.cluster_name or ''}".strip(),
                row.status,
                row.content_type,
                str(row.estimated_word_count),
                str(row.content_id) if row.content_id else "-",
                f"{row.reviewed_by} {row.review_note or ''}".strip() if row.reviewed_by else "-",
                row.title,
            ]
            for row in rows
        ],
    )
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.status] = counts.get(row.status, 0) + 1
    print("\n" + ", ".join(f"{n} {status}" for status, n in sorted(counts.items())))
    return 0


def _ideas_decide(args: argparse.Namespace) -> int:
    if bool(args.ids) == (args.cluster is not None):
        raise UsageError("name the ideas: give idea ids or --cluster, not both and not neither")
    store = open_store()
    site_id = store.site(args.site).id if args.site else None
    cluster_id = _cluster_id(store, site_id, args.cluster) if args.cluster else None
    decision: IdeaStatus = args.decision
    done = store.decide_ideas(
        decision,
        actor=args.actor or default_actor(),
        note=args.note,
        ids=args.ids,
        site_id=site_id,
        cluster_id=cluster_id,
    )
    verb = "Approved" if decision is IdeaStatus.APPROVED else "Rejected"
    noun = "idea" if len(done) == 1 else "ideas"
    shown = ", ".join(str(i) for i in done[:50]) + (f" and {len(done) - 50} more" if len(done) > 50 else "")
    note = f"; note: {args.note}" if args.note else ""
    print(terminal_text(f"{verb} {len(done)} {noun}" + (f": {shown}" if done else "") + note))
    if decision is IdeaStatus.APPROVED and done:
        print("Next: materialize content for the site (or wait for the nightly fill-in).")
    return 0 if done else 1


def _cluster_id(store: Store, site_id: int | None, given: str) -> int:
    """A cluster by id, or by key within `--site`."""
    if given.isdigit():
        return int(given)
    if site_id is None:
        raise UsageError(f"cluster {given!r} is not an id: give --site to name a cluster by its key")
    for cluster in store.clusters(site_id):
        if cluster.key == given:
            return cluster.id
    raise UsageError(f"the site has no cluster with key {given!r}")

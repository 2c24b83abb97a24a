"""`pipeline batches`: the provider batches of batch mode, and stopping them."""

from __future__ import annotations

import argparse
import json

from pipeline.cli.base import UsageError, open_store, print_table
from pipeline.llm.batch_mode import FINISHED, follow_batch
from pipeline.llm.wire import ProviderError
from pipeline.models import BatchStatus, ModelBatch
from pipeline.sites import site_settings


def add_batches_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`batches list` and `batches cancel`."""
    batches = commands.add_parser("batches", help="provider batches of batch mode (half price, within 24 h)")
    actions = batches.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="batches, newest first (open ones first brought up to date)")
    listing.add_argument("--site", help="only this site")
    listing.add_argument("--all", action="store_true", help="ingested and ended batches too")
    listing.add_argument("--offline", action="store_true", help="show what the store knows, ask the provider nothing")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(handler=_list)
    cancel = actions.add_parser("cancel", help="stop an open batch; its unanswered items become pending again")
    cancel.add_argument("batch_id", type=int, help="the batch id `batches list` shows")
    cancel.set_defaults(handler=_cancel)


def _list(args: argparse.Namespace) -> int:
    from resources.llm import llm_from_environment  # the same endpoint choice as runs

    store = open_store()
    llm = llm_from_environment()
    problems = []
    shown = store.batches(partition=args.site) if args.all else store.batches_to_follow()[::-1]
    if args.site and not args.all:
        shown = [b for b in shown if b.partition == args.site]
    rows = []
    for batch in shown:
        if not args.offline and batch.status in (BatchStatus.INTENT, BatchStatus.SUBMITTED):
            try:
                api = llm.batch_api(site_settings(store.site(batch.partition).settings))
                batch = follow_batch(store, api, batch) if api else batch
            except ProviderError as error:
                problems.append(f"batch {batch.id}: {error}")
        rows.append(batch)
    if args.json:
        print(json.dumps([_as_dict(b) for b in rows], indent=2))
    elif not rows:
        print("No open batches." if not args.all else "No batches.")
    else:
        columns = ["id", "site", "stage", "status", "provider status", "requests", "answered", "failed", "created"]
        print_table(
            columns,
            [
                [
                    str(b.id),
                    b.partition,
                    b.stage,
                    b.status,
                    b.remote_status or "-",
                    str(b.requests),
                    str(b.answered),
                    str(b.failed),
                    f"{b.created_at:%Y-%m-%d %H:%M}",
                ]
                for b in rows
            ],
        )
    for problem in problems:
        print(f"warning: {problem}")
    return 0


def _cancel(args: argparse.Namespace) -> int:
    from resources.llm import llm_from_environment

    store = open_store()
    try:
        batch = store.batch(args.batch_id)
    except LookupError:
        raise UsageError(f"no batch {args.batch_id}; `pipeline batches list` shows them") from None
    if batch.status in FINISHED or batch.status in (BatchStatus.INGESTED, BatchStatus.ABANDONED):
        raise UsageError(f"batch {batch.id} is {batch.status} already: nothing to cancel")
    if batch.status == BatchStatus.INTENT or not batch.remote_id:
        raise UsageError(f"batch {batch.id} is still being created; try again in a few minutes")
    api = llm_from_environment().batch_api(site_settings(store.site(batch.partition).settings))
    if api is None:
        raise UsageError(f"the {batch.partition} site's provider has no Batch API")
    remote = api.cancel(batch.remote_id)
    store.update_batch(batch.id, remote_status=remote.remote_status)
    print(
        f"batch {batch.id} ({batch.remote_id}): {remote.remote_status}; answered lines are ingested by the next "
        "run, the others are sent again by the next batch-mode run"
    )
    return 0


def _as_dict(batch: ModelBatch) -> dict[str, object]:
    return {
        "id": batch.id,
        "site": batch.partition,
        "stage": batch.stage,
        "status": batch.status,
        "remote_id": batch.remote_id,
        "remote_status": batch.remote_status,
        "requests": batch.requests,
        "answered": batch.answered,
        "failed": batch.failed,
        "created_at": batch.created_at.isoformat(),
        "ingested_at": batch.ingested_at.isoformat() if batch.ingested_at else None,
        "error": batch.error,
    }

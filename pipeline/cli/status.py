"""`pipeline status` and `pipeline estimate`: what the pipeline produced, and what a run would cost."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from datetime import UTC, datetime

from pipeline import settings
from pipeline.cli.base import open_store, print_table
from pipeline.stages import MODEL_STAGES, RunOptions
from pipeline.trigger_tick import status_line


def add_status_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`estimate` and `status`."""
    estimate = commands.add_parser("estimate", help="expected model calls, tokens and cost per stage (calls nothing)")
    estimate.add_argument("--site", required=True, help="site slug")
    estimate.add_argument("--stage", choices=MODEL_STAGES, help="only this stage")
    estimate.add_argument("--json", action="store_true", help="print JSON")
    estimate.set_defaults(handler=_estimate)

    status = commands.add_parser("status", help="row counts per stage for each site")
    status.add_argument("--site", help="only this site")
    status.add_argument("--json", action="store_true", help="print a JSON list, one object per site")
    status.set_defaults(handler=_status)


def _estimate(args: argparse.Namespace) -> int:
    from pipeline.estimate import estimate_site  # imported here: it loads scikit-learn, slow for other commands
    from resources.llm import llm_from_environment  # the same provider/model choice as runs

    store = open_store()
    with llm_from_environment().engine(
        store, run_id=None, partition=args.site, options=RunOptions(dry_run=True)
    ) as engine:
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
        "batch_cost_usd",
        "awaiting_approval_items",
        "awaiting_approval_cost_usd",
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
            f"{sum(e.batch_cost_usd for e in estimates):.4f}",
            str(sum(e.awaiting_approval_items for e in estimates)),
            f"{sum(e.awaiting_approval_cost_usd for e in estimates):.4f}",
        ]
    )
    print_table(columns, rows)
    waiting = next((e for e in estimates if e.stage == "content" and e.awaiting_approval_items), None)
    if waiting is not None:
        held = [e for e in estimates if e.awaiting_approval_items]
        print(
            f"\n{waiting.awaiting_approval_items} idea(s) wait for approval and are not counted above; approving "
            f"them would add ${sum(e.awaiting_approval_cost_usd for e in held):.4f} "
            f"(batch ${sum(e.awaiting_approval_batch_cost_usd for e in held):.4f}). "
            f"See: pipeline ideas list --site {args.site} --status proposed"
        )
    print(
        f"\nProvider: {engine.provider.name}. Prices from pipeline/llm/catalog.py (with site overrides); "
        "tokens estimated at 4 characters per token. Nothing was called."
    )
    return 0


def _status(args: argparse.Namespace) -> int:
    store = open_store()
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
        print_table(columns, [[str(getattr(c, column)) for column in columns] for c in counts])
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
        print_table(
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

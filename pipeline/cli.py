"""The `pipeline` command: register sites and see what the pipeline produced.

    pipeline sites add SLUG --keywords FILE [--name NAME]
    pipeline sites list
    pipeline status [--site SLUG] [--json]
    pipeline estimate --site SLUG [--stage NAME] [--json]

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
from pathlib import Path

from pipeline import settings
from pipeline.estimate import MODEL_STAGES, estimate_site
from pipeline.keywords import KeywordFileError, read_keyword_file
from pipeline.sites import InvalidSlug, validate_slug
from pipeline.store import Store, UnknownSite

PARTITIONS_NAME = "sites"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `pipeline` console script; returns the process exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except (KeywordFileError, InvalidSlug, UnknownSite) as error:
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
    return parser


def _store() -> Store:
    return Store(settings.database_url())


def _sites_add(args: argparse.Namespace) -> int:
    slug = validate_slug(args.slug)
    path = args.keywords.resolve()
    parsed = read_keyword_file(path)  # validate now, so a bad file is reported before anything is registered
    name = args.name or slug.replace("-", " ").title()
    _store().upsert_site(slug, name, str(path))
    home = add_site_partition(slug)
    print(
        f"Registered site '{slug}' ({name}): {len(parsed.rows)} keywords in {path}"
        + (f" ({parsed.merged_duplicates} duplicates merged)" if parsed.merged_duplicates else "")
    )
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
    """Create the persistent Dagster home with a minimal `dagster.yaml` (telemetry off) if missing."""
    home = settings.dagster_home()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text("telemetry:\n  enabled: false\n")
    return home


def _estimate(args: argparse.Namespace) -> int:
    from resources.llm import llm_from_environment  # the same provider/model choice as runs

    store = _store()
    with llm_from_environment().engine(store, run_id=None, partition=args.site) as engine:
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
    counts = [store.counts(slug) for slug in slugs]
    if args.json:
        print(json.dumps([asdict(c) for c in counts], indent=2))
        return 0
    if not counts:
        print("No sites registered yet: pipeline sites add SLUG --keywords FILE")
        return 0
    columns = ["site", "keywords", "clusters", "ideas", "content", "image_prompts", "images"]
    _print_table(columns, [[str(getattr(c, column)) for column in columns] for c in counts])
    print()
    print(f"Store:  {_display_url(store.url)}")
    print(f"Media:  {settings.media_dir()}")
    print(f"Dagster instance: {settings.dagster_home()}  (open the UI with: make ui)")
    return 0


def _display_url(url: str) -> str:
    """The database URL without its password."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


if __name__ == "__main__":
    raise SystemExit(main())

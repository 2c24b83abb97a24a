"""`pipeline sites add | list | settings`: register a site with its keyword file, list sites, edit settings.

`sites add` also adds the site's partition to the Dagster instance that `dagster` commands and `make ui`
use (`DAGSTER_HOME`, default `.dagster/` in the repository).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from pipeline import settings
from pipeline.cli.base import UsageError, open_store
from pipeline.keywords import keep_keyword_file, parse_keyword_bytes, read_keyword_bytes
from pipeline.sites import SITES_PARTITION, SiteSettingsError, parse_site_settings, site_settings, validate_slug

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


def add_sites_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`sites add`, `sites list` and `sites settings`."""
    sites = commands.add_parser("sites", help="register and list sites").add_subparsers(dest="action", required=True)
    add = sites.add_parser("add", help="register a site (or update it) with its keyword file")
    add.add_argument("slug", help="site slug: lowercase letters, digits, hyphens (the Dagster partition key)")
    add.add_argument("--keywords", required=True, type=Path, help="keyword CSV: keyword[,volume,difficulty,intent,...]")
    add.add_argument("--name", help="display name (default: the slug, title-cased)")
    add.set_defaults(handler=_sites_add)
    listing = sites.add_parser("list", help="list registered sites")
    listing.set_defaults(handler=_sites_list)

    configure = sites.add_parser("settings", help="show a site's settings, or replace them from a JSON file")
    configure.add_argument("slug")
    configure.add_argument("--file", type=Path, help="JSON file with the new settings (validated as a whole)")
    configure.set_defaults(handler=_sites_settings)


def _sites_add(args: argparse.Namespace) -> int:
    slug = validate_slug(args.slug)
    path = args.keywords.resolve()
    data = read_keyword_bytes(path)
    parsed = parse_keyword_bytes(data, path)  # validated first: a bad file registers nothing
    # The site registers a copy of exactly the bytes validated, so re-exporting a bad file over `path`
    # later cannot break the site: its previous good file stays registered.
    kept = keep_keyword_file(data, settings.sites_dir() / slug)
    name = args.name or slug.replace("-", " ").title()
    open_store().upsert_site(slug, name, str(kept))
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
        if not instance.has_dynamic_partition(SITES_PARTITION, slug):
            instance.add_dynamic_partitions(SITES_PARTITION, [slug])
    return home


def ensure_dagster_home() -> Path:
    """Create the persistent Dagster home with its `dagster.yaml` (telemetry off, one run per site) if missing."""
    home = settings.dagster_home()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text(EMBEDDED_INSTANCE_YAML)
    return home


def _sites_list(_args: argparse.Namespace) -> int:
    for site in open_store().sites():
        print(f"{site.slug}\t{site.name}\t{site.keywords_file or '-'}")
    return 0


def _sites_settings(args: argparse.Namespace) -> int:
    store = open_store()
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

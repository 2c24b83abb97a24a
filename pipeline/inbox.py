"""The keyword inbox: `SLUG.csv` files dropped in a folder register (or update) sites.

Each new or changed file is validated as a whole; a good one is copied, content-addressed, to the sites
folder (`<data>/sites/SLUG/keywords-<sha>.csv`, so later edits to the inbox file never change an import
in progress) and becomes the site's keyword file. A file whose content was already imported is skipped,
even by a fresh Dagster instance, because the stored keyword file name carries its hash. A bad file is
reported with the problem and never blocks the other files.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.keywords import KeywordFileError, parse_keyword_bytes
from pipeline.sites import InvalidSlug, validate_slug
from pipeline.store import Store, UnknownSite


@dataclass(frozen=True)
class Accepted:
    """A keyword file to ingest: the site it belongs to and its stored copy."""

    slug: str
    sha256: str
    stored: Path
    keywords: int
    new_site: bool


@dataclass(frozen=True)
class Rejected:
    """A file that cannot be used, and why."""

    path: Path
    sha256: str
    problem: str


@dataclass
class InboxScan:
    """What one look at the inbox found."""

    accepted: list[Accepted] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    unchanged: int = 0


def scan_inbox(store: Store, folder: Path, seen: Mapping[str, str], sites_dir: Path) -> InboxScan:
    """Register every new or changed `*.csv` in `folder`; `seen` maps file name -> last handled sha256."""
    scan = InboxScan()
    for path in sorted(folder.glob("*.csv")):
        data = path.read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        if seen.get(path.name) == sha:
            scan.unchanged += 1
            continue
        try:
            slug = validate_slug(path.stem)
            parsed = parse_keyword_bytes(data, path)
        except (InvalidSlug, KeywordFileError) as problem:
            scan.rejected.append(Rejected(path, sha, str(problem)))
            continue
        stored = sites_dir / slug / f"keywords-{sha[:16]}.csv"
        try:
            site = store.site(slug)
            new_site = False
        except UnknownSite:
            site, new_site = None, True
        if site is not None and site.keywords_file == str(stored):
            scan.unchanged += 1  # this exact content was imported before (perhaps by another instance)
            continue
        stored.parent.mkdir(parents=True, exist_ok=True)
        temporary = stored.with_suffix(".tmp")
        temporary.write_bytes(data)
        shutil.move(temporary, stored)
        # The display name is kept if the site exists (it may have been renamed); new sites get one from the slug.
        store.upsert_site(slug, site.name if site else slug.replace("-", " ").title(), str(stored))
        scan.accepted.append(Accepted(slug, sha, stored, len(parsed.rows), new_site))
    return scan

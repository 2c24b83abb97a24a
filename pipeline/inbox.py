"""The keyword inbox: `SLUG.csv` files dropped in a folder register (or update) sites.

Each new or changed file is validated as a whole; a good one is copied, content-addressed, to the sites
folder (`<data>/sites/SLUG/keywords-<sha>.csv`, so later edits to the inbox file never change an import
in progress) and becomes the site's keyword file. A file whose content was already imported is skipped,
even by a fresh Dagster instance, because the stored keyword file name carries its hash.

The name's letter case does not matter: `Coffee.CSV` is site `coffee` (two names for one site, such as
`coffee.csv` and `COFFEE.csv`, are both rejected until one is removed). Only regular files are read
(`pipeline.drop_folder`). Anything that cannot be used (a folder or FIFO named `x.csv`, a dangling
link, an invalid slug, a keyword file that fails validation) is rejected with its problem, recorded in
the store's rejected files (shown by `pipeline status`) and never blocks the other files.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.drop_folder import SUFFIX, Entry, Rejected, Unusable, read_folder, scan_entries
from pipeline.keywords import KeywordFileError, keep_keyword_file, parse_keyword_bytes
from pipeline.sites import InvalidSlug, validate_slug
from pipeline.store import Store, UnknownSite

FOLDER = "inbox"  # the watched folder's name in the rejected-files table

__all__ = ["FOLDER", "Accepted", "InboxScan", "Rejected", "scan_inbox"]


@dataclass(frozen=True)
class Accepted:
    """A keyword file to ingest: the site it belongs to and its stored copy."""

    slug: str
    sha256: str
    stored: Path
    keywords: int
    new_site: bool
    name: str = ""  # the file's name in the inbox


@dataclass
class InboxScan:
    """What one look at the inbox found; `present` maps every candidate's name to its fingerprint."""

    accepted: list[Accepted] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    unchanged: int = 0
    present: dict[str, str] = field(default_factory=dict)


def scan_inbox(store: Store, folder: Path, seen: Mapping[str, str], sites_dir: Path) -> InboxScan:
    """Register every new or changed `*.csv` in `folder`; `seen` maps file name -> last handled fingerprint.

    Raises `pipeline.drop_folder.FolderUnreadable` if the folder cannot be listed.
    """
    entries = read_folder(folder)
    by_slug: dict[str, list[str]] = {}
    for entry in entries:
        by_slug.setdefault(_slug_of(entry.name), []).append(entry.name)

    def fingerprint(entry: Entry) -> str:
        # A file rejected only for sharing its site has its own fingerprint, so it is looked at again once alone.
        return entry.fingerprint if len(by_slug[_slug_of(entry.name)]) == 1 else f"clash:{entry.fingerprint[:40]}"

    def accept(entry: Entry) -> Accepted | None:
        slug = _slug_of(entry.name)
        clash = by_slug[slug]
        if len(clash) > 1:
            raise Unusable(f"{', '.join(clash)} name the same site {slug!r}; remove all but one")
        validate_slug(slug)
        parsed = parse_keyword_bytes(entry.data or b"", folder / entry.name)
        # None: this exact content was imported before (perhaps by another instance).
        return _register(store, entry, slug, sites_dir, len(parsed.rows))

    scan = scan_entries(
        store,
        FOLDER,
        folder,
        entries,
        seen,
        accept,
        kind="keyword file",
        rejects=(InvalidSlug, KeywordFileError),
        fingerprint=fingerprint,
    )
    return InboxScan(accepted=scan.used, rejected=scan.rejected, unchanged=scan.unchanged, present=scan.present)


def _slug_of(name: str) -> str:
    return name[: -len(SUFFIX)].lower()


def _register(store: Store, entry: Entry, slug: str, sites_dir: Path, keywords: int) -> Accepted | None:
    """Copy a valid file to the sites folder and make it the site's keyword file; None if it already is."""
    stored = sites_dir / slug / f"keywords-{entry.fingerprint[:16]}.csv"  # the name `keep_keyword_file` gives
    try:
        site = store.site(slug)
        new_site = False
    except UnknownSite:
        site, new_site = None, True
    if site is not None and site.keywords_file == str(stored):
        return None
    stored = keep_keyword_file(entry.data or b"", sites_dir / slug)
    # The display name is kept if the site exists (it may have been renamed); new sites get one from the slug.
    store.upsert_site(slug, site.name if site else slug.replace("-", " ").title(), str(stored))
    return Accepted(slug, entry.fingerprint, stored, keywords, new_site, name=entry.name)

"""Stage 1: ingest a site's keyword file into the store."""

from __future__ import annotations

from pipeline.keywords import read_keyword_file
from pipeline.stages import StageReport
from pipeline.store import Store


class NoKeywordFile(ValueError):
    """The site has no keyword file registered."""


def ingest_keywords(store: Store, slug: str) -> StageReport:
    """Validate the site's keyword file as a whole, then upsert its keywords in one transaction.

    Nothing is written unless every row is valid: a value the store could not hold is a `KeywordFileError`
    naming file, row and column, raised before the upsert (see `pipeline.keywords`).
    """
    site = store.site(slug)
    if not site.keywords_file:
        raise NoKeywordFile(
            f"site '{slug}' has no keyword file; set one with: pipeline sites add {slug} --keywords FILE"
        )
    parsed = read_keyword_file(site.keywords_file)
    inserted, updated = store.upsert_keywords(site.id, parsed.rows)
    stored = store.keywords(site.id)
    return StageReport(
        counts={
            "rows_in_file": len(parsed.rows),
            "inserted": inserted,
            "updated": updated,
            "merged_duplicates": parsed.merged_duplicates,
            "blank_lines_skipped": parsed.blank_lines,
            "title_lines_skipped": parsed.title_lines,
            "volume_ranges_estimated": parsed.volume_ranges,
            "keywords_total": len(stored),
            "total_volume": sum(k.volume or 0 for k in stored),
        },
        preview=[
            {"keyword": k.keyword, "volume": k.volume, "difficulty": k.difficulty, "intent": k.intent}
            for k in stored[:10]
        ],
    )

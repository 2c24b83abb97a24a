"""Content checks (`pipeline.content_checks`): SEO and quality rules every current article of a site is held to.

One function per check, each taking the site's current variants (every variant of each article's newest
version: the version under review, or the published one until it is regenerated) and the site's settings,
and returning a `CheckOutcome`: passed or not, and every failing variant with the number measured and the
limit it broke ("meta title 72 > 60 chars"). `run_checks` reads a site from the store (one query for the
variants, one for their images) and runs them all. Dagster shows them as asset checks on `content`
(`assets/content_checks.py`); nothing here knows Dagster.

Everything is imported from here. The modules: `model` (the records and the registry), `text` (the text
checks), `similarity` (the near-duplicates check), `running` (reading a site and running them all).
"""

from pipeline.content_checks.model import (
    CHECKS,
    CheckedArticle,
    CheckFailure,
    CheckFunction,
    CheckOutcome,
    ContentCheck,
)

# The checks register in `CHECKS` as they are imported: the text checks first, then near-duplicates. That
# order is the order of the asset checks and of every report, so these imports keep it (isort: split).
from pipeline.content_checks.text import (
    READABILITY_LANGUAGES,
    banned_phrases,
    first_paragraph,
    image_alt_text,
    internal_hrefs,
    internal_links,
    keyword_placement,
    meta_lengths,
    readability,
    readability_language,
    readability_score,
    word_count_band,
)

# isort: split
from pipeline.content_checks.similarity import (
    MINHASH_PERMUTATIONS,
    SHINGLE_WORDS,
    jaccard,
    lsh_rows,
    minhash,
    near_duplicate_pairs,
    near_duplicates,
    shingle_hashes,
)

# isort: split
from pipeline.content_checks.running import (
    article_slugs,
    check_articles,
    checked_articles,
    run_checks,
)

__all__ = [
    "CHECKS",
    "MINHASH_PERMUTATIONS",
    "READABILITY_LANGUAGES",
    "SHINGLE_WORDS",
    "CheckFailure",
    "CheckFunction",
    "CheckOutcome",
    "CheckedArticle",
    "ContentCheck",
    "article_slugs",
    "banned_phrases",
    "check_articles",
    "checked_articles",
    "first_paragraph",
    "image_alt_text",
    "internal_hrefs",
    "internal_links",
    "jaccard",
    "keyword_placement",
    "lsh_rows",
    "meta_lengths",
    "minhash",
    "near_duplicate_pairs",
    "near_duplicates",
    "readability",
    "readability_language",
    "readability_score",
    "run_checks",
    "shingle_hashes",
    "word_count_band",
]

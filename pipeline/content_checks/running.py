"""Running the checks: a site's current variants read from the store in two queries, turned into
`CheckedArticle`s, and every registered check run over them."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from pipeline.content_checks.model import (
    CHECKS,
    CheckedArticle,
    CheckOutcome,
)
from pipeline.sites import SiteSettings, slugify
from pipeline.store import Store
from pipeline.store.checks import CheckedImage, CheckedVariant

# --- running them -----------------------------------------------------------------------------------------


def article_slugs(rows: Sequence[CheckedVariant]) -> dict[int, str]:
    """content id -> slug, by the rule of `pipeline.review.load_article`: the idea key, with the article id
    appended when an older article of the site has the same key."""
    first_with_key: dict[str, int] = {}
    for content_id, key in sorted({(row.variant.content_id, row.idea_key) for row in rows}):
        first_with_key.setdefault(key, content_id)
    slugs = {}
    for content_id, key in {(row.variant.content_id, row.idea_key) for row in rows}:
        slug = slugify(key, max_length=120) or f"article-{content_id}"
        slugs[content_id] = slug if first_with_key[key] == content_id else f"{slug}-{content_id}"
    return slugs


def checked_articles(rows: Sequence[CheckedVariant], images: Sequence[CheckedImage]) -> list[CheckedArticle]:
    """The checks' view of a site's current variants and their images."""
    slugs = article_slugs(rows)
    by_variant: dict[int, list[CheckedImage]] = defaultdict(list)
    for image in images:
        by_variant[image.variant_id].append(image)
    return [
        CheckedArticle(
            content_id=v.content_id,
            variant=v.variant,
            version=v.version,
            slug=slugs[v.content_id],
            title=v.title,
            body_html=v.body_html,
            meta_title=v.meta_title,
            meta_description=v.meta_description,
            primary_keyword=v.primary_keyword,
            word_count=v.word_count,
            estimated_word_count=row.estimated_word_count,
            images=tuple(by_variant.get(v.id, ())),
        )
        for row in rows
        for v in [row.variant]
    ]


def check_articles(articles: Sequence[CheckedArticle], settings: SiteSettings) -> list[CheckOutcome]:
    """Every registered check over `articles`, in registry order.

    A check that raises is reported as failed with its error: the articles are saved by then, and one
    broken check (or library) must not hide the others' results or fail the step."""
    outcomes = []
    for check in CHECKS.values():
        try:
            outcomes.append(check.run(articles, settings))
        except Exception as error:
            message = f"{type(error).__name__}: {error}"[:500]
            outcomes.append(CheckOutcome(check.name, check.description, [], len(articles), error=message))
    return outcomes


def run_checks(store: Store, site_id: int, settings: SiteSettings) -> list[CheckOutcome]:
    """Every content check over the current variants of site `site_id`; two queries whatever the number
    of articles (variants with their idea, then every image prompt with its file)."""
    articles = checked_articles(store.variants_for_checks(site_id), store.images_for_checks(site_id))
    return check_articles(articles, settings)

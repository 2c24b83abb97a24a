"""Public URLs of a site's articles: the one rule every link, canonical tag and JSON-LD id follows."""

from __future__ import annotations

from pipeline.sites import slugify


def article_url(base_url: str, slug: str) -> str:
    """The canonical URL of the article with `slug` on the site at `base_url`: `https://site/slug/`."""
    return f"{base_url.rstrip('/')}/{slug}/"


def article_slug(idea_key: str, idea_id: int, *, clashes: bool) -> str:
    """The slug of the article written for an idea: its key as a slug, plus `-<idea id>` when an older idea
    of the site (a smaller id) has the same key (keys are unique per cluster, not per site).

    It depends only on ideas, never on content rows, so the link plan knows every article's URL before
    the article is written.
    """
    slug = slugify(idea_key, max_length=120) or f"article-{idea_id}"
    return f"{slug}-{idea_id}" if clashes else slug


def site_link(base_url: str | None, slug: str) -> str:
    """The href of a link to the article with `slug`: its canonical URL when the site has a `base_url`,
    else root-relative (`/slug/`), which works wherever the export is served from the site's root."""
    return article_url(base_url, slug) if base_url else f"/{slug}/"

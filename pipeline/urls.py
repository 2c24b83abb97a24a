"""Public URLs of a site's articles: the one rule every link, canonical tag and JSON-LD id follows."""

from __future__ import annotations


def article_url(base_url: str, slug: str) -> str:
    """The canonical URL of the article with `slug` on the site at `base_url`: `https://site/slug/`."""
    return f"{base_url.rstrip('/')}/{slug}/"

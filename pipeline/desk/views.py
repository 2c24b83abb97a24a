"""What the desk's pages show, read from the store: an article with its variants, images, checks and history.

The body an editor reads is the stored (already sanitised) HTML with the variant's images inserted after
their headings exactly as publishing inserts them, then cleaned once more by the store's sanitiser right
before it is shown (`sanitize_page_body`): text the model wrote can never become markup that runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from html import unescape
from pathlib import Path
from urllib.parse import quote

from markupsafe import Markup

from pipeline import review
from pipeline.article_html import sanitize_page_body
from pipeline.desk.diff import WordDiff, word_diff
from pipeline.experiments import ExperimentView, experiment_view
from pipeline.models import ContentVariant, Image, ImagePrompt, Publication, ReviewEvent
from pipeline.publishing.render import ArticleImage, body_with_images
from pipeline.sites import SiteSettingsError, site_settings
from pipeline.store import Store
from pipeline.store.checks import ArticleCheckFailure
from pipeline.urls import site_link

_LINK = re.compile(r"""<a\b[^>]*\bhref\s*=\s*"([^"]*)"[^>]*>(.*?)</a>""", re.IGNORECASE | re.DOTALL)
_TAG = re.compile(r"<[^>]+>")

# The Dagster UI pages the sites page links to: one per stage asset, in chain order.
STAGE_ASSETS = ("keywords", "clusters", "ideas", "content", "image_prompts", "images", "publications")


@dataclass(frozen=True)
class ImageView:
    """An image of a variant as the page shows it (or says it is missing)."""

    prompt_id: int
    kind: str
    anchor: str | None
    alt: str
    url: str | None  # the desk's own route to the file; None when no file exists
    width: int | None
    height: int | None


@dataclass(frozen=True)
class VariantView:
    """One variant: its text ready to show, its search-result snippet, keywords, terms, images and links."""

    variant: ContentVariant
    body: Markup
    featured: list[ImageView]
    images: list[ImageView]
    links: list[tuple[str, str]]  # (href, anchor text) of every link in the body
    snippet_url: str
    anchors_ok: bool  # False when its in-article images could not be placed (listed below the body instead)


@dataclass(frozen=True)
class ArticlePage:
    """Everything the article page shows."""

    article: review.Article
    shown: VariantView
    other: VariantView | None  # the other variant of the current version (A/B), if there is one
    diff: WordDiff | None  # shown -> other
    title_diff: WordDiff | None
    description_diff: WordDiff | None
    history: list[ContentVariant]  # every variant of every version, newest first
    events: list[ReviewEvent]
    failures: list[ArticleCheckFailure]  # (check, variant, version, detail) of the current version
    publications: list[Publication]
    live: list[tuple[str, str, str]]  # (target, href, label) where the published article can be opened
    experiment: ExperimentView | None = None  # the newest A/B experiment of the article, if any


def article_page(store: Store, content_id: int, *, variant: str = review.DEFAULT_VARIANT) -> ArticlePage:
    """The article page of `content_id`, showing `variant` of its current version (A unless told)."""
    article = review.load_article(store, content_id)
    letters = [v.variant for v in article.current_variants]
    letter = variant if variant in letters else (letters[0] if letters else review.DEFAULT_VARIANT)
    shown_variant = article.variant(letter)
    base_url = _base_url(article)
    publications = store.publication_rows(content_id=content_id)
    shown = variant_view(store, shown_variant, article.slug, base_url)
    others = [v for v in article.current_variants if v.variant != letter]
    other = variant_view(store, others[0], article.slug, base_url) if others else None
    return ArticlePage(
        article=article,
        shown=shown,
        other=other,
        # Compared as shown: what the sanitiser removes (a script's text too) is in neither side.
        diff=word_diff(sanitize_page_body(shown_variant.body_html), sanitize_page_body(other.variant.body_html))
        if other
        else None,
        title_diff=word_diff(shown_variant.meta_title, other.variant.meta_title) if other else None,
        description_diff=word_diff(shown_variant.meta_description, other.variant.meta_description) if other else None,
        history=article.variants,
        events=store.review_events(content_id),
        failures=store.article_check_failures(content_id),
        publications=publications,
        live=live_links(content_id, publications),
        experiment=experiment_view(store, content_id, live=article.content.published_variant),
    )


def variant_view(store: Store, variant: ContentVariant, slug: str, base_url: str | None) -> VariantView:
    """A variant with its images inserted after their headings and its body cleaned for the browser."""
    rows = store.variant_images(variant.id)
    views = [_image_view(variant, prompt, image) for prompt, image in rows]
    placed = [
        ArticleImage(prompt=prompt, image=image, name="", url=view.url)
        for (prompt, image), view in zip(rows, views, strict=True)
        if image is not None and view.url is not None
    ]
    anchors_ok = True
    try:
        featured_html, body_html = body_with_images(variant, placed)
    except review.PublishError:
        # Prompts anchored to headings this variant does not have: show the body alone, images beside it.
        anchors_ok, featured_html, body_html = False, "", variant.body_html
    body = sanitize_page_body(featured_html + "\n" + body_html)
    return VariantView(
        variant=variant,
        body=Markup(body),
        featured=[v for v in views if v.kind == "featured"],
        images=[v for v in views if v.kind != "featured"],
        links=[(unescape(href), unescape(_TAG.sub("", text)).strip()) for href, text in _LINK.findall(body)],
        snippet_url=site_link(base_url, slug) if base_url else f"/{slug}/",
        anchors_ok=anchors_ok,
    )


def image_file(store: Store, variant_id: int, prompt_id: int, media_root: Path) -> Path | None:
    """The file of a variant's image, if it exists inside the media folder (never a path outside it)."""
    for prompt, image in store.variant_images(variant_id):
        if prompt.id == prompt_id and image is not None:
            path = Path(image.path).resolve()
            if path.is_file() and path.is_relative_to(media_root.resolve()):
                return path
    return None


def exported_file(store: Store, content_id: int, name: str, publish_root: Path) -> Path | None:
    """A file of the article's folder export (`<publish root>/<site>/<slug>/<name>`), never one outside it."""
    article = review.load_article(store, content_id)
    folder = (publish_root / article.site.slug / article.slug).resolve()
    path = (folder / name).resolve()
    if not path.is_relative_to(folder) or path.name.startswith("."):  # no `..`, no private sidecar
        return None
    return path if path.is_file() else None


def live_links(content_id: int, publications: list[Publication]) -> list[tuple[str, str, str]]:
    """(target, href, label) of each publication: the target's own URL, or the desk's view of the folder export."""
    links = []
    for publication in publications:
        if publication.state != "done" or not publication.url:
            continue
        if publication.url.startswith(("http://", "https://")):
            links.append((publication.target, publication.url, publication.url))
        else:  # a folder on the server: open it through the desk
            links.append((publication.target, f"/articles/{content_id}/export/index.html", publication.url))
    return links


def dagster_links(dagster_url: str, site: str) -> dict[str, str]:
    """Links into the Dagster UI for a site: each stage asset's partition page, its runs, the checks."""
    partition = quote(site, safe="")
    links = {name: f"{dagster_url}/assets/{name}?view=partitions&partition={partition}" for name in STAGE_ASSETS}
    links["runs"] = f"{dagster_url}/runs?q%5B0%5D=" + quote(f"tag:dagster/partition={site}", safe="")
    links["checks"] = f"{dagster_url}/assets/content?view=checks"
    return links


def _image_view(variant: ContentVariant, prompt: ImagePrompt, image: Image | None) -> ImageView:
    present = image is not None and Path(image.path).is_file()
    return ImageView(
        prompt_id=prompt.id,
        kind=prompt.kind,
        anchor=prompt.anchor_heading,
        alt=prompt.alt_text,
        url=f"/variants/{variant.id}/images/{prompt.id}" if present else None,
        width=image.width if image is not None else None,
        height=image.height if image is not None else None,
    )


def _base_url(article: review.Article) -> str | None:
    try:
        return site_settings(article.site.settings).base_url
    except SiteSettingsError:
        return None

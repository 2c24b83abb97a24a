"""Rendering a variant for publishing: the HTML page, the Markdown with its front matter, image placement.

Every target writes what these return: images go where the variant's image prompts anchor them (the
featured one under the title, each other one right after its H2), and all model text is escaped on the
way out (`pipeline.output_safety`), so the pages are as safe as the store.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from html import escape
from typing import Any

import yaml

from pipeline.article_html import plain_text
from pipeline.keywords import normalize_keyword
from pipeline.models import ContentVariant, Image, ImagePrompt, as_utc
from pipeline.output_safety import html_to_markdown
from pipeline.review import Article, PublishError

_H2 = re.compile(r"<h2\b[^>]*>(.*?)</h2>", re.IGNORECASE | re.DOTALL)
_QUOTED_SCALAR = re.compile(r'"(?:[^"\\]|\\.)*"')


@dataclass(frozen=True)
class ArticleImage:
    """An image of the exported variant: its prompt, its stored file and its name in the export."""

    prompt: ImagePrompt
    image: Image
    name: str
    url: str | None = None
    """Where a target serves the file (a WordPress media URL); None for a file beside the page."""

    @property
    def src(self) -> str:
        """The target's URL of the file, else its path relative to the exported `index.html` / `index.md`."""
        return self.url or f"images/{self.name}"


def article_markdown(body_html: str) -> str:
    """An article body as Markdown (`## ` headings, `-` bullets), model text escaped and links filtered.

    The stored body is sanitised HTML, but its text may spell out `<script>`: `html_to_markdown` keeps
    such text text, and only http(s), mailto and relative links (`pipeline.output_safety`).
    """
    return html_to_markdown(body_html)


def render_html(variant: ContentVariant, images: Sequence[ArticleImage]) -> str:
    """A complete minimal HTML5 document: title, meta description, featured image, body with its images."""
    featured, body = body_with_images(variant, images)
    return "\n".join(
        [
            "<!DOCTYPE html>",
            "<html>",
            "<head>",
            '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{escape(variant.meta_title or variant.title)}</title>",
            f'<meta name="description" content="{escape(variant.meta_description)}">',
            "</head>",
            "<body>",
            "<article>",
            f"<h1>{escape(variant.title)}</h1>",
            featured,
            body,
            "</article>",
            "</body>",
            "</html>",
            "",
        ]
    )


def render_markdown(front_matter: Mapping[str, Any], variant: ContentVariant, images: Sequence[ArticleImage]) -> str:
    """YAML front matter, then the featured image and the body as Markdown with each image after its H2."""
    featured, body = body_with_images(variant, images)
    matter = yaml.dump(
        {key: _quoted(value) for key, value in front_matter.items()},
        Dumper=_FrontMatterDumper,
        sort_keys=False,
        allow_unicode=True,
        width=1_000_000,
    )
    # Only double-quoted scalars can hold `<` or `[`; as YAML escapes they keep the front matter inert even
    # where a renderer without front-matter support shows it as Markdown.
    matter = _QUOTED_SCALAR.sub(lambda scalar: scalar.group(0).replace("<", "\\x3C").replace("[", "\\x5B"), matter)
    markdown = article_markdown("\n".join([featured, body]))
    return f"---\n{matter}---\n\n{markdown}\n"


def front_matter(
    article: Article,
    variant: ContentVariant,
    images: Sequence[ArticleImage],
    *,
    date: datetime,
    lastmod: datetime,
) -> dict[str, Any]:
    """The public front matter of `index.md`, in the keys static-site generators (Hugo, Jekyll) read.

    `date` is the article's first publication and `lastmod` this export; `images` are the page bundle's
    image paths, featured first. Which model wrote it and the pipeline's ids are not for the page: they go to
    the private `publication_record`.
    """
    return {
        "title": variant.title,
        "meta_title": variant.meta_title,
        "description": variant.meta_description,
        "slug": article.slug,
        # Strings with their offset, so every reader gets the same ISO 8601 value (not a YAML timestamp).
        "date": as_utc(date).isoformat(),
        "lastmod": as_utc(lastmod).isoformat(),
        "tags": list(variant.tags),
        "categories": list(variant.categories),
        "images": [image.src for image in _featured_first(images)],
        "draft": False,
    }


def publication_record(
    article: Article, variant: ContentVariant, *, published_at: datetime, exported_at: datetime
) -> dict[str, Any]:
    """What the pipeline knows about an export and the page must not show: ids, keywords, provider and model.

    `published_at` is the article's first publication, `exported_at` this export (the page's `date` and
    `lastmod`).
    """
    return {
        "content_id": article.content.id,
        "site": article.site.slug,
        "slug": article.slug,
        "version": variant.version,
        "variant": variant.variant,
        "provider": variant.provider,
        "model": variant.model,
        "prompt_version": variant.prompt_version,
        "primary_keyword": variant.primary_keyword,
        "secondary_keywords": list(variant.secondary_keywords),
        "published_at": as_utc(published_at).isoformat(),
        "exported_at": as_utc(exported_at).isoformat(),
    }


def _featured_first(images: Sequence[ArticleImage]) -> list[ArticleImage]:
    """The featured image, then the others in article order (Open Graph templates take the first)."""
    return sorted(images, key=lambda image: image.prompt.kind != "featured")


class _QuotedStr(str):
    """A front-matter string value, always written double-quoted."""


class _FrontMatterDumper(yaml.SafeDumper):
    """YAML for front matter: every string value double-quoted on one line, line breaks and control
    characters escaped, so no value (`---`, `: `, quotes, newlines) can end the front matter or add keys."""


_FrontMatterDumper.add_representer(
    _QuotedStr, lambda dumper, value: dumper.represent_scalar("tag:yaml.org,2002:str", str(value), style='"')
)


def _quoted(value: Any) -> Any:
    if isinstance(value, str):
        return _QuotedStr(value)
    if isinstance(value, list | tuple):
        return [_quoted(item) for item in value]
    return value


def _img(image: ArticleImage) -> str:
    """An image as its own paragraph, so Markdown conversion gives it a line of its own."""
    return (
        f'<p><img src="{escape(image.src)}" alt="{escape(image.prompt.alt_text)}" '
        f'width="{image.image.width}" height="{image.image.height}"></p>'
    )


def body_with_images(variant: ContentVariant, images: Sequence[ArticleImage]) -> tuple[str, str]:
    """(featured image HTML, stored body with each in-article image inserted right after its anchor H2)."""
    featured = "\n".join(_img(image) for image in images if image.prompt.kind == "featured")
    pending: dict[str, list[str]] = {}
    for image in images:
        if image.prompt.kind != "featured":
            pending.setdefault(normalize_keyword(image.prompt.anchor_heading or ""), []).append(_img(image))

    def after_heading(match: re.Match[str]) -> str:
        snippets = pending.pop(normalize_keyword(plain_text(match.group(1))), [])
        return "\n".join([match.group(0), *snippets])

    body = _H2.sub(after_heading, variant.body_html)
    if pending:
        # Prompts are anchored to this variant's own headings, so a miss means the two disagree: do not guess.
        raise PublishError(
            f"content {variant.content_id} version {variant.version} variant {variant.variant}: image anchors "
            f"{sorted(pending)} match no H2 of the article; regenerate its image prompts"
        )
    return featured, body

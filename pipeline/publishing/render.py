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
from html import escape, unescape
from typing import Any

import yaml

from pipeline.article_html import plain_text
from pipeline.keywords import normalize_keyword
from pipeline.language import labels
from pipeline.models import ContentVariant, Image, ImagePrompt, as_utc
from pipeline.output_safety import html_to_markdown
from pipeline.publishing.structured_data import PageFacts, article_graph, json_ld_script, open_graph
from pipeline.review import Article, PublishError
from pipeline.sites import slugify

_H2 = re.compile(r"<h2\b[^>]*>(.*?)</h2>", re.IGNORECASE | re.DOTALL)
_QUOTED_SCALAR = re.compile(r'"(?:[^"\\]|\\.)*"')
_H2_WITH_ATTRIBUTES = re.compile(r"<h2\b([^>]*)>(.*?)</h2>", re.IGNORECASE | re.DOTALL)
_ID_ATTRIBUTE = re.compile(r"""(?:^|\s)id\s*=\s*(["'])(.*?)\1""", re.IGNORECASE | re.DOTALL)


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


def render_html(variant: ContentVariant, images: Sequence[ArticleImage], page: PageFacts | None = None) -> str:
    """A complete HTML5 document: title, meta description, featured image, body with its images.

    With `page` (`structured_data.page_facts`) it is a complete page for search engines and link previews
    too: `lang`, the canonical link, Open Graph and Twitter tags, the schema.org JSON-LD and, when the site
    asks for it, a table of contents linking each H2. Every value is escaped; the JSON-LD cannot be closed
    by model text (`structured_data.json_ld_script`).
    """
    featured, body = body_with_images(variant, images)
    head: list[str] = []
    contents = ""
    if page is not None:
        srcs = [image.src for image in _featured_first(images)]
        if page.canonical_url:
            head.append(f'<link rel="canonical" href="{escape(page.canonical_url)}">')
        head += [
            f'<meta {attribute}="{escape(name)}" content="{escape(content)}">'
            for attribute, name, content in open_graph(variant, srcs, page)
        ]
        head.append(json_ld_script(article_graph(variant, srcs, page)))
        if page.table_of_contents:
            contents, body = table_of_contents(body, labels(page.language).contents)
    lang = f' lang="{escape(page.language)}"' if page is not None else ""
    return "\n".join(
        [
            "<!DOCTYPE html>",
            f"<html{lang}>",
            "<head>",
            '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{escape(variant.meta_title or variant.title)}</title>",
            f'<meta name="description" content="{escape(variant.meta_description)}">',
            *head,
            "</head>",
            "<body>",
            "<article>",
            f"<h1>{escape(variant.title)}</h1>",
            featured,
            *([contents] if contents else []),
            body,
            "</article>",
            "</body>",
            "</html>",
            "",
        ]
    )


def table_of_contents(body_html: str, title: str) -> tuple[str, str]:
    """(a `<nav>` with an `<ol>` linking every H2 of the body, the body with an `id` on each H2).

    Ids come from the heading text (`slugify`), made unique with `-2`, `-3`...; an H2 that has an id keeps
    it. Empty nav when the body has no H2.
    """
    # Ids the body already has are taken before any is made, so a made one never repeats a later one.
    used = {
        unescape(found.group(2))
        for match in _H2_WITH_ATTRIBUTES.finditer(body_html)
        if (found := _ID_ATTRIBUTE.search(match.group(1)))
    }
    entries: list[str] = []

    def with_id(match: re.Match[str]) -> str:
        attributes, inner = match.group(1), match.group(2)
        text = plain_text(inner)
        existing = _ID_ATTRIBUTE.search(attributes)
        if existing:
            anchor = unescape(existing.group(2))
        else:
            base = slugify(text) or "section"
            anchor, n = base, 1
            while anchor in used:
                n += 1
                anchor = f"{base}-{n}"
            attributes = f'{attributes} id="{escape(anchor)}"'
            used.add(anchor)
        entries.append(f'<li><a href="#{escape(anchor)}">{escape(text)}</a></li>')
        return f"<h2{attributes}>{inner}</h2>"

    body = _H2_WITH_ATTRIBUTES.sub(with_id, body_html)
    if not entries:
        return "", body
    nav = "\n".join(
        [
            f'<nav class="table-of-contents" aria-label="{escape(title)}">',
            f"<h2>{escape(title)}</h2>",
            "<ol>",
            *entries,
            "</ol>",
            "</nav>",
        ]
    )
    return nav, body


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
    page: PageFacts | None = None,
) -> dict[str, Any]:
    """The public front matter of `index.md`, in the keys static-site generators (Hugo, Jekyll) read.

    `date` is the article's first publication and `lastmod` this export; `images` are the page bundle's
    image paths, featured first. With `page`: `lang` (BCP 47), and when the site has a `base_url` the
    `canonical` URL and `url`, the page's path under the site (`/slug/`: Hugo builds the page there, so
    the built page is where the canonical URL says). Which model wrote it and the pipeline's
    ids are not for the page: they go to the private `publication_record`.
    """
    located: dict[str, Any] = {}
    if page is not None:
        located["lang"] = page.language
        if page.canonical_url:
            located |= {"canonical": page.canonical_url, "url": f"/{article.slug}/"}
    return {
        "title": variant.title,
        "meta_title": variant.meta_title,
        "description": variant.meta_description,
        "slug": article.slug,
        **located,
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

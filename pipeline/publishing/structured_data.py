"""Structured data and page basics of a published article: schema.org JSON-LD, canonical URL, Open Graph.

`page_facts` gathers what a page says about itself beyond the variant (site name, language, canonical URL,
author and publisher, dates, the breadcrumb up to the cluster's pillar); `article_graph` turns that and the
variant into a JSON-LD graph (`Article`, `FAQPage` when the body ends with an FAQ section, `BreadcrumbList`)
and `json_ld_script` writes it into a `<script type="application/ld+json">` that model text cannot close.
`open_graph` lists the `og:`/`article:`/`twitter:` meta tags. URLs follow `pipeline.urls.article_url`;
without a site `base_url` there is no canonical URL, so canonical, `og:url` and the breadcrumb are left off.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pipeline.article_html import plain_text
from pipeline.keywords import normalize_keyword
from pipeline.language import labels, primary_subtag
from pipeline.linking import choose_pillar
from pipeline.models import ContentStatus, ContentVariant, Idea, as_utc
from pipeline.review import Article, load_article
from pipeline.sites import PersonSettings, SiteSettings, site_settings
from pipeline.store import Store
from pipeline.urls import article_url

SCHEMA_ORG = "https://schema.org"
# Google shows at most 110 characters of an Article headline; longer ones are cut at a word.
HEADLINE_MAX = 110

_H2_SECTION = re.compile(r"<h2\b[^>]*>(.*?)</h2>(.*?)(?=<h2\b|\Z)", re.IGNORECASE | re.DOTALL)
_H3_OR_P = re.compile(r"<(h3|p)\b[^>]*>(.*?)</\1>", re.IGNORECASE | re.DOTALL)
# Characters that would let JSON text end a <script> element or start a comment/CDATA inside it.
_SCRIPT_UNSAFE = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
# Open Graph wants language_TERRITORY; a bare language gets its usual territory, others none (left off).
_DEFAULT_TERRITORY = {
    "en": "US",
    "de": "DE",
    "fr": "FR",
    "es": "ES",
    "it": "IT",
    "nl": "NL",
    "pt": "PT",
    "ja": "JP",
    "pl": "PL",
    "sv": "SE",
    "da": "DK",
    "fi": "FI",
    "cs": "CZ",
}


@dataclass(frozen=True)
class Crumb:
    """One step of a breadcrumb: a page's name and absolute URL."""

    name: str
    url: str


@dataclass(frozen=True)
class PageFacts:
    """What a published page says about itself beyond the variant's text (from the site's settings)."""

    site_name: str
    language: str
    published_at: datetime
    modified_at: datetime
    base_url: str | None = None
    canonical_url: str | None = None
    author: PersonSettings | None = None
    publisher: PersonSettings | None = None
    pillar: Crumb | None = None
    """The cluster's pillar article between the site and this one; None for the pillar itself."""
    table_of_contents: bool = False


@dataclass(frozen=True)
class FaqEntry:
    """A question of the body's FAQ section and its answer as plain text."""

    question: str
    answer: str


def cluster_pillar(store: Store, idea: Idea) -> Idea:
    """The pillar idea of `idea`'s cluster, by the link plan's rule (`pipeline.linking.choose_pillar`)."""
    siblings = [other for other in store.ideas(idea.site_id) if other.cluster_id == idea.cluster_id] or [idea]
    leads = [normalize_keyword(other.target_keywords[0]) for other in siblings if other.target_keywords]
    return choose_pillar(siblings, store.keyword_volumes(idea.site_id, leads))


def pillar_crumb(store: Store, article: Article, base_url: str) -> Crumb | None:
    """The breadcrumb step of the article's cluster pillar: None when the article is the pillar, or when the
    pillar has no article yet or one that is not approved or published (its page would not exist)."""
    pillar = cluster_pillar(store, article.idea)
    if pillar.id == article.idea.id:
        return None
    content_id = store.content_ids_by_idea(article.site.id).get(pillar.id)
    if content_id is None:
        return None
    page = load_article(store, content_id)
    if page.content.status not in {ContentStatus.APPROVED, ContentStatus.PUBLISHED}:
        return None
    # Named as its page is titled: the published variant, else (approved, about to go out) the current A.
    published = [
        v
        for v in page.variants
        if (v.version, v.variant) == (page.content.published_version, page.content.published_variant)
    ]
    shown = published or page.current_variants
    return Crumb(shown[0].title if shown else pillar.title, article_url(base_url, page.slug))


def page_facts(
    store: Store,
    article: Article,
    *,
    published_at: datetime,
    modified_at: datetime,
    settings: SiteSettings | None = None,
    pillar: Crumb | None = None,
) -> PageFacts:
    """The page facts of `article` from its site's settings; the breadcrumb's pillar step is looked up with
    `pillar_crumb` unless given."""
    settings = settings or site_settings(article.site.settings, f"settings of site '{article.site.slug}'")
    base_url = settings.base_url
    if pillar is None and base_url is not None:
        pillar = pillar_crumb(store, article, base_url)
    return PageFacts(
        site_name=article.site.name,
        language=settings.language,
        published_at=as_utc(published_at),
        modified_at=as_utc(modified_at),
        base_url=base_url,
        canonical_url=article_url(base_url, article.slug) if base_url else None,
        author=settings.author,
        publisher=settings.publisher,
        pillar=pillar,
        table_of_contents=settings.table_of_contents,
    )


def headline(title: str) -> str:
    """The title as a schema.org headline: at most `HEADLINE_MAX` characters, cut at a word with `…`."""
    title = " ".join(title.split())
    if len(title) <= HEADLINE_MAX:
        return title
    cut = title[: HEADLINE_MAX - 1]
    if title[HEADLINE_MAX - 1] != " " and " " in cut:  # the cut fell inside a word: drop that word
        cut = cut.rsplit(" ", 1)[0]
    return cut.rstrip(" ,;:-") + "…"


def absolute_image_urls(image_srcs: Sequence[str], canonical_url: str | None) -> list[str]:
    """Image `src`s made absolute: beside the page (`images/x.png`) they resolve against the canonical URL;
    without one they stay relative (a JSON-LD processor resolves them against the page)."""
    urls = []
    for src in image_srcs:
        if canonical_url and not re.match(r"^[a-z][a-z0-9+.-]*:", src, re.IGNORECASE):
            src = canonical_url + src.lstrip("/")
        urls.append(src)
    return urls


def faq_entries(body_html: str, language: str) -> list[FaqEntry]:
    """The questions of the body's FAQ section: the H2 titled `labels(language).faq`, then per question an
    H3 and one or more paragraphs (the answer). Empty when the body has no such section."""
    title = normalize_keyword(labels(language).faq)
    for heading, section in _H2_SECTION.findall(body_html):
        if normalize_keyword(plain_text(heading)) != title:
            continue
        entries: list[FaqEntry] = []
        question: str | None = None
        answer: list[str] = []
        for tag, inner in _H3_OR_P.findall(section):
            text = plain_text(inner)
            if tag.lower() == "h3":
                if question and answer:
                    entries.append(FaqEntry(question, " ".join(answer)))
                question, answer = text, []
            elif question is not None and text:
                answer.append(text)
        if question and answer:
            entries.append(FaqEntry(question, " ".join(answer)))
        return entries
    return []


def _person(person: PersonSettings | None, *, site_name: str, base_url: str | None) -> dict[str, Any]:
    if person is None:
        return _drop_none({"@type": "Organization", "name": site_name, "url": base_url})
    return _drop_none({"@type": "Person", "name": person.name, "url": person.url})


def _publisher(publisher: PersonSettings | None, *, site_name: str, base_url: str | None) -> dict[str, Any]:
    node: dict[str, Any] = {
        "@type": "Organization",
        "name": publisher.name if publisher else site_name,
        "url": (publisher.url if publisher else None) or base_url,
    }
    if publisher and publisher.logo_url:
        node["logo"] = {"@type": "ImageObject", "url": publisher.logo_url}
    return _drop_none(node)


def article_graph(variant: ContentVariant, image_srcs: Sequence[str], page: PageFacts) -> dict[str, Any]:
    """The page's JSON-LD: an `Article`, an `FAQPage` when the body has an FAQ section and a `BreadcrumbList`
    (site home, the cluster's pillar, the article) when the site has a `base_url`.

    `image_srcs` are the images as the target serves them, featured first.
    """
    canonical = page.canonical_url
    article: dict[str, Any] = {
        "@type": "Article",
        "@id": f"{canonical}#article" if canonical else None,
        "headline": headline(variant.title),
        "name": variant.title,
        "description": variant.meta_description,
        "image": absolute_image_urls(image_srcs, canonical) or None,
        "datePublished": page.published_at.isoformat(),
        "dateModified": page.modified_at.isoformat(),
        "author": _person(page.author, site_name=page.site_name, base_url=page.base_url),
        "publisher": _publisher(page.publisher, site_name=page.site_name, base_url=page.base_url),
        "mainEntityOfPage": {"@type": "WebPage", "@id": canonical} if canonical else None,
        "inLanguage": page.language,
        "keywords": ", ".join(variant.tags) or None,
        "articleSection": variant.categories[0] if variant.categories else None,
    }
    graph = [_drop_none(article)]
    faq = faq_entries(variant.body_html, page.language)
    if faq:
        questions = [
            {"@type": "Question", "name": e.question, "acceptedAnswer": {"@type": "Answer", "text": e.answer}}
            for e in faq
        ]
        faq_page = {"@type": "FAQPage", "@id": f"{canonical}#faq" if canonical else None, "url": canonical}
        graph.append(_drop_none(faq_page | {"inLanguage": page.language, "mainEntity": questions}))
    if page.base_url and canonical:
        crumbs = [Crumb(labels(page.language).home, page.base_url.rstrip("/") + "/")]
        crumbs += [page.pillar] if page.pillar else []
        crumbs.append(Crumb(variant.title, canonical))
        items = [
            {"@type": "ListItem", "position": n, "name": crumb.name, "item": {"@id": crumb.url}}
            for n, crumb in enumerate(crumbs, start=1)
        ]
        graph.append({"@type": "BreadcrumbList", "@id": f"{canonical}#breadcrumb", "itemListElement": items})
    return {"@context": SCHEMA_ORG, "@graph": graph}


def json_ld_script(graph: dict[str, Any]) -> str:
    """`graph` as a `<script type="application/ld+json">` element.

    `<`, `>` and `&` (and U+2028/9) are written as JSON `\\u` escapes, which JSON parsers decode to the same
    characters: no model text can spell `</script>` or `<!--` inside the element, whatever it contains.
    """
    text = json.dumps(graph, ensure_ascii=False, indent=2)
    for char, escaped in _SCRIPT_UNSAFE.items():
        text = text.replace(char, escaped)
    return f'<script type="application/ld+json">\n{text}\n</script>'


def og_locale(language: str) -> str | None:
    """The Open Graph locale of a BCP 47 tag: `de` -> `de_DE`, `pt-BR` -> `pt_BR`; None when unknown."""
    parts = language.split("-")
    primary = primary_subtag(language)
    region = next((part for part in parts[1:] if len(part) == 2 and part.isalpha()), None)
    territory = region.upper() if region else _DEFAULT_TERRITORY.get(primary)
    return f"{primary}_{territory}" if territory else None


def open_graph(variant: ContentVariant, image_srcs: Sequence[str], page: PageFacts) -> list[tuple[str, str, str]]:
    """The page's Open Graph and Twitter card meta tags as (attribute, name, content), unescaped.

    Images only when their URL is absolute (Open Graph requires it), so a folder export without a
    `base_url` has none.
    """
    images = [url for url in absolute_image_urls(image_srcs, page.canonical_url) if re.match(r"^https?://", url)]
    tags: list[tuple[str, str, str | None]] = [
        ("property", "og:type", "article"),
        ("property", "og:title", variant.title),
        ("property", "og:description", variant.meta_description),
        ("property", "og:url", page.canonical_url),
        ("property", "og:site_name", page.site_name),
        ("property", "og:locale", og_locale(page.language)),
        ("property", "og:image", images[0] if images else None),
        ("property", "article:published_time", page.published_at.isoformat()),
        ("property", "article:modified_time", page.modified_at.isoformat()),
        ("name", "twitter:card", "summary_large_image"),
        ("name", "twitter:title", variant.title),
        ("name", "twitter:description", variant.meta_description),
        ("name", "twitter:image", images[0] if images else None),
    ]
    return [(attribute, name, content) for attribute, name, content in tags if content]


def _drop_none(node: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in node.items() if value is not None}

"""The text checks: keyword placement, meta lengths, word count, readability, internal links, image alt
text and banned phrases, each registered in `CHECKS` in this order."""

from __future__ import annotations

import re
import threading
import warnings
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from pipeline.article_html import plain_text
from pipeline.content_checks.model import (
    CheckedArticle,
    CheckOutcome,
    _check,
    _failure,
    _outcome,
)
from pipeline.keywords.validation import normalize_keyword
from pipeline.sites import SiteSettings
from pipeline.urls import article_url

# --- keyword placement ------------------------------------------------------------------------------------

_FIRST_PARAGRAPH = re.compile(r"<p[^>]*>(.*?)</p>", re.IGNORECASE | re.DOTALL)


def first_paragraph(body_html: str) -> str:
    """The plain text of the body's first `<p>` (or of the whole intro before the first `<h2>`)."""
    found = _FIRST_PARAGRAPH.search(body_html)
    return plain_text(found.group(1) if found else body_html.split("<h2", 1)[0])


def _contains_phrase(text: str, phrase: str) -> bool:
    """Whether normalised `phrase` occurs in normalised `text` as whole words."""
    return _phrase_pattern(normalize_keyword(phrase)).search(normalize_keyword(text)) is not None


@lru_cache(maxsize=4096)
def _phrase_pattern(phrase: str) -> re.Pattern[str]:
    words = [re.escape(word) for word in phrase.split()]
    return re.compile(r"(?<!\w)" + r"\s+".join(words) + r"(?!\w)", re.IGNORECASE)


@_check(
    "keyword_placement",
    "The primary keyword (normalised: case, Unicode form, spacing) appears in the title, the first paragraph "
    "and the meta title of every current variant.",
)
def keyword_placement(articles: Sequence[CheckedArticle], settings: SiteSettings) -> CheckOutcome:
    """Primary keyword in title, first paragraph and meta title."""
    failures = []
    for article in articles:
        keyword = normalize_keyword(article.primary_keyword)
        places = {
            "title": article.title,
            "first paragraph": first_paragraph(article.body_html),
            "meta title": article.meta_title,
        }
        missing = [place for place, text in places.items() if not keyword or not _contains_phrase(text, keyword)]
        if missing:
            detail = f"primary keyword '{article.primary_keyword}' missing from {', '.join(missing)}"
            failures.append(_failure(article, detail, len(places) - len(missing), f"{len(places)} of {len(places)}"))
    return _outcome("keyword_placement", articles, failures)


# --- meta lengths -----------------------------------------------------------------------------------------


@_check(
    "meta_lengths",
    "Meta title at most `checks.meta_title_max` characters (60) and meta description between "
    "`checks.meta_description_min` and `checks.meta_description_max` (120-155).",
)
def meta_lengths(articles: Sequence[CheckedArticle], settings: SiteSettings) -> CheckOutcome:
    """Meta title and description lengths against the site's limits."""
    limits = settings.checks
    failures = []
    for article in articles:
        title, description = len(article.meta_title), len(article.meta_description)
        if title > limits.meta_title_max:
            detail = f"meta title {title} > {limits.meta_title_max} chars"
            failures.append(_failure(article, detail, title, f"<= {limits.meta_title_max}"))
        if not limits.meta_description_min <= description <= limits.meta_description_max:
            sign, bound = (
                ("<", limits.meta_description_min)
                if description < limits.meta_description_min
                else (">", limits.meta_description_max)
            )
            band = f"{limits.meta_description_min}-{limits.meta_description_max}"
            failures.append(
                _failure(article, f"meta description {description} {sign} {bound} chars", description, band)
            )
    return _outcome("meta_lengths", articles, failures)


# --- word count -------------------------------------------------------------------------------------------


@_check(
    "word_count_band",
    "Word count within the idea's estimated word count ± `checks.word_count_tolerance` (a share, 0.5 = 50%).",
)
def word_count_band(articles: Sequence[CheckedArticle], settings: SiteSettings) -> CheckOutcome:
    """Each variant's word count against its idea's estimate ± tolerance."""
    tolerance = settings.checks.word_count_tolerance
    failures = []
    for article in articles:
        estimate = article.estimated_word_count
        if estimate <= 0:
            continue
        low, high = round(estimate * max(1 - tolerance, 0)), round(estimate * (1 + tolerance))
        words = article.word_count
        if not low <= words <= high:
            sign, bound = ("<", low) if words < low else (">", high)
            detail = f"{words} words {sign} {bound} (estimate {estimate} ± {tolerance:.0%})"
            failures.append(_failure(article, detail, words, f"{low}-{high}"))
    return _outcome("word_count_band", articles, failures, tolerance=tolerance)


# --- readability ------------------------------------------------------------------------------------------

# Languages whose Flesch reading ease has its own constants in textstat (Amstad for German, Fernández
# Huerta for Spanish, Kandel-Moles for French, Flesch-Vacca for Italian, Douma for Dutch, Oborneva for
# Russian); other languages are not scored rather than scored with the English formula.
READABILITY_LANGUAGES = {"en", "de", "es", "fr", "it", "nl", "ru"}
_textstat_lock = threading.Lock()


@lru_cache(maxsize=16)
def _scorer(language: str) -> Any:
    with warnings.catch_warnings():
        # textstat 0.7.4 imports `pkg_resources`, which setuptools 80 marks deprecated (pinned <81 for it).
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
        from textstat.textstat import textstatistics
    scorer = textstatistics()
    scorer.set_lang(language)  # a scorer per language: textstat's module-level one is global state
    return scorer


def readability_language(language: str) -> str | None:
    """The textstat language for a site's BCP 47 tag (`de-AT` -> `de`), or None if it has no formula."""
    root = language.split("-")[0].lower()
    return root if root in READABILITY_LANGUAGES else None


def readability_score(text: str, language: str) -> float | None:
    """Flesch reading ease of plain `text` with the formula of `language` (None: no formula for it)."""
    lang = readability_language(language)
    if lang is None or not text.strip():
        return None
    with _textstat_lock:  # textstat caches per instance, not thread-safe
        return float(_scorer(lang).flesch_reading_ease(text))


@_check(
    "readability",
    "Flesch reading ease of the body, with the formula of the site's language (textstat), at least "
    "`checks.min_readability`; without a minimum the scores are reported and the check passes.",
)
def readability(articles: Sequence[CheckedArticle], settings: SiteSettings) -> CheckOutcome:
    """Readability per variant with the site language's formula, against `min_readability` when set."""
    minimum = settings.checks.min_readability
    language = readability_language(settings.language)
    failures, scores = [], []
    for article in articles:
        score = readability_score(plain_text(article.body_html), settings.language)
        if score is None:
            continue
        scores.append(score)
        if minimum is not None and score < minimum:
            failures.append(_failure(article, f"readability {score:.1f} < {minimum:g}", score, f">= {minimum:g}"))
    notes: dict[str, Any] = {
        "formula": f"flesch_reading_ease ({language})" if language else "none",
        "scored": len(scores),
    }
    if scores:
        notes |= {"mean_score": round(sum(scores) / len(scores), 1), "lowest_score": round(min(scores), 1)}
    if language is None:
        notes["not_scored"] = f"no readability formula for language {settings.language!r}"
    return _outcome("readability", articles, failures, **notes)


# --- internal links ---------------------------------------------------------------------------------------

_HREF = re.compile(r"""<a\s[^>]*?href\s*=\s*["']([^"']*)["']""", re.IGNORECASE)


def internal_hrefs(body_html: str, base_url: str | None) -> list[str]:
    """Hrefs of the body that point into the site: starting with `base_url`, or root-relative (`/slug/`)."""
    base = base_url.rstrip("/") if base_url else None
    found = []
    for href in _HREF.findall(body_html):
        href = href.strip()
        root_relative = href.startswith("/") and not href.startswith("//")
        if root_relative or (base and (href == base or href.startswith(base + "/"))):
            found.append(href)
    return found


def _article_urls(slug: str, base_url: str | None) -> set[str]:
    return {f"/{slug}/", *([article_url(base_url, slug)] if base_url else [])}


def _without_fragment(href: str) -> str:
    return href.split("#", 1)[0].split("?", 1)[0]


@_check(
    "internal_links",
    "At least `links.min_siblings` internal links (to the site's base_url or root-relative) per variant "
    "(fewer when the site has fewer other articles), and none broken: every internal link is the URL of an "
    "article of the site (or the site's home page).",
)
def internal_links(articles: Sequence[CheckedArticle], settings: SiteSettings) -> CheckOutcome:
    """Internal link count against the link plan's minimum, and no link to a URL that is no article."""
    known = {"/", *([settings.base_url.rstrip("/"), settings.base_url.rstrip("/") + "/"] if settings.base_url else [])}
    for article in articles:
        known |= _article_urls(article.slug, settings.base_url)
    others = len({a.content_id for a in articles}) - 1
    required = min(settings.links.min_siblings, max(others, 0))
    failures, links_total = [], 0
    for article in articles:
        hrefs = internal_hrefs(article.body_html, settings.base_url)
        links_total += len(hrefs)
        broken = sorted({href for href in hrefs if _without_fragment(href) not in known})
        if len(hrefs) < required:
            failures.append(
                _failure(article, f"{len(hrefs)} internal links < {required}", len(hrefs), f">= {required}")
            )
        if broken:
            shown = ", ".join(broken[:3]) + (f" and {len(broken) - 3} more" if len(broken) > 3 else "")
            failures.append(_failure(article, f"{len(broken)} broken internal links: {shown}", len(broken), "0"))
    return _outcome("internal_links", articles, failures, required_links=required, internal_links=links_total)


# --- image alt text ---------------------------------------------------------------------------------------


@_check(
    "image_alt_text",
    "Every image prompt of a variant has non-empty alt text and its image file exists; variants whose image "
    "prompts are not written yet are counted as not illustrated, not as failures.",
)
def image_alt_text(articles: Sequence[CheckedArticle], settings: SiteSettings) -> CheckOutcome:
    """Alt text on every image, and every image rendered."""
    failures, not_illustrated, images = [], 0, 0
    for article in articles:
        if not article.images:
            not_illustrated += 1
            continue
        images += len(article.images)
        no_alt = [i for i in article.images if not i.alt_text.strip()]
        missing = [i for i in article.images if i.path is None or not Path(i.path).is_file()]
        if no_alt:
            detail = f"{len(no_alt)} of {len(article.images)} images without alt text"
            failures.append(_failure(article, detail, len(no_alt), "0"))
        if missing:
            detail = f"{len(missing)} of {len(article.images)} images missing"
            failures.append(_failure(article, detail, len(missing), "0"))
    return _outcome("image_alt_text", articles, failures, images=images, not_illustrated=not_illustrated)


# --- banned phrases ---------------------------------------------------------------------------------------


@_check(
    "banned_phrases",
    "None of the site's `banned_phrases` (case-insensitive, as whole words) in the title, meta title, meta "
    "description or body text.",
)
def banned_phrases(articles: Sequence[CheckedArticle], settings: SiteSettings) -> CheckOutcome:
    """Banned phrases in title, meta and body text."""
    phrases = [p for p in dict.fromkeys(normalize_keyword(p) for p in settings.banned_phrases) if p]
    failures = []
    for article in articles if phrases else ():
        text = normalize_keyword(
            " ".join([article.title, article.meta_title, article.meta_description, plain_text(article.body_html)])
        )
        hits = {p: len(_phrase_pattern(p).findall(text)) for p in phrases}
        hits = {p: n for p, n in hits.items() if n}
        if hits:
            shown = ", ".join(f"'{p}' ×{n}" for p, n in hits.items())
            failures.append(_failure(article, f"banned phrases: {shown}", sum(hits.values()), "0"))
    return _outcome("banned_phrases", articles, failures, phrases=len(phrases))

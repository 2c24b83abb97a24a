"""The offline provider's answer to `article_optimize`: the article it is given, revised for the checks it
failed, deterministically (the embedded default; no model).

It fixes what rules can fix: the primary keyword into the title, the first paragraph and the meta title;
the meta title and description into their lengths; missing planned links; the body into its word band
(paragraphs dropped from the longest sections, or one concrete paragraph added per section); banned phrases
out. Readability and near-duplicates need a writer, so it leaves those as they are.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any, TypeVar

from pipeline.article_html import count_words, plain_text
from pipeline.keywords import normalize_keyword
from pipeline.llm.offline_phrases import offline_phrases
from pipeline.prompts.schemas import ArticleDraft, ArticleSection, FaqAnswer, OptimizedArticle

Draft = TypeVar("Draft", bound=ArticleDraft)
_PARAGRAPH = re.compile(r"<p\b[^>]*>.*?</p>", re.IGNORECASE | re.DOTALL)


def optimize_article(data: Mapping[str, Any]) -> OptimizedArticle:
    """`data["article"]` revised for `data["failed_checks"]` within `data["limits"]`."""
    article = dict(data["article"])
    failed = {check["check"] for check in data.get("failed_checks") or []}
    limits = dict(data.get("limits") or {})
    site = data.get("site") if isinstance(data.get("site"), Mapping) else {}
    phrases = offline_phrases(str((site or {}).get("language") or "en"))
    primary = str(article.get("primary_keyword") or (data["idea"]["target_keywords"] or [data["idea"]["title"]])[0])
    sections = [dict(section) for section in article.get("sections") or []]
    title, meta_title, description = article["title"], article["meta_title"], article["meta_description"]
    intro = article.get("intro_html") or ""
    if "keyword_placement" in failed:
        if not _has(title, primary):
            title = f"{primary[:1].upper()}{primary[1:]}: {title}"
        if not _has(plain_text(_first_paragraph(intro)), primary):
            intro = f"<p>{escape(phrases.meta_description.format(angle='', primary=primary).strip())}</p>\n{intro}"
        if not _has(meta_title, primary):
            meta_title = f"{primary[:1].upper()}{primary[1:]} | {meta_title}"
    meta_max = int(limits.get("meta_title_max", 60))
    low, high = int(limits.get("meta_description_min", 120)), int(limits.get("meta_description_max", 155))
    if "meta_lengths" in failed or "keyword_placement" in failed:
        meta_title = _fit(meta_title, meta_max)
        description = _into_band(description, [data["idea"].get("angle") or "", title, primary], low, high)
    if "internal_links" in failed:
        _add_links(sections, data.get("links") or [], phrases.links)
    if "word_count_band" in failed:
        estimate = int(data["idea"].get("estimated_word_count") or 0)
        tolerance = float(limits.get("word_count_tolerance", 0.5))
        _into_word_band(sections, intro, estimate, tolerance, primary, data["idea"].get("angle") or "")
    draft = OptimizedArticle(
        title=title,
        meta_title=meta_title,
        meta_description=description,
        intro_html=intro,
        sections=[ArticleSection(heading=s["heading"], html=s["html"]) for s in sections],
        conclusion_html=article.get("conclusion_html") or "",
        primary_keyword=primary,
        secondary_keywords=list(article.get("secondary_keywords") or []),
        tags=list(article.get("tags") or []),
        categories=list(article.get("categories") or []),
    )
    return without_banned_phrases(draft, list((site or {}).get("banned_phrases") or []))


def _has(text: str, keyword: str) -> bool:
    return normalize_keyword(keyword) in normalize_keyword(text)


def _first_paragraph(html: str) -> str:
    found = _PARAGRAPH.search(html)
    return found.group(0) if found else html


def _fit(text: str, limit: int) -> str:
    """`text` cut at a word to at most `limit` characters."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    return text[: limit + 1].rsplit(" ", 1)[0].rstrip(",;:|-") or text[:limit]


def _into_band(text: str, extras: Sequence[str], low: int, high: int) -> str:
    """`text` lengthened with sentences from `extras` while under `low`, then cut at a word within `high`."""
    text = " ".join(text.split())
    for extra in extras:
        if len(text) >= low:
            break
        extra = " ".join(str(extra).split()).rstrip(".")
        if extra and extra.lower() not in text.lower():
            text = f"{text.rstrip('.')}. {extra}."
    return _fit(text, high)


def _add_links(sections: list[dict[str, Any]], links: Sequence[Mapping[str, Any]], templates: Sequence[str]) -> None:
    """A sentence for every planned link the sections do not carry yet, spread over the sections."""
    if not sections:
        return
    body = " ".join(s["html"] for s in sections)
    missing = [link for link in links if f'href="{link["url"]}"' not in body]
    for index, link in enumerate(missing):
        anchor = f'<a href="{escape(link["url"])}">{escape(link["anchor"], quote=False)}</a>'
        sentence = templates[index % len(templates)].format(link=anchor)
        section = sections[index % len(sections)]
        section["html"] = f"{section['html']}\n<p>{sentence}</p>"


def _into_word_band(
    sections: list[dict[str, Any]], intro: str, estimate: int, tolerance: float, primary: str, angle: str
) -> None:
    """Paragraphs dropped from the longest sections (never the last of one) or added, one per section in
    turn, until the body's words are within `estimate` ± `tolerance`."""
    if not sections or estimate <= 0:
        return

    def words() -> int:
        return count_words(plain_text(intro)) + sum(
            count_words(s["heading"]) + count_words(plain_text(s["html"])) for s in sections
        )

    low, high = estimate * (1 - tolerance), estimate * (1 + tolerance)
    for _ in range(200):
        total = words()
        if total > high:
            longest = max(sections, key=lambda s: len(_PARAGRAPH.findall(s["html"])))
            paragraphs = _PARAGRAPH.findall(longest["html"])
            if len(paragraphs) < 2:
                return
            longest["html"] = longest["html"].replace(paragraphs[-1], "", 1).strip()
        elif total < low:
            section = min(sections, key=lambda s: count_words(plain_text(s["html"])))
            detail = (
                f"In practice, {primary} comes down to {section['heading'].lower()}: {angle.rstrip('.')}. "
                f"Start with one change, note what it does, and adjust {primary} from there."
            )
            section["html"] = f"{section['html']}\n<p>{escape(detail, quote=False)}</p>"
        else:
            return


def without_banned_phrases(draft: Draft, banned: Sequence[str]) -> Draft:
    """The draft with every banned phrase taken out of its text (never out of tags or URLs)."""
    patterns = [re.compile(re.escape(phrase.strip()), re.IGNORECASE) for phrase in banned if phrase.strip()]
    if not patterns:
        return draft

    def clean(text: str) -> str:
        parts = re.split(r"(<[^>]*>)", text)
        for i in range(0, len(parts), 2):  # even parts are text between tags
            for pattern in patterns:
                parts[i] = pattern.sub("", parts[i])
            parts[i] = re.sub(r" {2,}", " ", parts[i])
        return "".join(parts)

    return draft.model_copy(
        update={
            "title": clean(draft.title),
            "meta_title": clean(draft.meta_title),
            "meta_description": clean(draft.meta_description),
            "intro_html": clean(draft.intro_html),
            "sections": [ArticleSection(heading=clean(s.heading), html=clean(s.html)) for s in draft.sections],
            "conclusion_html": clean(draft.conclusion_html),
            "faq": [FaqAnswer(question=f.question, answer_html=clean(f.answer_html)) for f in draft.faq],
        }
    )

"""Article HTML: assembling sanitised bodies from model answers, and reading them back.

Model HTML is untrusted: every fragment passes through nh3 (a maintained Rust HTML sanitiser) with a
small allow-list before it is stored. Headings are produced by us, not the model, so every article has
real `<h2>` sections that image prompts can anchor to.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from html import escape, unescape

import nh3

from pipeline.faq import question_key
from pipeline.prompts.schemas import ArticleDraft, FaqAnswer

ALLOWED_TAGS = {"p", "ul", "ol", "li", "strong", "em", "b", "i", "blockquote", "h3", "a", "br", "code"}
ALLOWED_ATTRIBUTES = {"a": {"href", "title"}}


# Built once: configuring a sanitiser costs about as much as cleaning a paragraph with it.
_CLEANER = nh3.Cleaner(tags=ALLOWED_TAGS, attributes=ALLOWED_ATTRIBUTES, url_schemes={"http", "https", "mailto"})


def sanitize_fragment(html: str) -> str:
    """Strip everything outside the allow-list (scripts, styles, event handlers, h1/h2)."""
    return _CLEANER.clean(html)


# A whole stored body as a page shows it: the same allow-list, plus what we add ourselves around the model's
# fragments (section headings with their anchors, images inserted after their headings).
_PAGE_CLEANER = nh3.Cleaner(
    tags=ALLOWED_TAGS | {"h2", "img"},
    attributes={**ALLOWED_ATTRIBUTES, "h2": {"id"}, "img": {"src", "alt", "width", "height"}},
    url_schemes={"http", "https", "mailto"},
)


def sanitize_page_body(html: str) -> str:
    """A stored body (with its images inserted) cleaned again right before a browser shows it (the desk)."""
    return _PAGE_CLEANER.clean(html)


def render_article(draft: ArticleDraft, faq_heading: str | None = None, faq_questions: Sequence[str] = ()) -> str:
    """The stored body: sanitised intro, one `<h2>` per section with its sanitised body, conclusion, and
    (when `faq_heading` is given) the FAQ section answering those of `faq_questions` the answer covers."""
    parts = [sanitize_fragment(draft.intro_html)]
    for section in draft.sections:
        parts.append(f"<h2>{escape(section.heading.strip(), quote=False)}</h2>")
        parts.append(sanitize_fragment(section.html))
    parts.append(sanitize_fragment(draft.conclusion_html))
    if faq_heading:
        parts.append(render_faq(draft.faq, faq_heading, faq_questions))
    return "\n".join(part for part in parts if part.strip())


def render_faq(answers: Sequence[FaqAnswer], heading: str, questions: Sequence[str]) -> str:
    """The FAQ section in its one fixed shape, `<h2>heading</h2>` then `<h3>question</h3><p>answer</p>`
    per question (the page export reads it back for FAQPage JSON-LD); empty when nothing is answered.

    Only the questions asked are kept, in our spelling and order: the model may not add its own. Answers
    are plain text in one paragraph, so the structure holds whatever HTML the model wrote.
    """
    by_key = {question_key(answer.question): answer for answer in answers}
    entries = []
    for question in questions:
        answer = by_key.get(question_key(question))
        text = plain_text(sanitize_fragment(answer.answer_html)) if answer else ""
        if text:
            entries.append(f"<h3>{escape(question, quote=False)}</h3>\n<p>{escape(text, quote=False)}</p>")
    if not entries:
        return ""
    return "\n".join([f"<h2>{escape(heading, quote=False)}</h2>", *entries])


_H2 = re.compile(r"<h2[^>]*>(.*?)</h2>", re.IGNORECASE | re.DOTALL)
_TAG = re.compile(r"<[^>]+>")


def read_sections(html: str) -> list[tuple[str, str]]:
    """(H2 heading, plain text of its section) in document order.

    Stored bodies are always our own sanitised output (`render_article`), so a regular expression reads
    them reliably, and much faster than a parser on the per-article hot path.
    """
    parts = _H2.split(html)
    return [(plain_text(parts[i]), plain_text(parts[i + 1])) for i in range(1, len(parts) - 1, 2)]


def plain_text(html: str) -> str:
    """The visible text of an HTML fragment, entities decoded, whitespace collapsed."""
    return " ".join(unescape(_TAG.sub(" ", html)).split())


# Kana, CJK ideographs and Hangul: scripts written without spaces between words.
_UNSPACED = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")


def count_words(text: str) -> int:
    """Words of plain text: space-separated words, plus one word per two characters of scripts written
    without spaces (Japanese, Chinese, Korean), so a Japanese article is not "too short" for lack of spaces."""
    if text.isascii():  # nearly every article: no unspaced script can be in it
        return len(text.split())
    unspaced = len(_UNSPACED.findall(text))
    spaced = len(_UNSPACED.sub(" ", text).split())
    return spaced + (unspaced + 1) // 2

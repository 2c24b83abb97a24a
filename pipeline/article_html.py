"""Article HTML: assembling sanitised bodies from model answers, and reading them back.

Model HTML is untrusted: every fragment passes through nh3 (a maintained Rust HTML sanitiser) with a
small allow-list before it is stored. Headings are produced by us, not the model, so every article has
real `<h2>` sections that image prompts can anchor to.
"""

from __future__ import annotations

import re
from html import escape, unescape

import nh3

from pipeline.prompts.schemas import ArticleDraft

ALLOWED_TAGS = {"p", "ul", "ol", "li", "strong", "em", "b", "i", "blockquote", "h3", "a", "br", "code"}
ALLOWED_ATTRIBUTES = {"a": {"href", "title"}}


# Built once: configuring a sanitiser costs about as much as cleaning a paragraph with it.
_CLEANER = nh3.Cleaner(tags=ALLOWED_TAGS, attributes=ALLOWED_ATTRIBUTES, url_schemes={"http", "https", "mailto"})


def sanitize_fragment(html: str) -> str:
    """Strip everything outside the allow-list (scripts, styles, event handlers, h1/h2)."""
    return _CLEANER.clean(html)


def render_article(draft: ArticleDraft) -> str:
    """The stored body: sanitised intro, one `<h2>` per section with its sanitised body, conclusion."""
    parts = [sanitize_fragment(draft.intro_html)]
    for section in draft.sections:
        parts.append(f"<h2>{escape(section.heading.strip(), quote=False)}</h2>")
        parts.append(sanitize_fragment(section.html))
    parts.append(sanitize_fragment(draft.conclusion_html))
    return "\n".join(part for part in parts if part.strip())


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

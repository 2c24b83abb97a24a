"""Article HTML: assembling sanitised bodies from model answers, and reading them back.

Model HTML is untrusted: every fragment passes through nh3 (a maintained Rust HTML sanitiser) with a
small allow-list before it is stored. Headings are produced by us, not the model, so every article has
real `<h2>` sections that image prompts can anchor to.
"""

from __future__ import annotations

from html import escape
from html.parser import HTMLParser

import nh3

from pipeline.prompts.schemas import ArticleDraft

ALLOWED_TAGS = {"p", "ul", "ol", "li", "strong", "em", "b", "i", "blockquote", "h3", "a", "br", "code"}
ALLOWED_ATTRIBUTES = {"a": {"href", "title"}}


def sanitize_fragment(html: str) -> str:
    """Strip everything outside the allow-list (scripts, styles, event handlers, h1/h2)."""
    return nh3.clean(html, tags=ALLOWED_TAGS, attributes=ALLOWED_ATTRIBUTES, url_schemes={"http", "https", "mailto"})


def render_article(draft: ArticleDraft) -> str:
    """The stored body: sanitised intro, one `<h2>` per section with its sanitised body, conclusion."""
    parts = [sanitize_fragment(draft.intro_html)]
    for section in draft.sections:
        parts.append(f"<h2>{escape(section.heading.strip(), quote=False)}</h2>")
        parts.append(sanitize_fragment(section.html))
    parts.append(sanitize_fragment(draft.conclusion_html))
    return "\n".join(part for part in parts if part.strip())


class _Reader(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.text: list[str] = []
        self.sections: list[tuple[str, list[str]]] = []
        self._in_h2 = False
        self._heading: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "h2":
            self._in_h2, self._heading = True, []

    def handle_endtag(self, tag: str) -> None:
        if tag == "h2" and self._in_h2:
            self._in_h2 = False
            self.sections.append((" ".join("".join(self._heading).split()), []))

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._in_h2:
            self._heading.append(data)
        elif self.sections:
            self.sections[-1][1].append(data)


def read_sections(html: str) -> list[tuple[str, str]]:
    """(H2 heading, plain text of its section) in document order."""
    reader = _Reader()
    reader.feed(html)
    return [(heading, " ".join(" ".join(body).split())) for heading, body in reader.sections]


def plain_text(html: str) -> str:
    """The visible text of an HTML fragment, whitespace collapsed."""
    reader = _Reader()
    reader.feed(html)
    return " ".join(" ".join(reader.text).split())


def word_count(html: str) -> int:
    """Words of visible text."""
    return len(plain_text(html).split())

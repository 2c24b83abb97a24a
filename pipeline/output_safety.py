"""Model text made safe for the places it is shown: Markdown (exports, Dagster metadata) and terminals.

The store's sanitiser (nh3, `pipeline.article_html`) keeps hostile text as escaped text: `&lt;script&gt;`
stays in a body as harmless characters. Written out into Markdown unescaped, the same characters are live
HTML again, so everything model-written that goes into Markdown passes through here: `markdown_text` and
`markdown_block` escape plain text, `link_url` lets through only http(s), mailto and relative links, and
`html_to_markdown` converts a stored body with both applied. `terminal_text` keeps control sequences (ESC,
BEL, C1, bidirectional overrides) from reaching a terminal raw, showing them as visible escapes instead.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from bs4 import Tag
from markdownify import ATX, MarkdownConverter

if TYPE_CHECKING:
    # markdownify's stub declares only its entry points; `chomp`, `options` and the `convert_*` hooks this
    # converter extends (the documented way to customise it) exist in the implementation only.
    def chomp(text: str) -> tuple[str, str, str]: ...

    class _Converter(MarkdownConverter):
        options: dict[str, Any]

        def convert_code(self, el: Tag, text: str, parent_tags: set[str]) -> str: ...
        def convert_pre(self, el: Tag, text: str, parent_tags: set[str]) -> str: ...
        def convert_hN(self, n: int, el: Tag, text: str, parent_tags: set[str]) -> str: ...
        def convert_p(self, el: Tag, text: str, parent_tags: set[str]) -> str: ...
        def convert_li(self, el: Tag, text: str, parent_tags: set[str]) -> str: ...
else:
    from markdownify import chomp

    _Converter = MarkdownConverter

LINK_SCHEMES = frozenset({"http", "https", "mailto"})

# Characters that start inline Markdown (escapes, code spans, emphasis, links and images); `<` and
# character references are written as entities instead, which every Markdown dialect decodes.
_INLINE_SPECIAL = re.compile(r"([\\`*_\[\]])")
_CHARACTER_REFERENCE = re.compile(r"&(?=#?\w+;)")
# A line ending inside model text could open a block (an HTML block, a heading, a list): text is one line.
_LINE_BREAKS = re.compile(r"[ \t]*[\r\n][ \t\r\n]*")
# At the start of a paragraph (or after a hard line break in one) these would open a block: heading,
# block quote, list item, fenced code. Backtick fences, `*` and `_` are covered by `_INLINE_SPECIAL`.
_BLOCK_MARKER = re.compile(r"(\A|  \n)([ \t]*)(?:([#>+-]|~(?=~~))|(\d{1,9})([.)]))")
_CLOSING_HASHES = re.compile(r"(^|[ \t])(#+)([ \t]*)$")

# Kept as they are in a link destination; everything else (spaces, quotes, brackets, parentheses,
# backslashes, non-ASCII) is percent-encoded, so a destination can neither end early nor be re-read.
_URL_SAFE = "-._~:/?#@!$&*+,;=%"
# Browsers drop tabs and line breaks anywhere in a URL (so `java\tscript:` is `javascript:`); no control
# character belongs in a link.
_URL_IGNORED = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):")

# What a terminal would act on: C0 controls (but tab and line feed), DEL, C1 controls (0x9b is a CSI on
# its own), and the bidirectional embeddings, overrides and isolates that reorder what is displayed.
_TERMINAL_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_TERMINAL_CONTROLS_ONE_LINE = re.compile(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def markdown_text(text: str) -> str:
    """Plain text as inline Markdown that renders as exactly this text, never as HTML, a link or code.

    `<` and anything that reads as a character reference become entities; `\\`, backticks, `*`, `_`, `[`
    and `]` are backslash-escaped; line breaks become spaces.
    """
    text = _LINE_BREAKS.sub(" ", text)
    text = _INLINE_SPECIAL.sub(r"\\\1", text)
    return _CHARACTER_REFERENCE.sub("&amp;", text).replace("<", "&lt;")


def markdown_block(text: str) -> str:
    """Plain text as the whole content of a Markdown paragraph or heading (`# ` + this is a heading).

    Like `markdown_text`, and a leading `#`, `>`, `-`, `+`, `1.` or `~~~` and a trailing `#` run are
    escaped too, so the text neither opens another block nor loses characters to heading syntax.
    """
    return _escape_closing_hashes(_escape_block_markers(markdown_text(text.strip())))


def link_url(url: str | None) -> str | None:
    """`url` as a Markdown link destination, or None unless it is an http(s), mailto or relative link.

    Tabs, line breaks and other control characters are dropped first (as browsers do), so an obfuscated
    `java\\tscript:` is recognised; the result is percent-encoded and entity-escaped so that no Markdown
    renderer decodes it into something else (`javascript&#58;...` stays a relative link).
    """
    if not url:
        return None
    url = _URL_IGNORED.sub("", url).strip(" ")
    scheme = _SCHEME.match(url)
    if not url or (scheme is not None and scheme.group(1).lower() not in LINK_SCHEMES):
        return None
    return _CHARACTER_REFERENCE.sub("&amp;", quote(url, safe=_URL_SAFE))


def html_to_markdown(html: str) -> str:
    """An article body (stored, sanitised HTML) as Markdown: `## ` headings, `-` bullets, via markdownify.

    Text, headings and alt text are escaped (`markdown_text`), links and images keep only allowed URLs
    (`link_url`; a dropped link keeps its text), code spans and fences cannot be closed from inside.
    """
    return _SAFE_CONVERTER.convert(html).strip()


def terminal_text(text: str, *, multiline: bool = False) -> str:
    """`text` for printing to a terminal: control characters shown as escapes (`\\x1b`), never sent raw.

    One line by default (line breaks and tabs become `\\n` and `\\t`, so a value cannot fake the lines
    around it); with `multiline`, line feeds and tabs are kept and a CR LF counts as a line feed.
    """
    if multiline:
        return _TERMINAL_CONTROLS.sub(_visible, text.replace("\r\n", "\n"))
    return _TERMINAL_CONTROLS_ONE_LINE.sub(_visible, text)


def _visible(match: re.Match[str]) -> str:
    return match.group(0).encode("unicode_escape").decode("ascii")


def _escape_block_markers(markdown: str) -> str:
    def escape(match: re.Match[str]) -> str:
        start, indent, marker, digits, delimiter = match.groups()
        return f"{start}{indent}\\{marker}" if marker else f"{start}{indent}{digits}\\{delimiter}"

    return _BLOCK_MARKER.sub(escape, markdown)


def _escape_closing_hashes(markdown: str) -> str:
    return _CLOSING_HASHES.sub(r"\1\\\2\3", markdown)


def _link_title(title: str) -> str:
    title = " ".join(title.split()).replace("\\", "\\\\").replace('"', '\\"')
    return _CHARACTER_REFERENCE.sub("&amp;", title).replace("<", "&lt;")


class _SafeMarkdownConverter(_Converter):
    """markdownify with model text escaped and link URLs filtered (its own defaults assume trusted HTML)."""

    def __init__(self) -> None:
        super().__init__(heading_style=ATX, bullets="-", autolinks=False)

    def escape(self, text: str, parent_tags: set[str]) -> str:
        return markdown_text(text) if text else ""

    def convert_a(self, el: Tag, text: str, parent_tags: set[str]) -> str:
        if "_noformat" in parent_tags:
            return text
        prefix, suffix, text = chomp(text)
        if not text:
            return ""
        url = link_url(_attribute(el, "href"))
        if url is None:
            return f"{prefix}{text}{suffix}"
        title = _attribute(el, "title")
        title_part = f' "{_link_title(title)}"' if title.strip() else ""
        return f"{prefix}[{text}]({url}{title_part}){suffix}"

    def convert_img(self, el: Tag, text: str, parent_tags: set[str]) -> str:
        alt = markdown_text(" ".join(_attribute(el, "alt").split()))
        url = link_url(_attribute(el, "src"))
        if url is None or (
            "_inline" in parent_tags
            and (el.parent.name if el.parent else "") not in self.options["keep_inline_images_in"]
        ):
            return alt
        title = _attribute(el, "title")
        title_part = f' "{_link_title(title)}"' if title.strip() else ""
        return f"![{alt}]({url}{title_part})"

    def convert_code(self, el: Tag, text: str, parent_tags: set[str]) -> str:
        # A line break in a code span could start an HTML block on the next line; it renders as a space.
        return super().convert_code(el, text.replace("\n", " "), parent_tags)

    def convert_pre(self, el: Tag, text: str, parent_tags: set[str]) -> str:
        # markdownify always fences with three backticks, which a line of backticks in the text would close.
        markdown = super().convert_pre(el, text, parent_tags)
        longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
        if longest < 3:
            return markdown
        fence, opening, closing = "`" * (longest + 1), markdown.index("```"), markdown.rindex("```")
        return markdown[:opening] + fence + markdown[opening + 3 : closing] + fence + markdown[closing + 3 :]

    def convert_hN(self, n: int, el: Tag, text: str, parent_tags: set[str]) -> str:
        if "_inline" in parent_tags:
            return text
        return super().convert_hN(n, el, _escape_closing_hashes(_escape_block_markers(text.strip())), parent_tags)

    def convert_p(self, el: Tag, text: str, parent_tags: set[str]) -> str:
        if "_inline" in parent_tags:
            return super().convert_p(el, text, parent_tags)
        return super().convert_p(el, _escape_block_markers(text.strip(" \t\r\n")), parent_tags)

    def convert_li(self, el: Tag, text: str, parent_tags: set[str]) -> str:
        first = next((child for child in el.children if str(child).strip()), None)
        if first is not None and not isinstance(first, Tag):  # starts with text, not with a nested list
            text = _escape_block_markers(text.strip())
        return super().convert_li(el, text, parent_tags)


def _attribute(el: Tag, name: str) -> str:
    """An attribute as one string ("" when absent; bs4 gives multi-valued ones such as `class` as lists)."""
    value = el.get(name)
    return " ".join(value) if isinstance(value, list) else (value or "")


_SAFE_CONVERTER = _SafeMarkdownConverter()

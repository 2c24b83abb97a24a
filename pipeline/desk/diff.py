"""A word-level diff of two article variants, as HTML an editor reads: removed words struck, added underlined.

Both sides are reduced to their text (headings, paragraphs and list items become lines), then compared
word by word with `difflib` (standard library; no junk heuristic, so frequent words are compared too).
Every word is escaped: the diff never carries the model's markup.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from html import escape, unescape

from markupsafe import Markup

_BLOCK_END = re.compile(r"</(?:p|h2|h3|li|blockquote)\s*>|<br\s*/?>", re.IGNORECASE)
_TAG = re.compile(r"<[^>]+>")
_TOKEN = re.compile(r"\n|[^\s]+")


@dataclass(frozen=True)
class WordDiff:
    """The diff as HTML, with how many words each side has that the other does not."""

    html: Markup
    removed: int
    added: int
    similarity: float  # 0..1, difflib's ratio over words


def text_words(html: str) -> list[str]:
    """The words of an HTML body, with a `\\n` token where a block (paragraph, heading, item) ends."""
    text = unescape(_TAG.sub(" ", _BLOCK_END.sub("\n", html)))
    words = _TOKEN.findall(text)
    # One line break between blocks, none at either end.
    collapsed = [w for i, w in enumerate(words) if w != "\n" or (i > 0 and words[i - 1] != "\n")]
    while collapsed and collapsed[-1] == "\n":
        collapsed.pop()
    return collapsed


def word_diff(before_html: str, after_html: str) -> WordDiff:
    """How `after_html` differs from `before_html`, word by word."""
    before, after = text_words(before_html), text_words(after_html)
    matcher = difflib.SequenceMatcher(None, before, after, autojunk=False)
    parts: list[str] = []
    removed = added = 0
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            parts.append(_words(before[i1:i2]))
            continue
        if i2 > i1:
            removed += sum(1 for w in before[i1:i2] if w != "\n")
            parts.append(f"<del>{_words(before[i1:i2])}</del>")
        if j2 > j1:
            added += sum(1 for w in after[j1:j2] if w != "\n")
            parts.append(f"<ins>{_words(after[j1:j2])}</ins>")
    return WordDiff(Markup(" ".join(parts)), removed, added, round(matcher.ratio(), 3))


def _words(words: list[str]) -> str:
    return " ".join("<br>" if w == "\n" else escape(w) for w in words)

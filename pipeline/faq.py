"""FAQ questions: which of a cluster's keywords are questions, and how they read as FAQ headings.

A keyword is a question when it ends with `?`, starts with `¿`, or starts with a question word of the
site's language (English words count on every site: keyword tools mix languages). The stored FAQ section
has one fixed shape, `<h2>{labels.faq}</h2>` then `<h3>question</h3><p>answer</p>` per question, which
the page export reads back for FAQPage JSON-LD.
"""

from __future__ import annotations

from collections.abc import Iterable

from pipeline.language import primary_subtag

# At most this many questions per article: an FAQ is a summary of what searchers ask, not a second article.
MAX_FAQ_QUESTIONS = 5

_QUESTION_WORDS: dict[str, frozenset[str]] = {
    "en": frozenset(
        "who what when where why how can is are does do should which will could would did was were".split()
    ),
    "de": frozenset(
        "wer was wann wo warum wie kann können ist sind muss müssen soll sollte welche welcher welches "
        "gibt woher wohin weshalb wieso darf braucht hilft lohnt wozu womit".split()
    ),
    "fr": frozenset(
        "qui que quoi quand où ou pourquoi comment combien quel quelle quels quelles est-ce peut-on faut-il "
        "peut doit est".split()
    ),
    "es": frozenset("qué que quién quien cuándo cuando dónde donde cómo como cuál cual cuánto cuánta puede es".split()),
}
# Question openings of more than one word ("por qué" starts with the preposition "por").
_QUESTION_PHRASES: dict[str, tuple[str, ...]] = {
    "es": ("por qué ", "por que ", "se puede ", "para qué "),
    "fr": ("est-ce que ", "qu'est-ce ", "qu’est-ce "),
}


def is_question(keyword: str, language: str = "en") -> bool:
    """Whether a keyword is a question in the site's language (or in English)."""
    text = " ".join(keyword.lower().split())
    if not text:
        return False
    if text.endswith("?") or text.startswith("¿"):
        return True
    lang = primary_subtag(language)
    first = text.split(" ", 1)[0]
    words = _QUESTION_WORDS["en"] | _QUESTION_WORDS.get(lang, frozenset())
    return (first in words and " " in text) or text.startswith(_QUESTION_PHRASES.get(lang, ()))


def faq_questions(keywords: Iterable[str], language: str = "en", limit: int = MAX_FAQ_QUESTIONS) -> list[str]:
    """Up to `limit` question keywords, in the given order (callers pass highest volume first), each
    written as a question (`as_question`), without repeats."""
    chosen: dict[str, str] = {}
    for keyword in keywords:
        if len(chosen) >= limit:
            break
        if is_question(keyword, language):
            question = as_question(keyword, language)
            chosen.setdefault(question_key(question), question)
    return list(chosen.values())


def as_question(keyword: str, language: str = "en") -> str:
    """A keyword as an FAQ heading: capitalised, ending with `?` (and opening with `¿` in Spanish)."""
    text = " ".join(keyword.split()).rstrip("?").strip()
    opening = "¿" if primary_subtag(language) == "es" else ""
    text = text.lstrip("¿")
    return f"{opening}{text[:1].upper()}{text[1:]}?"


def question_key(question: str) -> str:
    """A question compared loosely: case, spacing and question marks ignored."""
    return " ".join(question.lower().replace("?", " ").replace("¿", " ").split())

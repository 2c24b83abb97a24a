"""The cannibalisation guard: one site, one article per search intent.

New ideas are compared with the site's stored ideas and with the new ones admitted before them, in the
order they are offered; the first one wins and later duplicates are dropped (stored ideas are never
touched). Two rules, both deterministic and free (no model call):

1. Same primary keyword (the first target keyword, `normalize_keyword`ed): two articles would compete
   for one query. When both ideas are new and of the same cluster, the dropped idea's other target
   keywords are merged into the kept one (they belong to that cluster, so the kept idea may target them).
2. Near-identical intent: the token-set Jaccard similarity of the two ideas' words (title plus target
   keywords, casefolded, stop words removed, scripts written without spaces read as character bigrams)
   is at least `SIMILARITY_THRESHOLD`.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from pipeline.keywords import normalize_keyword

# 0.7, measured (docs/seo.md): rewordings of one article ("Cold Brew Ratio: A Complete Guide" / "The
# Complete Cold Brew Ratio Guide", "Best Moka Pot" / "The Best Moka Pots of 2026") score 0.75-1.0; the most
# alike pair of the sample site's 93 offline ideas scores 0.50. Lower starts dropping neighbouring angles
# of one topic; higher lets rewordings through.
SIMILARITY_THRESHOLD = 0.7
MAX_TARGET_KEYWORDS = 6  # what a merge may grow the kept idea's target keywords to

# Words that carry no intent: English function words and the boilerplate of article titles ("The Short
# Answer", "Everything You Need to Know", "Our Top Picks"); left in, they make unrelated ideas look alike.
# `best`, `vs` and `review` stay: they are the intent (a list, a comparison, a review), not boilerplate.
STOP_WORDS = frozenset(
    """a an and are as at be by can do does for from how i in is it its my of on or the to what when where
    which who why with you your our this that these those should need know about everything things
    guide complete ultimate definitive top picks choose choosing step short answer answers details
    honest pros cons closer look practical tips tricks ways explained overview introduction beginners
    basics""".split()
)

Reason = Literal["duplicate_keyword", "similar"]


@dataclass(frozen=True)
class IdeaCandidate:
    """What the guard compares of an idea: its title, target keywords (primary first) and its cluster."""

    title: str
    target_keywords: Sequence[str]
    cluster: str  # the cluster's name as reported
    stored: bool = False  # already in the store (never dropped, never changed)

    @property
    def primary(self) -> str:
        """The normalized primary keyword ('' when there is none)."""
        return normalize_keyword(self.target_keywords[0]) if self.target_keywords else ""


@dataclass(frozen=True)
class GuardDecision:
    """One dropped idea: why, and the idea it would have cannibalised."""

    dropped: IdeaCandidate
    kept: IdeaCandidate
    reason: Reason
    similarity: float
    merged_keywords: tuple[str, ...] = ()

    def describe(self) -> str:
        """One line for the metadata: `dropped 'X' (cluster A): same primary keyword 'y' as 'Z' (cluster B)`."""
        head = f"dropped {self.dropped.title!r} (cluster {self.dropped.cluster})"
        kept = f"{self.kept.title!r} (cluster {self.kept.cluster}{', stored' if self.kept.stored else ''})"
        if self.reason == "duplicate_keyword":
            line = f"{head}: same primary keyword {self.dropped.primary!r} as {kept}"
        else:
            line = f"{head}: near-identical to {kept} (similarity {self.similarity:.2f})"
        if self.merged_keywords:
            line += f"; its keywords {', '.join(repr(k) for k in self.merged_keywords)} merged into the kept idea"
        return line


@dataclass
class CannibalisationGuard:
    """Admits ideas one at a time against the site's stored ideas and the ideas admitted so far."""

    stored: Iterable[IdeaCandidate] = ()
    threshold: float = SIMILARITY_THRESHOLD
    decisions: list[GuardDecision] = field(default_factory=list)
    _kept: list[tuple[IdeaCandidate, frozenset[str]]] = field(default_factory=list, init=False)
    _by_primary: dict[str, int] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        for idea in self.stored:
            self._keep(idea)

    def admit(self, idea: IdeaCandidate) -> GuardDecision | None:
        """None if `idea` is kept (and remembered), else the decision that drops it (also in `decisions`)."""
        decision = self._conflict(idea)
        if decision is None:
            self._keep(idea)
            return None
        self.decisions.append(decision)
        return decision

    def merge_into(self, kept: IdeaCandidate, keywords: Sequence[str]) -> IdeaCandidate:
        """`kept` (a new idea) with `keywords` appended to its target keywords, up to `MAX_TARGET_KEYWORDS`."""
        index = next(i for i, (idea, _) in enumerate(self._kept) if idea is kept)
        merged = IdeaCandidate(kept.title, [*kept.target_keywords, *keywords], kept.cluster, kept.stored)
        self._kept[index] = (merged, intent_tokens(merged))
        return merged

    @property
    def counts(self) -> dict[str, int]:
        """Dropped ideas by reason, as stage counts."""
        return {
            "ideas_dropped_duplicate_keyword": sum(d.reason == "duplicate_keyword" for d in self.decisions),
            "ideas_dropped_similar": sum(d.reason == "similar" for d in self.decisions),
        }

    def markdown(self) -> str | None:
        """The decisions as a markdown list, or None when nothing was dropped."""
        return "\n".join(f"- {d.describe()}" for d in self.decisions) or None

    def _conflict(self, idea: IdeaCandidate) -> GuardDecision | None:
        primary = idea.primary
        if primary and primary in self._by_primary:
            kept = self._kept[self._by_primary[primary]][0]
            return GuardDecision(idea, kept, "duplicate_keyword", 1.0, self._mergeable(idea, kept))
        tokens = intent_tokens(idea)
        best: tuple[float, IdeaCandidate] | None = None
        for other, other_tokens in self._kept:
            score = jaccard(tokens, other_tokens)
            if score >= self.threshold and (best is None or score > best[0]):
                best = (score, other)
        return None if best is None else GuardDecision(idea, best[1], "similar", best[0])

    def _mergeable(self, dropped: IdeaCandidate, kept: IdeaCandidate) -> tuple[str, ...]:
        """Keywords of `dropped` the kept idea may take over: only between new ideas of one cluster."""
        if kept.stored or kept.cluster != dropped.cluster:
            return ()
        have = {normalize_keyword(k) for k in kept.target_keywords}
        extra: list[str] = []
        for keyword in dropped.target_keywords:
            if normalize_keyword(keyword) not in have:
                have.add(normalize_keyword(keyword))
                extra.append(keyword)
        return tuple(extra[: max(MAX_TARGET_KEYWORDS - len(kept.target_keywords), 0)])

    def _keep(self, idea: IdeaCandidate) -> None:
        if idea.primary and idea.primary not in self._by_primary:
            self._by_primary[idea.primary] = len(self._kept)
        self._kept.append((idea, intent_tokens(idea)))


def intent_tokens(idea: IdeaCandidate) -> frozenset[str]:
    """The words an idea is about: title and target keywords, casefolded, without stop words."""
    text = unicodedata.normalize("NFKC", " ".join([idea.title, *idea.target_keywords])).casefold()
    tokens: set[str] = set()
    for word in re.findall(r"\w+", text):
        if _unspaced(word):
            # Japanese or Chinese: a "word" is a whole phrase; character pairs compare like words do.
            tokens.update(word[i : i + 2] for i in range(max(len(word) - 1, 1)))
        elif word not in STOP_WORDS:
            tokens.add(_singular(word))
    return frozenset(tokens)


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    """Shared tokens over all tokens (0.0 for two empty sets)."""
    union = len(a | b)
    return len(a & b) / union if union else 0.0


def _singular(word: str) -> str:
    """A crude English plural fold (`pots` -> `pot`), enough for `best moka pot` / `best moka pots`."""
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")) else word


def _unspaced(word: str) -> bool:
    return any(unicodedata.name(c, "").startswith(("CJK", "HIRAGANA", "KATAKANA")) for c in word)
